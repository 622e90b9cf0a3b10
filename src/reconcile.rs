//! Ledger reconciliation in full: the store's own checks (`depositd_core::ledger::verify`) and,
//! against each chain, two comparisons with what is really there. Run by `depositd ledger verify`
//! and periodically by the daemon's `ledger` component, which exports the outcome as metrics.
//!
//! # Cover: the chain holds at least what the ledger says
//! What sits at deposit addresses and in the hot wallet (read at the latest block) must cover the
//! ledger's custody and hot wallet, less what the settler's unconfirmed transactions may already
//! have taken.
//!
//! The cover check nets out the platform's `reorg_loss`: what a reorg took away after it had
//! been swept from a deposit address into the treasury is still counted by the sweep's entry (in
//! `hot_wallet`), and the chain cannot hold it. Only that: a loss on money forwarded to a merchant
//! (`reorg_loss_forwarded`) is not netted, since the forward's entry already took it out of
//! custody (netting it would hide as much missing treasury money). A `reorg_loss` larger than
//! what the ledger holds is a problem of its own. What the losses cost is the next check's
//! business.
//!
//! # Solvency: the chain holds what the ledger owes merchants
//! Per chain and asset, what the platform's addresses hold (the same reading as the cover check:
//! every deposit address with custody and the treasury, see [`holding_addresses`]), plus what
//! the settler's unconfirmed transactions may already have paid out, must be at least what the
//! ledger owes merchants: their `available`, `pending`, `reserved` and `in_transit`
//! ([`verify::owes_merchants`]; a merchant's `receivable` is a claim, not money, and is not
//! subtracted). A shortfall fails the check and is reported with its exact amount (and as the
//! `depositd_ledger_solvency_shortfall` gauge): the platform cannot pay every merchant. The
//! operator's own money (gas capital, fees earned) counts as cover: it is there to be paid.
//!
//! # Surplus: the ledger explains what the deposit addresses hold
//! A deposit the watcher missed is money at a deposit address that the ledger never heard of;
//! the cover check cannot see it. So every deposit address handed out (and every pooled one a
//! recorded transfer reached) is read in every configured asset, and compared, address by
//! address, with what explains its balance. What **explains** the balance of asset `X` at address
//! `A`, all in exact base units:
//!
//! - **the ledger**: the platform's `custody` postings attributed to `A`
//!   ([`verify::custody_by_address`]): live deposits to `A` (detected ones are already posted as
//!   pending, confirmed ones stay in custody until swept) and confirmed gas top-ups to `A`, less
//!   confirmed sweeps and forwards from `A`, the gas every mined one burned, and reversals. These
//!   are the very postings that make up the ledger's custody balance, split by address; a custody
//!   posting naming no deposit or transaction is itself a problem. Native dust is explained
//!   exactly: a top-up sends the gas budget, the transaction burns less, and the ledger keeps the
//!   difference in custody (top-up in, actual gas out); a native sweep leaves its unused budget
//!   the same way.
//! - **in flight**: gas top-ups to `A` signed but not yet confirmed (they may have landed), and
//!   what the ledger took out of `A` for sweeps and forwards mined after the block the balances are
//!   read at (the chain there still shows it). Outgoing transactions not yet confirmed only lower
//!   the balance, so they need no allowance.
//! - **known but uncredited**: transfers the watcher recorded as `rejected` (wrong asset or chain,
//!   an unowned pooled address, a disabled static address) that the ledger does not hold in its
//!   `suspense` account yet (recorded before suspense existed; the watcher posts them when it
//!   next confirms). They are listed per address and never fail the check. A rejected transfer
//!   in suspense is in custody like any deposit, so the ledger explains it.
//!
//! The balances are read at the watcher's cursor (the last block whose deposits are fully
//! recorded, from the same snapshot; by its hash, so a reorg the watcher has not processed yet
//! cannot pass another fork's payments off as missed ones), or at the node's head if that is a
//! little lower, so a payment in a block the watcher has not scanned yet is not mistaken for a
//! missed one. It costs one balance query per address and asset (16 in flight), every run. Only a **surplus** counts:
//! `on chain - (ledger + in flight)`, of which the rejected transfers explain what they can;
//! the rest is **unexplained**. Effects that only lower a balance (an L2's data fee beyond the
//! receipt's gas, a payment on its way out) are the cover check's business and never fail this
//! one. Per chain and asset, the unexplained total fails the check when it is more than the
//! asset's dust allowance (`ledger.unexplained_dust`, whole units by symbol; none for an asset not
//! listed), and the problem names every address holding unexplained money with its amount (the
//! operator then runs `depositd rescan` over the blocks that paid it). The hot wallet is not
//! checked for a surplus: operator funding it before `depositd treasury fund` records it is no
//! missed payment.
//!
//! # Cold storage: the cold address holds what the ledger moved there
//! For each asset with `cold_storage` in its chain file, the cold address (read at the latest
//! block) must hold at least the platform's `cold` account; the cold transfers in flight only add
//! to it. Like the hot wallet, it is not checked for a surplus: it is the operator's own wallet
//! and may receive money from elsewhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::eips::BlockId;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::transports::TransportErrorKind;
use anyhow::Context;
use depositd_core::chain_tx::{ChainTx, Purpose, TxState};
use depositd_core::config::{ChainConfig, Config};
use depositd_core::ledger;
use depositd_core::ledger::verify::{self, Assessment, CustodyByAddress, Explained, Report};
use depositd_core::ledger::{Account, AccountKind};
use depositd_core::metrics::Metrics;
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_core::store::{Store, cursors, deposit_addresses, deposits};
use depositd_core::time::now_ms;
use depositd_core::wallet::HdWallet;
use depositd_rpc::ChainRpc;
use tokio_util::sync::CancellationToken;

