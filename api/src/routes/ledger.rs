//! `GET /api/v1/balances` and `GET /api/v1/ledger` (JSON, or CSV for accountants).
//!
//! Amounts come twice: exact base units (decimal strings, U256-safe) and display units with the
//! asset's decimals. A posting's amount is signed from the merchant's side: positive when it
//! raises the account's balance.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use depositd_core::api_key::Scope;
use depositd_core::config::Config;
use depositd_core::ledger::statements::{self, EntryFilter, MerchantEntry};
use depositd_core::ledger::{AccountKind, EntryType, Posting};
use depositd_core::money::BaseUnits;
use depositd_core::store::Conn;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{self, Page};
use crate::query::{self, List, ListQuery, NoParameters};
use crate::state::AppState;

/// How a chain id and asset symbol are shown: the chain's name and the asset's decimals, when
/// the asset is still configured (a ledger outlives configuration changes).
pub(crate) fn describe(config: &Config, chain_id: u64, asset: &str) -> (Option<String>, Option<u8>) {
    match config.chains.iter().find(|c| c.chain_id == chain_id) {
        Some(chain) => (Some(chain.name.clone()), chain.asset(asset).map(|a| a.decimals)),
        None => (None, None),
    }
}

/// A signed amount: `-` when it lowers the balance.
fn signed(amount: BaseUnits, negative: bool, decimals: Option<u8>) -> (String, Option<String>) {
    let sign = if negative && !amount.is_zero() { "-" } else { "" };
    (format!("{sign}{amount}"), decimals.map(|d| format!("{sign}{}", amount.to_display(d))))
}

// === balances ===

/// One asset's balances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Balance {
    /// Always `balance`.
    #[schema(value_type = String)]
    object: &'static str,
    pub(crate) chain: Option<String>,
    chain_id: u64,
    pub(crate) asset: String,
    decimals: Option<u8>,
    /// Spendable: confirmed credits less fees, reservations and payouts.
    pub(crate) available: Option<String>,
    available_base_units: BaseUnits,
    /// Detected, awaiting confirmations: shown, not spendable.
    pub(crate) pending: Option<String>,
    pending_base_units: BaseUnits,
    /// Held for payouts in flight.
    pub(crate) reserved: Option<String>,
    reserved_base_units: BaseUnits,
    /// Receiver-override settlements awaiting forwarding on chain.
    pub(crate) in_transit: Option<String>,
    in_transit_base_units: BaseUnits,
    /// Owed to the platform after a reversal the available balance could not cover.
    pub(crate) receivable: Option<String>,
    receivable_base_units: BaseUnits,
}

