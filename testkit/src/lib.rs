//! depositd's test support, written once: the integration tests (`tests/it`), the benchmark
//! harness (`bench/`) and `depositd dev` (`src/dev/`) all start their chains, tokens, databases
//! and webhook receivers here.
//!
//! # Who uses which part, and why `depositd` depends on it
//! `depositd dev` needs a real local chain with the test stablecoins on it, so the binary depends
//! on this crate as a normal dependency, but only on what dev uses: without features the crate is
//! [`anvil`], [`tokens`] and [`chain`], built from crates the binary links anyway (alloy, tokio,
//! reqwest, nix). The parts only tests and benchmarks need are features the binary never enables,
//! so neither a temporary-directory crate nor test-database code is compiled into it: `db` (a fresh
//! SQLite file or PostgreSQL database per test or run, a merchant with a key) and `http` (small
//! loopback servers, among them a webhook receiver that records deliveries). The root package's dev-dependency and the benchmark harness enable both. Keeping
//! one crate (rather than a dev-only crate beside a second one for anvil) keeps the anvil launcher
//! and the token deployment in one place for all three users.
//!
//! # Layout
//! - [`anvil`]: finding and starting anvil (from `node_modules/`, `ANVIL_BIN` or `PATH`), its
//!   well-known dev accounts, free ports, one JSON-RPC call for anvil's own methods.
//! - [`tokens`]: the test contracts from `contracts/build/` (`TestToken`, `OddTransferToken`),
//!   deploying and minting a test token.
//! - [`chain`]: [`chain::TestChain`], anvil with test tokens and a payer: `pay_token`,
//!   `pay_native`, `mine`, balances.
//! - [`db`] (feature `db`): [`db::TestDb`], a fresh database on SQLite or PostgreSQL, dropped
//!   with it.
//!   Also [`db::merchant_with_key`], a merchant and its API key written straight to the store.
//! - [`http`] (feature `http`): [`http::serve`], any axum router on a free loopback port (the
//!   tests' misbehaving JSON-RPC proxies).
//! - [`webhooks`] (feature `http`): [`webhooks::Receiver`], an HTTP server on 127.0.0.1 that
//!   records every webhook delivery and answers as scripted.
//! - [`smtp`] (feature `http`): [`smtp::SmtpServer`], a small SMTP server on 127.0.0.1 that
//!   records the messages it acknowledged and can hold one unanswered (a crash mid-send).

pub mod anvil;
pub mod chain;
#[cfg(feature = "db")]
pub mod db;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "http")]
pub mod smtp;
pub mod tokens;
#[cfg(feature = "http")]
pub mod webhooks;
