//! The loop of a component that works a chain only while it holds that chain's lease
//! ([`Lease`]: one watcher and one settler per chain among daemons sharing a database). Each
//! turn renews the lease, reports a change of hands (a log line, `depositd_lease_held`, and
//! [`LeasedWork::lease_changed`] so the work can drop what only the holder may keep), takes one
//! step while the lease is held, and sleeps for the poll interval (or until woken). A step that
//! fails is logged and retried on the next turn: the work keeps its state in the database. On
//! shutdown the lease is released, so another daemon takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::leases::Lease;

/// What a [`LeasedLoop`] runs.
pub trait LeasedWork {
    type Error: std::error::Error;

    /// One step. `Ok(true)` when more work is waiting now (a backfill): the loop goes on without
    /// sleeping.
    fn step(&mut self) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// This process has just taken (`true`) or lost (`false`) the lease.
    fn lease_changed(&mut self, _held: bool) {}
}

/// One component's leased loop for one chain.
pub struct LeasedLoop {
    /// The component, for logs: `watcher`, `settler`.
    pub component: &'static str,
    pub chain: String,
    /// `None` runs unconditionally (a single daemon).
    pub lease: Option<Lease>,
    /// The sleep between steps, and between tries to take the lease.
    pub poll: Duration,
    /// Ends a sleep between steps early (the watcher's new heads over WebSocket).
    pub wake: Option<Arc<Notify>>,
    pub metrics: Metrics,
}

impl LeasedLoop {
    /// Runs `work` until `shutdown`.
    pub async fn run<W: LeasedWork + Send>(self, work: &mut W, shutdown: CancellationToken) {
        let component = self.component;
        let chain = self.chain.as_str();
        let mut leading = self.lease.is_none();
        loop {
            if let Some(lease) = &self.lease {
                let held = lease.hold().await.unwrap_or_else(|error| {
                    tracing::warn!(chain, %error, "cannot renew the {component} lease");
                    false
                });
                if held != leading {
                    tracing::info!(chain, lease = lease.name(), held, "{component} lease changed hands");
                    self.metrics.lease_held.with_label_values(&[lease.name()]).set(i64::from(held));
                    work.lease_changed(held);
                    leading = held;
                }
                if !held {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.poll) => continue,
                    }
                }
            }
            let more = work.step().await.unwrap_or_else(|error| {
                let cause = std::error::Error::source(&error);
                tracing::warn!(chain, %error, ?cause, "{component} step failed; retrying");
                false
            });
            if shutdown.is_cancelled() {
                return self.release().await;
            }
            if !more {
                let woken = async {
                    match &self.wake {
                        Some(wake) => wake.notified().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return self.release().await,
                    _ = tokio::time::sleep(self.poll) => {}
                    _ = woken => {}
                }
            }
        }
    }

    async fn release(&self) {
        if let Some(lease) = &self.lease
            && let Err(error) = lease.release().await
        {
            tracing::warn!(chain = %self.chain, %error, "cannot release the {} lease", self.component);
        }
    }
}
