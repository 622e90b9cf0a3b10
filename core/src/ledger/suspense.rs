//! What a transfer nobody is credited with posts, and what an operator's resolution of it posts.
//! Called from `crate::crediting` (a transfer recorded as `rejected`) and `crate::resolutions`,
//! inside the transaction that records the transfer or the resolution.
//!
//! - recorded as rejected: `suspense`, custody -> the platform's `suspense` (the money is at the
//!   deposit address, so custody counts it; no one is owed it yet);
//! - resolved: `suspense_resolved`, `suspense` -> a merchant's `pending` (credit to an invoice,
//!   which then credits it by the invoice's rules) or `available` (credit to a merchant's balance,
//!   then its `fee`), the platform's `fee_revenue` (the operator's revenue), or the hot wallet (a
//!   refund the treasury sent, posted when it is confirmed);
//! - taken away by a reorg: reversed with the deposit's other entries (`deposits::post_removal`).
//!
//! Keys carry the deposit's generation (`suspense:<id>:<generation>`), like every deposit entry,
//! so each life of a transfer posts once.

use uuid::Uuid;

use super::{Account, AccountKind, EntryType, LedgerError, Leg, NewEntry, Posted, Refs, post};
use crate::deposit::Deposit;
use crate::money::BaseUnits;
use crate::store::{Conn, Tx};

/// Where a resolution moves a suspense deposit's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// To a merchant's `pending`, for its invoice to credit (`deposits::credit_pending`).
    InvoicePending { merchant_id: Uuid, invoice_id: Uuid },
    /// To a merchant's `available`.
    MerchantAvailable { merchant_id: Uuid },
    /// To the platform's `fee_revenue`.
    Revenue,
    /// Out of the hot wallet: the refund transaction `transaction_id` was confirmed.
    Refunded { transaction_id: Uuid },
}

fn key(prefix: &str, deposit: &Deposit) -> String {
    format!("{prefix}:{}:{}", deposit.id, deposit.generation)
}

/// A transfer recorded as rejected: custody -> suspense. Idempotent per generation; a transfer
/// whose amount could not be read (zero) posts nothing.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn post_suspense(conn: &mut Tx, deposit: &Deposit) -> Result<Option<Posted>, LedgerError> {
    if deposit.amount.is_zero() {
        return Ok(None);
    }
    let posted = post(
        conn,
        NewEntry {
            entry_type: EntryType::Suspense,
            idempotency_key: key("suspense", deposit),
            refs: Refs {
                merchant_id: deposit.merchant_id,
                invoice_id: deposit.invoice_id,
                deposit_id: Some(deposit.id),
                ..Refs::default()
            },
            reverses: None,
            memo: deposit.reject_reason.clone(),
            legs: vec![
                Leg::debit(Account::platform(AccountKind::Custody, deposit.chain_id, &deposit.asset), deposit.amount),
                Leg::credit(Account::platform(AccountKind::Suspense, deposit.chain_id, &deposit.asset), deposit.amount),
            ],
        },
    )
    .await?;
    Ok(Some(posted))
}

/// Whether this life of the deposit sits in suspense: its `suspense` entry is posted and not
/// reversed, and no resolution has moved it out.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn in_suspense(conn: &mut Conn, deposit: &Deposit) -> Result<bool, LedgerError> {
    let parked: Option<(String,)> = sqlx::query_as(
        "SELECT e.id FROM ledger_entries e WHERE e.idempotency_key = $1 \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)",
    )
    .bind(key("suspense", deposit))
    .fetch_optional(&mut *conn)
    .await?;
    let released: Option<(String,)> = sqlx::query_as("SELECT id FROM ledger_entries WHERE idempotency_key = $1")
        .bind(key("suspense_resolved", deposit))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(parked.is_some() && released.is_none())
}

/// Moves a suspense deposit's money where its resolution says (see [`Release`]), once per
/// generation. `resolution_id` names the resolution in the memo.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn post_release(
    conn: &mut Tx,
    deposit: &Deposit,
    to: Release,
    resolution_id: Uuid,
) -> Result<Posted, LedgerError> {
    let (chain_id, asset) = (deposit.chain_id, deposit.asset.as_str());
    let mut refs = Refs { deposit_id: Some(deposit.id), ..Refs::default() };
    let credit = match to {
        Release::InvoicePending { merchant_id, invoice_id } => {
            refs.merchant_id = Some(merchant_id);
            refs.invoice_id = Some(invoice_id);
            Account::merchant(merchant_id, AccountKind::Pending, chain_id, asset)
        }
        Release::MerchantAvailable { merchant_id } => {
            refs.merchant_id = Some(merchant_id);
            Account::merchant(merchant_id, AccountKind::Available, chain_id, asset)
        }
        Release::Revenue => Account::platform(AccountKind::FeeRevenue, chain_id, asset),
        Release::Refunded { transaction_id } => {
            refs.transaction_id = Some(transaction_id);
            Account::platform(AccountKind::HotWallet, chain_id, asset)
        }
    };
    post(
        conn,
        NewEntry {
            entry_type: EntryType::SuspenseResolved,
            idempotency_key: key("suspense_resolved", deposit),
            refs,
            reverses: None,
            memo: Some(format!("resolution {resolution_id}")),
            legs: vec![
                Leg::debit(Account::platform(AccountKind::Suspense, chain_id, asset), deposit.amount),
                Leg::credit(credit, deposit.amount),
            ],
        },
    )
    .await
}

/// The merchant's fee on a suspense deposit credited to its balance: `available` -> the
/// platform's `fee_revenue`, capped at the amount credited. Nothing for a zero fee.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn post_merchant_fee(
    conn: &mut Tx,
    deposit: &Deposit,
    merchant_id: Uuid,
    fee: BaseUnits,
) -> Result<Option<Posted>, LedgerError> {
    // Never more than what was credited (as `credit_pending` caps it).
    let fee = fee.min(deposit.amount);
    if fee.is_zero() {
        return Ok(None);
    }
    let (chain_id, asset) = (deposit.chain_id, deposit.asset.as_str());
    let posted = post(
        conn,
        NewEntry {
            entry_type: EntryType::Fee,
            idempotency_key: key("fee", deposit),
            refs: Refs { merchant_id: Some(merchant_id), deposit_id: Some(deposit.id), ..Refs::default() },
            reverses: None,
            memo: None,
            legs: vec![
                Leg::debit(Account::merchant(merchant_id, AccountKind::Available, chain_id, asset), fee),
                Leg::credit(Account::platform(AccountKind::FeeRevenue, chain_id, asset), fee),
            ],
        },
    )
    .await?;
    Ok(Some(posted))
}
