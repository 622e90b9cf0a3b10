//! The `emails` table: the outbox's e-mail rows (receipts and merchant notifications). Which
//! events get which e-mail, and what it says, is `crate::notify`'s rule; this module holds the
//! rows and the SQL. A mailer [`claim_due`]s rows under a lease (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), and every later write is conditional on that lease, as for webhook deliveries.

use uuid::Uuid;

use super::codec::Text;
use super::{Backend, Conn, StoreError};
use crate::text_enum::text_enum;
use crate::time::now_ms;

/// What an e-mail is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailKind {
    /// To the invoice's `customer_email` when it is paid.
    Receipt,
    /// To the merchant's notification address when an invoice is paid.
    InvoicePaid,
    /// To the merchant's notification address when a payout (or refund) failed.
    PayoutFailed,
    /// To the merchant's notification address when a webhook endpoint was disabled.
    WebhookEndpointDisabled,
    /// To an invited dashboard member: the link to set a password.
    MemberInvite,
}

text_enum! {
    EmailKind as "e-mail kind" {
        Receipt = "receipt", InvoicePaid = "invoice_paid", PayoutFailed = "payout_failed",
        WebhookEndpointDisabled = "webhook_endpoint_disabled",
        MemberInvite = "member_invite",
    }
}

/// An e-mail to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEmail {
    pub event_id: Uuid,
    pub merchant_id: Uuid,
    pub kind: EmailKind,
    /// Names the cause: one e-mail per key, ever.
    pub dedupe_key: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// Queues `email` (in the transaction of its event); false when its `dedupe_key` was queued
