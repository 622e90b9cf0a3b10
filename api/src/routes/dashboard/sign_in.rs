//! Signing in and out, and accepting an invite: `GET|POST /dashboard/login`,
//! `POST /dashboard/logout`, `POST /dashboard/logout-everywhere`,
//! `GET|POST /dashboard/invite/{token}`, and the TOTP step of a sign-in
//! (`GET|POST /dashboard/login/code`: a right password of a member with TOTP on sets a
//! short-lived challenge cookie and asks for the code). The rules (throttling, invites,
//! sessions, codes) are `depositd_core::members`'.
//!
//! Also here: [`SignedIn::reauthenticate`], the password (or TOTP code) asked again before a
//! money move.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::members::{self, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, MemberError, SignInStep};
use depositd_core::store::merchants;
use secrecy::{ExposeSecret, SecretString};

use super::{
    CSRF_COOKIE, Chrome, Form, Refused, SESSION_COOKIE, SignedIn, cookie, csrf_refused, internal, message, render,
    secured, set_cookie,
};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "dashboard/login.html")]
struct LoginPage {
    chrome: Option<Chrome>,
    csrf: String,
    email: String,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// The challenge cookie's name: a sign-in whose TOTP code is awaited.
pub const CHALLENGE_COOKIE: &str = "depositd_challenge";

#[derive(Template)]
#[template(path = "dashboard/totp_code.html")]
struct CodePage {
    chrome: Option<Chrome>,
    csrf: String,
    email: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/invite.html")]
struct InvitePage {
    chrome: Option<Chrome>,
    csrf: String,
    token: String,
    merchant_name: String,
    email: String,
    role: &'static str,
    min_chars: usize,
    max_chars: usize,
    error: Option<String>,
}

/// The pre-session CSRF token: the request's cookie, or a new one (to be set with the form).
fn form_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE) {
        Some(token) if token.len() == 64 => (token, false),
        _ => (members::random_token(), true),
    }
}

/// A page carrying a pre-session form, with its CSRF cookie set when it is new.
fn with_form_cookie(state: &AppState, mut response: Response, token: &str, new: bool) -> Response {
    if new {
        response.headers_mut().append(header::SET_COOKIE, set_cookie(state, CSRF_COOKIE, token, 3600));
    }
    response
}

/// Whether a pre-session form's `csrf` field matches its cookie.
fn pre_session_csrf(headers: &HeaderMap, form: &Form) -> bool {
    cookie(headers, CSRF_COOKIE).is_some_and(|expected| form.csrf_is(&expected))
}

pub async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, new) = form_token(&headers);
    let page = LoginPage { chrome: None, csrf: csrf.clone(), email: String::new(), error: None, notice: None };
    with_form_cookie(&state, render(StatusCode::OK, &page), &csrf, new)
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if !pre_session_csrf(&headers, &form) {
        return csrf_refused();
    }
    let email = form.text("email");
    let password = SecretString::from(form.raw("password"));
    let client = super::client_address(&request_extensions);
    let refused = |status: StatusCode, error: String| {
        let (csrf, new) = form_token(&headers);
        let page =
            LoginPage { chrome: None, csrf: csrf.clone(), email: email.clone(), error: Some(error), notice: None };
        with_form_cookie(&state, render(status, &page), &csrf, new)
    };
    match members::sign_in(&state.store, &email, &password, &client).await {
        Ok(SignInStep::Session(_, opened)) => session_opened(&state, &opened),
        Ok(SignInStep::SecondFactor(member, challenge)) => {
            let (csrf, new) = form_token(&headers);
            let page = CodePage { chrome: None, csrf: csrf.clone(), email: member.email, error: None };
            let mut response = with_form_cookie(&state, render(StatusCode::OK, &page), &csrf, new);
            let max_age = members::CHALLENGE_VALIDITY.as_secs();
            response
                .headers_mut()
                .append(header::SET_COOKIE, set_cookie(&state, CHALLENGE_COOKIE, challenge.expose_secret(), max_age));
            response
        }
        Err(error @ MemberError::WrongCredentials) => refused(StatusCode::UNAUTHORIZED, error.to_string()),
        Err(error @ MemberError::Throttled { retry_after_secs, .. }) => {
            let mut response = refused(StatusCode::TOO_MANY_REQUESTS, error.to_string());
            response.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
            response
        }
        Err(error @ MemberError::Busy) => busy(refused(StatusCode::SERVICE_UNAVAILABLE, error.to_string())),
        Err(error) => internal(error),
    }
}

