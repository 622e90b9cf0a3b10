//! Outgoing transactions (`chain_transactions`), their signed attempts and the signers' nonces.
//!
//! A transaction is a row before it is anything else: an `intent` (why, what, to whom), then
//! `signed` (nonce assigned, raw bytes stored, in one database transaction), `broadcast`, `mined`,
//! and finally `confirmed` or `failed`. Every state change is conditional on the state it leaves,
//! so two processes never both move one transaction.

use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Backend, Conn, StoreError, parse_column};
use crate::chain_tx::{Attempt, ChainTx, Purpose, TxState};
use crate::money::BaseUnits;
use crate::time::now_ms;

const COLUMNS: &str = "id, chain_id, signer_address, purpose, payout_id, invoice_id, merchant_id, to_address, asset, \
    value_base_units, token_address, state, nonce, depends_on, max_gas_cost_base_units, mined_tx_hash, mined_block, \
    gas_cost_base_units, failure_reason, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Text<Uuid>,
    chain_id: i64,
    signer_address: String,
    purpose: Purpose,
    payout_id: Option<Text<Uuid>>,
    invoice_id: Option<Text<Uuid>>,
    merchant_id: Option<Text<Uuid>>,
    to_address: String,
    asset: String,
    value_base_units: Text<BaseUnits>,
    token_address: Option<String>,
    state: TxState,
    nonce: Option<i64>,
    depends_on: Option<Text<Uuid>>,
    max_gas_cost_base_units: Text<BaseUnits>,
    mined_tx_hash: Option<String>,
    mined_block: Option<i64>,
    gas_cost_base_units: Option<Text<BaseUnits>>,
    failure_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<Row> for ChainTx {
    fn from(r: Row) -> Self {
        ChainTx {
            id: r.id.0,
            chain_id: r.chain_id as u64,
            signer_address: r.signer_address,
            purpose: r.purpose,
            payout_id: opt(r.payout_id),
            invoice_id: opt(r.invoice_id),
            merchant_id: opt(r.merchant_id),
            to_address: r.to_address,
            asset: r.asset,
            value: r.value_base_units.0,
            token_address: r.token_address,
            state: r.state,
            nonce: r.nonce.map(|n| n as u64),
            depends_on: opt(r.depends_on),
            max_gas_cost: r.max_gas_cost_base_units.0,
            mined_tx_hash: r.mined_tx_hash,
            mined_block: r.mined_block.map(|b| b as u64),
            gas_cost: opt(r.gas_cost_base_units),
            failure_reason: r.failure_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

fn rows(rows: Vec<Row>) -> Result<Vec<ChainTx>, StoreError> {
    Ok(rows.into_iter().map(ChainTx::from).collect())
}

/// Records an intent (in the caller's transaction, with whatever it is for).
#[tracing::instrument(skip_all, fields(transaction_id = %tx.id))]
pub async fn insert_intent(conn: &mut Conn, tx: &ChainTx) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO chain_transactions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'intent', NULL, \
         $12, $13, NULL, NULL, NULL, NULL, $14, $14)"
    )))
    .bind(Text(tx.id))
    .bind(tx.chain_id as i64)
    .bind(&tx.signer_address)
    .bind(tx.purpose)
    .bind(tx.payout_id.map(Text))
    .bind(tx.invoice_id.map(Text))
    .bind(tx.merchant_id.map(Text))
    .bind(&tx.to_address)
    .bind(&tx.asset)
    .bind(tx.value)
    .bind(&tx.token_address)
    .bind(tx.depends_on.map(Text))
    .bind(tx.max_gas_cost)
    .bind(tx.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, id: Uuid) -> Result<Option<ChainTx>, StoreError> {
    let row: Option<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM chain_transactions WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(ChainTx::from))
}

/// Reads and locks a transaction until the caller's transaction ends.
#[tracing::instrument(skip(conn))]
pub async fn lock(conn: &mut Conn, id: Uuid) -> Result<Option<ChainTx>, StoreError> {
    let backend = Backend::of(conn);
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE id = $1{}",
        backend.for_update()
    )))
    .bind(Text(id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(ChainTx::from))
}

/// Intents on a chain in creation order, with their dependency's state (`None`: no dependency).
#[tracing::instrument(skip(conn))]
pub async fn intents(conn: &mut Conn, chain_id: u64) -> Result<Vec<(ChainTx, Option<TxState>)>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND state = 'intent' ORDER BY created_at, id"
    )))
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(found.len());
    for tx in rows(found)? {
        let dependency = match tx.depends_on {
            Some(id) => Some(
                get(conn, id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("transaction {} depends on a missing one", tx.id)))?
                    .state,
            ),
            None => None,
        };
        out.push((tx, dependency));
    }
    Ok(out)
}

