//! Webhook endpoints' lifecycle, written once for the merchant API (`/api/v1/webhook-endpoints`)
//! and the dashboard's Webhooks page: what an endpoint may list and say, how many a merchant may
//! have, one endpoint per URL, creating (the secret shown once), changing, enabling and disabling,
//! rotating the secret, deleting, and sending one a test event.
//!
//! A URL reaches these functions as a [`CheckedUrl`]: its form (https unless the operator allows
//! http) and the SSRF guard's verdict (which resolves the host name) are the transport's rules,
//! `depositd_webhooks::ssrf`, which core does not know; the API crate checks a URL with one
//! function for both of its callers, before the transaction, so no DNS lookup holds a row lock.

use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use crate::event::EventType;
use crate::outbox;
use crate::store::webhooks as rows;
use crate::store::{StoreError, Tx};
use crate::time::now_ms;
use crate::webhooks::{EVENT_TYPES, Endpoint, SecretBox, generate_secret};

/// Endpoints a merchant may have: every event goes to each, so there is a bound.
pub const MAX_ENDPOINTS: i64 = 16;

/// The longest description.
pub const MAX_DESCRIPTION: usize = 255;

/// A URL that passed the registering rules of the transport (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl(String);

impl CheckedUrl {
    /// A URL the caller checked with the transport's rules (the API crate's one check).
    pub fn vouched(url: String) -> CheckedUrl {
        CheckedUrl(url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an endpoint change was refused. `param` and `code` are the API's words for it.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// A field is invalid.
    #[error("{message}")]
    Invalid { param: String, code: &'static str, message: String },
    #[error("another of your webhook endpoints has this url")]
    UrlInUse,
    #[error("at most {} webhook endpoints; delete one first", MAX_ENDPOINTS)]
    TooMany,
    #[error("no such webhook endpoint")]
    NotFound,
    #[error("the endpoint is disabled: enable it before sending it a test event")]
    Disabled,
    /// The caller's copy of the endpoint is stale (an optimistic check, [`rotate_secret`]).
    #[error(
        "the endpoint changed since this page was shown (its secret was rotated or it was edited); nothing was done: \
         reload the page and try again if you still want to"
    )]
    Changed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: CheckedUrl,
    /// Event type words; empty = every type.
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
}

/// What to change of an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub url: Option<CheckedUrl>,
    pub enabled_events: Option<Vec<String>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    /// `true` (re-)enables the endpoint; `false` disables it (its pending deliveries are dropped
    /// by the worker, and no event is queued for it meanwhile).
    pub enabled: Option<bool>,
}

/// The event type words, checked (each one of [`EVENT_TYPES`] but `webhook_endpoint.test`,
/// which goes only to the endpoint it tests and cannot be subscribed to), sorted, without
/// repeats.
pub fn event_types(types: Vec<String>) -> Result<Vec<String>, EndpointError> {
    let test = EventType::WebhookEndpointTest.as_str();
    for (i, t) in types.iter().enumerate() {
        if t == test {
            return Err(EndpointError::Invalid {
                param: format!("enabled_events[{i}]"),
                code: "invalid_event_type",
                message: format!(
                    "{test:?} cannot be subscribed to: a test event is sent only to the endpoint it tests, when you \
                     ask for one"
                ),
            });
        }
        if !EVENT_TYPES.contains(&t.as_str()) {
            let subscribable: Vec<&str> = EVENT_TYPES.iter().copied().filter(|w| *w != test).collect();
            return Err(EndpointError::Invalid {
                param: format!("enabled_events[{i}]"),
                code: "invalid_event_type",
                message: format!("{t:?} is not an event type (one of {})", subscribable.join(", ")),
            });
        }
    }
    let mut types = types;
    types.sort();
    types.dedup();
    Ok(types)
}

