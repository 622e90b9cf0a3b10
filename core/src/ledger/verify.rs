//! Reconciliation of the ledger against itself and the deposits: what `depositd ledger verify`
//! and the daemon's periodic check run. (The comparison with on-chain balances needs RPC and lives
//! in the binary; it uses [`Report::held`].)
//!
//! Checks:
//! 1. every entry has at least two postings and balances (debits = credits) per asset;
//! 2. every account's stored balance equals the sum of its postings, and no sum is negative;
//! 3. every confirmed deposit of a merchant has exactly one live (unreversed) credit, and every
//!    other deposit none;
//! 4. every confirmed transfer in suspense (recorded `rejected`, with an amount) has exactly one
//!    live `suspense` entry.
//!
//! It also sums, per chain and asset, what the on-chain checks compare: what the ledger holds
//! (custody and hot wallet), what a reorg took of it (`reorg_loss`) and what it owes merchants.
//!
//! Postings are read in pages, so memory stays bounded by the number of accounts, not entries.
//! Run it in one snapshot (`Store::begin_snapshot`): otherwise entries committed between its
//! queries would look like mismatches.

use std::collections::{BTreeMap, HashMap};

use alloy::primitives::{Address, U256};

use super::{Account, AccountKind, CREDIT_TYPES_SQL, Owner, Side};
use crate::chain_tx::Purpose;
use crate::money::BaseUnits;
use crate::store::codec::Text;
use crate::store::{Conn, StoreError, parse_column};

/// Postings read per query.
const PAGE: i64 = 10_000;

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub entries: u64,
    pub postings: u64,
    pub accounts: u64,
    pub deposits: u64,
    /// One readable line per problem; empty when everything reconciles.
    pub problems: Vec<String>,
    /// What the ledger says the platform holds on chain, per (chain id, asset): custody plus hot
    /// wallet. On-chain balances must cover it, less [`Report::reorg_loss_swept`].
    pub held: BTreeMap<(u64, String), BaseUnits>,
    /// The platform's reorg losses per (chain id, asset), `reorg_loss` plus
    /// `reorg_loss_forwarded`: what a reorg took away after it had been swept into the treasury
    /// or forwarded to a merchant. Nonzero only after such a reorg; reported, and not a problem
    /// by itself (the solvency check says what it costs).
    pub reorg_loss: BTreeMap<(u64, String), BaseUnits>,
    /// Its `reorg_loss` part alone: what `held` (the treasury's `hot_wallet`, by the sweeps'
    /// entries) overstates. Only this is netted out by the cover check: a forward's entry
    /// already took its money out of custody.
    pub reorg_loss_swept: BTreeMap<(u64, String), BaseUnits>,
    /// What the ledger owes merchants per (chain id, asset): their `available`, `pending`,
    /// `reserved` and `in_transit` (see [`owes_merchants`]). The solvency check compares it with
    /// what the chain holds.
    pub owed: BTreeMap<(u64, String), BaseUnits>,
}

