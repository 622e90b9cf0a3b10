//! The hosted checkout page, `GET /checkout/{invoice_id}` (the invoice's `checkout_url`), and its
//! two static assets.
//!
//! Server-rendered HTML (askama, escaped), a QR code of the EIP-681 `payment_uri` drawn as inline
//! SVG, and one same-origin script that follows the payer session API's live stream
//! (`routes::payments`, polling while the stream is down). Its words come from the translation
//! table (`crate::i18n`), in the language of `?lang=` or the browser's `Accept-Language`, with a
//! switcher. Nothing is loaded from anywhere else: the page works on a closed network and under a
//! Content-Security-Policy that allows only its own origin.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use depositd_core::invoice::{InvoiceStatus, MAX_PAYMENT_OPTIONS, PaymentFlag, PaymentOptionView};
use depositd_core::store::{invoices, merchants};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::PathId;
use crate::i18n::{self, Text};
use crate::state::AppState;

/// Only this origin's scripts, styles and API; no frames, no plugins, no base-URI tricks.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Template)]
#[template(path = "checkout.html")]
struct CheckoutPage {
    t: Text,
    /// The page's words as JSON, for its script.
    strings: String,
    /// The language switcher: (tag, own name, the current one).
    languages: Vec<(&'static str, &'static str, bool)>,
    /// "Send exactly {amount} {asset} on {chain}" in the page's language, values filled in.
    send_exactly: Vec<Piece>,
    invoice_id: Uuid,
    session_token: String,
    signature: String,
    title: String,
    footer: String,
    description: Option<String>,
    amount: String,
    currency: String,
    /// "Deposit address ({asset} on {chain})" in the page's language.
    deposit_label: String,
    address: String,
    token_address: Option<String>,
    payment_uri: String,
    qr_svg: String,
    status: &'static str,
    status_text: String,
    /// The status box's look, as the script sets it: `paid`, `warn` or none.
    status_kind: &'static str,
    /// Paid, expired or cancelled: the pay instructions are not shown (nothing more to send).
    finished: bool,
    expires_at: i64,
    expires_at_iso: String,
    questions: Vec<String>,
    /// An invoice with several payment options: one block each (empty for one way to pay, which
    /// the fields above show). Until the payer picks one, the page shows them all.
    options: Vec<OptionBlock>,
}

/// One payment option on the page: its button's words, its sentence, address, QR code and link.
struct OptionBlock {
    index: usize,
    label: String,
    send_exactly: Vec<Piece>,
    deposit_label: String,
    address: String,
    token_address: Option<String>,
    payment_uri: String,
    qr_svg: String,
}

/// The element ids of the options' amounts, which the script updates (`amount-due-<index>`).
const OPTION_AMOUNT_IDS: [&str; MAX_PAYMENT_OPTIONS] = [
    "amount-due-0",
    "amount-due-1",
    "amount-due-2",
    "amount-due-3",
    "amount-due-4",
    "amount-due-5",
    "amount-due-6",
    "amount-due-7",
    "amount-due-8",
    "amount-due-9",
];

/// A piece of a translated sentence: text, or a value to show in bold (with an element id the
/// script updates, when it has one).
struct Piece {
    text: String,
    strong: bool,
    id: &'static str,
}

fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

fn not_found(t: Text) -> Response {
    let (title, body) = (t.get("not_found_title"), t.get("not_found_body"));
    let html = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1><p>{body}</p></main></body></html>",
        t.lang
    );
    let mut response = security_headers((StatusCode::NOT_FOUND, Html(html)).into_response());
    language_headers(&mut response, t);
    response
}

/// The page differs by language: say which it is, and that caches must key on the browser's choice.
fn language_headers(response: &mut Response, t: Text) {
    let headers = response.headers_mut();
    if let Ok(lang) = header::HeaderValue::from_str(t.lang) {
        headers.insert(header::CONTENT_LANGUAGE, lang);
    }
    headers.insert(header::VARY, header::HeaderValue::from_static("accept-language"));
}

/// The page's language: `?lang=xx`, else the browser's, else English.
fn language(query: Option<&str>, headers: &HeaderMap) -> Text {
    let requested = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes()).find(|(name, _)| name == "lang").map(|(_, value)| value.into_owned())
    });
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    i18n::negotiate(requested.as_deref(), accept)
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

