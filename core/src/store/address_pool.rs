//! Invoice addresses derived ahead of time, so that creating an invoice does not wait for the
//! invoice created before it.
//!
//! Allocating an HD index bumps one counter row, which a transaction holds until it commits:
//! allocating inside each invoice's transaction makes creations commit one at a time. The pool
//! moves that work out of the request: [`refill`] derives a batch of addresses, normally outside
//! any transaction, then claims their indices with one conditional counter update and stores them
//! with `pooled = 1`, all in one short transaction; [`claim`] hands them out inside the invoices'
//! transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent creations take different
//! rows). A rolled-back claim puts the address back. Its one caller is
//! `store::deposit_addresses::allocate`, which falls back to the counter when the pool is empty.
//!
//! The counter still moves in commit order, and pooled addresses are ordinary rows of
//! `deposit_addresses`: the watcher, which loads addresses by increasing index, watches every
//! pooled address before it is handed out. An address is never handed out twice: the claim clears
//! `pooled` on the row it returns, conditionally on the row being pooled.

use alloy::primitives::Address;
use uuid::Uuid;

use super::codec::Text;
use super::{Backend, Conn, Store, StoreError, parse_column};
use crate::deposit_address::{AddressPurpose, DepositAddress};
use crate::time::now_ms;
use crate::wallet::HdWallet;

/// Rows per INSERT statement when storing a batch.
const INSERT_CHUNK: usize = 100;
/// Optimistic refills tried before one holds the counter row while it derives.
const OPTIMISTIC_ATTEMPTS: u32 = 3;

/// Takes up to `count` pooled addresses for `purpose` (fewer when the pool holds fewer), in one
/// statement, by increasing index. Call inside the transaction that creates the resources: if it
/// rolls back, the addresses are pooled again.
///
/// Each address must be `wallet`'s own at its index: one derived from another mnemonic (the
/// operator replaced it, or a misconfigured daemon shares the database) would take payments only
/// that mnemonic can sweep. Then every pooled address is retired (`pooled = 2`: still watched,
/// never handed out) with the claim's transaction, and none is returned: the caller derives its
/// own, and the pool is refilled from this wallet.
#[tracing::instrument(skip(conn, wallet))]
pub async fn claim(
    conn: &mut Conn,
    purpose: AddressPurpose,
    wallet: &HdWallet,
    count: usize,
) -> Result<Vec<DepositAddress>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let claimed = take(conn, purpose, count).await?;
    let mut foreign = Vec::new();
    for address in &claimed {
        let own = wallet
            .is_own_deposit_address(address.derivation_index, address.address)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if !own {
            foreign.push(address);
        }
    }
    let Some(first) = foreign.first() else {
        return Ok(claimed);
    };
    // The taken rows are retired too (they were pooled a moment ago): none of them is handed out.
    let mut retired = sqlx::query("UPDATE deposit_addresses SET pooled = 2 WHERE pooled = 1")
        .execute(&mut *conn)
        .await?
        .rows_affected();
    for address in &claimed {
        retired += sqlx::query("UPDATE deposit_addresses SET pooled = 2 WHERE id = $1")
            .bind(Text(address.id))
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    tracing::error!(
        index = first.derivation_index,
        retired,
        "a pooled deposit address was derived from another mnemonic than this daemon's; the pool is retired \
         (do all daemons on this database use the same wallet?)"
    );
    Ok(Vec::new())
}

