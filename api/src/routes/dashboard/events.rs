//! The event log (`/dashboard/developers/events`): the merchant's events, newest first, filtered
//! by type and resource id, in pages (a cursor: the last id shown), each with its deliveries and
//! every attempt (status code, latency, when, the start of the answer, escaped); one event's
//! page shows its payload and redelivers it (`outbox::redeliver`, the API's). What members did
//! (`member.action`, `depositd_core::audit`) is listed with who did what.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::event::{EventType, Subject};
use depositd_core::member::Action;
use depositd_core::outbox;
use depositd_core::store::webhooks::{self as rows, EventFilter, EventRecord};
use depositd_core::store::{Conn, StoreError};
use serde_json::json;
use uuid::Uuid;

use super::{Chrome, SignedIn, internal, not_found, render, secured, when};
use crate::state::AppState;

/// Events per page.
const PAGE: u32 = 20;

/// Characters of an answer shown with its attempt.
const EXCERPT: usize = 200;

struct AttemptRow {
    when: String,
    status: String,
    ok: bool,
    latency_ms: i64,
    excerpt: String,
    error: String,
}

struct DeliveryRow {
    url: String,
    /// `None`: the resource's own callback URL.
    endpoint_id: Option<Uuid>,
    state: String,
    attempts: Vec<AttemptRow>,
}

struct EventRow {
    id: Uuid,
    event_type: String,
    resource_type: String,
    resource_id: Uuid,
    created: String,
    /// For `member.action`: who did what.
    actor: Option<String>,
    deliveries: Vec<DeliveryRow>,
}

/// Who did what, from a `member.action` event's data.
fn actor(event: &EventRecord, payload: &serde_json::Value) -> Option<String> {
    if event.event_type != EventType::MemberAction {
        return None;
    }
    let data = &payload["data"];
    Some(format!(
        "{} ({}) did {}",
        data["member"]["email"].as_str().unwrap_or("?"),
        data["member"]["role"].as_str().unwrap_or("?"),
        data["action"].as_str().unwrap_or("?"),
    ))
}

/// The first [`EXCERPT`] characters of `text`, with an ellipsis when cut.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(EXCERPT).collect();
    if chars.next().is_some() { format!("{head}…") } else { head }
}

async fn event_row(conn: &mut Conn, event: &EventRecord) -> Result<(EventRow, serde_json::Value), StoreError> {
    let payload: serde_json::Value =
        serde_json::from_str(&event.payload).map_err(|e| StoreError::Corrupt(format!("events.payload: {e}")))?;
    let mut deliveries = Vec::new();
    for d in rows::deliveries(conn, event.id).await? {
        let attempts = rows::attempts(conn, d.id)
            .await?
            .into_iter()
            .map(|a| AttemptRow {
                when: when(a.attempted_at),
                ok: a.status_code.is_some_and(|c| (200..300).contains(&c)),
                status: a.status_code.map_or_else(|| "no answer".into(), |c| c.to_string()),
                latency_ms: a.latency_ms,
                excerpt: a.response_body.as_deref().map(excerpt).unwrap_or_default(),
                error: a.error.unwrap_or_default(),
            })
            .collect();
        deliveries.push(DeliveryRow { url: d.url, endpoint_id: d.endpoint_id, state: d.state, attempts });
    }
    let row = EventRow {
        id: event.id,
        event_type: event.event_type.to_string(),
        resource_type: event.resource_type.clone(),
        resource_id: event.resource_id,
        created: when(event.created_at),
        actor: actor(event, &payload),
        deliveries,
    };
    Ok((row, payload))
}

