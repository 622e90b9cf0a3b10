//! Recent canonical block hashes per chain, for reorg detection.

use super::{Conn, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub hash: String,
    pub parent_hash: String,
}

#[tracing::instrument(skip(conn, blocks))]
pub async fn save(conn: &mut Conn, chain_id: u64, blocks: &[BlockRef]) -> Result<(), StoreError> {
    for block in blocks {
        sqlx::query(
            "INSERT INTO block_hashes (chain_id, block_number, block_hash, parent_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (chain_id, block_number) DO UPDATE SET block_hash = excluded.block_hash, parent_hash = excluded.parent_hash",
        )
        .bind(chain_id as i64)
        .bind(block.number as i64)
        .bind(&block.hash)
        .bind(&block.parent_hash)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, chain_id: u64, number: u64) -> Result<Option<BlockRef>, StoreError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT block_hash, parent_hash FROM block_hashes WHERE chain_id = $1 AND block_number = $2")
            .bind(chain_id as i64)
            .bind(number as i64)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(hash, parent_hash)| BlockRef { number, hash, parent_hash }))
}

/// The highest stored block below `below` (the watcher keeps some blocks' hashes only where it
/// caught up over final blocks, so the stored heights may have gaps).
pub async fn highest_below(conn: &mut Conn, chain_id: u64, below: u64) -> Result<Option<BlockRef>, StoreError> {
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT block_number, block_hash, parent_hash FROM block_hashes WHERE chain_id = $1 AND block_number < $2 \
         ORDER BY block_number DESC LIMIT 1",
    )
    .bind(chain_id as i64)
    .bind(below as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(number, hash, parent_hash)| BlockRef { number: number as u64, hash, parent_hash }))
}

/// The lowest stored block above `above`.
pub async fn lowest_above(conn: &mut Conn, chain_id: u64, above: u64) -> Result<Option<BlockRef>, StoreError> {
    let row: Option<(i64, String, String)> = sqlx::query_as(
        "SELECT block_number, block_hash, parent_hash FROM block_hashes WHERE chain_id = $1 AND block_number > $2 \
         ORDER BY block_number ASC LIMIT 1",
    )
    .bind(chain_id as i64)
    .bind(above as i64)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(number, hash, parent_hash)| BlockRef { number: number as u64, hash, parent_hash }))
}

/// Forgets blocks above `number` (they left the canonical chain) and below `keep_from` (too old
/// to matter for reorgs).
#[tracing::instrument(skip(conn))]
pub async fn prune(conn: &mut Conn, chain_id: u64, above: Option<u64>, keep_from: u64) -> Result<(), StoreError> {
    if let Some(above) = above {
        sqlx::query("DELETE FROM block_hashes WHERE chain_id = $1 AND block_number > $2")
            .bind(chain_id as i64)
            .bind(above as i64)
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM block_hashes WHERE chain_id = $1 AND block_number < $2")
        .bind(chain_id as i64)
        .bind(keep_from as i64)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