pub async fn page(
    State(state): State<AppState>,
    PathId(id): PathId,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = language(query.as_deref(), &headers);
    let Ok(id) = id.parse::<Uuid>() else { return Ok(not_found(t)) };
    let mut conn = state.store.conn().await?;
    let Some(invoice) = invoices::get_any(&mut conn, id).await? else { return Ok(not_found(t)) };
    let merchant = merchants::get(&mut conn, invoice.merchant_id).await?;
    let company = merchant.as_ref().map(|m| m.display_name().to_owned()).unwrap_or_default();
    let d = &invoice.details;
    let due = invoice.amount_due();
    let status_text = match invoice.status {
        InvoiceStatus::Paid => t.get("status_paid").to_owned(),
        InvoiceStatus::Refunded => t.get("status_refunded").to_owned(),
        InvoiceStatus::PartiallyRefunded => t.get("status_partially_refunded").to_owned(),
        InvoiceStatus::Expired => t.get("status_expired").to_owned(),
        InvoiceStatus::Cancelled => t.get("status_cancelled").to_owned(),
        InvoiceStatus::Invalid => t.get("status_invalid").to_owned(),
        InvoiceStatus::Processing => t.get("status_detected").to_owned(),
        InvoiceStatus::Pending if invoice.payment_flags.contains(&PaymentFlag::Underpaid) => {
            if invoice.options.is_empty() {
                t.fill("status_underpaid", &[("amount", &due.to_display(invoice.decimals)), ("asset", &invoice.asset)])
            } else {
                t.fill("status_underpaid", &[("amount", &invoice.amount_due_display()), ("asset", &invoice.currency)])
            }
        }
        InvoiceStatus::Pending => t.get("status_waiting").to_owned(),
    };
    let token_amount = if due.is_zero() { invoice.amount_base_units } else { due }.to_display(invoice.decimals);
    let send_exactly = t
        .parts("send_exactly")
        .into_iter()
        .map(|part| match (part.placeholder, part.text.as_str()) {
            (false, _) => Piece { text: part.text, strong: false, id: "" },
            (true, "amount") => Piece { text: token_amount.clone(), strong: true, id: "amount-due" },
            (true, "asset") => Piece { text: invoice.asset.clone(), strong: true, id: "" },
            (true, "chain") => Piece { text: invoice.chain.clone(), strong: true, id: "" },
            (true, other) => Piece { text: other.to_owned(), strong: false, id: "" },
        })
        .collect();
    let mut options = Vec::new();
    let listed = if invoice.options.is_empty() { Vec::new() } else { PaymentOptionView::list(&invoice) };
    for (index, option) in listed.into_iter().enumerate() {
        let amount =
            if option.amount_due_base_units.is_zero() { option.amount.clone() } else { option.amount_due.clone() };
        let send_exactly = t
            .parts("send_exactly")
            .into_iter()
            .map(|part| match (part.placeholder, part.text.as_str()) {
                (false, _) => Piece { text: part.text, strong: false, id: "" },
                (true, "amount") => Piece { text: amount.clone(), strong: true, id: OPTION_AMOUNT_IDS[index] },
                (true, "asset") => Piece { text: option.asset.clone(), strong: true, id: "" },
                (true, "chain") => Piece { text: option.chain.clone(), strong: true, id: "" },
                (true, other) => Piece { text: other.to_owned(), strong: false, id: "" },
            })
            .collect();
        options.push(OptionBlock {
            index,
            label: t.fill("pay_with", &[("asset", &option.asset), ("chain", &option.chain)]),
            send_exactly,
            deposit_label: t.fill("deposit_address", &[("asset", &option.asset), ("chain", &option.chain)]),
            address: option.address,
            token_address: option.token_address,
            qr_svg: qr_svg(&option.payment_uri)?,
            payment_uri: option.payment_uri,
        });
    }
    let expires_at_iso = depositd_core::time::iso8601(invoice.expires_at);
    // What is still due (all of it until something is paid), as every option's link asks.
    let payment_uri = due_uri(&invoice, 0).unwrap_or_else(|| invoice.payment_uri());
    let page = CheckoutPage {
        t,
        strings: t.json(),
        languages: i18n::languages().into_iter().map(|(tag, name)| (tag, name, tag == t.lang)).collect(),
        send_exactly,
        invoice_id: invoice.id,
        signature: state.sessions.sign(invoice.id, &invoice.session_token),
        session_token: invoice.session_token.clone(),
        title: d.title.clone().unwrap_or_else(|| company.clone()),
        footer: d.footer.clone().unwrap_or(company),
        description: d.description.clone(),
        amount: invoice.amount.normalize().to_string(),
        currency: invoice.currency.clone(),
        deposit_label: t.fill("deposit_address", &[("asset", &invoice.asset), ("chain", &invoice.chain)]),
        address: invoice.address.to_checksum(None),
        token_address: invoice.token_address.map(|a| a.to_checksum(None)),
        qr_svg: qr_svg(&payment_uri)?,
        payment_uri,
        status: invoice.status.as_str(),
        status_kind: match invoice.status {
            InvoiceStatus::Paid | InvoiceStatus::PartiallyRefunded => "paid",
            InvoiceStatus::Refunded | InvoiceStatus::Expired | InvoiceStatus::Cancelled | InvoiceStatus::Invalid => {
                "warn"
            }
            InvoiceStatus::Pending if invoice.payment_flags.contains(&PaymentFlag::Underpaid) => "warn",
            InvoiceStatus::Pending | InvoiceStatus::Processing => "",
        },
        status_text,
        finished: invoice.status.is_final(),
        expires_at: invoice.expires_at.div_euclid(1000),
        expires_at_iso,
        questions: d.questions.clone().unwrap_or_default(),
        options,
    };
    let html = page.render().map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
    let mut response = security_headers(Html(html).into_response());
    language_headers(&mut response, t);
    Ok(response)
}

