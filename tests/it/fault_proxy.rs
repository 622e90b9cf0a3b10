//! A fault-injecting JSON-RPC HTTP proxy for the chaos test: it sits between the daemon and anvil
//! and, while switched on, misbehaves like the providers depositd meets in production. Every
//! decision comes from one seeded generator, so a seed replays the same stream of faults (the
//! timing of the daemon's calls still varies from run to run).
//!
//! Faults per HTTP request (a batch is one request): 429 with `Retry-After`, a 5xx, a JSON body cut
//! short, a hang past the daemon's RPC timeout. Faults per JSON-RPC call (each element of a batch
//! on its own): a lagging node that answers `eth_getLogs` near the head with no logs (and a
//! `blockHash` query for a block it does not have with geth's -32000 "unknown block"), a head that
//! goes backwards (`eth_blockNumber` a few blocks low), and a range limit for large `eth_getLogs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// splitmix64: small, fast, and the same sequence everywhere for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// How often each fault happens while the proxy is switched on.
#[derive(Debug, Clone)]
pub struct Faults {
    pub too_many_requests: f64,
    pub server_error: f64,
    pub truncated: f64,
    pub hang: f64,
    /// How long a hang lasts (longer than the daemon's `rpc_timeout_ms`).
    pub hang_for: Duration,
    /// `eth_getLogs` touching the last `lag_blocks` blocks answered by a lagging node.
    pub lagging_logs: f64,
    pub lag_blocks: u64,
    /// `eth_blockNumber` answered 1..=`head_back_max` blocks low.
    pub head_backwards: f64,
    pub head_back_max: u64,
    /// `eth_getLogs` over more than `range_limit` blocks refused.
    pub range_limited: f64,
    pub range_limit: u64,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            too_many_requests: 0.03,
            server_error: 0.03,
            truncated: 0.02,
            hang: 0.01,
            hang_for: Duration::from_millis(2_500),
            lagging_logs: 0.15,
            lag_blocks: 3,
            head_backwards: 0.05,
            head_back_max: 3,
            range_limited: 1.0,
            range_limit: 100,
        }
    }
}

/// What the proxy did, by fault.
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    fn bump(&self, what: &str) {
        *self.counts.lock().unwrap().entry(what.to_owned()).or_default() += 1;
    }

    pub fn get(&self, what: &str) -> u64 {
        self.counts.lock().unwrap().get(what).copied().unwrap_or(0)
    }

    /// The faults injected (`calls: false`) or the calls seen, by method (`calls: true`).
    pub fn render(&self, calls: bool) -> String {
        let counts = self.counts.lock().unwrap();
        let shown = counts.iter().filter(|(k, _)| k.starts_with("call:") == calls);
        shown.map(|(k, v)| format!("{}={v}", k.trim_start_matches("call:"))).collect::<Vec<_>>().join(" ")
    }
}

struct Inner {
    upstream: String,
    client: reqwest::Client,
    faults: Faults,
    rng: Mutex<Rng>,
    enabled: AtomicBool,
    stats: Stats,
    requests: AtomicU64,
}

