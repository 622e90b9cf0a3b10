//! What an outgoing transaction's fate does: ledger entries, payout and invoice states, and
//! webhooks. Every function runs inside the database transaction that moves the transaction's
//! state, so the chain's record, the ledger and the events never disagree; the ledger's
//! idempotency keys make a repeated call a no-op.

use depositd_core::invoice::{InvoiceResource, InvoiceStatus};
use depositd_core::ledger::{AccountKind, settlement};
use depositd_core::money::BaseUnits;
use depositd_core::payout::PayoutResource;
use depositd_core::store::chain_txs::{ChainTx, Purpose};
use depositd_core::store::payouts::{self, Payout, PayoutKind, PayoutStatus};
use depositd_core::store::{Conn, StoreError, events, invoices};
use serde::Serialize;
use uuid::Uuid;

use crate::{SettleError, Settler};

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

async fn payout_of(db: &mut Conn, tx: &ChainTx) -> Result<Payout, SettleError> {
    let id =
        tx.payout_id.ok_or_else(|| StoreError::Corrupt(format!("payout transaction {} names no payout", tx.id)))?;
    Ok(payouts::get_any(db, id).await?.ok_or_else(|| StoreError::Corrupt(format!("payout {id} is missing")))?)
}

async fn payout_event(
    db: &mut Conn,
    settler: &Settler,
    payout_id: Uuid,
    event: &str,
    tx_hash: Option<&str>,
) -> Result<(), SettleError> {
    let p = payouts::get_any(db, payout_id).await?.ok_or_else(|| StoreError::Corrupt("payout vanished".into()))?;
    let resource =
        PayoutResource::build(&p, &settler.chain.name, settler.decimals_of(&p.asset), tx_hash.map(str::to_owned));
    events::record(db, p.merchant_id, event, p.kind.as_str(), p.id, &resource).await?;
    Ok(())
}

/// The first broadcast was recorded: a payout becomes `submitted`.
pub(crate) async fn submitted(
    db: &mut Conn,
    settler: &Settler,
    tx: &ChainTx,
    tx_hash: &str,
) -> Result<(), SettleError> {
    if !matches!(tx.purpose, Purpose::Payout | Purpose::Refund) {
        return Ok(());
    }
    let p = payout_of(db, tx).await?;
    if payouts::transition(db, p.id, PayoutStatus::Pending, PayoutStatus::Submitted, None, None).await? {
        payout_event(db, settler, p.id, "payout.sent", Some(tx_hash)).await?;
    }
    Ok(())
}

/// The transaction is confirmed (status 1, `confirmations` deep).
pub(crate) async fn confirmed(db: &mut Conn, settler: &Settler, tx: &ChainTx) -> Result<(), SettleError> {
    let native = settler.native_symbol().to_owned();
    let gas = tx.gas_cost.unwrap_or_default();
    match tx.purpose {
        Purpose::Payout | Purpose::Refund => {
            let p = payout_of(db, tx).await?;
            // A native payout's gas is the merchant's, within its reserve (the budget caps it);
            // a token payout's gas is the operator's.
            let merchant_gas = if tx.token_address.is_none() { gas.min(p.fee_reserve) } else { BaseUnits::ZERO };
            settlement::payout_sent(db, &p, merchant_gas).await?;
            let operator_gas = gas.checked_sub(merchant_gas).unwrap_or_default();
            settlement::operator_gas(db, tx, &native, AccountKind::HotWallet, operator_gas).await?;
            let moved = payouts::transition(
                db,
                p.id,
                PayoutStatus::Submitted,
                PayoutStatus::Confirmed,
                Some(merchant_gas),
                None,
            )
            .await?
                || payouts::transition(
                    db,
                    p.id,
                    PayoutStatus::Pending,
                    PayoutStatus::Confirmed,
                    Some(merchant_gas),
                    None,
                )
                .await?;
            if moved {
                payout_event(db, settler, p.id, "payout.confirmed", tx.mined_tx_hash.as_deref()).await?;
                if p.kind == PayoutKind::Refund {
                    refund_confirmed(db, settler, &p).await?;
                }
            }
        }
        Purpose::GasTopup => {
            settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, &native, AccountKind::HotWallet, gas).await?;
        }
        Purpose::Sweep => {
            settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, &native, AccountKind::Custody, gas).await?;
        }
        Purpose::Passthrough => {
            settlement::movement(db, tx).await?;
            settlement::operator_gas(db, tx, &native, AccountKind::Custody, gas).await?;
            if let Some(merchant_id) = tx.merchant_id {
                let resource = SettlementResource {
                    object: "settlement",
                    id: tx.id,
                    invoice_id: tx.invoice_id,
                    chain: &settler.chain.name,
                    chain_id: tx.chain_id,
                    asset: &tx.asset,
                    amount: tx.value.to_display(settler.decimals_of(&tx.asset)),
                    amount_base_units: tx.value,
                    destination: &tx.to_address,
                    tx_hash: tx.mined_tx_hash.as_deref(),
                };
                events::record(db, merchant_id, "settlement.forwarded", "settlement", tx.id, &resource).await?;
            }
        }
    }
    Ok(())
}

