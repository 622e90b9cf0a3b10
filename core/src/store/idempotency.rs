//! Idempotency records: a merchant's `Idempotency-Key` maps to the first response, byte for byte.
//!
//! A key is claimed inside the transaction that does the request's work ([`claim`], first thing
//! in it) and completed in that same transaction ([`complete`], last thing before the commit), so
//! the record becomes visible together with what the request made, or not at all:
//! - a request that fails (an error, a dropped transaction) rolls its claim back with its work:
//!   a corrected retry with the same key proceeds;
//! - a process that crashes mid-request never commits: its database session ends, the claim is
//!   rolled back, and a retry proceeds (nothing it did survives);
//! - among concurrent requests with one key exactly one inserts the record. On PostgreSQL the
//!   others' `INSERT ... ON CONFLICT DO NOTHING` waits for the owner's transaction to end, then
//!   inserts (the owner rolled back) or does nothing (it committed: the next statement reads the
//!   completed record and replays it). On SQLite write transactions are serialized
//!   (`BEGIN IMMEDIATE`), so the next one reads the committed record.
//!
//! Records `in_progress` are committed only by daemons from before this scheme (which claimed in
//! a transaction of its own, with a lease in `locked_until`): [`claim`] waits for such an owner
//! and takes over once its lease has run out.
//!
//! [`lookup`] reads a record without claiming, so the API answers a replay or a conflict before
//! it checks the body's fields (and without a write).
//!
//! Requests made together in one transaction (the API's group commit) claim their keys first
//! thing in it, together ([`claim_many`]), and complete them last ([`complete_many`]): the same
//! rules, a statement for many keys. A key that turns out taken is left out of the batch, and its
//! request is made on its own afterwards, where [`claim`] answers for it.

use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError};
use crate::time::now_ms;

/// How long records are kept (the API promises at least 24 h).
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// How long an owner may work before its claim can be taken over (written for daemons of the
/// earlier scheme, which honour it; claims of this one are never committed `in_progress`).
pub const LEASE_MS: i64 = 30 * 1000;

/// The outcome of presenting a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key and must do the work (in the transaction that claimed it).
    Owned,
    /// The key was used before with the same request: answer with this.
    Replay { status: u16, body: String },
    /// The key was used with a different request or on another endpoint.
    Mismatch,
    /// Another request with this key is being processed right now (an earlier daemon's claim).
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

async fn stored(conn: &mut Conn, merchant_id: Uuid, key: &str, now: i64) -> Result<Option<StoredKey>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT endpoint, request_hash, state, response_status, response_body, locked_until FROM idempotency_keys \
         WHERE merchant_id = $1 AND idempotency_key = $2 AND expires_at > $3",
    )
    .bind(Text(merchant_id))
    .bind(key)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?)
}

/// What a live record says to a request with `endpoint` and `request_hash`; `None`: an earlier
/// daemon's owner whose lease ran out (the caller may take over).
fn judge(row: StoredKey, endpoint: &str, request_hash: &str, now: i64) -> Result<Option<Claim>, StoreError> {
    if row.endpoint != endpoint || row.request_hash != request_hash {
        return Ok(Some(Claim::Mismatch));
    }
    if row.state == "completed" {
        let status = row
            .response_status
            .and_then(|s| u16::try_from(s).ok())
            .ok_or_else(|| StoreError::Corrupt("idempotency status".into()))?;
        return Ok(Some(Claim::Replay { status, body: row.response_body.unwrap_or_default() }));
    }
    Ok(if row.locked_until <= now { None } else { Some(Claim::InProgress) })
}

/// Reads the record of `key` without claiming it: `None` when there is none (or none that binds:
/// expired, or an earlier daemon's claim whose lease ran out), so the request may go on to
/// [`claim`] it in its work's transaction. A plain read, on any connection.
#[tracing::instrument(skip(conn, request_hash))]
pub async fn lookup(
    conn: &mut Conn,
    merchant_id: Uuid,
    key: &str,
    endpoint: &str,
    request_hash: &str,
) -> Result<Option<Claim>, StoreError> {
    let now = now_ms();
    match stored(conn, merchant_id, key, now).await? {
        Some(row) => judge(row, endpoint, request_hash, now),
        None => Ok(None),
    }
}

/// Claims `key` in `tx`, the write transaction that goes on to do the request's work and
/// [`complete`] the record; call it first in that transaction. Unless the answer is
/// [`Claim::Owned`], roll the transaction back (it wrote nothing that must stay).
#[tracing::instrument(skip(tx, request_hash))]
pub async fn claim(
    tx: &mut Conn,
    merchant_id: Uuid,
    key: &str,
    endpoint: &str,
    request_hash: &str,
) -> Result<Claim, StoreError> {
    let now = now_ms();
    // A record past its retention is replaced, so the key can be used afresh. On PostgreSQL this
    // waits while another transaction holds an uncommitted claim of the key, then inserts (that
    // one rolled back) or does nothing (it committed a record still retained).
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (merchant_id, idempotency_key, endpoint, request_hash, state, locked_until, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, 'in_progress', $5, $6, $7) ON CONFLICT (merchant_id, idempotency_key) DO UPDATE SET \
         endpoint = excluded.endpoint, request_hash = excluded.request_hash, state = 'in_progress', \
         response_status = NULL, response_body = NULL, locked_until = excluded.locked_until, \
         created_at = excluded.created_at, expires_at = excluded.expires_at \
         WHERE idempotency_keys.expires_at <= $6",
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
        return Ok(Claim::Owned);
    }
    // Committed by another transaction (a new statement sees it on PostgreSQL's read committed).
    let Some(row) = stored(tx, merchant_id, key, now).await? else {
        // Deleted since (expired meanwhile): the caller tries again.
        return Ok(Claim::InProgress);
    };
    let locked_until = row.locked_until;
    if let Some(claim) = judge(row, endpoint, request_hash, now)? {
        return Ok(claim);
    }
    // An earlier daemon's owner died mid-request; its work never committed. Take over, once.
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
    Ok(if taken.rows_affected() == 1 { Claim::Owned } else { Claim::InProgress })
}

