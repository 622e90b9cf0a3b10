//! What an outgoing transaction's fate does: ledger entries, payout and invoice states, and
//! webhooks (a cold transfer posts hot wallet -> cold, and its gas). Every function runs inside the database transaction that moves the transaction's
//! state, so the chain's record, the ledger and the events never disagree; the ledger's
//! idempotency keys make a repeated call a no-op. A payout's or refund's fate is the payout
//! lifecycle's ([`depositd_core::payout`]); sweeps, gas top-ups and pass-through forwards are
//! the settler's own.

use depositd_core::chain_tx::{ChainTx, Purpose};
use depositd_core::ledger::{AccountKind, Posted, settlement};
use depositd_core::money::BaseUnits;
use depositd_core::outbox::{self, EventType, Subject};
use depositd_core::payouts::{self, Context};
use depositd_core::resolutions;
use depositd_core::store::Tx;
use serde::Serialize;
use uuid::Uuid;

use crate::SettleError;

/// The `settlement.forwarded` event's data.
#[derive(Debug, Serialize)]
struct SettlementResource<'a> {
    object: &'static str,
    id: Uuid,
    invoice_id: Option<Uuid>,
    chain: &'a str,
    chain_id: u64,
    asset: &'a str,
    amount: String,
    amount_base_units: BaseUnits,
    destination: &'a str,
    tx_hash: Option<&'a str>,
}

/// The first broadcast was recorded: a payout becomes `submitted`.
pub(crate) async fn submitted(db: &mut Tx, ctx: Context<'_>, tx: &ChainTx, tx_hash: &str) -> Result<(), SettleError> {
    if matches!(tx.purpose, Purpose::Payout | Purpose::Refund) && !resolutions::is_refund(tx) {
        payouts::submitted(db, ctx, tx, tx_hash).await?;
    }
    Ok(())
}

/// The transaction is confirmed (status 1, `confirmations` deep).
pub(crate) async fn confirmed(db: &mut Tx, ctx: Context<'_>, tx: &ChainTx) -> Result<(), SettleError> {
    let native = ctx.chain.native.symbol.as_str();
    let gas = tx.gas_cost.unwrap_or_default();
    match tx.purpose {
        // A refund out of suspense (an operator's resolution) has no payout.
        Purpose::Refund if resolutions::is_refund(tx) => resolutions::refund_confirmed(db, ctx.chain, tx).await?,
        Purpose::Payout | Purpose::Refund => payouts::confirmed(db, ctx, tx).await?,
        Purpose::GasTopup | Purpose::ColdTransfer => {
            settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, native, AccountKind::HotWallet, gas).await?;
        }
        Purpose::Sweep => {
            settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, native, AccountKind::Custody, gas).await?;
        }
        Purpose::Passthrough => {
            let posted = settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, native, AccountKind::Custody, gas).await?;
            // Confirmed again after a deep reorg took it away: announced once.
            if let (Some(merchant_id), Posted::New(_)) = (tx.merchant_id, posted) {
                let resource = SettlementResource {
                    object: "settlement",
                    id: tx.id,
                    invoice_id: tx.invoice_id,
                    chain: &ctx.chain.name,
                    chain_id: tx.chain_id,
                    asset: &tx.asset,
                    amount: tx.value.to_display(ctx.decimals_of(&tx.asset)),
                    amount_base_units: tx.value,
                    destination: &tx.to_address,
                    tx_hash: tx.mined_tx_hash.as_deref(),
                };
                outbox::record(
                    db,
                    merchant_id,
                    EventType::SettlementForwarded,
                    Subject::new("settlement", tx.id),
                    &resource,
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// The transaction failed: reverted on chain (`gas` is what it still cost), or never mined
/// (`None`). A payout's reservation is released; a sweep or forward is planned again later.
pub(crate) async fn failed(
    db: &mut Tx,
    ctx: Context<'_>,
    tx: &ChainTx,
    gas: Option<BaseUnits>,
    reason: &str,
) -> Result<(), SettleError> {
    let native = ctx.chain.native.symbol.as_str();
    match tx.purpose {
        Purpose::Refund if resolutions::is_refund(tx) => {
            resolutions::refund_failed(db, ctx.chain, tx, gas, reason).await?
        }
        Purpose::Payout | Purpose::Refund => payouts::failed(db, ctx, tx, gas, reason).await?,
        Purpose::GasTopup | Purpose::ColdTransfer => {
            settlement::operator_gas(db, tx, native, AccountKind::HotWallet, gas.unwrap_or_default()).await?;
        }
        Purpose::Sweep | Purpose::Passthrough => {
            settlement::operator_gas(db, tx, native, AccountKind::Custody, gas.unwrap_or_default()).await?;
        }
    }
    Ok(())
}