alloy::sol! {
    #[sol(rpc)]
    interface Erc20Balance {
        function balanceOf(address owner) external view returns (uint256);
    }
}

/// Balance queries in flight at once.
const READ_CONCURRENCY: usize = 16;
/// How far the node's head may be below the watcher's cursor for the surplus check to read at
/// the head instead (what the ledger took out in those blocks is loaded for the allowance).
const LAG_WINDOW: u64 = 256;
/// Addresses a surplus problem names; the report's lines name them all.
const NAMED_IN_PROBLEM: usize = 20;

/// The surplus check's finding for one asset on one chain.
#[derive(Debug, Clone)]
pub struct Surplus {
    pub chain: String,
    pub asset: String,
    pub decimals: u8,
    /// The block the balances were read at.
    pub block: u64,
    /// Deposit addresses read.
    pub addresses: usize,
    /// Money at the deposit addresses nothing recorded explains, in total...
    pub unexplained: BaseUnits,
    /// ...and per address, largest first.
    pub holders: Vec<(Address, BaseUnits)>,
    /// Surpluses the rejected transfers account for, per address.
    pub known_uncredited: Vec<(Address, BaseUnits)>,
    /// The allowance (`ledger.unexplained_dust`).
    pub dust: BaseUnits,
}

impl Surplus {
    /// More unexplained money than dust: the check fails.
    pub fn fails(&self) -> bool {
        self.unexplained > self.dust
    }

    fn amount(&self, amount: BaseUnits) -> String {
        format!("{} {} ({amount} base units)", amount.to_display(self.decimals), self.asset)
    }

    fn holders_text(&self, limit: usize) -> String {
        let mut named: Vec<String> = self
            .holders
            .iter()
            .take(limit)
            .map(|(address, amount)| format!("{address} holds {} unexplained", self.amount(*amount)))
            .collect();
        if self.holders.len() > limit {
            named.push(format!("and {} more address(es)", self.holders.len() - limit));
        }
        named.join("; ")
    }
}

/// One asset on one chain: what the ledger holds and owes there against what the chain holds.
/// All exact base units.
#[derive(Debug, Clone)]
pub struct Holdings {
    pub chain: String,
    pub asset: String,
    pub decimals: u8,
    /// The ledger's custody plus hot wallet.
    pub held: BaseUnits,
    /// The platform's `reorg_loss` (not `reorg_loss_forwarded`): the part of `held` a reorg took
    /// away after it had been swept into the treasury.
    pub reorg_loss: BaseUnits,
    /// What the ledger owes merchants ([`verify::owes_merchants`]).
    pub owed: BaseUnits,
    /// What the holding addresses hold on chain, at the latest block...
    pub on_chain: BaseUnits,
    /// ...how many were read...
    pub addresses: usize,
    /// ...and what the settler's unconfirmed transactions may already have taken from them.
    pub in_flight: BaseUnits,
    /// What the ledger moved to the operator's cold address (`cold`): still the platform's, so it
    /// counts towards what merchants are owed (the cold check compares it with that address).
    pub cold: BaseUnits,
}

impl Holdings {
    /// On chain, plus what may be on its way out.
    fn accounted(&self) -> BaseUnits {
        self.on_chain.checked_add(self.in_flight).unwrap_or(BaseUnits(U256::MAX))
    }

    /// By how much the chain falls short of what the ledger holds, net of the reorg loss (the
    /// cover check; zero when covered).
    pub fn cover_shortfall(&self) -> BaseUnits {
        let held = self.held.checked_sub(self.reorg_loss).unwrap_or_default();
        held.checked_sub(self.accounted()).unwrap_or_default()
    }

    /// By how much the swept reorg loss exceeds what the ledger holds (zero normally): a loss
    /// no holding explains, reported as a problem rather than netted away.
    pub fn unheld_loss(&self) -> BaseUnits {
        self.reorg_loss.checked_sub(self.held).unwrap_or_default()
    }

    /// By how much the chain falls short of what the ledger owes merchants (the solvency check;
    /// zero when solvent).
    pub fn solvency_shortfall(&self) -> BaseUnits {
        let holdings = self.accounted().checked_add(self.cold).unwrap_or(BaseUnits(U256::MAX));
        self.owed.checked_sub(holdings).unwrap_or_default()
    }

    fn amount(&self, amount: BaseUnits) -> String {
        format!("{} {} ({amount} base units)", amount.to_display(self.decimals), self.asset)
    }
}

/// A chain and asset whose `reorg_loss` is above zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReorgLoss {
    pub chain: String,
    pub asset: String,
    pub decimals: u8,
    pub amount: BaseUnits,
}

