//! Settings, sign-in security: the signed-in member's own TOTP second factor.
//! `GET /dashboard/settings/security` (whether it is on), `POST .../totp/enrol` (a new secret,
//! shown once as an `otpauth://` URI, its QR code drawn here as inline SVG, and in base32),
//! `POST .../totp/confirm` (a current code puts it in force), `POST .../totp/disable` (a current
//! code turns it off; throttled like sign-in). Every role manages its own second factor. The
//! rules and the sealed secret are `depositd_core::members`'; each change is recorded with
//! `depositd_core::audit::record`.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::member::Action;
use depositd_core::members::{self, MemberError, TotpEnrolment};
use depositd_core::outbox::Subject;
use depositd_core::store::StoreError;
use secrecy::ExposeSecret;
use serde_json::json;

use super::{Chrome, SignedIn, internal, render, secured, when};
use crate::state::AppState;

const SECURITY: &str = "/dashboard/settings/security";

/// An enrolment as shown (once): the QR code, the URI and the secret to type in.
struct Shown {
    qr_svg: String,
    uri: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "dashboard/totp.html")]
struct SecurityPage {
    chrome: Option<Chrome>,
    csrf: String,
    enabled_since: Option<String>,
    enrolment: Option<Shown>,
    code_error: Option<String>,
    notice: Option<&'static str>,
}

impl SecurityPage {
    fn new(signed_in: &SignedIn) -> SecurityPage {
        SecurityPage {
            chrome: Some(signed_in.chrome("settings")),
            csrf: signed_in.session.csrf_token.clone(),
            enabled_since: signed_in.member.totp_enabled_at.map(when),
            enrolment: None,
            code_error: None,
            notice: None,
        }
    }
}

/// The QR code of `data` as an inline `<svg>` element.
fn qr_svg(data: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(data.as_bytes()).map_err(|e| e.to_string())?;
    let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).quiet_zone(true).build();
    // Without the XML declaration, inline in the page.
    Ok(svg.split_once("?>").map(|(_, svg)| svg.trim().to_owned()).unwrap_or(svg))
}

fn shown(enrolment: &TotpEnrolment) -> Result<Shown, String> {
    let uri = enrolment.uri.expose_secret().to_owned();
    Ok(Shown { qr_svg: qr_svg(&uri)?, uri, secret: enrolment.secret_base32.expose_secret().to_owned() })
}

/// What the authenticator app shows as the service.
fn issuer(signed_in: &SignedIn) -> String {
    format!("depositd {}", signed_in.merchant.display_name())
}

pub async fn page(State(_state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    render(StatusCode::OK, &SecurityPage::new(&signed_in))
}

pub async fn enrol(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::Read) {
        return *refused;
    }
    let mut page = SecurityPage::new(&signed_in);
    match members::totp_begin(&state.store, &state.webhook_secrets, &signed_in.member, &issuer(&signed_in)).await {
        Ok(enrolment) => match shown(&enrolment) {
            Ok(shown) => page.enrolment = Some(shown),
            Err(error) => return internal(error),
        },
        Err(error @ MemberError::TotpEnabled) => {
            page.code_error = Some(error.to_string());
            return render(StatusCode::CONFLICT, &page);
        }
        Err(error) => return internal(error),
    }
    render(StatusCode::OK, &page)
}

pub async fn confirm(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::Read) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let code = form.text("code");
    let outcome = async {
        let mut tx = state.store.begin().await?;
        members::totp_confirm(&mut tx, &state.webhook_secrets, &signed_in.member, &code).await?;
        audit::record(
            &mut tx,
            &signed_in.member,
            "member.totp_enable",
            Subject::new("member", signed_in.member.id),
            &json!({}),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, MemberError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to(SECURITY).into_response()),
        Err(error @ (MemberError::InvalidCode | MemberError::WrongCode)) => {
            // The enrolment under way is shown again with the error (it is not in force yet).
            let mut page = SecurityPage::new(&signed_in);
            match members::totp_pending(&state.store, &state.webhook_secrets, &signed_in.member, &issuer(&signed_in))
                .await
            {
                Ok(Some(enrolment)) => match shown(&enrolment) {
                    Ok(shown) => page.enrolment = Some(shown),
                    Err(error) => return internal(error),
                },
                Ok(None) => {}
                Err(error) => return internal(error),
            }
            page.code_error = Some(error.to_string());
            let status = if matches!(error, MemberError::InvalidCode) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            render(status, &page)
        }
        Err(error @ (MemberError::TotpEnabled | MemberError::TotpNotStarted)) => {
            let mut page = SecurityPage::new(&signed_in);
            page.code_error = Some(error.to_string());
            render(StatusCode::CONFLICT, &page)
        }
        Err(error) => internal(error),
    }
}

pub async fn disable(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::Read) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let code = form.text("code");
    let refused = |status: StatusCode, error: &MemberError| {
        let mut page = SecurityPage::new(&signed_in);
        page.code_error = Some(error.to_string());
        render(status, &page)
    };
    let client = super::sign_in::session_client(&signed_in);
    match members::check_code(&state.store, &state.webhook_secrets, &signed_in.member, &code, &client).await {
        Ok(()) => {}
        Err(error @ MemberError::InvalidCode) => return refused(StatusCode::BAD_REQUEST, &error),
        Err(error @ MemberError::WrongCode) => return refused(StatusCode::UNAUTHORIZED, &error),
        Err(error @ MemberError::TotpNotEnabled) => return refused(StatusCode::CONFLICT, &error),
        Err(error @ MemberError::Throttled { retry_after_secs, .. }) => {
            let mut response = refused(StatusCode::TOO_MANY_REQUESTS, &error);
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.into());
            return response;
        }
        Err(error) => return internal(error),
    }
    let outcome = async {
        let mut tx = state.store.begin().await?;
        members::totp_disable(&mut tx, &signed_in.member).await?;
        audit::record(
            &mut tx,
            &signed_in.member,
            "member.totp_disable",
            Subject::new("member", signed_in.member.id),
            &json!({}),
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, MemberError>(())
    }
    .await;
    match outcome {
        Ok(()) => {
            let mut page = SecurityPage::new(&signed_in);
            page.enabled_since = None;
            page.notice = Some("Two-factor authentication is off: sign-in asks for your password only.");
            render(StatusCode::OK, &page)
        }
        Err(error @ MemberError::TotpNotEnabled) => refused(StatusCode::CONFLICT, &error),
        Err(error) => internal(error),
    }
}
