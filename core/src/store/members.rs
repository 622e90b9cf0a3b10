//! Dashboard members, their invites, sessions and failed sign-ins: rows and SQL only (the rules
//! are `crate::members`'). Tokens are stored as SHA-256 hashes; the tokens themselves exist only
//! in the invite link and the session cookie.

use uuid::Uuid;

use super::codec::Text;
use super::{Backend, Conn, StoreError};
use crate::member::{Member, Role, Session};

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    email: String,
    role: Role,
    password_hash: Option<String>,
    created_at: i64,
    invited_by: String,
    totp_enabled_at: Option<i64>,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Member {
        Member {
            id: row.id.0,
            merchant_id: row.merchant_id.0,
            email: row.email,
            role: row.role,
            password_hash: row.password_hash,
            created_at: row.created_at,
            invited_by: row.invited_by,
            totp_enabled_at: row.totp_enabled_at,
        }
    }
}

const MEMBER_COLUMNS: &str = "id, merchant_id, email, role, password_hash, created_at, invited_by, totp_enabled_at";

#[tracing::instrument(skip(conn))]
pub async fn insert(conn: &mut Conn, member: &Member) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO merchant_users (id, merchant_id, email, role, password_hash, created_at, invited_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Text(member.id))
    .bind(Text(member.merchant_id))
    .bind(&member.email)
    .bind(member.role)
    .bind(&member.password_hash)
    .bind(member.created_at)
    .bind(&member.invited_by)
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::on_conflict(e, "email (a member with this email exists)"))?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn by_email(conn: &mut Conn, email: &str) -> Result<Option<Member>, StoreError> {
    let row: Option<MemberRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {MEMBER_COLUMNS} FROM merchant_users WHERE email = $1")))
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(Member::from))
}

#[tracing::instrument(skip(conn))]
pub async fn get(conn: &mut Conn, id: Uuid) -> Result<Option<Member>, StoreError> {
    let row: Option<MemberRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {MEMBER_COLUMNS} FROM merchant_users WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(Member::from))
}

/// The merchant's members, oldest first.
#[tracing::instrument(skip(conn))]
pub async fn list(conn: &mut Conn, merchant_id: Uuid) -> Result<Vec<Member>, StoreError> {
    let rows: Vec<MemberRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER_COLUMNS} FROM merchant_users WHERE merchant_id = $1 ORDER BY id"
    )))
    .bind(Text(merchant_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Member::from).collect())
}