/// The store's report and the on-chain findings.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub report: Report,
    /// One line per asset compared on chain: held by the ledger vs found on chain.
    pub on_chain: Vec<String>,
    /// The cover and solvency comparisons, per chain and asset read.
    pub holdings: Vec<Holdings>,
    /// Losses a reorg left (from the ledger alone: known without reading any chain).
    pub reorg_losses: Vec<ReorgLoss>,
    /// Chains whose balances could not be read (RPC down): not a verdict, but not a pass.
    pub unchecked: Vec<String>,
    /// The surplus check, per chain and asset read.
    pub surplus: Vec<Surplus>,
    /// Chains the surplus check skipped, and why (the watcher has not scanned them yet).
    pub surplus_skipped: Vec<String>,
}

impl Reconciliation {
    /// Nothing wrong and everything checked.
    pub fn is_ok(&self) -> bool {
        self.report.is_ok() && self.unchecked.is_empty()
    }

    /// The metric's value: 1 passed, 0 found problems, -1 could not check everything.
    pub fn gauge(&self) -> i64 {
        if !self.report.is_ok() {
            0
        } else if !self.unchecked.is_empty() {
            -1
        } else {
            1
        }
    }

    /// The readable report `depositd ledger verify` prints.
    pub fn render(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "ledger: {} entries, {} postings, {} accounts, {} deposits checked\n",
            r.entries, r.postings, r.accounts, r.deposits
        );
        for line in &self.on_chain {
            out.push_str(&format!("on chain: {line}\n"));
        }
        for h in &self.holdings {
            let short = h.solvency_shortfall();
            if short.is_zero() {
                out.push_str(&format!(
                    "solvency: {} {}: merchants are owed {}, the chain holds {}: covered\n",
                    h.chain,
                    h.asset,
                    h.owed.to_display(h.decimals),
                    h.accounted().to_display(h.decimals)
                ));
            } else {
                out.push_str(&format!(
                    "solvency: {} {}: SHORT by {}: merchants are owed {}, the chain holds {}\n",
                    h.chain,
                    h.asset,
                    h.amount(short),
                    h.owed.to_display(h.decimals),
                    h.accounted().to_display(h.decimals)
                ));
            }
        }
        for loss in &self.reorg_losses {
            out.push_str(&format!(
                "reorg loss: {} {}: {} ({} base units) left deposit addresses before a reorg took away the deposits \
                 that paid for it; the platform carries it (reorg_loss)\n",
                loss.chain,
                loss.asset,
                loss.amount.to_display(loss.decimals),
                loss.amount
            ));
        }
        for s in &self.surplus {
            if s.holders.is_empty() {
                out.push_str(&format!(
                    "surplus: {} {} at block {}: {} deposit address(es) read, none holds more than the ledger explains\n",
                    s.chain, s.asset, s.block, s.addresses
                ));
            } else {
                out.push_str(&format!(
                    "surplus: {} {} at block {}: {} at {} of {} deposit address(es) beyond what the ledger explains \
                     (dust allowance {}): {}\n",
                    s.chain,
                    s.asset,
                    s.block,
                    s.amount(s.unexplained),
                    s.holders.len(),
                    s.addresses,
                    s.dust.to_display(s.decimals),
                    s.holders_text(usize::MAX)
                ));
            }
            for (address, amount) in &s.known_uncredited {
                out.push_str(&format!(
                    "known but uncredited: {} {address} holds {} from transfers recorded as rejected\n",
                    s.chain,
                    s.amount(*amount)
                ));
            }
        }
        for line in &self.surplus_skipped {
            out.push_str(&format!("surplus not checked: {line}\n"));
        }
        for line in &self.unchecked {
            out.push_str(&format!("NOT CHECKED on chain: {line}\n"));
        }
        if r.problems.is_empty() && !self.unchecked.is_empty() {
            out.push_str("no problems in the ledger itself, but the chains above could not be compared\n");
        } else if r.problems.is_empty() {
            out.push_str(
                "OK: every entry balances, every balance equals its postings, none is negative, every \
                           confirmed deposit is credited exactly once",
            );
            if !self.on_chain.is_empty() {
                out.push_str(", and on-chain funds cover what the ledger holds and what it owes merchants");
            }
            if !self.surplus.is_empty() {
                out.push_str(", and the deposit addresses hold nothing beyond dust that the ledger does not explain");
            }
            out.push('\n');
        } else {
            out.push_str(&format!("{} PROBLEM(S):\n", r.problems.len()));
            for problem in &r.problems {
                out.push_str(&format!("  - {problem}\n"));
            }
        }
        out
    }
}

/// What the surplus check reads for one chain from the store's snapshot.
struct SurplusInputs {
    /// The watcher's cursor (number and hash); `None` before it scanned the chain.
    cursor: Option<(u64, String)>,
    addresses: Vec<Address>,
    custody: CustodyByAddress,
    rejected: Vec<(String, String, BaseUnits)>,
    /// Open gas top-ups (to deposit addresses).
    topups_in_flight: Vec<ChainTx>,
    /// Sweeps and forwards settled in blocks above `cursor - LAG_WINDOW`.
    settled_recently: Vec<ChainTx>,
}