/// The answer to a sign-in that opened a session: its cookie set, the pre-session ones deleted,
/// to the overview.
fn session_opened(state: &AppState, opened: &members::OpenedSession) -> Response {
    let mut response = secured(Redirect::to("/dashboard").into_response());
    let max_age = members::SESSION_LIFETIME.as_secs();
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(state, SESSION_COOKIE, opened.token.expose_secret(), max_age));
    headers.append(header::SET_COOKIE, set_cookie(state, CSRF_COOKIE, "", 0));
    headers.append(header::SET_COOKIE, set_cookie(state, CHALLENGE_COOKIE, "", 0));
    response
}

/// Back to the sign-in page, with `error` (a challenge missing or expired).
fn sign_in_again(state: &AppState, headers: &HeaderMap, error: Option<String>) -> Response {
    let (csrf, new) = form_token(headers);
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let page = LoginPage { chrome: None, csrf: csrf.clone(), email: String::new(), error, notice: None };
    let mut response = with_form_cookie(state, render(status, &page), &csrf, new);
    response.headers_mut().append(header::SET_COOKIE, set_cookie(state, CHALLENGE_COOKIE, "", 0));
    response
}

/// `GET /dashboard/login/code`: the code form of a sign-in under way (else the sign-in page).
pub async fn code_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(challenge) = cookie(&headers, CHALLENGE_COOKIE) else {
        return secured(Redirect::to("/dashboard/login").into_response());
    };
    match members::challenged_member(&state.store, &challenge).await {
        Ok(member) => {
            let (csrf, new) = form_token(&headers);
            let page = CodePage { chrome: None, csrf: csrf.clone(), email: member.email, error: None };
            with_form_cookie(&state, render(StatusCode::OK, &page), &csrf, new)
        }
        Err(error @ MemberError::ChallengeExpired) => sign_in_again(&state, &headers, Some(error.to_string())),
        Err(error) => internal(error),
    }
}

/// `POST /dashboard/login/code`: the TOTP code of a sign-in under way.
pub async fn sign_in_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    request_extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    let form = Form::parse(&body);
    if !pre_session_csrf(&headers, &form) {
        return csrf_refused();
    }
    let Some(challenge) = cookie(&headers, CHALLENGE_COOKIE) else {
        return sign_in_again(&state, &headers, Some(MemberError::ChallengeExpired.to_string()));
    };
    let client = super::client_address(&request_extensions);
    let code = form.text("code");
    let refused = |status: StatusCode, error: &MemberError, email: String| {
        let (csrf, new) = form_token(&headers);
        let page = CodePage { chrome: None, csrf: csrf.clone(), email, error: Some(error.to_string()) };
        with_form_cookie(&state, render(status, &page), &csrf, new)
    };
    match members::sign_in_second_factor(&state.store, &state.webhook_secrets, &challenge, &code, &client).await {
        Ok((_, opened)) => session_opened(&state, &opened),
        Err(error @ MemberError::ChallengeExpired) => sign_in_again(&state, &headers, Some(error.to_string())),
        Err(error @ (MemberError::InvalidCode | MemberError::WrongCode | MemberError::Throttled { .. })) => {
            let email = members::challenged_member(&state.store, &challenge).await.map(|m| m.email).unwrap_or_default();
            let status = match error {
                MemberError::InvalidCode => StatusCode::BAD_REQUEST,
                MemberError::WrongCode => StatusCode::UNAUTHORIZED,
                _ => StatusCode::TOO_MANY_REQUESTS,
            };
            let mut response = refused(status, &error, email);
            if let MemberError::Throttled { retry_after_secs, .. } = error {
                response.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
            }
            response
        }
        Err(error) => internal(error),
    }
}

/// The throttle's "client" of a signed-in request: its session (re-authentication and TOTP
/// codes count per account, and per session as their client).
pub fn session_client(signed_in: &SignedIn) -> String {
    format!("session:{}", signed_in.session.id_hash.get(..16).unwrap_or_default())
}

/// Why [`SignedIn::reauthenticate`] refused.
pub enum ReauthError {
    /// Show `message` next to the form's `password` field (`id="password-error"`), with `status`
    /// (401 wrong, 429 throttled, 503 busy).
    Field { status: StatusCode, message: String },
    /// Answer this page instead (an internal error, logged).
    Page(Refused),
}

