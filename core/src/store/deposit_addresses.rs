//! Deposit addresses derived from the hot wallet at a fresh HD index each.
//!
//! [`allocate`] is the one way an address is handed out: it takes a pooled one
//! ([`super::address_pool`]) first and falls back to the counter. The pool only stores and hands
//! out rows; it never calls back here (the types both use are `crate::deposit_address`'s).

use alloy::primitives::Address;
use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError, parse_column};
use crate::deposit_address::{AddressPurpose, DepositAddress};
use crate::time::now_ms;
use crate::wallet::HdWallet;

/// Hands out a deposit address: a pooled one when there is one (see [`super::address_pool`]),
/// else the next HD index, recorded now. Call inside the transaction that creates the invoice or
/// static address: if that rolls back, so does the allocation, and the counter row (locked until
/// commit) guarantees no index is ever handed out twice.
pub async fn allocate(
    conn: &mut Conn,
    wallet: &HdWallet,
    purpose: AddressPurpose,
) -> Result<DepositAddress, StoreError> {
    allocate_many(conn, wallet, purpose, 1)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("no deposit address was allocated".into()))
}

/// [`allocate`] for `count` resources made in one transaction (a batch of invoices): pooled
/// addresses first, in one statement, then the counter for the rest.
#[tracing::instrument(skip(conn, wallet))]
pub async fn allocate_many(
    conn: &mut Conn,
    wallet: &HdWallet,
    purpose: AddressPurpose,
    count: usize,
) -> Result<Vec<DepositAddress>, StoreError> {
    let mut allocated = super::address_pool::claim(conn, purpose, wallet, count).await?;
    while allocated.len() < count {
        let (index,): (i64,) = sqlx::query_as(
            "UPDATE counters SET value = value + 1 WHERE name = 'deposit_address_index' RETURNING value",
        )
        .fetch_one(&mut *conn)
        .await?;
        let index = u64::try_from(index).map_err(|_| StoreError::Corrupt(format!("deposit address index {index}")))?;
        let address = wallet.deposit_address(index).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let deposit = DepositAddress { id: Uuid::now_v7(), address, derivation_index: index };
        sqlx::query(
            "INSERT INTO deposit_addresses (id, address, derivation_index, purpose, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Text(deposit.id))
        .bind(address.to_checksum(None))
        .bind(index as i64)
        .bind(purpose)
        .bind(now_ms())
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::on_conflict(e, "deposit address"))?;
        allocated.push(deposit);
    }
    Ok(allocated)
}

/// A deposit address with what it was allocated for (the watcher's watched set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedAddress {
    pub id: Uuid,
    pub address: Address,
    pub derivation_index: u64,
    pub purpose: AddressPurpose,
}

#[derive(sqlx::FromRow)]
struct WatchedRow {
    id: Text<Uuid>,
    address: Text<Address>,
    derivation_index: i64,
    purpose: AddressPurpose,
}

impl From<WatchedRow> for WatchedAddress {
    fn from(r: WatchedRow) -> Self {
        WatchedAddress {
            id: r.id.0,
            address: r.address.0,
            derivation_index: r.derivation_index as u64,
            purpose: r.purpose,
        }
    }
}

/// Deposit addresses allocated after `after_index` (all when `None`), in index order: the watcher
/// loads them all once and then only the new ones, so it learns addresses without a restart.
#[tracing::instrument(skip(conn))]
pub async fn since(conn: &mut Conn, after_index: Option<u64>) -> Result<Vec<WatchedAddress>, StoreError> {
    let rows: Vec<WatchedRow> = sqlx::query_as(
        "SELECT id, address, derivation_index, purpose FROM deposit_addresses WHERE derivation_index > $1 ORDER BY derivation_index",
    )
    .bind(after_index.map(|i| i as i64).unwrap_or(-1))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(WatchedAddress::from).collect())
}

