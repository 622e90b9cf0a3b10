//! Deposits: every transfer seen to a watched address, keyed for exactly-once crediting by
//! `(chain_id, tx_hash, log_index)`; native transfers use `log_index = -1 - transaction_index`.

use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Conn, StoreError, parse_column};
use crate::deposit::{Deposit, DepositState};
use crate::money::BaseUnits;
use crate::time::now_ms;

/// The columns a new deposit is inserted with.
macro_rules! insert_columns {
    () => {
        "id, chain_id, tx_hash, log_index, block_number, block_hash, from_address, to_address, token_address, asset, \
         amount_base_units, state, reject_reason, merchant_id, invoice_id, static_address_id, detected_at, confirmed_at"
    };
}
const COLUMNS: &str = insert_columns!();
/// What `SELECT`s read: those and the generation (which starts at 0).
const SELECT_COLUMNS: &str = concat!(insert_columns!(), ", generation");

#[derive(sqlx::FromRow)]
struct Row {
    id: Text<Uuid>,
    chain_id: i64,
    tx_hash: String,
    log_index: i64,
    block_number: i64,
    block_hash: String,
    from_address: String,
    to_address: String,
    token_address: Option<String>,
    asset: String,
    amount_base_units: Text<BaseUnits>,
    state: DepositState,
    reject_reason: Option<String>,
    merchant_id: Option<Text<Uuid>>,
    invoice_id: Option<Text<Uuid>>,
    static_address_id: Option<Text<Uuid>>,
    detected_at: i64,
    confirmed_at: Option<i64>,
    generation: i64,
}

impl TryFrom<Row> for Deposit {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(Deposit {
            id: r.id.0,
            chain_id: r.chain_id as u64,
            tx_hash: r.tx_hash,
            log_index: r.log_index,
            block_number: r.block_number as u64,
            block_hash: r.block_hash,
            from_address: r.from_address,
            to_address: r.to_address,
            token_address: r.token_address,
            asset: r.asset,
            amount: r.amount_base_units.0,
            state: r.state,
            reject_reason: r.reject_reason,
            merchant_id: opt(r.merchant_id),
            invoice_id: opt(r.invoice_id),
            static_address_id: opt(r.static_address_id),
            detected_at: r.detected_at,
            confirmed_at: r.confirmed_at,
            generation: r.generation,
        })
    }
}

/// What happened when a transfer was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// First sighting: a new row.
    New(Deposit),
    /// A deposit a reorg took away (reorged or reversed) reappeared in the new chain: the same
    /// row, detected again.
    Revived(Deposit),
    /// Already known in a live state: nothing changed (a replayed range, a restart mid-range).
    AlreadyKnown,
}

/// Records a transfer exactly once. `deposit.state` is `Detected` or `Rejected`.
#[tracing::instrument(skip_all, fields(tx_hash = %deposit.tx_hash, log_index = deposit.log_index))]
pub async fn record(conn: &mut Conn, deposit: &Deposit) -> Result<Recorded, StoreError> {
    let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deposits ({COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
         $15, $16, $17, $18, $17) ON CONFLICT (chain_id, tx_hash, log_index) DO NOTHING"
    )))
    .bind(Text(deposit.id))
    .bind(deposit.chain_id as i64)
    .bind(&deposit.tx_hash)
    .bind(deposit.log_index)
    .bind(deposit.block_number as i64)
    .bind(&deposit.block_hash)
    .bind(&deposit.from_address)
    .bind(&deposit.to_address)
    .bind(&deposit.token_address)
    .bind(&deposit.asset)
    .bind(deposit.amount)
    .bind(deposit.state)
    .bind(&deposit.reject_reason)
    .bind(deposit.merchant_id.map(Text))
    .bind(deposit.invoice_id.map(Text))
    .bind(deposit.static_address_id.map(Text))
    .bind(deposit.detected_at)
    .bind(deposit.confirmed_at)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Recorded::New(deposit.clone()));
    }
    // Known already. Only one a reorg took away comes back to life, in its new block: `reorged`
    // (never credited) or `reversed` (credited, then its credit reversed; it is credited again
    // when it confirms in the new chain, so the net is still exactly one credit). It comes back
    // as the watcher classifies it now: `detected`, or `rejected` (back in suspense, unconfirmed).
    let revived: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE deposits SET state = $7, reject_reason = $8, block_number = $1, block_hash = $2, updated_at = $3, \
         generation = generation + 1, confirmed_at = CASE WHEN $7 = 'rejected' THEN NULL ELSE confirmed_at END \
         WHERE chain_id = $4 AND tx_hash = $5 AND log_index = $6 AND state IN ('reorged', 'reversed') RETURNING {SELECT_COLUMNS}"
    )))
    .bind(deposit.block_number as i64)
    .bind(&deposit.block_hash)
    .bind(now_ms())
    .bind(deposit.chain_id as i64)
    .bind(&deposit.tx_hash)
    .bind(deposit.log_index)
    .bind(deposit.state)
    .bind(&deposit.reject_reason)
    .fetch_optional(&mut *conn)
    .await?;
    match revived {
        Some(row) => Ok(Recorded::Revived(Deposit::try_from(row)?)),
        None => Ok(Recorded::AlreadyKnown),
    }
}

