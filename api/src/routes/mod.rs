//! Request handlers, one module per resource, and the router that mounts them.

pub mod api_keys;
pub mod checkout;
pub mod create_invoice;
pub mod dashboard;
pub mod deposits;
pub mod health;
pub mod hosted_payments;
pub mod invoices;
pub mod ledger;
pub mod operator;
pub mod payments;
pub mod payouts;
pub mod static_addresses;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/invoices", post(invoices::create).get(invoices::list))
        .route("/api/v1/invoices/{id}", get(invoices::get))
        .route("/api/v1/invoices/{id}/cancel", post(invoices::cancel))
        .route("/api/v1/invoices/{id}/mark", post(invoices::mark))
        .route("/api/v1/invoices/{id}/refunds", post(payouts::create_refund))
        .route("/api/v1/create-invoice", post(create_invoice::create))
        .route("/api/v1/invoice-status/{invoice_id}", get(create_invoice::status))
        .route("/api/v1/hosted-payments", post(hosted_payments::create))
        .route("/api/v1/hosted-payments/{id}", get(hosted_payments::get))
        .route("/api/v1/payouts", post(payouts::create).get(payouts::list))
        .route("/api/v1/payouts/{id}", get(payouts::get))
        .route("/api/v1/payouts/{id}/cancel", post(payouts::cancel))
        .route("/api/v1/static-addresses", post(static_addresses::create).get(static_addresses::list))
        .route("/api/v1/static-addresses/{id}", get(static_addresses::get))
        .route("/api/v1/static-addresses/{id}/disable", post(static_addresses::disable))
        .route("/api/v1/balances", get(ledger::balances))
        .route("/api/v1/ledger", get(ledger::list))
        .route("/api/v1/deposits", get(deposits::list))
        .route("/api/v1/deposits/{id}", get(deposits::get))
        .route("/api/v1/operator/deposits", get(operator::list))
        .route("/api/v1/operator/deposits/{id}/resolve", post(operator::resolve))
        .route("/checkout/{id}", get(checkout::page))
        .route("/checkout/assets/{name}", get(checkout::asset))
        .route("/checkout/{id}/qr", get(checkout::qr))
        .route("/api/v1/webhook-endpoints", post(webhooks::create).get(webhooks::list))
        .route("/api/v1/webhook-endpoints/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/api/v1/webhook-endpoints/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/api/v1/callback-secret", post(webhooks::rotate_callback_secret))
        .route("/api/v1/events", get(webhooks::list_events))
        .route("/api/v1/events/{id}", get(webhooks::get_event))
        .route("/api/v1/events/{id}/redeliver", post(webhooks::redeliver))
        .route("/api/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/api/v1/api-keys/{id}", get(api_keys::get))
        .route("/api/v1/api-keys/{id}/revoke", post(api_keys::revoke))
        .merge(payments::router(state.store.clone()))
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(crate::extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), record_metrics))
        .with_state(state)
}

/// Counts every request and times it, labelled by the matched route template
/// (`/api/v1/invoices/{id}`), so label values stay a small fixed set; unmatched paths count as
/// `unmatched`.
async fn record_metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics.api_request_duration_seconds.with_label_values(&[&route]).observe(started.elapsed().as_secs_f64());
    metrics.api_requests_total.with_label_values(&[&route, &method, response.status().as_str()]).inc();
    if response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS {
        metrics.api_rate_limited_total.with_label_values(&[&route]).inc();
    }
    response
}

/// The OpenAPI document for this server's configuration (its chains and assets as enums).
async fn openapi(axum::extract::State(state): axum::extract::State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(crate::openapi::document_for(&state.config))
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "route_not_found", message: "no such endpoint".into() }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
