//! depositd's HTTP surface: the merchant API, health checks, and (as later issues land) the
//! hosted checkout page, webhook delivery and `/metrics`.
//!
//! The crate depends on `depositd-core` only; it never calls the watcher or the settler. What
//! they need to know (a new deposit address to watch, a payout to send) goes through the store.
//!
//! # Layout
//! - [`startup`]: [`Application`], which binds its listener (port 0 in tests) and serves until
//!   a shutdown token fires.
//! - [`state`]: [`AppState`], what every handler can reach (store, configuration).
//! - [`error`]: [`ApiError`], the one mapping from failures to HTTP status and the stable JSON
//!   error body `{"error":{"type","code","message","param"}}`.
//! - [`routes`]: handlers, one module per resource.

pub mod error;
pub mod routes;
pub mod startup;
pub mod state;

pub use error::ApiError;
pub use startup::Application;
pub use state::AppState;
