//! The single entry point for what a deposit does to an invoice: detection, confirmation, and a
//! reorg taking it away. Every function runs inside the caller's transaction (the one that also
//! moves the watcher's cursor) and records its events there (the outbox), so a state change and
//! its announcement commit together. The ledger posts from here too (`ledger::deposits`):
//! pending on detection, credit and fee on confirmation, reversals when a reorg takes a deposit
//! away, so the deposit's state and its money never disagree.
//!
//! Status rules (the BTCPay model):
//! - detected on a `pending` invoice -> `processing`;
//! - confirmed payments >= amount -> `paid` (+ `overpaid` when above);
//! - confirmed payments >= amount less the merchant's tolerance -> `paid` + `underpaid`;
//! - less than that -> back to `pending` + `underpaid` (the payer can send the rest);
//! - a payment after `expires_at` is credited and flagged `paid_late`: a late full payment makes
//!   the invoice `paid`, a late partial one leaves it `expired`;
//! - payments to a `paid`, `cancelled`, refunded or `invalid` invoice are credited and flagged,
//!   never lost;
//! - a merchant's mark (`invoicing::mark`: `paid` or `invalid`, no money) stands: payments after
//!   it are credited and flagged as to any finished invoice and never change its status, nor
//!   does a reorg taking one away;
//! - a confirmed payment a reorg takes away is reversed: the invoice's paid amount goes down, a
//!   `paid` invoice it no longer covers goes back to `pending` (or `expired`), and flags follow
//!   what is still paid (nothing paid: no `underpaid`, `overpaid` or `paid_late`);
//! - an invoice with several payment options counts a payment in any of them at that option's
//!   locked rate: `amount_paid_base_units` is what all options' payments are worth in the primary
//!   option (exactly, rounded down: `Invoice::paid_in_primary`), and the rules above apply to it,
//!   so payments in two options add up; a reorg takes a payment out of its own option;
//! - a static address's deposit creates its invoice (`paid`) when it confirms; a reorg that takes
//!   the deposit away cancels that invoice, and the deposit's return pays the same invoice again:
//!   one invoice per deposit, one `invoice.paid` per life of the deposit.

use rust_decimal::Decimal;

use crate::config::ChainConfig;
use crate::deposit::DepositResource;
use crate::deposit::{Deposit, DepositState};
use crate::invoice::{Invoice, InvoiceResource, InvoiceStatus, PaymentFlag, SessionSigner};
use crate::ledger::{self, deposits::CreditKind};
use crate::money::BaseUnits;
use crate::outbox::{self, EventType, Subject};
use crate::store::deposits;
use crate::store::{StoreError, Tx, invoices, merchants, static_addresses};
use crate::time::now_ms;

/// What the crediting functions need to render resources for events.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub public_url: &'a str,
    pub sessions: &'a SessionSigner,
}

impl Context<'_> {
    fn resource(&self, invoice: &Invoice) -> InvoiceResource {
        InvoiceResource::build(invoice, Vec::new(), self.public_url, self.sessions)
    }
}

/// The payment state an invoice moves to, and the events that announce it.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub status: InvoiceStatus,
    pub flags: Vec<PaymentFlag>,
    pub finished_at: Option<i64>,
    pub events: Vec<EventType>,
}

