//! Static addresses: a reusable deposit address for one customer (seed 000's "deposit rails").
//! Every deposit to one auto-creates a `paid` invoice for the deposited amount.

use crate::text_enum::text_enum;
use alloy::primitives::Address;
use serde::Serialize;
use uuid::Uuid;

/// Whether deposits to the address are still watched and credited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StaticAddressStatus {
    Active,
    Disabled,
}

text_enum! { StaticAddressStatus as "status" { Active = "active", Disabled = "disabled" } }

#[derive(Debug, Clone, PartialEq)]
pub struct StaticAddress {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub customer_id: String,
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    pub deposit_address_id: Uuid,
    pub address: Address,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub callback_url: Option<String>,
    pub status: StaticAddressStatus,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

/// The static address as the API returns it and webhooks carry it. Timestamps are epoch seconds.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StaticAddressResource {
    /// Always `static_address`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    pub customer_id: String,
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    pub token_address: Option<String>,
    pub address: String,
    /// EIP-681 link without an amount: the payer chooses how much to deposit.
    pub payment_uri: String,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub callback_url: Option<String>,
    pub status: StaticAddressStatus,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

impl StaticAddressResource {
    pub fn build(s: &StaticAddress, token_address: Option<Address>) -> StaticAddressResource {
        let address = s.address.to_checksum(None);
        let payment_uri = match token_address {
            Some(token) => format!("ethereum:{}@{}/transfer?address={address}", token.to_checksum(None), s.chain_id),
            None => format!("ethereum:{address}@{}", s.chain_id),
        };
        StaticAddressResource {
            object: "static_address",
            id: s.id,
            customer_id: s.customer_id.clone(),
            chain: s.chain.clone(),
            chain_id: s.chain_id,
            asset: s.asset.clone(),
            token_address: token_address.map(|a| a.to_checksum(None)),
            address,
            payment_uri,
            metadata: s.metadata.clone(),
            callback_url: s.callback_url.clone(),
            status: s.status,
            created_at: s.created_at.div_euclid(1000),
            disabled_at: s.disabled_at.map(|t| t.div_euclid(1000)),
        }
    }
}
