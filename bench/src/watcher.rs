//! Benchmark 1: watcher catch-up against the limit for the data each fetch mode needs.
//!
//! A chain of `--blocks` blocks carrying `--transfers` ERC-20 transfers of two allow-listed tokens
//! (USDC, USDT) plus `--noise-percent` transfers of a look-alike "USDC" that is not allow-listed
//! (some of them to watched addresses), `--watched-percent` of the allow-listed ones paying
//! invoices at watched addresses, with `--watched` addresses in the watched set. Then, on the same
//! chain and over the same block ranges, all through one counting proxy (calls, requests, bytes):
//! - three **limits**: clients that only fetch (and discard) the allow-listed `Transfer` logs
//!   (`eth_getLogs` by contract and topic0, exactly the watcher's filter); the logs and every
//!   block's header; the logs and every block with its transactions;
//! - the **watcher**: the real [`ChainWatcher`], ticked until its cursor reaches the head, with
//!   native deposits off on each backend (held to the logs-only limit) and with native deposits on
//!   on the first backend (held to the full-blocks limit), after which every watched deposit must
//!   be recorded and credited.
//!
//! Each limit runs before and after the watcher runs; its faster pass is the reference.

use std::time::{Duration, Instant};

use alloy::primitives::U256;
use anyhow::{Context, bail};
use depositd_core::invoice::SessionSigner;
use depositd_core::metrics::Metrics;
use depositd_core::wallet::HdWallet;
use depositd_watcher::{ChainWatcher, WatchedSet};
use serde_json::json;

use crate::Global;
use crate::chain::{BenchChain, ChainFile, Transfer, cheap_address, sign_all};
use crate::daemon::RunDir;
use crate::db::{self, Backend, TestDb};
use crate::profile::{self, Perf};
use crate::report::{Section, Table, Target};
use crate::rpc::quantity;
use crate::seed::{self, ApiClient, InProcessApi};
use crate::stats::{count, rate, secs};
use crate::sys::{CpuMeter, CpuUse, pid_with_port_argument};

/// keccak256("Transfer(address,address,uint256)").
const TRANSFER_TOPIC: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// An ERC-20-only watcher must reach this share of the logs-only limit.
const TARGET_SHARE: f64 = 0.8;
/// A watcher with native deposits on must reach this share of the logs + full blocks limit.
const TARGET_SHARE_NATIVE: f64 = 0.9;
const ADDRESS_SEED: u64 = 0x5eed_0001;
const STRANGER_SEED: u64 = 0x5eed_0002;
/// Distinct recipients of the transfers that pay no watched address. They repeat, as exchanges'
/// and contracts' addresses do on real chains; anvil's block production slows as its state grows,
/// and 100,000 fresh holders would make the chain take minutes longer to generate.
const STRANGERS: u64 = 2_000;

#[derive(Debug, Clone, clap::Args)]
pub struct WatcherArgs {
    /// Blocks in the generated chain.
    #[arg(long, default_value_t = 2_000)]
    pub blocks: u64,
    /// Allow-listed ERC-20 transfers in it (USDC and USDT, half each).
    #[arg(long, default_value_t = 100_000)]
    pub transfers: u64,
    /// Addresses in the watched set (each with an invoice).
    #[arg(long, default_value_t = 100_000)]
    pub watched: u64,
    /// Percent of the allow-listed transfers that pay watched addresses.
    #[arg(long, default_value_t = 1.0)]
    pub watched_percent: f64,
    /// Look-alike "USDC" transfers (not allow-listed), as a percent of the allow-listed ones.
    #[arg(long, default_value_t = 5.0)]
    pub noise_percent: f64,
    /// Blocks per eth_getLogs request (the chain file's max_block_range), for the watcher and the limit.
    #[arg(long, default_value_t = 1_000)]
    pub range: u64,
    /// Backends to run the watcher on.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<Backend>,
    /// Skip the watcher run with native deposits on (it runs on the first backend).
    #[arg(long)]
    pub no_native: bool,
}

impl Default for WatcherArgs {
    fn default() -> Self {
        crate::default_args("watcher")
    }
}

impl WatcherArgs {
    pub fn quick() -> WatcherArgs {
        WatcherArgs { blocks: 100, transfers: 2_000, watched: 2_000, range: 50, ..WatcherArgs::default() }
    }
}