/// Pure rule: the invoice after `paid_total` is confirmed (see the module doc).
pub fn settle(
    invoice: &Invoice,
    paid_total: BaseUnits,
    tolerance_percent: Decimal,
    now: i64,
    late: bool,
) -> Settlement {
    let amount = invoice.amount_base_units;
    let shortfall_allowed =
        amount.percent_floor(tolerance_percent.clamp(Decimal::ZERO, Decimal::ONE_HUNDRED)).unwrap_or_default();
    let threshold = amount.checked_sub(shortfall_allowed).unwrap_or_default();
    let mut flags: Vec<PaymentFlag> =
        invoice.payment_flags.iter().copied().filter(|f| *f == PaymentFlag::PaidLate).collect();
    if late {
        flags.push(PaymentFlag::PaidLate);
    }
    let covered = paid_total >= threshold;
    if paid_total > amount {
        flags.push(PaymentFlag::Overpaid);
    } else if paid_total < amount {
        flags.push(PaymentFlag::Underpaid);
    }
    flags.sort();
    flags.dedup();
    let mut events = Vec::new();
    let (status, finished_at) = match invoice.status {
        InvoiceStatus::Pending | InvoiceStatus::Processing | InvoiceStatus::Expired if covered => {
            events.push(if late { EventType::InvoicePaidLate } else { EventType::InvoicePaid });
            (InvoiceStatus::Paid, Some(invoice.finished_at.unwrap_or(now)))
        }
        InvoiceStatus::Pending | InvoiceStatus::Processing => {
            events.push(EventType::InvoiceUnderpaid);
            (InvoiceStatus::Pending, None)
        }
        // Expired and still short, or already finished: credit and flag, keep the status.
        other => {
            if late {
                events.push(EventType::InvoicePaidLate);
            }
            (other, invoice.finished_at)
        }
    };
    if flags.contains(&PaymentFlag::Overpaid) && !invoice.payment_flags.contains(&PaymentFlag::Overpaid) {
        events.push(EventType::InvoiceOverpaid);
    }
    Settlement { status, flags, finished_at, events }
}

/// `settle`'s `overpaid` for a multi-option invoice `paid` (after a payment in `asset` on
/// `chain_id`; `read` before it): its paid total in primary base units rounds an excess of less
/// than one base unit of the paying option up to a whole primary unit or more when the primary
/// has more decimals, so an overpayment is one of at least a base unit of the option that paid
/// (or one flagged before).
fn overpaid_by_a_unit(outcome: &mut Settlement, read: &Invoice, paid: &Invoice, chain_id: u64, asset: &str) {
    if paid.options.is_empty()
        || paid.overpaid_in(chain_id, asset)
        || read.payment_flags.contains(&PaymentFlag::Overpaid)
    {
        return;
    }
    outcome.flags.retain(|f| *f != PaymentFlag::Overpaid);
    outcome.events.retain(|e| *e != EventType::InvoiceOverpaid);
}

/// A new deposit was seen (not yet confirmed).
pub async fn on_detected(tx: &mut Tx, ctx: Context<'_>, deposit: &Deposit) -> Result<(), StoreError> {
    let Some(merchant_id) = deposit.merchant_id else { return Ok(()) };
    outbox::record(
        tx,
        merchant_id,
        EventType::DepositDetected,
        Subject::new("deposit", deposit.id),
        &DepositResource::build(deposit),
    )
    .await?;
    ledger::deposits::post_pending(tx, deposit).await?;
    if let Some(invoice_id) = deposit.invoice_id
        && let Some(mut invoice) = invoices::get_any(tx, invoice_id).await?
        && invoice.status == InvoiceStatus::Pending
    {
        let read = invoice.clone();
        invoice.status = InvoiceStatus::Processing;
        invoices::update_payment_state(tx, &read, &invoice).await?;
        outbox::record_invoice(tx, EventType::InvoiceProcessing, &invoice, &ctx.resource(&invoice)).await?;
    }
    Ok(())
}