/// Whether a balance of this kind is money the platform owes a merchant, which what it holds on
/// chain must cover: everything a merchant can be paid or is being paid (`available`,
/// `reserved`), will be (`pending`) or is owed a forward (`in_transit`). A merchant's
/// `receivable` is not subtracted: it is a claim on that merchant, not money on chain, and the
/// platform must be able to pay every other merchant before it is collected.
pub fn owes_merchants(kind: AccountKind) -> bool {
    matches!(kind, AccountKind::Available | AccountKind::Pending | AccountKind::Reserved | AccountKind::InTransit)
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Per account: what its postings added and took away.
#[derive(Default)]
struct Sums {
    up: BaseUnits,
    down: BaseUnits,
}

/// Debits and credits of one entry, per (chain id, asset).
type EntrySums = BTreeMap<(u64, String), (BaseUnits, BaseUnits)>;

/// Check 1 for one entry, then clears its sums for the next.
fn finish_entry(entry: &str, legs: u32, per_asset: &mut EntrySums, problems: &mut Vec<String>) {
    if legs < 2 {
        problems.push(format!("entry {entry} has {legs} posting(s); an entry needs at least two"));
    }
    for ((chain_id, asset), (debits, credits)) in per_asset.iter() {
        if debits != credits {
            problems.push(format!(
                "entry {entry} does not balance in {asset} on chain {chain_id}: debits {debits}, credits {credits}"
            ));
        }
    }
    per_asset.clear();
}

/// Runs checks 1 to 4 (see the module doc). Read-only.
#[tracing::instrument(skip(conn))]
pub async fn verify(conn: &mut Conn) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let overflow = || StoreError::Corrupt("a ledger sum overflowed 256 bits".into());

    #[derive(sqlx::FromRow)]
    struct AccountRow {
        id: String,
        owner: String,
        kind: AccountKind,
        chain_id: i64,
        asset: String,
        balance_base_units: Text<BaseUnits>,
    }
    let account_rows: Vec<AccountRow> =
        sqlx::query_as("SELECT id, owner, kind, chain_id, asset, balance_base_units FROM ledger_accounts")
            .fetch_all(&mut *conn)
            .await?;
    let mut accounts: HashMap<String, (Account, BaseUnits)> = HashMap::with_capacity(account_rows.len());
    for r in account_rows {
        let account =
            Account { owner: Owner::parse(&r.owner)?, kind: r.kind, chain_id: r.chain_id as u64, asset: r.asset };
        accounts.insert(r.id, (account, r.balance_base_units.0));
    }
    report.accounts = accounts.len() as u64;

    // 1 and 2: one pass over the postings in entry order.
    let mut sums: HashMap<String, Sums> = HashMap::new();
    let mut current: Option<String> = None;
    let mut legs = 0u32;
    let mut per_asset = EntrySums::new();
    let mut cursor = (String::new(), String::new(), String::new());
    #[derive(sqlx::FromRow)]
    struct PostingRow {
        entry_id: String,
        account_id: String,
        direction: Side,
        amount_base_units: Text<BaseUnits>,
    }
    loop {
        let page: Vec<PostingRow> = sqlx::query_as(
            "SELECT entry_id, account_id, direction, amount_base_units FROM ledger_postings \
             WHERE entry_id > $1 OR (entry_id = $1 AND (account_id > $2 OR (account_id = $2 AND direction > $3))) \
             ORDER BY entry_id, account_id, direction LIMIT $4",
        )
        .bind(&cursor.0)
        .bind(&cursor.1)
        .bind(&cursor.2)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let done = (page.len() as i64) < PAGE;
        for PostingRow { entry_id, account_id, direction: side, amount_base_units: Text(amount) } in page {
            report.postings += 1;
            if current.as_deref() != Some(entry_id.as_str()) {
                if let Some(previous) = current.take() {
                    finish_entry(&previous, legs, &mut per_asset, &mut report.problems);
                }
                current = Some(entry_id.clone());
                legs = 0;
            }
            legs += 1;
            let Some((account, _)) = accounts.get(&account_id) else {
                report.problems.push(format!("entry {entry_id} posts to unknown account {account_id}"));
                continue;
            };
            let totals = per_asset.entry((account.chain_id, account.asset.clone())).or_default();
            let total = if side == Side::Debit { &mut totals.0 } else { &mut totals.1 };
            *total = total.checked_add(amount).ok_or_else(overflow)?;
            let sum = sums.entry(account_id.clone()).or_default();
            let grows = side == account.kind.normal_side();
            let target = if grows { &mut sum.up } else { &mut sum.down };
            *target = target.checked_add(amount).ok_or_else(overflow)?;
            cursor = (entry_id, account_id, side.as_str().to_owned());
        }
        if done {
            break;
        }
    }
    if let Some(previous) = current.take() {
        finish_entry(&previous, legs, &mut per_asset, &mut report.problems);
    }
    let (entries,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ledger_entries").fetch_one(&mut *conn).await?;
    report.entries = entries as u64;
    let empty: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM ledger_entries e WHERE NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id) \
         LIMIT 20",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id,) in empty {
        report.problems.push(format!("entry {id} has no postings"));
    }

    let mut ids: Vec<&String> = accounts.keys().collect();
    ids.sort();
    for id in ids {
        let (account, stored) = &accounts[id];
        let sum = sums.remove(id).unwrap_or_default();
        match sum.up.checked_sub(sum.down) {
            None => report
                .problems
                .push(format!("{account} is negative: its postings add {} and take {}", sum.up, sum.down)),
            Some(total) if total != *stored => {
                report.problems.push(format!("{account}: stored balance {stored} but its postings sum to {total}"))
            }
            Some(_) => {}
        }
        let totals = match account.kind {
            AccountKind::Custody | AccountKind::HotWallet if account.owner == Owner::Platform => Some(&mut report.held),
            AccountKind::ReorgLoss | AccountKind::ReorgLossForwarded if account.owner == Owner::Platform => {
                Some(&mut report.reorg_loss)
            }
            kind if owes_merchants(kind) => Some(&mut report.owed),
            _ => None,
        };
        if account.kind == AccountKind::ReorgLoss && account.owner == Owner::Platform {
            let total = report.reorg_loss_swept.entry((account.chain_id, account.asset.clone())).or_default();
            *total = total.checked_add(*stored).ok_or_else(overflow)?;
        }
        if let Some(totals) = totals {
            let total = totals.entry((account.chain_id, account.asset.clone())).or_default();
            *total = total.checked_add(*stored).ok_or_else(overflow)?;
        }
    }

    // 3: confirmed deposits are credited exactly once, the others not at all.
    #[derive(sqlx::FromRow)]
    struct DepositRow {
        id: String,
        state: String,
        tx_hash: String,
        credits: i64,
    }
    let deposits: Vec<DepositRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT d.id, d.state, d.tx_hash, (SELECT COUNT(*) FROM ledger_entries e WHERE e.deposit_id = d.id \
         AND e.entry_type IN {CREDIT_TYPES_SQL} \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)) AS credits \
         FROM deposits d WHERE d.merchant_id IS NOT NULL AND d.state <> 'rejected'"
    )))
    .fetch_all(&mut *conn)
    .await?;
    report.deposits = deposits.len() as u64;
    for DepositRow { id, state, tx_hash, credits } in deposits {
        let expected = i64::from(state == "confirmed");
        if credits != expected {
            report.problems.push(format!(
                "deposit {id} (tx {tx_hash}) is {state} and has {credits} live credit(s); expected {expected}"
            ));
        }
    }

    // 4: confirmed transfers in suspense are posted there once.
    let parked: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT d.id, d.tx_hash, (SELECT COUNT(*) FROM ledger_entries e WHERE e.deposit_id = d.id \
         AND e.entry_type = 'suspense' AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)) \
         FROM deposits d WHERE d.state = 'rejected' AND d.confirmed_at IS NOT NULL AND d.amount_base_units <> '0'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id, tx_hash, live) in parked {
        if live != 1 {
            report.problems.push(format!(
                "transfer {id} (tx {tx_hash}) is rejected and confirmed and has {live} live suspense entries; expected 1"
            ));
        }
    }
    Ok(report)
}

