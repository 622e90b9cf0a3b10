//! `POST /api/v1/invoices`, `GET /api/v1/invoices/{id}`, `GET /api/v1/invoices`,
//! `POST /api/v1/invoices/{id}/cancel`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use depositd_core::evm::parse_address;
use depositd_core::invoice::{Invoice, InvoiceDetails, InvoiceResource, InvoiceStatus};
use depositd_core::pricing::PricingError;
use depositd_core::store::api_keys::Scope;
use depositd_core::store::deposit_addresses::{self, AddressPurpose};
use depositd_core::store::invoices::{self, InvoiceFilter};
use depositd_core::store::{Conn, StoreError, cursors, events, merchants};
use depositd_core::time::now_ms;
use governor::clock::{Clock, DefaultClock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract;
use crate::idempotency::{self, Begin};
use crate::state::AppState;
use crate::validate;

const CREATE_ENDPOINT: &str = "POST /api/v1/invoices";

/// The request body (seed 001 with the additions of seeds 003 and 004). Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoice {
    /// Decimal string (`"19.99"`) or JSON number, in `currency`; 0.01 to 100000099.99 by default.
    #[schema(schema_with = crate::openapi::amount_schema)]
    pub amount: serde_json::Value,
    pub currency: Option<String>,
    pub asset: Option<String>,
    pub chain: Option<String>,
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub external_id: Option<String>,
    /// At most 50 keys with string, number or boolean values, at most 5 KB serialized.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Milliseconds, 1 to 2592000000 (30 days); default 12 hours.
    pub expires_in: Option<u64>,
    pub receiver_override: Option<bool>,
    pub receiver_override_address: Option<String>,
    pub title: Option<String>,
    pub footer: Option<String>,
    pub customer_email: Option<String>,
    pub return_url: Option<String>,
    pub use_return_url: Option<bool>,
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
    pub callback_url: Option<String>,
    pub questions: Option<Vec<String>>,
}

