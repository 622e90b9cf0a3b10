//! Benchmark 2: payment latency, from the block that pays an invoice to its `invoice.paid`
//! webhook arriving at a local receiver.
//!
//! anvil mines each transaction at once (automine); the real `depositd` daemon (every component,
//! SQLite) watches it with confirmations = 1. The harness follows anvil's heads over its own
//! WebSocket subscription: a block "exists" when its header reaches the harness. Payments are
//! pre-signed token transfers of exactly the invoice's amount, first one at a time (the next one
//! is sent once the previous webhook arrived), then in waves of `--wave` sent at once.
//!
//! Each webhook's `webhook-id` is the event id, a UUIDv7 whose first 48 bits are the millisecond
//! at which the daemon recorded the event (in the transaction that credited the payment), so each
//! latency splits into "block to event" (the watcher) and "event to arrival" (the delivery worker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, ProviderBuilder, WsConnect};
use anyhow::{Context, bail};
use depositd_testkit::webhooks::{Hit, Receiver};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Global;
use crate::chain::{BenchChain, ChainFile, Transfer, sign_transfer};
use crate::daemon::{Daemon, RunDir};
use crate::db::{self, Backend};
use crate::report::{Section, Table, Target};
use crate::seed::{self, ApiClient};
use crate::stats::{Samples, count, ms};
use crate::sys::CpuMeter;

const TARGET_P50_MS: f64 = 100.0;
const TARGET_P99_MS: f64 = 500.0;
/// Payments in waves: block to webhook p99 (the watcher's part and the delivery of a burst).
const TARGET_WAVES_P99_MS: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Heads {
    /// The chain file has a `ws_url`: new heads wake the watcher at once.
    Websocket,
    /// No `ws_url`: the watcher polls every `--poll-interval-ms`.
    Polling,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Payments one at a time, and again as many in waves.
    #[arg(long, default_value_t = 200)]
    pub payments: usize,
    /// Payments sent at once in each wave.
    #[arg(long, default_value_t = 20)]
    pub wave: usize,
    /// How the daemon's watcher learns of new blocks, one daemon run per mode.
    #[arg(long, value_delimiter = ',', default_value = "websocket,polling")]
    pub heads: Vec<Heads>,
    /// The chain file's poll_interval_ms (anvil.toml ships 500).
    #[arg(long, default_value_t = 500)]
    pub poll_interval_ms: u64,
    /// Also run WebSocket heads with this webhooks.poll_interval_ms (how often the delivery worker
    /// polls for deliveries queued by other daemons and for retries; the other runs keep the shipped
    /// default): a check that this daemon's own deliveries do not wait for the poll. 0 skips it.
    #[arg(long, default_value_t = 50)]
    pub fast_delivery_ms: u64,
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
}

impl Default for LatencyArgs {
    fn default() -> Self {
        crate::default_args("latency")
    }
}

impl LatencyArgs {
    pub fn quick() -> LatencyArgs {
        LatencyArgs { payments: 20, wave: 10, ..LatencyArgs::default() }
    }
}

/// An `invoice.paid` delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    at: SystemTime,
    /// When the daemon recorded the event (from the UUIDv7 `webhook-id`).
    event_at: Option<SystemTime>,
}

/// The first `invoice.paid` delivery of each invoice, read from the receiver's hits as they come.
#[derive(Default)]
struct PaidLog {
    paid: HashMap<String, Arrival>,
    /// How many of the receiver's hits were read.
    read: usize,
}

impl PaidLog {
    fn read(&mut self, hits: &[Hit]) {
        for hit in &hits[self.read.min(hits.len())..] {
            let event = hit.event();
            if event["type"] == "invoice.paid"
                && let Some(id) = event["data"]["id"].as_str()
            {
                let event_at = hit
                    .headers
                    .get("webhook-id")
                    .and_then(|v| uuid::Uuid::parse_str(v).ok())
                    .and_then(|id| id.get_timestamp())
                    .map(|ts| {
                        let (secs, nanos) = ts.to_unix();
                        UNIX_EPOCH + Duration::new(secs, nanos)
                    });
                self.paid.entry(id.to_owned()).or_insert(Arrival { at: hit.at, event_at });
            }
        }
        self.read = hits.len();
    }

