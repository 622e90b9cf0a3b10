//! The payer's API (seed 001): `GET /api/v1/payments/{invoice_id}` and
//! `POST /api/v1/payments/{invoice_id}/answers`, for browser code on the checkout page.
//!
//! No API key: the invoice's `session_token` and its `signature` (HMAC with a server key) come as
//! `x-session-token` and `x-signature`. A wrong, missing or another invoice's session is one and the
//! same 401, so invoice ids cannot be probed. What a payer sees is only what paying needs: no
//! metadata, no customer data, no fees or merchant settings.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use depositd_core::invoice::{Invoice, InvoiceStatus, PayInstructions, PaymentFlag};
use depositd_core::store::{invoices, merchants};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract;
use crate::extract::PathId;
use crate::state::AppState;

/// The payer routes, with CORS for exactly the origins the invoice's merchant configured
/// (`depositd merchant set-checkout-origins`): a shop's own page may embed the payment flow,
/// no other site may read a payer's session, and the merchant API gets no CORS at all.
pub fn router(store: depositd_core::store::Store) -> axum::Router<AppState> {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = AllowOrigin::async_predicate(move |origin, parts| {
        let store = store.clone();
        let invoice = parts
            .uri
            .path()
            .strip_prefix("/api/v1/payments/")
            .and_then(|rest| rest.split('/').next())
            .and_then(|id| id.parse::<Uuid>().ok());
        async move {
            let (Some(invoice), Ok(origin)) = (invoice, origin.to_str()) else { return false };
            let Ok(mut conn) = store.conn().await else { return false };
            merchants::checkout_origins_for_invoice(&mut conn, invoice)
                .await
                .is_ok_and(|origins| origins.iter().any(|o| o == origin))
        }
    });
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            HeaderName::from_static("x-session-token"),
            HeaderName::from_static("x-signature"),
            HeaderName::from_static("content-type"),
        ])
        .max_age(std::time::Duration::from_secs(600));
    // OPTIONS is routed explicitly, so a preflight reaches the CORS layer (which answers it)
    // instead of the router's 405 for unknown methods.
    let preflight = || async { axum::http::StatusCode::NO_CONTENT };
    axum::Router::new()
        .route("/api/v1/payments/{invoice_id}", axum::routing::get(get).options(preflight))
        .route("/api/v1/payments/{invoice_id}/answers", axum::routing::post(answer).options(preflight))
        .route("/api/v1/payments/{invoice_id}/events", axum::routing::get(events).options(preflight))
        .layer(cors)
}

/// Answers are at most this long each (bytes).
const MAX_ANSWER_BYTES: usize = 512;

fn unauthorized() -> ApiError {
    ApiError::Unauthenticated {
        code: "invalid_session",
        message: "send the invoice's session_token as x-session-token and its signature as x-signature".into(),
    }
}

/// The invoice, when the request carries its valid payment session.
async fn authorize(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Invoice, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let (Some(token), Some(signature)) = (header("x-session-token"), header("x-signature")) else {
        return Err(unauthorized());
    };
    let id: Uuid = id.parse().map_err(|_| unauthorized())?;
    // The signature proves the server issued this token for this invoice id (constant-time).
    if !state.sessions.verify(id, token, signature) {
        return Err(unauthorized());
    }
    let mut conn = state.store.conn().await?;
    match invoices::get_any(&mut conn, id).await? {
        Some(invoice) if invoice.session_token == token => Ok(invoice),
        _ => Err(unauthorized()),
    }
}

/// What the payer sees.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentSession {
    /// Always `payment_session`.
    #[schema(value_type = String)]
    object: &'static str,
    invoice_id: Uuid,
    status: InvoiceStatus,
    payment_flags: Vec<PaymentFlag>,
    /// The invoice's title and footer, or the merchant's company name.
    title: Option<String>,
    footer: Option<String>,
    description: Option<String>,
    /// The price, in `currency`.
    amount: String,
    currency: String,
    pay: PayInstructions,
    amount_paid: String,
    amount_due: String,
    amount_due_base_units: depositd_core::money::BaseUnits,
    /// Every way to pay (the first is `pay`), each with its amount, address, EIP-681 link, and
    /// what was paid and is still due in it. The payer may pay any, or several.
    payment_options: Vec<depositd_core::invoice::PaymentOptionView>,
    /// Confirmations of the least confirmed payment still waiting (0 when none waits).
    confirmations: u64,
    required_confirmations: u64,
    /// Epoch seconds.
    expires_at: i64,
    questions: Option<Vec<String>>,
    answered: bool,
    /// Where to send the payer once paid (when the merchant allows a redirect).
    return_url: Option<String>,
    /// Where to send the payer once the invoice expired unpaid.
    fail_url: Option<String>,
}

