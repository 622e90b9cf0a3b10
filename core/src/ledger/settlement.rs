//! What moving money on chain posts. Called by the API (a payout's reservation) and the settler
//! (when an outgoing transaction is confirmed or fails), each inside the transaction that moves the
//! payout's or the transaction's state, so the ledger and the chain's record never disagree.
//!
//! - payout created: `payout_reserve`, available -> reserved (amount + network fee reserve);
//! - payout confirmed: `payout_sent` (`refund` for a refund), reserved -> hot wallet (amount +
//!   gas for a native payout, whose unused fee reserve returns to available);
//! - payout failed or cancelled: `payout_released`, reserved -> available (less the gas a mined,
//!   failed native payout still cost);
//! - gas top-up: `gas`, hot wallet -> custody (native coin moved to a deposit address);
//! - sweep: `sweep`, custody -> hot wallet; pass-through: `passthrough_settlement`, the
//!   merchant's in_transit -> custody (the money left custody for the merchant's address);
//! - gas the operator pays (everything but native payouts): `gas`, payer account -> network_fees;
//! - a native payout mined again (after a reorg deeper than the confirmations) for less than its
//!   merchant was charged: `gas` keyed `gas_kept:<id>`, hot wallet -> fee_revenue;
//! - the operator funds the treasury: `treasury_funding`, operator_capital -> hot wallet;
//! - cold transfer: `cold_transfer`, hot wallet -> cold (the treasury's excess at the cold address).
//!
//! Keys name the payout or transaction, so each posts once however often the settler retries.
//! The two gas series differ: a transaction mined again at another
//! price is confirmed again, and its `gas:<id>` (or `gas_kept:<id>`) is followed by corrections
//! `gas:<id>:<n>` that bring the series to what the chain charged last; a retry finds the sum
//! right and posts nothing.

use uuid::Uuid;

use super::{Account, AccountKind, EntryType, LedgerError, Leg, NewEntry, Posted, Refs, post};
use crate::chain_tx::ChainTx;
use crate::money::BaseUnits;
use crate::payout::{Payout, PayoutKind};
use crate::store::Tx;

fn payout_refs(p: &Payout) -> Refs {
    Refs {
        merchant_id: Some(p.merchant_id),
        invoice_id: p.invoice_id,
        payout_id: Some(p.id),
        transaction_id: p.transaction_id,
        ..Refs::default()
    }
}

fn tx_refs(tx: &ChainTx) -> Refs {
    Refs {
        merchant_id: tx.merchant_id,
        invoice_id: tx.invoice_id,
        payout_id: tx.payout_id,
        transaction_id: Some(tx.id),
        ..Refs::default()
    }
}

fn reserve_total(p: &Payout) -> Result<BaseUnits, LedgerError> {
    p.amount.checked_add(p.fee_reserve).ok_or(LedgerError::Overflow)
}

/// Holds a new payout's amount and fee reserve. Refused with `InsufficientFunds` when the
/// merchant's available balance cannot cover it, also when the two together exceed 256 bits (no
/// balance can cover that: it is bad input, not an internal error).
#[tracing::instrument(skip_all, fields(payout_id = %p.id))]
pub async fn reserve_payout(conn: &mut Tx, p: &Payout) -> Result<Posted, LedgerError> {
    let available = Account::merchant(p.merchant_id, AccountKind::Available, p.chain_id, &p.asset);
    let Ok(total) = reserve_total(p) else {
        let balance = super::balance(conn, &available).await?;
        return Err(LedgerError::InsufficientFunds { account: available, balance, needed: p.amount });
    };
    post(
        conn,
        NewEntry {
            entry_type: EntryType::PayoutReserve,
            idempotency_key: format!("payout_reserve:{}", p.id),
            refs: payout_refs(p),
            reverses: None,
            memo: None,
            legs: vec![
                Leg::debit(available, total),
                Leg::credit(Account::merchant(p.merchant_id, AccountKind::Reserved, p.chain_id, &p.asset), total),
            ],
        },
    )
    .await
}

