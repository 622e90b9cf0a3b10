//! The double-entry ledger: every movement of money is one journal entry of two or more postings
//! that balance per asset, written once and never changed.
//!
//! - **Accounts** are keyed by owner (a merchant or the platform), kind and asset (chain + token
//!   symbol). Each kind has a normal side ([`AccountKind::normal_side`]): a merchant's
//!   `available`, `pending`, `reserved` and `in_transit` and the platform's `fee_revenue` are what
//!   the platform owes (credit-normal); `custody` (funds at deposit addresses), `hot_wallet`,
//!   `network_fees` (gas spent), `cold` (moved to the operator's cold address) and a merchant's
//!   `receivable` (what a merchant owes after a reversal it could not cover) are what the platform
//!   holds or spent (debit-normal). `reorg_loss` is the platform's contra account to its holdings
//!   (credit-normal): what the ledger still counts as held in the treasury (or as paid to a
//!   merchant) although a reorg took away the deposit that funded it (see
//!   [`deposits::post_removal`]).
//! - **Balances never go negative** in their normal direction, for any account: [`post`] locks the
//!   accounts it touches (in one global order, so two single entries cannot deadlock), checks,
//!   and only then writes the entry. A refused entry writes no entry, posting or balance (at most
//!   it has created the empty accounts it looked for).
//! - **Exactly once**: every entry carries an idempotency key naming its cause; posting the same
//!   key again returns the first entry and changes nothing.
//! - **Append-only**: corrections are [`reverse`] entries that point at what they reverse (each
//!   entry can be reversed once, enforced by a unique index).
//! - Amounts are U256 base units stored as decimal strings; arithmetic is checked.
//!
//! # Layout
//! - this module: accounts, entry types, [`post`] (the one way anything is written), [`reverse`].
//! - `balance_events`: the `balance.updated` event [`post`] records for every merchant an entry
//!   posts to, in the entry's transaction.
//! - [`deposits`]: what a deposit's life posts: pending on detection, credit and fee on
//!   confirmation, reversals when a reorg takes it away.
//! - [`settlement`]: what moving money on chain posts: payout reservations and releases, sweeps,
//!   gas top-ups, pass-through forwarding, gas, treasury funding.
//! - [`suspense`]: what a rejected transfer posts (custody -> `suspense`) and what an operator's
//!   resolution of it posts.
//! - [`statements`]: balances and entries as the merchant API and the CSV export show them.
//! - [`verify`]: reconciliation (`depositd ledger verify`, and the daemon's periodic check).

mod balance_events;
pub mod deposits;
pub mod settlement;
pub mod statements;
pub mod suspense;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use uuid::Uuid;

use crate::money::BaseUnits;
use crate::store::codec::{Text, opt};
use crate::store::{Backend, Conn, StoreError, Tx, parse_column};
use crate::text_enum::text_enum;
use crate::time::now_ms;

/// Which side of an account a posting is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Debit,
    Credit,
}

text_enum! { Side as "posting direction" { Debit = "debit", Credit = "credit" } }

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Debit => Side::Credit,
            Side::Credit => Side::Debit,
        }
    }
}

/// What an account holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A merchant's spendable funds.
    Available,
    /// A merchant's detected, not yet confirmed deposits: shown, not spendable.
    Pending,
    /// A merchant's funds held for payouts in flight.
    Reserved,
    /// A merchant's pass-through (receiver override) settlements awaiting forwarding on chain.
    InTransit,
    /// What a merchant owes: the part of a reversal its available balance could not cover.
    Receivable,
    /// The platform's fees earned.
    FeeRevenue,
    /// Funds at deposit addresses (invoice and static), not yet swept.
    Custody,
    /// Funds in the treasury (hot wallet).
    HotWallet,
    /// Gas the platform has spent.
    NetworkFees,
    /// What the operator put into the treasury from outside (gas money): recorded by
    /// `depositd treasury fund` against the funding transaction.
    OperatorCapital,
    /// A loss the platform carries: money that was swept from a deposit address into the
    /// treasury before a reorg took away the deposit that brought it, so the reversal could not
    /// take it back from custody. Credit-normal, as a contra account to the platform's holdings:
    /// the ledger's `custody + hot_wallet - reorg_loss` is what the chain can hold (the sweep's
    /// entry stays; the money it moved never existed on the new chain). Debited only when the
    /// deposit comes back in a later block (`deposits::post_pending` recovers it).
    ReorgLoss,
    /// The same for money that was forwarded to a merchant (pass-through) before the reorg: the
    /// forward's entry already took it out of custody, so it is not netted out of the holdings
    /// (the merchant's `receivable` is its other side). Reported with `reorg_loss`.
    ReorgLossForwarded,
    /// Money at deposit addresses that no one has been credited with (a transfer recorded as
    /// `rejected`): held for whoever an operator's resolution names (`crate::resolutions`).
    Suspense,
    /// Funds the settler moved from the treasury to the operator's cold address (per chain and
    /// asset: `cold_storage` in the chain file); `ledger verify` compares it with that address.
    Cold,
}

