//! The merchant dashboard under `/dashboard`: server-rendered pages (askama templates in
//! `templates/dashboard/`, one stylesheet compiled into the binary), a module per page.
//!
//! What every page shares is here, written once:
//! - **Who is asking**: [`SignedIn`] reads the session cookie and looks the session up
//!   (`depositd_core::members`); without one, a page redirects to the sign-in page. Sessions
//!   authenticate `/dashboard` only: the cookie's `Path` is `/dashboard` and the merchant API
//!   (`/api/v1/*`) knows API keys alone.
//! - **What they may do**: [`SignedIn::require`] asks the member's role (`member::Role::may`, the
//!   one table of who may do what); a refusal is a 403 page.
//! - **CSRF**: every POST carries a token in a hidden `csrf` field: the session's own once signed
//!   in ([`SignedIn::form`]), else (sign-in and invite pages) the value of a `depositd_csrf` cookie
//!   set with the form. A missing or wrong token is a 403 page and nothing is done. Cookies are
//!   `HttpOnly; SameSite=Strict; Path=/dashboard`, and `Secure` when the public URL is https.
//! - **Headers**: a Content-Security-Policy that allows this origin's stylesheet and one script
//!   of its own (`assets/dashboard.js`: the copy button next to a secret shown once; every page
//!   works without it), no inline script, no other origin, no framing, no referrer, no caching.
//!
//! # Layout
//! - [`sign_in`]: sign in, log out (here or everywhere), accept an invite.
//! - [`overview`]: balances per chain and asset.
//! - [`developers`]: API keys (list, create with the secret shown once, revoke).
//! - [`webhooks`], [`events`], [`settings`]: webhook endpoints (health, create, edit, enable and
//!   disable, rotate, delete, test event), the event log with every attempt and redeliver, the
//!   shop's settings.
//! - [`invoices`] and [`static_addresses`]: invoices (filtered list, detail that refreshes until
//!   final, a test invoice, cancel) and static addresses (list, create, detail, disable).
//! - [`ledger`] and [`payouts`]: balances and the journal (filters, running balances, CSV
//!   export); payouts (list, detail, create confirmed with the password, cancel) and an invoice's
//!   refund.
//! - [`team`]: Settings, the team (members and roles, invite, change a role, remove); [`totp`]:
//!   a member's TOTP second factor; the sign-in's code step and re-authentication are [`sign_in`]'s.

pub mod developers;
pub mod events;
pub mod invoices;
pub mod ledger;
pub mod overview;
pub mod payouts;
pub mod settings;
pub mod sign_in;
pub mod static_addresses;
pub mod team;
pub mod totp;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use depositd_core::member::{Action, Member, Session};
use depositd_core::members;
use depositd_core::merchant::{Merchant, MerchantStatus};
use depositd_core::store::merchants;

use crate::state::AppState;

