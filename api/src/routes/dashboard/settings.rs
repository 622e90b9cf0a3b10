//! The Settings page (`/dashboard/settings`): the company name (the checkout's default title and
//! footer), the default return URL (where the checkout sends a payer once paid when the invoice
//! names none) and the checkout origins (whose browser code may call the payer API). Every role
//! reads it; only an owner changes it (`Action::ManageMerchant`), recorded as
//! `merchant.update_settings`. The team's page (`/dashboard/settings/team`) is linked from here.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::event::Subject;
use depositd_core::member::Action;
use depositd_core::merchant::{self, MerchantSettings};
use depositd_core::store::{StoreError, merchants};
use serde_json::json;

use super::{Chrome, SignedIn, internal, render, secured};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

#[derive(Template)]
#[template(path = "dashboard/settings.html")]
struct SettingsPage {
    chrome: Option<Chrome>,
    csrf: String,
    may_manage: bool,
    saved: bool,
    merchant_name: String,
    company_name: String,
    default_return_url: String,
    checkout_origins: String,
    company_name_error: Option<String>,
    default_return_url_error: Option<String>,
    checkout_origins_error: Option<String>,
}

impl SettingsPage {
    fn new(signed_in: &SignedIn) -> SettingsPage {
        let m = &signed_in.merchant;
        SettingsPage {
            chrome: Some(signed_in.chrome("settings")),
            csrf: signed_in.session.csrf_token.clone(),
            may_manage: signed_in.member.role.may(Action::ManageMerchant),
            saved: false,
            merchant_name: m.name.clone(),
            company_name: m.company_name.clone().unwrap_or_default(),
            default_return_url: m.default_return_url.clone().unwrap_or_default(),
            checkout_origins: m.checkout_origins.join("\n"),
            company_name_error: None,
            default_return_url_error: None,
            checkout_origins_error: None,
        }
    }
}

/// `GET /dashboard/settings` (`?saved` after a change).
pub async fn page(signed_in: SignedIn, uri: axum::http::Uri) -> Response {
    let mut page = SettingsPage::new(&signed_in);
    page.saved = uri.query() == Some("saved");
    render(StatusCode::OK, &page)
}

/// `POST /dashboard/settings`: every field checked, each error next to its field.
pub async fn save(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageMerchant) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let mut page = SettingsPage::new(&signed_in);
    page.company_name = form.text("company_name");
    page.default_return_url = form.text("default_return_url");
    page.checkout_origins = form.text("checkout_origins");
    let company_name = merchant::company_name(&page.company_name).map_err(|e| page.company_name_error = Some(e));
    let return_url = if page.default_return_url.is_empty() {
        Ok(None)
    } else {
        let allow_http = state.config.settings.invoices.allow_http_urls;
        match validate::url("default_return_url", Some(page.default_return_url.clone()), allow_http) {
            Ok(url) => Ok(url),
            Err(ApiError::InvalidRequest { message, .. }) => {
                page.default_return_url_error = Some(message);
                Err(())
            }
            Err(other) => return internal(other),
        }
    };
    let origins = merchant::checkout_origins(&page.checkout_origins)
        .map_err(|e| page.checkout_origins_error = Some(format!("checkout_origins: {e}")));
    let (Ok(company_name), Ok(default_return_url), Ok(checkout_origins)) = (company_name, return_url, origins) else {
        return render(StatusCode::BAD_REQUEST, &page);
    };
    let settings = MerchantSettings { company_name, default_return_url, checkout_origins };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        merchants::set_settings(&mut tx, signed_in.merchant.id, &settings).await?;
        let details = json!({
            "company_name": settings.company_name,
            "default_return_url": settings.default_return_url,
            "checkout_origins": settings.checkout_origins,
        });
        audit::record(
            &mut tx,
            &signed_in.member,
            "merchant.update_settings",
            Subject::new("merchant", signed_in.merchant.id),
            &details,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, StoreError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to("/dashboard/settings?saved").into_response()),
        Err(error) => internal(error),
    }
}