/// Signed, broadcast or mined transactions on a chain: what the chain must be asked about.
#[tracing::instrument(skip(conn))]
pub async fn in_flight(conn: &mut Conn, chain_id: u64) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND state IN ('signed', 'broadcast', 'mined') \
         ORDER BY signer_address, nonce"
    )))
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

/// Every transaction a signer sent or will send, and every gas top-up to it: what its known
/// balance is computed from.
#[tracing::instrument(skip(conn))]
pub async fn touching(conn: &mut Conn, chain_id: u64, address: &str) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND (signer_address = $2 \
         OR (to_address = $2 AND purpose = 'gas_topup'))"
    )))
    .bind(chain_id as i64)
    .bind(address)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

/// Transactions on a chain confirmed in a block at or above `min_block`, by signer and nonce: the
/// ones a reorg deeper than the confirmations could still take away.
#[tracing::instrument(skip(conn))]
pub async fn confirmed_since(conn: &mut Conn, chain_id: u64, min_block: u64) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND state = 'confirmed' AND mined_block >= $2 \
         ORDER BY signer_address, nonce"
    )))
    .bind(chain_id as i64)
    .bind(min_block as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

/// `signer`'s transactions on `chain_id` recorded confirmed at nonce `min_nonce` or above, in
/// nonce order: after a start, those the chain no longer counts (its mined count is `min_nonce`)
/// are checked for a reorg that took them away.
#[tracing::instrument(skip(conn))]
pub async fn confirmed_from_nonce(
    conn: &mut Conn,
    chain_id: u64,
    signer: &str,
    min_nonce: u64,
) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND signer_address = $2 AND state = 'confirmed' \
         AND nonce >= $3 ORDER BY nonce"
    )))
    .bind(chain_id as i64)
    .bind(signer)
    .bind(min_nonce as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

/// A confirmed transaction a reorg deeper than the confirmations took away goes back to
/// `broadcast` (its mined hash, block and gas forgotten; its ledger entries stay, keyed by the
/// transaction, and count once when it is mined again). True when this call moved it.
#[tracing::instrument(skip(conn))]
pub async fn set_unconfirmed(conn: &mut Conn, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE chain_transactions SET state = 'broadcast', mined_tx_hash = NULL, mined_block = NULL, \
         gas_cost_base_units = NULL, updated_at = $1 WHERE id = $2 AND state = 'confirmed'",
    )
    .bind(now_ms())
    .bind(id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Open (not confirmed, not failed) transactions on a chain.
#[tracing::instrument(skip(conn))]
pub async fn open(conn: &mut Conn, chain_id: u64) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND state NOT IN ('confirmed', 'failed')"
    )))
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

/// Sweeps and forwards (what deposit addresses sign) confirmed or failed in a block above
/// `block`: the ledger has posted what they took, a balance read at `block` still shows it.
#[tracing::instrument(skip(conn))]
pub async fn settled_by_deposit_addresses_above(
    conn: &mut Conn,
    chain_id: u64,
    block: u64,
) -> Result<Vec<ChainTx>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE chain_id = $1 AND state IN ('confirmed', 'failed') \
         AND purpose IN ('sweep', 'passthrough') AND mined_block > $2"
    )))
    .bind(chain_id as i64)
    .bind(block as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows(found)
}

#[tracing::instrument(skip(conn))]
pub async fn for_payout(conn: &mut Conn, payout_id: Uuid) -> Result<Option<ChainTx>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chain_transactions WHERE payout_id = $1 ORDER BY created_at DESC LIMIT 1"
    )))
    .bind(Text(payout_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(ChainTx::from))
}

/// Moves a transaction from `from` to `to` with the given columns; false when it was not in
/// `from` (someone else moved it).
#[tracing::instrument(skip(conn))]
pub async fn transition(conn: &mut Conn, id: Uuid, from: TxState, to: TxState) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE chain_transactions SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4")
        .bind(to)
        .bind(now_ms())
        .bind(Text(id))
        .bind(from)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The chain included one of its attempts.
