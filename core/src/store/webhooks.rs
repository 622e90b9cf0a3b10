//! Webhook endpoints and the delivery queue: their rows and SQL.
//!
//! Which deliveries an event gets is `crate::outbox`'s rule: it calls [`insert_delivery`] inside
//! the transaction that records the event, so a delivery exists exactly when its event does.
//! Workers [`claim_due`] deliveries under a lease
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so daemons share the queue without taking the same
//! row), and every later write is conditional on that lease: a worker whose lease ran out can no
//! longer change the delivery another worker now owns.

use uuid::Uuid;

use super::codec::{Text, opt};
use super::{Backend, Conn, StoreError, parse_column};
use crate::event::EventType;
use crate::time::now_ms;
use crate::webhooks::Endpoint;

const ENDPOINT_COLUMNS: &str = "id, merchant_id, url, description, enabled_events, status, disabled_reason, \
    secret_ciphertext, previous_secret_ciphertext, previous_secret_expires_at, last_success_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Text<Uuid>,
    merchant_id: Text<Uuid>,
    url: String,
    description: Option<String>,
    enabled_events: String,
    status: String,
    disabled_reason: Option<String>,
    secret_ciphertext: String,
    previous_secret_ciphertext: Option<String>,
    previous_secret_expires_at: Option<i64>,
    last_success_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = StoreError;
    fn try_from(r: EndpointRow) -> Result<Self, StoreError> {
        Ok(Endpoint {
            id: r.id.0,
            merchant_id: r.merchant_id.0,
            url: r.url,
            description: r.description,
            enabled_events: serde_json::from_str(&r.enabled_events)
                .map_err(|e| StoreError::Corrupt(format!("webhook_endpoints.enabled_events: {e}")))?,
            enabled: r.status == "enabled",
            disabled_reason: r.disabled_reason,
            secret_sealed: r.secret_ciphertext,
            previous_secret_sealed: r.previous_secret_ciphertext,
            previous_secret_expires_at: r.previous_secret_expires_at,
            last_success_at: r.last_success_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn status(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

#[tracing::instrument(skip_all, fields(endpoint_id = %e.id))]
pub async fn insert_endpoint(conn: &mut Conn, e: &Endpoint) -> Result<(), StoreError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )))
    .bind(Text(e.id))
    .bind(Text(e.merchant_id))
    .bind(&e.url)
    .bind(&e.description)
    .bind(serde_json::json!(e.enabled_events).to_string())
    .bind(status(e.enabled))
    .bind(&e.disabled_reason)
    .bind(&e.secret_sealed)
    .bind(&e.previous_secret_sealed)
    .bind(e.previous_secret_expires_at)
    .bind(e.last_success_at)
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Writes every changeable field back (url, description, events, status, secrets).
#[tracing::instrument(skip_all, fields(endpoint_id = %e.id))]
pub async fn update_endpoint(conn: &mut Conn, e: &mut Endpoint) -> Result<(), StoreError> {
    // Always later than the version read, even within one millisecond: callers compare it
    // (`webhook_endpoints::rotate_secret`).
    e.updated_at = now_ms().max(e.updated_at + 1);
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET url = $1, description = $2, enabled_events = $3, status = $4, \
         disabled_reason = $5, secret_ciphertext = $6, previous_secret_ciphertext = $7, \
         previous_secret_expires_at = $8, updated_at = $9 WHERE id = $10 AND merchant_id = $11 AND deleted_at IS NULL",
    )
    .bind(&e.url)
    .bind(&e.description)
    .bind(serde_json::json!(e.enabled_events).to_string())
    .bind(status(e.enabled))
    .bind(&e.disabled_reason)
    .bind(&e.secret_sealed)
    .bind(&e.previous_secret_sealed)
    .bind(e.previous_secret_expires_at)
    .bind(e.updated_at)
    .bind(Text(e.id))
    .bind(Text(e.merchant_id))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// One of a merchant's endpoints (deleted ones are not found). In a transaction the row stays
/// locked until it ends (PostgreSQL), so a read-modify-write cannot undo a concurrent rotation
/// or the worker disabling the endpoint.
#[tracing::instrument(skip(conn))]
pub async fn get_endpoint(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<Endpoint>, StoreError> {
    let for_update = Backend::of(conn).for_update();
    let row: Option<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2 AND deleted_at IS NULL{for_update}"
    )))
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Endpoint::try_from).transpose()
}

