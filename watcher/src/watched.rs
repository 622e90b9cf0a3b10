//! The set of watched addresses, in memory: every invoice and static address ever allocated
//! (late payments to old invoices must still be found). Loaded once, then topped up from the
//! store by HD index on every tick, so addresses created by any API process are watched without
//! a restart. Lookups are a hash probe: millions of addresses cost memory, not RPC filters.
//!
//! Only the addresses are kept (20 bytes a slot, about 44 MB for a million): what an address was
//! allocated for, and its id, are read from the store when a transfer reaches it, which is rare.
//! The store is read a page at a time, so the rows are never all in memory at once.

use alloy::primitives::Address;
use alloy::primitives::map::AddressSet;
use depositd_core::store::deposit_addresses;
use depositd_core::store::{Conn, StoreError};

/// Addresses read per query when loading the set.
pub const DEFAULT_PAGE_SIZE: u32 = 50_000;

#[derive(Debug)]
pub struct WatchedSet {
    addresses: AddressSet,
    /// The highest HD index loaded; the next refresh asks only for newer ones. Addresses are
    /// stored under the counter row's lock (directly, or ahead of time in the address pool), so
    /// they commit in index order: an address with a lower index than this one cannot appear later.
    last_index: Option<u64>,
    page_size: u32,
}

impl Default for WatchedSet {
    fn default() -> WatchedSet {
        WatchedSet::with_page_size(DEFAULT_PAGE_SIZE)
    }
}

impl WatchedSet {
    /// An empty set that reads the store `page_size` addresses (at least 1) per query.
    pub fn with_page_size(page_size: u32) -> WatchedSet {
        WatchedSet { addresses: AddressSet::default(), last_index: None, page_size: page_size.max(1) }
    }

    /// Loads addresses allocated since the last refresh, a page at a time; returns how many were
    /// added. After an error the addresses of the pages already read stay loaded, and the next
    /// refresh goes on from the last of them.
    pub async fn refresh(&mut self, conn: &mut Conn) -> Result<usize, StoreError> {
        let mut added = 0;
        loop {
            let page = deposit_addresses::page_after(conn, self.last_index, self.page_size).await?;
            let last_page = page.len() < self.page_size as usize;
            added += page.len();
            for (index, address) in page {
                self.addresses.insert(address);
                self.last_index = Some(index);
            }
            if last_page {
                return Ok(added);
            }
        }
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.addresses.contains(address)
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }
}
