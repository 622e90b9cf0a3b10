//! The Webhooks page (`/dashboard/developers/webhooks`): the merchant's endpoints with their
//! health (failed attempts of the last 24 hours; an endpoint disabled for failing stands out),
//! create (the secret shown once), edit, enable and disable, rotate the secret (shown once),
//! delete, and send a test event. The rules are the endpoint lifecycle's
//! (`depositd_core::webhook_endpoints`), the API's own; a URL is checked by the API's one check
//! (`routes::webhooks::endpoint_url`). Every change is recorded with `audit::record`.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::event::{EventType, Subject};
use depositd_core::member::Action;
use depositd_core::store::{StoreError, webhooks as rows};
use depositd_core::time::now_ms;
use depositd_core::webhook_endpoints::{self, Changes, CheckedUrl, EndpointError, NewEndpoint};
use depositd_core::webhooks::Endpoint;
use secrecy::ExposeSecret;
use serde_json::json;
use uuid::Uuid;

use super::{Chrome, Form, Refused, SignedIn, internal, message, not_found, render, secured, when};
use crate::error::ApiError;
use crate::routes::webhooks::{endpoint_url, grace_ms};
use crate::state::AppState;

const LIST: &str = "/dashboard/developers/webhooks";

/// How far back the health column counts failed attempts.
const HEALTH_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// An endpoint as the pages show it.
struct EndpointRow {
    id: Uuid,
    url: String,
    description: String,
    enabled: bool,
    disabled_reason: String,
    /// Disabled by the delivery worker (gone, or failing for too long), not by a member.
    disabled_for_failures: bool,
    events: String,
    failures: i64,
    last_failure: String,
    last_success: String,
    /// The version the page shows, sent back by the rotate form (`rotate_secret`'s check).
    updated_at: i64,
}

impl EndpointRow {
    fn new(e: &Endpoint, health: &[rows::EndpointFailures]) -> EndpointRow {
        let failing = health.iter().find(|h| h.endpoint_id == e.id);
        let reason = e.disabled_reason.clone().unwrap_or_default();
        EndpointRow {
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone().unwrap_or_default(),
            enabled: e.enabled,
            disabled_for_failures: !e.enabled && reason != "disabled by the merchant",
            disabled_reason: reason,
            events: if e.enabled_events.is_empty() { "all events".into() } else { e.enabled_events.join(", ") },
            failures: failing.map_or(0, |h| h.failures),
            last_failure: failing.map(|h| when(h.last_failure_at)).unwrap_or_default(),
            last_success: e.last_success_at.map(when).unwrap_or_else(|| "never".into()),
            updated_at: e.updated_at,
        }
    }
}

/// A secret shown this once.
struct ShownSecret {
    heading: &'static str,
    secret: String,
}

/// The endpoint form's fields and their errors.
struct EndpointForm {
    url: String,
    description: String,
    /// Every type an endpoint may subscribe to, and whether the form has it ticked.
    events: Vec<(&'static str, bool)>,
    url_error: Option<String>,
    description_error: Option<String>,
    events_error: Option<String>,
}

impl EndpointForm {
    fn new(url: &str, description: &str, ticked: &[String]) -> EndpointForm {
        EndpointForm {
            url: url.to_owned(),
            description: description.to_owned(),
            events: EventType::ALL
                .into_iter()
                .filter(|t| *t != EventType::WebhookEndpointTest)
                .map(|t| (t.as_str(), ticked.iter().any(|w| w == t.as_str())))
                .collect(),
            url_error: None,
            description_error: None,
            events_error: None,
        }
    }

    fn has_errors(&self) -> bool {
        self.url_error.is_some() || self.description_error.is_some() || self.events_error.is_some()
    }

