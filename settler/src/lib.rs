//! depositd's settler: the hot wallet that moves money on chain. One [`Settler`] per chain plans
//! sweeps and pass-through forwards, signs and broadcasts payouts, replaces stuck transactions and
//! posts what each confirmed (or failed) transaction did to the ledger.
//!
//! The rule above all: a crash at any instant never sends a payment twice and never loses track
//! of one. Every outgoing transaction is a row (`intent`) before it is anything else; the nonce,
//! the signed bytes and their hash are stored in one database transaction (`signed`) before the
//! first broadcast; after a restart, whatever is signed is rebroadcast from its stored bytes, so a
//! payment has exactly one nonce and a nonce exactly one payment. A signer's nonces are assigned
//! under a lock on its `signer_nonces` row, so daemons sharing a database never interleave them.
//!
//! # Layout
//! - this module: [`Settler`], one [`Settler::tick`] (run under the chain's lease by
//!   `depositd_core::leased`), its RPC policy for `depositd_rpc::ChainRpc`, [`SettleError`],
//!   crash points for the crash tests.
//! - [`txm`]: the transaction manager: signing with nonces, broadcasting, receipts,
//!   confirmations, fee bumps, rebroadcasts, nonce reconciliation at start-up.
//! - [`planner`]: which deposit addresses to sweep or forward, their gas top-ups.
//! - [`cold`]: the treasury's excess over `hot_max` sent to the operator's cold address.
//! - [`outcome`]: what a confirmed or failed transaction does to the ledger, payouts, invoices and
//!   webhooks.

pub mod cold;
pub mod outcome;
pub mod planner;
pub mod txm;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use depositd_core::config::{ChainConfig, SettlerSettings};
use depositd_core::gas::{self, Fees};
use depositd_core::invoice::SessionSigner;
use depositd_core::leased::{LeasedLoop, LeasedWork};
use depositd_core::ledger::LedgerError;
use depositd_core::metrics::Metrics;
use depositd_core::store::leases::Lease;
use depositd_core::store::{Store, StoreError, chain_txs, deposit_addresses};
use depositd_core::wallet::HdWallet;
use depositd_rpc::{ChainRpc, Policy, RpcError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// A node's answer that says less than it must (a receipt without its gas figures).
    #[error("{what} failed: {message}")]
    BadAnswer { what: &'static str, message: String },
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("signing failed: {0}")]
    Signing(String),
    /// A test's crash point was reached: the settler stops exactly there, as a killed process would.
    #[error("crash point {0:?} reached")]
    Crashed(CrashPoint),
}

/// A settler step is retried every poll interval, so a call gives up sooner than the watcher's:
/// three retries, at most 2 s apart, and a `Retry-After` honoured up to that same 2 s.
const RPC_POLICY: Policy = Policy {
    retries: 3,
    max_delay: Duration::from_secs(2),
    max_retry_after: Duration::from_secs(2),
    range_errors: false,
};

/// Where a crash test stops the settler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the intent exists, before it is signed.
    BeforeSign,
    /// After the signed transaction is stored, before it is broadcast.
    AfterSign,
    /// After the broadcast, before the broadcast is recorded.
    AfterBroadcast,
}

/// One chain's settler.
pub struct Settler {
    pub(crate) chain: ChainConfig,
    pub(crate) store: Store,
    pub(crate) rpc: ChainRpc,
    pub(crate) wallet: Arc<HdWallet>,
    pub(crate) settings: SettlerSettings,
    pub(crate) public_url: String,
    pub(crate) sessions: SessionSigner,
    pub(crate) metrics: Metrics,
    crash_at: Option<CrashPoint>,
    nonces_checked: bool,
    /// The head at which confirmed transactions were last rechecked for a reorg that took them
    /// away (`txm::recheck_confirmed`): the next recheck reaches back from there, however far the
    /// head ran meanwhile. `None` after start or a lease change (the nonce check then covers it).
    pub(crate) rechecked_at: Option<u64>,
    /// Stalled transactions already logged (each is logged once).
    stalls_reported: std::collections::HashSet<uuid::Uuid>,
    lease: Option<Lease>,
}