/// This origin's stylesheet and its one script (the copy buttons), nothing else: no inline
/// script, no other origin, forms post here only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "depositd_session";
/// The pre-session CSRF cookie's name (sign-in and invite forms).
pub const CSRF_COOKIE: &str = "depositd_csrf";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview::page))
        .route("/dashboard/login", get(sign_in::login_page).post(sign_in::login))
        .route("/dashboard/logout", post(sign_in::logout))
        .route("/dashboard/logout-everywhere", post(sign_in::logout_everywhere))
        .route("/dashboard/invite/{token}", get(sign_in::invite_page).post(sign_in::accept_invite))
        .route("/dashboard/developers/api-keys", get(developers::api_keys).post(developers::create_api_key))
        .route("/dashboard/developers/api-keys/{id}/revoke", post(developers::revoke_api_key))
        .route("/dashboard/developers/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/dashboard/developers/webhooks/{id}", get(webhooks::show).post(webhooks::update))
        .route("/dashboard/developers/webhooks/{id}/enable", post(webhooks::enable))
        .route("/dashboard/developers/webhooks/{id}/disable", post(webhooks::disable))
        .route("/dashboard/developers/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/dashboard/developers/webhooks/{id}/delete", post(webhooks::delete))
        .route("/dashboard/developers/webhooks/{id}/test", post(webhooks::send_test))
        .route("/dashboard/developers/events", get(events::list))
        .route("/dashboard/developers/events/{id}", get(events::show))
        .route("/dashboard/developers/events/{id}/redeliver", post(events::redeliver))
        .route("/dashboard/settings", get(settings::page).post(settings::save))
        .route("/dashboard/invoices", get(invoices::list))
        .route("/dashboard/invoices/new", get(invoices::new_form).post(invoices::create))
        .route("/dashboard/invoices/{id}", get(invoices::show))
        .route("/dashboard/invoices/{id}/cancel", post(invoices::cancel))
        .route("/dashboard/static-addresses", get(static_addresses::list).post(static_addresses::create))
        .route("/dashboard/static-addresses/{id}", get(static_addresses::show))
        .route("/dashboard/static-addresses/{id}/disable", post(static_addresses::disable))
        .route("/dashboard/ledger", get(ledger::page))
        .route("/dashboard/ledger.csv", get(ledger::export))
        .route("/dashboard/payouts", get(payouts::list).post(payouts::create))
        .route("/dashboard/payouts/new", get(payouts::new_form).post(payouts::review))
        .route("/dashboard/payouts/{id}", get(payouts::detail))
        .route("/dashboard/payouts/{id}/cancel", post(payouts::cancel))
        .route("/dashboard/invoices/{id}/refund", get(payouts::refund_form).post(payouts::refund_review))
        .route("/dashboard/invoices/{id}/refund/confirm", post(payouts::refund_create))
        .route("/dashboard/login/code", get(sign_in::code_page).post(sign_in::sign_in_code))
        .route("/dashboard/settings/team", get(team::page).post(team::invite))
        .route("/dashboard/settings/team/{id}/role", post(team::change_role))
        .route("/dashboard/settings/team/{id}/remove", post(team::remove))
        .route("/dashboard/settings/security", get(totp::page))
        .route("/dashboard/settings/security/totp/enrol", post(totp::enrol))
        .route("/dashboard/settings/security/totp/confirm", post(totp::confirm))
        .route("/dashboard/settings/security/totp/disable", post(totp::disable))
        .route("/dashboard/assets/dashboard.css", get(stylesheet))
        .route("/dashboard/assets/dashboard.js", get(script))
}

/// `GET /dashboard/assets/dashboard.css`, compiled into the binary.
async fn stylesheet() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
            include_str!("../../../assets/dashboard.css"),
        )
            .into_response(),
    )
}

/// `GET /dashboard/assets/dashboard.js`, compiled into the binary.
async fn script() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")],
            include_str!("../../../assets/dashboard.js"),
        )
            .into_response(),
    )
}

/// Adds the dashboard's security headers (see the module doc).
pub fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A rendered page with `status`.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => secured((status, Html(html)).into_response()),
        Err(error) => {
            tracing::error!(%error, "a dashboard page failed to render");
            secured((StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response())
        }
    }
}

/// What the page frame shows of the signed-in member.
pub struct Chrome {
    pub merchant_name: String,
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    /// Which navigation entry is current.
    pub page: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard/message.html")]
struct MessagePage<'a> {
    chrome: Option<Chrome>,
    heading: &'a str,
    message: &'a str,
    link_href: &'a str,
    link_text: &'a str,
}

/// A page that says one thing, with a way on.
pub fn message(
    status: StatusCode,
    chrome: Option<Chrome>,
    heading: &str,
    message: &str,
    link: (&str, &str),
) -> Response {
    render(status, &MessagePage { chrome, heading, message, link_href: link.0, link_text: link.1 })
}

/// The 403 of a form whose CSRF token is missing or wrong.
pub fn csrf_refused() -> Response {
    message(
        StatusCode::FORBIDDEN,
        None,
        "Request refused",
        "This form did not come from your dashboard session, or it has expired (CSRF check failed). \
         Nothing was changed: reload the page and try again.",
        ("/dashboard", "Back to the dashboard"),
    )
}

/// The 500 page: the cause goes to the log with a reference, never to the page.
pub fn internal(error: impl std::fmt::Display) -> Response {
    let reference = uuid::Uuid::new_v4();
    tracing::error!(%reference, %error, "dashboard request failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "Something went wrong",
        &format!("An internal error occurred (reference {reference}); it has been logged."),
        ("/dashboard", "Back to the dashboard"),
    )
}

/// The 404 page (another merchant's things are not found either).
pub fn not_found(chrome: Option<Chrome>, what: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        chrome,
        "Not found",
        &format!("No such {what}."),
        ("/dashboard", "Back to the dashboard"),
    )
}

// === cookies ===