/// Any endpoint by id, deleted or not (for the delivery worker).
#[tracing::instrument(skip(conn))]
pub async fn endpoint_by_id(conn: &mut Conn, id: Uuid) -> Result<Option<Endpoint>, StoreError> {
    let row: Option<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL"
    )))
    .bind(Text(id))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(Endpoint::try_from).transpose()
}

/// Locks merchant `merchant_id`'s row until the transaction ends (PostgreSQL; a SQLite write
/// transaction excludes every other writer already), so that the checks of
/// [`endpoint_usage`] and the write that follows them are one step: two concurrent creates (or
/// URL changes) of one merchant queue here, and the second counts the first's endpoint.
#[tracing::instrument(skip(conn))]
pub async fn lock_merchant_endpoints(conn: &mut Conn, merchant_id: Uuid) -> Result<(), StoreError> {
    let for_update = Backend::of(conn).for_update();
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT id FROM merchants WHERE id = $1{for_update}")))
        .bind(Text(merchant_id))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(())
}

/// How many live endpoints the merchant has, and whether one of them (other than `except`)
/// already has `url`. Call it after [`lock_merchant_endpoints`] in the writing transaction.
#[tracing::instrument(skip(conn, url))]
pub async fn endpoint_usage(
    conn: &mut Conn,
    merchant_id: Uuid,
    url: &str,
    except: Option<Uuid>,
) -> Result<(i64, bool), StoreError> {
    let (count, same): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(CASE WHEN url = $2 AND ($3 IS NULL OR id <> $3) THEN 1 END) FROM webhook_endpoints \
         WHERE merchant_id = $1 AND deleted_at IS NULL",
    )
    .bind(Text(merchant_id))
    .bind(url)
    .bind(except.map(Text))
    .fetch_one(&mut *conn)
    .await?;
    Ok((count, same > 0))
}

/// A merchant's endpoints, newest first.
#[tracing::instrument(skip(conn))]
pub async fn list_endpoints(
    conn: &mut Conn,
    merchant_id: Uuid,
    starting_after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Endpoint>, StoreError> {
    let rows: Vec<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND deleted_at IS NULL \
         AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    )))
    .bind(Text(merchant_id))
    .bind(starting_after.map(Text))
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Endpoint::try_from).collect()
}

/// Deletes an endpoint: it receives nothing more, and its pending deliveries are dropped (as
/// failed); the rows stay as history. False when there was no such endpoint.
#[tracing::instrument(skip(conn))]
pub async fn delete_endpoint(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = $1, status = 'disabled', disabled_reason = 'deleted', updated_at = $1 \
         WHERE id = $2 AND merchant_id = $3 AND deleted_at IS NULL",
    )
    .bind(now)
    .bind(Text(id))
    .bind(Text(merchant_id))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    drop_pending(conn, id, now).await?;
    Ok(true)
}

/// How one endpoint has been failing lately: its failed attempts (no answer, or an answer other
/// than 2xx) since a moment, and when the last one was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailures {
    pub endpoint_id: Uuid,
    pub failures: i64,
    pub last_failure_at: i64,
}

