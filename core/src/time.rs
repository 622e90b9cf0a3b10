//! The one place the crate reads the wall clock. Stored timestamps are UTC milliseconds since the
//! Unix epoch (`BIGINT`), which both backends store and compare natively.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the system clock is set before 1970");
    i64::try_from(since.as_millis()).expect("epoch milliseconds fit in i64 until the year 292 million")
}
