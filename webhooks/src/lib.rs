//! depositd's webhook delivery: the worker that POSTs the outbox's queued deliveries to merchants,
//! and the SSRF guard that keeps those requests off the operator's own network.
//!
//! The crate depends on `depositd-core` only: the outbox (events and their deliveries) is written
//! by whoever changes state, in the change's own transaction (`core::outbox`); this crate
//! only reads the queue, signs (`core::webhooks`), sends and records. The API uses [`ssrf`] to
//! refuse a callback or endpoint URL when it is created, with the rules deliveries obey; the
//! daemon runs one [`Deliverer`] (`Component::Webhooks`).
//!
//! # Layout
//! - [`delivery`]: [`Deliverer`], the worker: claims due deliveries under a lease, signs them
//!   (Standard Webhooks), POSTs, records every attempt, retries on the configured schedule,
//!   disables endpoints that are gone.
//! - [`ssrf`]: the guard: which addresses are internal, the checks a URL needs before any DNS
//!   lookup, and the DNS resolver the delivery client connects through (DNS-pinned).

pub mod delivery;
pub mod ssrf;

pub use delivery::Deliverer;
