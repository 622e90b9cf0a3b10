//! Resolutions of transfers in suspense (`deposit_resolutions`): one live (not failed) per life
//! of a deposit, enforced by a unique index.

use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Conn, StoreError};
use crate::resolution::{Resolution, ResolutionAction, ResolutionState};
use crate::time::now_ms;

const COLUMNS: &str = "id, deposit_id, generation, action, invoice_id, merchant_id, destination, transaction_id, \
    state, reason, actor, failure_reason, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Text<Uuid>,
    deposit_id: Text<Uuid>,
    generation: i64,
    action: ResolutionAction,
    invoice_id: Option<Text<Uuid>>,
    merchant_id: Option<Text<Uuid>>,
    destination: Option<String>,
    transaction_id: Option<Text<Uuid>>,
    state: ResolutionState,
    reason: String,
    actor: String,
    failure_reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<Row> for Resolution {
    fn from(r: Row) -> Self {
        Resolution {
            id: r.id.0,
            deposit_id: r.deposit_id.0,
            generation: r.generation,
            action: r.action,
            invoice_id: opt(r.invoice_id),
            merchant_id: opt(r.merchant_id),
            destination: r.destination,
            transaction_id: opt(r.transaction_id),
            state: r.state,
            reason: r.reason,
            actor: r.actor,
            failure_reason: r.failure_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Inserts a resolution; a second live one for the same life of a deposit is a conflict.
#[tracing::instrument(skip_all, fields(resolution_id = %r.id, deposit_id = %r.deposit_id))]
pub async fn insert(conn: &mut Conn, r: &Resolution) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO deposit_resolutions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    )))
    .bind(Text(r.id))
    .bind(Text(r.deposit_id))
    .bind(r.generation)
    .bind(r.action)
    .bind(r.invoice_id.map(Text))
    .bind(r.merchant_id.map(Text))
    .bind(&r.destination)
    .bind(r.transaction_id.map(Text))
    .bind(r.state)
    .bind(&r.reason)
    .bind(&r.actor)
    .bind(&r.failure_reason)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::on_conflict(e, "deposit resolution"))?;
    Ok(())
}

/// The live (pending or completed) resolution of one life of a deposit, if any.
#[tracing::instrument(skip(conn))]
pub async fn live_for(conn: &mut Conn, deposit_id: Uuid, generation: i64) -> Result<Option<Resolution>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_resolutions WHERE deposit_id = $1 AND generation = $2 AND state <> 'failed'"
    )))
    .bind(Text(deposit_id))
    .bind(generation)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Resolution::from))
}

/// The live (pending or completed) resolution of any life of a deposit, if any: a deposit revived
/// by a reorg is the same transfer, and money that already left suspense must not leave twice.
#[tracing::instrument(skip(conn))]
pub async fn live_any(conn: &mut Conn, deposit_id: Uuid) -> Result<Option<Resolution>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_resolutions WHERE deposit_id = $1 AND state <> 'failed' ORDER BY id LIMIT 1"
    )))
    .bind(Text(deposit_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Resolution::from))
}

/// The resolution a refund transaction sends, if any.
#[tracing::instrument(skip(conn))]
pub async fn by_transaction(conn: &mut Conn, transaction_id: Uuid) -> Result<Option<Resolution>, StoreError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_resolutions WHERE transaction_id = $1"
    )))
    .bind(Text(transaction_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(Resolution::from))
}

/// Every resolution of a deposit, oldest first.
#[tracing::instrument(skip(conn))]
pub async fn of_deposit(conn: &mut Conn, deposit_id: Uuid) -> Result<Vec<Resolution>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deposit_resolutions WHERE deposit_id = $1 ORDER BY id"
    )))
    .bind(Text(deposit_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Resolution::from).collect())
}

/// Moves a pending resolution to `to`; false when it was not pending.
#[tracing::instrument(skip(conn))]
pub async fn finish(
    conn: &mut Conn,
    id: Uuid,
    to: ResolutionState,
    failure_reason: Option<&str>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE deposit_resolutions SET state = $1, failure_reason = $2, updated_at = $3 WHERE id = $4 AND state = 'pending'",
    )
    .bind(to)
    .bind(failure_reason)
    .bind(now_ms())
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
