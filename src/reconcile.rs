//! Ledger reconciliation in full: the store's own checks (`depositd_core::ledger::verify`) and,
//! against each chain, that what sits at deposit addresses and in the hot wallet covers what the
//! ledger says the platform holds. Run by `depositd ledger verify` and periodically by the
//! daemon's `ledger` component, which exports the outcome as metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use anyhow::Context;
use depositd_core::config::{ChainConfig, Config};
use depositd_core::ledger::verify::{self, Report};
use depositd_core::metrics::Metrics;
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs::{self, Purpose};
use depositd_core::store::{Store, deposits};
use depositd_core::time::now_ms;
use depositd_core::wallet::HdWallet;
use tokio_util::sync::CancellationToken;

alloy::sol! {
    #[sol(rpc)]
    interface Erc20Balance {
        function balanceOf(address owner) external view returns (uint256);
    }
}

/// How long one balance query may take.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's report and the on-chain findings.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub report: Report,
    /// One line per asset compared on chain: held by the ledger vs found on chain.
    pub on_chain: Vec<String>,
    /// Chains whose balances could not be read (RPC down): not a verdict, but not a pass.
    pub unchecked: Vec<String>,
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
                out.push_str(", and on-chain funds cover what the ledger holds");
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

/// Runs every check; with `on_chain`, also compares balances on each enabled chain. The store is
/// read in one snapshot and the chains after it: funds reach a chain before the ledger counts
/// them, so the later reading can show more than the snapshot holds, not less.
pub async fn reconcile(
    store: &Store,
    config: &Config,
    wallet: &HdWallet,
    on_chain: bool,
) -> anyhow::Result<Reconciliation> {
    let mut snapshot = store.begin_snapshot().await?;
    let mut report = verify::verify(&mut snapshot).await?;
    let mut custody: Vec<(&ChainConfig, Vec<String>, BTreeMap<String, BaseUnits>)> = Vec::new();
    if on_chain {
        for chain in &config.chains {
            let addresses = deposits::custody_addresses(&mut snapshot, chain.chain_id).await?;
            let leaving = in_flight_outflow(&mut snapshot, chain).await?;
            custody.push((chain, addresses, leaving));
        }
    }
    snapshot.rollback().await?;
    let mut lines = Vec::new();
    let mut unchecked = Vec::new();
    for (chain, addresses, leaving) in custody {
        let held: Vec<(String, BaseUnits)> = report
            .held
            .iter()
            .filter(|((chain_id, _), amount)| *chain_id == chain.chain_id && !amount.is_zero())
            .map(|((_, asset), amount)| (asset.clone(), *amount))
            .collect();
        if held.is_empty() {
            continue;
        }
        match compare_chain(chain, wallet, &addresses, &held, &leaving, &mut report.problems).await {
            Ok(mut compared) => lines.append(&mut compared),
            Err(error) => unchecked.push(format!("{}: {error:#}", chain.name)),
        }
    }
    Ok(Reconciliation { report, on_chain: lines, unchecked })
}

/// What the settler's unconfirmed transactions may already have taken from our addresses on
/// chain before the ledger records it: payments out (payouts, refunds, forwards) and every
/// transaction's gas budget. Moves between deposit addresses and the treasury stay ours.
async fn in_flight_outflow(
    snapshot: &mut depositd_core::store::Conn,
    chain: &ChainConfig,
) -> anyhow::Result<BTreeMap<String, BaseUnits>> {
    let mut leaving: BTreeMap<String, BaseUnits> = BTreeMap::new();
    let overflow = || anyhow::anyhow!("in-flight amounts overflow");
    for tx in chain_txs::in_flight(snapshot, chain.chain_id).await? {
        if matches!(tx.purpose, Purpose::Payout | Purpose::Refund | Purpose::Passthrough) {
            let total = leaving.entry(tx.asset.clone()).or_default();
            *total = total.checked_add(tx.value).ok_or_else(overflow)?;
        }
        let total = leaving.entry(chain.native.symbol.clone()).or_default();
        *total = total.checked_add(tx.max_gas_cost).ok_or_else(overflow)?;
    }
    Ok(leaving)
}

/// Compares one chain's on-chain balances with what the ledger holds there (less what transactions
/// in flight may have taken already); shortfalls go to `problems`, a line per asset is returned.
async fn compare_chain(
    chain: &ChainConfig,
    wallet: &HdWallet,
    addresses: &[String],
    held: &[(String, BaseUnits)],
    leaving: &BTreeMap<String, BaseUnits>,
    problems: &mut Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let url = chain.rpc_urls.first().with_context(|| format!("chain {} has no RPC URL", chain.name))?;
    let provider = ProviderBuilder::new().connect_http(url.expose().parse()?).erased();
    let mut owners: Vec<Address> = Vec::with_capacity(addresses.len() + 1);
    for address in addresses {
        owners.push(address.parse().with_context(|| format!("stored deposit address {address}"))?);
    }
    owners.push(wallet.treasury().address());
    let mut lines = Vec::new();
    for (asset, held) in held {
        let Some(asset_ref) = chain.asset(asset) else {
            problems.push(format!(
                "the ledger holds {held} base units of {asset} on {}, which is no longer configured",
                chain.name
            ));
            continue;
        };
        let found = on_chain_total(&provider, asset_ref.token_address, &owners)
            .await
            .with_context(|| format!("reading {asset} balances"))?;
        let d = asset_ref.decimals;
        lines.push(format!(
            "{} {asset}: ledger holds {}, {} addresses hold {}",
            chain.name,
            held.to_display(d),
            owners.len(),
            found.to_display(d)
        ));
        let in_flight = leaving.get(asset).copied().unwrap_or_default();
        if !in_flight.is_zero() {
            lines.push(format!("{} {asset}: up to {} in flight", chain.name, in_flight.to_display(d)));
        }
        if found.checked_add(in_flight).unwrap_or(found) < *held {
            problems.push(format!(
                "on {} the ledger holds {} {asset} at deposit addresses and the hot wallet, but they hold only {}",
                chain.name,
                held.to_display(d),
                found.to_display(d)
            ));
        }
    }
    Ok(lines)
}

async fn on_chain_total(
    provider: &DynProvider,
    token: Option<Address>,
    owners: &[Address],
) -> anyhow::Result<BaseUnits> {
    let mut total = U256::ZERO;
    for owner in owners {
        let balance = match token {
            None => tokio::time::timeout(RPC_TIMEOUT, provider.get_balance(*owner)).await??,
            Some(token) => {
                let contract = Erc20Balance::new(token, provider.clone());
                tokio::time::timeout(RPC_TIMEOUT, contract.balanceOf(*owner).call()).await??
            }
        };
        total = total.checked_add(balance).context("balances overflow 256 bits")?;
    }
    Ok(BaseUnits(total))
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
                metrics.ledger_verify_ok.set(outcome.gauge());
                metrics.ledger_verify_problems.set(outcome.report.problems.len() as i64);
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