impl SignedIn {
    /// Re-authentication before a money move (a payout, a refund): checks the form's `password`
    /// field against the member's password, or, when the member has TOTP on, accepts a current
    /// code from the authenticator app in that same field (`depositd_core::members::reauthenticate`,
    /// throttled like sign-in: a wrong answer counts as a failed sign-in).
    ///
    /// Signature: `pub async fn reauthenticate(&self, state: &AppState, form: &Form) -> Result<(), ReauthError>`.
    /// Call it after [`SignedIn::form`] and [`SignedIn::require`]; on
    /// `Err(ReauthError::Field { status, message })` render the form again with `message` next to
    /// its `password` field, with `status`; on `Err(ReauthError::Page(page))` answer `*page`.
    pub async fn reauthenticate(&self, state: &AppState, form: &Form) -> Result<(), ReauthError> {
        let secret = SecretString::from(form.raw("password"));
        let client = session_client(self);
        match members::reauthenticate(&state.store, &state.webhook_secrets, &self.member, &secret, &client).await {
            Ok(()) => Ok(()),
            Err(error @ MemberError::WrongPassword { .. }) => {
                Err(ReauthError::Field { status: StatusCode::UNAUTHORIZED, message: error.to_string() })
            }
            Err(error @ MemberError::Throttled { .. }) => {
                Err(ReauthError::Field { status: StatusCode::TOO_MANY_REQUESTS, message: error.to_string() })
            }
            Err(error @ MemberError::Busy) => {
                Err(ReauthError::Field { status: StatusCode::SERVICE_UNAVAILABLE, message: error.to_string() })
            }
            Err(error) => Err(ReauthError::Page(Box::new(internal(error)))),
        }
    }
}

/// The response that ends a browser's session: the cookie deleted, to the sign-in page.
fn signed_out(state: &AppState) -> Response {
    let mut response = secured(Redirect::to("/dashboard/login").into_response());
    response.headers_mut().append(header::SET_COOKIE, set_cookie(state, SESSION_COOKIE, "", 0));
    response
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap, signed_in: SignedIn, body: Bytes) -> Response {
    if let Err(refused) = signed_in.form(&body) {
        return *refused;
    }
    if let Some(token) = cookie(&headers, SESSION_COOKIE)
        && let Err(error) = members::sign_out(&state.store, &token).await
    {
        return internal(error);
    }
    signed_out(&state)
}

pub async fn logout_everywhere(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    if let Err(refused) = signed_in.form(&body) {
        return *refused;
    }
    if let Err(error) = members::sign_out_everywhere(&state.store, signed_in.member.id).await {
        return internal(error);
    }
    signed_out(&state)
}

/// The refusal page of an invite that cannot be used (unknown, used, expired).
fn invite_refused(error: MemberError) -> Response {
    match error {
        MemberError::InviteUnknown | MemberError::InviteUsed | MemberError::InviteExpired => {
            message(StatusCode::GONE, None, "Invite not valid", &error.to_string(), ("/dashboard/login", "Sign in"))
        }
        MemberError::Busy => busy(message(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "Busy",
            &error.to_string(),
            ("/dashboard/login", "Sign in"),
        )),
        other => internal(other),
    }
}

/// A 503 "busy checking passwords" answer, with when to try again.
fn busy(mut response: Response) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, 5u64.into());
    response
}

async fn invite_form(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let mut conn = match state.store.conn().await {
        Ok(conn) => conn,
        Err(error) => return internal(error),
    };
    let member = match members::invited_member(&mut conn, token).await {
        Ok(member) => member,
        Err(error) => return invite_refused(error),
    };
    let merchant_name = match merchants::get(&mut conn, member.merchant_id).await {
        Ok(Some(merchant)) => merchant.display_name().to_owned(),
        Ok(None) => return internal("an invited member's merchant is missing"),
        Err(error) => return internal(error),
    };
    let (csrf, new) = form_token(headers);
    let page = InvitePage {
        chrome: None,
        csrf: csrf.clone(),
        token: token.to_owned(),
        merchant_name,
        email: member.email,
        role: member.role.as_str(),
        min_chars: MIN_PASSWORD_CHARS,
        max_chars: MAX_PASSWORD_CHARS,
        error,
    };
    with_form_cookie(state, render(status, &page), &csrf, new)
}

/// Invite tokens are 64 hex digits; anything else is not one (and never reaches a query).
fn well_formed_token(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn invite_page(State(state): State<AppState>, headers: HeaderMap, Path(token): Path<String>) -> Response {
    if !well_formed_token(&token) {
        return invite_refused(MemberError::InviteUnknown);
    }
    invite_form(&state, &headers, &token, StatusCode::OK, None).await
}

pub async fn accept_invite(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    if !well_formed_token(&token) {
        return invite_refused(MemberError::InviteUnknown);
    }
    let form = Form::parse(&body);
    if !pre_session_csrf(&headers, &form) {
        return csrf_refused();
    }
    let password = SecretString::from(form.raw("password"));
    match members::accept_invite(&state.store, &token, &password).await {
        Ok(member) => {
            let page = LoginPage {
                chrome: None,
                csrf: form.raw("csrf"),
                email: member.email,
                error: None,
                notice: Some("Your password is set. Sign in to continue."),
            };
            render(StatusCode::OK, &page)
        }
        Err(error @ MemberError::InvalidPassword) => {
            invite_form(&state, &headers, &token, StatusCode::BAD_REQUEST, Some(error.to_string())).await
        }
        Err(error) => invite_refused(error),
    }
}
