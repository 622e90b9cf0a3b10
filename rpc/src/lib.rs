//! depositd's JSON-RPC client for one chain, shared by the watcher and the settler (and the CLI's
//! one-off reads): several endpoints with failover, a timeout on every call, retries with
//! exponential backoff and jitter (`backon`) that honour a server's `Retry-After`, and per-call
//! metrics labelled by chain, endpoint position and method.
//!
//! Two ways to call: [`ChainRpc::call`] retries every failure (a read: any node may know better);
//! [`ChainRpc::once`] returns a node's JSON-RPC error answer at once and retries only when no
//! answer came (a broadcast the node refuses, a gas estimate that reverts: the refusal is the
//! information). A [`Policy`] sets how hard to try and whether "block range too large" answers
//! end a call (the watcher shrinks its `eth_getLogs` range instead).
//!
//! RPC URLs are secrets (providers put API keys in them): logs, errors and labels only ever show
//! what `depositd_core::secret::redact_url` makes of a URL, and metrics name an endpoint
//! by its position in the chain's list.
//!
//! # Layout
//! - this module: [`ChainRpc`], [`Policy`], [`RpcError`].
//! - [`range`]: recognising "block range too large" answers and the range a provider suggests.

pub mod range;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::transports::http::reqwest::Url;
use alloy::transports::{TransportErrorKind, TransportResult};
use backon::{ExponentialBuilder, Retryable};
use depositd_core::config::ChainConfig;
use depositd_core::metrics::Metrics;

pub use range::range_too_large;

/// Why a call (or building the client) failed. Messages never carry more of a URL than
/// `redact_url` shows.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The last try's failure: the node's JSON-RPC error answer, an HTTP error, a body that is
    /// not JSON-RPC, a connection that failed.
    #[error("{what} failed: {message}")]
    Failed { what: &'static str, message: String },
    #[error("{what} failed: timed out after {timeout:?}")]
    Timeout { what: &'static str, timeout: Duration },
    /// Only with [`Policy::range_errors`]: the provider refused an `eth_getLogs` range;
    /// `suggested` is the block count it names, if any.
    #[error("the provider refused the eth_getLogs block range as too large")]
    RangeTooLarge { suggested: Option<u64> },
    /// The chain's RPC URLs cannot make a client.
    #[error("{0}")]
    Config(String),
}

/// How hard a [`ChainRpc`] tries before giving up on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries after the first one (each on the endpoint that is active by then).
    pub retries: usize,
    /// The longest backoff between two tries (they start at 100 ms and double, with jitter).
    pub max_delay: Duration,
    /// The longest server-requested wait (`Retry-After`) honoured; a longer one is capped.
    pub max_retry_after: Duration,
    /// Whether a "block range too large" answer ends the call at once as
    /// [`RpcError::RangeTooLarge`] (for a caller that shrinks its range) instead of being retried.
    pub range_errors: bool,
}

impl Default for Policy {
    /// Patient: six retries, up to 10 s apart, `Retry-After` up to 30 s.
    fn default() -> Policy {
        Policy {
            retries: 6,
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            range_errors: false,
        }
    }
}

/// One endpoint of the chain.
struct Endpoint {
    provider: DynProvider,
    /// The URL as logs and errors may show it.
    shown: String,
    /// The URL as configured, as parsed, and as parsed without userinfo (the form the HTTP client
    /// prints in its errors), longest first: the text to take out of any error message.
    secret_forms: Vec<String>,
}

/// One chain's endpoints, tried in turn.
pub struct ChainRpc {
    chain: String,
    metrics: Metrics,
    endpoints: Vec<Endpoint>,
    /// The endpoint calls go to; moves to the next on a failure.
    active: AtomicUsize,
    timeout: Duration,
    policy: Policy,
}

/// What one failed try means.
enum Attempt {
    Retry { error: RpcError, retry_after: Option<Duration> },
    Fail(RpcError),
}

impl ChainRpc {
    /// A client over `chain.rpc_urls` with the chain's `rpc_timeout_ms` and the default
    /// [`Policy`].
    pub fn new(chain: &ChainConfig, metrics: Metrics) -> Result<ChainRpc, RpcError> {
        let mut endpoints = Vec::new();
        for url in &chain.rpc_urls {
            let parsed: Url = url
                .expose()
                .parse()
                .map_err(|_| RpcError::Config(format!("chain {}: an RPC URL is not a valid URL", chain.name)))?;
            // reqwest's errors name the URL parsed and without its userinfo.
            let mut bare = parsed.clone();
            let _ = bare.set_username("");
            let _ = bare.set_password(None);
            let mut secret_forms = vec![parsed.as_str().to_owned(), bare.as_str().to_owned(), url.expose().to_owned()];
            secret_forms.sort_by_key(|form| std::cmp::Reverse(form.len()));
            secret_forms.dedup();
            endpoints.push(Endpoint {
                provider: ProviderBuilder::new().connect_http(parsed).erased(),
                shown: url.redacted(),
                secret_forms,
            });
        }
        if endpoints.is_empty() {
            return Err(RpcError::Config(format!("chain {} has no RPC URL", chain.name)));
        }
        Ok(ChainRpc {
            chain: chain.name.clone(),
            metrics,
            endpoints,
            active: AtomicUsize::new(0),
            timeout: Duration::from_millis(chain.rpc_timeout_ms),
            policy: Policy::default(),
        })
    }

