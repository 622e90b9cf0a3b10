//! `balance.updated`: every entry that posts to a merchant's accounts is announced to that
//! merchant, by [`super::post`] itself, in the entry's transaction, so no caller can forget it
//! (a credit, a fee, a payout's reserve, send or release, a pass-through forward, a reversal, a
//! suspense resolution...). An entry that touches two merchants announces itself to each, with
//! each one's own postings only.
//!
//! `data`: `{"object": "balance_update", "merchant_id", "entry": {...}, "balances": [...]}`, the
//! entry as `GET /api/v1/ledger` shows it and the balances as `GET /api/v1/balances` shows them
//! (for each chain and asset the entry touched, right after it), in exact base units only: the
//! ledger outlives configuration changes, so display amounts (which need the asset's decimals)
//! are left to the API. Each posting's `amount_base_units` is signed from the merchant's side
//! (`-` lowers the balance), as in the API.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use uuid::Uuid;

use super::{Account, AccountKind, NewEntry, Owner, Side};
use crate::money::BaseUnits;
use crate::outbox::{self, EventType, Subject};
use crate::store::{StoreError, Tx};

/// Records `balance.updated` for each merchant whose accounts entry `id` (just written, at `now`)
/// posted to; `postings` are the entry's postings and `after` every touched account's balance
/// after it.
pub(super) async fn record(
    tx: &mut Tx,
    id: Uuid,
    entry: &NewEntry,
    now: i64,
    postings: &BTreeMap<(Account, Side), BaseUnits>,
    after: &BTreeMap<Account, BaseUnits>,
) -> Result<(), StoreError> {
    let merchants: BTreeSet<Uuid> = postings
        .keys()
        .filter_map(|(account, _)| match account.owner {
            Owner::Merchant(m) => Some(m),
            Owner::Platform => None,
        })
        .collect();
    for merchant in merchants {
        let mine: Vec<_> = postings.iter().filter(|((a, _), _)| a.owner == Owner::Merchant(merchant)).collect();
        let assets: BTreeSet<(u64, String)> = mine.iter().map(|((a, _), _)| (a.chain_id, a.asset.clone())).collect();
        let postings_json: Vec<_> = mine
            .iter()
            .map(|((account, side), amount)| {
                let lowers = *side != account.kind.normal_side();
                let sign = if lowers { "-" } else { "" };
                json!({
                    "account": account.kind,
                    "chain_id": account.chain_id,
                    "asset": account.asset,
                    "amount_base_units": format!("{sign}{amount}"),
                    "balance_after_base_units": after.get(account).copied().unwrap_or_default(),
                })
            })
            .collect();
        let mut balances = Vec::with_capacity(assets.len());
        for (chain_id, asset) in assets {
            let mut kinds: BTreeMap<AccountKind, BaseUnits> = BTreeMap::new();
            for kind in [
                AccountKind::Available,
                AccountKind::Pending,
                AccountKind::Reserved,
                AccountKind::InTransit,
                AccountKind::Receivable,
            ] {
                let account = Account::merchant(merchant, kind, chain_id, &asset);
                let balance = match after.get(&account) {
                    Some(b) => *b,
                    None => super::balance(tx, &account).await?,
                };
                kinds.insert(kind, balance);
            }
            let get = |kind| kinds.get(&kind).copied().unwrap_or_default();
            balances.push(json!({
                "object": "balance",
                "chain_id": chain_id,
                "asset": asset,
                "available_base_units": get(AccountKind::Available),
                "pending_base_units": get(AccountKind::Pending),
                "reserved_base_units": get(AccountKind::Reserved),
                "in_transit_base_units": get(AccountKind::InTransit),
                "receivable_base_units": get(AccountKind::Receivable),
            }));
        }
        let data = json!({
            "object": "balance_update",
            "merchant_id": merchant,
            "entry": {
                "object": "ledger_entry",
                "id": id,
                "type": entry.entry_type,
                "created_at": now.div_euclid(1000),
                "invoice_id": entry.refs.invoice_id,
                "deposit_id": entry.refs.deposit_id,
                "payout_id": entry.refs.payout_id,
                "transaction_id": entry.refs.transaction_id,
                "reverses_entry_id": entry.reverses,
                "memo": entry.memo,
                "postings": postings_json,
            },
            "balances": balances,
        });
        outbox::record(tx, merchant, EventType::BalanceUpdated, Subject::new("ledger_entry", id), &data).await?;
    }
    Ok(())
}