impl PaymentSession {
    /// What the payer of `invoice` may see; `company` stands in for a missing title or footer.
    fn build(state: &AppState, invoice: &Invoice, company: Option<String>, confirmations: u64) -> PaymentSession {
        let d = &invoice.details;
        let redirect_allowed = d.use_return_url != Some(false);
        let resource = depositd_core::invoice::InvoiceResource::build(
            invoice,
            Vec::new(),
            &state.config.settings.api.public_url,
            &state.sessions,
        );
        PaymentSession {
            object: "payment_session",
            invoice_id: invoice.id,
            status: invoice.status,
            payment_flags: invoice.payment_flags.clone(),
            title: d.title.clone().or_else(|| company.clone()),
            footer: d.footer.clone().or(company),
            description: d.description.clone(),
            amount: resource.amount,
            currency: invoice.currency.clone(),
            pay: resource.pay,
            amount_paid: resource.amount_paid,
            amount_due: resource.amount_due,
            amount_due_base_units: invoice.amount_due(),
            payment_options: resource.payment_options,
            confirmations,
            required_confirmations: state
                .config
                .chains
                .iter()
                .find(|c| c.chain_id == invoice.chain_id)
                .map_or(0, |c| c.confirmations),
            expires_at: invoice.expires_at.div_euclid(1000),
            questions: d.questions.clone(),
            answered: d.answers.is_some(),
            return_url: (invoice.status == InvoiceStatus::Paid && redirect_allowed)
                .then(|| d.return_url.clone().or_else(|| d.success_url.clone()))
                .flatten(),
            fail_url: matches!(invoice.status, InvoiceStatus::Expired | InvoiceStatus::Invalid)
                .then(|| d.fail_url.clone())
                .flatten(),
        }
    }
}

