//! `GET|POST /api/v1/api-keys`, `GET /api/v1/api-keys/{id}`, `POST /api/v1/api-keys/{id}/revoke`:
//! key rotation a merchant can script. The rules (a key grants only what it holds, in its own
//! mode; never `operator`) are `depositd_core::api_keys`'; this parses, authorizes, calls, maps.
//!
//! The secret is in the answer that created the key only. An `Idempotency-Key` replay answers
//! the same key without its secret: the secret is never stored, not even in the idempotency
//! record (a client that lost the first answer revokes that key and creates another).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::{ApiKeyResource, KeyMode, Scope};
use depositd_core::api_keys::{self, Grantor, KeyError, NewKey};
use depositd_core::store::{self, StoreError};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, Page, PathId};
use crate::idempotency::{self, Create, Creation};
use crate::query::{self, List, ListQuery};
use crate::state::AppState;
use crate::validate;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key may do: at least one scope, each one the creating key holds itself
    /// (`operator` never).
    pub scopes: Vec<String>,
    /// `test` or `live`; default: the creating key's mode (the only one it may create).
    pub mode: Option<String>,
    /// For humans, e.g. "billing server"; at most 100 characters.
    pub name: Option<String>,
}

impl Creation for CreateApiKey {
    const SCOPE: Scope = Scope::ApiKeysWrite;
    const ENDPOINT: &'static str = "POST /api/v1/api-keys";
}

impl From<KeyError> for ApiError {
    fn from(error: KeyError) -> Self {
        let message = error.to_string();
        match error {
            KeyError::NoScopes => ApiError::invalid("scopes", "parameter_missing", message),
            KeyError::OperatorScope => {
                ApiError::Forbidden { code: "scope_not_grantable", message, param: Some("scopes".into()) }
            }
            KeyError::ScopeNotHeld(_) => {
                ApiError::Forbidden { code: "scope_not_held", message, param: Some("scopes".into()) }
            }
            KeyError::ModeNotHeld { .. } => {
                ApiError::Forbidden { code: "key_mode_mismatch", message, param: Some("mode".into()) }
            }
            // A dashboard member's refusal (the API's grantor is a key, never a member).
            KeyError::RoleLacks { .. } => {
                ApiError::Forbidden { code: "scope_not_grantable", message, param: Some("scopes".into()) }
            }
            KeyError::NotFound => ApiError::not_found("API key"),
            KeyError::Store(e) => e.into(),
        }
    }
}

fn scopes(values: Vec<String>) -> Result<Vec<Scope>, ApiError> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            value
                .parse::<Scope>()
                .map_err(|message| ApiError::invalid(format!("scopes[{i}]"), "invalid_scope", message))
        })
        .collect()
}

#[utoipa::path(
    post, path = "/api/v1/api-keys", tag = "api keys",
    params(("Idempotency-Key" = Option<String>, Header, description = "Safe retries")),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; `secret` is shown this once (an Idempotency-Key replay answers the key without it)", body = ApiKeyResource),
        (status = 400, description = "Invalid or missing scopes, mode or name", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks api_keys:write, or asks for a scope it lacks itself (scope_not_held), the operator scope (scope_not_grantable) or the other mode (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency conflict", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<CreateApiKey>,
) -> Result<Response, ApiError> {
    let scopes = scopes(request.scopes)?;
    let mode = match request.mode {
        Some(mode) => {
            mode.parse::<KeyMode>().map_err(|message| ApiError::invalid("mode", "invalid_parameter", message))?
        }
        None => auth.key.mode,
    };
    let name = validate::text("name", request.name, 100)?;
    let grantor = Grantor::Key(&auth.key);
    // Refused before anything is claimed or written.
    if scopes.is_empty() {
        return Err(KeyError::NoScopes.into());
    }
    grantor.may_manage(mode, &scopes)?;

    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let new = NewKey { mode, scopes: &scopes, name: name.as_deref() };
    let (key, secret) = api_keys::create(&mut tx, auth.merchant.id, grantor, new).await?;
    let stored = serde_json::to_string(&ApiKeyResource::build(&key, None)).map_err(ApiError::internal)?;
    let resource = ApiKeyResource::build(&key, Some(secret.expose_secret().to_owned()));
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    idempotency::commit_secret(guard, tx, StatusCode::CREATED, stored, body).await
}

#[utoipa::path(
    get, path = "/api/v1/api-keys/{id}", tag = "api keys",
    params(("id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, description = "The key (never its secret)", body = ApiKeyResource),
        (status = 404, description = "No such API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<ApiKeyResource>, ApiError> {
    auth.require(Scope::ApiKeysRead)?;
    let id = extract::path_id("API key", &id)?;
    let mut conn = state.store.conn().await?;
    let key =
        store::api_keys::get(&mut conn, auth.merchant.id, id).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Json(ApiKeyResource::build(&key, None)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<ApiKeyResource>,
    has_more: bool,
}

/// The query of `GET /api/v1/api-keys`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeys {
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListApiKeys {
    const SCOPE: Scope = Scope::ApiKeysRead;
}

#[utoipa::path(
    get, path = "/api/v1/api-keys", tag = "api keys",
    params(ListApiKeys),
    responses((status = 200, description = "The merchant's keys, revoked ones too, newest first", body = ApiKeyList)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListApiKeys>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let mut conn = state.store.conn().await?;
    let found = store::api_keys::page(&mut conn, auth.merchant.id, page.starting_after, page.fetch()).await?;
    let (found, has_more) = page.finish(found);
    let data = found.iter().map(|k| ApiKeyResource::build(k, None)).collect();
    Ok(Json(ApiKeyList { object: "list", data, has_more }))
}

#[utoipa::path(
    post, path = "/api/v1/api-keys/{id}/revoke", tag = "api keys",
    params(("id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, description = "The revoked key (revoking again changes nothing); it stops authenticating within a second", body = ApiKeyResource),
        (status = 403, description = "The key lacks api_keys:write, or the key to revoke has a scope it lacks (scope_not_held), the operator scope (scope_not_grantable) or the other mode (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 404, description = "No such API key", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn revoke(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<ApiKeyResource>, ApiError> {
    auth.require(Scope::ApiKeysWrite)?;
    let id = extract::path_id("API key", &id)?;
    let mut tx = state.store.begin().await?;
    let key = api_keys::revoke(&mut tx, auth.merchant.id, id, Grantor::Key(&auth.key)).await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(ApiKeyResource::build(&key, None)))
}