/// Failed attempts to each of merchant `merchant_id`'s endpoints since `since` (epoch ms);
/// endpoints without one are not listed.
///
/// Bounded by the window, not by the history: the attempts are read from the index on
/// `webhook_attempts (attempted_at, delivery_id)` (SQLite keeps the left table of a `CROSS JOIN`
/// as the outer loop; PostgreSQL plans the same inner join), then their deliveries and endpoints
/// by primary key.
#[tracing::instrument(skip(conn))]
pub async fn recent_failures(
    conn: &mut Conn,
    merchant_id: Uuid,
    since: i64,
) -> Result<Vec<EndpointFailures>, StoreError> {
    let rows: Vec<(Text<Uuid>, i64, i64)> = sqlx::query_as(
        "SELECT d.endpoint_id, COUNT(*), MAX(a.attempted_at) FROM webhook_attempts a \
         CROSS JOIN webhook_deliveries d CROSS JOIN webhook_endpoints w \
         WHERE a.attempted_at >= $2 AND d.id = a.delivery_id AND w.id = d.endpoint_id AND w.merchant_id = $1 \
         AND (a.status_code IS NULL OR a.status_code < 200 OR a.status_code > 299) GROUP BY d.endpoint_id",
    )
    .bind(Text(merchant_id))
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, failures, last)| EndpointFailures { endpoint_id: id.0, failures, last_failure_at: last })
        .collect())
}

/// Marks an endpoint's pending deliveries failed (it was deleted or disabled: they go nowhere).
#[tracing::instrument(skip(conn))]
async fn drop_pending(conn: &mut Conn, endpoint_id: Uuid, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', updated_at = $1 WHERE endpoint_id = $2 AND state = 'pending'",
    )
    .bind(now)
    .bind(Text(endpoint_id))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The merchant's enabled endpoints (the candidates for a new event's deliveries).
#[tracing::instrument(skip(conn))]
pub async fn enabled_endpoints(conn: &mut Conn, merchant_id: Uuid) -> Result<Vec<Endpoint>, StoreError> {
    let rows: Vec<EndpointRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE merchant_id = $1 AND status = 'enabled' \
         AND deleted_at IS NULL"
    )))
    .bind(Text(merchant_id))
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(Endpoint::try_from).collect()
}

/// Queues `event_id` for `url` (an endpoint's, or the resource's callback URL when `endpoint_id`
/// is `None`), due at `now`. At most one delivery per event and endpoint (and per event for the
/// callback URL), whatever URL the endpoint has had meanwhile, and one per event and URL: a
/// second call for either is a no-op, so queueing again (a redelivery) never duplicates one.
/// Returns whether a delivery was inserted.
#[tracing::instrument(skip(conn, url))]
pub(crate) async fn insert_delivery(
    conn: &mut Conn,
    event_id: Uuid,
    endpoint_id: Option<Uuid>,
    url: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, url, state, attempt_count, next_attempt_at, \
         created_at, updated_at) SELECT $1, $2, $3, $4, 'pending', 0, $5, $5, $5 WHERE NOT EXISTS \
         (SELECT 1 FROM webhook_deliveries WHERE event_id = $2 AND ((endpoint_id IS NULL AND $3 IS NULL) OR endpoint_id = $3)) \
         ON CONFLICT (event_id, url) DO NOTHING",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Text(event_id))
    .bind(endpoint_id.map(Text))
    .bind(url)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Queues the deliveries of events recorded in this transaction: `(event, endpoint, url)`
/// each, due at `now`, in a statement per [`super::statement_chunks`]. For new events only:
/// none of them has a delivery yet, so unlike [`insert_delivery`] there is nothing to look for
/// first (a duplicate `(event, url)` is still a no-op). Returns whether any was inserted.
#[tracing::instrument(skip_all, fields(count = deliveries.len()))]
pub(crate) async fn insert_new_deliveries(
    conn: &mut Conn,
    deliveries: &[(Uuid, Option<Uuid>, &str)],
    now: i64,
) -> Result<bool, StoreError> {
    let mut inserted = 0;
    for chunk in super::statement_chunks(deliveries) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!("(${}, ${}, ${}, ${}, 'pending', 0, $1, $1, $1)", 4 * i + 2, 4 * i + 3, 4 * i + 4, 4 * i + 5)
            })
            .collect();
        let sql = format!(
            "INSERT INTO webhook_deliveries (id, event_id, endpoint_id, url, state, attempt_count, next_attempt_at, \
             created_at, updated_at) VALUES {} ON CONFLICT (event_id, url) DO NOTHING",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
        for (event_id, endpoint_id, url) in chunk {
            query = query.bind(Uuid::now_v7().to_string()).bind(Text(*event_id)).bind(endpoint_id.map(Text)).bind(*url);
        }
        inserted += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted > 0)
}

