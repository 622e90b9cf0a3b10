//! Seed 003's shape: `POST /api/v1/create-invoice` and the status read
//! `GET /api/v1/invoice-status/{invoice_id}`. The invoice is made by the same invoicing lifecycle
//! as seed 001's route (same idempotency, rate limits, pricing, fees and webhooks); only the
//! request's and the response's names, types and limits are seed 003's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::invoice::InvoiceDetails;
use depositd_core::invoice_views::{CreateInvoiceResource, InvoiceView};
use depositd_core::invoicing::{self, InvoiceRequest, InvoicingError};
use depositd_core::store::invoices::{self, InvoiceFilter};
use serde::Deserialize;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::PathId;
use crate::idempotency::{self, Create, Creation};
use crate::routes::invoices::{created, limit_customer, resource};
use crate::state::AppState;
use crate::validate;

/// Seed 003's request. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "amount": "1500.00",
    "callback_url": "https://yoursite.com/webhooks/payment",
    "currency_code": "UAH",
    "customer_id": "user_12345",
    "external_id": "order-2026-0001",
    "fail_url": "https://yoursite.com/payment/failed",
    "purpose": "Payment for Premium subscription",
    "success_url": "https://yoursite.com/payment/success"
}))]
pub struct CreateInvoiceRequest {
    /// Payment amount in fiat currency, a decimal string.
    #[schema(example = "1500.00", pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: String,
    /// ISO 4217 currency code (3 uppercase letters) with a configured rate.
    #[schema(example = "UAH", pattern = "^[A-Z]{3}$")]
    pub currency_code: String,
    /// Your customer's identifier; invoices are rate-limited per customer.
    #[schema(min_length = 1, max_length = 128)]
    pub customer_id: String,
    /// Your invoice or order id, unique per merchant.
    #[schema(min_length = 1, max_length = 128)]
    pub external_id: String,
    /// Shown to the customer on the payment page.
    #[schema(min_length = 1, max_length = 255)]
    pub purpose: Option<String>,
    /// HTTPS URL for webhook notifications about this invoice (besides your endpoints).
    pub callback_url: Option<String>,
    /// Where the customer goes after a successful payment.
    pub success_url: Option<String>,
    /// Where the customer goes after a failed or expired payment.
    pub fail_url: Option<String>,
}

impl Creation for CreateInvoiceRequest {
    const SCOPE: Scope = Scope::InvoicesWrite;
    const ENDPOINT: &'static str = "POST /api/v1/create-invoice";
}