/// Returns a failed or cancelled payout's reservation, less `charged` (the gas a mined, failed
/// native payout cost, which left the hot wallet).
#[tracing::instrument(skip(conn, p), fields(payout_id = %p.id))]
pub async fn release_payout(conn: &mut Tx, p: &Payout, charged: BaseUnits, memo: &str) -> Result<Posted, LedgerError> {
    let total = reserve_total(p)?;
    let back = total.checked_sub(charged).ok_or(LedgerError::Overflow)?;
    let mut legs =
        vec![Leg::debit(Account::merchant(p.merchant_id, AccountKind::Reserved, p.chain_id, &p.asset), total)];
    if !back.is_zero() {
        legs.push(Leg::credit(Account::merchant(p.merchant_id, AccountKind::Available, p.chain_id, &p.asset), back));
    }
    if !charged.is_zero() {
        legs.push(Leg::credit(Account::platform(AccountKind::HotWallet, p.chain_id, &p.asset), charged));
    }
    post(
        conn,
        NewEntry {
            entry_type: EntryType::PayoutReleased,
            idempotency_key: format!("payout_released:{}", p.id),
            refs: payout_refs(p),
            reverses: None,
            memo: Some(memo.to_owned()),
            legs,
        },
    )
    .await
}

/// A payout confirmed on chain. `merchant_gas` is the gas the merchant pays (native payouts: the
/// actual cost, at most the fee reserve; token payouts: zero).
#[tracing::instrument(skip(conn, p), fields(payout_id = %p.id))]
pub async fn payout_sent(conn: &mut Tx, p: &Payout, merchant_gas: BaseUnits) -> Result<Posted, LedgerError> {
    let total = reserve_total(p)?;
    let left_hot_wallet = p.amount.checked_add(merchant_gas).ok_or(LedgerError::Overflow)?;
    let back = total.checked_sub(left_hot_wallet).ok_or(LedgerError::Overflow)?;
    let mut legs = vec![
        Leg::debit(Account::merchant(p.merchant_id, AccountKind::Reserved, p.chain_id, &p.asset), total),
        Leg::credit(Account::platform(AccountKind::HotWallet, p.chain_id, &p.asset), left_hot_wallet),
    ];
    if !back.is_zero() {
        legs.push(Leg::credit(Account::merchant(p.merchant_id, AccountKind::Available, p.chain_id, &p.asset), back));
    }
    let entry_type = match p.kind {
        PayoutKind::Payout => EntryType::PayoutSent,
        PayoutKind::Refund => EntryType::Refund,
    };
    post(
        conn,
        NewEntry {
            entry_type,
            idempotency_key: format!("payout_sent:{}", p.id),
            refs: payout_refs(p),
            reverses: None,
            memo: None,
            legs,
        },
    )
    .await
}

/// Gas the operator paid for `tx`, from `payer` (hot wallet or custody) in the native coin:
/// `gas` is its share of what the mining that stands cost.
///
/// A confirmed transaction that a reorg deeper than the confirmations took away is sent again
/// and mined again, and the price it pays then is another: the base fee of another block, or a
/// replacement with higher fees (the settler bumps a resent transaction that waits). Its first
/// `gas` entry stays, so what differs is posted as a correction (`gas:<id>:<n>`, the n-th),
/// network fees up or back down, and `network_fees` holds what the chain charged. The caller
/// holds the transaction's row locked, so two settlers never correct the same mining twice; a
/// retry of the same confirmation finds the sum right and posts nothing.
#[tracing::instrument(skip(conn, tx), fields(transaction_id = %tx.id))]
pub async fn operator_gas(
    conn: &mut Tx,
    tx: &ChainTx,
    native: &str,
    payer: AccountKind,
    gas: BaseUnits,
) -> Result<Option<Posted>, LedgerError> {
    let purpose = tx.purpose.as_str();
    let memo = |change: Change| match change {
        Change::First(_) => format!("network fee of a {purpose} transaction"),
        Change::More(more) => format!("network fee of a {purpose} transaction mined again: {more} more than before"),
        Change::Less(less) => format!("network fee of a {purpose} transaction mined again: {less} less than before"),
    };
    post_to_target(conn, tx, &GAS, native, payer, gas, memo).await
}

/// What a native payout's merchant was charged for gas beyond what the mining that stands cost
/// (mined again after a reorg deeper than the confirmations, in a cheaper block): the merchant's
/// charge stays what it was at the first confirmation, and the hot wallet holds the difference,
/// the platform's (`fee_revenue`). Kept, like [`operator_gas`], equal to `kept` by corrections.
#[tracing::instrument(skip(conn, tx), fields(transaction_id = %tx.id))]
pub async fn gas_overcharge(
    conn: &mut Tx,
    tx: &ChainTx,
    native: &str,
    kept: BaseUnits,
) -> Result<Option<Posted>, LedgerError> {
    let memo = |change: Change| match change {
        Change::First(amount) | Change::More(amount) => {
            format!("a payout mined again for {amount} less gas than its merchant was charged")
        }
        Change::Less(less) => format!("a payout mined again: {less} less of its merchant's gas charge kept"),
    };
    post_to_target(conn, tx, &KEPT, native, AccountKind::HotWallet, kept, memo).await
}