/// The ledger's custody on one chain split by deposit address, per `(address, asset)`.
#[derive(Debug, Clone, Default)]
pub struct CustodyByAddress {
    pub at: BTreeMap<(Address, String), Explained>,
    /// Custody postings whose entry names neither a deposit nor a transaction, so no address:
    /// each is a problem (every custody movement has one or the other).
    pub unattributed: Vec<String>,
}

/// What explains the balance of one asset at one deposit address (see the surplus check in
/// `src/reconcile.rs`). All exact base units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explained {
    /// Custody postings attributed to the address: what came in (live deposits, gas top-ups)...
    pub ledger_in: BaseUnits,
    /// ...and what went out (sweeps, forwards, the gas they burned, reversals).
    pub ledger_out: BaseUnits,
    /// What may be there although the ledger does not count it yet or any more: gas top-ups in
    /// flight to the address, and what the ledger has taken out for sweeps and forwards mined
    /// after the block the balance is read at.
    pub in_flight: BaseUnits,
    /// Transfers the watcher recorded as rejected: known, deliberately not credited.
    pub rejected: BaseUnits,
}

/// One address's balance against what explains it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assessment {
    pub on_chain: BaseUnits,
    /// The most the ledger and the transactions in flight explain.
    pub explained: BaseUnits,
    /// The part of the surplus the rejected transfers account for.
    pub known_uncredited: BaseUnits,
    /// The rest: money nothing depositd recorded accounts for (a missed deposit).
    pub unexplained: BaseUnits,
}

impl Explained {
    /// What the ledger holds at the address (never below zero: a ledger that took more out than
    /// it put in explains nothing there, and the cover check reports any shortfall).
    pub fn by_ledger(&self) -> BaseUnits {
        self.ledger_in.checked_sub(self.ledger_out).unwrap_or_default()
    }

    /// Compares `on_chain` with what explains it. Only a surplus counts: a balance below what
    /// the ledger explains (gas an L2 charges beyond the receipt, a payment in flight) is the
    /// cover check's business, so effects that only lower a balance never fail this one.
    pub fn assess(&self, on_chain: BaseUnits) -> Assessment {
        let explained = self.by_ledger().checked_add(self.in_flight).unwrap_or(BaseUnits(U256::MAX));
        let surplus = on_chain.checked_sub(explained).unwrap_or_default();
        let known_uncredited = surplus.min(self.rejected);
        let unexplained = surplus.checked_sub(known_uncredited).unwrap_or_default();
        Assessment { on_chain, explained, known_uncredited, unexplained }
    }
}

