//! The settler's RPC access: every call has a timeout and is retried with backoff (`backon`),
//! moving to the chain's next endpoint on each failure. Broadcasting is safe to repeat: the same
//! signed bytes are the same transaction.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::transports::TransportResult;
use backon::{ExponentialBuilder, Retryable};
use depositd_core::config::ChainConfig;

use crate::SettleError;

pub struct Rpc {
    endpoints: Vec<DynProvider>,
    active: AtomicUsize,
    timeout: Duration,
}

impl Rpc {
    pub fn new(chain: &ChainConfig) -> Result<Rpc, SettleError> {
        let mut endpoints = Vec::new();
        for url in &chain.rpc_urls {
            let parsed = url
                .expose()
                .parse()
                .map_err(|_| SettleError::Config(format!("chain {}: an RPC URL is not a valid URL", chain.name)))?;
            endpoints.push(ProviderBuilder::new().connect_http(parsed).erased());
        }
        if endpoints.is_empty() {
            return Err(SettleError::Config(format!("chain {} has no RPC URL", chain.name)));
        }
        Ok(Rpc { endpoints, active: AtomicUsize::new(0), timeout: Duration::from_millis(chain.rpc_timeout_ms) })
    }

    /// Runs `call` with retries; `what` names it in errors.
    pub async fn call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, SettleError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let attempt = || async {
            let index = self.active.load(Ordering::Relaxed) % self.endpoints.len();
            let outcome = match tokio::time::timeout(self.timeout, call(self.endpoints[index].clone())).await {
                Ok(Ok(value)) => return Ok(value),
                // Transport errors quote the URL they failed on, key and all.
                Ok(Err(error)) => {
                    SettleError::Rpc { what, message: depositd_core::secret::redact_urls(&error.to_string()) }
                }
                Err(_) => SettleError::Rpc { what, message: format!("timed out after {:?}", self.timeout) },
            };
            let _ = self.active.compare_exchange(
                index,
                (index + 1) % self.endpoints.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            Err(outcome)
        };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .await
    }

    /// One try, no retry: for calls whose error answer is itself the information (a broadcast
    /// the node refuses, a gas estimate that reverts).
    pub async fn once<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, SettleError>
    where
        F: FnOnce(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let index = self.active.load(Ordering::Relaxed) % self.endpoints.len();
        match tokio::time::timeout(self.timeout, call(self.endpoints[index].clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(SettleError::Rpc { what, message: error.to_string() }),
            Err(_) => Err(SettleError::Rpc { what, message: format!("timed out after {:?}", self.timeout) }),
        }
    }

    pub async fn head(&self) -> Result<u64, SettleError> {
        self.call("eth_blockNumber", |p| async move { p.get_block_number().await }).await
    }
}
