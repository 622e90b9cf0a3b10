//! `Idempotency-Key` handling around a creating request (see `depositd_core::store::idempotency`).
//!
//! Flow: parse the body, [`begin`] (claim the key or replay), validate and do the work in a
//! transaction that also calls [`IdempotencyGuard::complete`], commit, then
//! [`IdempotencyGuard::disarm`]. A guard dropped while armed (an error, a `?`) releases the claim,
//! so a corrected retry with the same key can proceed. Only successful responses are stored.
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
use depositd_core::store::{Conn, Store, Tx};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, PathId};
use crate::state::AppState;

/// How long a request waits for a concurrent one with the same key before answering 409.
const WAIT_FOR_OWNER: Duration = Duration::from_secs(10);

pub enum Begin {
    /// Do the work; complete the guard (when there is one) in the same transaction.
    Proceed(Option<IdempotencyGuard>),
    /// Answer with this stored response.
    Replay(Response),
}

pub struct IdempotencyGuard {
    store: Store,
    merchant_id: Uuid,
    key: String,
    armed: bool,
}

impl IdempotencyGuard {
    pub async fn complete(&self, conn: &mut Conn, status: StatusCode, body: &str) -> Result<(), ApiError> {
        Ok(idempotency::complete(conn, self.merchant_id, &self.key, status.as_u16(), body).await?)
    }

    /// The work committed: keep the record.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for IdempotencyGuard {
    fn drop(&mut self) {
        if self.armed {
            let (store, merchant_id, key) = (self.store.clone(), self.merchant_id, std::mem::take(&mut self.key));
            tokio::spawn(async move {
                if let Err(error) = idempotency::release(&store, merchant_id, &key).await {
                    tracing::warn!(%error, "cannot release an idempotency claim; it expires with its lease");
                }
            });
        }
    }
}

/// Claims the request's `Idempotency-Key` (if any) for `endpoint` and this body.
pub async fn begin(
    store: &Store,
    merchant_id: Uuid,
    headers: &HeaderMap,
    endpoint: &str,
    body: &serde_json::Value,
) -> Result<Begin, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(Begin::Proceed(None));
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
    // serde_json maps keep keys sorted, so this is a canonical form: the same JSON with other
    // whitespace or key order is the same request.
    let request_hash = hex::encode(Sha256::digest(body.to_string().as_bytes()));
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match idempotency::claim(store, merchant_id, &key, endpoint, &request_hash).await? {
            Claim::Owned => {
                return Ok(Begin::Proceed(Some(IdempotencyGuard {
                    store: store.clone(),
                    merchant_id,
                    key,
                    armed: true,
                })));
            }
            Claim::Replay { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                let mut response = (status, body).into_response();
                response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static header"));
                response.headers_mut().insert("idempotent-replayed", "true".parse().expect("static header"));
                return Ok(Begin::Replay(response));
            }
            Claim::Mismatch => {
                return Err(ApiError::Conflict {
                    code: "idempotency_conflict",
                    message: "this Idempotency-Key was already used with a different request; use a new key".into(),
                    param: Some("Idempotency-Key".into()),
                });
            }
            Claim::InProgress if started.elapsed() < WAIT_FOR_OWNER => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Claim::InProgress => {
                return Err(ApiError::Conflict {
                    code: "idempotency_key_in_use",
                    message: "another request with this Idempotency-Key is still being processed; retry shortly".into(),
                    param: Some("Idempotency-Key".into()),
                });
            }
        }
    }
}

/// Finishes a creating request: stores the response with the key (if any) in `tx`, commits, and
/// answers `status` (201, or 200 where a seed says so) with exactly the stored bytes.
pub async fn commit(
    guard: Option<IdempotencyGuard>,
    mut tx: Tx,
    status: StatusCode,
    body: String,
) -> Result<Response, ApiError> {
    if let Some(guard) = &guard {
        guard.complete(&mut tx, status, &body).await?;
    }
    tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
    if let Some(guard) = guard {
        guard.disarm();
    }
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
/// parsed into `T`, and its `Idempotency-Key` (if any) claimed. The checks run in one order on
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
    /// Complete it with the work's transaction ([`commit`]); dropped armed, it releases the claim.
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
            match begin(&state.store, auth.merchant.id, &headers, T::ENDPOINT, &parent.claim(checked.fingerprint()))
                .await?
            {
                Begin::Proceed(guard) => guard,
                Begin::Replay(response) => return Ok(Err(response)),
            };
        // A refused field drops the guard, which releases the claim for a corrected retry.
        let request = extract::typed(&body)?;
        Ok(Ok(Create { auth, parent, request, guard }))
    }
}
