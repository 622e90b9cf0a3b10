//! depositd's HTTP surface: the merchant API, the hosted checkout page, health checks and
//! `/metrics`. It serves requests (and runs the API's own background tasks); it delivers no
//! webhooks: that is `depositd-webhooks`, which the daemon runs beside it.
//!
//! The crate depends on `depositd-core`, and on `depositd-webhooks` only for its SSRF rules, which
//! a callback or endpoint URL must pass when it is created; it never calls the watcher or the
//! settler. What they need to know (a new deposit address to watch, a payout to send) goes
//! through the store, as do the events the webhook worker delivers.
//!
//! # Layout
//! - [`startup`]: [`Application`], which binds its listener (port 0 in tests) and serves until
//!   a shutdown token fires.
//! - [`state`]: [`AppState`], what every handler can reach (store, configuration, wallet,
//!   pricing, session signing, rate limits).
//! - [`error`]: [`ApiError`], the one mapping from failures to HTTP status and the stable JSON
//!   error body `{"error":{"type","code","message","param"}}`.
//! - [`auth`]: API-key authentication, scopes and the per-key rate limit.
//! - [`extract`], [`query`], [`validate`]: request bodies and path ids, list queries (one typed
//!   struct per endpoint, also its OpenAPI parameters), field rules; every 400 names its `param`.
//! - [`idempotency`]: `Idempotency-Key` claims, replays and conflicts around creating requests,
//!   and [`idempotency::Create`], the extractor every creating handler starts from.
//! - [`group_commit`]: invoice creations that arrive together written in one transaction (SQLite).
//! - [`idempotency_key`]: a checked `Idempotency-Key` and a creating request's answer, which both
//!   [`idempotency`] and [`group_commit`] use.
//! - [`expiry`]: the background task that expires unpaid invoices at `expires_at`.
//! - [`address_pool`]: the background task that keeps invoice addresses derived ahead of time.
//! - [`invoice_counts`]: the `depositd_invoices` gauge, counted for `/metrics` one count at a
//!   time, never long waited for, and at most a tenth of the time.
//! - [`openapi`]: the OpenAPI 3.1 document generated from the handlers (`GET /openapi.json`).
//! - [`schema`]: schemas the derives cannot write, for the routes' types (no import cycle with
//!   [`openapi`], which imports the routes).
//! - [`price_feed`]: keeps the optional HTTP price feed's rates fresh for the pricer.
//! - [`routes`]: handlers, one module per resource.
//! - `routes::payouts`: payouts and refunds: created with their chain transaction's intent and
//!   the ledger reservation in one transaction, cancellable until the settler signs them.
//! - `routes::checkout` and `routes::payments`: the hosted checkout page and the payer session API
//!   it reads (`session_token` + `signature`, no API key): a live stream of server-sent events,
//!   with polling when the stream drops.
//! - [`i18n`]: the checkout page's translation table and the choice of language per request.
//! - `routes::webhooks`: webhook endpoints, the callback signing secret and events (listing,
//!   redelivery); a URL is checked with `depositd_webhooks::ssrf` when it is registered.

pub mod address_pool;
pub mod auth;
pub mod error;
pub mod expiry;
pub mod extract;
pub mod group_commit;
pub mod i18n;
pub mod idempotency;
pub mod idempotency_key;
pub mod invoice_counts;
pub mod key_cache;
pub mod openapi;
pub mod price_feed;
pub mod query;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;
pub mod validate;

pub use error::ApiError;
pub use startup::Application;
pub use state::AppState;
