//! `POST /api/v1/invoices`, `GET /api/v1/invoices/{id}`, `GET /api/v1/invoices`,
//! `POST /api/v1/invoices/{id}/cancel`, `POST /api/v1/invoices/{id}/mark`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::{KeyMode, Scope};
use depositd_core::evm::parse_address;
use depositd_core::invoice::{Invoice, InvoiceDetails, InvoiceResource, InvoiceStatus, MarkStatus};
use depositd_core::invoice_views::InvoiceView;
use depositd_core::invoicing::{self, CancelError, InvoiceRequest, MarkError, MarkRequest, OptionRequest};
use depositd_core::store::invoices::{self, InvoiceFilter};
use depositd_core::store::{Conn, StoreError};
use governor::clock::{Clock, DefaultClock};
use serde::{Deserialize, Serialize};

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, Page, PathId};
use crate::group_commit::{self, Submitted};
use crate::idempotency::{self, Create, Creation, Parent};
use crate::query::{self, List, ListQuery};
use crate::state::AppState;
use crate::validate;

/// The request body (seed 001 with the additions of seeds 003 and 004). Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvoice {
    /// Decimal string (`"19.99"`) or JSON number, in `currency`; 0.01 to 100000099.99 by default.
    #[schema(schema_with = crate::schema::amount_schema)]
    pub amount: Box<serde_json::value::RawValue>,
    pub currency: Option<String>,
    pub asset: Option<String>,
    pub chain: Option<String>,
    pub description: Option<String>,
    /// At most 255 characters (seed 001).
    pub customer_id: Option<String>,
    pub external_id: Option<String>,
    /// Structured data (seed 001): a JSON object of at most 50 keys whose values may be nested
    /// objects and arrays (at most 8 levels deep), at most 5,120 bytes serialized.
    #[schema(value_type = Option<Object>, example = json!({"order_id": "ORD-123", "items": [{"id": "SKU-1", "qty": 2}]}))]
    pub metadata: Option<serde_json::Value>,
    /// Milliseconds, 1 to 2592000000 (30 days); default 12 hours.
    #[serde(default, deserialize_with = "crate::extract::optional_whole_number")]
    pub expires_in: Option<u64>,
    pub receiver_override: Option<bool>,
    pub receiver_override_address: Option<String>,
    pub title: Option<String>,
    pub footer: Option<String>,
    pub customer_email: Option<String>,
    /// The payer's name, for receipts (seed 004's field).
    pub customer_name: Option<String>,
    pub return_url: Option<String>,
    pub use_return_url: Option<bool>,
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
    pub callback_url: Option<String>,
    pub questions: Option<Vec<String>>,
    /// Several ways to pay: 1 to 10 chain/asset pairs (`chain` defaults as the invoice's `chain`
    /// does), the first the primary (`pay`). Each is priced at creation and keeps its amount for
    /// the invoice's life; a payment in any of them counts at its own rate, and payments in
    /// several add up. Not together with `chain` or `asset`; one option only with `receiver_override`.
    #[schema(min_items = 1, max_items = 10)]
    pub payment_options: Option<Vec<PaymentOptionRequest>>,
}

/// One entry of `payment_options`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentOptionRequest {
    /// A chain enabled on the server (default: as for the invoice's `chain`).
    pub chain: Option<String>,
    /// An asset the chain accepts (`USDC`, `USDT`, the native coin...).
    pub asset: String,
}

impl Creation for CreateInvoice {
    const SCOPE: Scope = Scope::InvoicesWrite;
    const ENDPOINT: &'static str = "POST /api/v1/invoices";
}