text_enum! {
    AccountKind as "account kind" {
        Available = "available", Pending = "pending", Reserved = "reserved", InTransit = "in_transit",
        Receivable = "receivable", FeeRevenue = "fee_revenue", Custody = "custody", HotWallet = "hot_wallet",
        NetworkFees = "network_fees", OperatorCapital = "operator_capital", ReorgLoss = "reorg_loss",
        ReorgLossForwarded = "reorg_loss_forwarded", Suspense = "suspense", Cold = "cold",
    }
}

impl AccountKind {
    /// The side a posting must be on to increase the balance.
    pub fn normal_side(self) -> Side {
        match self {
            AccountKind::Available
            | AccountKind::Pending
            | AccountKind::Reserved
            | AccountKind::InTransit
            | AccountKind::FeeRevenue
            | AccountKind::OperatorCapital
            | AccountKind::ReorgLoss
            | AccountKind::ReorgLossForwarded
            | AccountKind::Suspense => Side::Credit,
            AccountKind::Receivable
            | AccountKind::Custody
            | AccountKind::HotWallet
            | AccountKind::NetworkFees
            | AccountKind::Cold => Side::Debit,
        }
    }

    /// Whether accounts of this kind belong to a merchant (else to the platform).
    pub fn is_merchant(self) -> bool {
        matches!(
            self,
            AccountKind::Available
                | AccountKind::Pending
                | AccountKind::Reserved
                | AccountKind::InTransit
                | AccountKind::Receivable
        )
    }
}

/// Why an entry was posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    /// A deposit was detected: it shows as pending.
    DepositPending,
    /// A deposit to an invoice confirmed: pending becomes available.
    DepositCredit,
    /// The same, for a payment that arrived after the invoice expired.
    LateDeposit,
    /// The same, for a deposit to a static address.
    StaticDeposit,
    /// The operator's fee on a payment.
    Fee,
    /// A payout's amount and network fee reserve move from available to reserved.
    PayoutReserve,
    /// A payout confirmed on chain: its reserve leaves the hot wallet (the unused fee reserve
    /// returns to available).
    PayoutSent,
    /// A payout that failed or was cancelled: its reserve returns to available.
    PayoutReleased,
    /// A pass-through invoice's money forwarded on chain to the merchant's own address.
    PassthroughSettlement,
    /// A refund (a payout linked to an invoice) confirmed on chain.
    Refund,
    /// Undoes the entry it points at.
    Reversal,
    /// Funds consolidated from a deposit address into the hot wallet.
    Sweep,
    /// Gas spent, or native coin moved to a deposit address to pay for it (a top-up).
    Gas,
    /// The operator funded the treasury from outside (gas money).
    TreasuryFunding,
    /// A transfer recorded but not credited (`rejected`): custody -> the platform's `suspense`.
    Suspense,
    /// An operator's resolution of a suspense deposit: `suspense` -> a merchant's balance, the
    /// platform's revenue, or (a refund, once sent) the hot wallet.
    SuspenseResolved,
    /// The treasury's excess moved to the operator's cold address.
    ColdTransfer,
}

text_enum! {
    EntryType as "entry type" {
        DepositPending = "deposit_pending", DepositCredit = "deposit_credit", LateDeposit = "late_deposit",
        StaticDeposit = "static_deposit", Fee = "fee", PayoutReserve = "payout_reserve", PayoutSent = "payout_sent",
        PayoutReleased = "payout_released", PassthroughSettlement = "passthrough_settlement", Refund = "refund",
        Reversal = "reversal", Sweep = "sweep", Gas = "gas", TreasuryFunding = "treasury_funding",
        Suspense = "suspense", SuspenseResolved = "suspense_resolved", ColdTransfer = "cold_transfer",
    }
}