/// Everything the on-chain comparisons of one chain read from the snapshot.
struct ChainInputs<'a> {
    chain: &'a ChainConfig,
    custody_addresses: Vec<String>,
    leaving: BTreeMap<String, BaseUnits>,
    surplus: SurplusInputs,
}

/// Runs every check; with `on_chain`, also compares balances on each enabled chain. The store is
/// read in one snapshot and the chains after it: funds reach a chain before the ledger counts
/// them, so the later reading can show more than the snapshot holds, not less (the surplus check
/// reads at the snapshot's cursor for that reason).
pub async fn reconcile(
    store: &Store,
    config: &Config,
    wallet: &HdWallet,
    on_chain: bool,
) -> anyhow::Result<Reconciliation> {
    let mut snapshot = store.begin_snapshot().await?;
    let mut report = verify::verify(&mut snapshot).await?;
    let mut inputs: Vec<ChainInputs> = Vec::new();
    let mut cold = Vec::new();
    if on_chain {
        for chain in &config.chains {
            cold.extend(cold_holdings(&mut snapshot, chain).await?);
            let custody_addresses = deposits::custody_addresses(&mut snapshot, chain.chain_id).await?;
            let in_flight = chain_txs::in_flight(&mut snapshot, chain.chain_id).await?;
            // A transaction a deep reorg put back to `broadcast` keeps its entries: what it moves
            // is already out of the ledger's holdings, and is not in flight as well. Its gas is:
            // mined again, it may cost more than the first mining's entry says until it confirms.
            let mut flights = Vec::with_capacity(in_flight.len());
            for tx in &in_flight {
                let recorded = ledger::settlement::records_transaction(&mut snapshot, tx.id).await?;
                flights.push((tx, recorded));
            }
            let leaving = in_flight_outflow(&flights, chain)?;
            let cursor = cursors::get(&mut snapshot, chain.chain_id).await?.map(|c| (c.block_number, c.block_hash));
            let floor = cursor.as_ref().map_or(0, |c| c.0).saturating_sub(LAG_WINDOW);
            let surplus = SurplusInputs {
                cursor,
                addresses: deposit_addresses::reconciled(&mut snapshot, chain.chain_id).await?,
                custody: verify::custody_by_address(&mut snapshot, chain.chain_id).await?,
                rejected: deposits::rejected_on_chain(&mut snapshot, chain.chain_id).await?,
                topups_in_flight: in_flight.into_iter().filter(|t| t.purpose == Purpose::GasTopup).collect(),
                settled_recently: chain_txs::settled_by_deposit_addresses_above(&mut snapshot, chain.chain_id, floor)
                    .await?,
            };
            inputs.push(ChainInputs { chain, custody_addresses, leaving, surplus });
        }
    }
    snapshot.rollback().await?;
    let reorg_losses = report
        .reorg_loss
        .iter()
        .filter(|(_, amount)| !amount.is_zero())
        .map(|((chain_id, asset), amount)| {
            let chain = config.chains.iter().find(|c| c.chain_id == *chain_id);
            ReorgLoss {
                chain: chain.map_or_else(|| format!("chain {chain_id}"), |c| c.name.clone()),
                asset: asset.clone(),
                decimals: chain.and_then(|c| c.asset(asset)).map_or(0, |a| a.decimals),
                amount: *amount,
            }
        })
        .collect();
    let mut lines = Vec::new();
    let mut holdings = Vec::new();
    let mut unchecked = Vec::new();
    for holding in &cold {
        match compare_cold(holding, &mut report.problems).await {
            Ok(line) => lines.push(line),
            Err(error) => unchecked.push(format!("{} (cold address): {error:#}", holding.chain.name)),
        }
    }
    let mut surplus = Vec::new();
    let mut surplus_skipped = Vec::new();
    for ChainInputs { chain, custody_addresses, leaving, surplus: surplus_inputs } in inputs {
        let ledger = LedgerSide::of(&report, chain.chain_id);
        if !ledger.is_empty() {
            let compared = match holding_addresses(wallet, &custody_addresses) {
                Ok(owners) => {
                    let cold: BTreeMap<String, BaseUnits> = cold
                        .iter()
                        .filter(|c| c.chain.chain_id == chain.chain_id)
                        .map(|c| (c.asset.clone(), c.ledger))
                        .collect();
                    compare_chain(chain, &owners, &ledger, &leaving, &cold, &mut report.problems).await
                }
                Err(error) => Err(error),
            };
            match compared {
                Ok((mut compared, mut found)) => {
                    lines.append(&mut compared);
                    holdings.append(&mut found);
                }
                Err(error) => unchecked.push(format!("{}: {error:#}", chain.name)),
            }
        }
        report.problems.extend(surplus_inputs.custody.unattributed.iter().cloned());
        let Some(cursor) = surplus_inputs.cursor.clone() else {
            surplus_skipped.push(format!("{}: the watcher has not scanned it yet", chain.name));
            continue;
        };
        match check_surplus(chain, &config.settings.ledger, cursor, &surplus_inputs).await {
            Ok(found) => {
                for s in &found {
                    if s.fails() {
                        report.problems.push(format!(
                            "on {} the deposit addresses hold {} beyond what the ledger, the transactions in flight \
                             and the rejected transfers explain (at block {}, dust allowance {}): {}",
                            s.chain,
                            s.amount(s.unexplained),
                            s.block,
                            s.dust.to_display(s.decimals),
                            s.holders_text(NAMED_IN_PROBLEM)
                        ));
                    }
                }
                surplus.extend(found);
            }
            Err(error) => unchecked.push(format!("{} (surplus check): {error:#}", chain.name)),
        }
    }
    Ok(Reconciliation { report, on_chain: lines, holdings, reorg_losses, unchecked, surplus, surplus_skipped })
}

