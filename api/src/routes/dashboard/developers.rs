//! The Developers pages: API keys (`GET|POST /dashboard/developers/api-keys`,
//! `POST /dashboard/developers/api-keys/{id}/revoke`): list, create (the secret shown once, on
//! the page that answers the creation), revoke. The same lifecycle as the API's and the CLI's
//! (`depositd_core::api_keys`), with the member as the grantor.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::api_key::{ApiKey, KeyMode, Scope};
use depositd_core::api_keys::{self, Grantor, KeyError, NewKey};
use depositd_core::member::Action;
use depositd_core::store::{self, StoreError};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::{Chrome, Refused, SignedIn, internal, message, not_found, render, secured, when};
use crate::state::AppState;

/// A key as the list shows it.
struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    mode: &'static str,
    scopes: String,
    created: String,
    last_used: String,
    status: &'static str,
    active: bool,
    /// Whether this member may revoke it (its role allows every scope of the key).
    manageable: bool,
}

impl KeyRow {
    fn new(key: &ApiKey, grantor: Grantor<'_>) -> KeyRow {
        KeyRow {
            id: key.id,
            name: key.name.clone().unwrap_or_else(|| "(unnamed)".into()),
            prefix: key.display_prefix.clone(),
            mode: key.mode.as_str(),
            scopes: key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            created: when(key.created_at),
            last_used: key.last_used_at.map(when).unwrap_or_else(|| "never".into()),
            status: if key.revoked_at.is_some() { "revoked" } else { "active" },
            active: key.revoked_at.is_none(),
            manageable: grantor.may_manage(key.mode, &key.scopes).is_ok(),
        }
    }
}

/// The key just created, shown once.
struct Created {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "dashboard/api_keys.html")]
struct ApiKeysPage {
    chrome: Option<Chrome>,
    csrf: String,
    keys: Vec<KeyRow>,
    may_manage: bool,
    created: Option<Created>,
    form_name: String,
    /// Each scope a member may grant, and whether the form has it ticked.
    scope_choices: Vec<(&'static str, bool)>,
    name_error: Option<String>,
    mode_error: Option<String>,
    scopes_error: Option<String>,
}

/// Scopes this member's role may grant (`depositd_core::api_keys::scope_action`).
fn grantable(signed_in: &SignedIn) -> impl Iterator<Item = Scope> + '_ {
    Scope::ALL
        .into_iter()
        .filter(|s| api_keys::scope_action(*s).is_some_and(|action| signed_in.member.role.may(action)))
}

/// The member as the grantor of the keys it creates and revokes.
fn grantor(signed_in: &SignedIn) -> Grantor<'static> {
    Grantor::Member { user_id: signed_in.member.id, role: signed_in.member.role }
}

impl ApiKeysPage {
    fn new(signed_in: &SignedIn, keys: &[ApiKey]) -> ApiKeysPage {
        ApiKeysPage {
            chrome: Some(signed_in.chrome("api_keys")),
            csrf: signed_in.session.csrf_token.clone(),
            keys: keys.iter().map(|key| KeyRow::new(key, grantor(signed_in))).collect(),
            may_manage: signed_in.member.role.may(Action::ManageKeys),
            created: None,
            form_name: String::new(),
            scope_choices: grantable(signed_in).map(|s| (s.as_str(), Scope::MERCHANT.contains(&s))).collect(),
            name_error: None,
            mode_error: None,
            scopes_error: None,
        }
    }
}

async fn keys_of(state: &AppState, signed_in: &SignedIn) -> Result<Vec<ApiKey>, Refused> {
    let failed = |error: StoreError| Box::new(internal(error));
    let mut conn = state.store.conn().await.map_err(failed)?;
    let mut keys = store::api_keys::list(&mut conn, signed_in.merchant.id).await.map_err(failed)?;
    keys.reverse();
    Ok(keys)
}

pub async fn api_keys(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    match keys_of(&state, &signed_in).await {
        Ok(keys) => render(StatusCode::OK, &ApiKeysPage::new(&signed_in, &keys)),
        Err(response) => *response,
    }
}

pub async fn create_api_key(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageKeys) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let name = form.text("name");
    let mode = form.text("mode");
    let scope_words = form.all("scope");
    // Every field is checked; each error is shown next to its field.
    let name_error = (name.chars().count() > 100 || name.chars().any(char::is_control))
        .then(|| "the name must be at most 100 characters, without control characters".to_owned());
    let mode_parsed = mode.parse::<KeyMode>();
    let mode_error = mode_parsed.as_ref().err().map(|_| "choose test or live".to_owned());
    let mut scopes = Vec::new();
    let mut scopes_error = None;
    for word in scope_words {
        match word.parse::<Scope>() {
            Ok(scope) => scopes.push(scope),
            Err(message) => scopes_error = Some(message),
        }
    }
    let mut created = None;
    let mut forbidden = false;
    if name_error.is_none() && mode_error.is_none() && scopes_error.is_none() {
        let mode = mode_parsed.clone().unwrap_or(KeyMode::Test);
        let new = NewKey { mode, scopes: &scopes, name: (!name.is_empty()).then_some(name.as_str()) };
        let outcome = async {
            let mut tx = state.store.begin().await?;
            let made = api_keys::create(&mut tx, signed_in.merchant.id, grantor(&signed_in), new).await?;
            tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
            Ok::<_, KeyError>(made)
        }
        .await;
        match outcome {
            Ok((key, secret)) => {
                created = Some(Created {
                    name: key.name.clone().unwrap_or_else(|| key.display_prefix.clone()),
                    secret: secret.expose_secret().to_owned(),
                });
            }
            Err(KeyError::Store(error)) => return internal(error),
            Err(error) => {
                forbidden = matches!(error, KeyError::RoleLacks { .. } | KeyError::OperatorScope);
                scopes_error = Some(error.to_string());
            }
        }
    }
    let keys = match keys_of(&state, &signed_in).await {
        Ok(keys) => keys,
        Err(response) => return *response,
    };
    let mut page = ApiKeysPage::new(&signed_in, &keys);
    let failed = created.is_none();
    if failed {
        page.form_name = name;
        page.scope_choices = grantable(&signed_in).map(|s| (s.as_str(), scopes.contains(&s))).collect();
    }
    page.created = created;
    page.name_error = name_error;
    page.mode_error = mode_error;
    page.scopes_error = scopes_error;
    // The secret is on this answer only: it is not cached, and a reload does not post again
    // (browsers ask first).
    let status = match (failed, forbidden) {
        (false, _) => StatusCode::CREATED,
        (true, true) => StatusCode::FORBIDDEN,
        (true, false) => StatusCode::BAD_REQUEST,
    };
    render(status, &page)
}

pub async fn revoke_api_key(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::ManageKeys) {
        return *refused;
    }
    let Ok(id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("api_keys")), "API key") };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        api_keys::revoke(&mut tx, signed_in.merchant.id, id, grantor(&signed_in)).await?;
        tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
        Ok::<_, KeyError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to("/dashboard/developers/api-keys").into_response()),
        Err(KeyError::NotFound) => not_found(Some(signed_in.chrome("api_keys")), "API key"),
        Err(KeyError::Store(error)) => internal(error),
        // Not this member's to revoke (a scope beyond its role, or `operator`): nothing changed.
        Err(error) => message(
            StatusCode::FORBIDDEN,
            Some(signed_in.chrome("api_keys")),
            "Not allowed",
            &format!("{error}. The key was not revoked."),
            ("/dashboard/developers/api-keys", "Back to API keys"),
        ),
    }
}
