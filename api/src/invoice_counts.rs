//! The `depositd_invoices` gauge (invoices by status), counted from the store for `GET /metrics`.
//!
//! Counting reads the whole `invoices` table: about a millisecond for a few thousand invoices,
//! half a second or more for ten million. A scrape must not pile such reads onto the database,
//! nor wait long for them, so, in each process:
//! - one count at a time is running or waiting for a connection: a scrape that finds one answers
//!   at once with the gauge as it stands;
//! - after a count, the next waits for a rest of [`REST_FACTOR`] times as long as the last count's
//!   query took (so counting holds at most about a tenth of one connection's time, whatever the
//!   table's size; a small table is counted afresh at every scrape);
//! - the scrape that starts a count waits for it at most [`WAIT`]; a longer count finishes in the
//!   background and sets the gauge for a later scrape (which may then show figures as old as a
//!   scrape interval plus the count);
//! - a count's query is given up after [`LIMIT`] (its connection closed rather than pooled), so a
//!   database that stops answering cannot hold the gauge, or the daemon's shutdown, for ever.
//!
//! Every status is set, 0 when no invoice has it, so a status that empties reads 0.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use depositd_core::invoice::InvoiceStatus;
use depositd_core::metrics::Metrics;
use depositd_core::store::Store;

/// How long a scrape waits for the count it started.
pub const WAIT: Duration = Duration::from_secs(1);
/// After a count, the next waits this many times as long as its query took.
pub const REST_FACTOR: u32 = 10;
/// A count's query is given up after this long.
pub const LIMIT: Duration = Duration::from_secs(60);

/// When the last count ended and how long its query took.
#[derive(Debug, Default)]
struct Last {
    ended: Option<Instant>,
    took: Duration,
}

#[derive(Debug, Default)]
pub struct InvoiceCounts {
    last: Arc<tokio::sync::Mutex<Last>>,
}

impl InvoiceCounts {
    /// Brings the gauge up to date when it is this scrape's turn to count (see the module doc).
    pub async fn refresh(&self, store: &Store, metrics: &Metrics) {
        // Held by the count for as long as it runs (a panic in it releases it too).
        let Ok(mut last) = self.last.clone().try_lock_owned() else { return };
        if last.ended.is_some_and(|ended| ended.elapsed() < last.took * REST_FACTOR) {
            return;
        }
        let (store, metrics) = (store.clone(), metrics.clone());
        let count = tokio::spawn(async move {
            // Only the query's own time counts towards the rest: not the wait for a connection
            // (a database that does not answer leaves the gauge as it was; /readyz says so).
            let mut took = Duration::ZERO;
            if let Ok(mut conn) = store.conn().await {
                let started = Instant::now();
                let counted =
                    tokio::time::timeout(LIMIT, depositd_core::store::invoices::count_by_status(&mut conn)).await;
                match counted {
                    Ok(Ok(counted)) => set(&metrics, counted),
                    Ok(Err(error)) => tracing::warn!(%error, "cannot count invoices by status for /metrics"),
                    Err(_) => {
                        conn.close_on_drop();
                        tracing::warn!(limit = ?LIMIT, "counting invoices by status for /metrics took too long; gave up");
                    }
                }
                took = started.elapsed();
            }
            *last = Last { ended: Some(Instant::now()), took };
        });
        // Dropping the handle on the timeout leaves the count running.
        let _ = tokio::time::timeout(WAIT, count).await;
    }
}

/// Sets the gauge to `counted`, every status (0 for one no invoice has).
fn set(metrics: &Metrics, counted: Vec<(String, i64)>) {
    let mut counted: HashMap<String, i64> = counted.into_iter().collect();
    for status in InvoiceStatus::ALL {
        let count = counted.remove(status.as_str()).unwrap_or(0);
        metrics.invoices_by_status.with_label_values(&[status.as_str()]).set(count);
    }
    // A word the enum does not know would be corrupt data; shown as it is rather than hidden.
    for (status, count) in counted {
        metrics.invoices_by_status.with_label_values(&[status.as_str()]).set(count);
    }
}
