//! The operator API: transfers in suspense across every merchant, and their resolution
//! (`depositd_core::resolutions`, which `depositd deposits resolve` calls too). A key needs the
//! `operator` scope, which no key has unless `depositd api-key create --scope operator` gave it.
//!
//! - `GET /api/v1/operator/deposits?state=rejected`: deposits in a state, every merchant's
//!   and none's (a pooled address no one was given), oldest first.
//! - `POST /api/v1/operator/deposits/{id}/resolve`: resolve one, once. The same body again is
//!   the same resolution (200, nothing done twice); another resolution of it is a 409.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use depositd_core::api_key::Scope;
use depositd_core::crediting;
use depositd_core::deposit::{DepositResource, DepositState};
use depositd_core::resolution::ResolutionResource;
use depositd_core::resolutions::{self, ResolveError, ResolveRequest, Target};
use depositd_core::store::deposits;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, PathId};
use crate::query::{List, ListQuery};
use crate::state::AppState;
use crate::validate;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OperatorDepositList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<DepositResource>,
}

/// The query of `GET /api/v1/operator/deposits`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperatorListDeposits {
    /// `rejected` (in suspense; the default), `detected`, `confirmed`, `reorged` or `reversed`
    #[serde(default, deserialize_with = "crate::query::word")]
    #[param(value_type = Option<String>)]
    state: Option<DepositState>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "crate::query::limit")]
    limit: Option<u32>,
}

impl ListQuery for OperatorListDeposits {
    const SCOPE: Scope = Scope::Operator;
}

#[utoipa::path(
    get, path = "/api/v1/operator/deposits", tag = "operator",
    params(OperatorListDeposits),
    responses(
        (status = 200, description = "Deposits in the state, oldest first, every merchant's", body = OperatorDepositList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks the operator scope, or its mode does not match the deposit's chain (key_mode_mismatch)", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { query, .. }: List<OperatorListDeposits>,
) -> Result<Json<OperatorDepositList>, ApiError> {
    let mut conn = state.store.conn().await?;
    let found =
        deposits::list_in_state(&mut conn, query.state.unwrap_or(DepositState::Rejected), query.limit.unwrap_or(20))
            .await?;
    Ok(Json(OperatorDepositList { object: "list", data: found.iter().map(DepositResource::build).collect() }))
}

/// What a resolution does with the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResolveAction {
    /// Credit it to `invoice_id` (same chain and asset), by the invoice's rules.
    CreditInvoice,
    /// Credit it to `merchant_id`'s balance, less the merchant's fee.
    CreditMerchant,
    /// Send it back from the treasury: to `destination`, else to the transfer's sender.
    Refund,
    /// The operator's revenue.
    Revenue,
}

/// What to do with a transfer in suspense.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveDeposit {
    action: ResolveAction,
    /// The invoice to credit (`credit_invoice` only)
    invoice_id: Option<Uuid>,
    /// The merchant to credit (`credit_merchant` only)
    merchant_id: Option<Uuid>,
    /// A refund's recipient (`refund` only; the transfer's sender when absent)
    destination: Option<String>,
    /// Why (recorded with the resolution and in `deposit.resolved`)
    reason: String,
}

fn target(request: &ResolveDeposit) -> Result<Target, ApiError> {
    let action = format!("{:?}", request.action).to_lowercase();
    let needs =
        |param: &str| ApiError::invalid(param, "parameter_missing", format!("{param} is required for this action"));
    let unexpected = |param: &str| {
        ApiError::invalid(param, "invalid_parameter", format!("{param} does not apply to this action ({action})"))
    };
    let target = match request.action {
        ResolveAction::CreditInvoice => Target::CreditInvoice(request.invoice_id.ok_or_else(|| needs("invoice_id"))?),
        ResolveAction::CreditMerchant => {
            Target::CreditMerchant(request.merchant_id.ok_or_else(|| needs("merchant_id"))?)
        }
        ResolveAction::Refund => Target::Refund(request.destination.clone()),
        ResolveAction::Revenue => Target::Revenue,
    };
    if request.invoice_id.is_some() && !matches!(target, Target::CreditInvoice(_)) {
        return Err(unexpected("invoice_id"));
    }
    if request.merchant_id.is_some() && !matches!(target, Target::CreditMerchant(_)) {
        return Err(unexpected("merchant_id"));
    }
    if request.destination.is_some() && !matches!(target, Target::Refund(_)) {
        return Err(unexpected("destination"));
    }
    Ok(target)
}