#[utoipa::path(
    post, path = "/api/v1/invoices", tag = "invoices",
    params(("Idempotency-Key" = Option<String>, Header, description = "Safe retries: the same key and body replay the first response")),
    request_body = CreateInvoice,
    responses(
        (status = 201, description = "Invoice created", body = InvoiceResource),
        (status = 400, description = "Invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency or external_id conflict", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "An exchange rate is unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    auth.require(Scope::InvoicesWrite)?;
    let value = extract::json_object(&super::body(body)?)?;
    let guard = match idempotency::begin(&state.store, auth.merchant.id, &headers, CREATE_ENDPOINT, &value).await? {
        Begin::Replay(response) => return Ok(response),
        Begin::Proceed(guard) => guard,
    };
    let request: CreateInvoice = extract::typed(value)?;
    let mut invoice = build_invoice(&state, &auth, request)?;
    if let Some(customer) = &invoice.details.customer_id
        && let Err(not_until) = state.limits.per_customer.check_key(&(auth.merchant.id, customer.clone()))
    {
        return Err(ApiError::RateLimited {
            message: format!("too many invoices for customer_id {customer:?}; retry after the time in Retry-After"),
            retry_after_secs: not_until.wait_time_from(DefaultClock::default().now()).as_secs_f64().ceil() as u64,
        });
    }

    let mut tx = state.store.begin().await?;
    let schedule = merchants::fee_schedule(&mut tx, &auth.merchant, &invoice.asset, invoice.decimals).await?;
    invoice.apply_fee_schedule(schedule).map_err(|e| ApiError::internal(std::io::Error::other(format!("fee: {e}"))))?;
    if invoice.merchant_amount_base_units.is_zero() {
        return Err(ApiError::invalid(
            "amount",
            "amount_out_of_range",
            format!(
                "amount does not cover the fee ({} {})",
                invoice.fee_base_units.to_display(invoice.decimals),
                invoice.asset
            ),
        ));
    }
    // The address is allocated last, just before the insert, so the counter row (locked until
    // commit on PostgreSQL) is held as briefly as possible.
    let deposit = deposit_addresses::allocate(&mut tx, &state.wallet, AddressPurpose::Invoice).await?;
    invoice.deposit_address_id = deposit.id;
    invoice.address = deposit.address;
    invoices::insert(&mut tx, &invoice).await.map_err(|e| match e {
        StoreError::Conflict(_) => ApiError::Conflict {
            code: "external_id_conflict",
            message: "an invoice with this external_id already exists".into(),
            param: Some("external_id".into()),
        },
        other => other.into(),
    })?;
    let resource = InvoiceResource::build(&invoice, Vec::new(), &state.config.settings.api.public_url, &state.sessions);
    events::record(&mut tx, invoice.merchant_id, "invoice.created", "invoice", invoice.id, &resource).await?;
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    let response = idempotency::commit_created(guard, tx, body).await?;
    state.metrics.invoices_created_total.with_label_values(&[&invoice.chain, &invoice.asset]).inc();
    tracing::info!(invoice_id = %invoice.id, merchant_id = %invoice.merchant_id, "invoice created");
    Ok(response)
}

/// Validates the request and prices it. The deposit address is filled in by the caller.
fn build_invoice(state: &AppState, auth: &Authenticated, req: CreateInvoice) -> Result<Invoice, ApiError> {
    let settings = &state.config.settings;
    let (chain, asset) = validate::chain_and_asset(&state.config, req.chain, req.asset)?;
    let currency = req.currency.map(|c| c.trim().to_ascii_uppercase()).unwrap_or_else(|| "USD".into());
    let is_iso = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !(is_iso || chain.asset(&currency).is_some()) || !state.pricer.knows(&currency) {
        return Err(ApiError::invalid(
            "currency",
            "unsupported_currency",
            format!(
                "currency {currency:?} is not supported (an ISO 4217 code with a configured rate, or an accepted asset)"
            ),
        ));
    }
    let amount = validate::amount(&req.amount)?;
    let min = auth.merchant.min_invoice_amount.unwrap_or(settings.invoices.min_amount);
    let max = auth.merchant.max_invoice_amount.unwrap_or(settings.invoices.max_amount);
    if amount < min || amount > max {
        return Err(ApiError::invalid(
            "amount",
            "amount_out_of_range",
            format!("amount must be between {min} and {max} {currency}"),
        ));
    }
    let quote = state.pricer.quote(amount, &currency, asset).map_err(|e| match e {
        PricingError::RateUnavailable(_) => ApiError::Unavailable { code: "rate_unavailable", message: e.to_string() },
        PricingError::UnknownCurrency(_) => ApiError::invalid("currency", "unsupported_currency", e.to_string()),
        PricingError::Overflow | PricingError::Money(_) => {
            ApiError::invalid("amount", "amount_out_of_range", e.to_string())
        }
    })?;
    if quote.pay_amount.is_zero() {
        return Err(ApiError::invalid("amount", "amount_out_of_range", "amount is too small to pay in this asset"));
    }

    let expires_in = match req.expires_in {
        None => settings.invoices.default_expires_in_ms,
        Some(ms) if (1..=settings.invoices.max_expires_in_ms).contains(&ms) => ms,
        Some(_) => {
            return Err(ApiError::invalid(
                "expires_in",
                "invalid_parameter",
                format!("expires_in is milliseconds between 1 and {}", settings.invoices.max_expires_in_ms),
            ));
        }
    };
    let receiver_override_address = match (req.receiver_override.unwrap_or(false), req.receiver_override_address) {
        (true, Some(address)) => Some(parse_address(&address).map_err(|e| {
            ApiError::invalid("receiver_override_address", "invalid_address", format!("receiver_override_address {e}"))
        })?),
        (true, None) => {
            return Err(ApiError::invalid(
                "receiver_override_address",
                "parameter_missing",
                "receiver_override_address is required when receiver_override is true",
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::invalid(
                "receiver_override",
                "parameter_missing",
                "receiver_override must be true when receiver_override_address is given",
            ));
        }
        (false, None) => None,
    };
    let allow_http = settings.invoices.allow_http_urls;
    let details = InvoiceDetails {
        description: validate::text("description", req.description, 255)?,
        customer_id: validate::text("customer_id", req.customer_id, 128)?,
        customer_email: validate::email("customer_email", req.customer_email)?,
        metadata: validate::metadata(req.metadata)?,
        title: validate::text("title", req.title, 255)?,
        footer: validate::text("footer", req.footer, 255)?,
        return_url: validate::url("return_url", req.return_url, allow_http)?,
        use_return_url: req.use_return_url,
        success_url: validate::url("success_url", req.success_url, allow_http)?,
        fail_url: validate::url("fail_url", req.fail_url, allow_http)?,
        callback_url: validate::url("callback_url", req.callback_url, allow_http)?,
        questions: validate::questions(req.questions)?,
        answers: None,
    };
    let now = now_ms();
    Ok(Invoice {
        id: Uuid::now_v7(),
        merchant_id: auth.merchant.id,
        external_id: validate::text("external_id", req.external_id, 128)?,
        status: InvoiceStatus::Pending,
        payment_flags: Vec::new(),
        amount: amount.normalize(),
        currency,
        conversion_rate: quote.conversion_rate,
        chain: chain.name.clone(),
        chain_id: chain.chain_id,
        asset: asset.symbol.to_owned(),
        token_address: asset.token_address,
        decimals: asset.decimals,
        deposit_address_id: Uuid::nil(),
        address: Default::default(),
        amount_base_units: quote.pay_amount,
        // Set from the merchant's fee schedule by the caller (it needs the database).
        fee_base_units: Default::default(),
        merchant_amount_base_units: quote.pay_amount,
        amount_paid_base_units: Default::default(),
        fee_schedule: Default::default(),
        details,
        receiver_override_address,
        static_address_id: None,
        session_token: Invoice::new_session_token(),
        created_at: now,
        expires_at: now + expires_in as i64,
        finished_at: None,
        updated_at: now,
    })
}

/// The invoice resource with its payments and their confirmations.
pub async fn resource(state: &AppState, conn: &mut Conn, invoice: &Invoice) -> Result<InvoiceResource, ApiError> {
    let head = cursors::get(conn, invoice.chain_id).await?.map(|c| c.block_number);
    let payments = invoices::payments(conn, invoice, head).await?;
    Ok(InvoiceResource::build(invoice, payments, &state.config.settings.api.public_url, &state.sessions))
}

#[utoipa::path(
    get, path = "/api/v1/invoices/{id}", tag = "invoices",
    params(("id" = Uuid, Path, description = "Invoice id")),
    responses(
        (status = 200, description = "The invoice", body = InvoiceResource),
        (status = 404, description = "No such invoice", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<InvoiceResource>, ApiError> {
    auth.require(Scope::InvoicesRead)?;
    let id = extract::path_id("invoice", &id)?;
    let mut conn = state.store.conn().await?;
    let invoice =
        invoices::get(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("invoice"))?;
    Ok(Json(resource(&state, &mut conn, &invoice).await?))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvoiceList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<InvoiceResource>,
    has_more: bool,
}

#[utoipa::path(
    get, path = "/api/v1/invoices", tag = "invoices",
    params(
        ("status" = Option<InvoiceStatus>, Query, description = "Only invoices in this status"),
        ("external_id" = Option<String>, Query, description = "Only the invoice with this external id"),
        ("customer_id" = Option<String>, Query, description = "Only this customer's invoices"),
        ("created_after" = Option<i64>, Query, description = "Epoch seconds, exclusive"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 20"),
        ("starting_after" = Option<Uuid>, Query, description = "Cursor: the last id of the previous page"),
    ),
    responses(
        (status = 200, description = "Invoices, newest first", body = InvoiceList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<InvoiceList>, ApiError> {
    auth.require(Scope::InvoicesRead)?;
    let mut filter = InvoiceFilter::default();
    let mut page = extract::Page::default();
    for (name, value) in &params {
        if page.accept(name, value)? {
            continue;
        }
        match name.as_str() {
            "status" => {
                filter.status =
                    Some(value.parse().map_err(|e: String| ApiError::invalid("status", "invalid_parameter", e))?)
            }
            "external_id" => filter.external_id = Some(value.clone()),
            "customer_id" => filter.customer_id = Some(value.clone()),
            "created_after" => filter.created_after = Some(extract::created_after(value)?),
            other => return Err(extract::unknown_query_parameter(other)),
        }
    }
    filter.starting_after = page.starting_after;
    let mut conn = state.store.conn().await?;
    let (found, has_more) = page.finish(invoices::list(&mut conn, auth.merchant.id, &filter, page.fetch()).await?);
    let mut data = Vec::with_capacity(found.len());
    for invoice in &found {
        data.push(resource(&state, &mut conn, invoice).await?);
    }
    Ok(Json(InvoiceList { object: "list", data, has_more }))
}

#[utoipa::path(
    post, path = "/api/v1/invoices/{id}/cancel", tag = "invoices",
    params(("id" = Uuid, Path, description = "Invoice id")),
    responses(
        (status = 200, description = "The cancelled invoice", body = InvoiceResource),
        (status = 404, description = "No such invoice", body = crate::error::ErrorBody),
        (status = 409, description = "Not pending, or something was paid", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<InvoiceResource>, ApiError> {
    auth.require(Scope::InvoicesWrite)?;
    let id = extract::path_id("invoice", &id)?;
    let mut tx = state.store.begin().await?;
    let Some(before) = invoices::get(&mut tx, auth.merchant.id, id).await? else {
        return Err(ApiError::not_found("invoice"));
    };
    if !invoices::cancel(&mut tx, auth.merchant.id, id).await? {
        return Err(ApiError::Conflict {
            code: "invoice_not_cancellable",
            message: format!(
                "only a pending invoice with nothing paid can be cancelled; this one is {}",
                before.status
            ),
            param: None,
        });
    }
    let invoice = invoices::get(&mut tx, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("invoice"))?;
    let resource = resource(&state, &mut tx, &invoice).await?;
    events::record(&mut tx, invoice.merchant_id, "invoice.cancelled", "invoice", invoice.id, &resource).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(resource))
}
