//! Keeps the pool of pre-derived invoice addresses filled (see
//! [`depositd_core::store::address_pool`]): checks it every [`CHECK_INTERVAL`], and when fewer
//! than half of `invoices.address_pool_size` are left, tops it up in batches of at most
//! [`BATCH`], each in its own short transaction, so that creations are never held up for long.
//! Several daemons on one database may all run it: each batch claims its indices conditionally.

use std::time::Duration;

use depositd_core::deposit_address::AddressPurpose;
use depositd_core::store::StoreError;
use depositd_core::store::address_pool;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const BATCH: u64 = 128;

/// Runs until `shutdown`. Errors are logged and retried at the next check: an empty pool only
/// slows creation down (it falls back to the counter), it never fails it.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    let size = state.config.settings.invoices.address_pool_size;
    if size == 0 {
        // Off: nothing to do, but a component that returns early stops the daemon.
        shutdown.cancelled().await;
        return;
    }
    loop {
        if let Err(error) = fill(&state, size).await {
            tracing::warn!(%error, "cannot refill the invoice address pool; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

/// Tops the pool up to `size` when fewer than half are left; returns how many were added.
pub async fn fill(state: &AppState, size: u64) -> Result<u64, StoreError> {
    let mut left = {
        let mut conn = state.store.conn().await?;
        address_pool::pooled(&mut conn, AddressPurpose::Invoice).await?
    };
    if left >= size.div_ceil(2) {
        return Ok(0);
    }
    let mut added = 0;
    while left < size {
        let batch = (size - left).min(BATCH);
        let stored = address_pool::refill(&state.store, &state.wallet, AddressPurpose::Invoice, batch).await?;
        left += stored;
        added += stored;
    }
    Ok(added)
}