/// What explains each (address, asset) on one chain when balances are read at `block`.
fn explanations(
    chain: &ChainConfig,
    inputs: &SurplusInputs,
    block: u64,
) -> anyhow::Result<BTreeMap<(Address, String), Explained>> {
    let overflow = || anyhow::anyhow!("explained amounts overflow 256 bits");
    let mut at = inputs.custody.at.clone();
    let native = chain.native.symbol.clone();
    let mut add = |address: &str, asset: &str, amount: BaseUnits, rejected: bool| -> anyhow::Result<()> {
        let address: Address = address.parse().with_context(|| format!("stored address {address}"))?;
        let e = at.entry((address, asset.to_owned())).or_default();
        let total = if rejected { &mut e.rejected } else { &mut e.in_flight };
        *total = total.checked_add(amount).ok_or_else(overflow)?;
        Ok(())
    };
    for (to, asset, amount) in &inputs.rejected {
        add(to, asset, *amount, true)?;
    }
    for t in &inputs.topups_in_flight {
        add(&t.to_address, &native, t.value, false)?;
    }
    for t in inputs.settled_recently.iter().filter(|t| t.mined_block.is_some_and(|b| b > block)) {
        if t.state == TxState::Confirmed {
            add(&t.signer_address, &t.asset, t.value, false)?;
        }
        add(&t.signer_address, &native, t.gas_cost.unwrap_or_default(), false)?;
    }
    Ok(at)
}

/// Addresses whose balances the surplus check reads before it assesses them.
const SURPLUS_CHUNK: usize = 4_096;

/// The surplus check on one chain (see the module doc): every asset at every deposit address,
/// read at the watcher's cursor block, by its hash (so a reorg the watcher has not processed yet
/// cannot show another chain's payments as missed ones; a node that no longer has the block makes
/// the chain unchecked, not failed), or at the head when the node is a little behind the cursor.
async fn check_surplus(
    chain: &ChainConfig,
    settings: &depositd_core::config::LedgerSettings,
    (cursor, cursor_hash): (u64, String),
    inputs: &SurplusInputs,
) -> anyhow::Result<Vec<Surplus>> {
    let rpc = connect(chain)?;
    let head = rpc.head().await?;
    let block = cursor.min(head);
    if cursor - block > LAG_WINDOW {
        anyhow::bail!("the node's head {head} is more than {LAG_WINDOW} blocks behind the watcher's cursor {cursor}");
    }
    let at = if block == cursor {
        let hash = cursor_hash.parse().with_context(|| format!("stored cursor hash {cursor_hash}"))?;
        BlockId::hash(hash)
    } else {
        BlockId::number(block)
    };
    let explained = explanations(chain, inputs, block)?;
    let mut assets: Vec<(String, Option<Address>, u8)> =
        vec![(chain.native.symbol.clone(), None, chain.native.decimals)];
    assets.extend(chain.tokens.iter().map(|t| (t.symbol.clone(), Some(t.address), t.decimals)));
    let mut found = Vec::with_capacity(assets.len());
    let none = Explained::default();
    for (asset, token, decimals) in assets {
        let mut s = Surplus {
            chain: chain.name.clone(),
            asset: asset.clone(),
            decimals,
            block,
            addresses: inputs.addresses.len(),
            unexplained: BaseUnits::ZERO,
            holders: Vec::new(),
            known_uncredited: Vec::new(),
            dust: settings.unexplained_dust(&asset, decimals),
        };
        // A slice of the addresses at a time, so millions of them never mean millions of
        // balances held at once.
        for addresses in inputs.addresses.chunks(SURPLUS_CHUNK) {
            let balances = balances_at(&rpc, token, addresses, at)
                .await
                .with_context(|| format!("reading {asset} balances at block {block}"))?;
            for (address, balance) in addresses.iter().zip(balances) {
                let why = explained.get(&(*address, asset.clone())).unwrap_or(&none);
                let Assessment { unexplained, known_uncredited, .. } = why.assess(BaseUnits(balance));
                if !known_uncredited.is_zero() {
                    s.known_uncredited.push((*address, known_uncredited));
                }
                if !unexplained.is_zero() {
                    s.unexplained = s.unexplained.checked_add(unexplained).context("unexplained amounts overflow")?;
                    s.holders.push((*address, unexplained));
                }
            }
        }
        s.holders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        found.push(s);
    }
    Ok(found)
}

