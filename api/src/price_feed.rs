//! Keeps the pricer's feed snapshot fresh from `pricing.feed_url`.
//!
//! The feed answers `{"timestamp": <epoch seconds>, "rates": {"EUR": "1.08", "ETH": 3000}}`: the
//! price of one unit in USD. Rates must be decimal strings or integers (a JSON float has already
//! lost exactness). A failed refresh keeps the last snapshot, which the pricer refuses once it is
//! older than `max_rate_age_secs`: an invoice is never priced from a guess.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use depositd_core::pricing::{FeedSnapshot, Pricer};
use depositd_core::time::now_ms;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("price feed request failed")]
    Http(#[from] reqwest::Error),
    #[error("price feed answered {0}")]
    Status(reqwest::StatusCode),
    #[error("price feed answer is malformed: {0}")]
    Malformed(String),
}

/// Refreshes every `interval` until `shutdown`.
pub async fn run(pricer: Arc<Pricer>, url: String, interval: Duration, shutdown: CancellationToken) {
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("a TLS-capable HTTP client");
    loop {
        let fetch = || fetch(&client, &url);
        let attempt = fetch
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_times(3)
                    .with_jitter(),
            )
            .notify(|error, wait| tracing::debug!(%error, ?wait, "price feed failed; retrying"))
            .await;
        match attempt {
            Ok(snapshot) => {
                tracing::debug!(rates = snapshot.usd_rates.len(), "price feed refreshed");
                pricer.update_feed(snapshot);
            }
            Err(error) => {
                tracing::warn!(error = %error, "price feed refresh failed; keeping the last rates until they go stale")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<FeedSnapshot, FeedError> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        return Err(FeedError::Status(response.status()));
    }
    let body: serde_json::Value = response.json().await?;
    parse(&body, now_ms())
}

/// Parses a feed answer; `fetched_at_ms` stands in when it carries no timestamp.
pub fn parse(body: &serde_json::Value, fetched_at_ms: i64) -> Result<FeedSnapshot, FeedError> {
    let rates = body
        .get("rates")
        .and_then(|r| r.as_object())
        .ok_or_else(|| FeedError::Malformed("no `rates` object".into()))?;
    let mut usd_rates = BTreeMap::new();
    for (symbol, value) in rates {
        let rate: Decimal = match value {
            serde_json::Value::String(s) => {
                s.parse().map_err(|_| FeedError::Malformed(format!("{symbol}: {s:?} is not a decimal")))?
            }
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                n.to_string().parse().map_err(|_| FeedError::Malformed(format!("{symbol}: {n} is out of range")))?
            }
            other => return Err(FeedError::Malformed(format!("{symbol}: {other} is not a decimal string or integer"))),
        };
        if rate <= Decimal::ZERO {
            return Err(FeedError::Malformed(format!("{symbol}: the rate must be positive")));
        }
        usd_rates.insert(symbol.to_ascii_uppercase(), rate);
    }
    let as_of_ms = match body.get("timestamp") {
        None | Some(serde_json::Value::Null) => fetched_at_ms,
        Some(ts) => ts
            .as_i64()
            .map(|secs| secs.saturating_mul(1000))
            .ok_or_else(|| FeedError::Malformed("`timestamp` must be epoch seconds".into()))?,
    };
    Ok(FeedSnapshot { usd_rates, as_of_ms })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_exact_rates_and_refuses_floats() {
        let snapshot = parse(&json!({"timestamp": 1_700_000_000, "rates": {"gbp": "1.27", "ETH": 3000}}), 5).unwrap();
        assert_eq!(snapshot.usd_rates["GBP"].to_string(), "1.27");
        assert_eq!(snapshot.usd_rates["ETH"].to_string(), "3000");
        assert_eq!(snapshot.as_of_ms, 1_700_000_000_000);
        assert_eq!(parse(&json!({"rates": {}}), 5).unwrap().as_of_ms, 5);
        for bad in [json!({"rates": {"GBP": 1.27}}), json!({"rates": {"GBP": "-1"}}), json!({"rates": []}), json!({})] {
            assert!(parse(&bad, 5).is_err(), "{bad}");
        }
    }
}