    /// Waits for `invoice.paid` of every invoice in `ids`.
    async fn wait_paid(
        &mut self,
        receiver: &Receiver,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Vec<Arrival>> {
        let arrived = receiver
            .wait_until(timeout, |hits| {
                self.read(hits);
                ids.iter().all(|id| self.paid.contains_key(id))
            })
            .await;
        if !arrived {
            bail!("invoice.paid did not arrive within {timeout:?}");
        }
        Ok(ids.iter().map(|id| self.paid[id].clone()).collect())
    }
}

/// When each block's header reached the harness over WebSocket.
#[derive(Clone, Default)]
struct HeadClock {
    seen: Arc<Mutex<HashMap<u64, SystemTime>>>,
}

impl HeadClock {
    async fn follow(ws_url: String, stop: CancellationToken) -> anyhow::Result<HeadClock> {
        let heads = HeadClock::default();
        let provider = ProviderBuilder::new().connect_ws(WsConnect::new(ws_url)).await?;
        let mut subscription = provider.subscribe_blocks().await?;
        let seen = heads.seen.clone();
        tokio::spawn(async move {
            let _keep = provider;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    header = subscription.recv() => match header {
                        Ok(header) => { seen.lock().expect("heads").insert(header.number, SystemTime::now()); }
                        Err(_) => return,
                    },
                }
            }
        });
        Ok(heads)
    }

    async fn seen(&self, block: u64) -> anyhow::Result<SystemTime> {
        for _ in 0..1000 {
            if let Some(at) = self.seen.lock().expect("heads").get(&block) {
                return Ok(*at);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("block {block}'s header did not arrive over WebSocket")
    }
}

/// An invoice to pay.
struct Payable {
    id: String,
    address: Address,
    amount: U256,
}

/// One latency sample, in milliseconds.
struct Sample {
    total: f64,
    watcher: Option<f64>,
    delivery: Option<f64>,
}

struct RunResult {
    name: String,
    one_at_a_time: Vec<Sample>,
    waves: Vec<Sample>,
    webhook_poll_ms: u64,
    cpu: String,
}

fn millis_between(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    }
}

/// Sends raw transactions at once and returns each one's block number.
async fn send(chain: &BenchChain, raw: Vec<String>) -> anyhow::Result<Vec<u64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, tx) in raw.into_iter().enumerate() {
        let rpc = chain.rpc.clone();
        tasks.spawn(async move { (i, rpc.call("eth_sendRawTransaction", json!([tx])).await) });
    }
    let mut hashes = vec![Value::Null; tasks.len()];
    while let Some(done) = tasks.join_next().await {
        let (i, hash) = done?;
        hashes[i] = hash?;
    }
    let mut blocks = Vec::with_capacity(hashes.len());
    for hash in hashes {
        let mut tries = 0;
        let receipt = loop {
            let receipt = chain.rpc.call("eth_getTransactionReceipt", json!([hash])).await?;
            if !receipt.is_null() {
                break receipt;
            }
            tries += 1;
            anyhow::ensure!(tries < 2000, "transaction {hash} was not mined");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        anyhow::ensure!(receipt["status"] == "0x1", "payment {hash} reverted");
        blocks.push(crate::rpc::hex_u64(&receipt["blockNumber"])?);
    }
    Ok(blocks)
}

