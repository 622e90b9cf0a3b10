//! `depositd-bench`: depositd's benchmark harness. It starts its own anvil chain and databases,
//! generates each workload, runs the benchmarks, prints one report and (for `all`, or with
//! `--output`) writes the same report, with the machine's description, to `BENCHMARKS.md`.
//!
//! ```sh
//! make bench                                   # = cargo run --release -p depositd-bench -- all
//! cargo run --release -p depositd-bench -- watcher --blocks 500 --transfers 20000
//! cargo run --release -p depositd-bench -- api --duration 10 --backends sqlite
//! ```
//!
//! The benchmarks (issue 10):
//! 1. `watcher`: catch-up of the real [`depositd_watcher::ChainWatcher`] over a generated chain of
//!    ERC-20 transfers (two allow-listed tokens plus a look-alike), with native deposits off and
//!    on, against the *limits* for the data each mode needs: clients that only fetch (and discard)
//!    the same `Transfer` logs over the same block ranges, the logs and every header, the logs and
//!    every full block; with RPC calls, requests and bytes per 1,000 blocks for each.
//! 2. `latency`: from the block that pays an invoice to its `invoice.paid` webhook arriving at a
//!    local receiver, with the real `depositd` daemon, WebSocket heads and polling.
//! 3. `api`: invoice creation and `GET /api/v1/invoices/{id}` under concurrent load on SQLite and
//!    PostgreSQL, against the real daemon.
//! 4. `scale`: the daemon's RSS and start-up time with 10,000,000 watched addresses.
//!
//! Every figure comes from the run that prints it; nothing asserts a timing. Secrets (the
//! generated mnemonic, API keys, webhook secrets) are never printed: the mnemonic goes to a file
//! readable only by this user inside the run's temporary directory.
//!
//! # Layout
//! - this file: the command line and the run of the selected benchmarks.
//! - [`report`]: the report model (sections, tables, targets), its Markdown, the machine's
//!   description, `BENCHMARKS.md`.
//! - [`stats`]: percentiles and number formatting.
//! - [`sys`]: what `/proc` says about a process (RSS, peak RSS, CPU time) and the machine.
//! - [`rpc`]: a bare JSON-RPC client for anvil (single calls and batches).
//! - [`chain`]: anvil with the test tokens (`depositd-testkit`'s test chain), pre-signed transfers
//!   sent in batches with mining paused, the cheap derivation of watched addresses.
//! - [`db`]: a fresh database per run (`depositd-testkit`'s: a SQLite file, or a
//!   `depositd_bench_<pid>_*` PostgreSQL database dropped afterwards).
//! - [`seed`]: the merchant, its API key, template invoices made by the real API, and bulk copies
//!   of them (multi-row `INSERT ... SELECT`) for large watched sets.
//! - [`daemon`]: a run directory (config, chain file, mnemonic file) and the real `depositd`
//!   binary started from it.
//! - [`watcher`], [`latency`], [`api`], [`scale`]: the four benchmarks (the latency benchmark's
//!   webhook receiver is `depositd-testkit`'s).

mod api;
mod chain;
mod daemon;
mod db;
mod latency;
mod profile;
mod report;
mod rpc;
mod scale;
mod seed;
mod stats;
mod sys;
mod watcher;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::report::Report;

#[derive(Debug, Parser)]
#[command(name = "depositd-bench", about = "Benchmarks for depositd (see BENCHMARKS.md)")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// A benchmark's arguments with every flag at its default, as `depositd-bench <name>` alone would
/// parse them (the `all` run and the quick run start from these).
pub fn default_args<A: clap::Args + clap::FromArgMatches>(name: &'static str) -> A {
    let matches = A::augment_args(clap::Command::new(name)).get_matches_from([name]);
    A::from_arg_matches(&matches).expect("a benchmark's defaults parse")
}

/// Options every benchmark shares.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// PostgreSQL server for the PostgreSQL runs (trust or password auth; each run creates and drops
    /// its own `depositd_bench_<pid>_*` database).
    #[arg(
        long,
        global = true,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub postgres_url: String,
    /// The `depositd` binary to start. Default: build it with `cargo build --release --bin depositd`
    /// (a no-op when it is up to date) and use target/release/depositd.
    #[arg(long, global = true, value_name = "PATH")]
    pub depositd_bin: Option<PathBuf>,
    /// Write the report to this file (`all` writes BENCHMARKS.md unless told otherwise; the single
    /// benchmarks only print unless this is given).
    #[arg(long, global = true, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Do not profile with `perf` where a target is measured (it is used when available).
    #[arg(long, global = true)]
    pub no_profile: bool,
    /// Show the in-process components' logs (RUST_LOG filters them) and keep the daemons' log files.
    #[arg(long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watcher catch-up against the node's log-fetch limit.
    Watcher(watcher::WatcherArgs),
    /// Payment latency: block to `invoice.paid` webhook.
    Latency(latency::LatencyArgs),
    /// API load: invoice creation and reads on SQLite and PostgreSQL.
    Api(api::ApiArgs),
    /// Daemon RSS and start-up time with many watched addresses.
    Scale(scale::ScaleArgs),
    /// All four benchmarks at the issue's sizes, then BENCHMARKS.md.
    All {
        /// Small sizes everywhere: a smoke test of the harness, not a measurement.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Relative paths (chains/, node_modules/ for anvil, BENCHMARKS.md) are the repository's.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root)?;
    if cli.global.verbose {
        depositd::telemetry::init(depositd::telemetry::LogFormat::Human);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let global = cli.global;
    let machine = sys::Machine::describe();
    eprintln!("machine: {}", machine.one_line());
    let mut report = Report::new(machine);
    report.background = sys::background_load(std::time::Duration::from_secs(2));
    eprintln!("busy before the run (other work): {:.2} cores", report.background);
    let output = match &cli.command {
        Command::All { .. } => Some(global.output.clone().unwrap_or_else(|| PathBuf::from("BENCHMARKS.md"))),
        _ => global.output.clone(),
    };
    let daemon_bin = || daemon::depositd_binary(&global);
    match cli.command {
        Command::Watcher(args) => report.push(watcher::run(&global, &args).await?),
        Command::Latency(args) => report.push(latency::run(&global, &args, &daemon_bin()?).await?),
        Command::Api(args) => report.push(api::run(&global, &args, &daemon_bin()?).await?),
        Command::Scale(args) => report.push(scale::run(&global, &args, &daemon_bin()?).await?),
        Command::All { quick } => {
            let bin = daemon_bin()?;
            let (w, l, a, s) = if quick {
                (
                    watcher::WatcherArgs::quick(),
                    latency::LatencyArgs::quick(),
                    api::ApiArgs::quick(),
                    scale::ScaleArgs::quick(),
                )
            } else {
                (
                    watcher::WatcherArgs::default(),
                    latency::LatencyArgs::default(),
                    api::ApiArgs::default(),
                    scale::ScaleArgs::default(),
                )
            };
            report.command =
                format!("cargo run --release -p depositd-bench -- all{}", if quick { " --quick" } else { "" });
            report.push(watcher::run(&global, &w).await?);
            report.push(latency::run(&global, &l, &bin).await?);
            report.push(api::run(&global, &a, &bin).await?);
            report.push(scale::run(&global, &s, &bin).await?);
        }
    }
    report.elapsed = started.elapsed();
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(path) = output {
        std::fs::write(&path, &markdown)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
