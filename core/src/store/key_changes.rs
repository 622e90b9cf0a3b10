//! This process's writes to API keys and merchants, counted, so that the API's key cache (see
//! `store::api_keys`) can tell an entry read before such a write from one read after it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts this process's writes to keys and merchants (see the module's header).
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// How many writes to keys and merchants this process has made: an authentication cached under
/// an earlier count may be out of date.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::SeqCst)
}

/// Notes a write to a key or to a merchant row (after it is made).
pub(crate) fn changed() {
    CHANGES.fetch_add(1, Ordering::SeqCst);
}