/// The entry types that credit a confirmed deposit (exactly one live one per confirmed deposit),
/// as the SQL list the queries that count and sum credits use (a unit test keeps it in step with
/// [`EntryType`]).
pub(crate) const CREDIT_TYPES_SQL: &str = "('deposit_credit', 'late_deposit', 'static_deposit')";

/// Whose an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Platform,
    Merchant(Uuid),
}

impl Owner {
    /// The stored form: `platform` or the merchant id.
    pub fn key(self) -> String {
        match self {
            Owner::Platform => "platform".to_owned(),
            Owner::Merchant(id) => id.to_string(),
        }
    }

    pub(crate) fn parse(value: &str) -> Result<Owner, StoreError> {
        if value == "platform" {
            Ok(Owner::Platform)
        } else {
            Ok(Owner::Merchant(parse_column("ledger_accounts.owner", value)?))
        }
    }
}

/// An account: owner, kind and asset (a token symbol on a chain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Account {
    pub owner: Owner,
    pub kind: AccountKind,
    pub chain_id: u64,
    pub asset: String,
}

impl Account {
    pub fn merchant(merchant_id: Uuid, kind: AccountKind, chain_id: u64, asset: &str) -> Account {
        Account { owner: Owner::Merchant(merchant_id), kind, chain_id, asset: asset.to_owned() }
    }

    pub fn platform(kind: AccountKind, chain_id: u64, asset: &str) -> Account {
        Account { owner: Owner::Platform, kind, chain_id, asset: asset.to_owned() }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner {
            Owner::Platform => write!(f, "platform {} {} on chain {}", self.kind, self.asset, self.chain_id),
            Owner::Merchant(id) => {
                write!(f, "merchant {id} {} {} on chain {}", self.kind, self.asset, self.chain_id)
            }
        }
    }
}

/// One line of an entry to be posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub account: Account,
    pub side: Side,
    pub amount: BaseUnits,
    /// For a leg that lowers a balance: when the account holds less than `amount`, take what
    /// it holds and post the rest, on the same side, to this kind of account of the same owner
    /// (a reversal the merchant's `available` cannot cover becomes `receivable`).
    pub shortfall_to: Option<AccountKind>,
}

impl Leg {
    pub fn debit(account: Account, amount: BaseUnits) -> Leg {
        Leg { account, side: Side::Debit, amount, shortfall_to: None }
    }

    pub fn credit(account: Account, amount: BaseUnits) -> Leg {
        Leg { account, side: Side::Credit, amount, shortfall_to: None }
    }
}

/// What an entry is about (every field optional; a merchant's entries name the merchant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub merchant_id: Option<Uuid>,
    pub invoice_id: Option<Uuid>,
    pub deposit_id: Option<Uuid>,
    pub payout_id: Option<Uuid>,
    pub transaction_id: Option<Uuid>,
}

/// An entry to post.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub entry_type: EntryType,
    /// Names the cause, e.g. `deposit_credit:<deposit id>:<generation>`: one cause, one entry.
    pub idempotency_key: String,
    pub refs: Refs,
    pub reverses: Option<Uuid>,
    pub memo: Option<String>,
    pub legs: Vec<Leg>,
}

/// The outcome of [`post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Written now.
    New(Uuid),
    /// The idempotency key was posted before: that entry, unchanged.
    AlreadyPosted(Uuid),
}

