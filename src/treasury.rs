//! The treasury (hot wallet) from the operator's side: recording outside funding in the ledger,
//! checked against the chain, and resuming a paused signer.
//!
//! Gas for sweeps, top-ups and token payouts is paid from the treasury's native coin. Money the
//! operator sends there from outside is not a merchant's: `depositd treasury fund` records it as
//! `treasury_funding` (operator capital -> hot wallet), once per transaction and asset, after
//! reading the transaction's receipt: it must be confirmed, successful, and pay the treasury.

use alloy::consensus::Transaction as _;
use alloy::primitives::{Address, B256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::sol_types::SolEvent;
use anyhow::{Context, bail, ensure};
use depositd_core::config::ChainConfig;
use depositd_core::ledger::{Posted, settlement};
use depositd_core::money::BaseUnits;
use depositd_core::store::{Store, chain_txs};

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
    let url = chain.rpc_urls.first().context("the chain has no RPC URL")?;
    let provider = ProviderBuilder::new().connect_http(url.parse().context("invalid RPC URL")?);
    let receipt = provider
        .get_transaction_receipt(hash)
        .await
        .context("cannot read the receipt")?
        .with_context(|| format!("transaction {tx_hash} is not mined on {}", chain.name))?;
    ensure!(receipt.status(), "transaction {tx_hash} failed on chain; it funded nothing");
    let head = provider.get_block_number().await.context("cannot read the head block")?;
    let block = receipt.block_number.context("the receipt has no block number")?;
    ensure!(
        block + chain.confirmations <= head + 1,
        "transaction {tx_hash} has {} of the {} confirmations {} requires; try again shortly",
        head + 1 - block.min(head + 1),
        chain.confirmations,
        chain.name
    );
    let tx = provider
        .get_transaction_by_hash(hash)
        .await
        .context("cannot read the transaction")?
        .with_context(|| format!("transaction {tx_hash} vanished"))?;

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

/// Resumes a signer paused after an outside transaction used its nonce: its next nonce becomes
/// the chain's, and signing resumes. Returns the adopted nonce.
pub async fn resume_signer(store: &Store, chain: &ChainConfig, signer: Address) -> anyhow::Result<u64> {
    let url = chain.rpc_urls.first().context("the chain has no RPC URL")?;
    let provider = ProviderBuilder::new().connect_http(url.parse().context("invalid RPC URL")?);
    let pending = provider.get_transaction_count(signer).pending().await.context("cannot read the nonce")?;
    let address = signer.to_checksum(None);
    let mut db = store.begin().await?;
    let Some((next, _)) = chain_txs::lock_nonce(&mut db, chain.chain_id, &address).await? else {
        bail!("{address} has never signed on {}", chain.name);
    };
    chain_txs::set_next_nonce(&mut db, chain.chain_id, &address, pending.max(next)).await?;
    chain_txs::set_paused(&mut db, chain.chain_id, &address, None).await?;
    db.commit().await.context("cannot commit")?;
    Ok(pending.max(next))
}
