//! Invoice addresses derived ahead of time, so that creating an invoice does not wait for the
//! invoice created before it.
//!
//! Allocating an HD index bumps one counter row, which a transaction holds until it commits:
//! allocating inside each invoice's transaction makes creations commit one at a time. The pool
//! moves that work out of the request: [`refill`] derives a batch of addresses outside any
//! transaction, then claims their indices with one conditional counter update and stores them
//! with `pooled = 1`, all in one short transaction; [`claim`] hands one out inside the invoice's
//! transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent creations take different
//! rows). A rolled-back claim puts the address back. When the pool is empty,
//! [`super::deposit_addresses::allocate`] falls back to the counter.
//!
//! The counter still moves in commit order, and pooled addresses are ordinary rows of
//! `deposit_addresses`: the watcher, which loads addresses by increasing index, watches every
//! pooled address before it is handed out. An address is never handed out twice: the claim clears
//! `pooled` on the row it returns, conditionally on the row being pooled.

use alloy::primitives::Address;
use uuid::Uuid;

use super::deposit_addresses::{AddressPurpose, DepositAddress};
use super::{Backend, Conn, Store, StoreError, parse_column};
use crate::time::now_ms;
use crate::wallet::HdWallet;

/// Rows per INSERT statement when storing a batch.
const INSERT_CHUNK: usize = 100;
/// Conditional counter updates tried before a refill gives up (another process keeps winning).
const CAS_ATTEMPTS: usize = 5;

/// Takes a pooled address for `purpose`, if there is one. Call inside the transaction that
/// creates the resource: if it rolls back, the address is pooled again.
pub async fn claim(conn: &mut Conn, purpose: AddressPurpose) -> Result<Option<DepositAddress>, StoreError> {
    let skip_locked = Backend::of(conn).skip_locked();
    let row: Option<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE deposit_addresses SET pooled = 0, created_at = $1 WHERE pooled = 1 AND id = \
         (SELECT id FROM deposit_addresses WHERE pooled = 1 AND purpose = $2 ORDER BY derivation_index LIMIT 1{skip_locked}) \
         RETURNING id, address, derivation_index"
    )))
    .bind(now_ms())
    .bind(purpose.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(id, address, index)| {
        Ok(DepositAddress {
            id: parse_column("deposit_addresses.id", &id)?,
            address: parse_column("deposit_addresses.address", &address)?,
            derivation_index: u64::try_from(index)
                .map_err(|_| StoreError::Corrupt(format!("deposit address index {index}")))?,
        })
    })
    .transpose()
}

/// How many addresses for `purpose` are pooled and not yet handed out.
pub async fn pooled(conn: &mut Conn, purpose: AddressPurpose) -> Result<u64, StoreError> {
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposit_addresses WHERE pooled = 1 AND purpose = $1")
        .bind(purpose.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(count.max(0) as u64)
}

/// Derives `count` new addresses for `purpose` and pools them; returns how many were added (0
/// when other processes kept allocating indices meanwhile; the next refill tries again).
pub async fn refill(store: &Store, wallet: &HdWallet, purpose: AddressPurpose, count: u64) -> Result<u64, StoreError> {
    if count == 0 {
        return Ok(0);
    }
    for _ in 0..CAS_ATTEMPTS {
        let (current,): (i64,) = sqlx::query_as("SELECT value FROM counters WHERE name = 'deposit_address_index'")
            .fetch_one(store.pool())
            .await?;
        let first = u64::try_from(current + 1)
            .map_err(|_| StoreError::Corrupt(format!("deposit address counter {current}")))?;
        let last = first + count - 1;
        // Deriving costs an elliptic-curve multiplication per address: off the async threads and
        // outside the transaction.
        let deriving = wallet.clone();
        let addresses: Vec<(u64, Address)> = tokio::task::spawn_blocking(move || {
            (first..=last).map(|index| deriving.deposit_address(index).map(|a| (index, a))).collect::<Result<_, _>>()
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("address derivation stopped: {e}")))?
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;

        let mut tx = store.begin().await?;
        let moved = sqlx::query("UPDATE counters SET value = $1 WHERE name = 'deposit_address_index' AND value = $2")
            .bind(last as i64)
            .bind(current)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if moved == 0 {
            tx.rollback().await?;
            continue; // Another allocation came first: derive the indices after it.
        }
        let now = now_ms();
        for chunk in addresses.chunks(INSERT_CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${}, $1, ${}, 1)", 4 * i + 2, 4 * i + 3, 4 * i + 4, 4 * i + 5))
                .collect();
            let sql = format!(
                "INSERT INTO deposit_addresses (id, address, derivation_index, purpose, created_at, pooled) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(purpose.as_str());
            for (index, address) in chunk {
                query = query
                    .bind(Uuid::now_v7().to_string())
                    .bind(address.to_checksum(None))
                    .bind(*index as i64)
                    .bind(now);
            }
            query.execute(&mut *tx).await.map_err(|e| StoreError::on_conflict(e, "deposit address"))?;
        }
        tx.commit().await?;
        return Ok(count);
    }
    Ok(0)
}