/// Detected deposits on `chain_id` in blocks up to `max_block` (those with enough confirmations).
#[tracing::instrument(skip(conn))]
pub async fn detected_up_to(conn: &mut Conn, chain_id: u64, max_block: u64) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE chain_id = $1 AND state = 'detected' AND block_number <= $2 \
         ORDER BY block_number, log_index"
    )))
    .bind(chain_id as i64)
    .bind(max_block as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// Live (detected, confirmed, or rejected: in suspense) deposits on `chain_id` in blocks above
/// `block`: what a reorg to `block` removes.
#[tracing::instrument(skip(conn))]
pub async fn live_above(conn: &mut Conn, chain_id: u64, block: u64) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE chain_id = $1 AND state IN ('detected', 'confirmed', 'rejected') \
         AND block_number > $2 \
         ORDER BY block_number DESC, log_index DESC"
    )))
    .bind(chain_id as i64)
    .bind(block as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// A confirmed deposit whose transaction a reorg moved to block `number` (hash `hash`), at the
/// same position: it stays confirmed and credited, in its new block. False when it was not
/// confirmed any more.
#[tracing::instrument(skip(conn))]
pub async fn relocate(conn: &mut Conn, id: Uuid, number: u64, hash: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE deposits SET block_number = $1, block_hash = $2, updated_at = $3 WHERE id = $4 AND state = 'confirmed'",
    )
    .bind(number as i64)
    .bind(hash)
    .bind(now_ms())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves a deposit from `from` to `to`; false when it was not in `from` in the life (generation)
/// the caller read (someone else moved it, or a reorg took it away and it came back since).
#[tracing::instrument(skip(conn, deposit), fields(deposit_id = %deposit.id))]
pub async fn transition(
    conn: &mut Conn,
    deposit: &Deposit,
    from: DepositState,
    to: DepositState,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let confirmed_at = (to == DepositState::Confirmed).then_some(now);
    let done = sqlx::query(
        "UPDATE deposits SET state = $1, confirmed_at = COALESCE($2, confirmed_at), updated_at = $3 \
         WHERE id = $4 AND state = $5 AND generation = $6",
    )
    .bind(to)
    .bind(confirmed_at)
    .bind(now)
    .bind(Text(deposit.id))
    .bind(from)
    .bind(deposit.generation)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Links a static-address deposit to the invoice auto-created for it.
#[tracing::instrument(skip(conn))]
pub async fn link_invoice(conn: &mut Conn, id: Uuid, invoice_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("UPDATE deposits SET invoice_id = $1, updated_at = $2 WHERE id = $3")
        .bind(Text(invoice_id))
        .bind(now_ms())
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Whether the invoice has other deposits still awaiting confirmation.
#[tracing::instrument(skip(conn))]
pub async fn invoice_has_detected(conn: &mut Conn, invoice_id: Uuid, except: Uuid) -> Result<bool, StoreError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT id FROM deposits WHERE invoice_id = $1 AND state = 'detected' AND id <> $2 LIMIT 1")
            .bind(Text(invoice_id))
            .bind(Text(except))
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.is_some())
}

/// All deposits on a chain, oldest first (tests and the deposits API).
#[tracing::instrument(skip(conn))]
pub async fn all_on_chain(conn: &mut Conn, chain_id: u64) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE chain_id = $1 ORDER BY block_number, log_index"
    )))
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// Filters for a merchant's deposit list; each is neutral when `None`.
#[derive(Debug, Clone, Default)]
pub struct DepositFilter {
    pub state: Option<DepositState>,
    pub invoice_id: Option<Uuid>,
    pub chain_id: Option<u64>,
    /// Cursor: deposits detected before this one (ids are time-ordered).
    pub starting_after: Option<Uuid>,
}