/// A detected deposit reached its confirmations: credit it, exactly once. Returns whether this
/// call did it (false when another process got there first).
pub async fn on_confirmed(
    tx: &mut Tx,
    ctx: Context<'_>,
    chain: &ChainConfig,
    deposit: &Deposit,
) -> Result<bool, StoreError> {
    if !deposits::transition(tx, deposit, DepositState::Detected, DepositState::Confirmed).await? {
        return Ok(false); // Confirmed (or reorged) by someone else in the meantime.
    }
    let Some(merchant_id) = deposit.merchant_id else { return Ok(true) };
    let mut confirmed = deposit.clone();
    confirmed.state = DepositState::Confirmed;
    confirmed.confirmed_at = Some(now_ms());

    if let Some(static_id) = deposit.static_address_id {
        let rail = static_addresses::get(tx, merchant_id, static_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("deposit {} names a missing static address", deposit.id)))?;
        let asset = chain.asset(&deposit.asset).ok_or_else(|| {
            StoreError::Corrupt(format!("asset {} is not configured on {}", deposit.asset, chain.name))
        })?;
        let invoice = match deposit.invoice_id {
            // A later life of a deposit a reorg took away: it pays its own invoice again (same id),
            // so a merchant who deduplicates on invoice ids sees one payment.
            Some(invoice_id) => {
                let mut invoice = invoices::get_any(tx, invoice_id)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt(format!("deposit {} names a missing invoice", deposit.id)))?;
                let read = invoice.clone();
                // One refunded before the reorg keeps its refund status (the refund was paid out)
                // and is not announced as paid again.
                if invoice.status == InvoiceStatus::Cancelled {
                    invoice.status = InvoiceStatus::Paid;
                    invoice.finished_at = Some(now_ms());
                }
                invoice.amount_paid_base_units = read
                    .amount_paid_base_units
                    .checked_add(deposit.amount)
                    .ok_or_else(|| StoreError::Corrupt(format!("invoice {} paid total overflows", invoice.id)))?;
                invoices::update_payment_state(tx, &read, &invoice).await?;
                invoice
            }
            None => {
                let invoice = static_addresses::create_deposit_invoice(tx, &rail, asset, deposit.amount).await?;
                deposits::link_invoice(tx, deposit.id, invoice.id).await?;
                invoice
            }
        };
        confirmed.invoice_id = Some(invoice.id);
        ledger::deposits::post_credit(tx, &confirmed, &invoice, CreditKind::Static).await?;
        outbox::record(
            tx,
            merchant_id,
            EventType::DepositConfirmed,
            Subject::new("deposit", deposit.id),
            &DepositResource::build(&confirmed),
        )
        .await?;
        let resource = ctx.resource(&invoice);
        outbox::record(tx, merchant_id, EventType::StaticAddressDeposit, Subject::static_address(&rail), &resource)
            .await?;
        if invoice.status == InvoiceStatus::Paid {
            outbox::record_invoice(tx, EventType::InvoicePaid, &invoice, &resource).await?;
        }
        return Ok(true);
    }

    outbox::record(
        tx,
        merchant_id,
        EventType::DepositConfirmed,
        Subject::new("deposit", deposit.id),
        &DepositResource::build(&confirmed),
    )
    .await?;
    let Some(invoice_id) = deposit.invoice_id else { return Ok(true) };
    let Some(invoice) = invoices::get_any(tx, invoice_id).await? else {
        return Err(StoreError::Corrupt(format!("deposit {} names a missing invoice", deposit.id)));
    };
    credit_invoice(tx, ctx, &confirmed, invoice, false).await?;
    Ok(true)
}

/// Credits confirmed deposit `deposit` (whose `merchant_id` is the invoice's) to `invoice` by
/// the invoice's rules: its status and flags move, the credit and the fee are posted, the events
/// recorded. `in_pending`: the amount already sits in the merchant's `pending` by another entry
/// than the deposit's own `deposit_pending` (an operator's resolution out of suspense).
pub(crate) async fn credit_invoice(
    tx: &mut Tx,
    ctx: Context<'_>,
    deposit: &Deposit,
    mut invoice: Invoice,
    in_pending: bool,
) -> Result<(), StoreError> {
    if !invoice.options.is_empty() {
        invoice = locked(tx, invoice.id).await?;
    }
    let merchant_id = invoice.merchant_id;
    let read = invoice.clone();
    let merchant = merchants::get(tx, merchant_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("invoice {} has no merchant", invoice.id)))?;
    // The payment counts in its own option, at that option's locked rate: `paid_total` is what
    // every option's payments are worth in the primary option's base units (exactly the amount
    // paid for an invoice payable one way), so the rules of `settle` hold for every invoice.
    let mut paid = invoice.clone();
    paid.apply_payment(deposit.chain_id, &deposit.asset, deposit.amount, false).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "deposit {} ({} on chain {}) cannot be credited to invoice {}: not one of its payment options, or the \
             total overflows",
            deposit.id, deposit.asset, deposit.chain_id, invoice.id
        ))
    })?;
    let paid_total = paid.amount_paid_base_units;
    // Late is judged by the block's arrival (detection), not by how long confirmation took.
    let late = deposit.detected_at > invoice.expires_at;
    let mut outcome = settle(&invoice, paid_total, merchant.payment_tolerance_percent, now_ms(), late);
    overpaid_by_a_unit(&mut outcome, &read, &paid, deposit.chain_id, &deposit.asset);
    // A partial payment with more still confirming keeps the invoice processing.
    if outcome.status == InvoiceStatus::Pending && deposits::invoice_has_detected(tx, invoice.id, deposit.id).await? {
        outcome.status = InvoiceStatus::Processing;
    }
    invoice.status = outcome.status;
    invoice.payment_flags = outcome.flags;
    invoice.amount_paid_base_units = paid_total;
    invoice.options = paid.options;
    invoice.finished_at = outcome.finished_at;
    invoices::update_payment_state(tx, &read, &invoice).await?;
    let kind = if late { CreditKind::Late } else { CreditKind::Invoice };
    if in_pending {
        ledger::deposits::credit_pending(tx, deposit, &invoice, kind).await?;
    } else {
        ledger::deposits::post_credit(tx, deposit, &invoice, kind).await?;
    }
    let resource = ctx.resource(&invoice);
    for event in outcome.events {
        outbox::record_invoice(tx, event, &invoice, &resource).await?;
    }
    Ok(())
}