/// A running proxy; it lives as long as the test's runtime.
#[derive(Clone)]
pub struct FaultProxy {
    pub url: String,
    inner: Arc<Inner>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream`, switched off (everything passes through).
    pub async fn start(upstream: String, seed: u64, faults: Faults) -> FaultProxy {
        let inner = Arc::new(Inner {
            upstream,
            client: reqwest::Client::new(),
            faults,
            rng: Mutex::new(Rng::new(seed)),
            enabled: AtomicBool::new(false),
            stats: Stats::default(),
            requests: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let url = format!("http://{}/", depositd_testkit::http::serve(app).await);
        FaultProxy { url, inner }
    }

    pub fn set_enabled(&self, on: bool) {
        self.inner.enabled.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn chance(&self, p: f64) -> bool {
        self.rng.lock().unwrap().chance(p)
    }

    fn range(&self, lo: u64, hi: u64) -> u64 {
        self.rng.lock().unwrap().range(lo, hi)
    }

    async fn forward(&self, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let answer = self
            .client
            .post(&self.upstream)
            .header("content-type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(answer.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }

    async fn upstream_call(&self, method: &str, params: Value) -> Option<Value> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer = self.forward(serde_json::to_vec(&body).unwrap()).await.ok()?;
        let answer: Value = serde_json::from_slice(&answer).ok()?;
        Some(answer.get("result")?.clone())
    }

    async fn head(&self) -> Option<u64> {
        hex_u64(&self.upstream_call("eth_blockNumber", json!([])).await?)
    }

    /// A local answer for one call when a per-call fault hits it, or `None` to pass it on.
    async fn fault_for(&self, call: &Value) -> Option<Value> {
        self.stats.bump(&format!("call:{}", call["method"].as_str().unwrap_or("?")));
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let f = &self.faults;
        match call["method"].as_str()? {
            "eth_getLogs" => {
                let filter = &call["params"][0];
                if let Some(hash) = filter.get("blockHash").and_then(Value::as_str) {
                    if !self.chance(f.lagging_logs) {
                        return None;
                    }
                    let block = self.upstream_call("eth_getBlockByHash", json!([hash, false])).await?;
                    let number = hex_u64(&block["number"])?;
                    if number + f.lag_blocks > self.head().await? {
                        self.stats.bump("lagging_unknown_block");
                        return Some(error(id, -32000, "unknown block"));
                    }
                    return None;
                }
                let head = self.head().await?;
                let block_of = |v: &Value| match v.as_str() {
                    None | Some("latest") | Some("pending") | Some("safe") | Some("finalized") => Some(head),
                    Some("earliest") => Some(0),
                    Some(_) => hex_u64(v),
                };
                let from = block_of(&filter["fromBlock"])?;
                let to = block_of(&filter["toBlock"])?;
                if to >= from && to - from + 1 > f.range_limit && self.chance(f.range_limited) {
                    self.stats.bump("range_limit");
                    let message = format!("query exceeds max block range {}", f.range_limit);
                    return Some(error(id, -32602, &message));
                }
                if to + f.lag_blocks > head && self.chance(f.lagging_logs) {
                    self.stats.bump("lagging_empty_logs");
                    return Some(json!({"jsonrpc": "2.0", "id": id, "result": []}));
                }
                None
            }
            "eth_blockNumber" if self.chance(f.head_backwards) => {
                let head = self.head().await?;
                let back = self.range(1, f.head_back_max).min(head);
                self.stats.bump("head_backwards");
                Some(json!({"jsonrpc": "2.0", "id": id, "result": format!("{:#x}", head - back)}))
            }
            _ => None,
        }
    }

    /// Answers one call or a batch, applying the per-call faults.
    async fn answer(&self, request: Value) -> Result<Vec<u8>, String> {
        let calls: Vec<Value> = match &request {
            Value::Array(calls) => calls.clone(),
            _ => return self.answer_one(request).await,
        };
        self.stats.bump("batches");
        let mut answers: Vec<Option<Value>> = Vec::with_capacity(calls.len());
        let mut passed = Vec::new();
        for call in &calls {
            let local = self.fault_for(call).await;
            if local.is_none() {
                passed.push(call.clone());
            }
            answers.push(local);
        }
        let mut upstream: Vec<Value> = if passed.is_empty() {
            Vec::new()
        } else {
            let bytes = self.forward(serde_json::to_vec(&Value::Array(passed)).unwrap()).await?;
            match serde_json::from_slice(&bytes) {
                Ok(Value::Array(all)) => all,
                _ => return Ok(bytes),
            }
        };
        let mut out = Vec::with_capacity(calls.len());
        for (call, local) in calls.iter().zip(answers) {
            match local {
                Some(answer) => out.push(answer),
                None => {
                    let at = upstream.iter().position(|a| a.get("id") == call.get("id"));
                    if let Some(at) = at {
                        out.push(upstream.remove(at));
                    }
                }
            }
        }
        Ok(serde_json::to_vec(&Value::Array(out)).unwrap())
    }

    async fn answer_one(&self, call: Value) -> Result<Vec<u8>, String> {
        if let Some(local) = self.fault_for(&call).await {
            return Ok(serde_json::to_vec(&local).unwrap());
        }
        self.forward(serde_json::to_vec(&call).unwrap()).await
    }
}

async fn handle(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    if !inner.enabled.load(Ordering::SeqCst) {
        return match inner.forward(body.to_vec()).await {
            Ok(bytes) => json_response(bytes),
            Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
        };
    }
    let f = &inner.faults;
    // Refusals that never reach the node.
    if inner.chance(f.too_many_requests) {
        inner.stats.bump("429");
        let body = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32005,"message":"rate limit exceeded"}}"#;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1"), ("content-type", "application/json")], body)
            .into_response();
    }
    if inner.chance(f.server_error) {
        inner.stats.bump("5xx");
        let status = [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]
            [inner.range(0, 2) as usize];
        return (status, "<html><body>upstream unavailable</body></html>").into_response();
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(_) => {
            return match inner.forward(body.to_vec()).await {
                Ok(bytes) => json_response(bytes),
                Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
            };
        }
    };
    let mut bytes = match inner.answer(request).await {
        Ok(bytes) => bytes,
        Err(e) => return (StatusCode::BAD_GATEWAY, e).into_response(),
    };
    // Faults after the node did the work (a broadcast went through, the answer did not).
    if inner.chance(f.truncated) && bytes.len() > 1 {
        inner.stats.bump("truncated");
        let keep = inner.range(0, bytes.len() as u64 - 1) as usize;
        bytes.truncate(keep);
    }
    if inner.chance(f.hang) {
        inner.stats.bump("hang");
        tokio::time::sleep(f.hang_for).await;
    }
    json_response(bytes)
}

fn json_response(bytes: Vec<u8>) -> Response {
    ([("content-type", "application/json")], bytes).into_response()
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn hex_u64(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}
