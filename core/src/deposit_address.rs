//! A deposit address handed out: what it was allocated for, and where it sits in the HD tree.
//!
//! Both ways of handing one out use these types: a pooled address derived ahead of time
//! (`store::address_pool::claim`) and, when the pool is empty, the next HD index
//! (`store::deposit_addresses::allocate`, which tries the pool first). They live here, beside
//! neither, so that the counter path calls the pool and the pool needs nothing back.

use alloy::primitives::Address;
use uuid::Uuid;

use crate::text_enum::text_enum;

/// What a deposit address was allocated for: the watcher credits a payment to an invoice's
/// address to its invoice, and one to a static address's to a new invoice of that address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPurpose {
    Invoice,
    Static,
}

text_enum! { AddressPurpose as "address purpose" { Invoice = "invoice", Static = "static" } }

/// A deposit address as handed to the invoice or static address that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositAddress {
    /// The `deposit_addresses` row, which the invoice or static address names.
    pub id: Uuid,
    pub address: Address,
    /// The HD index it was derived at (`m/44'/60'/0'/0/i`): sweeping it needs its key.
    pub derivation_index: u64,
}
