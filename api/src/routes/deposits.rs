//! `GET /api/v1/deposits` and `GET /api/v1/deposits/{id}`: every transfer seen to the merchant's
//! addresses, with its confirmations and the ledger entries it caused.

use axum::Json;
use axum::extract::State;
use depositd_core::api_key::Scope;
use depositd_core::deposit::DepositResource;
use depositd_core::deposit::{Deposit, DepositState};
use depositd_core::ledger::statements::{self, EntryFilter};
use depositd_core::store::deposits::{self, DepositFilter};
use depositd_core::store::{Conn, cursors};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ledger::{LedgerEntryResource, describe};
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::extract::{self, Page, PathId};
use crate::query::{self, List, ListQuery};
use crate::state::AppState;

/// A deposit as the deposits API shows it: the resource webhooks carry, plus where it stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepositView {
    #[serde(flatten)]
    deposit: DepositResource,
    chain: Option<String>,
    /// Blocks on top of the deposit's block, counting it (0 once a reorg took it away).
    confirmations: u64,
    /// Every ledger entry the deposit caused, oldest first (reversals included: nothing is deleted).
    ledger_entries: Vec<LedgerEntryResource>,
}

/// At most this many ledger entries are shown per deposit (a deposit posts three per life).
const ENTRIES_PER_DEPOSIT: u32 = 100;

async fn view(state: &AppState, conn: &mut Conn, merchant_id: Uuid, deposit: Deposit) -> Result<DepositView, ApiError> {
    let head = cursors::get(conn, deposit.chain_id).await?.map(|c| c.block_number);
    let live = matches!(deposit.state, DepositState::Detected | DepositState::Confirmed);
    let confirmations = match head {
        Some(head) if live && head >= deposit.block_number => head - deposit.block_number + 1,
        _ => 0,
    };
    let filter = EntryFilter { deposit_id: Some(deposit.id), ..EntryFilter::default() };
    let mut entries = statements::entries(conn, merchant_id, &filter, ENTRIES_PER_DEPOSIT).await?;
    entries.reverse();
    let (chain, _) = describe(&state.config, deposit.chain_id, &deposit.asset);
    Ok(DepositView {
        deposit: DepositResource::build(&deposit),
        chain,
        confirmations,
        ledger_entries: entries.into_iter().map(|e| LedgerEntryResource::build(&state.config, e)).collect(),
    })
}

#[utoipa::path(
    get, path = "/api/v1/deposits/{id}", tag = "ledger",
    params(("id" = Uuid, Path, description = "Deposit id")),
    responses(
        (status = 200, description = "The deposit", body = DepositView),
        (status = 404, description = "No such deposit", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    auth: Authenticated,
    PathId(id): PathId,
) -> Result<Json<DepositView>, ApiError> {
    auth.require(Scope::LedgerRead)?;
    let id = extract::path_id("deposit", &id)?;
    let mut conn = state.store.conn().await?;
    let deposit = deposits::get_for_merchant(&mut conn, auth.merchant.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deposit"))?;
    Ok(Json(view(&state, &mut conn, auth.merchant.id, deposit).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DepositList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<DepositView>,
    has_more: bool,
}

/// The query of `GET /api/v1/deposits`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeposits {
    /// `detected`, `confirmed`, `reorged`, `reversed` or `rejected`
    #[serde(default, deserialize_with = "query::word")]
    #[param(value_type = Option<String>)]
    state: Option<DepositState>,
    /// Only this invoice's deposits
    #[serde(default, deserialize_with = "query::invoice_id")]
    invoice_id: Option<Uuid>,
    /// Only deposits on this chain
    chain: Option<String>,
    /// 1 to 100, default 20
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
}

impl ListQuery for ListDeposits {
    const SCOPE: Scope = Scope::LedgerRead;
}

#[utoipa::path(
    get, path = "/api/v1/deposits", tag = "ledger",
    params(ListDeposits),
    responses(
        (status = 200, description = "Deposits, newest first", body = DepositList),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    List { auth, query }: List<ListDeposits>,
) -> Result<Json<DepositList>, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let filter = DepositFilter {
        state: query.state,
        invoice_id: query.invoice_id,
        chain_id: query.chain.map(|chain| extract::chain_id(&state.config, &chain)).transpose()?,
        starting_after: page.starting_after,
    };
    let mut conn = state.store.conn().await?;
    let (found, has_more) =
        page.finish(deposits::list_for_merchant(&mut conn, auth.merchant.id, &filter, page.fetch()).await?);
    let mut data = Vec::with_capacity(found.len());
    for deposit in found {
        data.push(view(&state, &mut conn, auth.merchant.id, deposit).await?);
    }
    Ok(Json(DepositList { object: "list", data, has_more }))
}