/// A running total per transaction that the ledger keeps equal to what the chain last said:
/// what the entries keyed `<prefix>:<id>`, then `<prefix>:<id>:<n>`, put into a platform
/// account of kind `grows` (net, on its normal side).
struct Series {
    prefix: &'static str,
    grows: AccountKind,
}

/// The operator's gas: network fees, paid from the payer.
const GAS: Series = Series { prefix: "gas", grows: AccountKind::NetworkFees };
/// A native payout's merchant gas charge beyond the cost: revenue, held in the hot wallet.
const KEPT: Series = Series { prefix: "gas_kept", grows: AccountKind::FeeRevenue };

/// How a series moves: its first entry, or a correction up or down.
#[derive(Clone, Copy)]
enum Change {
    First(BaseUnits),
    More(BaseUnits),
    Less(BaseUnits),
}

/// Posts what brings `series` of `tx` to `target`, against the platform's `other` account (the
/// gas payer; the hot wallet). The caller holds the transaction's row locked, so two settlers
/// never correct the same mining twice; a retry of the same confirmation finds the sum right
/// and posts nothing.
async fn post_to_target(
    conn: &mut Tx,
    tx: &ChainTx,
    series: &Series,
    native: &str,
    other: AccountKind,
    target: BaseUnits,
    memo: impl Fn(Change) -> String,
) -> Result<Option<Posted>, LedgerError> {
    let (posted, entries) = series_posted(conn, series, tx.id).await?;
    if posted == target {
        return Ok(None);
    }
    let grows = Account::platform(series.grows, tx.chain_id, native);
    let other = Account::platform(other, tx.chain_id, native);
    let up = series.grows.normal_side();
    let leg =
        |account: Account, side: super::Side, amount: BaseUnits| Leg { account, side, amount, shortfall_to: None };
    let (change, legs) = if entries == 0 {
        (Change::First(target), vec![leg(grows, up, target), leg(other, up.opposite(), target)])
    } else if target > posted {
        let more = target.checked_sub(posted).ok_or(LedgerError::Overflow)?;
        (Change::More(more), vec![leg(grows, up, more), leg(other, up.opposite(), more)])
    } else {
        let less = posted.checked_sub(target).ok_or(LedgerError::Overflow)?;
        (Change::Less(less), vec![leg(other, up, less), leg(grows, up.opposite(), less)])
    };
    let entry = NewEntry {
        entry_type: EntryType::Gas,
        idempotency_key: series_key(series, tx.id, entries),
        refs: tx_refs(tx),
        reverses: None,
        memo: Some(memo(change)),
        legs,
    };
    match post(conn, entry).await? {
        // Its keys were read a moment ago under the transaction's lock: an entry there already
        // is a second writer, and taking it for this one would lose the difference.
        Posted::AlreadyPosted(id) => Err(crate::store::StoreError::Corrupt(format!(
            "entry {id} of transaction {} appeared while its {} was being posted",
            tx.id, series.prefix
        ))
        .into()),
        posted => Ok(Some(posted)),
    }
}

/// The key of transaction `tx_id`'s `n`-th entry of `series`: the first, then corrections.
fn series_key(series: &Series, tx_id: Uuid, n: usize) -> String {
    if n == 0 { format!("{}:{tx_id}", series.prefix) } else { format!("{}:{tx_id}:{n}", series.prefix) }
}

/// What the entries of `series` of transaction `tx_id` put into its account (net), and how many
/// there are: read by their keys (the unique index), one after the other until one is missing,
/// so the common case (none yet) is one lookup.
async fn series_posted(
    conn: &mut crate::store::Conn,
    series: &Series,
    tx_id: Uuid,
) -> Result<(BaseUnits, usize), LedgerError> {
    let (mut up, mut down) = (BaseUnits::ZERO, BaseUnits::ZERO);
    let mut n = 0;
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT p.direction, p.amount_base_units FROM ledger_entries e \
             JOIN ledger_postings p ON p.entry_id = e.id JOIN ledger_accounts a ON a.id = p.account_id \
             WHERE e.idempotency_key = $1 AND a.owner = 'platform' AND a.kind = $2",
        )
        .bind(series_key(series, tx_id, n))
        .bind(series.grows)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for (direction, amount) in rows {
            let amount: BaseUnits = crate::store::parse_column("ledger_postings.amount_base_units", &amount)?;
            let side: super::Side = crate::store::parse_column("ledger_postings.direction", &direction)?;
            let total = if side == series.grows.normal_side() { &mut up } else { &mut down };
            *total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
        }
        n += 1;
    }
    let net = up.checked_sub(down).ok_or_else(|| {
        crate::store::StoreError::Corrupt(format!("transaction {tx_id} has a negative {} in the ledger", series.prefix))
    })?;
    Ok((net, n))
}

