//! The `depositd` binary's library half: it wires the crates together. Kept as a library so the
//! integration tests drive exactly what the binary runs.
//!
//! # Layout
//! - [`cli`]: the command line (clap): subcommands and global options.
//! - [`commands`]: one module per subcommand; each loads configuration, does its job, returns.
//! - [`daemon`]: `depositd run`: [`daemon::Daemon::build`] opens the store, binds the API and
//!   constructs the selected components; `run` runs them under one shutdown token and stops them
//!   all when the token fires or one of them fails.
//! - [`database`]: opening (and migrating) the configured database, for the daemon and every
//!   command.
//! - [`dev`]: `depositd dev`: a local anvil chain with test tokens, a demo merchant, and the whole
//!   daemon on SQLite (anvil and the test tokens from `depositd-testkit`); also funding the dev
//!   treasury, which the tests use too.
//! - [`reconcile`]: ledger reconciliation, in the store and against each chain's balances.
//! - [`shutdown`]: the token SIGINT or SIGTERM cancels (`run`, `dev`).
//! - [`telemetry`]: tracing setup (human or JSON output, `RUST_LOG` filtering).
//! - [`treasury`]: recording the operator's funding of the hot wallet (checked on chain), resuming
//!   a paused signer.

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod database;
pub mod dev;
pub mod reconcile;
pub mod shutdown;
pub mod telemetry;
pub mod treasury;
