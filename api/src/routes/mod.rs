//! Request handlers, one module per resource, and the router that mounts them.

pub mod health;
pub mod invoices;
pub mod static_addresses;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

/// Request bodies above this are refused (an invoice with 5 KB of metadata is far below it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(|| async { axum::Json(crate::openapi::document()) }))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/invoices", post(invoices::create).get(invoices::list))
        .route("/api/v1/invoices/{id}", get(invoices::get))
        .route("/api/v1/invoices/{id}/cancel", post(invoices::cancel))
        .route("/api/v1/static-addresses", post(static_addresses::create).get(static_addresses::list))
        .route("/api/v1/static-addresses/{id}", get(static_addresses::get))
        .route("/api/v1/static-addresses/{id}/disable", post(static_addresses::disable))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "route_not_found", message: "no such endpoint".into() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The body, or a JSON error when it is over the limit or cannot be read.
pub fn body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES },
        _ => ApiError::InvalidRequest { code: "invalid_body", message: rejection.body_text(), param: None },
    })
}