async fn measure(
    global: &Global,
    args: &LatencyArgs,
    chain: &BenchChain,
    bin: &std::path::Path,
    name: String,
    heads_mode: Heads,
    webhook_poll_ms: Option<u64>,
) -> anyhow::Result<RunResult> {
    eprintln!("latency: {name}");
    let db = db::create(args.backend, &global.postgres_url, "latency").await?;
    let store = db.connect(4).await?;
    let key = seed::merchant(&store).await?;
    store.close().await;
    let head = chain.rpc.block_number().await?;
    let chain_file = chain.chain_file(&ChainFile {
        confirmations: 1,
        poll_interval_ms: args.poll_interval_ms,
        max_block_range: 1000,
        websocket: heads_mode == Heads::Websocket,
        start_block: head + 1,
    });
    let extra: Vec<(&str, &str, String)> =
        webhook_poll_ms.map(|ms| ("webhooks", "poll_interval_ms", ms.to_string())).into_iter().collect();
    let run = RunDir::new(&db.url, &chain_file, &extra)?;
    let webhook_poll_ms = run.config()?.settings.webhooks.poll_interval_ms;
    let receiver = Receiver::bind(0).await?;
    let mut paid = PaidLog::default();
    let mut daemon = Daemon::spawn(bin, &run, &[])?;
    daemon.wait_healthy(Duration::from_secs(60)).await?;
    let api = ApiClient::new(&daemon.api_url, key);
    api.webhook_endpoint(&receiver.url("/hooks"), &["invoice.paid"]).await?;
    let mut invoices = Vec::new();
    for _ in 0..args.payments * 2 {
        let invoice = api.create_invoice(&json!({"amount": "10", "currency": "USD"})).await?;
        invoices.push(Payable {
            id: invoice["id"].as_str().context("invoice id")?.to_owned(),
            address: invoice["pay"]["address"].as_str().context("pay.address")?.parse()?,
            amount: invoice["pay"]["amount_base_units"].as_str().context("pay.amount_base_units")?.parse()?,
        });
    }
    let stop = CancellationToken::new();
    let heads = HeadClock::follow(chain.anvil.ws_url(), stop.clone()).await?;
    let usdc = chain.token("USDC");
    let mut nonce = chain.nonce(chain.payer.address()).await?;
    let mut sign = |invoice: &Payable| {
        let raw =
            sign_transfer(&chain.payer, nonce, &Transfer { token: usdc, to: invoice.address, amount: invoice.amount });
        nonce += 1;
        raw
    };
    let sample = |block_at: SystemTime, arrival: &Arrival| Sample {
        total: millis_between(block_at, arrival.at),
        watcher: arrival.event_at.map(|e| millis_between(block_at, e)),
        delivery: arrival.event_at.map(|e| millis_between(e, arrival.at)),
    };
    // Let the daemon settle (first watcher tick, first delivery poll) before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let meter = CpuMeter::start(&[("depositd", daemon.pid)]);
    let (sequential, waves) = invoices.split_at(args.payments);
    // A random pause before each payment (or wave), up to one delivery poll interval: should
    // delivery wait for the worker's poll, payments sent the moment the previous webhook arrived
    // would fall into step with it and always wait its whole interval.
    let pause = || Duration::from_micros(rand::random_range(0..webhook_poll_ms.max(1) * 1000));
    let mut one_at_a_time = Vec::new();
    for invoice in sequential {
        tokio::time::sleep(pause()).await;
        let raw = sign(invoice)?;
        let block = send(chain, vec![raw]).await?[0];
        let block_at = heads.seen(block).await?;
        let arrival = paid.wait_paid(&receiver, std::slice::from_ref(&invoice.id), Duration::from_secs(30)).await?;
        one_at_a_time.push(sample(block_at, &arrival[0]));
    }
    let mut in_waves = Vec::new();
    for wave in waves.chunks(args.wave.max(1)) {
        tokio::time::sleep(pause()).await;
        let raw: Vec<String> = wave.iter().map(&mut sign).collect::<anyhow::Result<_>>()?;
        let blocks = send(chain, raw).await?;
        let ids: Vec<String> = wave.iter().map(|i| i.id.clone()).collect();
        let arrivals = paid.wait_paid(&receiver, &ids, Duration::from_secs(60)).await?;
        for (block, arrival) in blocks.iter().zip(&arrivals) {
            in_waves.push(sample(heads.seen(*block).await?, arrival));
        }
    }
    let cpu = meter.stop().describe();
    stop.cancel();
    if !daemon.alive() {
        bail!("the daemon stopped during the run; its log:\n{}", daemon.log_tail());
    }
    daemon.stop().await;
    if global.verbose {
        eprintln!("  daemon log kept in {}", run.keep().display());
    }
    Ok(RunResult { name, one_at_a_time, waves: in_waves, webhook_poll_ms, cpu })
}