impl Posted {
    pub fn id(self) -> Uuid {
        match self {
            Posted::New(id) | Posted::AlreadyPosted(id) => id,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// A programming error: the entry is malformed (unbalanced, empty, zero amounts...).
    #[error("ledger entry {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    /// The entry would take an account below zero; nothing was written.
    #[error("insufficient funds in {account}: it holds {balance} base units, the entry takes {needed}")]
    InsufficientFunds { account: Account, balance: BaseUnits, needed: BaseUnits },
    #[error("no ledger entry {0}")]
    EntryNotFound(Uuid),
    #[error("ledger entry {0} cannot be reversed: {1}")]
    NotReversible(Uuid, &'static str),
    #[error("a ledger balance overflowed 256 bits")]
    Overflow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> Self {
        LedgerError::Store(StoreError::from(error))
    }
}

impl From<LedgerError> for StoreError {
    /// For callers on the store's error type (the watcher's crediting): a refused posting there
    /// means stored data contradicts itself, which is corruption, never a client error.
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store(e) => e,
            other => StoreError::Corrupt(format!("ledger: {other}")),
        }
    }
}

/// Checks an entry's shape: at least two legs, no zero amounts, debits equal credits per asset,
/// merchant kinds owned by merchants, and shortfall targets that grow on the leg's side.
fn check_shape(entry: &NewEntry) -> Result<(), LedgerError> {
    let malformed = |reason: String| LedgerError::Malformed { key: entry.idempotency_key.clone(), reason };
    if entry.legs.len() < 2 {
        return Err(malformed("an entry needs at least two postings".into()));
    }
    let mut sums: BTreeMap<(u64, &str), (BaseUnits, BaseUnits)> = BTreeMap::new();
    for leg in &entry.legs {
        if leg.amount.is_zero() {
            return Err(malformed(format!("a zero posting to {}", leg.account)));
        }
        if leg.account.kind.is_merchant() != matches!(leg.account.owner, Owner::Merchant(_)) {
            return Err(malformed(format!("{} cannot be owned that way", leg.account)));
        }
        if let Some(kind) = leg.shortfall_to
            && (kind.normal_side() != leg.side
                || kind.is_merchant() != leg.account.kind.is_merchant()
                || leg.side == leg.account.kind.normal_side())
        {
            return Err(malformed(format!("shortfall of {} cannot go to {kind}", leg.account)));
        }
        let sum = sums.entry((leg.account.chain_id, leg.account.asset.as_str())).or_default();
        let side = if leg.side == Side::Debit { &mut sum.0 } else { &mut sum.1 };
        *side = side.checked_add(leg.amount).ok_or(LedgerError::Overflow)?;
    }
    if let Some(((chain_id, asset), (debits, credits))) = sums.iter().find(|(_, (d, c))| d != c) {
        return Err(malformed(format!("{asset} on chain {chain_id}: debits {debits} != credits {credits}")));
    }
    Ok(())
}

/// An account row, locked for this transaction.
struct Locked {
    id: String,
    balance: BaseUnits,
    changed: bool,
}

impl Locked {
    /// Applies a posting; `None` when it would go below zero.
    fn apply(&mut self, kind: AccountKind, side: Side, amount: BaseUnits) -> Option<()> {
        self.balance = if side == kind.normal_side() {
            self.balance.checked_add(amount)?
        } else {
            self.balance.checked_sub(amount)?
        };
        self.changed = true;
        Some(())
    }
}

/// Finds the account row, creating it at zero, and locks it until the transaction ends.
#[tracing::instrument(skip_all, fields(account = %account))]
async fn lock_account(conn: &mut Conn, account: &Account) -> Result<Locked, LedgerError> {
    let select = format!(
        "SELECT id, balance_base_units FROM ledger_accounts WHERE owner = $1 AND kind = $2 AND chain_id = $3 \
         AND asset = $4{}",
        Backend::of(conn).for_update()
    );
    for attempt in 0..2 {
        let row: Option<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(select.clone()))
            .bind(account.owner.key())
            .bind(account.kind)
            .bind(account.chain_id as i64)
            .bind(&account.asset)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some((id, balance)) = row {
            return Ok(Locked {
                id,
                balance: parse_column("ledger_accounts.balance_base_units", &balance)?,
                changed: false,
            });
        }
        if attempt == 0 {
            sqlx::query(
                "INSERT INTO ledger_accounts (id, owner, kind, chain_id, asset, balance_base_units, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, '0', $6) ON CONFLICT (owner, kind, chain_id, asset) DO NOTHING",
            )
            .bind(Uuid::now_v7().to_string())
            .bind(account.owner.key())
            .bind(account.kind)
            .bind(account.chain_id as i64)
            .bind(&account.asset)
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
        }
    }
    Err(StoreError::Corrupt(format!("ledger account {account} vanished after it was created")).into())
}

/// The id of the entry posted under `key`, if any.
#[tracing::instrument(skip(conn))]
async fn entry_by_key(conn: &mut Conn, key: &str) -> Result<Option<Uuid>, LedgerError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT id FROM ledger_entries WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|(id,)| parse_column("ledger_entries.id", &id)).transpose()?)
}

