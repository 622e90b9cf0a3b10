//! Expires unpaid invoices at `expires_at`, recording `invoice.expired` in the same transaction.
//! Safe with several daemons: the status change is conditional, so each invoice expires once.
//! A payment arriving later is still credited (the watcher flags it `paid_late`).

use std::time::Duration;

use depositd_core::invoice::InvoiceResource;
use depositd_core::outbox::{self, EventType};
use depositd_core::store::invoices;
use depositd_core::time::now_ms;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

const BATCH: u32 = 500;

/// Runs until `shutdown`, checking every `interval`.
pub async fn run(
    state: AppState,
    interval: Duration,
    shutdown: CancellationToken,
) -> Result<(), depositd_core::store::StoreError> {
    loop {
        // Drain: keep going while full batches come back.
        while expire_once(&state).await? == BATCH as usize {}
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass; returns how many invoices it expired.
pub async fn expire_once(state: &AppState) -> Result<usize, depositd_core::store::StoreError> {
    let mut tx = state.store.begin().await?;
    let expired = invoices::expire_due(&mut tx, now_ms(), BATCH).await?;
    for invoice in &expired {
        let resource =
            InvoiceResource::build(invoice, Vec::new(), &state.config.settings.api.public_url, &state.sessions);
        outbox::record_invoice(&mut tx, EventType::InvoiceExpired, invoice, &resource).await?;
    }
    tx.commit().await?;
    if !expired.is_empty() {
        tracing::info!(count = expired.len(), "invoices expired");
    }
    Ok(expired.len())
}
