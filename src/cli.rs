//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "depositd",
    version,
    about = "Self-hosted crypto payment daemon for EVM chains",
    long_about = "Self-hosted crypto payment daemon for EVM chains.\n\n\
        Merchants create invoices over an HTTP API; depositd watches the chains for the payments, \
        credits a double-entry ledger, delivers signed webhooks and sends payouts from its hot wallet.\n\n\
        Start here: `depositd dev` runs everything locally on SQLite and an anvil dev chain."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// Configuration file (TOML). Built-in defaults apply without one; DEPOSITD__SECTION__KEY
    /// environment variables override both.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Database URL (sqlite://PATH or postgres://...), overriding the configured one.
    #[arg(long, global = true, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: API and background workers (all by default).
    Run(RunArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Load and validate the configuration and chain files, check each chain against its RPC
    /// (chain id, token contracts and their decimals), then print a summary.
    CheckConfig {
        /// Validate the files only; do not contact the chains.
        #[arg(long)]
        offline: bool,
    },
    /// Manage merchants.
    #[command(subcommand)]
    Merchant(MerchantCommand),
    /// Manage merchant API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Reconcile the ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// The hot wallet (treasury): fund it, resume a paused signer.
    #[command(subcommand)]
    Treasury(TreasuryCommand),
    /// The wallet's public half and web keys, for running the web tier without the mnemonic.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Transfers in suspense (recorded as rejected) and their resolution by the operator.
    #[command(subcommand)]
    Deposits(DepositsCommand),
    /// Scan a range of blocks the watcher already passed again and record the payments it missed
    /// (idempotent: what was recorded stays recorded once). Find such ranges with `ledger verify`,
    /// which names addresses holding more than the ledger explains.
    Rescan(RescanArgs),
    /// Run a complete local environment: anvil dev chain, test tokens, demo merchant, daemon.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub struct RescanArgs {
    /// Chain name, e.g. sepolia.
    #[arg(long)]
    pub chain: String,
    /// First block to scan.
    #[arg(long)]
    pub from: u64,
    /// Last block to scan (at most the watcher's cursor).
    #[arg(long)]
    pub to: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run only these components (comma-separated), e.g. for scale-out.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Component>,
}

/// A part of the daemon that `run --only` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Component {
    /// The merchant HTTP API and health endpoints.
    Api,
    /// Moves unpaid invoices to `expired` at their `expires_at`.
    Expiry,
    /// One chain watcher per enabled chain: detects, confirms and credits payments.
    Watcher,
    /// Reconciles the ledger every `ledger.verify_interval_secs` and exports the outcome.
    Ledger,
    /// Delivers webhooks from the queue (several daemons share it on PostgreSQL).
    Webhooks,
    /// One settler per enabled chain: sweeps, pass-through forwards, payouts, fee bumps.
    Settler,
    /// Sends receipts and notifications from the e-mail queue (only with `[smtp]` configured;
    /// several daemons share the queue on PostgreSQL).
    Mail,
}

