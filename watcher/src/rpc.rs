//! The watcher's RPC access: several endpoints per chain with failover, a timeout on every call,
//! retries with exponential backoff and jitter (`backon`) that honour a server's `Retry-After`,
//! and recognition of "block range too large" answers (with the range the provider suggests).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::transports::{RpcError, TransportErrorKind, TransportResult};
use backon::{ExponentialBuilder, Retryable};
use depositd_core::config::ChainConfig;
use depositd_core::metrics::Metrics;

use crate::chain::WatchError;

/// The longest server-requested wait honoured; a longer `Retry-After` is capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

pub struct ChainRpc {
    chain: String,
    metrics: Metrics,
    endpoints: Vec<(String, DynProvider)>,
    active: AtomicUsize,
    timeout: Duration,
    attempts: usize,
}

impl ChainRpc {
    pub fn new(chain: &ChainConfig, metrics: Metrics) -> Result<ChainRpc, WatchError> {
        let mut endpoints = Vec::new();
        for url in &chain.rpc_urls {
            let parsed = url
                .expose()
                .parse()
                .map_err(|_| WatchError::Inconsistent(format!("chain {}: invalid RPC URL", chain.name)))?;
            endpoints.push((url.redacted(), ProviderBuilder::new().connect_http(parsed).erased()));
        }
        if endpoints.is_empty() {
            return Err(WatchError::Inconsistent(format!("chain {} has no RPC URL", chain.name)));
        }
        Ok(ChainRpc {
            chain: chain.name.clone(),
            metrics,
            endpoints,
            active: AtomicUsize::new(0),
            timeout: Duration::from_millis(chain.rpc_timeout_ms),
            attempts: 6,
        })
    }

    /// Runs `call` against the active endpoint, failing over to the next on errors and timeouts,
    /// retrying with backoff. A "range too large" answer is returned at once (the caller shrinks
    /// its range); a JSON-RPC error that retrying cannot fix is returned after the first try.
    pub async fn call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, WatchError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let attempt = || async {
            let index = self.active.load(Ordering::Relaxed) % self.endpoints.len();
            let (url, provider) = &self.endpoints[index];
            let endpoint = index.to_string();
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(self.timeout, call(provider.clone())).await;
            let labels = [self.chain.as_str(), endpoint.as_str(), what];
            self.metrics
                .rpc_request_duration_seconds
                .with_label_values(&labels)
                .observe(started.elapsed().as_secs_f64());
            let word = match &result {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            };
            self.metrics.rpc_requests_total.with_label_values(&[labels[0], labels[1], labels[2], word]).inc();
            let outcome = match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => classify(error),
                Err(_) => Attempt::Retry { error: WatchError::Timeout(self.timeout), retry_after: None },
            };
            if let Attempt::Retry { error, .. } = &outcome
                && self.endpoints.len() > 1
            {
                let next = (index + 1) % self.endpoints.len();
                // Only the first caller to see the failure moves the pointer.
                if self.active.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                    tracing::warn!(chain = %self.chain, from = %url, to = %self.endpoints[next].0, %error, "RPC failover");
                    self.metrics.rpc_failovers_total.with_label_values(&[self.chain.as_str()]).inc();
                }
            }
            Err(outcome)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_max_times(self.attempts)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|outcome| matches!(outcome, Attempt::Retry { .. }))
            .adjust(|outcome, delay| match outcome {
                Attempt::Retry { retry_after: Some(wait), .. } => delay.map(|d| d.max((*wait).min(MAX_RETRY_AFTER))),
                _ => delay,
            })
            .notify(|outcome, wait| {
                if let Attempt::Retry { error, .. } = outcome {
                    tracing::debug!(chain = %self.chain, what, %error, ?wait, "RPC call failed; retrying");
                }
            })
            .await
            .map_err(|outcome| match outcome {
                Attempt::Retry { error, .. } | Attempt::Fail(error) => error,
            })
    }
}

/// What one failed try means.
enum Attempt {
    Retry { error: WatchError, retry_after: Option<Duration> },
    Fail(WatchError),
}

fn classify(error: RpcError<TransportErrorKind>) -> Attempt {
    if let RpcError::ErrorResp(payload) = &error {
        if let Some(suggested) = range_too_large(&payload.message) {
            return Attempt::Fail(WatchError::RangeTooLarge { suggested });
        }
        // -32005 is "limit exceeded" (rate limiting) on several providers; other JSON-RPC errors
        // are the node's considered answer: retrying elsewhere may still help.
        return Attempt::Retry { error: WatchError::Rpc(error), retry_after: None };
    }
    let retry_after = match &error {
        RpcError::Transport(kind) => kind.retry_after(),
        _ => None,
    };
    Attempt::Retry { error: WatchError::Rpc(error), retry_after }
}

/// Whether a JSON-RPC error message says the `eth_getLogs` range (or its result) is too large;
/// `Some(Some(n))` when the provider names a range that works. Providers word it differently:
/// Alchemy suggests `[0xstart, 0xend]`, others name a block count.
pub fn range_too_large(message: &str) -> Option<Option<u64>> {
    let lower = message.to_ascii_lowercase();
    let about_range = [
        "block range",
        "range is too",
        "range too",
        "limited to",
        "max block range",
        "exceed",
        "too many",
        "more than",
        "response size",
        "query returned",
    ];
    if !about_range.iter().any(|needle| lower.contains(needle))
        || !(lower.contains("range") || lower.contains("results") || lower.contains("logs"))
    {
        return None;
    }
    // Alchemy: "... this block range should work: [0x1, 0x7d0]"
    if let Some(open) = lower.find("[0x")
        && let Some(close) = lower[open..].find(']')
    {
        let parts: Vec<&str> = lower[open + 1..open + close].split(',').map(str::trim).collect();
        if let [start, end] = parts[..]
            && let (Some(start), Some(end)) = (parse_hex(start), parse_hex(end))
            && end >= start
        {
            return Some(Some(end - start + 1));
        }
    }
    // A result-count limit says nothing about the block count that fits: halve.
    if lower.contains("results") {
        return Some(None);
    }
    // "limited to a 10,000 range", "up to a 2K block range", "max block range 1000".
    let cleaned = lower.replace(',', "");
    let number = cleaned
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|word| {
            let (digits, scale) = match word.strip_suffix('k') {
                Some(d) => (d, 1000),
                None => (word, 1),
            };
            digits.parse::<u64>().ok().map(|n| n * scale)
        })
        .find(|n| *n > 0);
    Some(number)
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::range_too_large;

    #[test]
    fn recognises_providers_range_errors() {
        assert_eq!(
            range_too_large("Log response size exceeded. this block range should work: [0x10, 0x7cf]"),
            Some(Some(0x7cf - 0x10 + 1))
        );
        assert_eq!(
            range_too_large(
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"
            ),
            Some(Some(2000))
        );
        assert_eq!(range_too_large("eth_getLogs is limited to a 10,000 range"), Some(Some(10_000)));
        assert_eq!(range_too_large("query exceeds max block range 1000"), Some(Some(1000)));
        assert_eq!(range_too_large("query returned more than 10000 results"), Some(None));
        assert_eq!(range_too_large("block range is too wide"), Some(None));
        assert_eq!(range_too_large("execution reverted"), None);
        assert_eq!(range_too_large("nonce too low"), None);
    }
}