/// The value of cookie `name` in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A `Set-Cookie` value for the dashboard: `HttpOnly; SameSite=Strict; Path=/dashboard`, `Secure`
/// when the public URL is https; `max_age` seconds (0 deletes it).
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if state.config.settings.api.public_url.starts_with("https://") { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are hex")
}

// === forms ===

/// A posted form's fields (`application/x-www-form-urlencoded`); a name given several times
/// keeps every value (checkboxes).
pub struct Form {
    fields: HashMap<String, Vec<String>>,
}

impl Form {
    pub fn parse(body: &Bytes) -> Form {
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            fields.entry(name.into_owned()).or_default().push(value.into_owned());
        }
        Form { fields }
    }

    /// The first value of `name`, trimmed; empty when absent.
    pub fn text(&self, name: &str) -> String {
        self.fields.get(name).and_then(|v| v.first()).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    /// The first value of `name` as sent (passwords are not trimmed).
    pub fn raw(&self, name: &str) -> String {
        self.fields.get(name).and_then(|v| v.first()).cloned().unwrap_or_default()
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> &[String] {
        self.fields.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether the form's `csrf` field is `expected`.
    pub fn csrf_is(&self, expected: &str) -> bool {
        let sent = self.raw("csrf");
        !sent.is_empty() && members::same_secret(&sent, expected)
    }
}

/// The client's network address, for sign-in throttling.
pub fn client_address(parts_extensions: &axum::http::Extensions) -> String {
    parts_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical().to_string())
        .unwrap_or_else(|| "unknown".into())
}

// === the signed-in member ===

/// A page that refuses a request, to answer instead (boxed: a response is large).
pub type Refused = Box<Response>;

/// A request from a signed-in member of an active merchant. Without a valid session, the
/// rejection redirects to the sign-in page.
pub struct SignedIn {
    pub member: Member,
    pub merchant: Merchant,
    pub session: Session,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let to_sign_in = || secured(Redirect::to("/dashboard/login").into_response());
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else { return Err(to_sign_in()) };
        let Some((session, member)) = members::session(&state.store, &token).await.map_err(internal)? else {
            return Err(to_sign_in());
        };
        let mut conn = state.store.conn().await.map_err(internal)?;
        let merchant = merchants::get(&mut conn, member.merchant_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| internal("a member's merchant is missing"))?;
        if merchant.status != MerchantStatus::Active {
            return Err(message(
                StatusCode::FORBIDDEN,
                None,
                "Shop inactive",
                "This shop (merchant account) is inactive; ask the operator.",
                ("/dashboard/login", "Sign in"),
            ));
        }
        Ok(SignedIn { member, merchant, session })
    }
}

impl SignedIn {
    /// The page frame, with `page` the current navigation entry.
    pub fn chrome(&self, page: &'static str) -> Chrome {
        Chrome {
            merchant_name: self.merchant.display_name().to_owned(),
            email: self.member.email.clone(),
            role: self.member.role.as_str(),
            csrf: self.session.csrf_token.clone(),
            page,
        }
    }

    /// A 403 page unless the member's role allows `action`.
    pub fn require(&self, action: Action) -> Result<(), Refused> {
        if self.member.role.may(action) {
            return Ok(());
        }
        Err(Box::new(message(
            StatusCode::FORBIDDEN,
            Some(self.chrome("")),
            "Not allowed",
            &format!("Your role ({}) cannot do this; ask an owner of your team.", self.member.role),
            ("/dashboard", "Back to the dashboard"),
        )))
    }

    /// A posted form of this session: its fields, or the CSRF refusal.
    pub fn form(&self, body: &Bytes) -> Result<Form, Refused> {
        let form = Form::parse(body);
        if form.csrf_is(&self.session.csrf_token) { Ok(form) } else { Err(Box::new(csrf_refused())) }
    }

    /// The prologue of a form that changes something: [`Self::form`] (the CSRF token checked
    /// first, so a forged request learns nothing about the role), then [`Self::require`].
    pub fn form_for(&self, body: &Bytes, action: Action) -> Result<Form, Refused> {
        let form = self.form(body)?;
        self.require(action)?;
        Ok(form)
    }
}

/// Epoch milliseconds as `2026-12-07 05:01 UTC`.
pub fn when(ms: i64) -> String {
    let iso = depositd_core::time::iso8601(ms);
    // `2026-12-07T05:01:02Z` (or with fractions): date and minutes.
    match (iso.get(..10), iso.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => iso,
    }
}