impl Settler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        chain: ChainConfig,
        store: Store,
        wallet: Arc<HdWallet>,
        settings: SettlerSettings,
        public_url: String,
        sessions: SessionSigner,
        metrics: Metrics,
    ) -> Result<Settler, SettleError> {
        let rpc = ChainRpc::new(&chain, metrics.clone())?.with_policy(RPC_POLICY);
        Ok(Settler {
            chain,
            store,
            rpc,
            wallet,
            settings,
            public_url,
            sessions,
            metrics,
            crash_at: None,
            nonces_checked: false,
            rechecked_at: None,
            stalls_reported: Default::default(),
            lease: None,
        })
    }

    /// Runs only while holding `lease` (several daemons on one database: one settler per chain).
    pub fn with_lease(mut self, lease: Lease) -> Settler {
        self.lease = Some(lease);
        self
    }

    /// For the crash tests: stop at `point` the next time it is reached.
    #[doc(hidden)]
    pub fn crash_at(&mut self, point: Option<CrashPoint>) {
        self.crash_at = point;
    }

    pub(crate) fn crash_point(&self, point: CrashPoint) -> Result<(), SettleError> {
        if self.crash_at == Some(point) { Err(SettleError::Crashed(point)) } else { Ok(()) }
    }

    /// Runs until `shutdown`; a failed step is logged and retried after the poll interval (all
    /// state is in the database, so a retry continues exactly where the step stopped).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SettleError> {
        tracing::info!(chain = %self.chain.name, treasury = %self.treasury_address(), "settler started");
        let leased = LeasedLoop {
            component: "settler",
            chain: self.chain.name.clone(),
            lease: self.lease.clone(),
            poll: Duration::from_millis(self.settings.poll_interval_ms),
            wake: None,
            metrics: self.metrics.clone(),
        };
        leased.run(&mut self, shutdown).await;
        Ok(())
    }

    /// For the tests of what happens between planning and signing: a tick's signing step alone
    /// (nothing is monitored or planned).
    #[doc(hidden)]
    pub async fn sign_only(&mut self) -> Result<(), SettleError> {
        let head = self.rpc.head().await?;
        let fees = self.refresh_fees().await?;
        self.sign_ready(fees, head).await
    }

    /// One step: read fees, check what is in flight (receipts, confirmations, bumps), plan sweeps,
    /// forwards and cold transfers, sign and broadcast what is ready.
    pub async fn tick(&mut self) -> Result<(), SettleError> {
        let head = self.rpc.head().await?;
        let fees = self.refresh_fees().await?;
        if !self.nonces_checked {
            self.reconcile_nonces().await?;
            self.nonces_checked = true;
        }
        self.monitor(head, fees).await?;
        self.plan(fees).await?;
        self.plan_cold(fees).await?;
        self.sign_ready(fees, head).await?;
        Ok(())
    }

    /// Today's fees, also stored for the API (a native payout's fee reserve).
    async fn refresh_fees(&self) -> Result<Fees, SettleError> {
        let block = self
            .rpc
            .call("eth_getBlockByNumber", |p| async move {
                p.get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest).await
            })
            .await?
            .ok_or_else(|| SettleError::BadAnswer {
                what: "eth_getBlockByNumber",
                message: "no latest block".into(),
            })?;
        let base = u128::from(block.header.base_fee_per_gas.unwrap_or(0));
        let tip = self
            .rpc
            .call("eth_maxPriorityFeePerGas", |p| async move { p.get_max_priority_fee_per_gas().await })
            .await?;
        let mut conn = self.store.conn().await?;
        chain_txs::store_fee_estimate(&mut conn, self.chain.chain_id, base, tip).await?;
        let treasury = self.treasury_address();
        if let Ok(balance) = self.rpc.call("eth_getBalance", |p| async move { p.get_balance(treasury).await }).await {
            let whole = depositd_core::money::BaseUnits(balance).to_display(self.chain.native.decimals);
            self.metrics
                .hot_wallet_balance
                .with_label_values(&[self.chain.name.as_str(), self.chain.native.symbol.as_str()])
                .set(whole.parse().unwrap_or(f64::NAN));
        }
        Ok(gas::current(base, tip, self.settings.max_fee_per_gas_cap))
    }

    pub fn treasury_address(&self) -> Address {
        self.wallet.treasury_address()
    }

    /// The key that signs for `address`: the treasury or one of our deposit addresses.
    pub(crate) async fn signer_for(&self, address: &str) -> Result<PrivateKeySigner, SettleError> {
        if address == self.treasury_address().to_checksum(None) {
            return self.wallet.treasury().cloned().map_err(|e| SettleError::Signing(e.to_string()));
        }
        let mut conn = self.store.conn().await?;
        let index = deposit_addresses::index_of(&mut conn, address)
            .await?
            .ok_or_else(|| SettleError::Signing(format!("{address} is neither the treasury nor a deposit address")))?;
        self.wallet.deposit_signer(index).map_err(|e| SettleError::Signing(e.to_string()))
    }

    /// What the payout lifecycle and the outcome of a transaction need to know of this chain.
    pub(crate) fn payout_ctx(&self) -> depositd_core::payouts::Context<'_> {
        depositd_core::payouts::Context {
            chain: &self.chain,
            settler: &self.settings,
            treasury: self.treasury_address(),
            public_url: &self.public_url,
            sessions: &self.sessions,
        }
    }

    pub(crate) fn native_symbol(&self) -> &str {
        &self.chain.native.symbol
    }
}

/// The settler's step under its chain's lease.
impl LeasedWork for Settler {
    type Error = SettleError;

    async fn step(&mut self) -> Result<bool, SettleError> {
        self.tick().await.map(|()| false)
    }

    fn lease_changed(&mut self, held: bool) {
        if held {
            // A new holder checks nonces again: another process signed meanwhile.
            self.nonces_checked = false;
            self.rechecked_at = None;
        } else {
            // The holder reports stalls now; a figure left here would go stale.
            for kind in txm::Stall::UNSIGNED.iter().chain(&txm::Stall::SIGNED) {
                self.metrics
                    .settler_stalled_transactions
                    .with_label_values(&[self.chain.name.as_str(), kind.as_str()])
                    .set(0);
            }
            self.stalls_reported.clear();
        }
    }
}
