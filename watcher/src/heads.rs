//! Following new heads over WebSocket (`eth_subscribe("newHeads")`) when a chain has a `ws_url`:
//! each new block wakes the watcher at once instead of at its next poll. Polling stays on as
//! the fallback, and a dropped subscription reconnects with backoff, so a flaky socket can
//! delay a payment but never lose one.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use depositd_core::secret::RpcUrl;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Runs until `shutdown`, calling `wake.notify_one()` for every new head.
pub async fn follow(chain: String, ws_url: RpcUrl, wake: Arc<Notify>, shutdown: CancellationToken) {
    let shown_url = ws_url.redacted();
    let mut delay = Duration::from_secs(1);
    loop {
        match ProviderBuilder::new().connect_ws(WsConnect::new(ws_url.expose())).await {
            Ok(provider) => match provider.subscribe_blocks().await {
                Ok(mut heads) => {
                    tracing::info!(%chain, url = %shown_url, "following new heads over WebSocket");
                    delay = Duration::from_secs(1);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            head = heads.recv() => match head {
                                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wake.notify_one(),
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                            },
                        }
                    }
                    tracing::warn!(%chain, "newHeads subscription closed; reconnecting");
                }
                Err(error) => tracing::warn!(%chain, %error, "cannot subscribe to newHeads; polling meanwhile"),
            },
            Err(error) => {
                tracing::warn!(%chain, url = %shown_url, %error, "cannot connect the WebSocket; polling meanwhile")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}