/// Up to `limit` deposit addresses allocated after `after_index` (from the first when `None`),
/// in index order, as `(derivation_index, address)`. The watcher loads its set a page at a time,
/// so even millions of addresses are never all held as rows at once.
#[tracing::instrument(skip(conn))]
pub async fn page_after(
    conn: &mut Conn,
    after_index: Option<u64>,
    limit: u32,
) -> Result<Vec<(u64, Address)>, StoreError> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT derivation_index, address FROM deposit_addresses WHERE derivation_index > $1 ORDER BY derivation_index LIMIT $2",
    )
    .bind(after_index.map(|i| i as i64).unwrap_or(-1))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(index, address)| {
            let index =
                u64::try_from(index).map_err(|_| StoreError::Corrupt(format!("deposit address index {index}")))?;
            Ok((index, parse_column("deposit_addresses.address", &address)?))
        })
        .collect()
}

/// One of our deposit addresses with what it was allocated for, `None` when it is not ours. The
/// watcher keeps only the addresses in memory and asks for the rest when a transfer reaches one.
#[tracing::instrument(skip(conn))]
pub async fn watched(conn: &mut Conn, address: Address) -> Result<Option<WatchedAddress>, StoreError> {
    let row: Option<(Text<Uuid>, i64, AddressPurpose)> =
        sqlx::query_as("SELECT id, derivation_index, purpose FROM deposit_addresses WHERE address = $1")
            .bind(address.to_checksum(None))
            .fetch_optional(&mut *conn)
            .await?;
    row.map(|(Text(id), index, purpose)| {
        Ok(WatchedAddress {
            id,
            address,
            derivation_index: u64::try_from(index)
                .map_err(|_| StoreError::Corrupt(format!("deposit address index {index}")))?,
            purpose,
        })
    })
    .transpose()
}

/// The HD index of one of our deposit addresses (EIP-55 form), `None` when it is not ours.
#[tracing::instrument(skip(conn))]
pub async fn index_of(conn: &mut Conn, address: &str) -> Result<Option<u64>, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT derivation_index FROM deposit_addresses WHERE address = $1")
        .bind(address)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(i,)| i as u64))
}

/// The deposit addresses the reconciliation reads on `chain_id`: every one handed out (invoice
/// and static; a missed deposit can be at one with no recorded deposit at all), and every other
/// one (pooled, or retired from another mnemonic's pool) that a recorded transfer reached. A
/// pooled address nothing ever paid was given to no payer and is not read. In HD index order,
/// read [`RECONCILED_PAGE`] rows per query (in the caller's transaction, so one snapshot sees
/// them all): with millions of addresses only the parsed addresses are held, never every row.
#[tracing::instrument(skip(conn))]
pub async fn reconciled(conn: &mut Conn, chain_id: u64) -> Result<Vec<Address>, StoreError> {
    reconciled_in_pages(conn, chain_id, RECONCILED_PAGE).await
}

/// [`reconciled`], `page` rows (at least 1) per query (tests read small pages).
pub async fn reconciled_in_pages(conn: &mut Conn, chain_id: u64, page: i64) -> Result<Vec<Address>, StoreError> {
    let page_size = page.max(1);
    let mut addresses = Vec::new();
    let mut after = -1_i64;
    loop {
        // Only a rejected transfer can reach an address no invoice or static address owns.
        let page: Vec<(String, i64)> = sqlx::query_as(
            "SELECT address, derivation_index FROM deposit_addresses WHERE derivation_index > $2 AND (pooled = 0 \
             OR address IN (SELECT to_address FROM deposits WHERE chain_id = $1 AND state = 'rejected')) \
             ORDER BY derivation_index LIMIT $3",
        )
        .bind(chain_id as i64)
        .bind(after)
        .bind(page_size)
        .fetch_all(&mut *conn)
        .await?;
        let last_page = page.len() < page_size as usize;
        // Grown by the page, not doubled: a doubling at millions of addresses would hold up to
        // twice the list while it grows.
        addresses.reserve_exact(page.len());
        for (address, index) in page {
            addresses.push(parse_column("deposit_addresses.address", &address)?);
            after = index;
        }
        if last_page {
            return Ok(addresses);
        }
    }
}

/// Rows per query of [`reconciled`].
pub const RECONCILED_PAGE: i64 = 50_000;
