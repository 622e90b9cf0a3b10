//! The watcher's position on each chain.

use super::{Conn, StoreError};
use crate::time::now_ms;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCursor {
    pub chain_id: u64,
    /// The last block whose deposits are fully recorded.
    pub block_number: u64,
    /// Its hash, so a reorg under the cursor is noticed on restart.
    pub block_hash: String,
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, chain_id: u64) -> Result<Option<ChainCursor>, StoreError> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT block_number, block_hash FROM chain_cursors WHERE chain_id = $1")
            .bind(chain_id as i64)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(block_number, block_hash)| ChainCursor { chain_id, block_number: block_number as u64, block_hash }))
}

/// The cursor, its row locked until the caller's transaction ends (PostgreSQL; on SQLite the
/// write transaction already excludes every other writer): for work that must not interleave
/// with the watcher moving it.
#[tracing::instrument(skip(conn))]
pub async fn get_locked(conn: &mut Conn, chain_id: u64) -> Result<Option<ChainCursor>, StoreError> {
    let for_update = super::Backend::of(conn).for_update();
    let row: Option<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT block_number, block_hash FROM chain_cursors WHERE chain_id = $1{for_update}"
    )))
    .bind(chain_id as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(block_number, block_hash)| ChainCursor { chain_id, block_number: block_number as u64, block_hash }))
}

/// Moves the cursor. Call in the same transaction as the deposits found up to this block.
#[tracing::instrument(skip(conn, cursor), fields(chain_id = cursor.chain_id, block_number = cursor.block_number))]
pub async fn set(conn: &mut Conn, cursor: &ChainCursor) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO chain_cursors (chain_id, block_number, block_hash, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (chain_id) DO UPDATE SET block_number = excluded.block_number, \
         block_hash = excluded.block_hash, updated_at = excluded.updated_at",
    )
    .bind(cursor.chain_id as i64)
    .bind(cursor.block_number as i64)
    .bind(&cursor.block_hash)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