/// A confirmed movement between the hot wallet and custody, out of custody to a merchant, or from
/// the hot wallet to cold storage.
#[tracing::instrument(skip_all, fields(transaction_id = %tx.id))]
pub async fn movement(conn: &mut Tx, tx: &ChainTx) -> Result<Posted, LedgerError> {
    use crate::chain_tx::Purpose;
    let (chain_id, asset) = (tx.chain_id, tx.asset.as_str());
    let (entry_type, key, debit) = match tx.purpose {
        Purpose::GasTopup => (EntryType::Gas, "gas_topup", Account::platform(AccountKind::Custody, chain_id, asset)),
        Purpose::Sweep => (EntryType::Sweep, "sweep", Account::platform(AccountKind::HotWallet, chain_id, asset)),
        Purpose::ColdTransfer => {
            (EntryType::ColdTransfer, "cold_transfer", Account::platform(AccountKind::Cold, chain_id, asset))
        }
        Purpose::Passthrough => {
            let merchant_id = tx.merchant_id.ok_or_else(|| LedgerError::Malformed {
                key: tx.id.to_string(),
                reason: "a pass-through transaction names no merchant".into(),
            })?;
            (
                EntryType::PassthroughSettlement,
                "passthrough",
                Account::merchant(merchant_id, AccountKind::InTransit, chain_id, asset),
            )
        }
        Purpose::Payout | Purpose::Refund => {
            return Err(LedgerError::Malformed {
                key: tx.id.to_string(),
                reason: "payouts post through payout_sent".into(),
            });
        }
    };
    let credit = match tx.purpose {
        Purpose::GasTopup | Purpose::ColdTransfer => Account::platform(AccountKind::HotWallet, chain_id, asset),
        _ => Account::platform(AccountKind::Custody, chain_id, asset),
    };
    post(
        conn,
        NewEntry {
            entry_type,
            idempotency_key: format!("{key}:{}", tx.id),
            refs: tx_refs(tx),
            reverses: None,
            memo: tx.mined_tx_hash.as_ref().map(|h| format!("transaction {h}")),
            legs: vec![Leg::debit(debit, tx.value), Leg::credit(credit, tx.value)],
        },
    )
    .await
}

/// The operator funded the treasury with `amount` of `asset` in transaction `tx_hash`.
#[tracing::instrument(skip(conn))]
pub async fn treasury_funding(
    conn: &mut Tx,
    chain_id: u64,
    asset: &str,
    amount: BaseUnits,
    tx_hash: &str,
) -> Result<Posted, LedgerError> {
    post(
        conn,
        NewEntry {
            entry_type: EntryType::TreasuryFunding,
            idempotency_key: format!("treasury_funding:{chain_id}:{tx_hash}:{asset}"),
            refs: Refs { transaction_id: None, ..Refs::default() },
            reverses: None,
            memo: Some(format!("transaction {tx_hash}")),
            legs: vec![
                Leg::debit(Account::platform(AccountKind::HotWallet, chain_id, asset), amount),
                Leg::credit(Account::platform(AccountKind::OperatorCapital, chain_id, asset), amount),
            ],
        },
    )
    .await
}

/// What is still to be forwarded for a pass-through invoice: its net `in_transit`.
#[tracing::instrument(skip(conn))]
pub async fn in_transit_of(conn: &mut crate::store::Conn, invoice_id: Uuid) -> Result<BaseUnits, LedgerError> {
    super::deposits::invoice_net_credit(conn, invoice_id, AccountKind::InTransit).await
}

/// Whether the ledger already records `tx`'s outcome: a live (unreversed) movement, payment or
/// gas entry of it. A confirmed transaction that a deep reorg took away is put back to
/// `broadcast` by the settler, and sent again with the same bytes, but its entries stay (they
/// post nothing new when it is mined again): what it takes is already out of the ledger's
/// holdings, so the reconciliation must not count it in flight as well.
#[tracing::instrument(skip(conn))]
pub async fn records_transaction(conn: &mut crate::store::Conn, tx_id: Uuid) -> Result<bool, LedgerError> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT e.id FROM ledger_entries e WHERE e.transaction_id = $1 \
         AND e.entry_type IN ('payout_sent', 'refund', 'passthrough_settlement', 'sweep', 'gas') \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id) LIMIT 1",
    )
    .bind(crate::store::codec::Text(tx_id))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.is_some())
}
