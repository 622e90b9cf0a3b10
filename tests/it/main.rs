//! depositd's integration tests: one binary, real parts only (SQLite files, PostgreSQL databases,
//! anvil, the real HTTP server and the real `depositd` executable).
//!
//! PostgreSQL tests need `TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/postgres`);
//! each test gets a fresh database. Without it they are skipped loudly, unless `CI` is set, where
//! they fail. Logs are muted unless `TEST_LOG` is set.

mod api;
mod checkout;
mod cli;
mod dev;
mod docker;
mod hardening;
mod helpers;
mod invoices;
mod ledger;
mod openapi;
mod payments;
mod payouts_api;
mod scale_out;
mod secrets;
mod settler;
mod static_addresses;
mod store;
mod watcher;
mod webhooks;