struct Plan {
    blocks: Vec<Vec<Transfer>>,
    watched_payments: u64,
    noise: u64,
    noise_to_watched: u64,
}

/// Lays the transfers out over the blocks. Watched payment `w` pays the invoice at HD index
/// `2 + w * step + w % 2` (indices 0 and 1 are the API-made templates; even indices hold USDC
/// invoices, odd ones USDT) in full; the other transfers go to [`STRANGERS`] addresses nobody
/// watches.
fn plan(args: &WatcherArgs, chain: &BenchChain, templates: &[seed::Template]) -> anyhow::Result<Plan> {
    let payments = ((args.transfers as f64) * args.watched_percent / 100.0).round() as u64;
    let noise = ((args.transfers as f64) * args.noise_percent / 100.0).round() as u64;
    let stride = args.transfers.checked_div(payments).map_or(u64::MAX, |s| s.max(1));
    let step = args.watched.saturating_sub(3).checked_div(payments).unwrap_or(0) & !1;
    if payments > 0 && step < 2 {
        bail!(
            "--watched {} is too small for {payments} watched payments (need at least {})",
            args.watched,
            3 + 2 * payments
        );
    }
    let tokens = [chain.token("USDC"), chain.token("USDT")];
    let lookalike = chain.lookalike.context("the look-alike token")?;
    let mut blocks: Vec<Vec<Transfer>> = Vec::with_capacity(args.blocks as usize);
    let mut noise_to_watched = 0;
    for b in 0..args.blocks {
        let mut block = Vec::new();
        for t in (b * args.transfers / args.blocks)..((b + 1) * args.transfers / args.blocks) {
            block.push(if t % stride == 0 && t / stride < payments {
                let w = t / stride;
                let index = 2 + w * step + w % 2;
                Transfer {
                    token: tokens[(index % 2) as usize],
                    to: cheap_address(ADDRESS_SEED, index),
                    amount: templates[(index % 2) as usize].amount_base_units,
                }
            } else {
                Transfer {
                    token: tokens[(t % 2) as usize],
                    to: cheap_address(STRANGER_SEED, t % STRANGERS),
                    amount: U256::from(1 + t % 1_000_000),
                }
            });
        }
        // The look-alike's transfers go in among the real ones; every tenth "pays" a watched
        // invoice in full, which the watcher must ignore.
        for n in (b * noise / args.blocks)..((b + 1) * noise / args.blocks) {
            let to = if n % 10 == 0 {
                noise_to_watched += 1;
                cheap_address(ADDRESS_SEED, 2 + n % args.watched.saturating_sub(2).max(1))
            } else {
                cheap_address(STRANGER_SEED, n % STRANGERS)
            };
            let at = (n as usize * 7919) % (block.len() + 1);
            block.insert(at, Transfer { token: lookalike, to, amount: U256::from(10_000_000u64) });
        }
        blocks.push(block);
    }
    Ok(Plan { blocks, watched_payments: payments, noise, noise_to_watched })
}

/// What a client fetches per range: the data each watcher mode needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// The range's `Transfer` logs: what an ERC-20-only chain needs at least.
    Logs,
    /// The logs and every block's header.
    Headers,
    /// The logs and every block with its transactions: what native deposits need.
    Full,
}

impl Data {
    fn label(self) -> &'static str {
        match self {
            Data::Logs => "logs only",
            Data::Headers => "logs + every header",
            Data::Full => "logs + every full block",
        }
    }
}

/// Blocks per batch in the limit clients (the watcher's batch size).
const LIMIT_BATCH: u64 = 100;
/// Requests the limit clients have in flight per range (the chain file's default `rpc_concurrency`).
const LIMIT_IN_FLIGHT: usize = 8;

/// What went through a [`Counter`] proxy in one pass.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    /// HTTP requests (a batch is one).
    requests: u64,
    /// JSON-RPC calls (each element of a batch).
    calls: u64,
    /// Response body bytes.
    bytes: u64,
    /// Wall time during which at least one request was in flight (the union of the requests'
    /// intervals): the rest of a client's wall time it fetched nothing.
    busy: Duration,
}

