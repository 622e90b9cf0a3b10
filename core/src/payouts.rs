//! Payouts and refunds: the one place their lifecycle rules are written (the types and the
//! resource are `crate::payout`). The API creates and cancels, the settler moves them to their
//! end states; both call these functions, inside the database transaction that makes the change,
//! so the payout's state, its ledger entries, its chain transaction and its events never
//! disagree (the ledger's idempotency keys make a repeated call a no-op).
//!
//! - [`create`]: a payout (or a refund of an invoice) is stored with the chain transaction's
//!   intent that will send it and its reservation (`payout_reserve`: available -> reserved, the
//!   amount plus a native payout's network fee reserve), and announced (`payout.created`).
//! - [`cancel`]: only while the intent is unsigned (the settler signs under the same lock); the
//!   reservation is released (`payout.cancelled`).
//! - [`submitted`], [`confirmed`], [`failed`]: what the sending transaction's fate does to the
//!   payout (`payout.sent`, `payout.confirmed`, `payout.failed`) and, for a refund, to its
//!   invoice (`refunded` / `partially_refunded`, `invoice.refunded`).

use alloy::primitives::Address;
use uuid::Uuid;

use crate::chain_tx::{ChainTx, Purpose, TxState};
use crate::config::{ChainConfig, SettlerSettings};
use crate::invoice::{Invoice, InvoiceResource, InvoiceStatus, SessionSigner};
use crate::ledger::{self, Account, AccountKind, LedgerError, Posted, settlement};
use crate::money::BaseUnits;
use crate::outbox::{self, EventType, Subject};
use crate::payout::{Payout, PayoutKind, PayoutResource, PayoutStatus};
use crate::store::chain_txs;
use crate::store::payouts;
use crate::store::{Conn, StoreError, Tx, invoices};
use crate::time::now_ms;

/// What the lifecycle functions need besides the transaction: the payout's chain, the settler's
/// fee policy (a native payout's reserve), the treasury that sends, and what renders an invoice
/// for a refund's event.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub chain: &'a ChainConfig,
    pub settler: &'a SettlerSettings,
    pub treasury: Address,
    pub public_url: &'a str,
    pub sessions: &'a SessionSigner,
}

impl Context<'_> {
    /// The decimals of `asset` on this chain (18 for one no longer configured).
    pub fn decimals_of(&self, asset: &str) -> u8 {
        self.chain.asset(asset).map(|a| a.decimals).unwrap_or(18)
    }

    fn resource(&self, payout: &Payout, tx_hash: Option<&str>) -> PayoutResource {
        PayoutResource::build(payout, &self.chain.name, self.decimals_of(&payout.asset), tx_hash.map(str::to_owned))
    }
}

/// Why a payout cannot be created or cancelled. Each is the merchant's to fix, except `Store`
/// and `Ledger`, which are ours.
#[derive(Debug, thiserror::Error)]
pub enum PayoutError {
    #[error("a payout or refund with this external_id already exists")]
    ExternalIdTaken,
    /// The available balance does not cover the amount and its network fee reserve.
    #[error("{0}")]
    InsufficientFunds(String),
    /// A refund larger than what the invoice was paid and has not had refunded.
    #[error("{0}")]
    RefundExceedsPaid(String),
    /// The refund names a chain or asset (`param`) the invoice did not offer.
    #[error("{message}")]
    RefundOptionNotOffered { param: &'static str, message: String },
    /// A multi-option invoice was paid in several options and the refund names none of them.
    #[error("{0}")]
    RefundOptionAmbiguous(String),
    /// No recent network fee reading, so a native payout's reserve cannot be computed.
    #[error("{0}")]
    FeeEstimateUnavailable(String),
    #[error("{0}")]
    NotCancellable(String),
    #[error("no such payout")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(LedgerError),
}

impl From<LedgerError> for PayoutError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store(e) => PayoutError::Store(e),
            other => PayoutError::Ledger(other),
        }
    }
}