/// What the settler's unconfirmed transactions may already have taken from our addresses on
/// chain before the ledger records it: payments out (payouts, refunds, forwards; not those the
/// ledger records already, `true` beside them) and every transaction's gas budget. Moves between
/// deposit addresses and the treasury stay ours.
fn in_flight_outflow(
    in_flight: &[(&ChainTx, bool)],
    chain: &ChainConfig,
) -> anyhow::Result<BTreeMap<String, BaseUnits>> {
    let mut leaving: BTreeMap<String, BaseUnits> = BTreeMap::new();
    let overflow = || anyhow::anyhow!("in-flight amounts overflow");
    for &(tx, recorded) in in_flight {
        if !recorded
            && matches!(tx.purpose, Purpose::Payout | Purpose::Refund | Purpose::Passthrough | Purpose::ColdTransfer)
        {
            let total = leaving.entry(tx.asset.clone()).or_default();
            *total = total.checked_add(tx.value).ok_or_else(overflow)?;
        }
        let total = leaving.entry(chain.native.symbol.clone()).or_default();
        *total = total.checked_add(tx.max_gas_cost).ok_or_else(overflow)?;
    }
    Ok(leaving)
}

/// What the ledger says about one chain, per asset: (held, reorg loss, owed to merchants).
struct LedgerSide(BTreeMap<String, (BaseUnits, BaseUnits, BaseUnits)>);

impl LedgerSide {
    fn of(report: &Report, chain_id: u64) -> LedgerSide {
        let mut assets: BTreeMap<String, (BaseUnits, BaseUnits, BaseUnits)> = BTreeMap::new();
        let of_chain = |map: &BTreeMap<(u64, String), BaseUnits>| -> Vec<(String, BaseUnits)> {
            map.iter()
                .filter(|((id, _), amount)| *id == chain_id && !amount.is_zero())
                .map(|((_, asset), amount)| (asset.clone(), *amount))
                .collect()
        };
        for (asset, amount) in of_chain(&report.held) {
            assets.entry(asset).or_default().0 = amount;
        }
        for (asset, amount) in of_chain(&report.reorg_loss_swept) {
            assets.entry(asset).or_default().1 = amount;
        }
        for (asset, amount) in of_chain(&report.owed) {
            assets.entry(asset).or_default().2 = amount;
        }
        LedgerSide(assets)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every address whose balance counts as the platform's holdings on one chain, for the cover and
/// solvency checks: the deposit addresses the ledger has custody at, and the treasury. (Cold
/// storage, when configured, adds its address here.)
fn holding_addresses(wallet: &HdWallet, custody_addresses: &[String]) -> anyhow::Result<Vec<Address>> {
    let mut owners: Vec<Address> = Vec::with_capacity(custody_addresses.len() + 1);
    for address in custody_addresses {
        owners.push(address.parse().with_context(|| format!("stored deposit address {address}"))?);
    }
    owners.push(wallet.treasury_address());
    Ok(owners)
}

/// Compares one chain's on-chain balances at `owners` with what the ledger holds there (the
/// cover check) and what it owes merchants (the solvency check), both allowing for what
/// transactions in flight may have taken already; shortfalls go to `problems`, a line per asset
/// and the comparisons are returned.
async fn compare_chain(
    chain: &ChainConfig,
    owners: &[Address],
    ledger: &LedgerSide,
    leaving: &BTreeMap<String, BaseUnits>,
    cold: &BTreeMap<String, BaseUnits>,
    problems: &mut Vec<String>,
) -> anyhow::Result<(Vec<String>, Vec<Holdings>)> {
    let rpc = connect(chain)?;
    let mut lines = Vec::new();
    let mut compared = Vec::new();
    for (asset, &(held, reorg_loss, owed)) in &ledger.0 {
        let Some(asset_ref) = chain.asset(asset) else {
            problems.push(format!(
                "the ledger holds {held} and owes merchants {owed} base units of {asset} on {}, which is no longer \
                 configured",
                chain.name
            ));
            continue;
        };
        let found = on_chain_total(&rpc, asset_ref.token_address, owners)
            .await
            .with_context(|| format!("reading {asset} balances"))?;
        let h = Holdings {
            chain: chain.name.clone(),
            asset: asset.clone(),
            decimals: asset_ref.decimals,
            held,
            reorg_loss,
            owed,
            on_chain: found,
            addresses: owners.len(),
            in_flight: leaving.get(asset).copied().unwrap_or_default(),
            cold: cold.get(asset).copied().unwrap_or_default(),
        };
        let d = h.decimals;
        if reorg_loss.is_zero() {
            lines.push(format!(
                "{} {asset}: ledger holds {}, {} addresses hold {}",
                chain.name,
                held.to_display(d),
                owners.len(),
                found.to_display(d)
            ));
        } else {
            lines.push(format!(
                "{} {asset}: ledger holds {}, of which a reorg took away {} (reorg_loss), {} addresses hold {}",
                chain.name,
                held.to_display(d),
                reorg_loss.to_display(d),
                owners.len(),
                found.to_display(d)
            ));
        }
        if !h.in_flight.is_zero() {
            lines.push(format!("{} {asset}: up to {} in flight", chain.name, h.in_flight.to_display(d)));
        }
        let excess = h.unheld_loss();
        if !excess.is_zero() {
            problems.push(format!(
                "on {} the reorg loss of {} {asset} swept into the treasury is more than the ledger holds ({}): {} of \
                 it is not explained by any holding",
                chain.name,
                reorg_loss.to_display(d),
                held.to_display(d),
                h.amount(excess)
            ));
        }
        if !h.cover_shortfall().is_zero() {
            let net = if reorg_loss.is_zero() {
                String::new()
            } else {
                format!(" ({} after the reorg loss)", held.checked_sub(reorg_loss).unwrap_or_default().to_display(d))
            };
            problems.push(format!(
                "on {} the ledger holds {} {asset}{net} at deposit addresses and the hot wallet, but they hold only {}",
                chain.name,
                held.to_display(d),
                found.to_display(d)
            ));
        }
        let short = h.solvency_shortfall();
        if !short.is_zero() {
            problems.push(format!(
                "on {} the platform is short by {} of what it owes merchants: they are owed {}, its addresses hold {} \
                 (and up to {} in flight)",
                chain.name,
                h.amount(short),
                owed.to_display(d),
                found.to_display(d),
                h.in_flight.to_display(d)
            ));
        }
        compared.push(h);
    }
    Ok((lines, compared))
}

// === cold storage ===

/// One asset's cold storage: the ledger's `cold` account against the cold address.
struct ColdHolding<'a> {
    chain: &'a ChainConfig,
    asset: String,
    address: Address,
    /// The platform's `cold` balance of the asset on the chain.
    ledger: BaseUnits,
}

/// The cold storages `chain` configures, with their ledger balances from the snapshot.
async fn cold_holdings<'a>(
    snapshot: &mut depositd_core::store::Conn,
    chain: &'a ChainConfig,
) -> anyhow::Result<Vec<ColdHolding<'a>>> {
    let mut holdings = Vec::new();
    for symbol in chain.cold_storage.keys() {
        let (Some(asset), Some((cold, _))) = (chain.asset(symbol), chain.cold_storage_of(symbol)?) else { continue };
        let account = Account::platform(AccountKind::Cold, chain.chain_id, asset.symbol);
        let ledger = depositd_core::ledger::balance(snapshot, &account).await?;
        holdings.push(ColdHolding { chain, asset: asset.symbol.to_owned(), address: cold.cold_address, ledger });
    }
    Ok(holdings)
}

