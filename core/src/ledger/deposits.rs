//! What a deposit's life posts. Called from `crate::crediting` only, inside the transaction that
//! moves the deposit's state, so the ledger and the deposit never disagree.
//!
//! - detected: `deposit_pending`, custody -> the merchant's `pending`;
//! - confirmed: `deposit_credit` (`late_deposit`, `static_deposit`), `pending` -> `available`
//!   (or -> `in_transit` for a receiver-override invoice, which is forwarded on chain, not
//!   credited), then `fee`, that account -> the platform's `fee_revenue`;
//! - taken away by a reorg: every live entry of the deposit is reversed, newest first; what had
//!   already left the deposit's address is the platform's `reorg_loss` ([`post_removal`]).
//!
//! Keys carry the deposit's generation (`deposit_credit:<id>:<generation>`), so a deposit that
//! a reorg took away and that came back posts again, once per life.

use uuid::Uuid;

use super::{
    Account, AccountKind, CREDIT_TYPES_SQL, EntryType, LedgerError, Leg, NewEntry, Posted, Refs, Side, post,
    reverse_within,
};
use crate::deposit::Deposit;
use crate::invoice::Invoice;
use crate::money::BaseUnits;
use crate::store::codec::Text;
use crate::store::{Conn, StoreError, Tx, parse_column};

fn merchant_of(deposit: &Deposit) -> Result<Uuid, LedgerError> {
    deposit.merchant_id.ok_or_else(|| LedgerError::Malformed {
        key: deposit.id.to_string(),
        reason: "the deposit has no merchant".into(),
    })
}

/// A detected deposit shows as pending. Idempotent per generation.
///
/// A deposit that a deep reorg took away usually comes back in a later block (the same
/// transaction, re-included: a new generation), and so does what emptied its address: the
/// settler's sweep is re-mined with the same bytes and posts nothing new (its entry stayed). So
/// when an earlier generation of this deposit left a loss in the platform's `reorg_loss` that
/// is not yet recovered, this generation's pending entry debits `reorg_loss` (up to the amount)
/// instead of `custody` for that part: the money is in the treasury again, as the sweep's entry
/// says, and not at the address. Exactly once: the entry's key names the generation, and the
/// next generation finds the loss recovered. The assumption is that the movement that emptied
/// the address replays; if it does not, the address holds money custody does not count, which
/// the surplus check reports, and the treasury lacks it, which the cover check reports. A loss on
/// a forward (`reorg_loss_forwarded`) is not recovered here: the merchant's side of it is theirs.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn post_pending(conn: &mut Tx, deposit: &Deposit) -> Result<Posted, LedgerError> {
    let merchant_id = merchant_of(deposit)?;
    let key = format!("deposit_pending:{}:{}", deposit.id, deposit.generation);
    if let Some(existing) = super::entry_by_key(conn, &key).await? {
        return Ok(Posted::AlreadyPosted(existing));
    }
    let loss = Account::platform(AccountKind::ReorgLoss, deposit.chain_id, &deposit.asset);
    // Only this deposit's own losses are recovered (and the watcher posts a deposit's entries
    // one at a time), so the balance cannot go below zero and needs no lock here.
    let recovered = if deposit.generation > 0 {
        unrecovered_loss(conn, deposit.id).await?.min(deposit.amount)
    } else {
        BaseUnits::ZERO
    };
    let to_custody = deposit.amount.checked_sub(recovered).expect("recovered <= amount");
    let mut legs = Vec::with_capacity(3);
    if !to_custody.is_zero() {
        legs.push(Leg::debit(Account::platform(AccountKind::Custody, deposit.chain_id, &deposit.asset), to_custody));
    }
    if !recovered.is_zero() {
        legs.push(Leg::debit(loss, recovered));
    }
    legs.push(Leg::credit(
        Account::merchant(merchant_id, AccountKind::Pending, deposit.chain_id, &deposit.asset),
        deposit.amount,
    ));
    let posted = post(
        conn,
        NewEntry {
            entry_type: EntryType::DepositPending,
            idempotency_key: key,
            refs: Refs {
                merchant_id: Some(merchant_id),
                invoice_id: deposit.invoice_id,
                deposit_id: Some(deposit.id),
                ..Refs::default()
            },
            reverses: None,
            memo: (!recovered.is_zero())
                .then(|| format!("recovers {recovered} of the reorg loss of an earlier generation of this deposit")),
            legs,
        },
    )
    .await?;
    if !recovered.is_zero() && matches!(posted, Posted::New(_)) {
        tracing::warn!(
            deposit_id = %deposit.id, generation = deposit.generation, recovered = %recovered,
            "a deposit a reorg took away came back: its reorg loss is recovered"
        );
    }
    Ok(posted)
}