/// A multi-option invoice, held until the transaction ends and read under that hold: its payment
/// state spans its row and its options' rows, and two chains' watchers may credit it at once.
async fn locked(tx: &mut Tx, id: uuid::Uuid) -> Result<Invoice, StoreError> {
    invoices::lock(tx, id).await?;
    invoices::get_any(tx, id).await?.ok_or_else(|| StoreError::Corrupt(format!("invoice {id} vanished")))
}

/// A transfer was recorded as `rejected` (wrong asset or chain, a disabled static address, an
/// address no one was given...): nothing is credited, and its money goes to the platform's
/// `suspense` until an operator resolves it (`crate::resolutions`). Posted at detection, like a
/// deposit's `deposit_pending`, so the ledger holds what the address holds from the start.
pub async fn on_rejected(tx: &mut Tx, deposit: &Deposit) -> Result<(), StoreError> {
    ledger::suspense::post_suspense(tx, deposit).await?;
    Ok(())
}

/// A rejected transfer is as deep as a deposit's confirmations: it is stamped confirmed (it may
/// be resolved and swept from now on) and, if it was recorded before suspense existed, posted
/// to suspense now. Returns whether this call stamped it.
pub async fn on_rejected_confirmed(tx: &mut Tx, deposit: &Deposit) -> Result<bool, StoreError> {
    if !deposits::stamp_rejected_confirmed(tx, deposit).await? {
        return Ok(false);
    }
    ledger::suspense::post_suspense(tx, deposit).await?;
    Ok(true)
}

/// What [`on_reorged`] did to a deposit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwound {
    /// The state the deposit entered.
    pub state: DepositState,
    /// What the reversal posted to the platform's `reorg_loss`: the part of the deposit that had
    /// already left its address (swept, forwarded). Zero in the usual case.
    pub reorg_loss: BaseUnits,
}

