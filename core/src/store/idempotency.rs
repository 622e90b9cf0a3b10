//! Idempotency records: a merchant's `Idempotency-Key` maps to the first response, byte for byte.
//!
//! Claiming is an `INSERT ... ON CONFLICT DO NOTHING`, so among concurrent requests with one key
//! exactly one becomes the owner on either backend. The owner completes the record in the same
//! transaction as its work ([`complete`]); if it fails, it releases the claim ([`release`]); if it
//! crashes, its lease (`locked_until`) runs out and a retry takes over. Nothing it did survives a
//! crash without the record being completed, because both commit together.

use uuid::Uuid;

use super::codec::Text;
use super::{Conn, Store, StoreError};
use crate::time::now_ms;

/// How long records are kept (the API promises at least 24 h).
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How long an owner may work before its claim can be taken over.
pub const LEASE_MS: i64 = 30 * 1000;

/// The outcome of presenting a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key and must do the work.
    Owned,
    /// The key was used before with the same request: answer with this.
    Replay { status: u16, body: String },
    /// The key was used with a different request or on another endpoint.
    Mismatch,
    /// Another request with this key is being processed right now.
    InProgress,
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    endpoint: String,
    request_hash: String,
    state: String,
    response_status: Option<i64>,
    response_body: Option<String>,
    locked_until: i64,
}

#[tracing::instrument(skip(store, request_hash))]
pub async fn claim(
    store: &Store,
    merchant_id: Uuid,
    key: &str,
    endpoint: &str,
    request_hash: &str,
) -> Result<Claim, StoreError> {
    let now = now_ms();
    let mut tx = store.begin().await?;
    // Forget a record past its retention, so the key can be used afresh.
    sqlx::query("DELETE FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2 AND expires_at <= $3")
        .bind(Text(merchant_id))
        .bind(key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, idempotency_key, endpoint, request_hash, state, locked_until, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, $7) ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
    )
    .bind(Text(merchant_id))
    .bind(key)
    .bind(endpoint)
    .bind(request_hash)
    .bind(now + LEASE_MS)
    .bind(now)
    .bind(now + RETENTION_MS)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        tx.commit().await?;
        return Ok(Claim::Owned);
    }
    let row: Option<StoredKey> = sqlx::query_as(
        "SELECT endpoint, request_hash, state, response_status, response_body, locked_until FROM idempotency_keys \
         WHERE merchant_id = $1 AND idempotency_key = $2",
    )
    .bind(Text(merchant_id))
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(StoredKey {
        endpoint: stored_endpoint,
        request_hash: stored_hash,
        state,
        response_status: status,
        response_body: body,
        locked_until,
    }) = row
    else {
        // Released between our insert and select: the caller retries the claim.
        tx.commit().await?;
        return Ok(Claim::InProgress);
    };
    let claim = if stored_endpoint != endpoint || stored_hash != request_hash {
        Claim::Mismatch
    } else if state == "completed" {
        let status = status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency status".into()))?;
        Claim::Replay { status, body: body.unwrap_or_default() }
    } else if locked_until <= now {
        // The owner died mid-request; its work never committed. Take over, exactly once.
        let taken = sqlx::query(
            "UPDATE idempotency_keys SET locked_until = $1 WHERE merchant_id = $2 AND idempotency_key = $3 \
             AND state = 'in_progress' AND locked_until = $4",
        )
        .bind(now + LEASE_MS)
        .bind(Text(merchant_id))
        .bind(key)
        .bind(locked_until)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() == 1 { Claim::Owned } else { Claim::InProgress }
    } else {
        Claim::InProgress
    };
    tx.commit().await?;
    Ok(claim)
}

/// Stores the response; call in the transaction that did the work.
#[tracing::instrument(skip(conn, body))]
pub async fn complete(
    conn: &mut Conn,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'completed', response_status = $1, response_body = $2 \
         WHERE merchant_id = $3 AND idempotency_key = $4",
    )
    .bind(status as i64)
    .bind(body)
    .bind(Text(merchant_id))
    .bind(key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives a claim back after a failed request, so a corrected retry can use the key.
#[tracing::instrument(skip(store))]
pub async fn release(store: &Store, merchant_id: Uuid, key: &str) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2 AND state = 'in_progress'",
    )
    .bind(Text(merchant_id))
    .bind(key)
    .execute(store.pool())
    .await?;
    Ok(())
}