impl Balance {
    /// One asset's balances from its accounts' (kinds absent are zero).
    fn build(config: &Config, chain_id: u64, asset: String, kinds: &BTreeMap<AccountKind, BaseUnits>) -> Balance {
        let (chain, decimals) = describe(config, chain_id, &asset);
        let amount = |kind| kinds.get(&kind).copied().unwrap_or_default();
        let display = |kind| decimals.map(|d| amount(kind).to_display(d));
        Balance {
            object: "balance",
            chain,
            chain_id,
            decimals,
            available: display(AccountKind::Available),
            available_base_units: amount(AccountKind::Available),
            pending: display(AccountKind::Pending),
            pending_base_units: amount(AccountKind::Pending),
            reserved: display(AccountKind::Reserved),
            reserved_base_units: amount(AccountKind::Reserved),
            in_transit: display(AccountKind::InTransit),
            in_transit_base_units: amount(AccountKind::InTransit),
            receivable: display(AccountKind::Receivable),
            receivable_base_units: amount(AccountKind::Receivable),
            asset,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<Balance>,
}

impl ListQuery for NoParameters {
    const SCOPE: Scope = Scope::LedgerRead;
}

#[utoipa::path(
    get, path = "/api/v1/balances", tag = "ledger",
    responses(
        (status = 200, description = "Balances per chain and asset (every configured asset, zero when unused)", body = BalanceList),
        (status = 403, description = "The key lacks ledger:read", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn balances(
    State(state): State<AppState>,
    List { auth, .. }: List<NoParameters>,
) -> Result<Json<BalanceList>, ApiError> {
    let data = merchant_balances(&state, auth.merchant.id).await?;
    Ok(Json(BalanceList { object: "list", data }))
}

/// Merchant `merchant_id`'s balances per chain and asset (every configured asset, zero when
/// unused): the API's and the dashboard's.
pub(crate) async fn merchant_balances(state: &AppState, merchant_id: uuid::Uuid) -> Result<Vec<Balance>, ApiError> {
    let mut conn = state.store.conn().await?;
    let mut per_asset: BTreeMap<(u64, String), BTreeMap<AccountKind, BaseUnits>> = BTreeMap::new();
    for chain in &state.config.chains {
        for symbol in chain.asset_symbols() {
            per_asset.entry((chain.chain_id, symbol.to_owned())).or_default();
        }
    }
    for account in statements::balances(&mut conn, merchant_id).await? {
        per_asset.entry((account.chain_id, account.asset)).or_default().insert(account.kind, account.balance);
    }
    Ok(per_asset
        .into_iter()
        .map(|((chain_id, asset), kinds)| Balance::build(&state.config, chain_id, asset, &kinds))
        .collect())
}

// === ledger ===

/// A posting to one of the merchant's accounts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostingView {
    pub(crate) account: AccountKind,
    pub(crate) chain: Option<String>,
    chain_id: u64,
    pub(crate) asset: String,
    decimals: Option<u8>,
    /// Signed: positive raises the account's balance.
    pub(crate) amount: Option<String>,
    /// Signed integer string of base units.
    pub(crate) amount_base_units: String,
    /// The account's running balance right after this entry.
    pub(crate) balance_after: Option<String>,
    pub(crate) balance_after_base_units: BaseUnits,
}

/// A journal entry as the merchant sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerEntryResource {
    /// Always `ledger_entry`.
    #[schema(value_type = String)]
    object: &'static str,
    id: Uuid,
    #[serde(rename = "type")]
    entry_type: EntryType,
    /// Epoch seconds.
    created_at: i64,
    invoice_id: Option<Uuid>,
    deposit_id: Option<Uuid>,
    payout_id: Option<Uuid>,
    transaction_id: Option<Uuid>,
    /// The entry this one reverses.
    reverses_entry_id: Option<Uuid>,
    memo: Option<String>,
    postings: Vec<PostingView>,
}

impl LedgerEntryResource {
    pub(crate) fn build(config: &Config, merchant_entry: MerchantEntry) -> LedgerEntryResource {
        let MerchantEntry { entry, postings } = merchant_entry;
        LedgerEntryResource {
            object: "ledger_entry",
            id: entry.id,
            entry_type: entry.entry_type,
            created_at: entry.created_at.div_euclid(1000),
            invoice_id: entry.refs.invoice_id,
            deposit_id: entry.refs.deposit_id,
            payout_id: entry.refs.payout_id,
            transaction_id: entry.refs.transaction_id,
            reverses_entry_id: entry.reverses,
            memo: entry.memo,
            postings: postings.into_iter().map(|p| posting_view(config, p)).collect(),
        }
    }
}

pub(crate) fn posting_view(config: &Config, p: Posting) -> PostingView {
    let (chain, decimals) = describe(config, p.account.chain_id, &p.account.asset);
    let lowers = p.side != p.account.kind.normal_side();
    let (amount_base_units, amount) = signed(p.amount, lowers, decimals);
    PostingView {
        account: p.account.kind,
        chain,
        chain_id: p.account.chain_id,
        asset: p.account.asset,
        decimals,
        amount,
        amount_base_units,
        balance_after: decimals.map(|d| p.balance_after.to_display(d)),
        balance_after_base_units: p.balance_after,
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerEntryList {
    /// Always `list`.
    #[schema(value_type = String)]
    object: &'static str,
    data: Vec<LedgerEntryResource>,
    has_more: bool,
}

/// CSV export reads the ledger in pages of this many entries.
const CSV_PAGE: u32 = 500;

/// The query of `GET /api/v1/ledger`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListLedgerEntries {
    /// Only entries touching this asset symbol
    asset: Option<String>,
    /// Only entries touching this chain
    chain: Option<String>,
    /// Only entries of this type
    #[serde(rename = "type", default, deserialize_with = "query::word")]
    entry_type: Option<EntryType>,
    /// Only this invoice's entries
    #[serde(default, deserialize_with = "query::invoice_id")]
    invoice_id: Option<Uuid>,
    /// Only this deposit's entries
    #[serde(default, deserialize_with = "query::deposit_id")]
    deposit_id: Option<Uuid>,
    /// Epoch seconds, exclusive
    #[serde(default, deserialize_with = "query::created_after")]
    created_after: Option<i64>,
    /// 1 to 100, default 20 (CSV: every matching entry unless given)
    #[serde(default, deserialize_with = "query::limit")]
    limit: Option<u32>,
    /// Cursor: the last id of the previous page
    #[serde(default, deserialize_with = "query::starting_after")]
    starting_after: Option<Uuid>,
    /// `json` (default) or `csv`; `Accept: text/csv` also selects CSV
    #[serde(default, deserialize_with = "output_format")]
    format: Option<String>,
}

impl ListQuery for ListLedgerEntries {
    const SCOPE: Scope = Scope::LedgerRead;
}

/// `format` of [`ListLedgerEntries`].
fn output_format<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    query::one_of(deserializer, &["json", "csv"], "format is `json` or `csv`")
}

#[utoipa::path(
    get, path = "/api/v1/ledger", tag = "ledger",
    params(ListLedgerEntries),
    responses(
        (status = 200, description = "The merchant's entries, newest first, with postings to the merchant's accounts; as CSV one row per posting",
         content((LedgerEntryList = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid query parameter", body = crate::error::ErrorBody),
        (status = 403, description = "The key lacks ledger:read", body = crate::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    List { auth, query }: List<ListLedgerEntries>,
) -> Result<Response, ApiError> {
    let page = Page::new(query.limit, query.starting_after);
    let accepts_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.split(',').any(|t| t.trim().starts_with("text/csv")));
    let as_csv = query.format.map_or(accepts_csv, |format| format == "csv");
    // One of the enabled chains' symbols, as configured (what entries are stored under).
    if let Some(asset) = &query.asset
        && !state.config.chains.iter().any(|c| c.asset_symbols().contains(&asset.as_str()))
    {
        let message = format!("asset {asset:?} is not an asset of an enabled chain");
        return Err(ApiError::invalid("asset", "unsupported_asset", message));
    }
    let filter = EntryFilter {
        entry_type: query.entry_type,
        chain_id: query.chain.map(|chain| extract::chain_id(&state.config, &chain)).transpose()?,
        asset: query.asset,
        invoice_id: query.invoice_id,
        deposit_id: query.deposit_id,
        payout_id: None,
        created_after: query.created_after,
        created_before: None,
        starting_after: page.starting_after,
    };
    let mut conn = state.store.conn().await?;
    if as_csv {
        return csv_export(&mut conn, &state.config, auth.merchant.id, filter, query.limit).await;
    }
    let (found, has_more) = page.finish(statements::entries(&mut conn, auth.merchant.id, &filter, page.fetch()).await?);
    let data = found.into_iter().map(|e| LedgerEntryResource::build(&state.config, e)).collect();
    Ok(Json(LedgerEntryList { object: "list", data, has_more }).into_response())
}

/// The entries `filter` selects as CSV, one row per posting: at most `limit` entries, else every one.
async fn csv_export(
    conn: &mut Conn,
    config: &Config,
    merchant_id: Uuid,
    filter: EntryFilter,
    limit: Option<u32>,
) -> Result<Response, ApiError> {
    let body = journal_csv(conn, config, merchant_id, filter, limit, csv::Terminator::Any(b'\n')).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"ledger.csv\""),
        ],
        body,
    )
        .into_response())
}

/// The entries `filter` selects as CSV (the API's and the dashboard's export): a header row, then
/// one row per posting to the merchant's accounts, amounts as exact decimal strings, each row
/// ended by `terminator`; at most `limit` entries, else every one.
pub(crate) async fn journal_csv(
    conn: &mut Conn,
    config: &Config,
    merchant_id: Uuid,
    mut filter: EntryFilter,
    limit: Option<u32>,
    terminator: csv::Terminator,
) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv::WriterBuilder::new().terminator(terminator).from_writer(Vec::new());
    writer
        .write_record([
            "entry_id",
            "created_at",
            "type",
            "chain",
            "chain_id",
            "asset",
            "account",
            "amount",
            "amount_base_units",
            "balance_after",
            "balance_after_base_units",
            "invoice_id",
            "deposit_id",
            "payout_id",
            "transaction_id",
            "reverses_entry_id",
            "memo",
        ])
        .map_err(ApiError::internal)?;
    let mut remaining = limit.unwrap_or(u32::MAX);
    while remaining > 0 {
        let batch = statements::entries(conn, merchant_id, &filter, remaining.min(CSV_PAGE)).await?;
        let Some(last) = batch.last().map(|e| e.entry.id) else { break };
        remaining = remaining.saturating_sub(batch.len() as u32);
        let full = batch.len() as u32 == CSV_PAGE;
        for merchant_entry in batch {
            write_csv_rows(&mut writer, config, merchant_entry)?;
        }
        if !full {
            break;
        }
        filter.starting_after = Some(last);
    }
    writer.into_inner().map_err(|e| ApiError::internal(e.into_error()))
}

/// One CSV row per posting to the merchant's accounts.
fn write_csv_rows(
    writer: &mut csv::Writer<Vec<u8>>,
    config: &Config,
    merchant_entry: MerchantEntry,
) -> Result<(), ApiError> {
    let entry = &merchant_entry.entry;
    let created_at = depositd_core::time::iso8601(entry.created_at);
    let id = |v: Option<Uuid>| v.map(|v| v.to_string()).unwrap_or_default();
    for posting in &merchant_entry.postings {
        let view = posting_view(config, posting.clone());
        writer
            .write_record([
                entry.id.to_string(),
                created_at.clone(),
                entry.entry_type.to_string(),
                view.chain.unwrap_or_default(),
                view.chain_id.to_string(),
                view.asset,
                view.account.to_string(),
                view.amount.unwrap_or_default(),
                view.amount_base_units,
                view.balance_after.unwrap_or_default(),
                view.balance_after_base_units.to_string(),
                id(entry.refs.invoice_id),
                id(entry.refs.deposit_id),
                id(entry.refs.payout_id),
                id(entry.refs.transaction_id),
                id(entry.reverses),
                entry.memo.clone().unwrap_or_default(),
            ])
            .map_err(ApiError::internal)?;
    }
    Ok(())
}