/// The platform's `reorg_loss` that entries of this deposit posted and did not take back: credits
/// (losses of its earlier generations) less debits (recoveries), never below zero.
async fn unrecovered_loss(conn: &mut Conn, deposit_id: Uuid) -> Result<BaseUnits, LedgerError> {
    let rows: Vec<(Side, String)> = sqlx::query_as(
        "SELECT p.direction, p.amount_base_units FROM ledger_postings p \
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE e.deposit_id = $1 AND a.owner = 'platform' AND a.kind = 'reorg_loss'",
    )
    .bind(Text(deposit_id))
    .fetch_all(&mut *conn)
    .await?;
    let (mut credits, mut debits) = (BaseUnits::ZERO, BaseUnits::ZERO);
    for (side, amount) in rows {
        let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
        let total = if side == Side::Credit { &mut credits } else { &mut debits };
        *total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
    }
    Ok(credits.checked_sub(debits).unwrap_or_default())
}

/// Which kind of credit a confirmed deposit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    Invoice,
    Late,
    Static,
}

/// A confirmed deposit to `invoice`: credit it and charge the growth of the fee on everything
/// the ledger has credited to the invoice (payments confirmed before the ledger existed were
/// never credited here and carry no fee here either). A deposit never pays more fee than it
/// brings, so the fee is always covered by the credit just posted.
#[tracing::instrument(skip(conn, deposit, invoice), fields(deposit_id = %deposit.id, invoice_id = %invoice.id))]
pub async fn post_credit(
    conn: &mut Tx,
    deposit: &Deposit,
    invoice: &Invoice,
    kind: CreditKind,
) -> Result<(), LedgerError> {
    // A deposit detected before the ledger existed (or in the same range) has no pending entry yet.
    post_pending(conn, deposit).await?;
    credit_pending(conn, deposit, invoice, kind).await
}

/// The credit and fee of [`post_credit`], for a deposit whose amount already sits in the
/// merchant's `pending` (by `deposit_pending`, or by an operator's resolution out of suspense).
#[tracing::instrument(skip(conn, deposit, invoice), fields(deposit_id = %deposit.id, invoice_id = %invoice.id))]
pub async fn credit_pending(
    conn: &mut Tx,
    deposit: &Deposit,
    invoice: &Invoice,
    kind: CreditKind,
) -> Result<(), LedgerError> {
    let merchant_id = merchant_of(deposit)?;
    let (chain_id, asset) = (deposit.chain_id, deposit.asset.as_str());
    let target =
        if invoice.receiver_override_address.is_some() { AccountKind::InTransit } else { AccountKind::Available };
    let refs = Refs {
        merchant_id: Some(merchant_id),
        invoice_id: Some(invoice.id),
        deposit_id: Some(deposit.id),
        ..Refs::default()
    };
    let entry_type = match kind {
        CreditKind::Invoice => EntryType::DepositCredit,
        CreditKind::Late => EntryType::LateDeposit,
        CreditKind::Static => EntryType::StaticDeposit,
    };
    post(
        conn,
        NewEntry {
            entry_type,
            idempotency_key: format!("deposit_credit:{}:{}", deposit.id, deposit.generation),
            refs: refs.clone(),
            reverses: None,
            memo: None,
            legs: vec![
                Leg::debit(Account::merchant(merchant_id, AccountKind::Pending, chain_id, asset), deposit.amount),
                Leg::credit(Account::merchant(merchant_id, target, chain_id, asset), deposit.amount),
            ],
        },
    )
    .await?;

    // An invoice with several payment options is charged per option: its asset's schedule on
    // what the invoice received in that asset (each asset is its own money and its own sweep).
    let (credited, charged, schedule) = if invoice.options.is_empty() {
        (credited_total(conn, invoice.id).await?, fee_charged(conn, invoice.id).await?, invoice.fee_schedule)
    } else {
        (
            credited_total_in(conn, invoice.id, chain_id, asset).await?,
            fee_charged_in(conn, invoice.id, chain_id, asset).await?,
            invoice.fee_schedule_for(chain_id, asset),
        )
    };
    let due = schedule.fee_on(credited).map_err(|e| LedgerError::Malformed {
        key: format!("fee:{}", deposit.id),
        reason: format!("fee on {credited}: {e}"),
    })?;
    let fee = due.checked_sub(charged).unwrap_or_default().min(deposit.amount);
    if fee.is_zero() {
        return Ok(());
    }
    post(
        conn,
        NewEntry {
            entry_type: EntryType::Fee,
            idempotency_key: format!("fee:{}:{}", deposit.id, deposit.generation),
            refs,
            reverses: None,
            memo: None,
            legs: vec![
                Leg::debit(Account::merchant(merchant_id, target, chain_id, asset), fee),
                Leg::credit(Account::platform(AccountKind::FeeRevenue, chain_id, asset), fee),
            ],
        },
    )
    .await?;
    Ok(())
}