/// A reorg removed the deposit's block. Unconfirmed: it goes back to waiting (it may reappear).
/// Confirmed: its credit is reversed and `deposit.reversed` announces it; nothing is deleted.
/// Rejected (in suspense): its suspense entry is reversed and it waits as `reorged`.
/// Never refused for want of funds (see `ledger::deposits::post_removal`: what already left the
/// deposit's address is the platform's `reorg_loss`). Returns what this call did, if it moved
/// the deposit.
pub async fn on_reorged(tx: &mut Tx, deposit: &Deposit) -> Result<Option<Unwound>, StoreError> {
    match deposit.state {
        DepositState::Detected => {
            if !deposits::transition(tx, deposit, DepositState::Detected, DepositState::Reorged).await? {
                return Ok(None);
            }
            let removal = ledger::deposits::post_removal(tx, deposit).await?;
            if let Some(invoice_id) = deposit.invoice_id
                && let Some(mut invoice) = invoices::get_any(tx, invoice_id).await?
                && invoice.status == InvoiceStatus::Processing
                && !deposits::invoice_has_detected(tx, invoice_id, deposit.id).await?
            {
                let read = invoice.clone();
                invoice.status = InvoiceStatus::Pending;
                invoices::update_payment_state(tx, &read, &invoice).await?;
            }
            Ok(Some(Unwound { state: DepositState::Reorged, reorg_loss: removal.reorg_loss }))
        }
        DepositState::Confirmed => {
            if !deposits::transition(tx, deposit, DepositState::Confirmed, DepositState::Reversed).await? {
                return Ok(None);
            }
            tracing::error!(deposit_id = %deposit.id, tx_hash = %deposit.tx_hash, "a reorg deeper than the confirmations removed a credited deposit; reversing it");
            let removal = ledger::deposits::post_removal(tx, deposit).await?;
            let unwound = Unwound { state: DepositState::Reversed, reorg_loss: removal.reorg_loss };
            let Some(merchant_id) = deposit.merchant_id else { return Ok(Some(unwound)) };
            let mut reversed = deposit.clone();
            reversed.state = DepositState::Reversed;
            outbox::record(
                tx,
                merchant_id,
                EventType::DepositReversed,
                Subject::new("deposit", deposit.id),
                &DepositResource::build(&reversed),
            )
            .await?;
            if let Some(invoice_id) = deposit.invoice_id
                && let Some(mut invoice) = invoices::get_any(tx, invoice_id).await?
            {
                if !invoice.options.is_empty() {
                    invoice = locked(tx, invoice_id).await?;
                }
                let read = invoice.clone();
                // Out of the deposit's own option (a multi-option invoice), then the total follows.
                if invoice.apply_payment(deposit.chain_id, &deposit.asset, deposit.amount, true).is_none() {
                    // Inconsistent data (the invoice records less paid in this option than the
                    // deposit brought). Refusing would stop the chain's watcher on this range, and
                    // every later payment on the chain with it: take out what is there, say so
                    // loudly, and leave the difference to `ledger verify` and the operator.
                    tracing::error!(
                        deposit_id = %deposit.id, invoice_id = %invoice_id, amount = %deposit.amount,
                        asset = %deposit.asset, chain_id = deposit.chain_id,
                        "a reorged deposit is more than its invoice records paid in its option (or an asset it \
                         did not offer); took out what was recorded"
                    );
                    invoice.remove_payment_saturating(deposit.chain_id, &deposit.asset, deposit.amount);
                }
                let paid = invoice.amount_paid_base_units;
                if invoice.static_address_id.is_some() && paid.is_zero() && invoice.status == InvoiceStatus::Paid {
                    // A static address's invoice exists for its deposit alone: with the deposit
                    // gone there is nothing to collect (not an expired request for payment). If
                    // the deposit returns, it pays this invoice again.
                    invoice.status = InvoiceStatus::Cancelled;
                    invoice.finished_at = Some(now_ms());
                } else if invoice.status == InvoiceStatus::Paid
                    && invoice.mark.is_none()
                    && paid < invoice.amount_base_units
                {
                    // (A merchant's mark stands: a marked-paid invoice stays paid, as it was
                    // marked without the money.)
                    invoice.status =
                        if now_ms() > invoice.expires_at { InvoiceStatus::Expired } else { InvoiceStatus::Pending };
                    invoice.finished_at = None;
                    if !invoice.payment_flags.contains(&PaymentFlag::Underpaid) && !paid.is_zero() {
                        invoice.payment_flags.push(PaymentFlag::Underpaid);
                    }
                }
                // Flags describe what is still paid: nothing paid is neither under- nor over- nor
                // late-paid.
                let amount = invoice.amount_base_units;
                invoice.payment_flags.retain(|f| match f {
                    PaymentFlag::Overpaid => paid > amount,
                    PaymentFlag::Underpaid | PaymentFlag::PaidLate => !paid.is_zero(),
                });
                invoices::update_payment_state(tx, &read, &invoice).await?;
            }
            Ok(Some(unwound))
        }
        DepositState::Rejected => {
            // A transfer in suspense: its suspense entry (and, after a reorg deeper than the
            // confirmations, a resolution's entries) are reversed like a deposit's; if it
            // returns, it is recorded again in its new life and goes back to suspense.
            if !deposits::transition(tx, deposit, DepositState::Rejected, DepositState::Reorged).await? {
                return Ok(None);
            }
            let removal = ledger::deposits::post_removal(tx, deposit).await?;
            Ok(Some(Unwound { state: DepositState::Reorged, reorg_loss: removal.reorg_loss }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoice::InvoiceDetails;

    fn invoice(status: InvoiceStatus) -> Invoice {
        Invoice {
            id: uuid::Uuid::now_v7(),
            merchant_id: uuid::Uuid::now_v7(),
            external_id: None,
            status,
            payment_flags: vec![],
            amount: Decimal::from(10),
            currency: "USD".into(),
            conversion_rate: Decimal::ONE,
            chain: "anvil".into(),
            chain_id: 31337,
            asset: "USDC".into(),
            token_address: None,
            decimals: 6,
            deposit_address_id: uuid::Uuid::now_v7(),
            address: Default::default(),
            amount_base_units: BaseUnits::from(10_000_000),
            fee_base_units: BaseUnits::ZERO,
            merchant_amount_base_units: BaseUnits::from(10_000_000),
            amount_paid_base_units: BaseUnits::ZERO,
            fee_schedule: Default::default(),
            details: InvoiceDetails::default(),
            receiver_override_address: None,
            static_address_id: None,
            view: Default::default(),
            mark: None,
            options: Vec::new(),
            session_token: String::new(),
            created_at: 0,
            expires_at: 1000,
            finished_at: None,
            updated_at: 0,
        }
    }

    #[test]
    fn paying_an_options_rounded_up_amount_due_exactly_is_not_overpaid() {
        use crate::invoice::{PaidShare, PaymentOption};
        // An ETH-like primary (18 decimals, 0.003 ETH for 10 USD) and a USDC option (6 decimals).
        let option = |asset: &str, decimals: u8, amount: u64| PaymentOption {
            chain: "anvil".into(),
            chain_id: 31337,
            asset: asset.into(),
            token_address: None,
            decimals,
            address: Default::default(),
            amount_base_units: BaseUnits::from(amount),
            fee_base_units: BaseUnits::ZERO,
            fee_schedule: Default::default(),
            conversion_rate: Decimal::ONE,
            amount_paid_base_units: BaseUnits::ZERO,
        };
        let mut start = invoice(InvoiceStatus::Pending);
        (start.asset, start.decimals) = ("ETH".into(), 18);
        start.amount_base_units = BaseUnits::from(3_000_000_000_000_000u64);
        start.options = vec![option("ETH", 18, 3_000_000_000_000_000), option("USDC", 6, 10_000_000)];
        // One wei first: the rest due in USDC rounds up to the whole 10 USDC.
        start.apply_payment(31337, "ETH", BaseUnits::from(1), false).unwrap();
        let due = PaidShare::of(&start.options).due_of(BaseUnits::from(10_000_000));
        assert_eq!(due, BaseUnits::from(10_000_000));
        let credit = |extra: u64| {
            let mut paid = start.clone();
            paid.apply_payment(31337, "USDC", due.checked_add(BaseUnits::from(extra)).unwrap(), false).unwrap();
            let mut outcome = settle(&start, paid.amount_paid_base_units, Decimal::ZERO, 5, false);
            overpaid_by_a_unit(&mut outcome, &start, &paid, 31337, "USDC");
            (paid, outcome)
        };
        // Paying exactly the amount due: covered, more than the primary amount in wei (the excess
        // is a third of a USDC base unit, about a wei), yet not overpaid.
        let (paid, exact) = credit(0);
        assert!(paid.amount_paid_base_units > paid.amount_base_units, "the rounded-up due exceeds the price");
        assert_eq!(exact.status, InvoiceStatus::Paid);
        assert_eq!(exact.flags, vec![]);
        assert_eq!(exact.events, vec![EventType::InvoicePaid]);
        // One USDC base unit more is an overpayment.
        let (_, over) = credit(1);
        assert_eq!(over.flags, vec![PaymentFlag::Overpaid]);
        assert_eq!(over.events, vec![EventType::InvoicePaid, EventType::InvoiceOverpaid]);
    }

    #[test]
    fn taking_out_more_than_was_paid_is_refused_not_clamped() {
        use crate::invoice::PaymentOption;
        let option = |asset: &str, paid: u64| PaymentOption {
            chain: "anvil".into(),
            chain_id: 31337,
            asset: asset.into(),
            token_address: None,
            decimals: 6,
            address: Default::default(),
            amount_base_units: BaseUnits::from(10_000_000),
            fee_base_units: BaseUnits::ZERO,
            fee_schedule: Default::default(),
            conversion_rate: Decimal::ONE,
            amount_paid_base_units: BaseUnits::from(paid),
        };
        let mut multi = invoice(InvoiceStatus::Pending);
        multi.options = vec![option("USDC", 5_000_000), option("USDT", 0)];
        multi.amount_paid_base_units = BaseUnits::from(5_000_000);
        let before = multi.clone();
        assert!(multi.apply_payment(31337, "USDT", BaseUnits::from(1), true).is_none());
        assert!(multi.apply_payment(31337, "USDC", BaseUnits::from(5_000_001), true).is_none());
        assert!(multi.apply_payment(31337, "DAI", BaseUnits::from(1), true).is_none());
        assert_eq!(multi, before);
        assert!(multi.apply_payment(31337, "USDC", BaseUnits::from(5_000_000), true).is_some());
        assert_eq!(multi.amount_paid_base_units, BaseUnits::ZERO);
        let mut single = invoice(InvoiceStatus::Pending);
        single.amount_paid_base_units = BaseUnits::from(3);
        assert!(single.apply_payment(31337, "USDC", BaseUnits::from(4), true).is_none());
        assert_eq!(single.amount_paid_base_units, BaseUnits::from(3));
    }

    #[test]
    fn exact_over_and_under_payments() {
        let exact = settle(&invoice(InvoiceStatus::Processing), BaseUnits::from(10_000_000), Decimal::ZERO, 5, false);
        assert_eq!(
            (exact.status, exact.flags.clone(), exact.events.clone()),
            (InvoiceStatus::Paid, vec![], vec![EventType::InvoicePaid])
        );
        assert_eq!(exact.finished_at, Some(5));

        let over = settle(&invoice(InvoiceStatus::Processing), BaseUnits::from(12_000_000), Decimal::ZERO, 5, false);
        assert_eq!(
            (over.status, over.flags, over.events),
            (
                InvoiceStatus::Paid,
                vec![PaymentFlag::Overpaid],
                vec![EventType::InvoicePaid, EventType::InvoiceOverpaid]
            )
        );

        let under = settle(&invoice(InvoiceStatus::Processing), BaseUnits::from(4_000_000), Decimal::ZERO, 5, false);
        assert_eq!(
            (under.status, under.flags, under.events),
            (InvoiceStatus::Pending, vec![PaymentFlag::Underpaid], vec![EventType::InvoiceUnderpaid])
        );
    }

    #[test]
    fn tolerance_counts_a_slightly_short_payment_as_paid() {
        let short =
            settle(&invoice(InvoiceStatus::Processing), BaseUnits::from(9_950_000), Decimal::new(1, 0), 5, false);
        assert_eq!((short.status, short.flags), (InvoiceStatus::Paid, vec![PaymentFlag::Underpaid]));
        let too_short =
            settle(&invoice(InvoiceStatus::Processing), BaseUnits::from(9_800_000), Decimal::new(1, 0), 5, false);
        assert_eq!(too_short.status, InvoiceStatus::Pending);
    }

    #[test]
    fn late_payments_are_credited_and_flagged() {
        let late_full = settle(&invoice(InvoiceStatus::Expired), BaseUnits::from(10_000_000), Decimal::ZERO, 5, true);
        assert_eq!(
            (late_full.status, late_full.flags, late_full.events),
            (InvoiceStatus::Paid, vec![PaymentFlag::PaidLate], vec![EventType::InvoicePaidLate])
        );
        let late_partial = settle(&invoice(InvoiceStatus::Expired), BaseUnits::from(3_000_000), Decimal::ZERO, 5, true);
        assert_eq!(
            (late_partial.status, late_partial.flags),
            (InvoiceStatus::Expired, vec![PaymentFlag::Underpaid, PaymentFlag::PaidLate])
        );
        let after_paid = settle(&invoice(InvoiceStatus::Paid), BaseUnits::from(15_000_000), Decimal::ZERO, 5, false);
        assert_eq!((after_paid.status, after_paid.events), (InvoiceStatus::Paid, vec![EventType::InvoiceOverpaid]));
    }
}
