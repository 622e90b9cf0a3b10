//! The one place the crate reads the wall clock. Stored timestamps are UTC milliseconds since the
//! Unix epoch (`BIGINT`), which both backends store and compare natively.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the system clock is set before 1970");
    i64::try_from(since.as_millis()).expect("epoch milliseconds fit in i64 until the year 292 million")
}

/// Epoch milliseconds as an ISO 8601 / RFC 3339 UTC timestamp at second precision
/// (`2026-02-25T12:00:00Z`), the form seeds 003 and 004 use.
pub fn iso8601(epoch_ms: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(epoch_ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso8601_is_utc_with_a_z() {
        assert_eq!(super::iso8601(1_772_020_800_999), "2026-02-25T12:00:00Z");
    }
}