/// A merchant's deposits, newest first, at most `limit`.
#[tracing::instrument(skip(conn))]
pub async fn list_for_merchant(
    conn: &mut Conn,
    merchant_id: Uuid,
    filter: &DepositFilter,
    limit: u32,
) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE merchant_id = $1 \
         AND ($2 IS NULL OR state = $2) \
         AND ($3 IS NULL OR invoice_id = $3) \
         AND ($4 IS NULL OR chain_id = $4) \
         AND ($5 IS NULL OR id < $5) \
         ORDER BY id DESC LIMIT $6"
    )))
    .bind(Text(merchant_id))
    .bind(filter.state.map(|s| s.as_str()))
    .bind(filter.invoice_id.map(Text))
    .bind(filter.chain_id.map(|c| c as i64))
    .bind(filter.starting_after.map(Text))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// One of a merchant's deposits (another merchant's is simply not found).
#[tracing::instrument(skip(conn))]
pub async fn get_for_merchant(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<Deposit>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Deposit::try_from).transpose()
}

/// Distinct addresses on `chain_id` that received live (detected or confirmed) deposits, or
/// transfers recorded as rejected (in suspense): where the ledger's custody sits on chain.
#[tracing::instrument(skip(conn))]
pub async fn custody_addresses(conn: &mut Conn, chain_id: u64) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT to_address FROM deposits WHERE chain_id = $1 AND ((state IN ('detected', 'confirmed') \
         AND merchant_id IS NOT NULL) OR state = 'rejected') ORDER BY to_address",
    )
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

/// Deposit addresses on a chain holding confirmed deposits (or confirmed transfers in suspense,
/// see [`SWEEPABLE`]) that no confirmed sweep or forward from that address has followed yet, or
/// whose last sweep or forward failed: what the settler plans for (a failed plan is planned
/// again, never forgotten).
#[tracing::instrument(skip(conn))]
pub async fn unsettled_addresses(conn: &mut Conn, chain_id: u64) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT d.to_address FROM deposits d WHERE d.chain_id = $1 AND {SWEEPABLE} AND (NOT EXISTS (SELECT 1 FROM chain_transactions t \
         WHERE t.chain_id = d.chain_id AND t.signer_address = d.to_address AND t.state = 'confirmed' \
         AND t.purpose IN ('sweep', 'passthrough') AND t.created_at > d.confirmed_at) \
         OR EXISTS (SELECT 1 FROM chain_transactions f WHERE f.chain_id = d.chain_id \
         AND f.signer_address = d.to_address AND f.state = 'failed' AND f.purpose IN ('sweep', 'passthrough') \
         AND NOT EXISTS (SELECT 1 FROM chain_transactions c WHERE c.chain_id = f.chain_id \
         AND c.signer_address = f.signer_address AND c.state = 'confirmed' \
         AND c.purpose IN ('sweep', 'passthrough') AND c.created_at > f.created_at))) ORDER BY d.to_address"
    )))
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

/// What the settler sweeps (as SQL over `deposits d`): a merchant's confirmed deposits, and
/// transfers in suspense once they are as deep as a deposit's confirmations (`confirmed_at` is
/// stamped then; see `crediting::on_rejected_confirmed`). Suspense money joins the treasury like
/// custody money, so every resolution (a credit, the operator's revenue, a refund the treasury
/// sends) is money the treasury holds; nothing stays at a deposit address for ever.
pub const SWEEPABLE: &str = "((d.state = 'confirmed' AND d.merchant_id IS NOT NULL) \
     OR (d.state = 'rejected' AND d.confirmed_at IS NOT NULL AND d.amount_base_units <> '0'))";

