//! API keys: `dk_test_...` / `dk_live_...`, stored as SHA-256 hashes only, shown once.
//!
//! The API caches what [`authenticate`] returns for a short while (`depositd_api::auth`). So that
//! a change made in this process is honoured at once, every write here or to a merchant row that
//! authentication reads bumps [`changes`]; changes made by another process are bounded by the
//! cache's lifetime instead.

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError, parse_column};
use crate::api_key::{ApiKey, KeyMode, Scope};
use crate::merchant::{Merchant, MerchantStatus};
use crate::time::now_ms;

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    display_prefix: String,
    mode: KeyMode,
    scopes: String,
    name: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    created_by: Option<String>,
    revoked_at: Option<i64>,
    revoked_by: Option<String>,
}

const COLUMNS: &str =
    "id, merchant_id, display_prefix, mode, scopes, name, created_at, last_used_at, created_by, revoked_at, revoked_by";

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(ApiKey {
            id: row.id.0,
            merchant_id: row.merchant_id.0,
            display_prefix: row.display_prefix,
            mode: row.mode,
            scopes: row
                .scopes
                .split_whitespace()
                .map(|s| parse_column("api_keys.scopes", s))
                .collect::<Result<_, _>>()?,
            name: row.name,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            created_by: row.created_by,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
        })
    }
}

pub use super::key_changes::changes;

/// The SHA-256 of a key, hex: what is stored and looked up.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Whether `key` has the shape of one of our keys (so a malformed one is refused before any lookup).
pub fn is_well_formed(key: &str) -> bool {
    let body = key.strip_prefix("dk_test_").or_else(|| key.strip_prefix("dk_live_"));
    body.is_some_and(|b| b.len() == 48 && b.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
}

/// Creates a key and returns it with the plaintext, which exists nowhere else afterwards. (The
/// rules of who may create which key, and its event, are `crate::api_keys`'; this is the row.)
#[tracing::instrument(skip(conn))]
pub async fn create(
    conn: &mut Conn,
    merchant_id: Uuid,
    mode: KeyMode,
    scopes: &[Scope],
    name: Option<&str>,
) -> Result<(ApiKey, SecretString), StoreError> {
    create_by(conn, merchant_id, mode, scopes, name, None).await
}

/// [`create`], recording who created the key (`cli`, `api_key:<id>`, `user:<id>`).
#[tracing::instrument(skip(conn))]
pub async fn create_by(
    conn: &mut Conn,
    merchant_id: Uuid,
    mode: KeyMode,
    scopes: &[Scope],
    name: Option<&str>,
    created_by: Option<&str>,
) -> Result<(ApiKey, SecretString), StoreError> {
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let plaintext = format!("{}{}", mode.prefix(), hex::encode(secret));
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let key = ApiKey {
        id: Uuid::now_v7(),
        merchant_id,
        display_prefix: plaintext[..16].to_owned(),
        mode,
        scopes,
        name: name.map(str::to_owned),
        created_at: now_ms(),
        last_used_at: None,
        created_by: created_by.map(str::to_owned),
        revoked_at: None,
        revoked_by: None,
    };
    let scope_list: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_keys (id, merchant_id, display_prefix, key_hash, mode, scopes, name, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Text(key.id))
    .bind(Text(merchant_id))
    .bind(&key.display_prefix)
    .bind(hash_key(&plaintext))
    .bind(mode)
    .bind(scope_list.join(" "))
    .bind(&key.name)
    .bind(key.created_at)
    .bind(&key.created_by)
    .execute(&mut *conn)
    .await?;
    Ok((key, SecretString::from(plaintext)))
}

/// Why a presented key does not authenticate. The API answers 401 for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    Malformed,
    Unknown,
    Revoked,
    MerchantInactive,
}

/// Resolves a presented key to its record and merchant.
#[tracing::instrument(skip_all)]
pub async fn authenticate(
    conn: &mut Conn,
    presented: &SecretString,
) -> Result<Result<(ApiKey, Merchant), KeyRejection>, StoreError> {
    let presented = presented.expose_secret();
    if !is_well_formed(presented) {
        return Ok(Err(KeyRejection::Malformed));
    }
    let row: Option<ApiKeyRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1")))
            .bind(hash_key(presented))
            .fetch_optional(&mut *conn)
            .await?;
    let Some(key) = row.map(ApiKey::try_from).transpose()? else {
        return Ok(Err(KeyRejection::Unknown));
    };
    if key.revoked_at.is_some() {
        return Ok(Err(KeyRejection::Revoked));
    }
    let merchant = super::merchants::get(conn, key.merchant_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("api key {} belongs to a missing merchant", key.id)))?;
    if merchant.status != MerchantStatus::Active {
        return Ok(Err(KeyRejection::MerchantInactive));
    }
    Ok(Ok((key, merchant)))
}

/// Every key of the merchant, oldest first (the CLI's list).
#[tracing::instrument(skip(conn))]
pub async fn list(conn: &mut Conn, merchant_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE merchant_id = $1 ORDER BY id"
    )))
    .bind(Text(merchant_id))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

/// A page of the merchant's keys, newest first, after the cursor `starting_after`.
#[tracing::instrument(skip(conn))]
pub async fn page(
    conn: &mut Conn,
    merchant_id: Uuid,
    starting_after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE merchant_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(Text(merchant_id))
    .bind(starting_after.map(Text))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(ApiKey::try_from).collect()
}

/// The merchant's key `id` (another merchant's is `None`, as a missing one).
#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
    let row: Option<ApiKeyRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM api_keys WHERE id = $1 AND merchant_id = $2"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(ApiKey::try_from).transpose()
}

/// Key `id` whatever its merchant (the operator's CLI names keys by id alone).
#[tracing::instrument(skip(conn))]
pub async fn find(conn: &mut Conn, id: Uuid) -> Result<Option<ApiKey>, StoreError> {
    let row: Option<ApiKeyRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    row.map(ApiKey::try_from).transpose()
}

/// Notes that key `id` authenticated at `now` (epoch ms), unless that was already noted less
/// than `granularity_ms` before: `last_used_at` is kept to that precision, so writes stay rare.
/// Not a change authentication depends on, so the key cache is not told.
#[tracing::instrument(skip(conn))]
pub async fn touch(conn: &mut Conn, id: Uuid, now: i64, granularity_ms: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at <= $3)")
        .bind(now)
        .bind(Text(id))
        .bind(now - granularity_ms)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Revokes a key; revoking an already revoked key keeps the first revocation time.
#[tracing::instrument(skip(conn))]
pub async fn revoke(conn: &mut Conn, id: Uuid) -> Result<(), StoreError> {
    revoke_by(conn, id, None).await
}

/// [`revoke`], recording who revoked it (kept from the first revocation too).
#[tracing::instrument(skip(conn))]
pub async fn revoke_by(conn: &mut Conn, id: Uuid, revoked_by: Option<&str>) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_by = CASE WHEN revoked_at IS NULL THEN $1 ELSE revoked_by END, \
         revoked_at = COALESCE(revoked_at, $2) WHERE id = $3",
    )
    .bind(revoked_by)
    .bind(now_ms())
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    // Counted now (enough when `conn` is not in a transaction); in a transaction this is before
    // the commit, so the lifecycle (`crate::api_keys::revoke`) has the commit count it again.
    super::key_changes::changed();
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}