/// before (nothing is written then).
#[tracing::instrument(skip_all, fields(key = %email.dedupe_key))]
pub(crate) async fn insert(conn: &mut Conn, email: &NewEmail) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO emails (id, event_id, merchant_id, kind, dedupe_key, recipient, subject, body, state, \
         attempt_count, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $9, $9) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(Text(Uuid::now_v7()))
    .bind(Text(email.event_id))
    .bind(Text(email.merchant_id))
    .bind(email.kind)
    .bind(&email.dedupe_key)
    .bind(&email.recipient)
    .bind(&email.subject)
    .bind(&email.body)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An e-mail a mailer holds until `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedEmail {
    pub id: Uuid,
    pub event_id: Uuid,
    pub kind: EmailKind,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// The claim: every write about this e-mail is conditional on it.
    pub lease: i64,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Text<Uuid>,
    event_id: Text<Uuid>,
    kind: EmailKind,
    recipient: String,
    subject: String,
    body: String,
    attempt_count: i64,
    created_at: i64,
}

/// Claims up to `limit` due e-mails for `lease_ms`, oldest first. Call in a transaction of its own.
#[tracing::instrument(skip(conn))]
pub async fn claim_due(conn: &mut Conn, lease_ms: i64, limit: u32) -> Result<Vec<ClaimedEmail>, StoreError> {
    let now = now_ms();
    let lease = now + lease_ms;
    let skip_locked = Backend::of(conn).skip_locked();
    let claimed: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE emails SET locked_until = $1, updated_at = $2 WHERE id IN (\
           SELECT id FROM emails WHERE state = 'pending' AND next_attempt_at <= $2 \
           AND (locked_until IS NULL OR locked_until < $2) ORDER BY next_attempt_at, id LIMIT $3{skip_locked}) \
         AND state = 'pending' AND (locked_until IS NULL OR locked_until < $2) RETURNING id"
    )))
    .bind(lease)
    .bind(now)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(claimed.len());
    for (id,) in claimed {
        let row: ClaimedRow = sqlx::query_as(
            "SELECT id, event_id, kind, recipient, subject, body, attempt_count, created_at FROM emails WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
        out.push(ClaimedEmail {
            id: row.id.0,
            event_id: row.event_id.0,
            kind: row.kind,
            recipient: row.recipient,
            subject: row.subject,
            body: row.body,
            attempt_count: row.attempt_count as u32,
            lease,
            created_at: row.created_at,
        });
    }
    out.sort_by_key(|e| e.id);
    Ok(out)
}

/// What happens to an e-mail after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailOutcome {
    /// The server accepted it (250 after DATA).
    Sent,
    /// Try again at this time (epoch ms).
    RetryAt(i64),
    /// Given up (retries spent, or the server refused it permanently).
    Failed,
}

/// Records an attempt's outcome if the mailer still holds the lease; false when it was lost
/// (nothing is written then).
#[tracing::instrument(skip_all, fields(email_id = %claimed.id))]
pub async fn finish(
    conn: &mut Conn,
    claimed: &ClaimedEmail,
    outcome: EmailOutcome,
    error: Option<&str>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let (state, next, sent_at) = match outcome {
        EmailOutcome::Sent => ("sent", now, Some(now)),
        EmailOutcome::RetryAt(at) => ("pending", at, None),
        EmailOutcome::Failed => ("failed", now, None),
    };
    let moved = sqlx::query(
        "UPDATE emails SET state = $1, attempt_count = attempt_count + 1, next_attempt_at = $2, locked_until = NULL, \
         sent_at = $3, last_error = $4, updated_at = $5 WHERE id = $6 AND locked_until = $7 AND state = 'pending'",
    )
    .bind(state)
    .bind(next)
    .bind(sent_at)
    .bind(error)
    .bind(now)
    .bind(Text(claimed.id))
    .bind(claimed.lease)
    .execute(&mut *conn)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// An e-mail row as stored (for tests and the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    pub id: Uuid,
    pub event_id: Uuid,
    pub merchant_id: Uuid,
    pub kind: EmailKind,
    pub dedupe_key: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct EmailRow {
    id: Text<Uuid>,
    event_id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    kind: EmailKind,
    dedupe_key: String,
    recipient: String,
    subject: String,
    body: String,
    state: String,
    attempt_count: i64,
    last_error: Option<String>,
    sent_at: Option<i64>,
}

/// Every e-mail, oldest first.
#[tracing::instrument(skip(conn))]
pub async fn all(conn: &mut Conn) -> Result<Vec<EmailRecord>, StoreError> {
    let rows: Vec<EmailRow> = sqlx::query_as(
        "SELECT id, event_id, merchant_id, kind, dedupe_key, recipient, subject, body, state, attempt_count, \
         last_error, sent_at FROM emails ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            if !matches!(r.state.as_str(), "pending" | "sent" | "failed") {
                return Err(StoreError::Corrupt(format!("emails.state = {:?}", r.state)));
            }
            Ok(EmailRecord {
                id: r.id.0,
                event_id: r.event_id.0,
                merchant_id: r.merchant_id.0,
                kind: r.kind,
                dedupe_key: r.dedupe_key,
                recipient: r.recipient,
                subject: r.subject,
                body: r.body,
                state: r.state,
                attempt_count: r.attempt_count as u32,
                last_error: r.last_error,
                sent_at: r.sent_at,
            })
        })
        .collect()
}

/// How many e-mails wait to be sent, and the oldest one's creation time (epoch ms).
#[tracing::instrument(skip(conn))]
pub async fn queue_stats(conn: &mut Conn) -> Result<(i64, Option<i64>), StoreError> {
    let row: (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM emails WHERE state = 'pending'")
            .fetch_one(&mut *conn)
            .await?;
    Ok(row)
}

/// The merchant's notification address, if one is set.
#[tracing::instrument(skip(conn))]
pub async fn notification_email(conn: &mut Conn, merchant_id: Uuid) -> Result<Option<String>, StoreError> {
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT notification_email FROM merchants WHERE id = $1")
        .bind(Text(merchant_id))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.and_then(|(e,)| e))
}

/// Sets (or with `None` clears) the merchant's notification address.
#[tracing::instrument(skip(conn, email))]
pub async fn set_notification_email(conn: &mut Conn, merchant_id: Uuid, email: Option<&str>) -> Result<(), StoreError> {
    let done = sqlx::query("UPDATE merchants SET notification_email = $1 WHERE id = $2")
        .bind(email)
        .bind(Text(merchant_id))
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
