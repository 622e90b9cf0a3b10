//! The set of watched addresses, in memory: every invoice and static address ever allocated
//! (late payments to old invoices must still be found). Loaded once, then topped up from the
//! store by HD index on every tick, so addresses created by any API process are watched without
//! a restart. Lookups are a hash probe: millions of addresses cost memory, not RPC filters.

use std::collections::HashMap;

use alloy::primitives::Address;
use depositd_core::store::deposit_addresses::{self, AddressPurpose, WatchedAddress};
use depositd_core::store::{Conn, StoreError};

#[derive(Debug, Default)]
pub struct WatchedSet {
    by_address: HashMap<Address, WatchedAddress>,
    /// The highest HD index loaded; the next refresh asks only for newer ones.
    last_index: Option<u64>,
}

impl WatchedSet {
    /// Loads addresses allocated since the last refresh; returns how many were added.
    pub async fn refresh(&mut self, conn: &mut Conn) -> Result<usize, StoreError> {
        let new = deposit_addresses::since(conn, self.last_index).await?;
        let added = new.len();
        for address in new {
            self.last_index = Some(address.derivation_index);
            self.by_address.insert(address.address, address);
        }
        Ok(added)
    }

    pub fn get(&self, address: &Address) -> Option<&WatchedAddress> {
        self.by_address.get(address)
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.by_address.contains_key(address)
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    pub fn purpose(&self, address: &Address) -> Option<AddressPurpose> {
        self.get(address).map(|a| a.purpose)
    }
}
