//! depositd's shared crate: the domain types, the configuration, the store and the ledger.
//!
//! `watcher`, `settler` and `api` depend on this crate and never on each other; everything they
//! share (what an invoice is, how money is represented, how the database is reached) lives here,
//! once.
//!
//! # Layout
//! Domain modules (types and resources; they never import the store): [`api_key`], [`chain_tx`],
//! [`deposit`], [`deposit_address`], [`event`], [`invoice`], [`member`], [`merchant`], [`payout`],
//! [`resolution`], [`static_address`], [`webhooks`]. Lifecycle modules (the money path's rules,
//! each taking the caller's transaction): [`api_keys`], [`invoicing`], [`crediting`], [`payouts`],
//! [`resolutions`], [`outbox`] (and its e-mail rules, [`notify`]), [`members`], and the
//! [`ledger`]. The [`store`] holds rows and SQL and depends on the domain, never the reverse.
//!
//! - [`api_key`]: API keys: test or live, and the scopes a key grants.
//! - [`api_keys`]: the API key lifecycle (create, revoke: who may grant what, and their events) for
//!   the CLI, the merchant API and the dashboard alike.
//! - [`chain_tx`]: an outgoing transaction of the settler's and its signed attempts.
//! - [`config`]: layered settings (defaults, TOML file, `DEPOSITD__SECTION__KEY` environment) and
//!   the per-chain files in `chains/`, validated at start-up with messages that name the key.
//! - [`crediting`]: the single entry point for what a detected, confirmed or reorged deposit does
//!   to its invoice (status rules, outbox events).
//! - [`deposit`]: a transfer to a watched address, its state, and the resource webhooks and the API show.
//! - [`deposit_address`]: a deposit address handed out (what for, which HD index), shared by the
//!   counter and the pool that hand them out.
//! - [`event`]: what happened ([`event::EventType`], the word merchants subscribe to) and to what.
//! - [`evm`]: EVM address parsing with EIP-55 checks.
//! - [`fees`]: the operator's fee schedule and the fee on a paid amount.
//! - [`gas`]: EIP-1559 gas prices: first fees, budgets, replacements, a native payout's reserve.
//! - [`invoice`]: invoices: statuses, flags, and the resource the API and webhooks show.
//! - [`invoice_views`]: the views of one invoice that the reference docs' API shapes speak
//!   (seeds 001, 003, 004), their status words, and which one an invoice's webhooks carry.
//! - [`invoicing`]: the one place an invoice is made (validated, priced, fee, address, event),
//!   whichever API shape asked for it.
//! - [`leased`]: the loop of a component that works a chain only while it holds the chain's lease
//!   (the watcher's and the settler's).
//! - [`ledger`]: the double-entry ledger: accounts, posting, reversal, statements, reconciliation.
//! - [`member`]: dashboard members (people of one merchant), their roles and what each may do.
//! - [`members`]: the dashboard's sign-in lifecycle: invites (one-time, 24 h), argon2id passwords,
//!   sign-in throttled per account and per address, sessions (expiry, log out everywhere).
//! - [`merchant`]: the operator's customers.
//! - [`metrics`]: the Prometheus registry and every metric's handle (bounded labels only).
//! - [`money`]: exact money. [`money::BaseUnits`] wraps a U256 token amount; prices are
//!   `rust_decimal::Decimal`. Never a float.
//! - [`notify`]: which events get an e-mail (receipts, merchant notifications), to whom, saying
//!   what; queued by the outbox in the event's transaction.
//! - [`outbox`]: the one place events are recorded and their webhook deliveries (and e-mails)
//!   queued, in the transaction of the change they report; the typed [`event::EventType`].
//! - [`payout`]: payouts and refunds: their states and the resource the API and webhooks show.
//! - [`payouts`]: the payout and refund lifecycle (create with reservation and intent, cancel,
//!   sent, confirmed, failed) for the API, the settler and the CLI alike.
//! - [`pricing`]: invoice amounts in a currency to base units of the pay asset, from configured rates.
//! - [`resolution`]: an operator's resolution of a transfer in suspense, and its resource.
//! - [`resolutions`]: resolving a transfer in suspense (credit to an invoice or a merchant,
//!   refund, the operator's revenue), once, with a reason, for the CLI and the operator API alike.
//! - [`secret`]: wrappers that keep secrets (database passwords) out of `Debug` and logs.
//! - [`static_address`]: reusable deposit addresses and the resource the API shows.
//! - [`static_addresses`]: the static address lifecycle (create, disable, their events) for the
//!   merchant API and the dashboard alike.
//! - [`store`]: one store layer over SQLite and PostgreSQL (sqlx `Any`), migrations, and the
//!   queries grouped by table (`store::merchants`, `store::api_keys`, ...).
//! - [`text_enum`]: enums stored as TEXT: one word table per enum gives `as_str`, `FromStr`,
//!   `ALL` and the sqlx codec.
//! - [`webhooks`]: the event type words merchants subscribe to (from [`event::EventType`]),
//!   signing secrets (encrypted at rest) and Standard Webhooks signatures.
//! - [`wallet`]: the hot wallet's HD key tree: deposit addresses (from the mnemonic, or the xpub
//!   alone on the web tier), the treasury signer, the web keys, the identity checked at start-up.
//! - [`time`]: the one clock the crate reads (epoch milliseconds).

pub mod api_key;
pub mod api_keys;
pub mod audit;
pub mod chain_tx;
pub mod config;
pub mod crediting;
pub mod deposit;
pub mod deposit_address;
pub mod event;
pub mod evm;
pub mod fees;
pub mod gas;
pub mod invoice;
pub mod invoice_views;
pub mod invoicing;
pub mod leased;
pub mod ledger;
pub mod member;
pub mod members;
pub mod merchant;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod outbox;
pub mod payout;
pub mod payouts;
pub mod pricing;
pub mod resolution;
pub mod resolutions;
pub mod secret;
pub mod static_address;
pub mod static_addresses;
pub mod store;
pub mod text_enum;
pub mod time;
pub mod wallet;
pub mod webhook_endpoints;
pub mod webhooks;