/// A delivery a worker holds until `lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: Uuid,
    pub event_id: Uuid,
    pub merchant_id: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub url: String,
    /// Attempts made before this one.
    pub attempt_count: u32,
    /// The claim: every write about this delivery is conditional on it.
    pub lease: i64,
    pub payload: String,
    pub created_at: i64,
}

/// Claims up to `limit` due deliveries for `lease_ms`. Call in a transaction of its own.
#[tracing::instrument(skip(conn))]
pub async fn claim_due(conn: &mut Conn, lease_ms: i64, limit: u32) -> Result<Vec<Claimed>, StoreError> {
    let now = now_ms();
    let lease = now + lease_ms;
    let skip_locked = Backend::of(conn).skip_locked();
    let claimed: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET locked_until = $1, updated_at = $2 WHERE id IN (\
           SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $2 \
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
        let row: (String, String, Option<String>, String, i64, String, String, i64) = sqlx::query_as(
            "SELECT d.id, d.event_id, d.endpoint_id, d.url, d.attempt_count, e.merchant_id, e.payload, d.created_at \
             FROM webhook_deliveries d JOIN events e ON e.id = d.event_id WHERE d.id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
        out.push(Claimed {
            id: parse_column("webhook_deliveries.id", &row.0)?,
            event_id: parse_column("webhook_deliveries.event_id", &row.1)?,
            endpoint_id: row.2.map(|e| parse_column("webhook_deliveries.endpoint_id", &e)).transpose()?,
            url: row.3,
            attempt_count: row.4 as u32,
            merchant_id: parse_column("events.merchant_id", &row.5)?,
            lease,
            payload: row.6,
            created_at: row.7,
        });
    }
    Ok(out)
}

/// One HTTP attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempted_at: i64,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    /// At most a few KB of what the receiver answered.
    pub response_body: Option<String>,
    pub error: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Try again at this time (epoch ms).
    RetryAt(i64),
    /// Given up (retries exhausted, 410 Gone, endpoint gone).
    Failed,
}

/// Records the attempt and moves the delivery, if the worker still holds the lease. Returns
/// false when the lease was lost (nothing is written then).
#[tracing::instrument(skip_all, fields(delivery_id = %claimed.id))]
pub async fn finish_attempt(
    conn: &mut Conn,
    claimed: &Claimed,
    attempt: &Attempt,
    outcome: Outcome,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let (state, next, delivered) = match outcome {
        Outcome::Succeeded => ("succeeded", now, Some(now)),
        Outcome::RetryAt(at) => ("pending", at, None),
        Outcome::Failed => ("failed", now, None),
    };
    let moved = sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempt_count = attempt_count + 1, next_attempt_at = $2, \
         locked_until = NULL, delivered_at = $3, updated_at = $4 WHERE id = $5 AND locked_until = $6 AND state = 'pending'",
    )
    .bind(state)
    .bind(next)
    .bind(delivered)
    .bind(now)
    .bind(Text(claimed.id))
    .bind(claimed.lease)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms, response_body, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Uuid::now_v7().to_string())
    .bind(Text(claimed.id))
    .bind(attempt.attempted_at)
    .bind(attempt.status_code.map(i64::from))
    .bind(attempt.latency_ms)
    .bind(&attempt.response_body)
    .bind(&attempt.error)
    .execute(&mut *conn)
    .await?;
    if let (Some(endpoint_id), Outcome::Succeeded) = (claimed.endpoint_id, outcome) {
        sqlx::query("UPDATE webhook_endpoints SET last_success_at = $1 WHERE id = $2")
            .bind(now)
            .bind(Text(endpoint_id))
            .execute(&mut *conn)
            .await?;
    }
    Ok(true)
}