/// Posts an entry in the caller's transaction: all of it, or (on any error) no entry, posting or
/// balance change (the caller rolls back). Posting an idempotency key a second time returns
/// [`Posted::AlreadyPosted`] and writes nothing. A new entry that posts to a merchant's accounts
/// records that merchant's `balance.updated` event (and its deliveries) in the same transaction.
#[tracing::instrument(skip(conn, entry), fields(key = %entry.idempotency_key, entry_type = %entry.entry_type))]
pub async fn post(conn: &mut Tx, entry: NewEntry) -> Result<Posted, LedgerError> {
    check_shape(&entry)?;
    if let Some(id) = entry_by_key(conn, &entry.idempotency_key).await? {
        return Ok(Posted::AlreadyPosted(id));
    }
    // Lock every account the entry may touch, in one global order.
    let mut touched: BTreeSet<Account> = BTreeSet::new();
    for leg in &entry.legs {
        touched.insert(leg.account.clone());
        if let Some(kind) = leg.shortfall_to {
            touched.insert(Account { kind, ..leg.account.clone() });
        }
    }
    let mut accounts: BTreeMap<Account, Locked> = BTreeMap::new();
    for account in touched {
        let locked = lock_account(conn, &account).await?;
        accounts.insert(account, locked);
    }

    // Increases first, then decreases, so only the entry's net effect must be covered.
    let (increases, decreases): (Vec<&Leg>, Vec<&Leg>) =
        entry.legs.iter().partition(|leg| leg.side == leg.account.kind.normal_side());
    let mut postings: BTreeMap<(Account, Side), BaseUnits> = BTreeMap::new();
    let mut add_posting = |account: &Account, side: Side, amount: BaseUnits| -> Result<(), LedgerError> {
        let total = postings.entry((account.clone(), side)).or_default();
        *total = total.checked_add(amount).ok_or(LedgerError::Overflow)?;
        Ok(())
    };
    for leg in increases {
        let locked = accounts.get_mut(&leg.account).expect("locked above");
        locked.apply(leg.account.kind, leg.side, leg.amount).ok_or(LedgerError::Overflow)?;
        add_posting(&leg.account, leg.side, leg.amount)?;
    }
    for leg in decreases {
        let locked = accounts.get_mut(&leg.account).expect("locked above");
        let balance = locked.balance;
        if balance >= leg.amount {
            locked.apply(leg.account.kind, leg.side, leg.amount).expect("covered");
            add_posting(&leg.account, leg.side, leg.amount)?;
            continue;
        }
        let Some(kind) = leg.shortfall_to else {
            return Err(LedgerError::InsufficientFunds { account: leg.account.clone(), balance, needed: leg.amount });
        };
        if !balance.is_zero() {
            locked.apply(leg.account.kind, leg.side, balance).expect("covered");
            add_posting(&leg.account, leg.side, balance)?;
        }
        let rest = leg.amount.checked_sub(balance).expect("balance < amount");
        let target = Account { kind, ..leg.account.clone() };
        accounts.get_mut(&target).expect("locked above").apply(kind, leg.side, rest).ok_or(LedgerError::Overflow)?;
        add_posting(&target, leg.side, rest)?;
    }

    // Checked: now write. A concurrent poster of the same key (PostgreSQL) makes the insert a no-op.
    let id = Uuid::now_v7();
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO ledger_entries (id, entry_type, idempotency_key, reverses_entry_id, merchant_id, invoice_id, \
         deposit_id, payout_id, transaction_id, memo, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(Text(id))
    .bind(entry.entry_type)
    .bind(&entry.idempotency_key)
    .bind(entry.reverses.map(Text))
    .bind(entry.refs.merchant_id.map(Text))
    .bind(entry.refs.invoice_id.map(Text))
    .bind(entry.refs.deposit_id.map(Text))
    .bind(entry.refs.payout_id.map(Text))
    .bind(entry.refs.transaction_id.map(Text))
    .bind(&entry.memo)
    .bind(now)
    .execute(&mut **conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            LedgerError::NotReversible(entry.reverses.unwrap_or_default(), "it has been reversed already")
        }
        _ => LedgerError::from(e),
    })?;
    if inserted.rows_affected() == 0 {
        let existing = entry_by_key(conn, &entry.idempotency_key).await?;
        return Ok(Posted::AlreadyPosted(existing.ok_or_else(|| {
            StoreError::Corrupt(format!("ledger entry {} conflicted but is not there", entry.idempotency_key))
        })?));
    }
    for ((account, side), amount) in &postings {
        let locked = &accounts[account];
        sqlx::query(
            "INSERT INTO ledger_postings (entry_id, account_id, direction, amount_base_units, balance_after) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(Text(id))
        .bind(&locked.id)
        .bind(side)
        .bind(*amount)
        .bind(locked.balance)
        .execute(&mut **conn)
        .await?;
    }
    for locked in accounts.values().filter(|l| l.changed) {
        sqlx::query("UPDATE ledger_accounts SET balance_base_units = $1, updated_at = $2 WHERE id = $3")
            .bind(locked.balance)
            .bind(now)
            .bind(&locked.id)
            .execute(&mut **conn)
            .await?;
    }
    let after: BTreeMap<Account, BaseUnits> = accounts.into_iter().map(|(a, l)| (a, l.balance)).collect();
    balance_events::record(conn, id, &entry, now, &postings, &after).await?;
    Ok(Posted::New(id))
}