/// The cold address holds at least what the ledger moved there (a shortfall goes to `problems`);
/// returns the line `ledger verify` prints.
async fn compare_cold(holding: &ColdHolding<'_>, problems: &mut Vec<String>) -> anyhow::Result<String> {
    let ColdHolding { chain, asset, address, ledger } = holding;
    let asset_ref = chain.asset(asset).context("a configured asset")?;
    let rpc = connect(chain)?;
    let found = on_chain_total(&rpc, asset_ref.token_address, &[*address])
        .await
        .with_context(|| format!("reading the {asset} balance of {address}"))?;
    let d = asset_ref.decimals;
    if found < *ledger {
        problems.push(format!(
            "on {} the ledger moved {} {asset} to the cold address {address}, but it holds only {}",
            chain.name,
            ledger.to_display(d),
            found.to_display(d)
        ));
    }
    Ok(format!(
        "{} {asset}: ledger moved {} to the cold address {address}, which holds {}",
        chain.name,
        ledger.to_display(d),
        found.to_display(d)
    ))
}

/// The chain's RPC client (failover across its `rpc_urls`; errors never show a URL's secret).
fn connect(chain: &ChainConfig) -> anyhow::Result<Arc<ChainRpc>> {
    Ok(Arc::new(ChainRpc::new(chain, Metrics::new())?))
}

/// One owner's balance of the native coin (`token` `None`) or a token, at `block`. A node's error
/// answer (it lacks the block) is final; a failure to get an answer moves to the next endpoint.
async fn balance_of(rpc: &ChainRpc, token: Option<Address>, owner: Address, block: BlockId) -> anyhow::Result<U256> {
    Ok(match token {
        None => rpc.once("eth_getBalance", |p| async move { p.get_balance(owner).block_id(block).await }).await?,
        Some(token) => {
            rpc.once("eth_call", |p| async move {
                Erc20Balance::new(token, p).balanceOf(owner).block(block).call().await.map_err(|error| match error {
                    alloy::contract::Error::TransportError(error) => error,
                    other => TransportErrorKind::custom(other),
                })
            })
            .await?
        }
    })
}

/// Every owner's balance at `block`, in `owners`' order, [`READ_CONCURRENCY`] queries at a time.
async fn balances_at(
    rpc: &Arc<ChainRpc>,
    token: Option<Address>,
    owners: &[Address],
    block: BlockId,
) -> anyhow::Result<Vec<U256>> {
    let mut out = Vec::with_capacity(owners.len());
    for chunk in owners.chunks(READ_CONCURRENCY) {
        let mut reads = tokio::task::JoinSet::new();
        for (i, owner) in chunk.iter().copied().enumerate() {
            let rpc = rpc.clone();
            reads.spawn(async move { (i, balance_of(&rpc, token, owner, block).await) });
        }
        let mut got = vec![U256::ZERO; chunk.len()];
        while let Some(joined) = reads.join_next().await {
            let (i, balance) = joined?;
            got[i] = balance.with_context(|| format!("balance of {}", chunk[i]))?;
        }
        out.extend(got);
    }
    Ok(out)
}