impl From<ResolveError> for ApiError {
    fn from(error: ResolveError) -> Self {
        let message = error.to_string();
        let conflict = |code| ApiError::Conflict { code, message: message.clone(), param: None };
        match error {
            ResolveError::DepositNotFound(_) => ApiError::not_found("deposit"),
            ResolveError::NotInSuspense(_) => conflict("deposit_not_in_suspense"),
            ResolveError::NotConfirmed(_) => conflict("deposit_not_confirmed"),
            ResolveError::AlreadyResolved(_) => conflict("deposit_already_resolved"),
            ResolveError::Changed(_) => conflict("deposit_changed"),
            ResolveError::InvoicePassThrough(_) => conflict("invoice_pass_through"),
            ResolveError::ReasonRequired => ApiError::invalid("reason", "invalid_parameter", message),
            ResolveError::InvoiceNotFound(_) => ApiError::invalid("invoice_id", "resource_missing", message),
            ResolveError::MerchantNotFound(_) => ApiError::invalid("merchant_id", "resource_missing", message),
            ResolveError::AssetMismatch(_) => ApiError::invalid("invoice_id", "asset_mismatch", message),
            ResolveError::BadAddress { .. } => ApiError::invalid("destination", "invalid_address", message),
            ResolveError::Store(e) => e.into(),
            ResolveError::Ledger(e) => ApiError::internal(e),
        }
    }
}

#[utoipa::path(
    post, path = "/api/v1/operator/deposits/{id}/resolve", tag = "operator",
    params(("id" = Uuid, Path, description = "Deposit id (a transfer in suspense)")),
    request_body = ResolveDeposit,
    responses(
        (status = 200, description = "The resolution (a refund is `pending` until its transaction is confirmed). The same body again returns the same resolution", body = ResolutionResource),
        (status = 400, description = "Invalid parameters", body = crate::error::ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks the operator scope, or its mode does not match the deposit's chain (key_mode_mismatch)", body = crate::error::ErrorBody),
        (status = 404, description = "No such deposit", body = crate::error::ErrorBody),
        (status = 409, description = "deposit_not_in_suspense, deposit_not_confirmed, deposit_already_resolved, deposit_changed or invoice_pass_through", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn resolve(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<ResolutionResource>, ApiError> {
    auth.require(Scope::Operator)?;
    let id = extract::path_id("deposit", &id)?;
    let request: ResolveDeposit = extract::json(body)?;
    let reason = validate::text("reason", Some(request.reason.clone()), 500)?.unwrap_or_default();
    if reason.trim().is_empty() {
        return Err(ApiError::invalid("reason", "invalid_parameter", "reason must not be blank"));
    }
    let target = target(&request)?;
    let ctx = resolutions::Context {
        chains: &state.config.chains,
        treasury: state.wallet.treasury_address(),
        crediting: crediting::Context { public_url: &state.config.settings.api.public_url, sessions: &state.sessions },
    };
    let mut tx = state.store.begin().await?;
    // A test key resolves testnet transfers only, a live key mainnet ones (like payouts).
    let deposit = depositd_core::store::deposits::get_any(&mut tx, id).await?;
    let chain = deposit.and_then(|d| state.config.chains.iter().find(|c| c.chain_id == d.chain_id));
    if let Some(chain) = chain {
        auth.may_create_on(chain, None)?;
    }
    let resolved = resolutions::resolve(
        &mut tx,
        ctx,
        ResolveRequest { deposit_id: id, target, reason, actor: format!("api_key:{}", auth.key.id) },
    )
    .await?;
    tx.commit().await.map_err(depositd_core::store::StoreError::from)?;
    Ok(Json(resolved.resource))
}