/// A refund confirmed: the invoice is `refunded` when its confirmed refunds reach what was
/// paid, else `partially_refunded`.
async fn refund_confirmed(db: &mut Conn, settler: &Settler, refund: &Payout) -> Result<(), SettleError> {
    let Some(invoice_id) = refund.invoice_id else { return Ok(()) };
    let Some(mut invoice) = invoices::get_any(db, invoice_id).await? else {
        return Err(StoreError::Corrupt(format!("refund {} names a missing invoice", refund.id)).into());
    };
    let mut refunded = BaseUnits::ZERO;
    for r in payouts::refunds_of(db, invoice_id).await? {
        if r.status == PayoutStatus::Confirmed {
            refunded = refunded.checked_add(r.amount).unwrap_or(refunded);
        }
    }
    let read = invoice.clone();
    invoice.status = if refunded >= invoice.amount_paid_base_units {
        InvoiceStatus::Refunded
    } else {
        InvoiceStatus::PartiallyRefunded
    };
    invoices::update_payment_state(db, &read, &invoice).await?;
    let resource = InvoiceResource::build(&invoice, Vec::new(), &settler.public_url, &settler.sessions);
    events::record(db, invoice.merchant_id, "invoice.refunded", "invoice", invoice.id, &resource).await?;
    Ok(())
}

/// The transaction failed: reverted on chain (`gas` is what it still cost), or never mined
/// (`None`). A payout's reservation is released; a sweep or forward is planned again later.
pub(crate) async fn failed(
    db: &mut Conn,
    settler: &Settler,
    tx: &ChainTx,
    gas: Option<BaseUnits>,
    reason: &str,
) -> Result<(), SettleError> {
    let native = settler.native_symbol().to_owned();
    let gas = gas.unwrap_or_default();
    match tx.purpose {
        Purpose::Payout | Purpose::Refund => {
            let p = payout_of(db, tx).await?;
            let merchant_gas = if tx.token_address.is_none() { gas.min(p.fee_reserve) } else { BaseUnits::ZERO };
            settlement::release_payout(db, &p, merchant_gas, reason).await?;
            let operator_gas = gas.checked_sub(merchant_gas).unwrap_or_default();
            settlement::operator_gas(db, tx, &native, AccountKind::HotWallet, operator_gas).await?;
            let mut moved = false;
            for from in [PayoutStatus::Pending, PayoutStatus::Submitted] {
                moved |=
                    payouts::transition(db, p.id, from, PayoutStatus::Failed, Some(merchant_gas), Some(reason)).await?;
            }
            if moved {
                payout_event(db, settler, p.id, "payout.failed", tx.mined_tx_hash.as_deref()).await?;
            }
        }
        Purpose::GasTopup => {
            settlement::operator_gas(db, tx, &native, AccountKind::HotWallet, gas).await?;
        }
        Purpose::Sweep | Purpose::Passthrough => {
            settlement::operator_gas(db, tx, &native, AccountKind::Custody, gas).await?;
        }
    }
    Ok(())
}