/// Gives up a claim without an attempt (the worker sends one delivery per URL at a time).
#[tracing::instrument(skip_all, fields(delivery_id = %claimed.id))]
pub async fn release(conn: &mut Conn, claimed: &Claimed) -> Result<(), StoreError> {
    sqlx::query("UPDATE webhook_deliveries SET locked_until = NULL WHERE id = $1 AND locked_until = $2")
        .bind(Text(claimed.id))
        .bind(claimed.lease)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Disables an endpoint (410 Gone, or failing for days) and drops its pending deliveries.
/// Returns false when it was already disabled.
#[tracing::instrument(skip(conn))]
pub async fn disable_endpoint(conn: &mut Conn, id: Uuid, reason: &str) -> Result<bool, StoreError> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $1, updated_at = $2 \
         WHERE id = $3 AND status = 'enabled'",
    )
    .bind(reason)
    .bind(now)
    .bind(Text(id))
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    drop_pending(conn, id, now).await?;
    Ok(true)
}

// === the events API ===

/// An event with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: Uuid,
    pub event_type: EventType,
    pub resource_type: String,
    pub resource_id: Uuid,
    /// `{"id","type","created_at","data"}` exactly as delivered.
    pub payload: String,
    pub created_at: i64,
}

/// A delivery of an event to one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint_id: Option<Uuid>,
    pub url: String,
    pub state: String,
    pub attempt_count: u32,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
}

/// Filters for [`list_events`]; each is neutral when `None`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<EventType>,
    pub resource_id: Option<Uuid>,
    /// Events with at least one delivery in this state (`pending`, `succeeded`, `failed`).
    pub delivery_state: Option<String>,
    pub starting_after: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct EventRow {
    id: Text<Uuid>,
    event_type: EventType,
    resource_type: String,
    resource_id: Text<Uuid>,
    payload: String,
    created_at: i64,
}

impl From<EventRow> for EventRecord {
    fn from(r: EventRow) -> Self {
        EventRecord {
            id: r.id.0,
            event_type: r.event_type,
            resource_type: r.resource_type,
            resource_id: r.resource_id.0,
            payload: r.payload,
            created_at: r.created_at,
        }
    }
}

#[tracing::instrument(skip(conn))]
pub async fn list_events(
    conn: &mut Conn,
    merchant_id: Uuid,
    filter: &EventFilter,
    limit: u32,
) -> Result<Vec<EventRecord>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT id, event_type, resource_type, resource_id, payload, created_at FROM events e WHERE merchant_id = $1 \
         AND ($2 IS NULL OR event_type = $2) AND ($3 IS NULL OR resource_id = $3) AND ($4 IS NULL OR id < $4) \
         AND ($5 IS NULL OR EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = $5)) \
         ORDER BY id DESC LIMIT $6",
    )
    .bind(Text(merchant_id))
    .bind(filter.event_type)
    .bind(filter.resource_id.map(Text))
    .bind(filter.starting_after.map(Text))
    .bind(&filter.delivery_state)
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(EventRecord::from).collect())
}

#[tracing::instrument(skip(conn))]
pub async fn get_event(conn: &mut Conn, merchant_id: Uuid, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
    let row: Option<EventRow> = sqlx::query_as(
        "SELECT id, event_type, resource_type, resource_id, payload, created_at FROM events WHERE id = $1 AND merchant_id = $2",
    )
    .bind(Text(id))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(EventRecord::from))
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: Text<Uuid>,
    endpoint_id: Option<Text<Uuid>>,
    url: String,
    state: String,
    attempt_count: i64,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
}

