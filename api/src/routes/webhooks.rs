//! Webhook endpoints (`/api/v1/webhook-endpoints`), the callback signing secret
//! (`/api/v1/callback-secret`) and events (`/api/v1/events`).
//!
//! A signing secret is shown exactly twice in its life: when it is created and when it replaces
//! another (rotation). It is stored sealed and never returned otherwise.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use depositd_core::api_key::Scope;
use depositd_core::outbox::{self, EventType};
use depositd_core::store::webhooks::{self, CallbackSecret, EventFilter, EventRecord};
use depositd_core::store::{Conn, StoreError};
use depositd_core::time::now_ms;
use depositd_core::webhook_endpoints::{self, Changes, CheckedUrl, EndpointError, NewEndpoint};
use depositd_core::webhooks::Endpoint;
use depositd_core::webhooks::generate_secret;
use depositd_webhooks::ssrf;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{Page, PathId};
use crate::query::{self, List, ListQuery};
use crate::state::AppState;
use crate::{extract, validate};

/// An endpoint as the API shows it. (No `Debug`: it can carry a freshly shown secret.)
#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointResource {
    /// Always `webhook_endpoint`.
    #[schema(value_type = String)]
    object: &'static str,
    id: Uuid,
    url: String,
    description: Option<String>,
    /// Event types delivered; empty means all.
    enabled_events: Vec<String>,
    /// `enabled` or `disabled`.
    #[schema(value_type = String)]
    status: &'static str,
    disabled_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
    /// The signing secret (`whsec_...`): only in the answer that created or rotated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Until when deliveries also carry the previous secret's signature (epoch seconds).
    previous_secret_expires_at: Option<i64>,
}