#[utoipa::path(
    post, path = "/api/v1/invoices", tag = "invoices",
    params(("Idempotency-Key" = Option<String>, Header, description = "Safe retries: the same key and body replay the first response")),
    request_body = CreateInvoice,
    responses(
        (status = 201, description = "Invoice created", body = InvoiceResource),
        (status = 400, description = "Invalid parameters (among them duplicate_payment_option: the same chain/asset pair twice in payment_options)", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write, or its mode does not match the chain (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency or external_id conflict", body = crate::error::ErrorBody),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::ErrorBody),
        (status = 503, description = "An exchange rate is unavailable", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<CreateInvoice>,
) -> Result<Response, ApiError> {
    let request = parse(&state, auth.key.mode, request)?;
    limit_customer(&state, &auth, request.details.customer_id.as_deref())?;
    let creation = group_commit::Request { merchant: auth.merchant, request, guard };
    let group_commit::Request { merchant, request, guard } =
        match state.group_commit.submit(state.store.backend(), || state.writer(), creation).await {
            Submitted::Done(made) => {
                let (invoice, response) = *made?;
                created(&state, &invoice);
                return Ok(response);
            }
            Submitted::Alone(creation) => *creation,
        };
    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let (invoice, resource) = invoicing::create(&mut tx, state.invoicing(), &merchant, request).await?;
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    let response = idempotency::commit(guard, tx, StatusCode::CREATED, body).await?;
    created(&state, &invoice);
    Ok(response)
}

/// Seed 003's "customer_id ... used for rate limiting", on every route that makes invoices.
pub(crate) fn limit_customer(state: &AppState, auth: &Authenticated, customer: Option<&str>) -> Result<(), ApiError> {
    let Some(customer) = customer else { return Ok(()) };
    state.limits.per_customer.check_key(&(auth.merchant.id, customer.to_owned())).map_err(|not_until| {
        ApiError::RateLimited {
            message: format!("too many invoices for customer_id {customer:?}; retry after the time in Retry-After"),
            retry_after_secs: not_until.wait_time_from(DefaultClock::default().now()).as_secs_f64().ceil() as u64,
        }
    })
}

/// Counts and logs an invoice made through any route.
pub(crate) fn created(state: &AppState, invoice: &Invoice) {
    state.metrics.invoices_created_total.with_label_values(&[&invoice.chain, &invoice.asset]).inc();
    tracing::info!(invoice_id = %invoice.id, merchant_id = %invoice.merchant_id, view = %invoice.view.as_str(), "invoice created");
}

/// Seed 001's request, field by field, into the invoicing lifecycle's terms (its limits, its
/// URL rules); the amount, currency, chain, asset, expiry and the key's mode are judged by
/// `invoicing::create`.
fn parse(state: &AppState, key_mode: KeyMode, req: CreateInvoice) -> Result<InvoiceRequest, ApiError> {
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
    let allow_http = state.config.settings.invoices.allow_http_urls;
    let details = InvoiceDetails {
        description: validate::text("description", req.description, 255)?,
        customer_id: validate::text("customer_id", req.customer_id, 255)?,
        customer_email: validate::email("customer_email", req.customer_email)?,
        customer_name: validate::text("customer_name", req.customer_name, 255)?,
        metadata: validate::structured_metadata(req.metadata)?,
        title: validate::text("title", req.title, 255)?,
        footer: validate::text("footer", req.footer, 255)?,
        return_url: validate::url("return_url", req.return_url, allow_http)?,
        use_return_url: req.use_return_url,
        success_url: validate::url("success_url", req.success_url, allow_http)?,
        fail_url: validate::url("fail_url", req.fail_url, allow_http)?,
        callback_url: validate::callback_url("callback_url", req.callback_url, &state.config)?,
        questions: validate::questions(req.questions)?,
        answers: None,
    };
    Ok(InvoiceRequest {
        amount: validate::amount(&req.amount)?,
        currency: req.currency,
        chain: req.chain,
        asset: req.asset,
        expires_in_ms: req.expires_in,
        receiver_override_address,
        external_id: validate::text("external_id", req.external_id, 128)?,
        details,
        view: InvoiceView::Invoice,
        key_mode: Some(key_mode),
        payment_options: req
            .payment_options
            .map(|options| options.into_iter().map(|o| OptionRequest { chain: o.chain, asset: o.asset }).collect()),
    })
}

/// The invoice resource with its payments and their confirmations.
pub async fn resource(state: &AppState, conn: &mut Conn, invoice: &Invoice) -> Result<InvoiceResource, ApiError> {
    let payments = invoices::payments(conn, invoice).await?;
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
    PathId(id): PathId,
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

/// The query of `GET /api/v1/invoices`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListInvoices {
    /// Only invoices in this status
    #[serde(default, deserialize_with = "query::word")]
    status: Option<InvoiceStatus>,
    /// Only the invoice with this external id
    external_id: Option<String>,
    /// Only this customer's invoices
    customer_id: Option<String>,
    /// Epoch seconds, exclusive
    #[serde(default, deserialize_with = "query::created_after")]
    created_after: Option<i64>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<uuid::Uuid>,
}

impl ListQuery for ListInvoices {
    const SCOPE: Scope = Scope::InvoicesRead;
}

#[utoipa::path(
    get, path = "/api/v1/invoices", tag = "invoices",
    params(ListInvoices),
    responses(
        (status = 200, description = "Invoices, newest first", body = InvoiceList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListInvoices>,
) -> Result<Json<InvoiceList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let filter = InvoiceFilter {
        status: query.status,
        external_id: query.external_id,
        customer_id: query.customer_id,
        created_after: query.created_after,
        starting_after: page.starting_after,
        ..InvoiceFilter::default()
    };
    let mut conn = state.store.conn().await?;
    let (found, has_more) = page.finish(invoices::list(&mut conn, auth.merchant.id, &filter, page.fetch()).await?);
    // Every listed invoice's payments in one query, not one per invoice.
    let mut payments = invoices::payments_of(&mut conn, &found).await?;
    let public_url = &state.config.settings.api.public_url;
    let data = found
        .iter()
        .map(|invoice| {
            let paid = payments.remove(&invoice.id).unwrap_or_default();
            InvoiceResource::build(invoice, paid, public_url, &state.sessions)
        })
        .collect();
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
    PathId(id): PathId,
) -> Result<Json<InvoiceResource>, ApiError> {
    auth.require(Scope::InvoicesWrite)?;
    let id = extract::path_id("invoice", &id)?;
    let mut tx = state.store.begin().await?;
    let (_, resource) =
        invoicing::cancel(&mut tx, state.invoicing(), auth.merchant.id, id).await.map_err(cancel_error)?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(resource))
}

/// A cancellation's refusal as the API answers it.
fn cancel_error(error: CancelError) -> ApiError {
    match error {
        CancelError::NotFound => ApiError::not_found("invoice"),
        error @ CancelError::NotCancellable(_) => {
            ApiError::Conflict { code: "invoice_not_cancellable", message: error.to_string(), param: None }
        }
        CancelError::Store(e) => e.into(),
    }
}

/// The request body of a mark. Unknown fields are refused.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkInvoice {
    /// `paid` or `invalid`.
    pub status: MarkStatus,
    /// Why (shown in the invoice's `marked` and its webhooks): 1 to 500 characters, not blank.
    pub reason: String,
}

impl Creation for MarkInvoice {
    const SCOPE: Scope = Scope::InvoicesWrite;
    const ENDPOINT: &'static str = "POST /api/v1/invoices/{id}/mark";
}

/// The invoice a mark is of, from the path.
pub struct MarkedInvoice(uuid::Uuid);

impl Parent for MarkedInvoice {
    const IN_PATH: bool = true;

    fn parse(id: Option<&str>) -> Result<Self, ApiError> {
        extract::path_id("invoice", id.unwrap_or_default()).map(MarkedInvoice)
    }

    /// The key covers the invoice too: the same key and body for another invoice is a conflict.
    fn claim(&self, body: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "invoice_id": self.0, "body": body })
    }
}