/// A validated payout or refund request (amount in base units, destination parsed).
#[derive(Debug, Clone)]
pub struct NewPayout {
    pub kind: PayoutKind,
    pub merchant_id: Uuid,
    /// The invoice a refund returns money for (what it was paid bounds the refund).
    pub refund_of: Option<Invoice>,
    pub asset: String,
    pub decimals: u8,
    /// `None` for the native coin.
    pub token_address: Option<Address>,
    pub amount: BaseUnits,
    pub destination: Address,
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a native payout reserves for its network fee, from the settler's latest fee reading.
async fn native_fee_reserve(conn: &mut Conn, ctx: Context<'_>) -> Result<BaseUnits, PayoutError> {
    let settler = ctx.settler;
    let max_age_ms = i64::try_from(settler.fee_estimate_max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    match chain_txs::fee_estimate(conn, ctx.chain.chain_id).await? {
        Some((base_fee, tip, updated_at)) if now_ms().saturating_sub(updated_at) <= max_age_ms => {
            Ok(crate::gas::native_payout_fee_reserve(base_fee, tip, settler))
        }
        Some(_) => Err(PayoutError::FeeEstimateUnavailable(format!(
            "the network fee estimate for {} is older than {} seconds, so the fee reserve cannot be computed; \
             retry shortly",
            ctx.chain.name, settler.fee_estimate_max_age_secs
        ))),
        None => Err(PayoutError::FeeEstimateUnavailable(format!(
            "there is no network fee estimate for {} yet; retry shortly",
            ctx.chain.name
        ))),
    }
}

/// What a refund of an invoice is paid in: the chain and asset of one of its options (the
/// invoice's own for an invoice payable one way), and what was paid in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundTarget {
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    /// `None` for the native coin.
    pub token_address: Option<Address>,
    pub decimals: u8,
    /// Confirmed payments to the invoice in this chain and asset.
    pub paid: BaseUnits,
}

/// The option a refund of `invoice` is paid in: a refund goes back in the chain and asset that
/// were paid. `chain` and `asset` (the request's, if any) narrow the invoice's options; among
/// those left, the one paid is chosen when only one was, and several paid is ambiguous. An
/// invoice payable one way is refunded in its own chain and asset, as ever (naming another is
/// refused).
pub fn refund_target(invoice: &Invoice, chain: Option<&str>, asset: Option<&str>) -> Result<RefundTarget, PayoutError> {
    let primary = RefundTarget {
        chain: invoice.chain.clone(),
        chain_id: invoice.chain_id,
        asset: invoice.asset.clone(),
        token_address: invoice.token_address,
        decimals: invoice.decimals,
        paid: invoice.amount_paid_base_units,
    };
    let offered: Vec<RefundTarget> = if invoice.options.is_empty() {
        vec![primary]
    } else {
        invoice
            .options
            .iter()
            .map(|o| RefundTarget {
                chain: o.chain.clone(),
                chain_id: o.chain_id,
                asset: o.asset.clone(),
                token_address: o.token_address,
                decimals: o.decimals,
                paid: o.amount_paid_base_units,
            })
            .collect()
    };
    let mut matching: Vec<RefundTarget> = offered
        .into_iter()
        .filter(|t| chain.is_none_or(|c| t.chain == c) && asset.is_none_or(|a| t.asset.eq_ignore_ascii_case(a)))
        .collect();
    let named = || match (chain, asset) {
        (Some(c), Some(a)) => format!("{a} on {c}"),
        (Some(c), None) => format!("anything on {c}"),
        (None, Some(a)) => a.to_owned(),
        (None, None) => "anything".to_owned(),
    };
    if matching.is_empty() {
        return Err(PayoutError::RefundOptionNotOffered {
            param: if asset.is_some() { "asset" } else { "chain" },
            message: format!("this invoice did not offer {}, so it cannot be refunded in it", named()),
        });
    }
    if matching.len() == 1 {
        return Ok(matching.remove(0));
    }
    let mut paid: Vec<RefundTarget> = matching.into_iter().filter(|t| !t.paid.is_zero()).collect();
    match paid.len() {
        1 => Ok(paid.remove(0)),
        0 => Err(PayoutError::RefundExceedsPaid(format!(
            "nothing was paid to this invoice in {}: there is nothing to refund",
            named()
        ))),
        _ => Err(PayoutError::RefundOptionAmbiguous(format!(
            "this invoice was paid in {}: name the one to refund with asset (and chain)",
            paid.iter().map(|t| format!("{} on {}", t.asset, t.chain)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Refunds of `invoice` in `asset` on `chain_id` still promised (not failed or cancelled), in
/// base units.
async fn refunded(conn: &mut Conn, invoice: &Invoice, chain_id: u64, asset: &str) -> Result<BaseUnits, PayoutError> {
    let mut total = BaseUnits::ZERO;
    for refund in payouts::refunds_of(conn, invoice.id).await? {
        if refund.chain_id == chain_id && refund.asset.eq_ignore_ascii_case(asset) {
            total = total.checked_add(refund.amount).ok_or(LedgerError::Overflow)?;
        }
    }
    Ok(total)
}

/// Refused unless `amount` fits in what was paid to `invoice` in `asset` on `chain_id` less
/// `refunded` (which may include it).
fn check_refundable(
    invoice: &Invoice,
    chain_id: u64,
    asset: &str,
    decimals: u8,
    refunded: BaseUnits,
    amount: BaseUnits,
) -> Result<(), PayoutError> {
    let paid = paid_in(invoice, chain_id, asset);
    let remaining = paid.checked_sub(refunded).unwrap_or_default();
    if amount > remaining {
        let show = |v: BaseUnits| format!("{} {asset}", v.to_display(decimals));
        return Err(PayoutError::RefundExceedsPaid(format!(
            "the refund of {} exceeds what can still be refunded: {} ({} paid, {} refunded or being refunded)",
            show(amount),
            show(remaining),
            show(paid),
            show(refunded)
        )));
    }
    Ok(())
}

/// What was paid to `invoice` in `asset` on `chain_id` (nothing for a pair it did not offer).
fn paid_in(invoice: &Invoice, chain_id: u64, asset: &str) -> BaseUnits {
    if invoice.options.is_empty() {
        let own = invoice.chain_id == chain_id && invoice.asset.eq_ignore_ascii_case(asset);
        return if own { invoice.amount_paid_base_units } else { BaseUnits::ZERO };
    }
    invoice.options.iter().find(|o| o.is(chain_id, asset)).map(|o| o.amount_paid_base_units).unwrap_or_default()
}

/// The refusal of `new` when `balance` is available and it needs its amount plus `fee_reserve`.
fn insufficient(new: &NewPayout, balance: BaseUnits, fee_reserve: BaseUnits) -> PayoutError {
    let show = |v: BaseUnits| format!("{} {}", v.to_display(new.decimals), new.asset);
    let needed = new.amount.checked_add(fee_reserve).unwrap_or(new.amount);
    PayoutError::InsufficientFunds(format!(
        "insufficient available balance: {} is available, the {} needs {} ({} plus a network fee reserve of {})",
        show(balance),
        new.kind.as_str(),
        show(needed),
        show(new.amount),
        show(fee_reserve)
    ))
}

/// What [`create`] would hold for a payout or refund, without holding it: the network fee
/// reserve, the available balance now and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preview {
    pub fee_reserve: BaseUnits,
    pub available: BaseUnits,
    pub available_after: BaseUnits,
}

/// Checks `new` as [`create`] would (a refund within what can still be refunded, the available
/// balance covering the amount and the fee reserve) and says what it would reserve, writing
/// nothing: the confirmation step of a payout shown before it is created. [`create`] checks it
/// all again in its transaction.
pub async fn preview(conn: &mut Conn, ctx: Context<'_>, new: &NewPayout) -> Result<Preview, PayoutError> {
    if let Some(invoice) = &new.refund_of {
        let already = refunded(conn, invoice, ctx.chain.chain_id, &new.asset).await?;
        check_refundable(invoice, ctx.chain.chain_id, &new.asset, new.decimals, already, new.amount)?;
    }
    let fee_reserve = match new.token_address {
        None => native_fee_reserve(conn, ctx).await?,
        Some(_) => BaseUnits::ZERO,
    };
    let account = Account::merchant(new.merchant_id, AccountKind::Available, ctx.chain.chain_id, &new.asset);
    let available = ledger::balance(conn, &account).await?;
    // An amount so large that it overflows with the fee reserve is more than any balance holds.
    let Some(available_after) = new.amount.checked_add(fee_reserve).and_then(|needed| available.checked_sub(needed))
    else {
        return Err(insufficient(new, available, fee_reserve));
    };
    Ok(Preview { fee_reserve, available, available_after })
}

/// Stores a validated payout or refund with its chain intent and reservation and records
/// `payout.created`, in the caller's transaction (which the caller commits).
pub async fn create(db: &mut Tx, ctx: Context<'_>, new: NewPayout) -> Result<(Payout, PayoutResource), PayoutError> {
    if let Some(invoice) = &new.refund_of {
        // Checked again after the reservation (below), which serializes a merchant's refunds.
        let already = refunded(db, invoice, ctx.chain.chain_id, &new.asset).await?;
        check_refundable(invoice, ctx.chain.chain_id, &new.asset, new.decimals, already, new.amount)?;
    }
    let fee_reserve = match new.token_address {
        None => native_fee_reserve(db, ctx).await?,
        // A token payout's gas is paid by the operator.
        Some(_) => BaseUnits::ZERO,
    };
    let purpose = match new.kind {
        PayoutKind::Payout => Purpose::Payout,
        PayoutKind::Refund => Purpose::Refund,
    };
    let mut intent = ChainTx::intent(
        ctx.chain.chain_id,
        ctx.treasury.to_checksum(None),
        purpose,
        new.destination.to_checksum(None),
        &new.asset,
        new.amount,
        new.token_address.map(|a| a.to_checksum(None)),
        fee_reserve,
    );
    let now = now_ms();
    let payout = Payout {
        id: Uuid::now_v7(),
        merchant_id: new.merchant_id,
        kind: new.kind,
        external_id: new.external_id.clone(),
        invoice_id: new.refund_of.as_ref().map(|i| i.id),
        chain_id: ctx.chain.chain_id,
        asset: new.asset.clone(),
        amount: new.amount,
        fee_reserve,
        network_fee: None,
        destination: new.destination.to_checksum(None),
        status: PayoutStatus::Pending,
        metadata: new.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()),
        transaction_id: Some(intent.id),
        failure_reason: None,
        created_at: now,
        updated_at: now,
    };
    intent.payout_id = Some(payout.id);
    intent.merchant_id = Some(payout.merchant_id);
    intent.invoice_id = payout.invoice_id;

    payouts::insert(db, &payout).await.map_err(|e| match e {
        StoreError::Conflict(_) => PayoutError::ExternalIdTaken,
        other => other.into(),
    })?;
    chain_txs::insert_intent(db, &intent).await?;
    settlement::reserve_payout(db, &payout).await.map_err(|e| match e {
        LedgerError::InsufficientFunds { balance, .. } => insufficient(&new, balance, fee_reserve),
        other => other.into(),
    })?;
    if let Some(invoice) = &new.refund_of {
        // The reservation locked the merchant's balance: concurrent refunds are now in order, and
        // the sum includes this one.
        let promised = refunded(db, invoice, ctx.chain.chain_id, &new.asset).await?;
        let others = promised.checked_sub(new.amount).unwrap_or_default();
        check_refundable(invoice, ctx.chain.chain_id, &new.asset, new.decimals, others, new.amount)?;
    }
    let resource = PayoutResource::build(&payout, &ctx.chain.name, new.decimals, None);
    outbox::record(db, payout.merchant_id, EventType::PayoutCreated, Subject::new("payout", payout.id), &resource)
        .await?;
    tracing::info!(
        payout_id = %payout.id,
        merchant_id = %payout.merchant_id,
        kind = payout.kind.as_str(),
        chain = %ctx.chain.name,
        asset = %payout.asset,
        "payout created"
    );
    Ok((payout, resource))
}

/// Cancels merchant `merchant_id`'s payout `id` while its transaction is still an unsigned
/// intent, releasing its reservation and recording `payout.cancelled`.
pub async fn cancel(
    db: &mut Tx,
    ctx: Context<'_>,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<(Payout, PayoutResource), PayoutError> {
    let not_cancellable = |state: String| {
        PayoutError::NotCancellable(format!(
            "only a pending payout whose transaction is not yet signed can be cancelled; this one is {state}"
        ))
    };
    let before = payouts::get(db, merchant_id, id).await?.ok_or(PayoutError::NotFound)?;
    let Some(transaction_id) = before.transaction_id else {
        return Err(not_cancellable(before.status.as_str().to_owned()));
    };
    // The settler signs under the same lock: once we hold it, the intent stays an intent.
    let chain_tx = chain_txs::lock(db, transaction_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("payout {id} names a missing transaction {transaction_id}")))?;
    let payout = payouts::get(db, merchant_id, id).await?.ok_or(PayoutError::NotFound)?;
    if payout.status != PayoutStatus::Pending {
        return Err(not_cancellable(payout.status.as_str().to_owned()));
    }
    if chain_tx.state != TxState::Intent {
        return Err(not_cancellable(format!("pending, but its transaction is already {}", chain_tx.state)));
    }
    if !chain_txs::set_failed(db, transaction_id, TxState::Intent, "cancelled").await?
        || !payouts::transition(
            db,
            id,
            PayoutStatus::Pending,
            PayoutStatus::Cancelled,
            None,
            Some("cancelled by the merchant"),
        )
        .await?
    {
        return Err(not_cancellable("changing state concurrently".into()));
    }
    settlement::release_payout(db, &payout, BaseUnits::ZERO, "cancelled").await?;
    let payout = payouts::get(db, merchant_id, id).await?.ok_or(PayoutError::NotFound)?;
    let resource = ctx.resource(&payout, None);
    outbox::record(db, payout.merchant_id, EventType::PayoutCancelled, Subject::new("payout", payout.id), &resource)
        .await?;
    tracing::info!(payout_id = %payout.id, merchant_id = %payout.merchant_id, "payout cancelled");
    Ok((payout, resource))
}

async fn payout_of(conn: &mut Conn, tx: &ChainTx) -> Result<Payout, StoreError> {
    let id =
        tx.payout_id.ok_or_else(|| StoreError::Corrupt(format!("payout transaction {} names no payout", tx.id)))?;
    payouts::get_any(conn, id).await?.ok_or_else(|| StoreError::Corrupt(format!("payout {id} is missing")))
}

async fn record_event(
    db: &mut Tx,
    ctx: Context<'_>,
    payout_id: Uuid,
    event: EventType,
    tx_hash: Option<&str>,
) -> Result<(), StoreError> {
    let p = payouts::get_any(db, payout_id).await?.ok_or_else(|| StoreError::Corrupt("payout vanished".into()))?;
    outbox::record(db, p.merchant_id, event, Subject::new(p.kind.as_str(), p.id), &ctx.resource(&p, tx_hash)).await?;
    Ok(())
}

/// The first broadcast of `tx` (a payout's or refund's) was recorded: the payout is `submitted`.
pub async fn submitted(db: &mut Tx, ctx: Context<'_>, tx: &ChainTx, tx_hash: &str) -> Result<(), LedgerError> {
    let p = payout_of(db, tx).await?;
    if payouts::transition(db, p.id, PayoutStatus::Pending, PayoutStatus::Submitted, None, None).await? {
        record_event(db, ctx, p.id, EventType::PayoutSent, Some(tx_hash)).await?;
    }
    Ok(())
}

/// `tx` (a payout's or refund's) is confirmed: the payout is paid, the merchant charged the gas
/// of a native payout (within its reserve; the operator pays the rest, and a token payout's).
pub async fn confirmed(db: &mut Tx, ctx: Context<'_>, tx: &ChainTx) -> Result<(), LedgerError> {
    let gas = tx.gas_cost.unwrap_or_default();
    let p = payout_of(db, tx).await?;
    let mut merchant_gas = if tx.token_address.is_none() { gas.min(p.fee_reserve) } else { BaseUnits::ZERO };
    if let Posted::AlreadyPosted(_) = settlement::payout_sent(db, &p, merchant_gas).await? {
        // Confirmed again after a reorg deeper than the confirmations took it away: the merchant
        // was charged at the first confirmation; a mining that cost otherwise is the operator's.
        merchant_gas = p.network_fee.unwrap_or(merchant_gas);
    }
    let native = &ctx.chain.native.symbol;
    let operator_gas = gas.checked_sub(merchant_gas).unwrap_or_default();
    settlement::operator_gas(db, tx, native, AccountKind::HotWallet, operator_gas).await?;
    // Mined again for less than the merchant was charged: the hot wallet holds the rest.
    settlement::gas_overcharge(db, tx, native, merchant_gas.checked_sub(gas).unwrap_or_default()).await?;
    let mut moved = false;
    for from in [PayoutStatus::Submitted, PayoutStatus::Pending] {
        if !moved {
            moved = payouts::transition(db, p.id, from, PayoutStatus::Confirmed, Some(merchant_gas), None).await?;
        }
    }
    if moved {
        record_event(db, ctx, p.id, EventType::PayoutConfirmed, tx.mined_tx_hash.as_deref()).await?;
        if p.kind == PayoutKind::Refund {
            refund_confirmed(db, ctx, &p).await?;
        }
    }
    Ok(())
}

/// A refund confirmed: the invoice is `refunded` when its confirmed refunds reach what was
/// paid, else `partially_refunded`.
async fn refund_confirmed(db: &mut Tx, ctx: Context<'_>, refund: &Payout) -> Result<(), StoreError> {
    let Some(invoice_id) = refund.invoice_id else { return Ok(()) };
    let Some(mut invoice) = invoices::get_any(db, invoice_id).await? else {
        return Err(StoreError::Corrupt(format!("refund {} names a missing invoice", refund.id)));
    };
    let confirmed: Vec<Payout> = payouts::refunds_of(db, invoice_id)
        .await?
        .into_iter()
        .filter(|r| r.status == PayoutStatus::Confirmed)
        .collect();
    // Every pair paid in is refunded in full (an invoice payable one way has one pair).
    let refunded_in = |chain_id: u64, asset: &str| {
        confirmed
            .iter()
            .filter(|r| r.chain_id == chain_id && r.asset.eq_ignore_ascii_case(asset))
            .fold(BaseUnits::ZERO, |sum, r| sum.checked_add(r.amount).unwrap_or(sum))
    };
    let whole = if invoice.options.is_empty() {
        refunded_in(invoice.chain_id, &invoice.asset) >= invoice.amount_paid_base_units
    } else {
        invoice.options.iter().all(|o| refunded_in(o.chain_id, &o.asset) >= o.amount_paid_base_units)
    };
    let read = invoice.clone();
    invoice.status = if whole { InvoiceStatus::Refunded } else { InvoiceStatus::PartiallyRefunded };
    invoices::update_payment_state(db, &read, &invoice).await?;
    let resource = InvoiceResource::build(&invoice, Vec::new(), ctx.public_url, ctx.sessions);
    outbox::record_invoice(db, EventType::InvoiceRefunded, &invoice, &resource).await?;
    Ok(())
}

/// `tx` (a payout's or refund's) failed: reverted on chain (`gas` is what it still cost) or never
/// mined (`None`). The reservation is released, less the gas a native payout's reserve pays.
pub async fn failed(
    db: &mut Tx,
    ctx: Context<'_>,
    tx: &ChainTx,
    gas: Option<BaseUnits>,
    reason: &str,
) -> Result<(), LedgerError> {
    let gas = gas.unwrap_or_default();
    let p = payout_of(db, tx).await?;
    if p.status == PayoutStatus::Confirmed {
        // Confirmed once, then taken away by a reorg deeper than the confirmations, and sent
        // again in vain (reverted, or its nonce taken): the ledger counts it paid (`payout_sent`
        // stands) and the merchant was told so. Its reservation left with `payout_sent`:
        // releasing it now would credit the merchant twice (out of other payouts' reservations)
        // or be refused at every step. Only the failed send's gas is posted (the operator's
        // beyond what the merchant was charged at the confirmation); the payout is an operator's.
        let charged = p.network_fee.unwrap_or_default();
        let operator_gas = gas.checked_sub(charged).unwrap_or_default();
        settlement::operator_gas(db, tx, &ctx.chain.native.symbol, AccountKind::HotWallet, operator_gas).await?;
        tracing::error!(
            payout_id = %p.id, transaction_id = %tx.id, reason,
            "a payout confirmed before a reorg deeper than the confirmations failed when sent again: the ledger \
             still counts it paid and its destination holds nothing from it; an operator must settle it"
        );
        return Ok(());
    }
    let merchant_gas = if tx.token_address.is_none() { gas.min(p.fee_reserve) } else { BaseUnits::ZERO };
    settlement::release_payout(db, &p, merchant_gas, reason).await?;
    let operator_gas = gas.checked_sub(merchant_gas).unwrap_or_default();
    settlement::operator_gas(db, tx, &ctx.chain.native.symbol, AccountKind::HotWallet, operator_gas).await?;
    let mut moved = false;
    for from in [PayoutStatus::Pending, PayoutStatus::Submitted] {
        moved |= payouts::transition(db, p.id, from, PayoutStatus::Failed, Some(merchant_gas), Some(reason)).await?;
    }
    if moved {
        record_event(db, ctx, p.id, EventType::PayoutFailed, tx.mined_tx_hash.as_deref()).await?;
    }
    Ok(())
}