#[derive(Template)]
#[template(path = "dashboard/events.html")]
struct EventsPage {
    chrome: Option<Chrome>,
    events: Vec<EventRow>,
    /// Every event type, and whether it is the filter's.
    types: Vec<(&'static str, bool)>,
    resource_id: String,
    type_error: Option<String>,
    resource_id_error: Option<String>,
    starting_after_error: Option<String>,
    /// The next page's link, when there is one.
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/event.html")]
struct EventPage {
    chrome: Option<Chrome>,
    csrf: String,
    event: EventRow,
    payload: String,
    may_redeliver: bool,
}

/// `GET /dashboard/developers/events?type=&resource_id=&starting_after=`.
pub async fn list(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let text = |name: &str| query.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let type_word = text("type");
    let resource_word = text("resource_id");
    let mut page = EventsPage {
        chrome: Some(signed_in.chrome("events")),
        events: Vec::new(),
        types: EventType::ALL.into_iter().map(|t| (t.as_str(), type_word.as_deref() == Some(t.as_str()))).collect(),
        resource_id: resource_word.clone().unwrap_or_default(),
        type_error: None,
        resource_id_error: None,
        starting_after_error: None,
        next: None,
    };
    // The API's words for the same refusals.
    let event_type = match type_word.as_deref().map(str::parse::<EventType>) {
        Some(Err(_)) => {
            page.type_error = Some(format!("{:?} is not an event type", type_word.unwrap_or_default()));
            None
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let resource_id = match resource_word.as_deref().map(str::parse::<Uuid>) {
        Some(Err(_)) => {
            page.resource_id_error = Some("resource_id must be a UUID".into());
            None
        }
        Some(Ok(id)) => Some(id),
        None => None,
    };
    let starting_after = match text("starting_after").as_deref().map(str::parse::<Uuid>) {
        Some(Err(_)) => {
            page.starting_after_error = Some("starting_after must be the id of an event".into());
            None
        }
        Some(Ok(id)) => Some(id),
        None => None,
    };
    if page.type_error.is_some() || page.resource_id_error.is_some() || page.starting_after_error.is_some() {
        return render(StatusCode::BAD_REQUEST, &page);
    }
    let filter = EventFilter { event_type, resource_id, delivery_state: None, starting_after };
    let outcome = async {
        let mut conn = state.store.conn().await?;
        let mut found = rows::list_events(&mut conn, signed_in.merchant.id, &filter, PAGE + 1).await?;
        let has_more = found.len() > PAGE as usize;
        found.truncate(PAGE as usize);
        let mut events = Vec::with_capacity(found.len());
        for event in &found {
            events.push(event_row(&mut conn, event).await?.0);
        }
        Ok::<_, StoreError>((events, has_more))
    }
    .await;
    let (events, has_more) = match outcome {
        Ok(found) => found,
        Err(error) => return internal(error),
    };
    if has_more && let Some(last) = events.last() {
        let mut link = url::form_urlencoded::Serializer::new(String::new());
        if let Some(t) = event_type {
            link.append_pair("type", t.as_str());
        }
        if let Some(id) = resource_id {
            link.append_pair("resource_id", &id.to_string());
        }
        link.append_pair("starting_after", &last.id.to_string());
        page.next = Some(format!("/dashboard/developers/events?{}", link.finish()));
    }
    page.events = events;
    render(StatusCode::OK, &page)
}

/// `GET /dashboard/developers/events/{id}`.
pub async fn show(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("events")), "event") };
    let outcome = async {
        let mut conn = state.store.conn().await?;
        match rows::get_event(&mut conn, signed_in.merchant.id, id).await? {
            Some(event) => Ok::<_, StoreError>(Some(event_row(&mut conn, &event).await?)),
            None => Ok(None),
        }
    }
    .await;
    match outcome {
        Ok(Some((event, payload))) => render(
            StatusCode::OK,
            &EventPage {
                chrome: Some(signed_in.chrome("events")),
                csrf: signed_in.session.csrf_token.clone(),
                event,
                payload: serde_json::to_string_pretty(&payload).unwrap_or_default(),
                may_redeliver: signed_in.member.role.may(Action::ManageWebhooks),
            },
        ),
        Ok(None) => not_found(Some(signed_in.chrome("events")), "event"),
        Err(error) => internal(error),
    }
}

/// `POST /dashboard/developers/events/{id}/redeliver`: queues the event again (same id, same
/// bytes), then shows it.
pub async fn redeliver(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::ManageWebhooks) {
        return *refused;
    }
    let Ok(id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("events")), "event") };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let Some(event) = rows::get_event(&mut tx, signed_in.merchant.id, id).await? else { return Ok(false) };
        outbox::redeliver(&mut tx, &event, signed_in.merchant.id).await?;
        let details = json!({"event_type": event.event_type.as_str()});
        audit::record(&mut tx, &signed_in.member, "event.redeliver", Subject::new("event", event.id), &details).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, StoreError>(true)
    }
    .await;
    match outcome {
        Ok(true) => secured(Redirect::to(&format!("/dashboard/developers/events/{id}")).into_response()),
        Ok(false) => not_found(Some(signed_in.chrome("events")), "event"),
        Err(error) => internal(error),
    }
}