impl Traffic {
    /// (calls, requests, MB) per 1,000 blocks of `blocks`.
    fn per_thousand(&self, blocks: u64) -> String {
        let scale = 1000.0 / blocks.max(1) as f64;
        format!(
            "{:.0} calls in {:.0} requests, {:.2} MB",
            self.calls as f64 * scale,
            self.requests as f64 * scale,
            self.bytes as f64 * scale / 1e6
        )
    }
}

/// Counts what passes between a client and anvil: every client in this benchmark (the limits
/// and the watcher) talks to anvil through it, so they pay the same extra hop.
#[derive(Default)]
struct Counter {
    requests: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    /// (requests in flight, since when some request has been, time with one in flight so far).
    flight: std::sync::Mutex<(u64, Option<std::time::Instant>, Duration)>,
}

impl Counter {
    /// Counts a request in flight until the returned guard is dropped.
    fn in_flight(self: &std::sync::Arc<Self>) -> InFlight {
        self.started();
        InFlight(self.clone())
    }

    fn started(&self) {
        let mut flight = self.flight.lock().expect("the counter's lock");
        if flight.0 == 0 {
            flight.1 = Some(std::time::Instant::now());
        }
        flight.0 += 1;
    }

    fn ended(&self) {
        let mut flight = self.flight.lock().expect("the counter's lock");
        flight.0 -= 1;
        if flight.0 == 0
            && let Some(since) = flight.1.take()
        {
            flight.2 += since.elapsed();
        }
    }

    /// What was counted since the last call.
    fn take(&self) -> Traffic {
        use std::sync::atomic::Ordering::SeqCst;
        Traffic {
            requests: self.requests.swap(0, SeqCst),
            calls: self.calls.swap(0, SeqCst),
            bytes: self.bytes.swap(0, SeqCst),
            busy: std::mem::take(&mut self.flight.lock().expect("the counter's lock").2),
        }
    }
}