#[tracing::instrument(skip(conn))]
pub async fn deliveries(conn: &mut Conn, event_id: Uuid) -> Result<Vec<Delivery>, StoreError> {
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, endpoint_id, url, state, attempt_count, next_attempt_at, delivered_at FROM webhook_deliveries \
         WHERE event_id = $1 ORDER BY id",
    )
    .bind(Text(event_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Delivery {
            id: r.id.0,
            endpoint_id: opt(r.endpoint_id),
            url: r.url,
            state: r.state,
            attempt_count: r.attempt_count as u32,
            next_attempt_at: r.next_attempt_at,
            delivered_at: r.delivered_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempted_at: i64,
    status_code: Option<i64>,
    latency_ms: i64,
    response_body: Option<String>,
    error: Option<String>,
}

#[tracing::instrument(skip(conn))]
pub async fn attempts(conn: &mut Conn, delivery_id: Uuid) -> Result<Vec<Attempt>, StoreError> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT attempted_at, status_code, latency_ms, response_body, error FROM webhook_attempts \
         WHERE delivery_id = $1 ORDER BY id",
    )
    .bind(Text(delivery_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Attempt {
            attempted_at: r.attempted_at,
            status_code: r.status_code.and_then(|c| u16::try_from(c).ok()),
            latency_ms: r.latency_ms,
            response_body: r.response_body,
            error: r.error,
        })
        .collect())
}

/// Starts event `event_id`'s deliveries over: due at `now`, a fresh retry schedule (earlier
/// attempts stay recorded), except those to endpoints since disabled or deleted. Returns how many.
#[tracing::instrument(skip(conn))]
pub(crate) async fn restart_deliveries(conn: &mut Conn, event_id: Uuid, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', attempt_count = 0, next_attempt_at = $1, locked_until = NULL, \
         updated_at = $1 WHERE event_id = $2 AND (endpoint_id IS NULL OR endpoint_id IN \
           (SELECT id FROM webhook_endpoints WHERE status = 'enabled' AND deleted_at IS NULL))",
    )
    .bind(now)
    .bind(Text(event_id))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Queue figures for metrics: pending deliveries and the creation time of the oldest.
#[tracing::instrument(skip(conn))]
pub async fn queue_stats(conn: &mut Conn) -> Result<(i64, Option<i64>), StoreError> {
    let (count, oldest): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE state = 'pending'")
            .fetch_one(&mut *conn)
            .await?;
    Ok((count, oldest))
}

/// A merchant's callback signing secret, sealed: current, and the previous one with its expiry.
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackSecret {
    pub sealed: String,
    pub previous_sealed: Option<String>,
    pub previous_expires_at: Option<i64>,
}

/// The merchant's callback secret; in a transaction, locked until it ends (as [`get_endpoint`]).
#[tracing::instrument(skip(conn))]
pub async fn callback_secret(conn: &mut Conn, merchant_id: Uuid) -> Result<Option<CallbackSecret>, StoreError> {
    let for_update = Backend::of(conn).for_update();
    let row: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT secret_ciphertext, previous_secret_ciphertext, previous_secret_expires_at \
         FROM merchant_callback_secrets WHERE merchant_id = $1{for_update}"
    )))
    .bind(Text(merchant_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|(sealed, previous_sealed, previous_expires_at)| CallbackSecret {
        sealed,
        previous_sealed,
        previous_expires_at,
    }))
}

/// Stores the merchant's callback secret. With `only_if_absent`, keeps an existing one (for the
/// worker creating a first secret concurrently with another) and returns whether it wrote.
#[tracing::instrument(skip(conn, secret))]
pub async fn put_callback_secret(
    conn: &mut Conn,
    merchant_id: Uuid,
    secret: &CallbackSecret,
    only_if_absent: bool,
) -> Result<bool, StoreError> {
    let on_conflict = if only_if_absent {
        "DO NOTHING"
    } else {
        "DO UPDATE SET secret_ciphertext = $2, previous_secret_ciphertext = $3, previous_secret_expires_at = $4, \
         updated_at = $5"
    };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO merchant_callback_secrets (merchant_id, secret_ciphertext, previous_secret_ciphertext, \
         previous_secret_expires_at, updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id) {on_conflict}"
    )))
    .bind(Text(merchant_id))
    .bind(&secret.sealed)
    .bind(&secret.previous_sealed)
    .bind(secret.previous_expires_at)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
