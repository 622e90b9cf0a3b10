//! depositd's outbox delivery: the worker that POSTs the outbox's queued deliveries to merchants,
//! the SSRF guard that keeps those requests off the operator's own network, and the mailer that
//! sends the outbox's e-mails (receipts and notifications) over SMTP.
//!
//! The crate depends on `depositd-core` only: the outbox (events and their deliveries) is written
//! by whoever changes state, in the change's own transaction (`core::outbox`); this crate
//! only reads the queue, signs (`core::webhooks`), sends and records. The API uses [`ssrf`] to
//! refuse a callback or endpoint URL when it is created, with the rules deliveries obey; the
//! daemon runs one [`Deliverer`] (`Component::Webhooks`) and, with `[smtp]` configured, one
//! [`Mailer`] (`Component::Mail`).
//!
//! # Layout
//! - [`delivery`]: [`Deliverer`], the worker: claims due deliveries under a lease, signs them
//!   (Standard Webhooks), POSTs, records every attempt, retries on the configured schedule,
//!   disables endpoints that are gone.
//! - [`ssrf`]: the guard: which addresses are internal, the checks a URL needs before any DNS
//!   lookup, and the DNS resolver the delivery client connects through (DNS-pinned).
//! - [`mail`]: [`Mailer`]: claims due e-mails under a lease, sends them with `lettre`, records
//!   the send right after the server's answer, retries on the configured schedule.

pub mod delivery;
pub mod mail;
pub mod ssrf;

pub use delivery::Deliverer;
pub use mail::Mailer;