impl Component {
    pub const ALL: [Component; 7] = [
        Component::Api,
        Component::Expiry,
        Component::Watcher,
        Component::Ledger,
        Component::Webhooks,
        Component::Settler,
        Component::Mail,
    ];
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Check that every entry balances, stored balances equal their postings, no account is
    /// negative, every confirmed deposit is credited exactly once and (unless --offline) that
    /// on-chain balances cover what the ledger holds. Exits non-zero with a report when not.
    Verify {
        /// Skip the on-chain comparison.
        #[arg(long)]
        offline: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DepositsCommand {
    /// Lists deposits in a state (all chains, oldest first), with any resolution.
    List {
        /// `rejected` (in suspense), `detected`, `confirmed`, `reorged` or `reversed`.
        #[arg(long, default_value = "rejected")]
        state: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Resolves a transfer in suspense, once: credit it, refund it or take it as revenue.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("action").required(true).multiple(false).args(["credit_invoice", "credit_merchant", "refund", "revenue"])))]
pub struct ResolveArgs {
    /// The deposit's id (from `depositd deposits list`).
    pub deposit_id: uuid::Uuid,
    /// Credit it to this invoice (same chain and asset), by the invoice's rules.
    #[arg(long, value_name = "INVOICE_ID")]
    pub credit_invoice: Option<uuid::Uuid>,
    /// Credit it to this merchant's balance (id or exact name), less the merchant's fee.
    #[arg(long, value_name = "MERCHANT")]
    pub credit_merchant: Option<String>,
    /// Send it back from the treasury: to its sender, or to `--to`.
    #[arg(long)]
    pub refund: bool,
    /// The refund's recipient (EIP-55 checked); the transfer's sender when absent.
    #[arg(long, requires = "refund", value_name = "ADDRESS")]
    pub to: Option<String>,
    /// Take it as the operator's revenue.
    #[arg(long)]
    pub revenue: bool,
    /// Why (recorded with the resolution and in its `deposit.resolved` event).
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum TreasuryCommand {
    /// Print the treasury's address (send gas money there, then record it with `fund`).
    Address,
    /// Record money sent to the treasury from outside (gas for sweeps and payouts) in the ledger,
    /// after checking the transaction on chain: confirmed, successful, paying the treasury.
    Fund {
        /// Chain name, e.g. sepolia.
        #[arg(long)]
        chain: String,
        /// The funding transaction's hash.
        #[arg(long)]
        tx: String,
    },
    /// Resume a signer the settler paused because a transaction it did not sign used its nonce.
    /// Look at that transaction first: the signer's key was used outside depositd.
    ResumeSigner {
        #[arg(long)]
        chain: String,
        /// The paused signer's address.
        #[arg(long)]
        address: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MerchantCommand {
    /// Create a merchant and print its id.
    Create {
        #[arg(long)]
        name: String,
        /// Shown on checkout pages by default.
        #[arg(long)]
        company_name: Option<String>,
        /// The operator's fee in percent of each payment, e.g. 1.5.
        #[arg(long, default_value = "0", allow_negative_numbers = true)]
        fee_percent: rust_decimal::Decimal,
        /// Smallest invoice amount (in the invoice currency); default: the server's invoices.min_amount.
        #[arg(long, allow_negative_numbers = true)]
        min_amount: Option<rust_decimal::Decimal>,
        /// Largest invoice amount; default: the server's invoices.max_amount.
        #[arg(long, allow_negative_numbers = true)]
        max_amount: Option<rust_decimal::Decimal>,
        /// A payment this many percent short of the amount still counts as paid (flagged underpaid).
        #[arg(long, default_value = "0", allow_negative_numbers = true)]
        payment_tolerance_percent: rust_decimal::Decimal,
    },
    /// List merchants.
    List,
    /// Deactivate a shop: its API keys are refused (401 merchant_inactive) until it is activated
    /// again. Payments to its addresses are still recorded and credited to it.
    Deactivate {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
    },
    /// Activate a deactivated shop again: its API keys work again.
    Activate {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
    },
    /// Set the origins (https://shop.example.com) whose browser code may call the payer API for
    /// the merchant's invoices (CORS). No --origin clears them: only the hosted page may.
    SetCheckoutOrigins {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
        /// scheme://host[:port], repeatable.
        #[arg(long = "origin")]
        origins: Vec<String>,
    },
    /// Set the address a merchant's notifications go to by e-mail (paid invoices, disabled webhook
    /// endpoints, failed payouts; sent only with `[smtp]` configured). No --email clears it.
    SetNotificationEmail {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
        /// name@example.com
        #[arg(long)]
        email: Option<String>,
    },
    /// Set a merchant's fee for one asset: a percent of each payment plus a fixed part charged
    /// once per invoice. Applies to invoices created from now on; existing invoices keep theirs.
    SetFee {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
        /// Asset symbol, e.g. USDC.
        #[arg(long)]
        asset: String,
        /// Percent of each payment, 0 to 100.
        #[arg(long, allow_negative_numbers = true)]
        percent: rust_decimal::Decimal,
        /// Fixed part in whole tokens, e.g. 0.30.
        #[arg(long, default_value = "0", allow_negative_numbers = true)]
        fixed: rust_decimal::Decimal,
    },
    /// Invite a member to the merchant's dashboard: prints a one-time link, valid 24 hours, to
    /// set a password.
    Invite(InviteArgs),
}

/// `depositd merchant invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Merchant id or exact name.
    #[arg(long)]
    pub merchant: String,
    /// The member's email address (they sign in with it).
    #[arg(long)]
    pub email: String,
    /// owner (everything), developer (API keys, webhooks, read all) or viewer (read only).
    #[arg(long, default_value = "owner")]
    pub role: String,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key and print it. It is shown this once and stored only as a hash.
    Create {
        /// Merchant id or exact name.
        #[arg(long)]
        merchant: String,
        /// Scopes to grant (repeat or comma-separate); default: every merchant scope but
        /// api_keys:read and api_keys:write (a key that mints keys is asked for by name).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        /// test (dk_test_, testnets and dev) or live (dk_live_, mainnets); default: test when
        /// every enabled chain is a testnet, live otherwise.
        #[arg(long)]
        mode: Option<String>,
        /// A label for humans.
        #[arg(long)]
        name: Option<String>,
    },
    /// List a merchant's keys (prefixes only).
    List {
        #[arg(long)]
        merchant: String,
    },
    /// Revoke a key by id.
    Revoke { id: uuid::Uuid },
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the dev database, configuration, anvil state and dev.json live.
    #[arg(long, default_value = "./data/dev", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// API port (default 8080, or a free one if taken).
    #[arg(long)]
    pub api_port: Option<u16>,
    /// anvil port (default 8545, or a free one if taken).
    #[arg(long)]
    pub anvil_port: Option<u16>,
    /// Seconds between anvil blocks.
    #[arg(long, default_value_t = 1)]
    pub block_time: u64,
    /// Listen address for the API.
    #[arg(long, default_value = "127.0.0.1", hide = true)]
    pub host: std::net::IpAddr,
}

impl DevArgs {
    pub fn api_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.host, port)
    }
}

// === wallet (issue 21: keys off the web tier) ===

#[derive(Debug, Subcommand)]
pub enum WalletCommand {
    /// Print, from the configured mnemonic, the `[wallet]` settings of a process without the
    /// settler: the xpub at m/44'/60'/0'/0, its path and the treasury's address (public).
    Xpub,
    /// Print, from the configured mnemonic, the web tier's two secret keys (session signing and
    /// webhook-secret sealing): one-way derivations that reveal nothing of the mnemonic.
    WebKeys,
}