#[tracing::instrument(skip(conn))]
pub async fn set_mined(
    conn: &mut Conn,
    id: Uuid,
    from: TxState,
    tx_hash: &str,
    block: u64,
    gas_cost: BaseUnits,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE chain_transactions SET state = 'mined', mined_tx_hash = $1, mined_block = $2, gas_cost_base_units = $3, \
         updated_at = $4 WHERE id = $5 AND state = $6",
    )
    .bind(tx_hash)
    .bind(block as i64)
    .bind(gas_cost)
    .bind(now_ms())
    .bind(Text(id))
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A reorg took its block away: it is waiting to be mined again.
#[tracing::instrument(skip(conn))]
pub async fn set_unmined(conn: &mut Conn, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE chain_transactions SET state = 'broadcast', mined_tx_hash = NULL, mined_block = NULL, \
         gas_cost_base_units = NULL, updated_at = $1 WHERE id = $2 AND state = 'mined'",
    )
    .bind(now_ms())
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[tracing::instrument(skip(conn))]
pub async fn set_failed(conn: &mut Conn, id: Uuid, from: TxState, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE chain_transactions SET state = 'failed', failure_reason = $1, updated_at = $2 WHERE id = $3 AND state = $4",
    )
    .bind(reason)
    .bind(now_ms())
    .bind(Text(id))
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    id: Text<Uuid>,
    transaction_id: Text<Uuid>,
    tx_hash: String,
    raw_tx: String,
    max_fee_per_gas: Text<u128>,
    max_priority_fee_per_gas: Text<u128>,
    gas_limit: Text<u64>,
    broadcast_at: Option<i64>,
    broadcast_block: Option<i64>,
    created_at: i64,
}

impl From<AttemptRow> for Attempt {
    fn from(r: AttemptRow) -> Self {
        Attempt {
            id: r.id.0,
            transaction_id: r.transaction_id.0,
            tx_hash: r.tx_hash,
            raw_tx: r.raw_tx,
            max_fee_per_gas: r.max_fee_per_gas.0,
            max_priority_fee_per_gas: r.max_priority_fee_per_gas.0,
            gas_limit: r.gas_limit.0,
            broadcast_at: r.broadcast_at,
            broadcast_block: r.broadcast_block.map(|b| b as u64),
            created_at: r.created_at,
        }
    }
}

/// A transaction's attempts, oldest first.
#[tracing::instrument(skip(conn))]
pub async fn attempts(conn: &mut Conn, transaction_id: Uuid) -> Result<Vec<Attempt>, StoreError> {
    let found: Vec<AttemptRow> = sqlx::query_as(
        "SELECT id, transaction_id, tx_hash, raw_tx, max_fee_per_gas, max_priority_fee_per_gas, gas_limit, \
         broadcast_at, broadcast_block, created_at FROM chain_transaction_attempts WHERE transaction_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(Text(transaction_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(found.into_iter().map(Attempt::from).collect())
}

#[tracing::instrument(skip_all, fields(transaction_id = %a.transaction_id, attempt_id = %a.id))]
pub async fn insert_attempt(conn: &mut Conn, a: &Attempt) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chain_transaction_attempts (id, transaction_id, tx_hash, raw_tx, max_fee_per_gas, \
         max_priority_fee_per_gas, gas_limit, broadcast_at, broadcast_block, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8)",
    )
    .bind(Text(a.id))
    .bind(Text(a.transaction_id))
    .bind(&a.tx_hash)
    .bind(&a.raw_tx)
    .bind(Text(a.max_fee_per_gas))
    .bind(Text(a.max_priority_fee_per_gas))
    .bind(Text(a.gas_limit))
    .bind(a.created_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The nonce is assigned and the first attempt stored: `intent` -> `signed`, in one statement
/// pair inside the caller's transaction.
#[tracing::instrument(skip(conn, first), fields(attempt_id = %first.id))]
pub async fn set_signed(
    conn: &mut Conn,
    id: Uuid,
    nonce: u64,
    max_gas_cost: BaseUnits,
    first: &Attempt,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE chain_transactions SET state = 'signed', nonce = $1, max_gas_cost_base_units = $4, updated_at = $2 \
         WHERE id = $3 AND state = 'intent'",
    )
    .bind(nonce as i64)
    .bind(now_ms())
    .bind(Text(id))
    .bind(max_gas_cost)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    insert_attempt(conn, first).await?;
    Ok(true)
}

/// An attempt went out (the first broadcast of it; later rebroadcasts keep the first time).
#[tracing::instrument(skip(conn))]
pub async fn set_broadcast(conn: &mut Conn, attempt_id: Uuid, block: u64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE chain_transaction_attempts SET broadcast_at = $1, broadcast_block = $2 WHERE id = $3 \
         AND broadcast_at IS NULL",
    )
    .bind(now_ms())
    .bind(block as i64)
    .bind(Text(attempt_id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A signer's next nonce, locked until the caller's transaction ends: `(next_nonce, paused_reason)`.
#[tracing::instrument(skip(conn))]
pub async fn lock_nonce(
    conn: &mut Conn,
    chain_id: u64,
    signer: &str,
) -> Result<Option<(u64, Option<String>)>, StoreError> {
    let backend = Backend::of(conn);
    let row: Option<(i64, Option<String>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT next_nonce, paused_reason FROM signer_nonces WHERE chain_id = $1 AND signer_address = $2{}",
        backend.for_update()
    )))
    .bind(chain_id as i64)
    .bind(signer)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(n, p)| (n as u64, p)))
}