impl WebhookEndpointResource {
    fn build(e: &Endpoint, secret: Option<String>) -> WebhookEndpointResource {
        WebhookEndpointResource {
            object: "webhook_endpoint",
            id: e.id,
            url: e.url.clone(),
            description: e.description.clone(),
            enabled_events: e.enabled_events.clone(),
            status: if e.enabled { "enabled" } else { "disabled" },
            disabled_reason: e.disabled_reason.clone(),
            created_at: e.created_at.div_euclid(1000),
            updated_at: e.updated_at.div_euclid(1000),
            secret,
            previous_secret_expires_at: e
                .previous_secret_expires_at
                .filter(|t| *t > now_ms())
                .map(|t| t.div_euclid(1000)),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// https (http only where the operator allows it); must resolve to a public address.
    url: String,
    /// Event types to deliver; omitted or empty = all.
    enabled_events: Option<Vec<String>>,
    description: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    url: Option<String>,
    enabled_events: Option<Vec<String>>,
    description: Option<String>,
    /// `true` (re-)enables the endpoint; `false` disables it: meanwhile events are not queued for
    /// it and its pending deliveries are dropped (redeliver them from `/api/v1/events`).
    enabled: Option<bool>,
}

/// The URL rules of a webhook endpoint, the one check for the API and the dashboard: well-formed,
/// https unless `webhooks.allow_http`, and not internal (the delivery's SSRF guard, resolving the
/// host). Call it before the transaction: a DNS lookup must not hold a lock.
pub(crate) async fn endpoint_url(state: &AppState, value: String) -> Result<CheckedUrl, ApiError> {
    let settings = &state.config.settings.webhooks;
    let value = validate::url("url", Some(value), settings.allow_http)?.unwrap_or_default();
    let parsed = url::Url::parse(&value).map_err(|e| ApiError::invalid("url", "invalid_url", e.to_string()))?;
    ssrf::check_url_resolving(&parsed, settings.allow_http, settings.allow_private_targets)
        .await
        .map_err(|refused| ApiError::invalid("url", "url_not_allowed", format!("url: {refused}")))?;
    Ok(CheckedUrl::vouched(value))
}

/// The API's answer to a refusal of the endpoint lifecycle.
pub(crate) fn endpoint_error(error: EndpointError) -> ApiError {
    match error {
        EndpointError::Invalid { param, code, message } => ApiError::invalid(param, code, message),
        EndpointError::UrlInUse => {
            ApiError::Conflict { code: "url_in_use", message: error.to_string(), param: Some("url".into()) }
        }
        EndpointError::TooMany => {
            ApiError::Conflict { code: "too_many_endpoints", message: error.to_string(), param: None }
        }
        EndpointError::NotFound => ApiError::not_found("webhook endpoint"),
        EndpointError::Disabled => {
            ApiError::Conflict { code: "endpoint_disabled", message: error.to_string(), param: None }
        }
        EndpointError::Changed => {
            ApiError::Conflict { code: "endpoint_changed", message: error.to_string(), param: None }
        }
        EndpointError::Store(error) => error.into(),
    }
}

/// The rotation grace period of the configuration, in milliseconds.
pub(crate) fn grace_ms(state: &AppState) -> i64 {
    (state.config.settings.webhooks.secret_rotation_grace_secs as i64) * 1000
}

#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints", tag = "webhooks",
    request_body = CreateWebhookEndpoint,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = WebhookEndpointResource),
        (status = 400, description = "Invalid or refused URL, unknown event type", body = crate::error::ErrorBody),
        (status = 409, description = "Another of your endpoints has this url, or you have the most endpoints allowed", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let request: CreateWebhookEndpoint = extract::json(body)?;
    let new = NewEndpoint {
        url: endpoint_url(&state, request.url).await?,
        enabled_events: request.enabled_events.unwrap_or_default(),
        description: request.description,
    };
    let mut tx = state.store.begin().await?;
    let (endpoint, secret) = webhook_endpoints::create(&mut tx, auth.merchant.id, new, &state.webhook_secrets)
        .await
        .map_err(endpoint_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    let resource = WebhookEndpointResource::build(&endpoint, Some(secret.expose_secret().to_owned()));
    Ok((StatusCode::CREATED, Json(resource)).into_response())
}

/// The merchant's endpoint named in the path, or 400/404.
async fn load(conn: &mut Conn, auth: &Authenticated, id: &str) -> Result<Endpoint, ApiError> {
    let id = extract::path_id("webhook endpoint", id)?;
    webhooks::get_endpoint(conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint (without its secret)", body = WebhookEndpointResource),
        (status = 404, description = "No such endpoint", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    auth.require(Scope::WebhooksRead)?;
    let mut conn = state.store.conn().await?;
    let endpoint = load(&mut conn, &auth, &id).await?;
    Ok(Json(WebhookEndpointResource::build(&endpoint, None)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookEndpointList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<WebhookEndpointResource>,
    has_more: bool,
}

/// The query of `GET /api/v1/webhook-endpoints`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListWebhookEndpoints {
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListWebhookEndpoints {
    const SCOPE: Scope = Scope::WebhooksRead;
}

#[utoipa::path(
    get, path = "/api/v1/webhook-endpoints", tag = "webhooks",
    params(ListWebhookEndpoints),
    responses((status = 200, description = "Endpoints, newest first", body = WebhookEndpointList)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListWebhookEndpoints>,
) -> Result<Json<WebhookEndpointList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let mut conn = state.store.conn().await?;
    let found = webhooks::list_endpoints(&mut conn, auth.merchant.id, page.starting_after, page.fetch()).await?;
    let (found, has_more) = page.finish(found);
    let data = found.iter().map(|e| WebhookEndpointResource::build(e, None)).collect();
    Ok(Json(WebhookEndpointList { object: "list", data, has_more }))
}

#[utoipa::path(
    patch, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    request_body = UpdateWebhookEndpoint,
    responses(
        (status = 200, description = "The updated endpoint", body = WebhookEndpointResource),
        (status = 400, description = "Invalid field", body = crate::error::ErrorBody),
        (status = 404, description = "No such endpoint", body = crate::error::ErrorBody),
        (status = 409, description = "Another of your endpoints has this url", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let request: UpdateWebhookEndpoint = extract::json(body)?;
    // Checked before the row is locked: a DNS lookup must not hold a lock.
    let new_url = match request.url {
        Some(url) => Some(endpoint_url(&state, url).await?),
        None => None,
    };
    let id = extract::path_id("webhook endpoint", &id)?;
    let changes = Changes {
        url: new_url,
        enabled_events: request.enabled_events,
        description: request.description.map(Some),
        enabled: request.enabled,
    };
    let mut tx = state.store.begin().await?;
    let endpoint = webhook_endpoints::update(&mut tx, auth.merchant.id, id, changes).await.map_err(endpoint_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(WebhookEndpointResource::build(&endpoint, None)))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    id: Uuid,
    /// Always `webhook_endpoint`.
    #[schema(value_type = String)]
    object: &'static str,
    deleted: bool,
}

#[utoipa::path(
    delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "Deleted; pending deliveries to it are dropped", body = Deleted),
        (status = 404, description = "No such endpoint", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<Deleted>, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let id = extract::path_id("webhook endpoint", &id)?;
    let mut tx = state.store.begin().await?;
    webhook_endpoints::delete(&mut tx, auth.merchant.id, id).await.map_err(endpoint_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(Deleted { id, object: "webhook_endpoint", deleted: true }))
}

#[utoipa::path(
    post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "A new secret (shown this once); for webhooks.secret_rotation_grace_secs deliveries carry both signatures", body = WebhookEndpointResource),
        (status = 404, description = "No such endpoint", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<WebhookEndpointResource>, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let id = extract::path_id("webhook endpoint", &id)?;
    let mut tx = state.store.begin().await?;
    let (endpoint, secret) =
        webhook_endpoints::rotate_secret(&mut tx, auth.merchant.id, id, &state.webhook_secrets, grace_ms(&state), None)
            .await
            .map_err(endpoint_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(WebhookEndpointResource::build(&endpoint, Some(secret.expose_secret().to_owned()))))
}

fn grace_until(state: &AppState) -> i64 {
    now_ms() + grace_ms(state)
}

/// The callback signing secret, as shown when it is (re)created. (No `Debug`: it is a secret.)
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallbackSecretResource {
    /// Always `callback_secret`.
    #[schema(value_type = String)]
    object: &'static str,
    /// Signs deliveries to invoices' and static addresses' `callback_url`: shown this once.
    secret: String,
    previous_secret_expires_at: Option<i64>,
}

#[utoipa::path(
    post, path = "/api/v1/callback-secret", tag = "webhooks",
    responses((status = 200, description = "A new callback signing secret, shown this once; the previous one keeps signing during the grace period", body = CallbackSecretResource)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn rotate_callback_secret(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<CallbackSecretResource>, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let mut tx = state.store.begin().await?;
    let previous = webhooks::callback_secret(&mut tx, auth.merchant.id).await?;
    let secret = generate_secret();
    let expires = previous.as_ref().map(|_| grace_until(&state));
    let stored = CallbackSecret {
        sealed: state.webhook_secrets.seal(&secret),
        previous_sealed: previous.map(|p| p.sealed),
        previous_expires_at: expires,
    };
    webhooks::put_callback_secret(&mut tx, auth.merchant.id, &stored, false).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(CallbackSecretResource {
        object: "callback_secret",
        secret: secret.expose_secret().to_owned(),
        previous_secret_expires_at: expires.map(|t| t.div_euclid(1000)),
    }))
}

// === events ===

/// One delivery of an event, with its attempts when asked for one event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: Uuid,
    /// `None` for a delivery to the resource's `callback_url`.
    endpoint_id: Option<Uuid>,
    url: String,
    /// `pending`, `succeeded` or `failed`.
    state: String,
    attempt_count: u32,
    /// Epoch seconds.
    next_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// Epoch milliseconds.
    attempted_at: i64,
    status_code: Option<u16>,
    latency_ms: i64,
    /// The first KB of the answer.
    response_body: Option<String>,
    error: Option<String>,
}

/// An event: exactly what was delivered, and how delivery went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventResource {
    /// Always `event`.
    #[schema(value_type = String)]
    object: &'static str,
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    created_at: i64,
    resource_type: String,
    resource_id: Uuid,
    /// The resource as it was when the event happened.
    #[schema(value_type = Object)]
    data: serde_json::Value,
    deliveries: Vec<DeliveryView>,
}

async fn event_resource(conn: &mut Conn, event: EventRecord, with_attempts: bool) -> Result<EventResource, ApiError> {
    let payload: serde_json::Value = serde_json::from_str(&event.payload)
        .map_err(|e| ApiError::internal(StoreError::Corrupt(format!("events.payload: {e}"))))?;
    let mut deliveries = Vec::new();
    for d in webhooks::deliveries(conn, event.id).await? {
        let attempts = if with_attempts {
            Some(
                webhooks::attempts(conn, d.id)
                    .await?
                    .into_iter()
                    .map(|a| AttemptView {
                        attempted_at: a.attempted_at,
                        status_code: a.status_code,
                        latency_ms: a.latency_ms,
                        response_body: a.response_body,
                        error: a.error,
                    })
                    .collect(),
            )
        } else {
            None
        };
        deliveries.push(DeliveryView {
            id: d.id,
            endpoint_id: d.endpoint_id,
            url: d.url,
            next_attempt_at: (d.state == "pending").then(|| d.next_attempt_at.div_euclid(1000)),
            state: d.state,
            attempt_count: d.attempt_count,
            delivered_at: d.delivered_at.map(|t| t.div_euclid(1000)),
            attempts,
        });
    }
    Ok(EventResource {
        object: "event",
        id: event.id,
        event_type: event.event_type.to_string(),
        created_at: event.created_at.div_euclid(1000),
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        data: payload["data"].clone(),
        deliveries,
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<EventResource>,
    has_more: bool,
}

/// The query of `GET /api/v1/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// Only events of this type
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events about this invoice, deposit, ...
    #[serde(default, deserialize_with = "query::resource_id")]
    resource_id: Option<Uuid>,
    /// Events with a delivery `pending`, `succeeded` or `failed`
    #[serde(default, deserialize_with = "delivery_state")]
    delivery_state: Option<String>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListEvents {
    const SCOPE: Scope = Scope::WebhooksRead;
}

/// `delivery_state` of [`ListEvents`].
fn delivery_state<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let message = "delivery_state is `pending`, `succeeded` or `failed`";
    query::one_of(deserializer, &["pending", "succeeded", "failed"], message)
}

#[utoipa::path(
    get, path = "/api/v1/events", tag = "webhooks",
    params(ListEvents),
    responses(
        (status = 200, description = "Events, newest first", body = EventList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_events(
    State(state): State<AppState>,
    List { auth, query }: List<ListEvents>,
) -> Result<Json<EventList>, ApiError> {
    let event_type =
        match query.event_type.as_deref() {
            None => None,
            Some(value) => Some(value.parse::<EventType>().map_err(|_| {
                ApiError::invalid("type", "invalid_event_type", format!("{value:?} is not an event type"))
            })?),
        };
    let page = Page::new(query.limit, query.starting_after);
    let filter = EventFilter {
        event_type,
        resource_id: query.resource_id,
        delivery_state: query.delivery_state,
        starting_after: page.starting_after,
    };
    let mut conn = state.store.conn().await?;
    let (found, has_more) =
        page.finish(webhooks::list_events(&mut conn, auth.merchant.id, &filter, page.fetch()).await?);
    let mut data = Vec::with_capacity(found.len());
    for event in found {
        data.push(event_resource(&mut conn, event, false).await?);
    }
    Ok(Json(EventList { object: "list", data, has_more }))
}

#[utoipa::path(
    get, path = "/api/v1/events/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event with every delivery attempt", body = EventResource),
        (status = 404, description = "No such event", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get_event(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<EventResource>, ApiError> {
    auth.require(Scope::WebhooksRead)?;
    let id = extract::path_id("event", &id)?;
    let mut conn = state.store.conn().await?;
    let event =
        webhooks::get_event(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(event_resource(&mut conn, event, true).await?))
}

#[utoipa::path(
    post, path = "/api/v1/events/{id}/redeliver", tag = "webhooks",
    params(("id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 202, description = "Queued again, with the same event id and payload", body = EventResource),
        (status = 404, description = "No such event", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn redeliver(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    auth.require(Scope::WebhooksWrite)?;
    let id = extract::path_id("event", &id)?;
    let mut tx = state.store.begin().await?;
    let event =
        webhooks::get_event(&mut tx, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("event"))?;
    outbox::redeliver(&mut tx, &event, auth.merchant.id).await?;
    let resource = event_resource(&mut tx, event, false).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok((StatusCode::ACCEPTED, Json(resource)).into_response())
}
