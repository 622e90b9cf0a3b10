//! Payouts and refunds (`payouts`): money a merchant sends out of its available balance.

use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Conn, StoreError};
use crate::money::BaseUnits;
use crate::payout::{Payout, PayoutKind, PayoutStatus};
use crate::time::now_ms;

const COLUMNS: &str = "id, merchant_id, kind, external_id, invoice_id, chain_id, asset, amount_base_units, \
    fee_reserve_base_units, network_fee_base_units, destination, status, metadata, transaction_id, failure_reason, \
    created_at, updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    kind: PayoutKind,
    external_id: Option<String>,
    invoice_id: Option<Text<Uuid>>,
    chain_id: i64,
    asset: String,
    amount_base_units: Text<BaseUnits>,
    fee_reserve_base_units: Text<BaseUnits>,
    network_fee_base_units: Option<Text<BaseUnits>>,
    destination: String,
    status: PayoutStatus,
    metadata: Option<String>,
    transaction_id: Option<Text<Uuid>>,
    failure_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<Row> for Payout {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(Payout {
            id: r.id.0,
            merchant_id: r.merchant_id.0,
            kind: r.kind,
            external_id: r.external_id,
            invoice_id: opt(r.invoice_id),
            chain_id: r.chain_id as u64,
            asset: r.asset,
            amount: r.amount_base_units.0,
            fee_reserve: r.fee_reserve_base_units.0,
            network_fee: opt(r.network_fee_base_units),
            destination: r.destination,
            status: r.status,
            metadata: r.metadata,
            transaction_id: opt(r.transaction_id),
            failure_reason: r.failure_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Inserts a payout; a second payout with the merchant's `external_id` is a conflict.
#[tracing::instrument(skip_all, fields(payout_id = %p.id))]
pub async fn insert(conn: &mut Conn, p: &Payout) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO payouts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    )))
    .bind(Text(p.id))
    .bind(Text(p.merchant_id))
    .bind(p.kind)
    .bind(&p.external_id)
    .bind(p.invoice_id.map(Text))
    .bind(p.chain_id as i64)
    .bind(&p.asset)
    .bind(p.amount)
    .bind(p.fee_reserve)
    .bind(p.network_fee.map(Text))
    .bind(&p.destination)
    .bind(p.status)
    .bind(&p.metadata)
    .bind(p.transaction_id.map(Text))
    .bind(&p.failure_reason)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::on_conflict(e, "payout external_id"))?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<Payout>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payouts WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Payout::try_from).transpose()
}

#[tracing::instrument(skip(conn))]
pub async fn get_any(conn: &mut Conn, id: Uuid) -> Result<Option<Payout>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM payouts WHERE id = $1")))
        .bind(Text(id))
        .fetch_optional(&mut *conn)
        .await?;
    row.map(Payout::try_from).transpose()
}

/// A merchant's payouts, newest first, after the cursor `starting_after`.
#[tracing::instrument(skip(conn))]
pub async fn list(
    conn: &mut Conn,
    merchant_id: Uuid,
    status: Option<PayoutStatus>,
    invoice_id: Option<Uuid>,
    starting_after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Payout>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payouts WHERE merchant_id = $1 AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR invoice_id = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    )))
    .bind(Text(merchant_id))
    .bind(status.map(|s| s.as_str()))
    .bind(invoice_id.map(Text))
    .bind(starting_after.map(Text))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    found.into_iter().map(Payout::try_from).collect()
}

/// Refunds of an invoice that are not failed or cancelled: what is promised back already.
#[tracing::instrument(skip(conn))]
pub async fn refunds_of(conn: &mut Conn, invoice_id: Uuid) -> Result<Vec<Payout>, StoreError> {
    let found: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payouts WHERE invoice_id = $1 AND kind = 'refund' AND status NOT IN ('failed', 'cancelled')"
    )))
    .bind(Text(invoice_id))
    .fetch_all(&mut *conn)
    .await?;
    found.into_iter().map(Payout::try_from).collect()
}

/// Moves a payout from `from` to `to`; false when it was not in `from`.
#[tracing::instrument(skip(conn))]
pub async fn transition(
    conn: &mut Conn,
    id: Uuid,
    from: PayoutStatus,
    to: PayoutStatus,
    network_fee: Option<BaseUnits>,
    failure_reason: Option<&str>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE payouts SET status = $1, network_fee_base_units = COALESCE($2, network_fee_base_units), \
         failure_reason = COALESCE($3, failure_reason), updated_at = $4 WHERE id = $5 AND status = $6",
    )
    .bind(to)
    .bind(network_fee.map(Text))
    .bind(failure_reason)
    .bind(now_ms())
    .bind(Text(id))
    .bind(from)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One event recorded about a payout, as its page lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PayoutEvent {
    pub event_type: String,
    /// Epoch milliseconds.
    pub created_at: i64,
}

/// The events recorded about merchant `merchant_id`'s payout `payout_id`, oldest first.
#[tracing::instrument(skip(conn))]
pub async fn events_of(conn: &mut Conn, merchant_id: Uuid, payout_id: Uuid) -> Result<Vec<PayoutEvent>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT event_type, created_at FROM events WHERE merchant_id = $1 AND resource_id = $2 ORDER BY id",
    )
    .bind(Text(merchant_id))
    .bind(Text(payout_id))
    .fetch_all(&mut *conn)
    .await?)
}