/// Splits the platform's custody on `chain_id` by address: a deposit's postings belong to the
/// address it paid, a gas top-up's to the address it went to, a sweep's or forward's (and their
/// gas) to the address that signed it. Reversals carry their original's references, so they land
/// where the original did. Read in the same snapshot as [`verify`].
#[tracing::instrument(skip(conn))]
pub async fn custody_by_address(conn: &mut Conn, chain_id: u64) -> Result<CustodyByAddress, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        entry_id: String,
        account_id: String,
        direction: Side,
        amount_base_units: Text<BaseUnits>,
        asset: String,
        /// The deposit's address, when the entry is a deposit's.
        deposit_to: Option<String>,
        /// The transaction's purpose, signer and recipient, when the entry is a transaction's.
        purpose: Option<Purpose>,
        signer: Option<String>,
        tx_to: Option<String>,
    }
    let mut out = CustodyByAddress::default();
    let overflow = || StoreError::Corrupt("a custody sum overflowed 256 bits".into());
    let mut cursor = (String::new(), String::new(), String::new());
    loop {
        let page: Vec<Row> = sqlx::query_as(
            "SELECT p.entry_id, p.account_id, p.direction, p.amount_base_units, a.asset, d.to_address AS deposit_to, \
             t.purpose, t.signer_address AS signer, t.to_address AS tx_to FROM ledger_postings p \
             JOIN ledger_accounts a ON a.id = p.account_id JOIN ledger_entries e ON e.id = p.entry_id \
             LEFT JOIN deposits d ON d.id = e.deposit_id LEFT JOIN chain_transactions t ON t.id = e.transaction_id \
             WHERE a.owner = 'platform' AND a.kind = 'custody' AND a.chain_id = $1 \
             AND (p.entry_id > $2 OR (p.entry_id = $2 AND (p.account_id > $3 \
             OR (p.account_id = $3 AND p.direction > $4)))) \
             ORDER BY p.entry_id, p.account_id, p.direction LIMIT $5",
        )
        .bind(chain_id as i64)
        .bind(&cursor.0)
        .bind(&cursor.1)
        .bind(&cursor.2)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let done = (page.len() as i64) < PAGE;
        for Row {
            entry_id,
            account_id,
            direction: side,
            amount_base_units: Text(amount),
            asset,
            deposit_to,
            purpose,
            signer,
            tx_to,
        } in page
        {
            match attributed_address(deposit_to, purpose, signer, tx_to) {
                Some(address) => {
                    let address: Address = parse_column("deposit address", &address)?;
                    let at = out.at.entry((address, asset)).or_default();
                    let total = if side == Side::Debit { &mut at.ledger_in } else { &mut at.ledger_out };
                    *total = total.checked_add(amount).ok_or_else(overflow)?;
                }
                None => out.unattributed.push(format!(
                    "entry {entry_id} posts {amount} base units of {asset} to custody on chain {chain_id} but names \
                     no deposit or transaction, so no address"
                )),
            }
            cursor = (entry_id, account_id, side.as_str().to_owned());
        }
        if done {
            break;
        }
    }
    Ok(out)
}

/// The deposit address a custody posting belongs to (see [`custody_by_address`]): a deposit's
/// to the address it paid, a gas top-up's to the address it went to, a sweep's or forward's (and
/// their gas) to the address that signed it.
fn attributed_address(
    deposit_to: Option<String>,
    purpose: Option<Purpose>,
    signer: Option<String>,
    tx_to: Option<String>,
) -> Option<String> {
    match (deposit_to, purpose) {
        (Some(to), _) => Some(to),
        (None, Some(Purpose::GasTopup)) => tx_to,
        (None, Some(_)) => signer,
        (None, None) => None,
    }
}

/// What the ledger says about one deposit address: what a reorg's reversal may take out of
/// custody there, and how much of what left it went into the treasury.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CustodyAt {
    /// What the ledger's custody holds of the asset at the address (its share of
    /// [`custody_by_address`], attributed the same way), never below zero.
    pub held: BaseUnits,
    /// What sweeps took from the address into the treasury (the `hot_wallet`), less the
    /// `reorg_loss` already posted (net of recoveries) for deposits to the address, never below
    /// zero: the most a reversal may post to `reorg_loss` (netted out of the holdings by the
    /// cover check); the rest left by forwards (`reorg_loss_forwarded`).
    pub swept: BaseUnits,
}

