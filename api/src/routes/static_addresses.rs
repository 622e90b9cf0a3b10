//! `POST /api/v1/static-addresses`, `GET /api/v1/static-addresses[/{id}]`,
//! `POST /api/v1/static-addresses/{id}/disable`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::api_key::Scope;
use depositd_core::static_address::{StaticAddress, StaticAddressResource, StaticAddressStatus};
use depositd_core::static_addresses::{self as static_address_lifecycle, NewStaticAddress};
use depositd_core::store::{StoreError, static_addresses};
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
pub struct CreateStaticAddress {
    pub customer_id: String,
    pub chain: Option<String>,
    pub asset: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub callback_url: Option<String>,
}

impl Creation for CreateStaticAddress {
    const SCOPE: Scope = Scope::InvoicesWrite;
    const ENDPOINT: &'static str = "POST /api/v1/static-addresses";
}

fn resource(state: &AppState, address: &StaticAddress) -> StaticAddressResource {
    static_address_lifecycle::resource(&state.config, address)
}

#[utoipa::path(
    post, path = "/api/v1/static-addresses", tag = "static addresses",
    params(("Idempotency-Key" = Option<String>, Header, description = "Safe retries")),
    request_body = CreateStaticAddress,
    responses(
        (status = 201, description = "Static address created", body = StaticAddressResource),
        (status = 400, description = "Invalid parameters", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks invoices:write, or its mode does not match the chain (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 409, description = "Idempotency conflict", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    Create { auth, request, guard, .. }: Create<CreateStaticAddress>,
) -> Result<Response, ApiError> {
    let customer_id = validate::text("customer_id", Some(request.customer_id), 128)?.unwrap_or_default();
    let chain_param = request.chain.is_some().then_some("chain");
    let (chain, asset) = validate::chain_and_asset(&state.config, request.chain, request.asset, auth.key.mode)?;
    auth.may_create_on(chain, chain_param)?;
    let metadata = validate::metadata(request.metadata)?;
    let callback_url = validate::callback_url("callback_url", request.callback_url, &state.config)?;

    let mut tx = idempotency::begin(&state.store, &guard).await?;
    let new = NewStaticAddress { customer_id, chain, asset, metadata, callback_url };
    let (_, resource) = static_address_lifecycle::create(&mut tx, &state.wallet, auth.merchant.id, new).await?;
    let body = serde_json::to_string(&resource).map_err(ApiError::internal)?;
    idempotency::commit(guard, tx, StatusCode::CREATED, body).await
}

#[utoipa::path(
    get, path = "/api/v1/static-addresses/{id}", tag = "static addresses",
    params(("id" = Uuid, Path, description = "Static address id")),
    responses(
        (status = 200, description = "The static address", body = StaticAddressResource),
        (status = 404, description = "No such static address", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<StaticAddressResource>, ApiError> {
    auth.require(Scope::InvoicesRead)?;
    let id = extract::path_id("static address", &id)?;
    let mut conn = state.store.conn().await?;
    let address = static_addresses::get(&mut conn, auth.merchant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("static address"))?;
    Ok(Json(resource(&state, &address)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StaticAddressList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<StaticAddressResource>,
    has_more: bool,
}

/// The query of `GET /api/v1/static-addresses`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListStaticAddresses {
    /// Only this customer's addresses
    customer_id: Option<String>,
    /// active or disabled
    #[serde(default, deserialize_with = "query::word")]
    status: Option<StaticAddressStatus>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListStaticAddresses {
    const SCOPE: Scope = Scope::InvoicesRead;
}

#[utoipa::path(
    get, path = "/api/v1/static-addresses", tag = "static addresses",
    params(ListStaticAddresses),
    responses((status = 200, description = "Static addresses, newest first", body = StaticAddressList)),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListStaticAddresses>,
) -> Result<Json<StaticAddressList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let customer_id = query.customer_id.as_deref();
    let mut conn = state.store.conn().await?;
    let found = static_addresses::list(
        &mut conn,
        auth.merchant.id,
        customer_id,
        query.status,
        page.starting_after,
        page.fetch(),
    )
    .await?;
    let (found, has_more) = page.finish(found);
    let data = found.iter().map(|a| resource(&state, a)).collect();
    Ok(Json(StaticAddressList { object: "list", data, has_more }))
}

#[utoipa::path(
    post, path = "/api/v1/static-addresses/{id}/disable", tag = "static addresses",
    params(("id" = Uuid, Path, description = "Static address id")),
    responses(
        (status = 200, description = "The disabled static address", body = StaticAddressResource),
        (status = 404, description = "No such static address", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn disable(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<StaticAddressResource>, ApiError> {
    auth.require(Scope::InvoicesWrite)?;
    let id = extract::path_id("static address", &id)?;
    let mut tx = state.store.begin().await?;
    let disabled = static_address_lifecycle::disable(&mut tx, &state.config, auth.merchant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("static address"))?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Json(disabled.resource))
}