/// A stored entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: Uuid,
    pub entry_type: EntryType,
    pub idempotency_key: String,
    pub reverses: Option<Uuid>,
    pub refs: Refs,
    pub memo: Option<String>,
    pub created_at: i64,
}

const ENTRY_COLUMNS: &str = "id, entry_type, idempotency_key, reverses_entry_id, merchant_id, invoice_id, deposit_id, \
    payout_id, transaction_id, memo, created_at";

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: Text<Uuid>,
    entry_type: EntryType,
    idempotency_key: String,
    reverses_entry_id: Option<Text<Uuid>>,
    merchant_id: Option<Text<Uuid>>,
    invoice_id: Option<Text<Uuid>>,
    deposit_id: Option<Text<Uuid>>,
    payout_id: Option<Text<Uuid>>,
    transaction_id: Option<Text<Uuid>>,
    memo: Option<String>,
    created_at: i64,
}

fn entry_from_row(r: EntryRow) -> Result<Entry, StoreError> {
    Ok(Entry {
        id: r.id.0,
        entry_type: r.entry_type,
        idempotency_key: r.idempotency_key,
        reverses: opt(r.reverses_entry_id),
        refs: Refs {
            merchant_id: opt(r.merchant_id),
            invoice_id: opt(r.invoice_id),
            deposit_id: opt(r.deposit_id),
            payout_id: opt(r.payout_id),
            transaction_id: opt(r.transaction_id),
        },
        memo: r.memo,
        created_at: r.created_at,
    })
}

/// A stored posting with its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub entry_id: Uuid,
    pub account: Account,
    pub side: Side,
    pub amount: BaseUnits,
    /// The account's balance right after the entry.
    pub balance_after: BaseUnits,
}

#[derive(sqlx::FromRow)]
struct PostingRow {
    entry_id: Text<Uuid>,
    /// `platform` or the merchant's id (see [`Owner::parse`]).
    owner: String,
    kind: AccountKind,
    chain_id: i64,
    asset: String,
    direction: Side,
    amount_base_units: Text<BaseUnits>,
    balance_after: Text<BaseUnits>,
}

const POSTING_COLUMNS: &str = "p.entry_id, a.owner, a.kind, a.chain_id, a.asset, p.direction, p.amount_base_units, \
    p.balance_after";

fn posting_from_row(r: PostingRow) -> Result<Posting, StoreError> {
    Ok(Posting {
        entry_id: r.entry_id.0,
        account: Account { owner: Owner::parse(&r.owner)?, kind: r.kind, chain_id: r.chain_id as u64, asset: r.asset },
        side: r.direction,
        amount: r.amount_base_units.0,
        balance_after: r.balance_after.0,
    })
}

/// One entry with all its postings.
#[tracing::instrument(skip(conn))]
pub async fn entry(conn: &mut Conn, id: Uuid) -> Result<Option<(Entry, Vec<Posting>)>, StoreError> {
    let row: Option<EntryRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE id = $1")))
            .bind(Text(id))
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let postings: Vec<PostingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {POSTING_COLUMNS} FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE p.entry_id = $1 ORDER BY a.kind, p.direction"
    )))
    .bind(Text(id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((entry_from_row(row)?, postings.into_iter().map(posting_from_row).collect::<Result<_, _>>()?)))
}

/// Posts the mirror image of entry `id` as a `reversal` that points at it (idempotent: an
/// entry is reversed once). A reversal is never refused for want of funds, and no balance goes
/// negative:
/// - where the mirror lowers a merchant's `available` (or `in_transit`) below zero, the rest goes
///   to the merchant's `receivable`: what a merchant no longer holds (spent, or forwarded on
///   chain) it owes;
/// - where it lowers the platform's `custody` below zero (the money left the deposit addresses:
///   swept, forwarded), the rest goes to the platform's `reorg_loss`.
#[tracing::instrument(skip(conn))]
pub async fn reverse(conn: &mut Tx, id: Uuid, memo: Option<String>) -> Result<Posted, LedgerError> {
    reverse_within(conn, id, memo, None).await
}