#[tracing::instrument(skip(conn))]
async fn take(conn: &mut Conn, purpose: AddressPurpose, count: usize) -> Result<Vec<DepositAddress>, StoreError> {
    let backend = Backend::of(conn);
    let pick = format!(
        "SELECT id FROM deposit_addresses WHERE pooled = 1 AND purpose = $2 ORDER BY derivation_index LIMIT $3{}",
        backend.skip_locked()
    );
    // On PostgreSQL the rows are picked once (`ARRAY(...)`): an `IN (subquery)` may be run again
    // by the plan, and with SKIP LOCKED pick other rows the second time, more than asked for.
    let chosen = match backend {
        Backend::Postgres => format!("id = ANY(ARRAY({pick}))"),
        Backend::Sqlite => format!("id IN ({pick})"),
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE deposit_addresses SET pooled = 0, created_at = $1 WHERE pooled = 1 AND {chosen} \
         RETURNING id, address, derivation_index"
    )))
    .bind(now_ms())
    .bind(purpose)
    .bind(count as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut taken = rows
        .into_iter()
        .map(|(id, address, index)| {
            Ok(DepositAddress {
                id: parse_column("deposit_addresses.id", &id)?,
                address: parse_column("deposit_addresses.address", &address)?,
                derivation_index: u64::try_from(index)
                    .map_err(|_| StoreError::Corrupt(format!("deposit address index {index}")))?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    if taken.len() > count {
        return Err(StoreError::Corrupt(format!("the address pool handed out {} addresses for {count}", taken.len())));
    }
    // RETURNING's order is the database's; hand them out by index.
    taken.sort_by_key(|a| a.derivation_index);
    Ok(taken)
}

/// How many addresses for `purpose` are pooled and not yet handed out.
#[tracing::instrument(skip(conn))]
pub async fn pooled(conn: &mut Conn, purpose: AddressPurpose) -> Result<u64, StoreError> {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposit_addresses WHERE pooled = 1 AND purpose = $1")
        .bind(purpose)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count.max(0) as u64)
}

/// Derives `count` new addresses for `purpose` and pools them; returns how many were added.
///
/// First optimistically: read the counter, derive outside any transaction, then claim the indices
/// only if the counter has not moved meanwhile. Under load with an empty pool, creations falling
/// back to the counter move it all the time, so after a few lost races the last attempt holds the
/// counter row while it derives: slower for that moment, but the pool always gets refilled.
#[tracing::instrument(skip(store, wallet))]
pub async fn refill(store: &Store, wallet: &HdWallet, purpose: AddressPurpose, count: u64) -> Result<u64, StoreError> {
    if count == 0 {
        return Ok(0);
    }
    for attempt in 1..=OPTIMISTIC_ATTEMPTS {
        let (current,): (i64,) = sqlx::query_as("SELECT value FROM counters WHERE name = 'deposit_address_index'")
            .fetch_one(store.pool())
            .await?;
        let addresses = derive(wallet, current, count).await?;
        let mut tx = store.begin().await?;
        let moved = sqlx::query("UPDATE counters SET value = $1 WHERE name = 'deposit_address_index' AND value = $2")
            .bind(current + count as i64)
            .bind(current)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 1 {
            store_pooled(&mut tx, purpose, &addresses).await?;
            tx.commit().await?;
            return Ok(count);
        }
        tx.rollback().await?;
        tracing::debug!(attempt, "the address counter moved while deriving; deriving again");
    }
    let mut tx = store.begin().await?;
    let (last,): (i64,) =
        sqlx::query_as("UPDATE counters SET value = value + $1 WHERE name = 'deposit_address_index' RETURNING value")
            .bind(count as i64)
            .fetch_one(&mut *tx)
            .await?;
    let addresses = derive(wallet, last - count as i64, count).await?;
    store_pooled(&mut tx, purpose, &addresses).await?;
    tx.commit().await?;
    Ok(count)
}

/// The `count` addresses after index `current`. Deriving costs an elliptic-curve multiplication
/// per address: it runs off the async threads.
#[tracing::instrument(skip(wallet))]
async fn derive(wallet: &HdWallet, current: i64, count: u64) -> Result<Vec<(u64, Address)>, StoreError> {
    let first =
        u64::try_from(current + 1).map_err(|_| StoreError::Corrupt(format!("deposit address counter {current}")))?;
    let last = first + count - 1;
    let wallet = wallet.clone();
    tokio::task::spawn_blocking(move || {
        (first..=last).map(|index| wallet.deposit_address(index).map(|a| (index, a))).collect::<Result<_, _>>()
    })
    .await
    .map_err(|e| StoreError::Corrupt(format!("address derivation stopped: {e}")))?
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[tracing::instrument(skip(conn, addresses), fields(count = addresses.len()))]
async fn store_pooled(
    conn: &mut Conn,
    purpose: AddressPurpose,
    addresses: &[(u64, Address)],
) -> Result<(), StoreError> {
    let now = now_ms();
    for chunk in addresses.chunks(INSERT_CHUNK) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${}, $1, ${}, 1)", 4 * i + 2, 4 * i + 3, 4 * i + 4, 4 * i + 5))
            .collect();
        let sql = format!(
            "INSERT INTO deposit_addresses (id, address, derivation_index, purpose, created_at, pooled) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(purpose);
        for (index, address) in chunk {
            query =
                query.bind(Uuid::now_v7().to_string()).bind(address.to_checksum(None)).bind(*index as i64).bind(now);
        }
        query.execute(&mut *conn).await.map_err(|e| StoreError::on_conflict(e, "deposit address"))?;
    }
    Ok(())
}
