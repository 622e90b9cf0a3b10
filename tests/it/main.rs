//! depositd's integration tests: one binary, real parts only (SQLite files, PostgreSQL databases,
//! anvil, the real HTTP server and the real `depositd` executable).
//!
//! PostgreSQL tests use the server at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each test gets a fresh database, and an
//! unreachable server fails them (never a skip reported as a pass). Logs are muted unless
//! `TEST_LOG` is set.

mod api;
mod api_keys;
mod chaos;
mod checkout;
mod cli;
mod cold;
mod creation_path;
mod daemon;
mod dashboard;
mod dashboard_developers;
mod dashboard_invoices;
mod dashboard_money;
mod dashboard_security;
mod dev;
mod docker;
mod fault_proxy;
mod hardening;
mod helpers;
mod inactive_shop;
mod invoices;
mod key_modes;
mod ledger;
mod live_checkout;
mod losses;
mod marks;
mod notifications;
mod openapi;
mod payment_options;
mod payments;
mod payouts_api;
mod scale_out;
mod secrets;
mod seeds;
mod settler;
mod split;
mod static_addresses;
mod store;
mod surplus;
mod suspense;
mod upgrade;
mod watcher;
mod watcher_fetch;
mod webhooks;
