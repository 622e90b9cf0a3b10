//! Benchmark 1: watcher catch-up against the node's log-fetch limit.
//!
//! A chain of `--blocks` blocks carrying `--transfers` ERC-20 transfers of two allow-listed tokens
//! (USDC, USDT) plus `--noise-percent` transfers of a look-alike "USDC" that is not allow-listed
//! (some of them to watched addresses), `--watched-percent` of the allow-listed ones paying
//! invoices at watched addresses, with `--watched` addresses in the watched set. Then, on the same
//! chain and over the same block ranges:
//! - the **limit**: a client that only fetches the allow-listed `Transfer` logs (`eth_getLogs` by
//!   contract and topic0, exactly the watcher's filter) and discards them;
//! - the **watcher**: the real [`ChainWatcher`], ticked until its cursor reaches the head, on each
//!   backend, after which every watched deposit must be recorded and credited.
//!
//! The limit runs before and after each watcher run; the fastest limit run is the reference.

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
/// The watcher must reach this share of the limit's logs/s.
const TARGET_SHARE: f64 = 0.8;
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

/// One pass of the limit client over `from..=to`: (seconds, logs).
async fn limit_pass(chain: &BenchChain, from: u64, to: u64, range: u64) -> anyhow::Result<(Duration, u64)> {
    let addresses: Vec<String> = chain.tokens.iter().map(|(_, a)| a.to_checksum(None)).collect();
    let mut logs = 0u64;
    let mut spent = Duration::ZERO;
    let mut start = from;
    while start <= to {
        let end = to.min(start + range - 1);
        let params = json!([{
            "fromBlock": quantity(start), "toBlock": quantity(end),
            "address": addresses, "topics": [TRANSFER_TOPIC],
        }]);
        let began = Instant::now();
        let body = chain.rpc.call_raw("eth_getLogs", params).await?;
        spent += began.elapsed();
        // Counted after the clock stops: the limit only fetches.
        if body.is_error() {
            bail!("eth_getLogs failed: {}", body.text());
        }
        logs += body.count(b"\"logIndex\"") as u64;
        start = end + 1;
    }
    Ok((spent, logs))
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
    elapsed: Duration,
    ticks: u64,
    load_watched: Duration,
    seed_time: Duration,
    /// Per RPC method: (name, call durations summed, calls). Calls overlap, so a sum is not wall time.
    rpc: Vec<(&'static str, f64, u64)>,
    /// The chain file's `rpc_concurrency`: the most calls of one kind a step has in flight.
    rpc_concurrency: u64,
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

    /// The least wall time `eth_getBlockByNumber` calls were in flight: their summed durations
    /// spread over `rpc_concurrency` calls at once, never more.
    fn block_fetch_wall(&self) -> f64 {
        self.method("eth_getBlockByNumber").0 / self.rpc_concurrency.max(1) as f64
    }

    /// anvil's CPU during the run, in cores.
    fn anvil_cores(&self) -> Option<f64> {
        self.cpu.processes.iter().find(|(n, _)| n == "anvil").map(|(_, c)| *c)
    }

    /// Share of the profile's samples in anvil's k256 (secp256k1) functions, summed over the
    /// hottest symbols listed (so at least this much); `None` without a profile.
    fn anvil_k256_share(&self) -> Option<f64> {
        if self.profile.is_empty() {
            return None;
        }
        let share: f64 = self
            .profile
            .iter()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let percent = fields.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
                let binary = fields.next()?;
                let symbol = fields.next()?;
                (binary == "anvil" && (symbol.starts_with("k256::") || symbol.starts_with("<k256::")))
                    .then_some(percent)
            })
            .sum();
        Some(share)
    }
}