/// A description: 1 to [`MAX_DESCRIPTION`] characters, no control characters but newline and tab.
pub fn description(value: Option<String>) -> Result<Option<String>, EndpointError> {
    let Some(value) = value else { return Ok(None) };
    let invalid =
        |message: String| EndpointError::Invalid { param: "description".into(), code: "invalid_parameter", message };
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_DESCRIPTION {
        return Err(invalid(format!("description must be 1 to {MAX_DESCRIPTION} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid("description contains control characters".into()));
    }
    Ok(Some(value))
}

/// Refuses a URL another of the merchant's endpoints has (one destination, one delivery), and a
/// new endpoint beyond [`MAX_ENDPOINTS`]. The caller took [`rows::lock_merchant_endpoints`] at
/// the start of its transaction, so concurrent creates and changes are checked one at a time.
async fn check_usage(tx: &mut Tx, merchant_id: Uuid, url: &str, except: Option<Uuid>) -> Result<(), EndpointError> {
    let (count, taken) = rows::endpoint_usage(tx, merchant_id, url, except).await?;
    if taken {
        return Err(EndpointError::UrlInUse);
    }
    if except.is_none() && count >= MAX_ENDPOINTS {
        return Err(EndpointError::TooMany);
    }
    Ok(())
}

/// Creates merchant `merchant_id`'s endpoint with a fresh signing secret, sealed with `sealer`;
/// returns it and the secret (to show this once).
pub async fn create(
    tx: &mut Tx,
    merchant_id: Uuid,
    new: NewEndpoint,
    sealer: &SecretBox,
) -> Result<(Endpoint, SecretString), EndpointError> {
    let enabled_events = event_types(new.enabled_events)?;
    let description = description(new.description)?;
    rows::lock_merchant_endpoints(tx, merchant_id).await?;
    check_usage(tx, merchant_id, new.url.as_str(), None).await?;
    let now = now_ms();
    let secret = generate_secret();
    let endpoint = Endpoint {
        id: Uuid::now_v7(),
        merchant_id,
        url: new.url.0,
        description,
        enabled_events,
        enabled: true,
        disabled_reason: None,
        secret_sealed: sealer.seal(&secret),
        previous_secret_sealed: None,
        previous_secret_expires_at: None,
        last_success_at: None,
        created_at: now,
        updated_at: now,
    };
    rows::insert_endpoint(tx, &endpoint).await?;
    tracing::info!(endpoint_id = %endpoint.id, %merchant_id, "webhook endpoint created");
    Ok((endpoint, secret))
}

/// The merchant's endpoint `id` (locked for the transaction on PostgreSQL), or not found.
pub async fn get(tx: &mut Tx, merchant_id: Uuid, id: Uuid) -> Result<Endpoint, EndpointError> {
    rows::get_endpoint(tx, merchant_id, id).await?.ok_or(EndpointError::NotFound)
}

fn not_found(error: StoreError) -> EndpointError {
    match error {
        StoreError::NotFound => EndpointError::NotFound,
        other => other.into(),
    }
}

/// Changes merchant `merchant_id`'s endpoint `id` as `changes` says; returns it as it is now.
pub async fn update(tx: &mut Tx, merchant_id: Uuid, id: Uuid, changes: Changes) -> Result<Endpoint, EndpointError> {
    if changes.url.is_some() {
        // Before the endpoint's own lock, in the order `create` takes them.
        rows::lock_merchant_endpoints(tx, merchant_id).await?;
    }
    let mut endpoint = get(tx, merchant_id, id).await?;
    if let Some(url) = changes.url {
        check_usage(tx, merchant_id, url.as_str(), Some(endpoint.id)).await?;
        endpoint.url = url.0;
    }
    if let Some(types) = changes.enabled_events {
        endpoint.enabled_events = event_types(types)?;
    }
    if let Some(text) = changes.description {
        endpoint.description = description(text)?;
    }
    match changes.enabled {
        Some(true) => {
            endpoint.enabled = true;
            endpoint.disabled_reason = None;
        }
        Some(false) => {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some("disabled by the merchant".into());
        }
        None => {}
    }
    rows::update_endpoint(tx, &mut endpoint).await.map_err(not_found)?;
    Ok(endpoint)
}

/// Gives endpoint `id` a new secret (returned, to show this once); for `grace_ms` deliveries
/// also carry the previous secret's signature.
///
/// `expected_updated_at`, when given, is the endpoint's `updated_at` as the caller last saw it:
/// if the endpoint changed since, nothing is done ([`EndpointError::Changed`]). The dashboard's
/// form sends it, so a second rotation submitted on the same page (a double click, a resend)
/// does not replace the secret the first one kept for its grace period; the API passes `None`.
pub async fn rotate_secret(
    tx: &mut Tx,
    merchant_id: Uuid,
    id: Uuid,
    sealer: &SecretBox,
    grace_ms: i64,
    expected_updated_at: Option<i64>,
) -> Result<(Endpoint, SecretString), EndpointError> {
    // Locked (PostgreSQL) until the transaction ends, so the check and the write are one step.
    let mut endpoint = get(tx, merchant_id, id).await?;
    if expected_updated_at.is_some_and(|expected| expected != endpoint.updated_at) {
        return Err(EndpointError::Changed);
    }
    let secret = generate_secret();
    endpoint.previous_secret_sealed = Some(std::mem::replace(&mut endpoint.secret_sealed, sealer.seal(&secret)));
    endpoint.previous_secret_expires_at = Some(now_ms() + grace_ms);
    rows::update_endpoint(tx, &mut endpoint).await.map_err(not_found)?;
    Ok((endpoint, secret))
}

/// Deletes endpoint `id`: it receives nothing more; its pending deliveries are dropped.
pub async fn delete(tx: &mut Tx, merchant_id: Uuid, id: Uuid) -> Result<(), EndpointError> {
    if rows::delete_endpoint(tx, merchant_id, id).await? { Ok(()) } else { Err(EndpointError::NotFound) }
}

/// The data of a `webhook_endpoint.test` event.
#[derive(Debug, Serialize)]
struct TestData<'a> {
    object: &'static str,
    endpoint_id: Uuid,
    url: &'a str,
    message: &'static str,
}

/// Sends enabled endpoint `id` a `webhook_endpoint.test` event: recorded like every event and
/// delivered, signed, by the delivery worker to this endpoint alone (see
/// [`outbox::record_test`]). Returns the event id.
pub async fn send_test(tx: &mut Tx, merchant_id: Uuid, id: Uuid) -> Result<Uuid, EndpointError> {
    let endpoint = get(tx, merchant_id, id).await?;
    if !endpoint.enabled {
        return Err(EndpointError::Disabled);
    }
    let data = TestData {
        object: "webhook_endpoint_test",
        endpoint_id: endpoint.id,
        url: &endpoint.url,
        message: "A test event from depositd: this endpoint receives and verifies deliveries.",
    };
    Ok(outbox::record_test(tx, &endpoint, EventType::WebhookEndpointTest, &data).await?)
}
