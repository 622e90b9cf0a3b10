//! Recognising a provider's "block range too large" answer to `eth_getLogs`, and the range it
//! suggests instead. Providers word it differently; each known wording has a test below.

/// Whether a JSON-RPC error message says the `eth_getLogs` range (or its result) is too large;
/// `Some(Some(n))` when the provider names a range that works. Providers word it differently:
/// Alchemy suggests `[0xstart, 0xend]`, others name a block count.
pub fn range_too_large(message: &str) -> Option<Option<u64>> {
    let lower = message.to_ascii_lowercase();
    let about_range = [
        "block range",
        "range is too",
        "range too",
        "limited to",
        "max block range",
        "exceed",
        "too many",
        "more than",
        "response size",
        "query returned",
    ];
    if !about_range.iter().any(|needle| lower.contains(needle))
        || !(lower.contains("range") || lower.contains("results") || lower.contains("logs"))
    {
        return None;
    }
    // Alchemy: "... this block range should work: [0x1, 0x7d0]"
    if let Some(open) = lower.find("[0x")
        && let Some(close) = lower[open..].find(']')
    {
        let parts: Vec<&str> = lower[open + 1..open + close].split(',').map(str::trim).collect();
        if let [start, end] = parts[..]
            && let (Some(start), Some(end)) = (parse_hex(start), parse_hex(end))
            && end >= start
        {
            return Some(Some(end - start + 1));
        }
    }
    // A result-count limit says nothing about the block count that fits: halve.
    if lower.contains("results") {
        return Some(None);
    }
    // "limited to a 10,000 range", "up to a 2K block range", "max block range 1000".
    let cleaned = lower.replace(',', "");
    let number = cleaned
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|word| {
            let (digits, scale) = match word.strip_suffix('k') {
                Some(d) => (d, 1000),
                None => (word, 1),
            };
            digits.parse::<u64>().ok().map(|n| n * scale)
        })
        .find(|n| *n > 0);
    Some(number)
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::range_too_large;

    #[test]
    fn recognises_providers_range_errors() {
        assert_eq!(
            range_too_large("Log response size exceeded. this block range should work: [0x10, 0x7cf]"),
            Some(Some(0x7cf - 0x10 + 1))
        );
        assert_eq!(
            range_too_large(
                "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"
            ),
            Some(Some(2000))
        );
        assert_eq!(range_too_large("eth_getLogs is limited to a 10,000 range"), Some(Some(10_000)));
        assert_eq!(range_too_large("query exceeds max block range 1000"), Some(Some(1000)));
        assert_eq!(range_too_large("query returned more than 10000 results"), Some(None));
        assert_eq!(range_too_large("block range is too wide"), Some(None));
        assert_eq!(range_too_large("execution reverted"), None);
        assert_eq!(range_too_large("nonce too low"), None);
    }
}
