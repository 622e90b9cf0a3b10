//! The treasury (hot wallet) from the operator's side: recording outside funding in the ledger,
//! checked against the chain, and resuming a paused signer.
//!
//! Gas for sweeps, top-ups and token payouts is paid from the treasury's native coin. Money the
//! operator sends there from outside is not a merchant's: `depositd treasury fund` records it as
//! `treasury_funding` (operator capital -> hot wallet), once per transaction and asset, after
//! reading the transaction's receipt: it must be confirmed, successful, and pay the treasury.

use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::sol_types::SolEvent;
use anyhow::{Context, bail, ensure};
use depositd_core::config::ChainConfig;
use depositd_core::ledger::{Posted, settlement};
use depositd_core::metrics::Metrics;
use depositd_core::money::BaseUnits;
use depositd_core::store::{Store, chain_txs, deposit_addresses};
use depositd_rpc::ChainRpc;

alloy::sol! {
    event Transfer(address indexed from, address indexed to, uint256 value);
}

/// One asset a funding transaction brought to the treasury.
#[derive(Debug, Clone, PartialEq)]
pub struct Funding {
    pub asset: String,
    pub amount: BaseUnits,
    /// False when this transaction and asset were recorded before.
    pub new: bool,
}

/// Reads `tx_hash` on `chain` and records what it paid `treasury` (native coin and allow-listed
/// tokens) as operator funding. Refuses unconfirmed, failed and unrelated transactions.
pub async fn record_funding(
    store: &Store,
    chain: &ChainConfig,
    treasury: Address,
    tx_hash: &str,
) -> anyhow::Result<Vec<Funding>> {
    let hash: B256 = tx_hash.parse().with_context(|| format!("{tx_hash:?} is not a transaction hash"))?;
    let rpc = ChainRpc::new(chain, Metrics::new())?;
    let receipt = rpc
        .call("eth_getTransactionReceipt", |p| async move { p.get_transaction_receipt(hash).await })
        .await
        .context("cannot read the receipt")?
        .with_context(|| format!("transaction {tx_hash} is not mined on {}", chain.name))?;
    ensure!(receipt.status(), "transaction {tx_hash} failed on chain; it funded nothing");
    let head = rpc.head().await.context("cannot read the head block")?;
    let block = receipt.block_number.context("the receipt has no block number")?;
    ensure!(
        block + chain.confirmations <= head + 1,
        "transaction {tx_hash} has {} of the {} confirmations {} requires; try again shortly",
        head + 1 - block.min(head + 1),
        chain.confirmations,
        chain.name
    );
    let tx = rpc
        .call("eth_getTransactionByHash", |p| async move { p.get_transaction_by_hash(hash).await })
        .await
        .context("cannot read the transaction")?
        .with_context(|| format!("transaction {tx_hash} vanished"))?;

    {
        // Money depositd moved itself (a sweep into the treasury) is not the operator's capital.
        let mut conn = store.conn().await?;
        let sender = tx.inner.signer().to_checksum(None);
        if chain_txs::is_ours(&mut conn, &format!("{hash:#x}")).await?
            || deposit_addresses::index_of(&mut conn, &sender).await?.is_some()
        {
            bail!("transaction {tx_hash} was sent by depositd itself (a sweep), not funding from outside");
        }
    }
    let mut found: Vec<(String, BaseUnits)> = Vec::new();
    if tx.inner.to() == Some(treasury) && !tx.inner.value().is_zero() {
        found.push((chain.native.symbol.clone(), BaseUnits(tx.inner.value())));
    }
    for log in receipt.inner.logs() {
        let Some(token) = chain.tokens.iter().find(|t| t.address == log.address()) else { continue };
        if let Ok(transfer) = Transfer::decode_log_data(log.data())
            && transfer.to == treasury
            && !transfer.value.is_zero()
        {
            found.push((token.symbol.clone(), BaseUnits(transfer.value)));
        }
    }
    if found.is_empty() {
        bail!("transaction {tx_hash} pays the treasury {treasury} nothing on {}", chain.name);
    }
    let mut recorded = Vec::new();
    let mut db = store.begin().await?;
    for (asset, amount) in found {
        let posted =
            settlement::treasury_funding(&mut db, chain.chain_id, &asset, amount, &format!("{hash:#x}")).await?;
        recorded.push(Funding { asset, amount, new: matches!(posted, Posted::New(_)) });
    }
    db.commit().await.context("cannot commit")?;
    Ok(recorded)
}

/// Resumes a signer paused after a transaction it did not sign used its nonce: the settler fails
/// (and releases) what that outside transaction replaced, adopts the chain's nonce and signs again.
/// Returns the adopted nonce.
pub async fn resume_signer(
    store: &Store,
    config: &depositd_core::config::Config,
    wallet: std::sync::Arc<depositd_core::wallet::HdWallet>,
    chain: &ChainConfig,
    signer: Address,
) -> anyhow::Result<u64> {
    let settler = depositd_settler::Settler::new(
        chain.clone(),
        store.clone(),
        wallet.clone(),
        config.settings.settler.clone(),
        config.settings.api.public_url.clone(),
        depositd_core::invoice::SessionSigner::new(wallet.session_key()),
        depositd_core::metrics::Metrics::new(),
    )?;
    Ok(settler.resume_signer(signer).await?)
}
