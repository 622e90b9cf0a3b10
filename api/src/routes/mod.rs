//! Request handlers, one module per resource, and the router that mounts them.

pub mod health;

use axum::Router;
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "route_not_found", message: "no such endpoint".into() }
}
