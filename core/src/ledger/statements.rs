//! A merchant's view of the ledger: balances per asset and entries with the postings to the
//! merchant's own accounts (the platform's side of an entry is not the merchant's business).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{
    AccountKind, ENTRY_COLUMNS, Entry, EntryRow, EntryType, Owner, POSTING_COLUMNS, Posting, PostingRow,
    entry_from_row, posting_from_row,
};
use crate::money::BaseUnits;
use crate::store::codec::Text;
use crate::store::{Conn, StoreError};

/// One of a merchant's accounts and its balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountBalance {
    pub kind: AccountKind,
    pub chain_id: u64,
    pub asset: String,
    pub balance: BaseUnits,
}

/// Every account the merchant has, by chain, asset and kind.
#[tracing::instrument(skip(conn))]
pub async fn balances(conn: &mut Conn, merchant_id: Uuid) -> Result<Vec<AccountBalance>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        kind: AccountKind,
        chain_id: i64,
        asset: String,
        balance_base_units: Text<BaseUnits>,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT kind, chain_id, asset, balance_base_units FROM ledger_accounts WHERE owner = $1 \
         ORDER BY chain_id, asset, kind",
    )
    .bind(Text(merchant_id))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AccountBalance {
            kind: r.kind,
            chain_id: r.chain_id as u64,
            asset: r.asset,
            balance: r.balance_base_units.0,
        })
        .collect())
}

/// Filters for [`entries`]; each is neutral when `None`.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    pub entry_type: Option<EntryType>,
    /// Entries with a posting to the merchant's accounts in this asset symbol (any case)...
    pub asset: Option<String>,
    /// ...and/or on this chain.
    pub chain_id: Option<u64>,
    pub invoice_id: Option<Uuid>,
    pub deposit_id: Option<Uuid>,
    /// Entries of this payout (or refund).
    pub payout_id: Option<Uuid>,
    /// Epoch milliseconds, exclusive.
    pub created_after: Option<i64>,
    /// Epoch milliseconds, exclusive.
    pub created_before: Option<i64>,
    /// Cursor: entries older than this id.
    pub starting_after: Option<Uuid>,
}

/// An entry as a merchant sees it: the header and the postings to the merchant's accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantEntry {
    pub entry: Entry,
    pub postings: Vec<Posting>,
}

/// The merchant's entries, newest first, at most `limit`.
#[tracing::instrument(skip(conn))]
pub async fn entries(
    conn: &mut Conn,
    merchant_id: Uuid,
    filter: &EntryFilter,
    limit: u32,
) -> Result<Vec<MerchantEntry>, StoreError> {
    // Fixed clauses, neutral on NULL: one SQL text, no value ever spliced in.
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries e WHERE e.merchant_id = $1 \
         AND ($2 IS NULL OR e.entry_type = $2) \
         AND ($3 IS NULL OR e.invoice_id = $3) \
         AND ($4 IS NULL OR e.deposit_id = $4) \
         AND ($5 IS NULL OR e.created_at > $5) \
         AND ($6 IS NULL OR e.id < $6) \
         AND ($10 IS NULL OR e.payout_id = $10) \
         AND ($11 IS NULL OR e.created_at < $11) \
         AND (($7 IS NULL AND $8 IS NULL) OR EXISTS (SELECT 1 FROM ledger_postings p \
              JOIN ledger_accounts a ON a.id = p.account_id WHERE p.entry_id = e.id AND a.owner = $1 \
              AND ($7 IS NULL OR UPPER(a.asset) = UPPER($7)) AND ($8 IS NULL OR a.chain_id = $8))) \
         ORDER BY e.id DESC LIMIT $9"
    );
    let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(Text(merchant_id))
        .bind(filter.entry_type.map(|t| t.as_str()))
        .bind(filter.invoice_id.map(Text))
        .bind(filter.deposit_id.map(Text))
        .bind(filter.created_after)
        .bind(filter.starting_after.map(Text))
        .bind(filter.asset.as_deref())
        .bind(filter.chain_id.map(|c| c as i64))
        .bind(limit as i64)
        .bind(filter.payout_id.map(Text))
        .bind(filter.created_before)
        .fetch_all(&mut *conn)
        .await?;
    let entries: Vec<Entry> = rows.into_iter().map(entry_from_row).collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    // The merchant's postings of these entries, in one query (placeholders only, no values).
    let placeholders: Vec<String> = (0..entries.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT {POSTING_COLUMNS} FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id \
         WHERE a.owner = $1 AND p.entry_id IN ({}) ORDER BY a.chain_id, a.asset, a.kind, p.direction",
        placeholders.join(", ")
    );
    let mut query = sqlx::query_as::<_, PostingRow>(sqlx::AssertSqlSafe(sql)).bind(Text(merchant_id));
    for entry in &entries {
        query = query.bind(Text(entry.id));
    }
    let mut by_entry: BTreeMap<Uuid, Vec<Posting>> = BTreeMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let posting = posting_from_row(row)?;
        debug_assert_eq!(posting.account.owner, Owner::Merchant(merchant_id));
        by_entry.entry(posting.entry_id).or_default().push(posting);
    }
    Ok(entries
        .into_iter()
        .map(|entry| {
            let postings = by_entry.remove(&entry.id).unwrap_or_default();
            MerchantEntry { entry, postings }
        })
        .collect())
}