#[tracing::instrument(skip(conn))]
pub async fn set_role(conn: &mut Conn, id: Uuid, role: Role) -> Result<(), StoreError> {
    sqlx::query("UPDATE merchant_users SET role = $1 WHERE id = $2")
        .bind(role)
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn set_password_hash(conn: &mut Conn, id: Uuid, password_hash: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE merchant_users SET password_hash = $1 WHERE id = $2")
        .bind(password_hash)
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

// === invites ===

/// An invite as stored (its token is only in the link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct InviteRow {
    id: Text<Uuid>,
    user_id: Text<Uuid>,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

#[tracing::instrument(skip(conn, token_hash))]
pub async fn insert_invite(conn: &mut Conn, invite: &Invite, token_hash: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO merchant_invites (id, user_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Text(invite.id))
    .bind(Text(invite.user_id))
    .bind(token_hash)
    .bind(invite.created_at)
    .bind(invite.expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn invite_by_token_hash(conn: &mut Conn, token_hash: &str) -> Result<Option<Invite>, StoreError> {
    let row: Option<InviteRow> = sqlx::query_as(
        "SELECT id, user_id, created_at, expires_at, used_at FROM merchant_invites WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Invite {
        id: r.id.0,
        user_id: r.user_id.0,
        created_at: r.created_at,
        expires_at: r.expires_at,
        used_at: r.used_at,
    }))
}

/// Marks an invite used; false when it already was (a concurrent acceptance won).
#[tracing::instrument(skip(conn))]
pub async fn use_invite(conn: &mut Conn, id: Uuid, now: i64) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE merchant_invites SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(Text(id))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every unused invite of a member (a new invite replaces them).
#[tracing::instrument(skip(conn))]
pub async fn retire_invites(conn: &mut Conn, user_id: Uuid, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE merchant_invites SET expires_at = $1 WHERE user_id = $2 AND used_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(Text(user_id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// === sessions ===

#[derive(sqlx::FromRow)]
struct SessionRow {
    id_hash: String,
    user_id: Text<Uuid>,
    csrf_token: String,
    created_at: i64,
    expires_at: i64,
    last_seen_at: i64,
}

#[tracing::instrument(skip_all)]
pub async fn insert_session(conn: &mut Conn, session: &Session) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO merchant_sessions (id_hash, user_id, csrf_token, created_at, expires_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&session.id_hash)
    .bind(Text(session.user_id))
    .bind(&session.csrf_token)
    .bind(session.created_at)
    .bind(session.expires_at)
    .bind(session.last_seen_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn session(conn: &mut Conn, id_hash: &str) -> Result<Option<Session>, StoreError> {
    let row: Option<SessionRow> = sqlx::query_as(
        "SELECT id_hash, user_id, csrf_token, created_at, expires_at, last_seen_at FROM merchant_sessions WHERE id_hash = $1",
    )
    .bind(id_hash)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Session {
        id_hash: r.id_hash,
        user_id: r.user_id.0,
        csrf_token: r.csrf_token,
        created_at: r.created_at,
        expires_at: r.expires_at,
        last_seen_at: r.last_seen_at,
    }))
}

#[tracing::instrument(skip_all)]
pub async fn touch_session(conn: &mut Conn, id_hash: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE merchant_sessions SET last_seen_at = $1 WHERE id_hash = $2")
        .bind(now)
        .bind(id_hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn delete_session(conn: &mut Conn, id_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM merchant_sessions WHERE id_hash = $1").bind(id_hash).execute(&mut *conn).await?;
    Ok(())
}

/// Ends every session of a member but `except` (the one asking, if any); returns how many.
#[tracing::instrument(skip(conn, except))]
pub async fn delete_sessions_of(conn: &mut Conn, user_id: Uuid, except: Option<&str>) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM merchant_sessions WHERE user_id = $1 AND ($2 IS NULL OR id_hash <> $2)")
        .bind(Text(user_id))
        .bind(except)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Drops sessions that ended before `now`.
#[tracing::instrument(skip(conn))]
pub async fn delete_expired_sessions(conn: &mut Conn, now: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM merchant_sessions WHERE expires_at <= $1").bind(now).execute(&mut *conn).await?;
    Ok(())
}

// === failed sign-ins ===

/// Records a sign-in attempt at `at` as a failure before its password is checked, and counts
/// the failures for `email` and from `client` since `since`, this one included. Run in its own
/// write transaction: the table is locked (PostgreSQL) or the write is the only one (SQLite,
/// `BEGIN IMMEDIATE`), so parallel attempts are counted one after another and cannot all see
/// a count under the limit. The attempt's row id is returned; a success deletes it with the
/// others (`clear_failures`), a throttled attempt rolls the transaction back.
#[tracing::instrument(skip(conn))]
pub async fn record_attempt(
    conn: &mut Conn,
    email: &str,
    client: &str,
    at: i64,
    since: i64,
) -> Result<(Failures, Failures), StoreError> {
    if Backend::of(conn) == Backend::Postgres {
        sqlx::query("LOCK TABLE login_failures IN SHARE ROW EXCLUSIVE MODE").execute(&mut *conn).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO login_failures (id, email, client, at) VALUES ($1, $2, $3, $4)")
        .bind(Text(id))
        .bind(email)
        .bind(client)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    // Failures older than a day no longer count for anything: this account's and this client's
    // go now (indexed); everyone's, about once in 64 attempts (a scan of the table).
    let day_ago = at - 86_400_000;
    sqlx::query("DELETE FROM login_failures WHERE email = $1 AND at < $2")
        .bind(email)
        .bind(day_ago)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE client = $1 AND at < $2")
        .bind(client)
        .bind(day_ago)
        .execute(&mut *conn)
        .await?;
    if Uuid::new_v4().as_bytes()[0] < 4 {
        sqlx::query("DELETE FROM login_failures WHERE at < $1").bind(day_ago).execute(&mut *conn).await?;
    }
    failures_since(conn, email, client, since).await
}

/// Failed sign-ins counted in a window, and the oldest of them (to say when the next attempt is
/// allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failures {
    pub count: i64,
    pub oldest: Option<i64>,
}

/// Failures for `email` and from `client` since `since`.
#[tracing::instrument(skip(conn))]
pub async fn failures_since(
    conn: &mut Conn,
    email: &str,
    client: &str,
    since: i64,
) -> Result<(Failures, Failures), StoreError> {
    let (count, oldest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE email = $1 AND at >= $2")
            .bind(email)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    let by_email = Failures { count, oldest };
    let (count, oldest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(at) FROM login_failures WHERE client = $1 AND at >= $2")
            .bind(client)
            .bind(since)
            .fetch_one(&mut *conn)
            .await?;
    Ok((by_email, Failures { count, oldest }))
}

/// Forgets an account's failures (after a successful sign-in).
#[tracing::instrument(skip(conn))]
pub async fn clear_failures(conn: &mut Conn, email: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM login_failures WHERE email = $1").bind(email).execute(&mut *conn).await?;
    Ok(())
}

// === the team ===

/// Locks merchant `merchant_id`'s team for the rest of the transaction (PostgreSQL: its merchant
/// row; SQLite's write transactions are one at a time already), so two owners demoting or
/// removing each other cannot both see the other still an owner.
#[tracing::instrument(skip(conn))]
pub async fn lock_team(conn: &mut Conn, merchant_id: Uuid) -> Result<(), StoreError> {
    if Backend::of(conn) == Backend::Postgres {
        sqlx::query("SELECT id FROM merchants WHERE id = $1 FOR UPDATE")
            .bind(Text(merchant_id))
            .fetch_optional(&mut *conn)
            .await?;
    }
    Ok(())
}

/// How many members of the merchant are owners who have set their password.
#[tracing::instrument(skip(conn))]
pub async fn active_owner_count(conn: &mut Conn, merchant_id: Uuid) -> Result<i64, StoreError> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM merchant_users WHERE merchant_id = $1 AND role = 'owner' AND password_hash IS NOT NULL",
    )
    .bind(Text(merchant_id))
    .fetch_one(&mut *conn)
    .await?;
    Ok(count)
}

/// Deletes a member with its invites, sessions and sign-in challenges.
#[tracing::instrument(skip(conn))]
pub async fn delete(conn: &mut Conn, id: Uuid) -> Result<(), StoreError> {
    for statement in [
        "DELETE FROM merchant_sessions WHERE user_id = $1",
        "DELETE FROM merchant_invites WHERE user_id = $1",
        "DELETE FROM merchant_sign_in_challenges WHERE user_id = $1",
        "DELETE FROM merchant_users WHERE id = $1",
    ] {
        sqlx::query(statement).bind(Text(id)).execute(&mut *conn).await?;
    }
    Ok(())
}

// === TOTP ===

/// A member's TOTP state as stored: the sealed secret (enrolled or being enrolled), whether it is
/// in force, and the last 30-second step whose code was accepted. (No `Debug`: the ciphertext
/// is not for logs either.)
pub struct TotpRow {
    pub secret_ciphertext: Option<String>,
    pub enabled_at: Option<i64>,
    pub last_step: Option<i64>,
}

#[tracing::instrument(skip(conn))]
pub async fn totp(conn: &mut Conn, id: Uuid) -> Result<Option<TotpRow>, StoreError> {
    let row: Option<(Option<String>, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT totp_secret_ciphertext, totp_enabled_at, totp_last_step FROM merchant_users WHERE id = $1",
    )
    .bind(Text(id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(secret_ciphertext, enabled_at, last_step)| TotpRow { secret_ciphertext, enabled_at, last_step }))
}

/// Stores a new (not yet confirmed) TOTP secret, replacing any unconfirmed one; refused (false)
/// when the member's TOTP is in force.
#[tracing::instrument(skip_all, fields(%id))]
pub async fn set_pending_totp(conn: &mut Conn, id: Uuid, secret_ciphertext: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE merchant_users SET totp_secret_ciphertext = $1, totp_last_step = NULL \
         WHERE id = $2 AND totp_enabled_at IS NULL",
    )
    .bind(secret_ciphertext)
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts the stored secret in force at `now`, its code of `step` used.
#[tracing::instrument(skip(conn))]
pub async fn enable_totp(conn: &mut Conn, id: Uuid, now: i64, step: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE merchant_users SET totp_enabled_at = $1, totp_last_step = $2 \
         WHERE id = $3 AND totp_enabled_at IS NULL AND totp_secret_ciphertext IS NOT NULL",
    )
    .bind(now)
    .bind(step)
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes that the code of `step` was accepted; false when it (or a later one) already was (a
/// code is accepted once).
#[tracing::instrument(skip(conn))]
pub async fn use_totp_step(conn: &mut Conn, id: Uuid, step: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE merchant_users SET totp_last_step = $1 WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
    )
    .bind(step)
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets the member's TOTP secret: sign-in asks for the password only again.
#[tracing::instrument(skip(conn))]
pub async fn clear_totp(conn: &mut Conn, id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE merchant_users SET totp_secret_ciphertext = NULL, totp_enabled_at = NULL, totp_last_step = NULL \
         WHERE id = $1",
    )
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

// === sign-in challenges (the TOTP step) ===

#[tracing::instrument(skip_all)]
pub async fn insert_challenge(
    conn: &mut Conn,
    id_hash: &str,
    user_id: Uuid,
    now: i64,
    expires_at: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM merchant_sign_in_challenges WHERE expires_at <= $1").bind(now).execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO merchant_sign_in_challenges (id_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(id_hash)
    .bind(Text(user_id))
    .bind(now)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The member a challenge is for, if it has not expired at `now`.
#[tracing::instrument(skip_all)]
pub async fn challenge(conn: &mut Conn, id_hash: &str, now: i64) -> Result<Option<Uuid>, StoreError> {
    let row: Option<(Text<Uuid>,)> =
        sqlx::query_as("SELECT user_id FROM merchant_sign_in_challenges WHERE id_hash = $1 AND expires_at > $2")
            .bind(id_hash)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|(id,)| id.0))
}

/// Uses a challenge up; false when it already was.
#[tracing::instrument(skip_all)]
pub async fn delete_challenge(conn: &mut Conn, id_hash: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM merchant_sign_in_challenges WHERE id_hash = $1")
        .bind(id_hash)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