    /// Puts a lifecycle refusal next to its field; anything else is the caller's.
    fn refused(&mut self, error: EndpointError) -> Result<StatusCode, EndpointError> {
        match error {
            EndpointError::Invalid { ref param, .. } if param == "description" => {
                self.description_error = Some(error.to_string());
            }
            EndpointError::Invalid { ref param, .. } if param.starts_with("enabled_events") => {
                self.events_error = Some(error.to_string());
            }
            EndpointError::UrlInUse => self.url_error = Some(error.to_string()),
            EndpointError::TooMany => self.url_error = Some(error.to_string()),
            other => return Err(other),
        }
        Ok(StatusCode::BAD_REQUEST)
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct WebhooksPage {
    chrome: Option<Chrome>,
    csrf: String,
    endpoints: Vec<EndpointRow>,
    may_manage: bool,
    created: Option<ShownSecret>,
    form: EndpointForm,
}

#[derive(Template)]
#[template(path = "dashboard/webhook.html")]
struct EndpointPage {
    chrome: Option<Chrome>,
    csrf: String,
    endpoint: EndpointRow,
    may_manage: bool,
    rotated: Option<ShownSecret>,
    form: EndpointForm,
}

/// What an audit record says of an endpoint's URL: its host alone. The path or query may carry
/// a token, and the audit is a `member.action` event delivered to the merchant's other endpoints.
fn url_host(url: &str) -> Option<String> {
    url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned))
}

/// The URL check's refusal as a field error; anything but a bad URL is an internal error.
fn url_refusal(error: ApiError) -> Result<String, Refused> {
    match error {
        ApiError::InvalidRequest { message, .. } => Ok(message),
        other => Err(Box::new(internal(other))),
    }
}

fn lifecycle_failed(signed_in: &SignedIn, error: EndpointError) -> Response {
    match error {
        EndpointError::NotFound => not_found(Some(signed_in.chrome("webhooks")), "webhook endpoint"),
        EndpointError::Store(error) => internal(error),
        other => message(
            StatusCode::CONFLICT,
            Some(signed_in.chrome("webhooks")),
            "Not done",
            &other.to_string(),
            (LIST, "Back to webhooks"),
        ),
    }
}

async fn list_page(state: &AppState, signed_in: &SignedIn, form: EndpointForm) -> Result<WebhooksPage, Response> {
    let mut conn = state.store.conn().await.map_err(internal)?;
    let merchant_id = signed_in.merchant.id;
    let endpoints = rows::list_endpoints(&mut conn, merchant_id, None, 100).await.map_err(internal)?;
    let health = rows::recent_failures(&mut conn, merchant_id, now_ms() - HEALTH_WINDOW_MS).await.map_err(internal)?;
    Ok(WebhooksPage {
        chrome: Some(signed_in.chrome("webhooks")),
        csrf: signed_in.session.csrf_token.clone(),
        endpoints: endpoints.iter().map(|e| EndpointRow::new(e, &health)).collect(),
        may_manage: signed_in.member.role.may(Action::ManageWebhooks),
        created: None,
        form,
    })
}

/// `GET /dashboard/developers/webhooks`.
pub async fn list(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    match list_page(&state, &signed_in, EndpointForm::new("", "", &[])).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// The form's event types, description and URL (checked by the API's URL check).
async fn read_form(state: &AppState, form: &Form) -> Result<(EndpointForm, Option<CheckedUrl>), Response> {
    let ticked: Vec<String> = form.all("event").to_vec();
    let mut fields = EndpointForm::new(&form.text("url"), &form.text("description"), &ticked);
    let url = match endpoint_url(state, fields.url.clone()).await {
        Ok(url) => Some(url),
        Err(error) => {
            fields.url_error = Some(url_refusal(error).map_err(|refused| *refused)?);
            None
        }
    };
    if let Err(error) = webhook_endpoints::description(description_of(&fields)) {
        fields.description_error = Some(error.to_string());
    }
    if let Err(error) = webhook_endpoints::event_types(ticked) {
        fields.events_error = Some(error.to_string());
    }
    Ok((fields, url))
}

/// An empty description field is no description.
fn description_of(fields: &EndpointForm) -> Option<String> {
    (!fields.description.is_empty()).then(|| fields.description.clone())
}

fn ticked(fields: &EndpointForm) -> Vec<String> {
    fields.events.iter().filter(|(_, on)| *on).map(|(w, _)| (*w).to_owned()).collect()
}

/// `POST /dashboard/developers/webhooks`: creates an endpoint; the answer shows its secret once.
pub async fn create(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageWebhooks) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let (mut fields, url) = match read_form(&state, &form).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let mut created = None;
    let mut status = StatusCode::BAD_REQUEST;
    if let (Some(url), false) = (url, fields.has_errors()) {
        let new = NewEndpoint { url, enabled_events: ticked(&fields), description: description_of(&fields) };
        let outcome = async {
            let mut tx = state.store.begin().await?;
            let (endpoint, secret) =
                webhook_endpoints::create(&mut tx, signed_in.merchant.id, new, &state.webhook_secrets).await?;
            let details =
                json!({"endpoint_id": endpoint.id, "host": url_host(&endpoint.url), "enabled_events": endpoint.enabled_events, "description": endpoint.description});
            audit::record(
                &mut tx,
                &signed_in.member,
                "webhook_endpoint.create",
                Subject::new("webhook_endpoint", endpoint.id),
                &details,
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok::<_, EndpointError>(secret)
        }
        .await;
        match outcome {
            Ok(secret) => {
                created = Some(ShownSecret {
                    heading: "Endpoint created: copy its signing secret now",
                    secret: secret.expose_secret().to_owned(),
                });
                status = StatusCode::CREATED;
                fields = EndpointForm::new("", "", &[]);
            }
            Err(error) => match fields.refused(error) {
                Ok(code) => status = code,
                Err(other) => return lifecycle_failed(&signed_in, other),
            },
        }
    }
    match list_page(&state, &signed_in, fields).await {
        Ok(mut page) => {
            page.created = created;
            render(status, &page)
        }
        Err(response) => response,
    }
}

/// The merchant's endpoint `id`, or the 404 page (another merchant's too).
async fn endpoint_of(state: &AppState, signed_in: &SignedIn, id: &str) -> Result<Endpoint, Response> {
    let Ok(id) = id.parse::<Uuid>() else {
        return Err(not_found(Some(signed_in.chrome("webhooks")), "webhook endpoint"));
    };
    let mut conn = state.store.conn().await.map_err(internal)?;
    match rows::get_endpoint(&mut conn, signed_in.merchant.id, id).await.map_err(internal)? {
        Some(endpoint) => Ok(endpoint),
        None => Err(not_found(Some(signed_in.chrome("webhooks")), "webhook endpoint")),
    }
}

async fn endpoint_page(state: &AppState, signed_in: &SignedIn, endpoint: &Endpoint) -> Result<EndpointPage, Response> {
    let mut conn = state.store.conn().await.map_err(internal)?;
    let health =
        rows::recent_failures(&mut conn, signed_in.merchant.id, now_ms() - HEALTH_WINDOW_MS).await.map_err(internal)?;
    Ok(EndpointPage {
        chrome: Some(signed_in.chrome("webhooks")),
        csrf: signed_in.session.csrf_token.clone(),
        endpoint: EndpointRow::new(endpoint, &health),
        may_manage: signed_in.member.role.may(Action::ManageWebhooks),
        rotated: None,
        form: EndpointForm::new(
            &endpoint.url,
            endpoint.description.as_deref().unwrap_or_default(),
            &endpoint.enabled_events,
        ),
    })
}

/// `GET /dashboard/developers/webhooks/{id}`.
pub async fn show(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    let endpoint = match endpoint_of(&state, &signed_in, &id).await {
        Ok(endpoint) => endpoint,
        Err(response) => return response,
    };
    match endpoint_page(&state, &signed_in, &endpoint).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

/// The posting member's endpoint `id`: the refusal when the form or role is refused or the
/// endpoint is not the merchant's.
async fn target(state: &AppState, signed_in: &SignedIn, id: &str, body: &Bytes) -> Result<(Form, Endpoint), Response> {
    let form = signed_in.form_for(body, Action::ManageWebhooks).map_err(|refused| *refused)?;
    let endpoint = endpoint_of(state, signed_in, id).await?;
    Ok((form, endpoint))
}

/// `POST /dashboard/developers/webhooks/{id}`: changes the URL, description and event types.
pub async fn update(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (form, endpoint) = match target(&state, &signed_in, &id, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let (mut fields, url) = match read_form(&state, &form).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    if let (Some(url), false) = (url, fields.has_errors()) {
        let changes = Changes {
            url: Some(url),
            enabled_events: Some(ticked(&fields)),
            description: Some(description_of(&fields)),
            enabled: None,
        };
        let outcome = async {
            let mut tx = state.store.begin().await?;
            let changed = webhook_endpoints::update(&mut tx, signed_in.merchant.id, endpoint.id, changes).await?;
            let details =
                json!({"endpoint_id": changed.id, "host": url_host(&changed.url), "enabled_events": changed.enabled_events, "description": changed.description});
            audit::record(
                &mut tx,
                &signed_in.member,
                "webhook_endpoint.update",
                Subject::new("webhook_endpoint", endpoint.id),
                &details,
            )
            .await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok::<_, EndpointError>(())
        }
        .await;
        match outcome {
            Ok(()) => return secured(Redirect::to(&format!("{LIST}/{}", endpoint.id)).into_response()),
            Err(error) => {
                if let Err(other) = fields.refused(error) {
                    return lifecycle_failed(&signed_in, other);
                }
            }
        }
    }
    match endpoint_page(&state, &signed_in, &endpoint).await {
        Ok(mut page) => {
            page.form = fields;
            render(StatusCode::BAD_REQUEST, &page)
        }
        Err(response) => response,
    }
}

/// Enables or disables an endpoint, recorded as `webhook_endpoint.enable` / `.disable`.
async fn set_enabled(state: AppState, signed_in: SignedIn, id: String, body: Bytes, enabled: bool) -> Response {
    let endpoint = match target(&state, &signed_in, &id, &body).await {
        Ok((_, endpoint)) => endpoint,
        Err(response) => return response,
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let changes = Changes { enabled: Some(enabled), ..Changes::default() };
        webhook_endpoints::update(&mut tx, signed_in.merchant.id, endpoint.id, changes).await?;
        let action = if enabled { "webhook_endpoint.enable" } else { "webhook_endpoint.disable" };
        let details = json!({"endpoint_id": endpoint.id, "host": url_host(&endpoint.url)});
        audit::record(&mut tx, &signed_in.member, action, Subject::new("webhook_endpoint", endpoint.id), &details)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, EndpointError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to(&format!("{LIST}/{}", endpoint.id)).into_response()),
        Err(error) => lifecycle_failed(&signed_in, error),
    }
}

/// `POST /dashboard/developers/webhooks/{id}/enable`.
pub async fn enable(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    set_enabled(state, signed_in, id, body, true).await
}

/// `POST /dashboard/developers/webhooks/{id}/disable`.
pub async fn disable(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    set_enabled(state, signed_in, id, body, false).await
}

/// `POST /dashboard/developers/webhooks/{id}/rotate-secret`: the answer shows the new secret once.
pub async fn rotate_secret(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (form, endpoint) = match target(&state, &signed_in, &id, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    // The version the page showed: a second rotation from the same page (a double click, a
    // resend) is refused instead of dropping the secret the first kept for its grace period.
    let Ok(seen) = form.text("updated_at").parse::<i64>() else {
        return message(
            StatusCode::BAD_REQUEST,
            Some(signed_in.chrome("webhooks")),
            "Not done",
            "the form is missing the endpoint's version; reload the page and try again",
            (LIST, "Back to webhooks"),
        );
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let (rotated, secret) = webhook_endpoints::rotate_secret(
            &mut tx,
            signed_in.merchant.id,
            endpoint.id,
            &state.webhook_secrets,
            grace_ms(&state),
            Some(seen),
        )
        .await?;
        // Never the secret: only until when the previous one still signs.
        let details =
            json!({"previous_secret_expires_at": rotated.previous_secret_expires_at.map(|t| t.div_euclid(1000))});
        audit::record(
            &mut tx,
            &signed_in.member,
            "webhook_endpoint.rotate_secret",
            Subject::new("webhook_endpoint", endpoint.id),
            &details,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, EndpointError>((rotated, secret))
    }
    .await;
    match outcome {
        Ok((rotated, secret)) => match endpoint_page(&state, &signed_in, &rotated).await {
            Ok(mut page) => {
                page.rotated = Some(ShownSecret {
                    heading: "Secret rotated: copy the new signing secret now",
                    secret: secret.expose_secret().to_owned(),
                });
                render(StatusCode::OK, &page)
            }
            Err(response) => response,
        },
        Err(error) => lifecycle_failed(&signed_in, error),
    }
}

/// `POST /dashboard/developers/webhooks/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let endpoint = match target(&state, &signed_in, &id, &body).await {
        Ok((_, endpoint)) => endpoint,
        Err(response) => return response,
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        webhook_endpoints::delete(&mut tx, signed_in.merchant.id, endpoint.id).await?;
        let details = json!({"endpoint_id": endpoint.id, "host": url_host(&endpoint.url)});
        audit::record(
            &mut tx,
            &signed_in.member,
            "webhook_endpoint.delete",
            Subject::new("webhook_endpoint", endpoint.id),
            &details,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, EndpointError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to(LIST).into_response()),
        Err(error) => lifecycle_failed(&signed_in, error),
    }
}

/// `POST /dashboard/developers/webhooks/{id}/test`: sends the endpoint a test event, then shows
/// the event log of the endpoint, where its delivery appears.
pub async fn send_test(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let endpoint = match target(&state, &signed_in, &id, &body).await {
        Ok((_, endpoint)) => endpoint,
        Err(response) => return response,
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let event_id = webhook_endpoints::send_test(&mut tx, signed_in.merchant.id, endpoint.id).await?;
        let details = json!({"event_id": event_id, "endpoint_id": endpoint.id, "host": url_host(&endpoint.url)});
        audit::record(
            &mut tx,
            &signed_in.member,
            "webhook_endpoint.test",
            Subject::new("webhook_endpoint", endpoint.id),
            &details,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, EndpointError>(event_id)
    }
    .await;
    match outcome {
        Ok(event_id) => secured(Redirect::to(&format!("/dashboard/developers/events/{event_id}")).into_response()),
        Err(error) => lifecycle_failed(&signed_in, error),
    }
}
