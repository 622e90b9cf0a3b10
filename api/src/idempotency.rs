//! `Idempotency-Key` handling around a creating request (see `depositd_core::store::idempotency`).
//!
//! Flow: parse the body, [`begin`] (claim the key or replay), validate and do the work in a
//! transaction that also calls [`IdempotencyGuard::complete`], commit, then
//! [`IdempotencyGuard::disarm`]. A guard dropped while armed (an error, a `?`) releases the claim,
//! so a corrected retry with the same key can proceed. Only successful responses are stored.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use depositd_core::store::idempotency::{self, Claim};
use depositd_core::store::{Conn, Store, Tx};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

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
/// answers 201 with exactly the stored bytes.
pub async fn commit_created(guard: Option<IdempotencyGuard>, mut tx: Tx, body: String) -> Result<Response, ApiError> {
    if let Some(guard) = &guard {
        guard.complete(&mut tx, StatusCode::CREATED, &body).await?;
    }
    tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
    if let Some(guard) = guard {
        guard.disarm();
    }
    Ok((StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}