#[utoipa::path(
    post, path = "/api/v1/create-invoice", tag = "seed 003",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional: the same key and body replay the first response")),
    request_body = CreateInvoiceRequest,
    responses(
        (status = 200, description = "Invoice created (seed 003's shape)", body = CreateInvoiceResource),
        (status = 400, description = "Invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key, or an inactive shop", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write, or no enabled chain suits the key's mode (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "external_id already used, or an idempotency conflict", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited (per key or per customer_id); see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "The currency's rate is unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<CreateInvoiceRequest>,
) -> Result<Response, ApiError> {
    let request = parse(&state, auth.key.mode, request)?;
    limit_customer(&state, &auth, request.details.customer_id.as_deref())?;
    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let external_id = request.external_id.clone();
    let (invoice, resource) = match invoicing::create(&mut tx, state.invoicing(), &auth.merchant, request).await {
        Ok(created) => created,
        Err(InvoicingError::ExternalIdTaken) => {
            drop(tx);
            return Err(taken(&state, &auth, external_id).await);
        }
        Err(error) => return Err(seed_003_error(error)),
    };
    let body = serde_json::to_string(&CreateInvoiceResource::build(&invoice, &resource)).map_err(ApiError::internal)?;
    let response = idempotency::commit(guard, tx, StatusCode::OK, body).await?;
    created(&state, &invoice);
    Ok(response)
}

fn parse(state: &AppState, key_mode: KeyMode, req: CreateInvoiceRequest) -> Result<InvoiceRequest, ApiError> {
    // As the document's pattern says: digits with an optional fraction, no sign, spaces or
    // leading zeros.
    let text = req.amount.as_str();
    let leading_zero = text.len() > 1 && text.starts_with('0') && !text.starts_with("0.");
    if text.trim() != text || text.starts_with('.') || text.ends_with('.') || leading_zero {
        return Err(ApiError::invalid(
            "amount",
            "invalid_amount",
            "amount must be a decimal string such as \"1500.00\" (no spaces, sign or leading zeros)",
        ));
    }
    let amount = validate::decimal_amount(text)?;
    let currency = req.currency_code;
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Err(ApiError::invalid(
            "currency_code",
            "invalid_currency_code",
            "currency_code must be an ISO 4217 code of 3 uppercase letters, such as UAH",
        ));
    }
    // Present (serde required them); `text` checks their length and characters.
    let required = |param: &str, value: String, max: usize| validate::text(param, Some(value), max);
    let allow_http = state.config.settings.invoices.allow_http_urls;
    let details = InvoiceDetails {
        description: validate::text("purpose", req.purpose, 255)?,
        customer_id: required("customer_id", req.customer_id, 128)?,
        success_url: validate::url("success_url", req.success_url, allow_http)?,
        fail_url: validate::url("fail_url", req.fail_url, allow_http)?,
        callback_url: validate::callback_url("callback_url", req.callback_url, &state.config)?,
        ..InvoiceDetails::default()
    };
    Ok(InvoiceRequest {
        amount,
        currency: Some(currency),
        external_id: required("external_id", req.external_id, 128)?,
        details,
        view: InvoiceView::CreateInvoice,
        key_mode: Some(key_mode),
        ..InvoiceRequest::default()
    })
}

/// 409 for an external_id already used, naming the invoice that has it: a merchant whose first
/// response was lost (seed 003 has no Idempotency-Key) reads that invoice's status and link.
async fn taken(state: &AppState, auth: &Authenticated, external_id: Option<String>) -> ApiError {
    let filter = InvoiceFilter { external_id: external_id.clone(), ..InvoiceFilter::default() };
    let existing = match state.store.conn().await {
        Ok(mut conn) => invoices::list(&mut conn, auth.merchant.id, &filter, 1).await.ok().and_then(|mut v| v.pop()),
        Err(_) => None,
    };
    let message = match existing {
        Some(invoice) => format!(
            "an invoice with external_id {:?} already exists: invoice_id {} (GET /api/v1/invoice-status/{})",
            external_id.unwrap_or_default(),
            invoice.id,
            invoice.id
        ),
        None => "an invoice with this external_id already exists".to_owned(),
    };
    ApiError::Conflict { code: "external_id_conflict", message, param: Some("external_id".into()) }
}

/// Invoicing's errors under seed 003's field names (`currency` is `currency_code` here).
fn seed_003_error(error: InvoicingError) -> ApiError {
    let renamed = matches!(error, InvoicingError::UnsupportedCurrency(_));
    match ApiError::from(error) {
        ApiError::InvalidRequest { code, message, .. } if renamed => {
            ApiError::InvalidRequest { code, message, param: Some("currency_code".into()) }
        }
        other => other,
    }
}

#[utoipa::path(
    get, path = "/api/v1/invoice-status/{invoice_id}", tag = "seed 003",
    params(("invoice_id" = Uuid, Path, description = "The invoice_id create-invoice returned")),
    responses(
        (status = 200, description = "The invoice in seed 003's shape", body = CreateInvoiceResource),
        (status = 404, description = "No such invoice", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn status(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<CreateInvoiceResource>, ApiError> {
    auth.require(Scope::InvoicesRead)?;
    let id: uuid::Uuid = id.parse().map_err(|_| {
        ApiError::invalid("invoice_id", "invalid_parameter", format!("invoice_id {id:?} is not a UUID"))
    })?;
    let mut conn = state.store.conn().await?;
    let invoice =
        invoices::get(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("invoice"))?;
    let full = resource(&state, &mut conn, &invoice).await?;
    Ok(Json(CreateInvoiceResource::build(&invoice, &full)))
}