/// A request in flight through a [`Counter`]'s proxy.
struct InFlight(std::sync::Arc<Counter>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// Starts a counting proxy in front of `upstream`; returns its URL.
async fn counting_proxy(upstream: String, counter: std::sync::Arc<Counter>) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let client = reqwest::Client::new();
    let handler = move |body: axum::body::Bytes| {
        let (client, upstream, counter) = (client.clone(), upstream.clone(), counter.clone());
        async move {
            counter.requests.fetch_add(1, Relaxed);
            // A batch starts with `[`; its calls each carry one "method" key.
            let calls = if body.first() == Some(&b'[') {
                body.windows(8).filter(|w| *w == b"\"method\"").count() as u64
            } else {
                1
            };
            counter.calls.fetch_add(calls, Relaxed);
            // Counted as ended however the request ends, also when the client drops it.
            let _in_flight = counter.in_flight();
            let answer = client.post(&upstream).header("content-type", "application/json").body(body).send().await;
            match answer {
                Ok(answer) => {
                    let bytes = answer.bytes().await.unwrap_or_default();
                    counter.bytes.fetch_add(bytes.len() as u64, Relaxed);
                    ([("content-type", "application/json")], bytes).into_response()
                }
                Err(error) => (axum::http::StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }
    };
    use axum::response::IntoResponse as _;
    let app = axum::Router::new().route("/", axum::routing::post(handler));
    format!("http://{}/", depositd_testkit::http::serve(app).await)
}

/// One pass of a limit client over `from..=to`, through the counting proxy at `url`: per range,
/// the range's `eth_getLogs` and (for [`Data::Headers`] and [`Data::Full`]) every block in
/// batches of [`LIMIT_BATCH`], up to [`LIMIT_IN_FLIGHT`] requests at once; the ranges one after
/// the other. Returns (seconds, logs, traffic).
async fn limit_pass(
    chain: &BenchChain,
    url: &str,
    counter: &Counter,
    (from, to, range): (u64, u64, u64),
    data: Data,
) -> anyhow::Result<(Duration, u64, Traffic)> {
    use futures::stream::{self, StreamExt as _, TryStreamExt as _};
    let rpc = crate::rpc::Rpc::new(url);
    let addresses: Vec<String> = chain.tokens.iter().map(|(_, a)| a.to_checksum(None)).collect();
    let mut logs = 0u64;
    let mut spent = Duration::ZERO;
    let mut start = from;
    counter.take();
    while start <= to {
        let end = to.min(start + range - 1);
        let params = json!([{
            "fromBlock": quantity(start), "toBlock": quantity(end),
            "address": addresses, "topics": [TRANSFER_TOPIC],
        }]);
        let began = Instant::now();
        let mut requests: Vec<futures::future::BoxFuture<'_, anyhow::Result<(bool, crate::rpc::bytes_like::Body)>>> =
            vec![Box::pin(async { Ok((true, rpc.call_raw("eth_getLogs", params).await?)) })];
        if data != Data::Logs {
            let full = data == Data::Full;
            let mut first = start;
            while first <= end {
                let last = end.min(first + LIMIT_BATCH - 1);
                let rpc = &rpc;
                requests.push(Box::pin(async move {
                    let calls: Vec<(&str, serde_json::Value)> =
                        (first..=last).map(|n| ("eth_getBlockByNumber", json!([quantity(n), full]))).collect();
                    Ok((false, rpc.batch_raw(&calls).await?))
                }));
                first = last + 1;
            }
        }
        let bodies: Vec<(bool, crate::rpc::bytes_like::Body)> =
            stream::iter(requests).buffer_unordered(LIMIT_IN_FLIGHT).try_collect().await?;
        spent += began.elapsed();
        // Counted after the clock stops: the limit only fetches.
        for (is_logs, body) in &bodies {
            if body.is_error() || (!is_logs && body.count(b"\"error\"") > 0) {
                bail!("a limit request failed: {}", body.text());
            }
            if *is_logs {
                logs += body.count(b"\"logIndex\"") as u64;
            }
        }
        start = end + 1;
    }
    Ok((spent, logs, counter.take()))
}

/// One backend's database, seeded and ready for the watcher.
struct Prepared {
    backend: Backend,
    _db: TestDb,
    store: depositd_core::store::Store,
    config: depositd_core::config::Config,
    _run: RunDir,
    templates: Vec<seed::Template>,
    seed_time: Duration,
    load_watched: Duration,
}

async fn prepare(
    global: &Global,
    args: &WatcherArgs,
    chain: &BenchChain,
    backend: Backend,
) -> anyhow::Result<Prepared> {
    let db = db::create(backend, &global.postgres_url, "watcher").await?;
    let store = db.connect(16).await?;
    let key = seed::merchant(&store).await?;
    // start_block is set once the chain exists (below); the in-process API only needs the tokens.
    let chain_file = chain.chain_file(&ChainFile {
        confirmations: 1,
        poll_interval_ms: 500,
        max_block_range: args.range,
        websocket: false,
        start_block: 0,
    });
    let run = RunDir::new(&db.url, &chain_file, &[])?;
    let config = run.config()?;
    let templates = {
        let api = InProcessApi::start(config.clone(), store.clone()).await?;
        seed::templates(&ApiClient::new(&api.base, key), &store, &["USDC", "USDT"]).await?
    };
    eprintln!("  {}: seeding {} watched addresses with invoices", backend.label(), count(args.watched));
    let seed_time =
        seed::watch_many(&store, &templates, 2, args.watched.saturating_sub(2), |i| cheap_address(ADDRESS_SEED, i))
            .await?;
    let load_watched = {
        let mut conn = store.conn().await?;
        let began = Instant::now();
        let mut set = WatchedSet::default();
        set.refresh(&mut conn).await?;
        anyhow::ensure!(set.len() as u64 == args.watched, "the watched set has {} addresses", set.len());
        began.elapsed()
    };
    Ok(Prepared { backend, _db: db, store, config, _run: run, templates, seed_time, load_watched })
}

struct WatcherRun {
    backend: Backend,
    /// Whether native deposits were on (every block fetched with its transactions).
    native: bool,
    /// What went between the watcher and anvil.
    traffic: Traffic,
    elapsed: Duration,
    ticks: u64,
    load_watched: Duration,
    seed_time: Duration,
    /// Per RPC method: (name, call durations summed, calls). Calls overlap, so a sum is not wall time.
    rpc: Vec<(&'static str, f64, u64)>,
    recorded: i64,
    ignored_recorded: i64,
    paid: i64,
    cpu: CpuUse,
    profile: Vec<String>,
}

impl WatcherRun {
    /// (call durations summed, calls) of one RPC method.
    fn method(&self, name: &str) -> (f64, u64) {
        self.rpc.iter().find(|(m, _, _)| *m == name).map(|(_, s, n)| (*s, *n)).unwrap_or_default()
    }
}

async fn watcher_pass(
    chain: &BenchChain,
    prepared: Prepared,
    (first, native): (u64, bool),
    (url, counter): (&str, &Counter),
    profile_it: bool,
) -> anyhow::Result<WatcherRun> {
    let Prepared { backend, store, config, .. } = &prepared;
    let wallet = HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?;
    let metrics = Metrics::new();
    let mut chain_config = config.chains.first().context("the anvil chain")?.clone();
    chain_config.start_block = Some(first);
    chain_config.native_deposits = Some(native);
    chain_config.rpc_urls = vec![url.to_owned().into()];
    let mut watcher = ChainWatcher::new(
        chain_config,
        store.clone(),
        config.settings.api.public_url.clone(),
        SessionSigner::new(wallet.session_key()),
        metrics.clone(),
    )?;
    let anvil_pid = pid_with_port_argument("anvil", chain.anvil.port());
    let pids: Vec<(&str, u32)> = anvil_pid.map(|p| ("anvil", p)).into_iter().collect();
    let perf = Perf::start(profile_it, &std::iter::once(std::process::id()).chain(anvil_pid).collect::<Vec<_>>()).await;
    eprintln!("  {}: watcher catching up, native deposits {}", backend.label(), if native { "on" } else { "off" });
    counter.take();
    let meter = CpuMeter::start(&pids);
    let began = Instant::now();
    let mut ticks = 0u64;
    loop {
        ticks += 1;
        if !watcher.tick().await.context("a watcher step failed")? {
            break;
        }
        if began.elapsed() > Duration::from_secs(1800) {
            bail!("the watcher did not catch up within 30 minutes");
        }
    }
    let elapsed = began.elapsed();
    let traffic = counter.take();
    let cpu = meter.stop();
    let profile = match perf {
        Some(perf) => perf.finish(14).await,
        None => Vec::new(),
    };
    let methods = [
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_getLogs",
        "eth_getTransactionReceipt",
        "eth_getLogs+eth_getBlockByNumber (batch)",
        "eth_getBlockByNumber (batch)",
        "eth_getBlockByNumber full (batch)",
    ];
    let rpc = methods
        .iter()
        .map(|m| {
            let h = metrics.rpc_request_duration_seconds.with_label_values(&["anvil", "0", m]);
            (*m, h.get_sample_sum(), h.get_sample_count())
        })
        .collect();
    let lookalike = chain.lookalike.map(|a| a.to_checksum(None)).unwrap_or_default();
    let (recorded,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposits WHERE state IN ('detected', 'confirmed')")
        .fetch_one(store.pool())
        .await?;
    let (ignored_recorded,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deposits WHERE token_address = $1")
        .bind(&lookalike)
        .fetch_one(store.pool())
        .await?;
    let (paid,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM invoices WHERE status = 'paid'").fetch_one(store.pool()).await?;
    store.close().await;
    Ok(WatcherRun {
        backend: *backend,
        native,
        traffic,
        elapsed,
        ticks,
        load_watched: prepared.load_watched,
        seed_time: prepared.seed_time,
        rpc,
        recorded,
        ignored_recorded,
        paid,
        cpu,
        profile,
    })
}

pub async fn run(global: &Global, args: &WatcherArgs) -> anyhow::Result<Section> {
    anyhow::ensure!(args.blocks > 0 && args.range > 0 && args.transfers > 0, "sizes must be positive");
    anyhow::ensure!(!args.backends.is_empty(), "--backends names no backend");
    eprintln!(
        "watcher: {} blocks, {} transfers (+{}% look-alike), {} watched, range {}",
        count(args.blocks),
        count(args.transfers),
        args.noise_percent,
        count(args.watched),
        count(args.range)
    );
    let chain = BenchChain::start(&["USDC", "USDT"], true).await?;
    // One database per backend for the token-only watcher (native deposits off), and one more on
    // the first backend for the watcher with native deposits on.
    let mut prepared = Vec::new();
    for backend in &args.backends {
        prepared.push((prepare(global, args, &chain, *backend).await?, false));
    }
    if !args.no_native {
        prepared.push((prepare(global, args, &chain, args.backends[0]).await?, true));
    }
    let templates = prepared[0].0.templates.clone();
    for (p, _) in &prepared {
        let same = p.templates.iter().zip(&templates).all(|(a, b)| a.amount_base_units == b.amount_base_units);
        anyhow::ensure!(same, "the template invoices differ between databases");
    }

    let generation = Instant::now();
    let plan = plan(args, &chain, &templates)?;
    let flat: Vec<Transfer> = plan.blocks.iter().flatten().copied().collect();
    let nonce = chain.nonce(chain.payer.address()).await?;
    eprintln!("  signing {} transactions", count(flat.len() as u64));
    let signed = sign_all(&chain.payer, nonce, &flat)?;
    let mut raw_blocks = Vec::with_capacity(plan.blocks.len());
    let mut rest = signed.into_iter();
    for block in &plan.blocks {
        raw_blocks.push(rest.by_ref().take(block.len()).collect::<Vec<String>>());
    }
    let signing = generation.elapsed();
    eprintln!("  sending and mining {} blocks", count(args.blocks));
    let (first, last) = chain.mine_blocks(&raw_blocks).await?;
    let generated = generation.elapsed();
    eprintln!("  chain generated in {}", secs(generated));

    let counter = std::sync::Arc::new(Counter::default());
    let proxy = counting_proxy(chain.anvil.rpc_url(), counter.clone()).await;
    let span = (first, last, args.range);
    let modes = [Data::Logs, Data::Headers, Data::Full];
    // Each limit runs before and after the watcher runs; the fastest pass is its reference.
    let mut limits: Vec<(Data, Duration, u64, Traffic)> = Vec::new();
    for data in modes {
        let (d, logs, traffic) = limit_pass(&chain, &proxy, &counter, span, data).await?;
        anyhow::ensure!(logs == args.transfers, "the limit client saw {logs} logs, expected {}", args.transfers);
        limits.push((data, d, logs, traffic));
    }
    let mut runs = Vec::new();
    for (i, (p, native)) in prepared.into_iter().enumerate() {
        let profile_it = !global.no_profile && i == 0;
        runs.push(watcher_pass(&chain, p, (first, native), (&proxy, &counter), profile_it).await?);
    }
    for data in modes {
        let (d, logs, traffic) = limit_pass(&chain, &proxy, &counter, span, data).await?;
        limits.push((data, d, logs, traffic));
    }
    chain.anvil.shutdown().await;

    let best = |data: Data| limits.iter().filter(|l| l.0 == data).map(|l| l.1).min().unwrap_or_default();
    let logs_per_second = |d: Duration| args.transfers as f64 / d.as_secs_f64().max(1e-9);
    let blocks_per_second = |d: Duration| args.blocks as f64 / d.as_secs_f64().max(1e-9);
    // The limit a watcher run is held to: logs only without native deposits, full blocks with.
    let limit_of = |r: &WatcherRun| if r.native { Data::Full } else { Data::Logs };
    let share = |r: &WatcherRun| best(limit_of(r)).as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9);

    let mut section = Section { title: "1. Watcher catch-up".into(), ..Section::default() };
    section.setup = vec![
        format!(
            "Chain: {} blocks (numbers {first} to {last}) carrying {} allow-listed ERC-20 transfers (USDC and USDT, \
             the project's `TestToken`, one transfer per transaction) and {} transfers of a look-alike \"USDC\" \
             contract that is not allow-listed ({} of them \"paying\" watched invoices in full, which must be \
             ignored). Made as {} pre-signed EIP-1559 transactions (signed on every core in {}), sent to anvil in \
             one JSON-RPC batch per block with automine off, each batch then mined with `anvil_mine`: {} in all.",
            count(args.blocks),
            count(args.transfers),
            count(plan.noise),
            count(plan.noise_to_watched),
            count(flat.len() as u64),
            secs(signing),
            secs(generated)
        ),
        format!(
            "The transfers that pay no watched invoice go to {} addresses nobody watches: recipients repeat, as \
             exchanges' and contracts' addresses do on real chains.",
            count(STRANGERS)
        ),
        format!(
            "Watched set: {} addresses, each with a pending 10 USD invoice ({} of the transfers, {}%, pay one \
             of them in full). Two template invoices were made by the real API; the other {} addresses and invoices \
             were copied from them with multi-row `INSERT ... SELECT` statements. Those addresses are derived cheaply \
             (keccak256 of a seed and the index), not by HD derivation: the watcher only matches them.",
            count(args.watched),
            count(plan.watched_payments),
            args.watched_percent,
            count(args.watched.saturating_sub(2))
        ),
        format!(
            "Every client scans blocks {first}..{last} in ranges of {} blocks (the chain file's `max_block_range`) \
             and talks to anvil through one counting proxy (HTTP requests, JSON-RPC calls, response bytes), so all \
             pay the same extra hop. Three limits, each the least a client must fetch for one watcher mode: \
             `eth_getLogs` only (the allow-listed contracts, topic0 = `Transfer`, the watcher's own filter; one \
             range after the other); the logs plus every block's header; the logs plus every block with its \
             transactions (the blocks in JSON-RPC batches of {LIMIT_BATCH}, up to {LIMIT_IN_FLIGHT} requests of a \
             range in flight). The limits only read the answers; each ran before and after the watcher runs, and \
             its faster pass is the reference.",
            count(args.range),
        ),
        "The watcher is the real `ChainWatcher` in this process, `tick()`ed until its cursor reached the head, with \
         confirmations = 1 so every payment is also credited and its invoice marked paid during the catch-up. With \
         native deposits off (`native_deposits = false`, an ERC-20-only chain) a final range (below the reorg \
         window, here all but the last 128 blocks) costs one batch (`eth_getLogs` with the range's first and last \
         headers) plus batched headers of the blocks that hold a watched transfer; the last 128 blocks are fetched \
         as headers, one call each, as near the head. With native deposits on, every block is fetched with its \
         transactions (batched in final ranges, one range at a time). Token-only final ranges are fetched up to \
         4 at a time; all are recorded in order."
            .to_owned(),
    ];
    let mut table = Table::new(&[
        "client",
        "seconds",
        "blocks/s",
        "transfer logs/s",
        "share of its limit",
        "per 1,000 blocks",
        "recorded",
    ]);
    for (i, (data, d, logs, traffic)) in limits.iter().enumerate() {
        table.row(vec![
            format!("limit: {}, pass {}", data.label(), i / modes.len() + 1),
            format!("{:.2}", d.as_secs_f64()),
            rate(blocks_per_second(*d)),
            rate(*logs as f64 / d.as_secs_f64().max(1e-9)),
            format!("{:.0}%", 100.0 * best(*data).as_secs_f64() / d.as_secs_f64().max(1e-9)),
            traffic.per_thousand(args.blocks),
            format!("{} logs", count(*logs)),
        ]);
    }
    for r in &runs {
        table.row(vec![
            format!("**watcher, {}, native deposits {}**", r.backend.label(), if r.native { "on" } else { "off" }),
            format!("{:.2}", r.elapsed.as_secs_f64()),
            rate(blocks_per_second(r.elapsed)),
            rate(logs_per_second(r.elapsed)),
            format!("**{:.0}%** of {}", share(r) * 100.0, limit_of(r).label()),
            r.traffic.per_thousand(args.blocks),
            format!(
                "{} of {} deposits, {} invoices paid",
                count(r.recorded as u64),
                count(plan.watched_payments),
                count(r.paid as u64)
            ),
        ]);
    }
    section.tables.push(table);

    let mut breakdown = Table::new(&[
        "watcher run",
        "wall time",
        "eth_getLogs + first/last header (batch)",
        "headers (batch)",
        "full blocks (batch)",
        "eth_getBlockByNumber (single)",
        "eth_getLogs (single)",
        "eth_blockNumber",
        "ticks",
    ]);
    for r in &runs {
        let cell = |name: &str| {
            let (sum, n) = r.method(name);
            format!("{} requests, {:.2} s", count(n), sum)
        };
        breakdown.row(vec![
            format!("{}, native {}", r.backend.label(), if r.native { "on" } else { "off" }),
            format!("{:.2} s", r.elapsed.as_secs_f64()),
            cell("eth_getLogs+eth_getBlockByNumber (batch)"),
            cell("eth_getBlockByNumber (batch)"),
            cell("eth_getBlockByNumber full (batch)"),
            cell("eth_getBlockByNumber"),
            cell("eth_getLogs"),
            cell("eth_blockNumber"),
            count(r.ticks),
        ]);
    }
    section.tables.push(breakdown);
    section.notes.push(
        "In the second table a method's time is its requests' durations added up (a batch is one request). \
         Requests overlap (final ranges up to 4 at once, a range's batches alongside its logs), so those sums are \
         not wall time."
            .to_owned(),
    );

    for r in &runs {
        anyhow::ensure!(
            r.recorded as u64 == plan.watched_payments && r.ignored_recorded == 0,
            "watcher on {}: {} deposits recorded (expected {}), {} from the look-alike",
            r.backend.label(),
            r.recorded,
            plan.watched_payments,
            r.ignored_recorded
        );
        section.notes.push(format!(
            "{}, native deposits {}: seeding the {} watched addresses and invoices took {}; loading them into the \
             watched set (part of the first tick) takes {}. {} during the catch-up. Every watched payment was \
             recorded and credited; nothing from the look-alike contract was recorded.",
            r.backend.label(),
            if r.native { "on" } else { "off" },
            count(args.watched),
            secs(r.seed_time),
            secs(r.load_watched),
            r.cpu.describe()
        ));
    }
    for (native, goal_share, goal) in [
        (false, TARGET_SHARE, "ERC-20-only chain (native deposits off): watcher at least 80% of the logs-only limit"),
        (true, TARGET_SHARE_NATIVE, "native deposits on: watcher at least 90% of the logs + full blocks limit"),
    ] {
        let mine: Vec<&WatcherRun> = runs.iter().filter(|r| r.native == native).collect();
        if mine.is_empty() {
            continue;
        }
        let worst = mine.iter().map(|r| share(r)).fold(f64::INFINITY, f64::min);
        let met = worst >= goal_share;
        section.targets.push(Target {
            goal: goal.to_owned(),
            measured: mine
                .iter()
                .map(|r| format!("{:.0}% on {}", 100.0 * share(r), r.backend.label()))
                .collect::<Vec<_>>()
                .join(", "),
            met,
            bound: (!met).then(|| {
                let limit = limits.iter().filter(|l| l.0 == limit_of(mine[0])).min_by_key(|l| l.1);
                let per_run: Vec<String> = mine
                    .iter()
                    .map(|r| {
                        format!("on {} the watcher fetched {}", r.backend.label(), r.traffic.per_thousand(args.blocks))
                    })
                    .collect();
                let idle: Vec<String> = mine
                    .iter()
                    .map(|r| {
                        let idle = r.elapsed.saturating_sub(r.traffic.busy);
                        format!(
                            "on {}, of its {} a request to anvil was in flight for {} and none for {} ({:.0}%), \
                             {} of which loading the watched set",
                            r.backend.label(),
                            secs(r.elapsed),
                            secs(r.traffic.busy),
                            secs(idle),
                            100.0 * idle.as_secs_f64() / r.elapsed.as_secs_f64().max(1e-9),
                            secs(r.load_watched.min(idle))
                        )
                    })
                    .collect();
                format!(
                    "Per 1,000 blocks the limit fetched {}; {}. Beyond the limit's data the watcher reads the head \
                     each step, fetches the last 128 blocks one call each (near the head, where every block's hash \
                     is checked), the headers of the blocks that hold watched transfers, and records and credits \
                     every payment in the database. The limit's own wall time is all fetching; the watcher's \
                     is not: {}. The rest of the time no request is in flight the watcher is recording, \
                     crediting and marking paid its {} payments in the database, one range after the other. See the tables and the profile in section 1.",
                    limit.map(|l| l.3.per_thousand(args.blocks)).unwrap_or_default(),
                    per_run.join("; "),
                    idle.join("; "),
                    count(mine[0].recorded as u64)
                )
            }),
        });
    }
    if let Some(r) = runs.first() {
        section.notes.push(profile::note(
            &format!("Profile of the {} watcher run (this process and anvil)", r.backend.label()),
            &r.profile,
        ));
    }
    Ok(section)
}
