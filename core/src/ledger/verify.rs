//! Reconciliation of the ledger against itself and the deposits: what `depositd ledger verify`
//! and the daemon's periodic check run. (The comparison with on-chain balances needs RPC and lives
//! in the binary; it uses [`Report::held`].)
//!
//! Checks:
//! 1. every entry has at least two postings and balances (debits = credits) per asset;
//! 2. every account's stored balance equals the sum of its postings, and no sum is negative;
//! 3. every confirmed deposit of a merchant has exactly one live (unreversed) credit, and every
//!    other deposit none.
//!
//! Postings are read in pages, so memory stays bounded by the number of accounts, not entries.
//! Run it in one snapshot (`Store::begin_snapshot`): otherwise entries committed between its
//! queries would look like mismatches.

use std::collections::{BTreeMap, HashMap};

use super::{Account, AccountKind, CREDIT_TYPES_SQL, Owner};
use crate::money::BaseUnits;
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
    /// wallet. On-chain balances must cover it.
    pub held: BTreeMap<(u64, String), BaseUnits>,
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

/// Runs checks 1 to 3 (see the module doc). Read-only.
#[tracing::instrument(skip(conn))]
pub async fn verify(conn: &mut Conn) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let overflow = || StoreError::Corrupt("a ledger sum overflowed 256 bits".into());

    let account_rows: Vec<(String, String, String, i64, String, String)> =
        sqlx::query_as("SELECT id, owner, kind, chain_id, asset, balance_base_units FROM ledger_accounts")
            .fetch_all(&mut *conn)
            .await?;
    let mut accounts: HashMap<String, (Account, BaseUnits)> = HashMap::with_capacity(account_rows.len());
    for (id, owner, kind, chain_id, asset, balance) in account_rows {
        let owner = Owner::parse(&owner)?;
        let account =
            Account { owner, kind: parse_column("ledger_accounts.kind", &kind)?, chain_id: chain_id as u64, asset };
        accounts.insert(id, (account, parse_column("ledger_accounts.balance_base_units", &balance)?));
    }
    report.accounts = accounts.len() as u64;

    // 1 and 2: one pass over the postings in entry order.
    let mut sums: HashMap<String, Sums> = HashMap::new();
    let mut current: Option<String> = None;
    let mut legs = 0u32;
    let mut per_asset = EntrySums::new();
    let mut cursor = (String::new(), String::new(), String::new());
    loop {
        let page: Vec<(String, String, String, String)> = sqlx::query_as(
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
        for (entry_id, account_id, direction, amount) in page {
            report.postings += 1;
            if current.as_deref() != Some(entry_id.as_str()) {
                if let Some(previous) = current.take() {
                    finish_entry(&previous, legs, &mut per_asset, &mut report.problems);
                }
                current = Some(entry_id.clone());
                legs = 0;
            }
            legs += 1;
            let amount: BaseUnits = parse_column("ledger_postings.amount_base_units", &amount)?;
            let side: super::Side = parse_column("ledger_postings.direction", &direction)?;
            let Some((account, _)) = accounts.get(&account_id) else {
                report.problems.push(format!("entry {entry_id} posts to unknown account {account_id}"));
                continue;
            };
            let totals = per_asset.entry((account.chain_id, account.asset.clone())).or_default();
            let total = if side == super::Side::Debit { &mut totals.0 } else { &mut totals.1 };
            *total = total.checked_add(amount).ok_or_else(overflow)?;
            let sum = sums.entry(account_id.clone()).or_default();
            let grows = side == account.kind.normal_side();
            let target = if grows { &mut sum.up } else { &mut sum.down };
            *target = target.checked_add(amount).ok_or_else(overflow)?;
            cursor = (entry_id, account_id, direction);
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
        if account.owner == Owner::Platform && matches!(account.kind, AccountKind::Custody | AccountKind::HotWallet) {
            let held = report.held.entry((account.chain_id, account.asset.clone())).or_default();
            *held = held.checked_add(*stored).ok_or_else(overflow)?;
        }
    }

    // 3: confirmed deposits are credited exactly once, the others not at all.
    let deposits: Vec<(String, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT d.id, d.state, d.tx_hash, (SELECT COUNT(*) FROM ledger_entries e WHERE e.deposit_id = d.id \
         AND e.entry_type IN {CREDIT_TYPES_SQL} \
         AND NOT EXISTS (SELECT 1 FROM ledger_entries r WHERE r.reverses_entry_id = e.id)) \
         FROM deposits d WHERE d.merchant_id IS NOT NULL AND d.state <> 'rejected'"
    )))
    .fetch_all(&mut *conn)
    .await?;
    report.deposits = deposits.len() as u64;
    for (id, state, tx_hash, credits) in deposits {
        let expected = i64::from(state == "confirmed");
        if credits != expected {
            report.problems.push(format!(
                "deposit {id} (tx {tx_hash}) is {state} and has {credits} live credit(s); expected {expected}"
            ));
        }
    }
    Ok(report)
}