async fn watcher_pass(
    chain: &BenchChain,
    prepared: Prepared,
    first: u64,
    profile_it: bool,
) -> anyhow::Result<WatcherRun> {
    let Prepared { backend, store, config, .. } = &prepared;
    let wallet = HdWallet::from_mnemonic(&config.settings.wallet.mnemonic()?)?;
    let metrics = Metrics::new();
    let mut chain_config = config.chains.first().context("the anvil chain")?.clone();
    chain_config.start_block = Some(first);
    let rpc_concurrency = chain_config.rpc_concurrency;
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
    eprintln!("  {}: watcher catching up", backend.label());
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
    let cpu = meter.stop();
    let profile = match perf {
        Some(perf) => perf.finish(14).await,
        None => Vec::new(),
    };
    let methods = ["eth_blockNumber", "eth_getBlockByNumber", "eth_getLogs", "eth_getTransactionReceipt"];
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
        elapsed,
        ticks,
        load_watched: prepared.load_watched,
        seed_time: prepared.seed_time,
        rpc,
        rpc_concurrency,
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
    let mut prepared = Vec::new();
    for backend in &args.backends {
        prepared.push(prepare(global, args, &chain, *backend).await?);
    }
    let templates = prepared[0].templates.clone();
    for p in &prepared {
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

    let mut limits: Vec<(Duration, u64)> = Vec::new();
    let pass = limit_pass(&chain, first, last, args.range).await?;
    anyhow::ensure!(pass.1 == args.transfers, "the limit client saw {} logs, expected {}", pass.1, args.transfers);
    limits.push(pass);
    let mut runs = Vec::new();
    for (i, p) in prepared.into_iter().enumerate() {
        let profile_it = !global.no_profile && i == 0;
        runs.push(watcher_pass(&chain, p, first, profile_it).await?);
        limits.push(limit_pass(&chain, first, last, args.range).await?);
    }
    chain.anvil.shutdown().await;

    let best = limits.iter().map(|(d, _)| *d).min().unwrap_or_default();
    let logs_per_second = |d: Duration| args.transfers as f64 / d.as_secs_f64().max(1e-9);
    let blocks_per_second = |d: Duration| args.blocks as f64 / d.as_secs_f64().max(1e-9);
    let limit_rate = logs_per_second(best);

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
             exchanges' and contracts' addresses do on real chains (anvil produces blocks more slowly as its state \
             grows, and 100,000 fresh holders made generation take over three minutes instead of one).",
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
            "Both clients scan blocks {first}..{last} in ranges of {} blocks (the chain file's `max_block_range`). \
             The limit posts `eth_getLogs` (the allow-listed contracts, topic0 = `Transfer`, the watcher's own \
             filter) and only reads the answer; it ran {} times, before and after each watcher run, and the \
             fastest pass is the reference. The watcher is the real `ChainWatcher` in this process, `tick()`ed until \
             its cursor reached the head, with confirmations = 1 so every payment is also credited and its invoice \
             marked paid during the catch-up. For each range it fetches the range's blocks with their transactions \
             (`eth_getBlockByNumber`, up to {} in flight, in order: the chain file's `rpc_concurrency`) at the same \
             time as the range's `eth_getLogs`, checks that the blocks form one chain and that the logs name their \
             hashes, and looks in the blocks' transactions for native-coin transfers, which logs do not show.",
            count(args.range),
            limits.len(),
            runs.first().map_or(0, |r| r.rpc_concurrency)
        ),
    ];
    let mut table = Table::new(&["client", "seconds", "blocks/s", "transfer logs/s", "share of the limit", "recorded"]);
    for (i, (d, logs)) in limits.iter().enumerate() {
        table.row(vec![
            format!("limit: `eth_getLogs` only, pass {}", i + 1),
            format!("{:.2}", d.as_secs_f64()),
            rate(blocks_per_second(*d)),
            rate(*logs as f64 / d.as_secs_f64().max(1e-9)),
            format!("{:.0}%", 100.0 * best.as_secs_f64() / d.as_secs_f64().max(1e-9)),
            format!("{} logs", count(*logs)),
        ]);
    }
    for r in &runs {
        let share = logs_per_second(r.elapsed) / limit_rate;
        table.row(vec![
            format!("**watcher, {}**", r.backend.label()),
            format!("{:.2}", r.elapsed.as_secs_f64()),
            rate(blocks_per_second(r.elapsed)),
            rate(logs_per_second(r.elapsed)),
            format!("**{:.0}%**", share * 100.0),
            format!(
                "{} of {} deposits, {} invoices paid",
                count(r.recorded as u64),
                count(plan.watched_payments),
                count(r.paid as u64)
            ),
        ]);
    }
    section.tables.push(table);

    // The calls overlap (blocks up to `rpc_concurrency` at once, alongside the range's logs), so a
    // method's summed call time is not wall time; summed / rpc_concurrency is the least wall time
    // its calls can have been in flight.
    let mut breakdown = Table::new(&[
        "watcher run",
        "wall time",
        "eth_getBlockByNumber: calls, time summed",
        "block fetches in flight for at least",
        "eth_getLogs: calls, time summed",
        "eth_blockNumber",
        "eth_getTransactionReceipt",
        "ticks",
    ]);
    for r in &runs {
        let cell = |name: &str| {
            let (sum, n) = r.method(name);
            format!("{} calls, {:.2} s", count(n), sum)
        };
        let elapsed = r.elapsed.as_secs_f64().max(1e-9);
        breakdown.row(vec![
            r.backend.label().into(),
            format!("{:.2} s", r.elapsed.as_secs_f64()),
            format!("{} (up to {} in flight)", cell("eth_getBlockByNumber"), r.rpc_concurrency),
            format!("{:.2} s ({:.0}% of the wall time)", r.block_fetch_wall(), 100.0 * r.block_fetch_wall() / elapsed),
            cell("eth_getLogs"),
            cell("eth_blockNumber"),
            cell("eth_getTransactionReceipt"),
            count(r.ticks),
        ]);
    }
    section.tables.push(breakdown);
    section.notes.push(
        "In the second table a method's time is its calls' durations added up. Calls overlap (a range's block \
         fetches run up to `rpc_concurrency` at once, and alongside its `eth_getLogs`), so those sums are not wall \
         time; the summed `eth_getBlockByNumber` time divided by `rpc_concurrency` is the least wall time during \
         which block fetches were in flight."
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
            "{}: seeding the {} watched addresses and invoices took {}; loading them into the watched set (part of \
             the first tick) takes {}. {} during the catch-up. Every watched payment was recorded and credited; \
             nothing from the look-alike contract was recorded.",
            r.backend.label(),
            count(args.watched),
            secs(r.seed_time),
            secs(r.load_watched),
            r.cpu.describe()
        ));
    }
    let worst = runs.iter().map(|r| logs_per_second(r.elapsed) / limit_rate).fold(f64::INFINITY, f64::min);
    let per_run: Vec<String> = runs
        .iter()
        .map(|r| {
            let (blocks_sum, blocks_n) = r.method("eth_getBlockByNumber");
            let (logs_sum, logs_n) = r.method("eth_getLogs");
            let elapsed = r.elapsed.as_secs_f64().max(1e-9);
            let mut text = format!(
                "on {}, {} `eth_getBlockByNumber` calls took {:.2} s summed ({:.1} ms each) with up to {} in flight, \
                 so block fetches were in flight for at least {:.2} s of the {:.2} s run ({:.0}%), while its {} \
                 `eth_getLogs` calls took {:.2} s summed",
                r.backend.label(),
                count(blocks_n),
                blocks_sum,
                1000.0 * blocks_sum / (blocks_n.max(1) as f64),
                r.rpc_concurrency,
                r.block_fetch_wall(),
                elapsed,
                100.0 * r.block_fetch_wall() / elapsed,
                count(logs_n),
                logs_sum
            );
            if let Some(anvil) = r.anvil_cores() {
                text.push_str(&format!(
                    "; anvil used {anvil:.2} of the machine's {:.0} cores (machine busy {:.2})",
                    r.cpu.machine_cores.round(),
                    r.cpu.machine_busy
                ));
            }
            text
        })
        .collect();
    // What the profile (of the first run) says anvil spends its time on, when it says so.
    let k256 = runs.first().and_then(|r| r.anvil_k256_share().filter(|share| *share >= 10.0).map(|share| (r, share)));
    let met = worst >= TARGET_SHARE;
    section.targets.push(Target {
        goal: format!("watcher at least {:.0}% of the limit's logs/s", TARGET_SHARE * 100.0),
        measured: runs
            .iter()
            .map(|r| format!("{:.0}% on {}", 100.0 * logs_per_second(r.elapsed) / limit_rate, r.backend.label()))
            .collect::<Vec<_>>()
            .join(", "),
        met,
        bound: (!met).then(|| {
            let mut text = format!(
                "The limit only fetches logs ({} logs/s). The watcher also fetches every block of each range with its \
                 full transactions (`eth_getBlockByNumber`, up to `rpc_concurrency` at once, at the same time as the \
                 range's `eth_getLogs`): it checks the range's hashes with them and finds native-coin transfers in \
                 them, which logs do not show. {}.",
                rate(limit_rate),
                per_run.join("; ")
            );
            if let Some((r, share)) = k256 {
                text.push_str(&format!(
                    " In the profile of the {} run, at least {share:.0}% of all samples are anvil in `k256` \
                     (secp256k1) arithmetic: to serve a block with its transactions anvil recovers each \
                     transaction's sender from its signature, which is anvil's cost of serving full blocks; an \
                     `eth_getLogs` answer does not need it.",
                    r.backend.label()
                ));
            }
            text.push_str(" See the breakdown table and the profile in section 1.");
            text
        }),
    });
    if let Some(r) = runs.first() {
        section.notes.push(profile::note(
            &format!("Profile of the {} watcher run (this process and anvil)", r.backend.label()),
            &r.profile,
        ));
    }
    Ok(section)
}
