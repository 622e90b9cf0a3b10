//! Leases: at most one holder at a time for a named piece of work (each chain's watcher and
//! settler), so several daemons on one PostgreSQL database do not do the same work twice. A
//! holder renews its lease on every step; a dead holder's lease expires after its time to live and
//! the next process to ask takes it over. Correctness never depends on a lease (every write is
//! conditional or idempotent); it saves double work and lock contention.
//!
//! Expiry is judged by each daemon's clock: keep the daemons' clocks in sync (NTP), and the time to
//! live well above any expected skew.

use std::time::Duration;

use uuid::Uuid;

use super::{Store, StoreError};
use crate::time::now_ms;

/// One named lease as seen by one holder.
#[derive(Debug, Clone)]
pub struct Lease {
    store: Store,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// `holder` names this process (one id per daemon), `ttl` how long a lease outlives its last
    /// renewal.
    pub fn new(store: Store, name: impl Into<String>, holder: Uuid, ttl: Duration) -> Lease {
        Lease { store, name: name.into(), holder: holder.to_string(), ttl }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Takes or renews the lease; true while this holder has it.
    #[tracing::instrument(skip_all, fields(lease = %self.name))]
    pub async fn hold(&self) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires_at = now + self.ttl.as_millis() as i64;
        let mut conn = self.store.conn().await?;
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(&self.name)
        .bind(&self.holder)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up (a clean shutdown), so another process takes over at once.
    #[tracing::instrument(skip_all, fields(lease = %self.name))]
    pub async fn release(&self) -> Result<(), StoreError> {
        let mut conn = self.store.conn().await?;
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Expires every lease at once. Only for a process that knows no other daemon can hold one:
    /// the daemon on SQLite, holding the database's exclusive daemon lock, at start-up. A holder
    /// SIGKILLed a moment ago left its leases to run out; nobody else can be using them.
    #[tracing::instrument(skip(store))]
    pub async fn expire_all(store: &Store) -> Result<u64, StoreError> {
        let mut conn = store.conn().await?;
        let done = sqlx::query("UPDATE leases SET expires_at = 0 WHERE expires_at > 0").execute(&mut *conn).await?;
        Ok(done.rows_affected())
    }
}
