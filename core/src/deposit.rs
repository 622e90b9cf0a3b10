//! The deposit as webhooks and the API show it.

use serde::Serialize;
use uuid::Uuid;

use crate::money::BaseUnits;
use crate::text_enum::text_enum;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DepositResource {
    /// Always `deposit`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    pub chain_id: u64,
    pub tx_hash: String,
    /// The log index; native transfers use -1 - (transaction index).
    pub log_index: i64,
    pub block_number: u64,
    pub block_hash: String,
    pub from_address: String,
    pub to_address: String,
    pub token_address: Option<String>,
    pub asset: String,
    pub amount_base_units: BaseUnits,
    /// `detected`, `confirmed`, `reorged`, `reversed` or `rejected`.
    pub state: String,
    pub reject_reason: Option<String>,
    pub invoice_id: Option<Uuid>,
    pub static_address_id: Option<Uuid>,
    pub detected_at: i64,
    pub confirmed_at: Option<i64>,
}

impl DepositResource {
    pub fn build(d: &Deposit) -> DepositResource {
        DepositResource {
            object: "deposit",
            id: d.id,
            chain_id: d.chain_id,
            tx_hash: d.tx_hash.clone(),
            log_index: d.log_index,
            block_number: d.block_number,
            block_hash: d.block_hash.clone(),
            from_address: d.from_address.clone(),
            to_address: d.to_address.clone(),
            token_address: d.token_address.clone(),
            asset: d.asset.clone(),
            amount_base_units: d.amount,
            state: d.state.as_str().to_owned(),
            reject_reason: d.reject_reason.clone(),
            invoice_id: d.invoice_id,
            static_address_id: d.static_address_id,
            detected_at: d.detected_at.div_euclid(1000),
            confirmed_at: d.confirmed_at.map(|t| t.div_euclid(1000)),
        }
    }
}

/// Where a deposit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositState {
    /// Seen in a block, not yet buried under the chain's confirmations.
    Detected,
    /// Confirmed and credited.
    Confirmed,
    /// Its block left the canonical chain before confirmation; it may reappear.
    Reorged,
    /// It was confirmed, then a deeper reorg removed it: its credit was reversed.
    Reversed,
    /// Recorded but not credited (wrong chain or asset for the invoice, unrepresentable amount...).
    Rejected,
}

text_enum! {
    DepositState as "deposit state" {
        Detected = "detected", Confirmed = "confirmed", Reorged = "reorged", Reversed = "reversed",
        Rejected = "rejected",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deposit {
    pub id: Uuid,
    pub chain_id: u64,
    pub tx_hash: String,
    pub log_index: i64,
    pub block_number: u64,
    pub block_hash: String,
    pub from_address: String,
    pub to_address: String,
    /// `None` for native transfers.
    pub token_address: Option<String>,
    pub asset: String,
    pub amount: BaseUnits,
    pub state: DepositState,
    pub reject_reason: Option<String>,
    pub merchant_id: Option<Uuid>,
    pub invoice_id: Option<Uuid>,
    pub static_address_id: Option<Uuid>,
    pub detected_at: i64,
    pub confirmed_at: Option<i64>,
    /// How many times a reorg took this deposit away and it came back. Each life posts to the
    /// ledger under its own idempotency keys.
    pub generation: i64,
}
