//! Seed 004's shape: `POST /api/v1/hosted-payments` and `GET /api/v1/hosted-payments/{id}`.
//!
//! Seed 004 names no path. `/api/v1/payments/*` is already seed 001's payer session API (the
//! browser's, authenticated by a session token and signature, never by an API key), so a
//! merchant's server must not be able to confuse the two: seed 004's payments live under their
//! own word, `hosted-payments` (they are paid on the hosted checkout page).
//!
//! Amounts are integer cents here (5000 is 50.00 USD), where seed 001's route takes major units
//! (`{"amount": 5000}` there is 5,000 USD). The invoice is made by the same invoicing lifecycle
//! as every other route.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::invoice::InvoiceDetails;
use depositd_core::invoice_views::{HostedPaymentResource, InvoiceView};
use depositd_core::invoicing::{self, InvoiceRequest, InvoicingError};
use depositd_core::store::invoices;
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, PathId};
use crate::idempotency::{self, Create, Creation};
use crate::routes::invoices::{created, limit_customer, resource};
use crate::state::AppState;
use crate::validate;

/// The smallest payment seed 004 accepts, in cents.
const MIN_CENTS: u64 = 50;

/// Seed 004's request. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "amount": 5000,
    "currency": "usd",
    "return_url": "https://yourstore.com/order/complete",
    "customer_email": "customer@example.com",
    "customer_name": "John Doe",
    "metadata": {"order_id": "12345", "product": "Premium Plan"}
}))]
pub struct HostedPaymentRequest {
    /// In cents: 5000 is 50.00 USD. At least 50.
    #[schema(minimum = 50, example = 5000)]
    #[serde(deserialize_with = "crate::extract::whole_number")]
    pub amount: u64,
    /// Only `usd`.
    #[schema(example = "usd", pattern = "^usd$")]
    pub currency: String,
    /// Where the customer goes after the payment (HTTPS); the checkout adds `invoice_id`.
    pub return_url: String,
    #[schema(max_length = 255)]
    pub customer_email: Option<String>,
    #[schema(min_length = 1, max_length = 255)]
    pub customer_name: Option<String>,
    /// At most 50 keys; values are strings, numbers or booleans; at most 5 KB serialized.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

impl Creation for HostedPaymentRequest {
    const SCOPE: Scope = Scope::InvoicesWrite;
    const ENDPOINT: &'static str = "POST /api/v1/hosted-payments";
}

#[utoipa::path(
    post, path = "/api/v1/hosted-payments", tag = "seed 004",
    params(("Idempotency-Key" = Option<String>, Header, description = "Prevents duplicate payments: the same key and body replay the first response")),
    request_body = HostedPaymentRequest,
    responses(
        (status = 200, description = "Payment created (seed 004's shape)", body = HostedPaymentResource),
        (status = 400, description = "Amount under 50 cents, a currency other than usd, a missing field, a bad return_url, more than 50 metadata keys", body = crate::error::ErrorBody),
        (status = 401, description = "API key missing, malformed, unknown or revoked, or the shop is inactive", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write, or no enabled chain suits the key's mode (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency conflict", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "The USD rate of the pay asset is unavailable (a price feed behind)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<HostedPaymentRequest>,
) -> Result<Response, ApiError> {
    let cents = request.amount;
    let request = parse(&state, auth.key.mode, request)?;
    limit_customer(&state, &auth, request.details.customer_id.as_deref())?;
    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let (invoice, resource) = invoicing::create(&mut tx, state.invoicing(), &auth.merchant, request)
        .await
        .map_err(|e| in_cents(&state, &auth, cents, e))?;
    let view = HostedPaymentResource::build(&invoice, &resource)
        .ok_or_else(|| ApiError::internal(std::io::Error::other("a hosted payment is not whole cents")))?;
    let body = serde_json::to_string(&view).map_err(ApiError::internal)?;
    let response = idempotency::commit(guard, tx, StatusCode::OK, body).await?;
    created(&state, &invoice);
    Ok(response)
}

/// Invoicing's amount bounds are in major units; seed 004 speaks cents.
/// Only an amount outside the bounds is reworded; the other amount errors (too small to pay in
/// the asset, not covering the fee) keep their own message.
fn in_cents(state: &AppState, auth: &Authenticated, cents: u64, error: InvoicingError) -> ApiError {
    let (min, max) = invoicing::amount_bounds(&state.config, &auth.merchant);
    let (min, max) = (min * Decimal::ONE_HUNDRED, max * Decimal::ONE_HUNDRED);
    let outside = Decimal::from(cents) < min || Decimal::from(cents) > max;
    if !(matches!(error, InvoicingError::AmountOutOfRange(_)) && outside) {
        return error.into();
    }
    ApiError::invalid(
        "amount",
        "amount_out_of_range",
        format!(
            "amount is in cents and must be between {} and {} for this shop",
            min.ceil().max(Decimal::from(MIN_CENTS)),
            max.floor()
        ),
    )
}

fn parse(state: &AppState, key_mode: KeyMode, req: HostedPaymentRequest) -> Result<InvoiceRequest, ApiError> {
    if req.amount < MIN_CENTS {
        return Err(ApiError::invalid(
            "amount",
            "amount_too_small",
            format!("amount is in cents and must be at least {MIN_CENTS} (0.50 USD); got {}", req.amount),
        ));
    }
    if req.currency != "usd" {
        return Err(ApiError::invalid(
            "currency",
            "unsupported_currency",
            format!("currency {:?} is not supported; only \"usd\" is", req.currency),
        ));
    }
    let allow_http = state.config.settings.invoices.allow_http_urls;
    let details = InvoiceDetails {
        customer_email: validate::email("customer_email", req.customer_email)?,
        customer_name: validate::text("customer_name", req.customer_name, 255)?,
        metadata: validate::metadata(req.metadata)?,
        return_url: validate::url("return_url", Some(req.return_url), allow_http)?,
        ..InvoiceDetails::default()
    };
    Ok(InvoiceRequest {
        amount: Decimal::from(req.amount) / Decimal::ONE_HUNDRED,
        currency: Some("USD".into()),
        details,
        view: InvoiceView::HostedPayment,
        key_mode: Some(key_mode),
        ..InvoiceRequest::default()
    })
}

#[utoipa::path(
    get, path = "/api/v1/hosted-payments/{id}", tag = "seed 004",
    params(("id" = Uuid, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment in seed 004's shape", body = HostedPaymentResource),
        (status = 404, description = "No such payment", body = crate::error::ErrorBody),
        (status = 409, description = "The invoice (made through another route) is not a whole number of cents", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<HostedPaymentResource>, ApiError> {
    auth.require(Scope::InvoicesRead)?;
    let id = extract::path_id("payment", &id)?;
    let mut conn = state.store.conn().await?;
    let invoice =
        invoices::get(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("payment"))?;
    let full = resource(&state, &mut conn, &invoice).await?;
    let view = HostedPaymentResource::build(&invoice, &full).ok_or_else(|| ApiError::Conflict {
        code: "not_representable_in_cents",
        message: format!(
            "this invoice's amount ({} {}) is not a whole number of cents; read it at /api/v1/invoices/{}",
            invoice.amount, invoice.currency, invoice.id
        ),
        param: None,
    })?;
    Ok(Json(view))
}
