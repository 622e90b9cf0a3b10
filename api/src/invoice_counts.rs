//! The `depositd_invoices` gauge (invoices by status), counted from the store for `GET /metrics`.
//!
//! Counting reads the whole `invoices` table: about a millisecond for a few thousand invoices,
//! seconds for ten million. A scrape must not pile such reads onto the database, nor wait for
//! them, so:
//! - one count runs at a time: a scrape that finds one running answers at once with the gauge as
//!   it stands;
//! - a new count starts only once the database has been left alone for [`REST_FACTOR`] times as
//!   long as the last count's query took (so counting takes at most about a tenth of one
//!   connection's time, whatever the table's size; a small table is counted afresh at every
//!   scrape);
//! - the scrape that starts a count waits for it at most [`WAIT`]; a longer count finishes in the
//!   background and sets the gauge for the next scrape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use depositd_core::metrics::Metrics;
use depositd_core::store::Store;

/// How long a scrape waits for the count it started.
pub const WAIT: Duration = Duration::from_secs(1);
/// The database rests this many times as long as the last count took before the next one.
pub const REST_FACTOR: u32 = 10;

/// When the last count ended and how long it took.
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
        // Held by the count for as long as it runs.
        let Ok(mut last) = self.last.clone().try_lock_owned() else { return };
        if last.ended.is_some_and(|ended| ended.elapsed() < last.took * REST_FACTOR) {
            return;
        }
        let (store, metrics) = (store.clone(), metrics.clone());
        let count = tokio::spawn(async move {
            // Only the query's own time counts towards the rest: not the wait for a connection.
            let mut took = Duration::ZERO;
            // A database that does not answer leaves the gauge as it was (and /readyz says so).
            if let Ok(mut conn) = store.conn().await {
                let started = Instant::now();
                let counted = depositd_core::store::invoices::count_by_status(&mut conn).await;
                took = started.elapsed();
                for (status, count) in counted.into_iter().flatten() {
                    metrics.invoices_by_status.with_label_values(&[status.as_str()]).set(count);
                }
            }
            *last = Last { ended: Some(Instant::now()), took };
        });
        // Dropping the handle on the timeout leaves the count running.
        let _ = tokio::time::timeout(WAIT, count).await;
    }
}