async fn on_chain_total(rpc: &Arc<ChainRpc>, token: Option<Address>, owners: &[Address]) -> anyhow::Result<BaseUnits> {
    let mut total = U256::ZERO;
    for balance in balances_at(rpc, token, owners, BlockId::latest()).await? {
        total = total.checked_add(balance).context("balances overflow 256 bits")?;
    }
    Ok(BaseUnits(total))
}

/// Exports an outcome as the `ledger` component's metrics.
pub fn export(metrics: &Metrics, outcome: &Reconciliation) {
    metrics.ledger_verify_ok.set(outcome.gauge());
    metrics.ledger_verify_problems.set(outcome.report.problems.len() as i64);
    // Whole units for monitoring; the checks themselves are exact.
    let whole = |amount: BaseUnits, decimals: u8| amount.to_display(decimals).parse().unwrap_or(f64::NAN);
    metrics.ledger_reorg_loss.reset();
    for loss in &outcome.reorg_losses {
        metrics
            .ledger_reorg_loss
            .with_label_values(&[loss.chain.as_str(), loss.asset.as_str()])
            .set(whole(loss.amount, loss.decimals));
    }
    // Like the reorg loss: a chain or asset no longer compared must not keep its last value.
    metrics.ledger_solvency_shortfall.reset();
    for h in &outcome.holdings {
        metrics
            .ledger_solvency_shortfall
            .with_label_values(&[h.chain.as_str(), h.asset.as_str()])
            .set(whole(h.solvency_shortfall(), h.decimals));
    }
    for s in &outcome.surplus {
        let labels = [s.chain.as_str(), s.asset.as_str()];
        metrics
            .ledger_unexplained_balance
            .with_label_values(&labels)
            .set(s.unexplained.to_display(s.decimals).parse().unwrap_or(f64::NAN));
        let named = if s.fails() { s.holders.len() } else { 0 };
        metrics.ledger_unexplained_addresses.with_label_values(&labels).set(named as i64);
    }
}

/// The daemon's `ledger` component: reconciles every `interval` and exports the outcome.
pub async fn run_periodically(
    store: Store,
    config: std::sync::Arc<Config>,
    wallet: std::sync::Arc<HdWallet>,
    metrics: Metrics,
    interval: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let on_chain = config.settings.ledger.verify_on_chain;
    loop {
        match reconcile(&store, &config, &wallet, on_chain).await {
            Ok(outcome) => {
                export(&metrics, &outcome);
                if outcome.is_ok() {
                    tracing::info!(entries = outcome.report.entries, "ledger reconciled");
                } else if outcome.report.is_ok() {
                    tracing::warn!(unchecked = ?outcome.unchecked, "ledger reconciled, but not against every chain");
                } else {
                    tracing::error!(problems = ?outcome.report.problems, "ledger reconciliation found problems");
                }
            }
            Err(error) => {
                // Could not run (database or RPC down): not a verdict on the ledger.
                metrics.ledger_verify_ok.set(-1);
                tracing::warn!(error = %format!("{error:#}"), "ledger reconciliation could not run");
            }
        }
        metrics.ledger_verify_timestamp_seconds.set(now_ms().div_euclid(1000));
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(held: u64, reorg_loss: u64, on_chain: u64) -> Holdings {
        Holdings {
            chain: "anvil".into(),
            asset: "USDC".into(),
            decimals: 6,
            held: BaseUnits::from(held),
            reorg_loss: BaseUnits::from(reorg_loss),
            owed: BaseUnits::ZERO,
            on_chain: BaseUnits::from(on_chain),
            addresses: 1,
            in_flight: BaseUnits::ZERO,
            cold: BaseUnits::ZERO,
        }
    }

    #[test]
    fn what_went_to_cold_storage_counts_towards_what_merchants_are_owed() {
        // Owed 30: the deposit addresses and the treasury hold 10, the cold address 20.
        let mut h = holdings(10, 0, 10);
        h.owed = BaseUnits::from(30u64);
        assert_eq!(h.solvency_shortfall(), BaseUnits::from(20u64), "without the cold account: short by 20");
        h.cold = BaseUnits::from(20u64);
        assert_eq!(h.solvency_shortfall(), BaseUnits::ZERO);
        h.cold = BaseUnits::from(15u64);
        assert_eq!(h.solvency_shortfall(), BaseUnits::from(5u64));
    }

    #[test]
    fn the_cover_check_nets_the_swept_loss_and_reports_one_larger_than_held() {
        // Held 30, of which 20 a reorg took away: the chain must hold 10.
        assert_eq!(holdings(30, 20, 10).cover_shortfall(), BaseUnits::ZERO);
        assert_eq!(holdings(30, 20, 4).cover_shortfall(), BaseUnits::from(6u64));
        assert_eq!(holdings(30, 20, 10).unheld_loss(), BaseUnits::ZERO);
        // A loss larger than what is held is not silently dropped.
        assert_eq!(holdings(5, 20, 0).unheld_loss(), BaseUnits::from(15u64));
    }
}