/// What a deposit's address still holds by the ledger, and how its money left: the limits of a
/// reorg's reversal (see [`reverse_within`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CustodyLimit {
    /// What custody still holds at the address: at most this is taken out of `custody`.
    pub held: BaseUnits,
    /// What was swept from the address into the treasury and not yet counted as a loss: at most
    /// this of the rest goes to `reorg_loss`; the rest was forwarded (`reorg_loss_forwarded`).
    pub swept: BaseUnits,
}

/// [`reverse`], taking at most `limit.held` out of `custody` (what the reversed deposit's own
/// address still holds by the ledger: custody is one account per chain and asset, and another
/// address's money must not pay for this one's loss); the rest of the custody legs goes to
/// `reorg_loss` up to `limit.swept` (it is in the treasury's `hot_wallet` by the ledger) and the
/// rest to `reorg_loss_forwarded` (it left custody by a forward).
#[tracing::instrument(skip(conn))]
pub(crate) async fn reverse_within(
    conn: &mut Tx,
    id: Uuid,
    memo: Option<String>,
    mut limit: Option<CustodyLimit>,
) -> Result<Posted, LedgerError> {
    let key = format!("reversal:{id}");
    if let Some(existing) = entry_by_key(conn, &key).await? {
        return Ok(Posted::AlreadyPosted(existing));
    }
    let (original, postings) = entry(conn, id).await?.ok_or(LedgerError::EntryNotFound(id))?;
    if original.entry_type == EntryType::Reversal {
        return Err(LedgerError::NotReversible(id, "a reversal is not reversed; post the movement anew"));
    }
    let mut legs = Vec::with_capacity(postings.len() + 1);
    for p in postings {
        let side = p.side.opposite();
        let lowers = side != p.account.kind.normal_side();
        let shortfall_to = match p.account.kind {
            AccountKind::Available | AccountKind::InTransit if lowers => Some(AccountKind::Receivable),
            AccountKind::Custody if lowers => Some(AccountKind::ReorgLoss),
            _ => None,
        };
        if let (AccountKind::Custody, true, Some(limit)) = (p.account.kind, lowers, limit.as_mut()) {
            let taken = p.amount.min(limit.held);
            limit.held = limit.held.checked_sub(taken).expect("taken <= limit");
            let lost = p.amount.checked_sub(taken).expect("taken <= amount");
            let swept = lost.min(limit.swept);
            limit.swept = limit.swept.checked_sub(swept).expect("swept <= limit");
            let forwarded = lost.checked_sub(swept).expect("swept <= lost");
            if !swept.is_zero() {
                legs.push(Leg::credit(Account { kind: AccountKind::ReorgLoss, ..p.account.clone() }, swept));
            }
            if !forwarded.is_zero() {
                legs.push(Leg::credit(
                    Account { kind: AccountKind::ReorgLossForwarded, ..p.account.clone() },
                    forwarded,
                ));
            }
            if !taken.is_zero() {
                legs.push(Leg { account: p.account, side, amount: taken, shortfall_to });
            }
            continue;
        }
        legs.push(Leg { account: p.account, side, amount: p.amount, shortfall_to });
    }
    post(
        conn,
        NewEntry {
            entry_type: EntryType::Reversal,
            idempotency_key: key,
            refs: original.refs,
            reverses: Some(id),
            memo: memo.or_else(|| Some(format!("reverses {} {}", original.entry_type, original.id))),
            legs,
        },
    )
    .await
}