/// What the ledger has credited to an invoice and not reversed: the sum of its live credit
/// entries (each moves one deposit out of `pending`).
#[tracing::instrument(skip(conn))]
pub async fn credited_total(conn: &mut Conn, invoice_id: Uuid) -> Result<BaseUnits, LedgerError> {
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.amount_base_units FROM ledger_postings p \
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE e.invoice_id = $1 AND e.entry_type IN {CREDIT_TYPES_SQL} \
         AND a.kind = 'pending' AND p.direction = 'debit' \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)"
    )))
    .bind(Text(invoice_id))
    .fetch_all(&mut *conn)
    .await?;
    let mut total = BaseUnits::ZERO;
    for (amount,) in rows {
        let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
        total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
    }
    Ok(total)
}

/// [`credited_total`] in one asset on one chain (an invoice with several payment options).
#[tracing::instrument(skip(conn))]
pub async fn credited_total_in(
    conn: &mut Conn,
    invoice_id: Uuid,
    chain_id: u64,
    asset: &str,
) -> Result<BaseUnits, LedgerError> {
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.amount_base_units FROM ledger_postings p \
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE e.invoice_id = $1 AND e.entry_type IN {CREDIT_TYPES_SQL} \
         AND a.kind = 'pending' AND p.direction = 'debit' AND a.chain_id = $2 AND a.asset = $3 \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)"
    )))
    .bind(Text(invoice_id))
    .bind(chain_id as i64)
    .bind(asset)
    .fetch_all(&mut *conn)
    .await?;
    let mut total = BaseUnits::ZERO;
    for (amount,) in rows {
        let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
        total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
    }
    Ok(total)
}

/// [`fee_charged`] in one asset on one chain (an invoice with several payment options).
#[tracing::instrument(skip(conn))]
pub async fn fee_charged_in(
    conn: &mut Conn,
    invoice_id: Uuid,
    chain_id: u64,
    asset: &str,
) -> Result<BaseUnits, LedgerError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.direction, p.amount_base_units FROM ledger_postings p \
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE e.invoice_id = $1 AND a.kind = $2 AND a.chain_id = $3 AND a.asset = $4",
    )
    .bind(Text(invoice_id))
    .bind(AccountKind::FeeRevenue)
    .bind(chain_id as i64)
    .bind(asset)
    .fetch_all(&mut *conn)
    .await?;
    let (mut credits, mut debits) = (BaseUnits::ZERO, BaseUnits::ZERO);
    for (direction, amount) in rows {
        let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
        let side: Side = parse_column("ledger_postings.direction", &direction)?;
        let total = if side == Side::Credit { &mut credits } else { &mut debits };
        *total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
    }
    credits
        .checked_sub(debits)
        .ok_or_else(|| StoreError::Corrupt(format!("invoice {invoice_id} has a negative net fee in {asset}")).into())
}

/// The fee charged on an invoice so far: net credits to `fee_revenue` by its entries (fees less
/// their reversals).
#[tracing::instrument(skip(conn))]
pub async fn fee_charged(conn: &mut Conn, invoice_id: Uuid) -> Result<BaseUnits, LedgerError> {
    invoice_net_credit(conn, invoice_id, AccountKind::FeeRevenue).await
}

/// Net credits (credits less debits) to accounts of `kind` by an invoice's entries.
#[tracing::instrument(skip(conn))]
pub async fn invoice_net_credit(
    conn: &mut Conn,
    invoice_id: Uuid,
    kind: AccountKind,
) -> Result<BaseUnits, LedgerError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT p.direction, p.amount_base_units FROM ledger_postings p \
         JOIN ledger_entries e ON e.id = p.entry_id JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE e.invoice_id = $1 AND a.kind = $2",
    )
    .bind(Text(invoice_id))
    .bind(kind)
    .fetch_all(&mut *conn)
    .await?;
    let (mut credits, mut debits) = (BaseUnits::ZERO, BaseUnits::ZERO);
    for (direction, amount) in rows {
        let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
        let side: Side = parse_column("ledger_postings.direction", &direction)?;
        let total = if side == Side::Credit { &mut credits } else { &mut debits };
        *total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
    }
    credits
        .checked_sub(debits)
        .ok_or_else(|| StoreError::Corrupt(format!("invoice {invoice_id} has a negative net {kind}")).into())
}