/// Creates a signer's nonce row at the chain's pending nonce (no-op when it exists).
#[tracing::instrument(skip(conn))]
pub async fn init_nonce(conn: &mut Conn, chain_id: u64, signer: &str, next_nonce: u64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signer_nonces (chain_id, signer_address, next_nonce) VALUES ($1, $2, $3) \
         ON CONFLICT (chain_id, signer_address) DO NOTHING",
    )
    .bind(chain_id as i64)
    .bind(signer)
    .bind(next_nonce as i64)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn set_next_nonce(conn: &mut Conn, chain_id: u64, signer: &str, next_nonce: u64) -> Result<(), StoreError> {
    sqlx::query("UPDATE signer_nonces SET next_nonce = $1 WHERE chain_id = $2 AND signer_address = $3")
        .bind(next_nonce as i64)
        .bind(chain_id as i64)
        .bind(signer)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Pauses (`Some(reason)`) or resumes (`None`) a signer.
#[tracing::instrument(skip(conn))]
pub async fn set_paused(conn: &mut Conn, chain_id: u64, signer: &str, reason: Option<&str>) -> Result<(), StoreError> {
    sqlx::query("UPDATE signer_nonces SET paused_reason = $1 WHERE chain_id = $2 AND signer_address = $3")
        .bind(reason)
        .bind(chain_id as i64)
        .bind(signer)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every signer with a nonce row on a chain: `(address, next_nonce, paused_reason)`.
#[tracing::instrument(skip(conn))]
pub async fn signers(conn: &mut Conn, chain_id: u64) -> Result<Vec<(String, u64, Option<String>)>, StoreError> {
    let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT signer_address, next_nonce, paused_reason FROM signer_nonces WHERE chain_id = $1 ORDER BY signer_address",
    )
    .bind(chain_id as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(a, n, p)| (a, n as u64, p)).collect())
}

/// Whether `tx_hash` is one of depositd's own gas top-ups (native coin the treasury sends to a
/// deposit address to pay for its sweep or forward): such a transfer is not a payment.
#[tracing::instrument(skip(conn))]
pub async fn is_gas_topup(conn: &mut Conn, tx_hash: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM chain_transaction_attempts a JOIN chain_transactions t ON t.id = a.transaction_id \
         WHERE a.tx_hash = $1 AND t.purpose = 'gas_topup'",
    )
    .bind(tx_hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.is_some())
}

/// Whether `tx_hash` is a transaction depositd signed (any purpose).
#[tracing::instrument(skip(conn))]
pub async fn is_ours(conn: &mut Conn, tx_hash: &str) -> Result<bool, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM chain_transaction_attempts WHERE tx_hash = $1")
        .bind(tx_hash)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.is_some())
}

/// Recent fees on a chain, as the settler last saw them: `(base_fee, priority_fee, updated_at)`.
#[tracing::instrument(skip(conn))]
pub async fn fee_estimate(conn: &mut Conn, chain_id: u64) -> Result<Option<(u128, u128, i64)>, StoreError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(
        "SELECT base_fee_per_gas, max_priority_fee_per_gas, updated_at FROM chain_fee_estimates WHERE chain_id = $1",
    )
    .bind(chain_id as i64)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(base, tip, at)| {
        Ok((
            parse_column("chain_fee_estimates.base_fee_per_gas", &base)?,
            parse_column("chain_fee_estimates.max_priority_fee_per_gas", &tip)?,
            at,
        ))
    })
    .transpose()
}

#[tracing::instrument(skip(conn))]
pub async fn store_fee_estimate(conn: &mut Conn, chain_id: u64, base: u128, tip: u128) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chain_fee_estimates (chain_id, base_fee_per_gas, max_priority_fee_per_gas, updated_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (chain_id) DO UPDATE SET base_fee_per_gas = excluded.base_fee_per_gas, \
         max_priority_fee_per_gas = excluded.max_priority_fee_per_gas, updated_at = excluded.updated_at",
    )
    .bind(chain_id as i64)
    .bind(Text(base))
    .bind(Text(tip))
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