/// [`CustodyAt`] for `asset` at one deposit address. A reorg's reversal takes at most `held`
/// out of custody: the rest of the deposit has left the address (see `deposits::post_removal`).
/// Reads in the caller's transaction, so reversals posted earlier in it count.
#[tracing::instrument(skip(conn))]
pub async fn custody_at(
    conn: &mut Conn,
    chain_id: u64,
    asset: &str,
    address: Address,
) -> Result<CustodyAt, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        kind: AccountKind,
        direction: Side,
        amount_base_units: Text<BaseUnits>,
        deposit_to: Option<String>,
        purpose: Option<Purpose>,
        signer: Option<String>,
        tx_to: Option<String>,
    }
    // Candidates by any of the three addresses (stored checksummed or not); the attribution
    // below decides which are this address's.
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.kind, p.direction, p.amount_base_units, d.to_address AS deposit_to, t.purpose, \
         t.signer_address AS signer, t.to_address AS tx_to FROM ledger_postings p \
         JOIN ledger_accounts a ON a.id = p.account_id JOIN ledger_entries e ON e.id = p.entry_id \
         LEFT JOIN deposits d ON d.id = e.deposit_id LEFT JOIN chain_transactions t ON t.id = e.transaction_id \
         WHERE a.owner = 'platform' AND a.kind IN ('custody', 'reorg_loss') AND a.chain_id = $1 AND a.asset = $2 \
         AND (LOWER(d.to_address) = $3 OR LOWER(t.signer_address) = $3 OR LOWER(t.to_address) = $3)",
    )
    .bind(chain_id as i64)
    .bind(asset)
    .bind(format!("{address:#x}"))
    .fetch_all(&mut *conn)
    .await?;
    let overflow = || StoreError::Corrupt("a custody sum overflowed 256 bits".into());
    let mut at = Explained::default();
    let (mut swept_out, mut lost, mut recovered) = (BaseUnits::ZERO, BaseUnits::ZERO, BaseUnits::ZERO);
    for Row { kind, direction, amount_base_units: Text(amount), deposit_to, purpose, signer, tx_to } in rows {
        let Some(owner) = attributed_address(deposit_to, purpose, signer, tx_to) else { continue };
        if parse_column::<Address>("deposit address", &owner)? != address {
            continue;
        }
        let total = match (kind, direction) {
            (AccountKind::ReorgLoss, Side::Credit) => &mut lost,
            (AccountKind::ReorgLoss, Side::Debit) => &mut recovered,
            (_, Side::Debit) => &mut at.ledger_in,
            (_, Side::Credit) => &mut at.ledger_out,
        };
        *total = total.checked_add(amount).ok_or_else(overflow)?;
        if kind == AccountKind::Custody && direction == Side::Credit && purpose == Some(Purpose::Sweep) {
            swept_out = swept_out.checked_add(amount).ok_or_else(overflow)?;
        }
    }
    let net_lost = lost.checked_sub(recovered).unwrap_or_default();
    Ok(CustodyAt { held: at.by_ledger(), swept: swept_out.checked_sub(net_lost).unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(n: u64) -> BaseUnits {
        BaseUnits::from(n)
    }

    #[test]
    fn only_a_surplus_beyond_the_ledger_and_in_flight_is_unexplained() {
        let at = Explained { ledger_in: units(100), ledger_out: units(30), in_flight: units(5), rejected: units(0) };
        assert_eq!(at.by_ledger(), units(70));
        // Exactly what is explained, or less (gas beyond the receipt, a payment leaving): nothing.
        for balance in [75, 70, 0] {
            assert_eq!(at.assess(units(balance)).unexplained, units(0), "balance {balance}");
        }
        let found = at.assess(units(82));
        assert_eq!((found.explained, found.known_uncredited, found.unexplained), (units(75), units(0), units(7)));
    }

    #[test]
    fn rejected_transfers_explain_what_they_can_and_no_more() {
        let at = Explained { ledger_in: units(10), ledger_out: units(0), in_flight: units(0), rejected: units(4) };
        let found = at.assess(units(14));
        assert_eq!((found.known_uncredited, found.unexplained), (units(4), units(0)));
        let found = at.assess(units(20));
        assert_eq!((found.known_uncredited, found.unexplained), (units(4), units(6)));
        let found = at.assess(units(12));
        assert_eq!((found.known_uncredited, found.unexplained), (units(2), units(0)));
    }

    #[test]
    fn a_ledger_that_took_out_more_than_it_put_in_explains_nothing() {
        let at = Explained { ledger_in: units(10), ledger_out: units(25), in_flight: units(0), rejected: units(0) };
        assert_eq!(at.by_ledger(), units(0));
        assert_eq!(at.assess(units(3)).unexplained, units(3));
    }
}