/// What [`post_removal`] posted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// The reversals, newest entry first (`AlreadyPosted` for those a retry finds done).
    pub reversals: Vec<Posted>,
    /// What this call posted to the platform's `reorg_loss` (zero when nothing had left the
    /// deposit's address, or when a retry finds the reversals done).
    pub reorg_loss: BaseUnits,
}

/// A reorg took the deposit away: reverse each of its entries not yet reversed, newest first
/// (the fee before the credit before the pending), so every step is covered. Never refused:
///
/// - **the merchant's part**: the credit (and its fee) is reversed as ever; what the merchant's
///   `available` (or, for a pass-through invoice, `in_transit`) no longer holds goes to the
///   merchant's `receivable` (they spent it, or it was forwarded to their address);
/// - **the platform's part**: the pending entry's reversal takes out of `custody` at most what
///   the ledger still holds at the deposit's own address ([`super::verify::custody_at`]); the
///   rest had left the address (swept into the treasury, forwarded to the merchant) before the
///   reorg took away the deposit that paid for it, and goes to the platform's `reorg_loss`. The
///   sweep's or forward's entry stays (the settler sends its bytes again, and they can only
///   fail): `reorg_loss` is what the ledger's holdings and payments out overstate from now on.
///
/// Runs in the reorg's transaction; each reversal's key (`reversal:<entry id>`) names an entry
/// of one generation of the deposit, so a retry or a second unwinding posts nothing again, and
/// a crash before the commit leaves nothing posted.
#[tracing::instrument(skip_all, fields(deposit_id = %deposit.id))]
pub async fn post_removal(conn: &mut Tx, deposit: &Deposit) -> Result<Removal, LedgerError> {
    let rows: Vec<(String, EntryType)> = sqlx::query_as(
        "SELECT e.id, e.entry_type FROM ledger_entries e WHERE e.deposit_id = $1 AND e.entry_type <> 'reversal' \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id) ORDER BY e.id DESC",
    )
    .bind(Text(deposit.id))
    .fetch_all(&mut **conn)
    .await?;
    let mut removal = Removal { reversals: Vec::with_capacity(rows.len()), reorg_loss: BaseUnits::ZERO };
    let memo = format!("a chain reorganisation removed transaction {}", deposit.tx_hash);
    for (id, entry_type) in rows {
        let id: Uuid = parse_column("ledger_entries.id", &id)?;
        // The pending entry is the one that put the deposit into custody. Custody is locked
        // first (as the reversal's own posting would), so no sweep from the address can be
        // posted between reading what the address holds and taking it out.
        let custody_limit = if entry_type == EntryType::DepositPending {
            let custody = Account::platform(AccountKind::Custody, deposit.chain_id, &deposit.asset);
            super::lock_account(conn, &custody).await?;
            let address = parse_column("deposits.to_address", &deposit.to_address)?;
            let at = super::verify::custody_at(conn, deposit.chain_id, &deposit.asset, address).await?;
            Some(super::CustodyLimit { held: at.held, swept: at.swept })
        } else {
            None
        };
        let posted = reverse_within(conn, id, Some(memo.clone()), custody_limit).await?;
        if let Posted::New(reversal) = posted {
            for kind in [AccountKind::ReorgLoss, AccountKind::ReorgLossForwarded] {
                let lost = posted_to(conn, reversal, kind).await?;
                removal.reorg_loss = removal.reorg_loss.checked_add(lost).ok_or(LedgerError::Overflow)?;
            }
        }
        removal.reversals.push(posted);
    }
    if !removal.reorg_loss.is_zero() {
        tracing::error!(
            deposit_id = %deposit.id, chain_id = deposit.chain_id, asset = %deposit.asset,
            reorg_loss = %removal.reorg_loss, tx_hash = %deposit.tx_hash,
            "a reorg took away a deposit whose money had already left its address; the platform carries the loss (reorg_loss)"
        );
    }
    Ok(removal)
}

/// What entry `id` added to accounts of `kind` (its postings on their growing side).
async fn posted_to(conn: &mut Conn, id: Uuid, kind: AccountKind) -> Result<BaseUnits, LedgerError> {
    let (_, postings) = super::entry(conn, id).await?.ok_or(LedgerError::EntryNotFound(id))?;
    let mut total = BaseUnits::ZERO;
    for p in postings.iter().filter(|p| p.account.kind == kind && p.side == kind.normal_side()) {
        total = total.checked_add(p.amount).ok_or(LedgerError::Overflow)?;
    }
    Ok(total)
}
