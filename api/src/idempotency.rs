//! `Idempotency-Key` handling around a creating request (see `depositd_core::store::idempotency`).
//!
//! Flow: parse the body, [`check`] the key (a plain read: replay a completed response, or refuse
//! a key used with another request, before the body's fields are checked), validate, then open
//! the work's transaction with [`begin`], which claims the key first thing in it, do the work,
//! and [`commit`], which completes the record in the same transaction. One write transaction per
//! creation: the claim, the work and the stored response commit together or not at all, so a
//! failed request (an error, a `?`, a crash) leaves no record and a corrected retry proceeds.
//! Only successful responses are stored.
//!
//! [`Create`] is that flow's front half as an extractor: every creating handler takes it and
//! starts at the work.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use depositd_core::api_key::Scope;
use depositd_core::store::idempotency::{self, Claim};
use depositd_core::store::{Store, Tx};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, PathId};
pub use crate::idempotency_key::{IdempotencyGuard, created};
use crate::state::AppState;

/// How long a request waits for a concurrent one with the same key before answering 409 (only an
/// earlier daemon's claim, committed before its work, makes one wait: claims of this one are
/// waited for by the database, see `depositd_core::store::idempotency`).
const WAIT_FOR_OWNER: Duration = Duration::from_secs(10);

/// The stored response of a key used before with the same request, marked as a replay.
pub fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static header"));
    response.headers_mut().insert("idempotent-replayed", "true".parse().expect("static header"));
    response
}

fn conflict() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_conflict",
        message: "this Idempotency-Key was already used with a different request; use a new key".into(),
        param: Some("Idempotency-Key".into()),
    }
}

fn in_use() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_key_in_use",
        message: "another request with this Idempotency-Key is still being processed; retry shortly".into(),
        param: Some("Idempotency-Key".into()),
    }
}

/// The prefix of the dashboard's own idempotency keys (`routes::dashboard::payouts`), refused
/// from the API.
pub const DASHBOARD_PREFIX: &str = "dashboard:";

/// Checks the request's `Idempotency-Key` (if any) for `endpoint` and this body without claiming
/// it: `Ok(Ok(guard))` to proceed (`None` without a key), `Ok(Err(response))` to replay.
pub async fn check(
    store: &Store,
    merchant_id: Uuid,
    headers: &HeaderMap,
    endpoint: &'static str,
    body: &serde_json::Value,
) -> Result<Result<Option<IdempotencyGuard>, Response>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(Ok(None));
    };
    let key = raw
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_owned();
    // The dashboard records its confirmations under `dashboard:` keys in the same table: an API
    // request may not claim (or replay) one of them.
    if key.starts_with(DASHBOARD_PREFIX) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "invalid_idempotency_key",
            "Idempotency-Key may not start with \"dashboard:\", the dashboard's own keys",
        ));
    }
    // serde_json maps keep keys sorted, so this is a canonical form: the same JSON with other
    // whitespace or key order is the same request.
    let request_hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let found = {
            let mut conn = store.conn().await?;
            idempotency::lookup(&mut conn, merchant_id, &key, endpoint, &request_hash).await?
        };
        match found {
            None => return Ok(Ok(Some(IdempotencyGuard { merchant_id, key, endpoint, request_hash }))),
            Some(Claim::Replay { status, body }) => return Ok(Err(replay(status, body))),
            Some(Claim::Mismatch) => return Err(conflict()),
            Some(Claim::InProgress | Claim::Owned) if started.elapsed() < WAIT_FOR_OWNER => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Some(Claim::InProgress | Claim::Owned) => return Err(in_use()),
        }
    }
}

/// Opens the work's write transaction and, with a key, claims it there first: the transaction
/// to do the work in, or the answer when the key turns out taken meanwhile (a concurrent
/// request with it committed first): [`ApiError::Replay`] of its response, or a conflict.
pub async fn begin(store: &Store, guard: &Option<IdempotencyGuard>) -> Result<Tx, ApiError> {
    let Some(guard) = guard else {
        return Ok(store.begin().await?);
    };
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        let mut tx = store.begin().await?;
        let claim =
            idempotency::claim(&mut tx, guard.merchant_id, &guard.key, guard.endpoint, &guard.request_hash).await?;
        if claim == Claim::Owned {
            return Ok(tx);
        }
        tx.rollback().await.map_err(depositd_core::store::StoreError::from)?;
        match claim {
            Claim::Owned => unreachable!("returned above"),
            Claim::Replay { status, body } => return Err(ApiError::Replay(Box::new(replay(status, body)))),
            Claim::Mismatch => return Err(conflict()),
            Claim::InProgress if started.elapsed() < WAIT_FOR_OWNER => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Claim::InProgress => return Err(in_use()),
        }
    }
}