/// The EIP-681 link of `invoice`'s option `index` (0 for an invoice payable one way) for the
/// amount still due in it: what the page's QR code and wallet link ask the payer to send.
fn due_uri(invoice: &depositd_core::invoice::Invoice, index: usize) -> Option<String> {
    PaymentOptionView::list(invoice).into_iter().nth(index).map(|option| option.payment_uri)
}

/// `GET /checkout/{invoice_id}/qr?option=N`: the QR code of option `N`'s link (default 0) for
/// what is due in it now, as an SVG image. The page's script swaps it in when a payment changes
/// what is due, so a payer who scans again is asked for the rest, not the whole price again (any
/// other query parameter, such as the script's cache-buster, is ignored). It shows no more than
/// the page itself: an address and an amount.
pub async fn qr(State(state): State<AppState>, PathId(id): PathId, RawQuery(query): RawQuery) -> Response {
    let t = i18n::negotiate(None, None);
    let option = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == "option")
            .map(|(_, value)| value.into_owned())
    });
    let index = match option.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(index)) => index,
        Some(Err(_)) => return not_found(t),
    };
    let Ok(id) = id.parse::<Uuid>() else { return not_found(t) };
    let found = async {
        let mut conn = state.store.conn().await?;
        Ok::<_, ApiError>(invoices::get_any(&mut conn, id).await?)
    };
    let invoice = match found.await {
        Ok(Some(invoice)) => invoice,
        Ok(None) => return not_found(t),
        Err(error) => return error.into_response(),
    };
    let Some(uri) = due_uri(&invoice, index) else { return not_found(t) };
    match qr_svg(&uri) {
        Ok(svg) => security_headers(
            ([(header::CONTENT_TYPE, "image/svg+xml")], format!("<?xml version=\"1.0\" standalone=\"yes\"?>{svg}"))
                .into_response(),
        ),
        Err(error) => error.into_response(),
    }
}

/// `GET /checkout/assets/{name}`: the page's stylesheet and script, compiled into the binary.
pub async fn asset(PathId(name): PathId) -> Response {
    let (body, content_type) = match name.as_str() {
        "checkout.css" => (include_str!("../../assets/checkout.css"), "text/css; charset=utf-8"),
        "checkout.js" => (include_str!("../../assets/checkout.js"), "text/javascript; charset=utf-8"),
        _ => return not_found(i18n::negotiate(None, None)),
    };
    security_headers(
        ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response(),
    )
}