/// Stores the response; call in the transaction that claimed the key and did the work.
#[tracing::instrument(skip(conn, body))]
pub async fn complete(
    conn: &mut Conn,
    merchant_id: Uuid,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE idempotency_keys SET state = 'completed', response_status = $1, response_body = $2 \
         WHERE merchant_id = $3 AND idempotency_key = $4",
    )
    .bind(status as i64)
    .bind(body)
    .bind(Text(merchant_id))
    .bind(key)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(StoreError::Corrupt("an idempotency record completed without its claim".into()))
    }
}

/// A key a request of a batch presents, for [`claim_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Presented<'a> {
    pub merchant_id: Uuid,
    pub key: &'a str,
    pub endpoint: &'a str,
    pub request_hash: &'a str,
}

/// [`claim`] for the keys of requests made together in `tx` (the API's group commit), first
/// thing in it, in a statement per [`super::statement_chunks`], in one global order (merchant,
/// key), so two batches never wait on each other's keys in a cycle. Returns the keys claimed (as
/// `(merchant, key)`); one not returned is taken (a retained record, an earlier daemon's claim,
/// or, on PostgreSQL, a transaction that wrote it and committed meanwhile): its request is made on
/// its own after this transaction, where [`claim`] answers for it. The keys must be distinct.
#[tracing::instrument(skip_all, fields(count = keys.len()))]
pub async fn claim_many(conn: &mut Conn, keys: &[Presented<'_>]) -> Result<Vec<(Uuid, String)>, StoreError> {
    let mut keys = keys.to_vec();
    keys.sort();
    let now = now_ms();
    let mut claimed = Vec::with_capacity(keys.len());
    for chunk in super::statement_chunks(&keys) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = 4 + 4 * i;
                format!("(${}, ${}, ${}, ${}, 'in_progress', $1, $2, $3)", n, n + 1, n + 2, n + 3)
            })
            .collect();
        let sql = format!(
            "INSERT INTO idempotency_keys (merchant_id, idempotency_key, endpoint, request_hash, state, locked_until, \
             created_at, expires_at) VALUES {} ON CONFLICT (merchant_id, idempotency_key) DO UPDATE SET \
             endpoint = excluded.endpoint, request_hash = excluded.request_hash, state = 'in_progress', \
             response_status = NULL, response_body = NULL, locked_until = excluded.locked_until, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE idempotency_keys.expires_at <= excluded.created_at RETURNING merchant_id, idempotency_key",
            rows.join(", ")
        );
        let mut query =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now + LEASE_MS).bind(now).bind(now + RETENTION_MS);
        for key in chunk {
            query = query.bind(Text(key.merchant_id)).bind(key.key).bind(key.endpoint).bind(key.request_hash);
        }
        let rows: Vec<(Text<Uuid>, String)> = query.fetch_all(&mut *conn).await?;
        claimed.extend(rows.into_iter().map(|(merchant_id, key)| (merchant_id.0, key)));
    }
    Ok(claimed)
}

/// A claimed key's response, for [`complete_many`].
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    pub merchant_id: Uuid,
    pub key: &'a str,
    pub status: u16,
    pub body: &'a str,
}

/// [`complete`] for keys [`claim_many`] claimed in this transaction, last thing before the
/// commit, in a statement per [`super::statement_chunks`].
#[tracing::instrument(skip_all, fields(count = records.len()))]
pub async fn complete_many(conn: &mut Conn, records: &[Completed<'_>]) -> Result<(), StoreError> {
    let mut completed = 0;
    for chunk in super::statement_chunks(records) {
        // (merchant, key, status, body) rows joined to the claimed records.
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let n = 1 + 4 * i;
                format!("(${}, ${}, ${}, ${})", n, n + 1, n + 2, n + 3)
            })
            .collect();
        let sql = format!(
            "WITH done (merchant_id, idempotency_key, response_status, response_body) AS (VALUES {}) \
             UPDATE idempotency_keys SET state = 'completed', response_status = done.response_status, \
             response_body = done.response_body FROM done WHERE idempotency_keys.merchant_id = done.merchant_id \
             AND idempotency_keys.idempotency_key = done.idempotency_key AND idempotency_keys.state = 'in_progress'",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query =
                query.bind(Text(record.merchant_id)).bind(record.key).bind(i64::from(record.status)).bind(record.body);
        }
        completed += query.execute(&mut *conn).await?.rows_affected();
    }
    if completed == records.len() as u64 {
        Ok(())
    } else {
        Err(StoreError::Corrupt("idempotency records completed without their claims".into()))
    }
}

/// Drops the claims [`claim_many`] made in this transaction for requests refused on their own
/// (their transaction commits the others' work): a refused request leaves no record, so a
/// corrected retry with its key proceeds.
#[tracing::instrument(skip_all, fields(count = keys.len()))]
pub async fn release_many(conn: &mut Conn, keys: &[(Uuid, &str)]) -> Result<(), StoreError> {
    for (merchant_id, key) in keys {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND idempotency_key = $2 AND state = 'in_progress'",
        )
        .bind(Text(*merchant_id))
        .bind(*key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
