//! Payouts and refunds as the domain sees them: money a merchant sends out of its available
//! balance, where it is in its life, and the resource the API and webhooks show. Their lifecycle
//! (create, cancel, sent, confirmed, failed) is `crate::payouts`; the rows are `store::payouts`.

use serde::Serialize;
use uuid::Uuid;

use crate::money::BaseUnits;
use crate::text_enum::text_enum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutKind {
    Payout,
    Refund,
}

text_enum! { PayoutKind as "payout kind" { Payout = "payout", Refund = "refund" } }

/// `pending` (not yet signed; cancellable) -> `submitted` (broadcast) -> `confirmed`, or
/// `failed` (its reservation released) / `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    Pending,
    Submitted,
    Confirmed,
    Failed,
    Cancelled,
}

text_enum! {
    PayoutStatus as "payout status" {
        Pending = "pending", Submitted = "submitted", Confirmed = "confirmed", Failed = "failed",
        Cancelled = "cancelled",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Payout {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub kind: PayoutKind,
    pub external_id: Option<String>,
    pub invoice_id: Option<Uuid>,
    pub chain_id: u64,
    pub asset: String,
    pub amount: BaseUnits,
    /// Reserved for the network fee (native payouts; token payouts' gas is the operator's).
    pub fee_reserve: BaseUnits,
    /// The network fee charged, once confirmed or failed on chain.
    pub network_fee: Option<BaseUnits>,
    /// EIP-55 checksummed.
    pub destination: String,
    pub status: PayoutStatus,
    /// JSON object, as the merchant sent it.
    pub metadata: Option<String>,
    pub transaction_id: Option<Uuid>,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PayoutResource {
    /// `payout` or `refund`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    /// `pending`, `submitted`, `confirmed`, `failed` or `cancelled`.
    pub status: String,
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    /// In whole units of the asset, exact.
    pub amount: String,
    pub amount_base_units: BaseUnits,
    /// Held from the available balance for the network fee (native payouts; the unused part is
    /// returned on confirmation).
    pub network_fee_reserve_base_units: BaseUnits,
    /// The network fee charged, once the transaction is mined.
    pub network_fee_base_units: Option<BaseUnits>,
    /// EIP-55 checksummed.
    pub destination: String,
    pub external_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The invoice a refund returns money for.
    pub invoice_id: Option<Uuid>,
    /// The hash of the transaction that was mined (or the latest broadcast one before that).
    pub tx_hash: Option<String>,
    pub failure_reason: Option<String>,
    /// Epoch seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl PayoutResource {
    pub fn build(p: &Payout, chain: &str, decimals: u8, tx_hash: Option<String>) -> PayoutResource {
        PayoutResource {
            object: p.kind.as_str(),
            id: p.id,
            status: p.status.as_str().to_owned(),
            chain: chain.to_owned(),
            chain_id: p.chain_id,
            asset: p.asset.clone(),
            amount: p.amount.to_display(decimals),
            amount_base_units: p.amount,
            network_fee_reserve_base_units: p.fee_reserve,
            network_fee_base_units: p.network_fee,
            destination: p.destination.clone(),
            external_id: p.external_id.clone(),
            metadata: p.metadata.as_deref().and_then(|m| serde_json::from_str(m).ok()),
            invoice_id: p.invoice_id,
            tx_hash,
            failure_reason: p.failure_reason.clone(),
            created_at: p.created_at.div_euclid(1000),
            updated_at: p.updated_at.div_euclid(1000),
        }
    }
}