    pub fn with_policy(mut self, policy: Policy) -> ChainRpc {
        self.policy = policy;
        self
    }

    /// Runs `call` against the active endpoint, failing over to the next on errors and timeouts,
    /// retrying with backoff. `what` names the call in metrics, logs and errors.
    pub async fn call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, RpcError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        self.run(what, false, call).await
    }

    /// Like [`ChainRpc::call`], but a JSON-RPC error answer is returned at once, never retried
    /// and without failing over; only a failure to get an answer at all (a timeout, an HTTP error
    /// such as 429 or 5xx, a body that is not JSON-RPC) is retried, on the next endpoint. For
    /// calls whose error answer is itself the information; the call must be safe to repeat (the
    /// same signed bytes are the same transaction).
    pub async fn once<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, RpcError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        self.run(what, true, call).await
    }

    /// The head block number (`eth_blockNumber`).
    pub async fn head(&self) -> Result<u64, RpcError> {
        self.call("eth_blockNumber", |p| async move { p.get_block_number().await }).await
    }

    async fn run<T, F, Fut>(&self, what: &'static str, answer_is_final: bool, call: F) -> Result<T, RpcError>
    where
        F: Fn(DynProvider) -> Fut,
        Fut: Future<Output = TransportResult<T>>,
    {
        let attempt = || async {
            let index = self.active.load(Ordering::Relaxed) % self.endpoints.len();
            let started = Instant::now();
            let result = tokio::time::timeout(self.timeout, call(self.endpoints[index].provider.clone())).await;
            self.observe(
                index,
                what,
                started,
                match &result {
                    Ok(Ok(_)) => "ok",
                    Ok(Err(_)) => "error",
                    Err(_) => "timeout",
                },
            );
            let outcome = match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => self.classify(what, answer_is_final, error),
                Err(_) => {
                    Attempt::Retry { error: RpcError::Timeout { what, timeout: self.timeout }, retry_after: None }
                }
            };
            if let Attempt::Retry { error, .. } = &outcome {
                self.fail_over(index, error);
            }
            Err(outcome)
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|outcome| matches!(outcome, Attempt::Retry { .. }))
            .adjust(|outcome, delay| match outcome {
                Attempt::Retry { retry_after: Some(wait), .. } => {
                    delay.map(|d| d.max((*wait).min(self.policy.max_retry_after)))
                }
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

    fn observe(&self, index: usize, what: &'static str, started: Instant, result: &'static str) {
        let endpoint = index.to_string();
        let labels = [self.chain.as_str(), endpoint.as_str(), what];
        self.metrics.rpc_request_duration_seconds.with_label_values(&labels).observe(started.elapsed().as_secs_f64());
        self.metrics.rpc_requests_total.with_label_values(&[labels[0], labels[1], labels[2], result]).inc();
    }

    /// Moves calls to the endpoint after `index`; only the first caller to see it fail does.
    fn fail_over(&self, index: usize, error: &RpcError) {
        if self.endpoints.len() < 2 {
            return;
        }
        let next = (index + 1) % self.endpoints.len();
        if self.active.compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            let (from, to) = (&self.endpoints[index].shown, &self.endpoints[next].shown);
            tracing::warn!(chain = %self.chain, %from, %to, %error, "RPC failover");
            self.metrics.rpc_failovers_total.with_label_values(&[self.chain.as_str()]).inc();
        }
    }

    fn classify(&self, what: &'static str, answer_is_final: bool, error: alloy::transports::TransportError) -> Attempt {
        use alloy::transports::RpcError as Alloy;
        let failed =
            |error: &Alloy<TransportErrorKind>| RpcError::Failed { what, message: self.scrub(error.to_string()) };
        if let Alloy::ErrorResp(payload) = &error {
            if self.policy.range_errors
                && let Some(suggested) = range_too_large(&payload.message)
            {
                return Attempt::Fail(RpcError::RangeTooLarge { suggested });
            }
            if answer_is_final {
                return Attempt::Fail(failed(&error));
            }
            // -32005 is "limit exceeded" (rate limiting) on several providers; other JSON-RPC
            // errors are the node's considered answer: retrying elsewhere may still help.
            return Attempt::Retry { error: failed(&error), retry_after: None };
        }
        let retry_after = match &error {
            Alloy::Transport(kind) => kind.retry_after(),
            _ => None,
        };
        Attempt::Retry { error: failed(&error), retry_after }
    }

    /// `message` with every endpoint's URL replaced by its shown form (the HTTP client names the
    /// URL in connection errors).
    fn scrub(&self, mut message: String) -> String {
        for endpoint in &self.endpoints {
            for secret in &endpoint.secret_forms {
                if !secret.is_empty() && message.contains(secret.as_str()) {
                    message = message.replace(secret.as_str(), &endpoint.shown);
                }
            }
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use alloy::providers::Provider;
    use depositd_core::config::{ChainConfig, NativeAsset};
    use depositd_core::metrics::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use depositd_core::secret::redact_url;

    fn chain(rpc_urls: Vec<String>) -> ChainConfig {
        ChainConfig {
            name: "test".into(),
            chain_id: 1,
            rpc_urls: rpc_urls.into_iter().map(Into::into).collect(),
            rpc_urls_env: None,
            rpc_urls_from_env: false,
            ws_url: None,
            ws_url_env: None,
            confirmations: 1,
            block_time_ms: 1000,
            poll_interval_ms: 1000,
            max_block_range: 100,
            rpc_timeout_ms: 2000,
            rpc_concurrency: 1,
            start_block: None,
            native_deposits: None,
            testnet: true,
            native: NativeAsset { symbol: "ETH".into(), decimals: 18 },
            tokens: Vec::new(),
            cold_storage: Default::default(),
        }
    }

    const QUICK: Policy = Policy {
        retries: 2,
        max_delay: Duration::from_millis(10),
        max_retry_after: Duration::from_millis(10),
        range_errors: false,
    };

    /// An HTTP endpoint that answers every request with the JSON-RPC error `message`; returns its
    /// URL and how many requests it has had.
    async fn refusing_node(message: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // One request per connection (`Connection: close`): read until the body is in.
                while !String::from_utf8_lossy(&request).contains("\"jsonrpc\"") || !request.ends_with(b"}") {
                    let n = socket.read(&mut buffer).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buffer[..n]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request);
                let id: String =
                    text.split("\"id\":").nth(1).unwrap_or("0").chars().take_while(|c| c.is_ascii_digit()).collect();
                let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32000,"message":"{message}"}}}}"#);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, requests)
    }

    #[tokio::test]
    async fn an_error_answer_is_retried_by_call_and_final_for_once() {
        let (url, requests) = refusing_node("nonce too low").await;
        let rpc = ChainRpc::new(&chain(vec![url]), Metrics::new()).unwrap().with_policy(QUICK);
        let error = rpc.call("eth_blockNumber", |p| async move { p.get_block_number().await }).await.unwrap_err();
        assert!(matches!(&error, RpcError::Failed { message, .. } if message.contains("nonce too low")), "{error}");
        assert_eq!(requests.swap(0, Ordering::SeqCst), 1 + QUICK.retries);
        let error = rpc.once("eth_blockNumber", |p| async move { p.get_block_number().await }).await.unwrap_err();
        assert!(matches!(&error, RpcError::Failed { message, .. } if message.contains("nonce too low")), "{error}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "an answer is never asked again");
    }

    #[tokio::test]
    async fn a_range_error_ends_the_call_only_for_a_caller_that_shrinks_its_range() {
        let (url, requests) = refusing_node("query exceeds max block range 1000").await;
        let rpc = ChainRpc::new(&chain(vec![url.clone()]), Metrics::new())
            .unwrap()
            .with_policy(Policy { range_errors: true, ..QUICK });
        let error = rpc.call("eth_getLogs", |p| async move { p.get_block_number().await }).await.unwrap_err();
        assert!(matches!(error, RpcError::RangeTooLarge { suggested: Some(1000) }), "{error}");
        assert_eq!(requests.swap(0, Ordering::SeqCst), 1);
        let rpc = ChainRpc::new(&chain(vec![url]), Metrics::new()).unwrap().with_policy(QUICK);
        let error = rpc.call("eth_getLogs", |p| async move { p.get_block_number().await }).await.unwrap_err();
        assert!(matches!(error, RpcError::Failed { .. }), "{error}");
        assert_eq!(requests.load(Ordering::SeqCst), 1 + QUICK.retries);
    }

    #[tokio::test]
    async fn failures_fail_over_and_errors_never_show_a_url_s_secret() {
        // Nothing listens on port 1: every try fails to connect, and reqwest names the URL.
        let secret = "http://user:hunter2@127.0.0.1:1/v3/key";
        let (url, requests) = refusing_node("nonce too low").await;
        let metrics = Metrics::new();
        let rpc = ChainRpc::new(&chain(vec![secret.into(), url]), metrics.clone()).unwrap().with_policy(QUICK);
        let error = rpc.once("eth_blockNumber", |p| async move { p.get_block_number().await }).await.unwrap_err();
        assert!(matches!(&error, RpcError::Failed { message, .. } if message.contains("nonce too low")), "{error}");
        assert_eq!(requests.load(Ordering::SeqCst), 1, "the second endpoint answered");
        assert_eq!(metrics.rpc_failovers_total.with_label_values(&["test"]).get(), 1);

        let rpc = ChainRpc::new(&chain(vec![secret.into()]), Metrics::new()).unwrap().with_policy(QUICK);
        let error = rpc.call("eth_blockNumber", |p| async move { p.get_block_number().await }).await.unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let allowed = redact_url(secret);
        assert!(shown.replace(&allowed, "").find("127.0.0.1:1").is_none(), "only the shown form: {shown}");
    }
}