/// Every confirmed deposit to an address on a chain, and every confirmed transfer in suspense
/// there (see [`SWEEPABLE`]).
#[tracing::instrument(skip(conn))]
pub async fn confirmed_at(conn: &mut Conn, chain_id: u64, address: &str) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits d WHERE d.chain_id = $1 AND d.to_address = $2 AND {SWEEPABLE}"
    )))
    .bind(chain_id as i64)
    .bind(address)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// Transfers on a chain recorded as `rejected` (wrong asset or chain, an unowned or disabled
/// address) that the ledger does not hold in suspense (recorded before suspense existed and not
/// yet posted): known, never credited, still at the address. `(to_address, asset, amount)` each.
#[tracing::instrument(skip(conn))]
pub async fn rejected_on_chain(conn: &mut Conn, chain_id: u64) -> Result<Vec<(String, String, BaseUnits)>, StoreError> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT d.to_address, d.asset, d.amount_base_units FROM deposits d WHERE d.chain_id = $1 \
         AND d.state = 'rejected' AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.deposit_id = d.id \
         AND e.entry_type = 'suspense' AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)) \
         ORDER BY d.to_address",
    )
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(to, asset, amount)| Ok((to, asset, parse_column("deposits.amount_base_units", &amount)?)))
        .collect()
}

/// Rejected transfers on `chain_id` in blocks up to `max_block` (as deep as a deposit's
/// confirmations) not yet stamped confirmed.
#[tracing::instrument(skip(conn))]
pub async fn rejected_unconfirmed_up_to(
    conn: &mut Conn,
    chain_id: u64,
    max_block: u64,
) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE chain_id = $1 AND state = 'rejected' AND confirmed_at IS NULL \
         AND block_number <= $2 ORDER BY block_number, log_index"
    )))
    .bind(chain_id as i64)
    .bind(max_block as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}

/// Stamps a rejected transfer confirmed (it stays `rejected`); false when it is not rejected in
/// the life the caller read any more.
#[tracing::instrument(skip(conn, deposit), fields(deposit_id = %deposit.id))]
pub async fn stamp_rejected_confirmed(conn: &mut Conn, deposit: &Deposit) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE deposits SET confirmed_at = $1, updated_at = $1 WHERE id = $2 AND state = 'rejected' \
         AND generation = $3 AND confirmed_at IS NULL",
    )
    .bind(now)
    .bind(Text(deposit.id))
    .bind(deposit.generation)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One deposit, whoever's it is (the operator's tools).
#[tracing::instrument(skip(conn))]
pub async fn get_any(conn: &mut Conn, id: Uuid) -> Result<Option<Deposit>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {SELECT_COLUMNS} FROM deposits WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    row.map(Deposit::try_from).transpose()
}

/// Holds deposit `id`'s row for the caller's transaction on the condition that it is still
/// `rejected` in life `generation` (a resolution's guard against a concurrent reorg): false when
/// it is not. The write takes the row lock on PostgreSQL (which re-checks the condition after
/// waiting for a concurrent writer); SQLite's `BEGIN IMMEDIATE` already serialises writers.
#[tracing::instrument(skip(conn))]
pub async fn hold_rejected(conn: &mut Conn, id: Uuid, generation: i64) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "UPDATE deposits SET updated_at = updated_at WHERE id = $1 AND state = 'rejected' AND generation = $2",
    )
    .bind(Text(id))
    .bind(generation)
    .execute(&mut *conn)
    .await?;
    Ok(held.rows_affected() == 1)
}

/// Deposits in `state` on every chain, oldest first, at most `limit` (the operator's list).
#[tracing::instrument(skip(conn))]
pub async fn list_in_state(conn: &mut Conn, state: DepositState, limit: u32) -> Result<Vec<Deposit>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SELECT_COLUMNS} FROM deposits WHERE state = $1 ORDER BY id LIMIT $2"
    )))
    .bind(state)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Deposit::try_from).collect()
}