#[utoipa::path(
    get, path = "/api/v1/payments/{invoice_id}", tag = "payments",
    params(
        ("invoice_id" = Uuid, Path, description = "Invoice id"),
        ("x-session-token" = String, Header, description = "The invoice's session_token"),
        ("x-signature" = String, Header, description = "The invoice's signature"),
    ),
    responses(
        (status = 200, description = "What the payer may see", body = PaymentSession),
        (status = 401, description = "Missing or wrong session", body = crate::error::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
) -> Result<Json<PaymentSession>, ApiError> {
    let invoice = authorize(&state, &headers, &id).await?;
    let mut conn = state.store.conn().await?;
    Ok(Json(session(&state, &mut conn, &invoice).await?))
}

/// The payer's view of `invoice` (each payment's confirmations on its own chain).
async fn session(
    state: &AppState,
    conn: &mut depositd_core::store::Conn,
    invoice: &Invoice,
) -> Result<PaymentSession, ApiError> {
    let merchant = merchants::get(conn, invoice.merchant_id).await?;
    let company = merchant.as_ref().map(|m| m.display_name().to_owned());
    let payments = invoices::payments(conn, invoice).await?;
    let confirmations = payments.iter().filter(|p| p.state == "detected").map(|p| p.confirmations).min().unwrap_or(0);
    let mut session = PaymentSession::build(state, invoice, company, confirmations);
    // The merchant's default return URL (dashboard Settings) when the invoice names none.
    if session.return_url.is_none()
        && invoice.status == InvoiceStatus::Paid
        && invoice.details.use_return_url != Some(false)
    {
        session.return_url = merchant.and_then(|m| m.default_return_url);
    }
    Ok(session)
}

/// How often a live stream looks for a change: a status change reaches the page within this
/// (plus one render), well inside the second the checkout promises.
const STREAM_CHECK: std::time::Duration = std::time::Duration::from_millis(400);
/// A stream ends after this long; the page opens a new one (so no connection is held for ever by
/// a tab left open, and every stream re-checks the session when it starts).
const STREAM_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// Where a live stream stands: the last session sent and what it was built from.
struct Stream {
    state: AppState,
    invoice_id: Uuid,
    /// The invoice row and the heads of the chains it may be paid on that the last session was
    /// built from; a tick that finds them unchanged sends nothing (primary-key reads, no session
    /// built).
    seen: Option<(Invoice, Vec<Option<u64>>)>,
    sent: Option<String>,
    finished: bool,
    until: tokio::time::Instant,
}

impl Stream {
    /// The next event to send: the session when it changed, waiting as long as it does not;
    /// `None` ends the stream (finished, expired lifetime, or a store error, after which the page
    /// reconnects or falls back to polling).
    async fn next(mut self) -> Option<(axum::response::sse::Event, Stream)> {
        loop {
            if self.finished || tokio::time::Instant::now() >= self.until {
                return None;
            }
            if self.sent.is_some() {
                tokio::time::sleep(STREAM_CHECK).await;
            }
            let mut conn = self.state.store.conn().await.ok()?;
            let invoice = invoices::get_any(&mut conn, self.invoice_id).await.ok()??;
            let heads = invoices::heads(&mut conn, &invoice).await.ok()?;
            let unchanged = self.seen.as_ref().is_some_and(|(seen, seen_heads)| {
                seen.status == invoice.status
                    && seen.amount_paid_base_units == invoice.amount_paid_base_units
                    && seen.payment_flags == invoice.payment_flags
                    && seen.options == invoice.options
                    && seen.expires_at == invoice.expires_at
                    && seen.details.answers.is_some() == invoice.details.answers.is_some()
                    && (*seen_heads == heads || invoice.status != InvoiceStatus::Processing)
            });
            if unchanged {
                continue;
            }
            let session = session(&self.state, &mut conn, &invoice).await.ok()?;
            drop(conn);
            let json = serde_json::to_string(&session).ok()?;
            self.finished = invoice.status.is_final();
            self.seen = Some((invoice, heads));
            if self.sent.as_deref() == Some(json.as_str()) {
                continue;
            }
            self.sent = Some(json.clone());
            return Some((axum::response::sse::Event::default().event("session").data(json), self));
        }
    }
}

/// `GET /api/v1/payments/{invoice_id}/events`: the payment session as server-sent events, one
/// `session` event (the same JSON as `GET /api/v1/payments/{invoice_id}`) at once and one on
/// every change, until the invoice is finished (paid, expired, cancelled, invalid, refunded) or
/// ten minutes have passed. Authenticated like the other payer routes (headers, so the page reads
/// it with `fetch`, never with a token in the URL). Each open stream holds a connection, so the
/// server's connection cap (`api.max_connections`) bounds them.
#[utoipa::path(
    get, path = "/api/v1/payments/{invoice_id}/events", tag = "payments",
    params(
        ("invoice_id" = Uuid, Path, description = "Invoice id"),
        ("x-session-token" = String, Header, description = "The invoice's session_token"),
        ("x-signature" = String, Header, description = "The invoice's signature"),
    ),
    responses(
        (status = 200, description = "A text/event-stream of `session` events, each a PaymentSession", content_type = "text/event-stream", body = String),
        (status = 401, description = "Missing or wrong session", body = crate::error::ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use axum::response::sse::{KeepAlive, Sse};
    let invoice = authorize(&state, &headers, &id).await?;
    let stream = Stream {
        state,
        invoice_id: invoice.id,
        seen: None,
        sent: None,
        finished: false,
        until: tokio::time::Instant::now() + STREAM_LIFETIME,
    };
    let events = futures_util::stream::unfold(stream, Stream::next).map(Ok::<_, std::convert::Infallible>);
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    // No proxy may buffer the stream (nginx honours this header).
    response.headers_mut().insert("x-accel-buffering", axum::http::HeaderValue::from_static("no"));
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answers {
    /// One answer per question, in order.
    answers: Vec<String>,
}

#[utoipa::path(
    post, path = "/api/v1/payments/{invoice_id}/answers", tag = "payments",
    params(
        ("invoice_id" = Uuid, Path, description = "Invoice id"),
        ("x-session-token" = String, Header, description = "The invoice's session_token"),
        ("x-signature" = String, Header, description = "The invoice's signature"),
    ),
    request_body = Answers,
    responses(
        (status = 200, description = "Stored; the payment session as it now stands", body = PaymentSession),
        (status = 400, description = "Answers do not fit the questions", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or wrong session", body = crate::error::ErrorBody),
        (status = 409, description = "The invoice has no questions, or is finished", body = crate::error::ErrorBody),
    )
)]
pub async fn answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathId(id): PathId,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<PaymentSession>, ApiError> {
    let invoice = authorize(&state, &headers, &id).await?;
    let request: Answers = extract::json(body)?;
    let answers = checked_answers(&invoice, &request.answers)?;
    let mut conn = state.store.conn().await?;
    invoices::set_answers(&mut conn, invoice.id, &answers).await?;
    drop(conn);
    get(State(state), headers, PathId(id)).await
}

/// The payer's answers to the invoice's questions, trimmed: one per question, each 1 to
/// [`MAX_ANSWER_BYTES`] bytes of text, while the invoice can still be paid.
fn checked_answers(invoice: &Invoice, answers: &[String]) -> Result<Vec<String>, ApiError> {
    let questions = invoice.details.questions.clone().unwrap_or_default();
    if questions.is_empty() {
        return Err(ApiError::Conflict {
            code: "no_questions",
            message: "this invoice asks no questions".into(),
            param: None,
        });
    }
    if matches!(invoice.status, InvoiceStatus::Cancelled | InvoiceStatus::Expired | InvoiceStatus::Invalid) {
        return Err(ApiError::Conflict {
            code: "invoice_finished",
            message: format!("the invoice is {}", invoice.status),
            param: None,
        });
    }
    if answers.len() != questions.len() {
        return Err(ApiError::invalid(
            "answers",
            "invalid_parameter",
            format!("answers must have one entry per question ({})", questions.len()),
        ));
    }
    for (i, answer) in answers.iter().enumerate() {
        if answer.trim().is_empty() || answer.len() > MAX_ANSWER_BYTES || answer.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                format!("answers[{i}]"),
                "invalid_parameter",
                format!("answers[{i}] must be 1 to {MAX_ANSWER_BYTES} bytes of text"),
            ));
        }
    }
    Ok(answers.iter().map(|a| a.trim().to_owned()).collect())
}