/// The name of the WebSocket-heads run with `webhooks.poll_interval_ms` = `poll_ms`.
fn fast_run_name(poll_ms: u64) -> String {
    format!("WebSocket heads, webhooks.poll_interval_ms = {poll_ms}")
}

pub async fn run(global: &Global, args: &LatencyArgs, bin: &std::path::Path) -> anyhow::Result<Section> {
    anyhow::ensure!(args.payments > 0 && args.wave > 0, "sizes must be positive");
    let chain = BenchChain::start(&["USDC"], false).await?;
    let mut runs = Vec::new();
    for heads in &args.heads {
        let name = match heads {
            Heads::Websocket => "WebSocket heads".to_owned(),
            Heads::Polling => format!("polling every {} ms", args.poll_interval_ms),
        };
        runs.push(measure(global, args, &chain, bin, name, *heads, None).await?);
    }
    if args.fast_delivery_ms > 0 {
        let name = fast_run_name(args.fast_delivery_ms);
        runs.push(measure(global, args, &chain, bin, name, Heads::Websocket, Some(args.fast_delivery_ms)).await?);
    }
    chain.anvil.shutdown().await;

    let mut section = Section { title: "2. Payment latency".into(), ..Section::default() };
    section.setup = vec![
        format!(
            "anvil mines each transaction at once; the real `depositd` daemon (all components, {}) runs with \
             confirmations = 1 and an `invoice.paid` webhook endpoint at a receiver in the harness. Each payment is a \
             pre-signed USDC transfer of exactly the invoice's amount: {} one at a time (the next is sent once the \
             previous webhook arrived), then {} more in waves of {} sent at once (each wave's transfers land in \
             consecutive blocks). Before each payment or wave the harness pauses for a random time up to one \
             `webhooks.poll_interval_ms`, so that payments could not fall into step with the delivery worker's \
             poll, should delivery wait for it.",
            args.backend.label(),
            count(args.payments as u64),
            count(args.payments as u64),
            args.wave
        ),
        "Latency = the webhook's arrival at the receiver minus the moment the paying block's header reached the \
         harness over its own WebSocket subscription to anvil (the block exists). It splits at the moment the \
         daemon recorded the `invoice.paid` event, read from the event id (a UUIDv7, millisecond clock) sent as \
         `webhook-id`: *watcher* = block to event (detection and crediting), *delivery* = event to arrival (the \
         delivery is queued in the event's transaction, and its commit wakes the daemon's webhook worker, which \
         claims it, signs it and POSTs it; the worker's poll every `webhooks.poll_interval_ms` only finds \
         deliveries queued by other daemons, and retries)."
            .into(),
        format!(
            "Runs: WebSocket heads (the chain file has `ws_url`), polling (no `ws_url`; `poll_interval_ms` = {}), \
             both with the shipped `webhooks.poll_interval_ms`{}.",
            args.poll_interval_ms,
            if args.fast_delivery_ms > 0 {
                format!(
                    "; and WebSocket heads with `webhooks.poll_interval_ms` = {} ms, a check that the daemon's own \
                     deliveries do not wait for the worker's poll: if they do not, its delivery column matches the \
                     first run's",
                    args.fast_delivery_ms
                )
            } else {
                String::new()
            }
        ),
    ];
    let mut table = Table::new(&[
        "run",
        "payments",
        "webhooks.poll_interval_ms",
        "p50",
        "p95",
        "p99",
        "max",
        "watcher p50 / p99",
        "delivery p50 / p99",
    ]);
    let mut websocket_default = Vec::new();
    let fast_name = (args.fast_delivery_ms > 0).then(|| fast_run_name(args.fast_delivery_ms));
    let mut fast_delivery: Vec<(String, Samples, u64)> = Vec::new();
    for r in &runs {
        for (label, samples) in [("one at a time", &r.one_at_a_time), ("waves", &r.waves)] {
            let total = Samples::new(samples.iter().map(|s| s.total.max(0.0)).collect());
            let watcher = Samples::new(samples.iter().filter_map(|s| s.watcher).collect());
            let delivery = Samples::new(samples.iter().filter_map(|s| s.delivery).collect());
            let label = if label == "waves" { format!("in waves of {}", args.wave) } else { label.to_owned() };
            table.row(vec![
                r.name.clone(),
                format!("{} {label}", count(total.len() as u64)),
                r.webhook_poll_ms.to_string(),
                ms(total.percentile(50.0)),
                ms(total.percentile(95.0)),
                ms(total.percentile(99.0)),
                ms(total.max()),
                format!("{} / {}", ms(watcher.percentile(50.0)), ms(watcher.percentile(99.0))),
                format!("{} / {}", ms(delivery.percentile(50.0)), ms(delivery.percentile(99.0))),
            ]);
            if r.name == "WebSocket heads" {
                websocket_default.push((label.clone(), total, watcher, delivery, r.webhook_poll_ms));
            } else if fast_name.as_deref() == Some(r.name.as_str()) {
                fast_delivery.push((label, delivery, r.webhook_poll_ms));
            }
        }
    }
    section.tables.push(table);
    for r in &runs {
        section.notes.push(format!("{}: {} while paying.", r.name, r.cpu));
    }
    // Did delivery wait for the worker's poll? A delivery found only by polling every `poll` ms
    // waits half of it on average; the run that polls faster is the control.
    let poll_check = |label: &str, delivery: &Samples, poll: u64| -> Option<String> {
        let (_, fast, fast_poll) = fast_delivery.iter().find(|(l, _, _)| l == label)?;
        let polled_wait = poll as f64 / 2.0;
        let (shipped, quick) = (delivery.percentile(50.0), fast.percentile(50.0));
        Some(if shipped < polled_wait / 2.0 {
            format!(
                "Delivery did not wait for the worker's poll: its median, {} with `webhooks.poll_interval_ms` = \
                 {poll}, is far under the {} that a delivery found only by polling would wait on average, and it \
                 was {} with the poll at {fast_poll} ms.",
                ms(shipped),
                ms(polled_wait),
                ms(quick)
            )
        } else {
            format!(
                "Delivery's median was {} with `webhooks.poll_interval_ms` = {poll} and {} with the poll at \
                 {fast_poll} ms; a delivery found only by polling every {poll} ms would wait {} on average.",
                ms(shipped),
                ms(quick),
                ms(polled_wait)
            )
        })
    };
    for (label, _, _, delivery, poll) in &websocket_default {
        if let Some(check) = poll_check(label, delivery, *poll) {
            section.notes.push(format!("WebSocket heads, {label}: {check}"));
        }
    }
    for (label, total, watcher, delivery, poll) in websocket_default {
        let (p50, p99) = (total.percentile(50.0), total.percentile(99.0));
        let waves = label.contains("waves");
        let p99_target = if waves { TARGET_WAVES_P99_MS } else { TARGET_P99_MS };
        let met = p50 < TARGET_P50_MS && p99 < p99_target;
        let delivery_bound = delivery.percentile(50.0) > watcher.percentile(50.0);
        section.targets.push(Target {
            goal: format!("WebSocket heads, {label}: p50 under {TARGET_P50_MS:.0} ms and p99 under {p99_target:.0} ms"),
            measured: format!("p50 {}, p99 {}", ms(p50), ms(p99)),
            met,
            bound: (!met).then(|| {
                let mut text = if delivery_bound {
                    format!(
                        "Most of it is delivery: {} at the median (p99 {}) from the moment the event was recorded \
                         to its webhook's arrival (the transaction that records it queues the delivery; its commit \
                         wakes the webhook worker, which claims the delivery, signs it and POSTs it), while the \
                         watcher records it {} after the block (p99 {}).",
                        ms(delivery.percentile(50.0)),
                        ms(delivery.percentile(99.0)),
                        ms(watcher.percentile(50.0)),
                        ms(watcher.percentile(99.0))
                    )
                } else {
                    format!(
                        "Most of it is the watcher: block to event {} at the median (p99 {}), delivery {} (p99 {}).",
                        ms(watcher.percentile(50.0)),
                        ms(watcher.percentile(99.0)),
                        ms(delivery.percentile(50.0)),
                        ms(delivery.percentile(99.0))
                    )
                };
                if let Some(check) = poll_check(&label, &delivery, poll) {
                    text.push(' ');
                    text.push_str(&check);
                }
                text
            }),
        });
    }
    Ok(section)
}