/// The balance of one account (zero when it has never been posted to).
#[tracing::instrument(skip(conn))]
pub async fn balance(conn: &mut Conn, account: &Account) -> Result<BaseUnits, StoreError> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT balance_base_units FROM ledger_accounts WHERE owner = $1 AND kind = $2 AND chain_id = $3 AND asset = $4",
    )
    .bind(account.owner.key())
    .bind(account.kind)
    .bind(account.chain_id as i64)
    .bind(&account.asset)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|(b,)| parse_column("ledger_accounts.balance_base_units", &b)).transpose().map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(kind: AccountKind, side: Side, amount: u64) -> Leg {
        let account = if kind.is_merchant() {
            Account::merchant(Uuid::nil(), kind, 1, "USDC")
        } else {
            Account::platform(kind, 1, "USDC")
        };
        Leg { account, side, amount: BaseUnits::from(amount), shortfall_to: None }
    }

    fn entry(legs: Vec<Leg>) -> NewEntry {
        NewEntry {
            entry_type: EntryType::Fee,
            idempotency_key: "k".into(),
            refs: Refs::default(),
            reverses: None,
            memo: None,
            legs,
        }
    }

    #[test]
    fn entries_must_balance_per_asset() {
        let ok = entry(vec![leg(AccountKind::Custody, Side::Debit, 5), leg(AccountKind::Pending, Side::Credit, 5)]);
        assert!(check_shape(&ok).is_ok());
        let unbalanced =
            entry(vec![leg(AccountKind::Custody, Side::Debit, 5), leg(AccountKind::Pending, Side::Credit, 4)]);
        assert!(matches!(check_shape(&unbalanced), Err(LedgerError::Malformed { .. })));
        let mut other_asset = leg(AccountKind::Pending, Side::Credit, 5);
        other_asset.account.asset = "USDT".into();
        assert!(check_shape(&entry(vec![leg(AccountKind::Custody, Side::Debit, 5), other_asset])).is_err());
        assert!(check_shape(&entry(vec![leg(AccountKind::Custody, Side::Debit, 0)])).is_err());
        let zero = entry(vec![leg(AccountKind::Custody, Side::Debit, 0), leg(AccountKind::Pending, Side::Credit, 0)]);
        assert!(check_shape(&zero).is_err());
    }

    #[test]
    fn the_credit_types_list_names_the_credit_entry_types() {
        let names =
            [EntryType::DepositCredit, EntryType::LateDeposit, EntryType::StaticDeposit].map(|t| format!("'{t}'"));
        assert_eq!(CREDIT_TYPES_SQL, format!("({})", names.join(", ")));
    }

    #[test]
    fn owners_and_shortfalls_are_checked() {
        let mut wrong_owner = leg(AccountKind::Available, Side::Credit, 5);
        wrong_owner.account.owner = Owner::Platform;
        assert!(check_shape(&entry(vec![leg(AccountKind::Custody, Side::Debit, 5), wrong_owner])).is_err());
        let mut bad_shortfall = leg(AccountKind::Available, Side::Debit, 5);
        bad_shortfall.shortfall_to = Some(AccountKind::Pending); // would shrink pending, not grow a debt
        assert!(check_shape(&entry(vec![bad_shortfall, leg(AccountKind::FeeRevenue, Side::Credit, 5)])).is_err());
        let mut good_shortfall = leg(AccountKind::Available, Side::Debit, 5);
        good_shortfall.shortfall_to = Some(AccountKind::Receivable);
        assert!(check_shape(&entry(vec![good_shortfall, leg(AccountKind::Pending, Side::Credit, 5)])).is_ok());
        // A reversal's custody leg that custody cannot cover grows the platform's reorg_loss...
        let mut lost = leg(AccountKind::Custody, Side::Credit, 5);
        lost.shortfall_to = Some(AccountKind::ReorgLoss);
        assert!(check_shape(&entry(vec![leg(AccountKind::Pending, Side::Debit, 5), lost])).is_ok());
        // ...never a merchant's account, and never on the side that would shrink it.
        let mut to_merchant = leg(AccountKind::Custody, Side::Credit, 5);
        to_merchant.shortfall_to = Some(AccountKind::Available);
        assert!(check_shape(&entry(vec![leg(AccountKind::Pending, Side::Debit, 5), to_merchant])).is_err());
        let mut shrinking = leg(AccountKind::FeeRevenue, Side::Debit, 5);
        shrinking.shortfall_to = Some(AccountKind::ReorgLoss);
        assert!(check_shape(&entry(vec![shrinking, leg(AccountKind::Available, Side::Credit, 5)])).is_err());
    }

    #[test]
    fn reorg_loss_is_a_platform_contra_account_to_its_holdings() {
        assert_eq!(AccountKind::ReorgLoss.normal_side(), Side::Credit);
        assert!(!AccountKind::ReorgLoss.is_merchant());
        assert_eq!("reorg_loss".parse::<AccountKind>().unwrap(), AccountKind::ReorgLoss);
        assert_eq!(AccountKind::ReorgLossForwarded.normal_side(), Side::Credit);
        assert!(!AccountKind::ReorgLossForwarded.is_merchant());
        assert_eq!("reorg_loss_forwarded".parse::<AccountKind>().unwrap(), AccountKind::ReorgLossForwarded);
    }
}
