//! The hosted checkout page, `GET /checkout/{invoice_id}` (the invoice's `checkout_url`), and its
//! two static assets.
//!
//! Server-rendered HTML (askama, escaped), a QR code of the EIP-681 `payment_uri` drawn as inline
//! SVG, and one same-origin script that polls the payer session API
//! (`routes::payments`). Nothing is loaded from anywhere else: the page works on a closed network
//! and under a Content-Security-Policy that allows only its own origin.

use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use depositd_core::invoice::{InvoiceStatus, PaymentFlag};
use depositd_core::store::{invoices, merchants};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::PathId;
use crate::state::AppState;

/// Only this origin's scripts, styles and API; no frames, no plugins, no base-URI tricks.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    invoice_id: Uuid,
    session_token: String,
    signature: String,
    title: String,
    footer: String,
    description: Option<String>,
    amount: String,
    currency: String,
    token_amount: String,
    asset: String,
    chain: String,
    address: String,
    token_address: Option<String>,
    payment_uri: String,
    qr_svg: String,
    status: &'static str,
    status_text: String,
    /// Paid, expired or cancelled: the pay instructions are not shown (nothing more to send).
    finished: bool,
    expires_at: i64,
    expires_at_iso: String,
    questions: Vec<String>,
}

fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn not_found() -> Response {
    let body = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Payment link not found</title>\
        </head><body><main><h1>Payment link not found</h1><p>This payment link is not valid. Please ask the shop \
        for a new one.</p></main></body></html>";
    security_headers((StatusCode::NOT_FOUND, Html(body)).into_response())
}

/// The QR code of `data` as an SVG element.
fn qr_svg(data: &str) -> Result<String, ApiError> {
    let code =
        qrcode::QrCode::new(data.as_bytes()).map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build()
        .split_once("?>")
        .map(|(_, svg)| svg.trim().to_owned())
        .unwrap_or_default())
}

pub async fn page(State(state): State<AppState>, PathId(id): PathId) -> Result<Response, ApiError> {
    let Ok(id) = id.parse::<Uuid>() else { return Ok(not_found()) };
    let mut conn = state.store.conn().await?;
    let Some(invoice) = invoices::get_any(&mut conn, id).await? else { return Ok(not_found()) };
    let merchant = merchants::get(&mut conn, invoice.merchant_id).await?;
    let company = merchant.as_ref().map(|m| m.display_name().to_owned()).unwrap_or_default();
    let d = &invoice.details;
    let due = invoice.amount_due();
    let status_text = match invoice.status {
        InvoiceStatus::Paid | InvoiceStatus::Refunded | InvoiceStatus::PartiallyRefunded => {
            "Paid. Thank you!".to_owned()
        }
        InvoiceStatus::Expired => "This payment request has expired.".to_owned(),
        InvoiceStatus::Cancelled => "This payment request was cancelled.".to_owned(),
        InvoiceStatus::Invalid => "This payment request is no longer valid.".to_owned(),
        InvoiceStatus::Processing => "Payment detected, waiting for confirmations...".to_owned(),
        InvoiceStatus::Pending if invoice.payment_flags.contains(&PaymentFlag::Underpaid) => {
            format!("Underpaid: send {} {} more.", due.to_display(invoice.decimals), invoice.asset)
        }
        InvoiceStatus::Pending => "Waiting for payment...".to_owned(),
    };
    let expires_at_iso = depositd_core::time::iso8601(invoice.expires_at);
    let payment_uri = invoice.payment_uri();
    let page = CheckoutPage {
        invoice_id: invoice.id,
        signature: state.sessions.sign(invoice.id, &invoice.session_token),
        session_token: invoice.session_token.clone(),
        title: d.title.clone().unwrap_or_else(|| company.clone()),
        footer: d.footer.clone().unwrap_or(company),
        description: d.description.clone(),
        amount: invoice.amount.normalize().to_string(),
        currency: invoice.currency.clone(),
        token_amount: if due.is_zero() { invoice.amount_base_units } else { due }.to_display(invoice.decimals),
        asset: invoice.asset.clone(),
        chain: invoice.chain.clone(),
        address: invoice.address.to_checksum(None),
        token_address: invoice.token_address.map(|a| a.to_checksum(None)),
        qr_svg: qr_svg(&payment_uri)?,
        payment_uri,
        status: invoice.status.as_str(),
        status_text,
        finished: invoice.status.is_final(),
        expires_at: invoice.expires_at.div_euclid(1000),
        expires_at_iso,
        questions: d.questions.clone().unwrap_or_default(),
    };
    let html = page.render().map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    Ok(security_headers(Html(html).into_response()))
}

/// `GET /checkout/assets/{name}`: the page's stylesheet and script, compiled into the binary.
pub async fn asset(PathId(name): PathId) -> Response {
    let (body, content_type) = match name.as_str() {
        "checkout.css" => (include_str!("../../assets/checkout.css"), "text/css; charset=utf-8"),
        "checkout.js" => (include_str!("../../assets/checkout.js"), "text/javascript; charset=utf-8"),
        _ => return not_found(),
    };
    security_headers(
        ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response(),
    )
}