/// Finishes a creating request: stores the response with the key (if any) in `tx`, the
/// transaction [`begin`] opened, commits, and answers `status` (201, or 200 where a seed says so)
/// with exactly the stored bytes.
pub async fn commit(
    guard: Option<IdempotencyGuard>,
    mut tx: Tx,
    status: StatusCode,
    body: String,
) -> Result<Response, ApiError> {
    if let Some(guard) = &guard {
        idempotency::complete(&mut tx, guard.merchant_id, &guard.key, status.as_u16(), &body).await?;
    }
    tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
    Ok(created(status, body))
}

/// [`commit`] for a response that carries a secret shown once (a new API key): `stored` (the
/// response without the secret) is what the key keeps and replays, `body` is answered this once.
/// A secret is never written to the database in the clear, not even in an idempotency record.
pub async fn commit_secret(
    guard: Option<IdempotencyGuard>,
    mut tx: Tx,
    status: StatusCode,
    stored: String,
    body: String,
) -> Result<Response, ApiError> {
    if let Some(guard) = &guard {
        idempotency::complete(&mut tx, guard.merchant_id, &guard.key, status.as_u16(), &stored).await?;
    }
    tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A request body that creates something: the scope it needs, and the endpoint its
/// `Idempotency-Key` is claimed for.
pub trait Creation: serde::de::DeserializeOwned + Send {
    const SCOPE: Scope;
    const ENDPOINT: &'static str;
}

/// What a created thing belongs to in the route's `{id}` (a refund's invoice), which an
/// `Idempotency-Key` covers as well as the body; `()` when the route has none.
pub trait Parent: Sized + Send {
    /// Whether the route's `{id}` segment names the parent.
    const IN_PATH: bool;
    /// The parent from the decoded `{id}` (`None` when not [`Parent::IN_PATH`]), after the scope check.
    fn parse(id: Option<&str>) -> Result<Self, ApiError>;
    /// What the key is claimed with, given the body's [`extract::Checked::fingerprint`].
    fn claim(&self, body: serde_json::Value) -> serde_json::Value;
}

impl Parent for () {
    const IN_PATH: bool = false;

    fn parse(_: Option<&str>) -> Result<(), ApiError> {
        Ok(())
    }

    fn claim(&self, body: serde_json::Value) -> serde_json::Value {
        body
    }
}

/// A creating request ready for its work: authenticated, authorized, its body one JSON object
/// parsed into `T`, and its `Idempotency-Key` (if any) checked. The checks run in one order on
/// every creating endpoint: the key, an undecodable path `{id}`, then (with the body read) the
/// scope, the parent id, the body's size and JSON, the idempotency key (a replay or a conflict),
/// and last the body's fields.
///
/// The rejection is a whole response: an error, or the stored response of a replay (the
/// handler runs for neither).
pub struct Create<T, P = ()> {
    pub auth: Authenticated,
    pub parent: P,
    pub request: T,
    /// The checked key: claim it with the work's transaction ([`begin`]), complete it there
    /// ([`commit`]).
    pub guard: Option<IdempotencyGuard>,
}

impl<T: Creation, P: Parent> FromRequest<AppState> for Create<T, P> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Create::read(request, state).await {
            Ok(Ok(create)) => Ok(create),
            Ok(Err(replay)) => Err(replay),
            Err(error) => Err(error.into_response()),
        }
    }
}

impl<T: Creation, P: Parent> Create<T, P> {
    /// The request to proceed with, or the stored response to replay.
    async fn read(request: Request, state: &AppState) -> Result<Result<Self, Response>, ApiError> {
        let (mut parts, body) = request.into_parts();
        let auth = Authenticated::from_request_parts(&mut parts, state).await?;
        let id = match P::IN_PATH {
            true => Some(PathId::from_request_parts(&mut parts, state).await?.0),
            false => None,
        };
        let headers = parts.headers.clone();
        let body = Bytes::from_request(Request::from_parts(parts, body), state).await;
        auth.require(T::SCOPE)?;
        let parent = P::parse(id.as_deref())?;
        let body = extract::body(body)?;
        let checked = extract::json_object_exact(&body)?;
        let guard =
            match check(&state.store, auth.merchant.id, &headers, T::ENDPOINT, &parent.claim(checked.fingerprint()))
                .await?
            {
                Ok(guard) => guard,
                Err(response) => return Ok(Err(response)),
            };
        // Nothing is claimed yet: a refused field leaves no record, and a corrected retry proceeds.
        let request = extract::typed(&body)?;
        Ok(Ok(Create { auth, parent, request, guard }))
    }
}
