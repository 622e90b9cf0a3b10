//! A request's checked `Idempotency-Key` ([`IdempotencyGuard`]) and a creating request's answer:
//! what `crate::idempotency` hands to the work and what the group commit (`crate::group_commit`)
//! writes with, in a module of their own that imports neither the API's state nor its
//! authentication.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use depositd_core::store::idempotency;
use uuid::Uuid;

/// A request's `Idempotency-Key`, checked and not yet claimed: `crate::idempotency::begin` claims
/// it in the work's transaction, `crate::idempotency::commit` completes it there.
pub struct IdempotencyGuard {
    pub(crate) merchant_id: Uuid,
    pub(crate) key: String,
    pub(crate) endpoint: &'static str,
    pub(crate) request_hash: String,
}

impl IdempotencyGuard {
    /// The merchant and key, which two requests of one batch may not share.
    pub fn key(&self) -> (Uuid, &str) {
        (self.merchant_id, &self.key)
    }

    /// This key as a batch presents it ([`idempotency::claim_many`]), where a batch of the group
    /// commit (`crate::group_commit`) claims its keys as `crate::idempotency::begin` claims one.
    pub fn presented(&self) -> idempotency::Presented<'_> {
        idempotency::Presented {
            merchant_id: self.merchant_id,
            key: &self.key,
            endpoint: self.endpoint,
            request_hash: &self.request_hash,
        }
    }

    /// This key's record completed with `body` ([`idempotency::complete_many`]), where a batch
    /// of the group commit completes its keys as `crate::idempotency::commit` completes one.
    pub fn completed<'a>(&'a self, status: StatusCode, body: &'a str) -> idempotency::Completed<'a> {
        idempotency::Completed { merchant_id: self.merchant_id, key: &self.key, status: status.as_u16(), body }
    }
}

/// A creating request's answer: `status` with exactly `body`, JSON.
pub fn created(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