#[utoipa::path(
    post, path = "/api/v1/invoices/{id}/mark", tag = "invoices",
    params(
        ("id" = Uuid, Path, description = "Invoice id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Safe retries: the same key, invoice and body replay the first response"),
    ),
    request_body = MarkInvoice,
    responses(
        (status = 200, description = "The marked invoice (also when it already carried this mark: nothing changes then). No money moves: the ledger and balances are untouched", body = InvoiceResource),
        (status = 400, description = "Invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write", body = crate::error::ErrorBody),
        (status = 404, description = "No such invoice", body = crate::error::ErrorBody),
        (status = 409, description = "invoice_not_markable: paid by the chain, cancelled or refunded; or an idempotency conflict", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn mark(
    State(state): State<AppState>,
    Create { auth, parent: MarkedInvoice(id), request, guard }: Create<MarkInvoice, MarkedInvoice>,
) -> Result<Response, ApiError> {
    let reason = validate::text("reason", Some(request.reason), 500)?.unwrap_or_default();
    if reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "invalid_parameter", "reason must not be blank"));
    }
    let request =
        MarkRequest { status: request.status, reason, by_key_id: auth.key.id, by: auth.key.display_prefix.clone() };
    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let marked =
        invoicing::mark(&mut tx, state.invoicing(), auth.merchant.id, id, request).await.map_err(|e| match e {
            MarkError::NotFound => ApiError::not_found("invoice"),
            MarkError::NotMarkable(message) => {
                ApiError::Conflict { code: "invoice_not_markable", message, param: None }
            }
            MarkError::Store(e) => e.into(),
        })?;
    let resource = resource(&state, &mut tx, &marked.invoice).await?;
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    let response = idempotency::commit(guard, tx, StatusCode::OK, body).await?;
    if marked.changed {
        tracing::info!(invoice_id = %id, merchant_id = %auth.merchant.id, status = %marked.invoice.status, "invoice marked");
    }
    Ok(response)
}
