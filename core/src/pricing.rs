//! Pricing: how many base units of the pay asset an invoice amount in some currency costs.
//!
//! Every rate is "the price of one unit in USD". A currency or asset is priced from the static
//! table in configuration; assets listed as USD-pegged default to 1. An invoice priced in the pay
//! asset itself (`currency = "USDC"`, paid in USDC) needs no rate at all. The token amount is
//! rounded **up** to the token's decimals: rounding never lets a payer pay less than the price.
//! A missing rate is an error, never a guess.

use rust_decimal::{Decimal, RoundingStrategy};

use crate::config::{AssetRef, PricingSettings};
use crate::money::{BaseUnits, MoneyError};

/// Digits kept in the informational `conversion_rate` (the token amount is computed exactly).
const CONVERSION_RATE_DP: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// The client asked for a currency nothing can price: a client error (400).
    #[error("no exchange rate is configured for `{0}`")]
    UnknownCurrency(String),
    /// A rate exists in principle but cannot be used now (a stale or failing feed): 503.
    #[error("the exchange rate for `{0}` is unavailable right now")]
    RateUnavailable(String),
    #[error("the amount is too large to price")]
    Overflow,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The result of pricing an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// What the payer sends, in base units of the pay asset.
    pub pay_amount: BaseUnits,
    /// Invoice-currency units per one unit of the pay asset (seed 003's `conversion_rate`).
    pub conversion_rate: Decimal,
}

/// Prices invoices from the configured rates.
#[derive(Debug)]
pub struct Pricer {
    settings: PricingSettings,
    /// The latest snapshot of the HTTP price feed, when one is configured.
    feed: std::sync::RwLock<Option<FeedSnapshot>>,
}

/// Rates from the price feed, and when they were current.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSnapshot {
    /// Price of one unit in USD, by upper-case symbol.
    pub usd_rates: std::collections::BTreeMap<String, Decimal>,
    /// Epoch milliseconds the rates are as of (the feed's timestamp, else when they were fetched).
    pub as_of_ms: i64,
}

impl Pricer {
    pub fn new(settings: PricingSettings) -> Pricer {
        Pricer { settings, feed: std::sync::RwLock::new(None) }
    }

    /// Replaces the feed snapshot (called by the feed refresher).
    pub fn update_feed(&self, snapshot: FeedSnapshot) {
        *self.feed.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(snapshot);
    }

    /// The price of one unit of `symbol` in USD. Order: the static table (fixed rates, as in dev
    /// and tests), then the feed (refused when older than `max_rate_age_secs`), then USD pegs.
    pub fn usd_rate(&self, symbol: &str) -> Result<Decimal, PricingError> {
        let symbol = symbol.to_ascii_uppercase();
        if let Some(rate) = self.settings.static_usd_rates.get(&symbol) {
            return Ok(*rate);
        }
        if let Some(feed) = self.feed.read().unwrap_or_else(|poisoned| poisoned.into_inner()).as_ref()
            && let Some(rate) = feed.usd_rates.get(&symbol)
        {
            let age_ms = crate::time::now_ms().saturating_sub(feed.as_of_ms);
            let max_age_ms = i64::try_from(self.settings.max_rate_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            return if age_ms <= max_age_ms { Ok(*rate) } else { Err(PricingError::RateUnavailable(symbol)) };
        }
        if symbol == "USD" || self.settings.usd_pegged.contains(&symbol) {
            return Ok(Decimal::ONE);
        }
        if self.settings.feed_url.is_some() && !self.feed_loaded() {
            // The feed has not answered yet: it may well know this currency.
            return Err(PricingError::RateUnavailable(symbol));
        }
        Err(PricingError::UnknownCurrency(symbol))
    }

    fn feed_loaded(&self) -> bool {
        self.feed.read().unwrap_or_else(|poisoned| poisoned.into_inner()).is_some()
    }

    /// Whether `symbol` can be priced at all (possibly not right now: see [`PricingError::RateUnavailable`]).
    pub fn knows(&self, symbol: &str) -> bool {
        !matches!(self.usd_rate(symbol), Err(PricingError::UnknownCurrency(_)))
    }

    /// Prices `amount` of `currency` in `asset`.
    pub fn quote(&self, amount: Decimal, currency: &str, asset: AssetRef<'_>) -> Result<Quote, PricingError> {
        if currency.eq_ignore_ascii_case(asset.symbol) {
            return Ok(Quote {
                pay_amount: BaseUnits::from_decimal_round_up(amount, asset.decimals)?,
                conversion_rate: Decimal::ONE,
            });
        }
        let currency_usd = self.usd_rate(currency)?;
        let asset_usd = self.usd_rate(asset.symbol)?;
        let tokens = amount
            .checked_mul(currency_usd)
            .and_then(|usd| usd.checked_div(asset_usd))
            .ok_or(PricingError::Overflow)?;
        let conversion_rate = asset_usd
            .checked_div(currency_usd)
            .ok_or(PricingError::Overflow)?
            .round_dp_with_strategy(CONVERSION_RATE_DP, RoundingStrategy::MidpointAwayFromZero)
            .normalize();
        Ok(Quote { pay_amount: BaseUnits::from_decimal_round_up(tokens, asset.decimals)?, conversion_rate })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pricer() -> Pricer {
        let rates: BTreeMap<String, Decimal> = [("EUR", "1.08"), ("UAH", "0.024"), ("ETH", "3000")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.parse().unwrap()))
            .collect();
        Pricer::new(PricingSettings {
            max_rate_age_secs: 300,
            usd_pegged: vec!["USDC".into()],
            static_usd_rates: rates,
            feed_url: None,
            feed_refresh_secs: 60,
        })
    }

    const USDC: AssetRef<'static> = AssetRef { symbol: "USDC", decimals: 6, token_address: None };
    const ETH: AssetRef<'static> = AssetRef { symbol: "ETH", decimals: 18, token_address: None };

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn prices_fiat_in_tokens() {
        let usd = pricer().quote(dec("19.99"), "USD", USDC).unwrap();
        assert_eq!(usd.pay_amount, BaseUnits::from(19_990_000));
        assert_eq!(usd.conversion_rate, Decimal::ONE);

        let eur = pricer().quote(dec("10"), "EUR", USDC).unwrap();
        assert_eq!(eur.pay_amount, BaseUnits::from(10_800_000));

        // 1500 UAH at 0.024 USD = 36 USDC; seed 003's rate is UAH per token.
        let uah = pricer().quote(dec("1500.00"), "UAH", USDC).unwrap();
        assert_eq!(uah.pay_amount, BaseUnits::from(36_000_000));
        assert_eq!(uah.conversion_rate, dec("41.666666666667"));

        // 100 USD in ETH at 3000: 0.0333... ETH, rounded up at the 18th decimal.
        let eth = pricer().quote(dec("100"), "USD", ETH).unwrap();
        assert_eq!(eth.pay_amount.to_string(), "33333333333333334");
    }

    #[test]
    fn prices_directly_in_the_token() {
        let quote = pricer().quote(dec("12.345678"), "usdc", USDC).unwrap();
        assert_eq!(quote.pay_amount, BaseUnits::from(12_345_678));
        // More precision than the token has is rounded up, never down.
        assert_eq!(pricer().quote(dec("0.0000001"), "USDC", USDC).unwrap().pay_amount, BaseUnits::from(1));
    }

    #[test]
    fn feed_rates_are_used_while_fresh() {
        let mut settings = pricer().settings.clone();
        settings.feed_url = Some("https://rates.example/usd.json".into());
        let pricer = Pricer::new(settings);
        // Configured but not loaded yet: unavailable (503), not unknown (400).
        assert_eq!(pricer.usd_rate("GBP"), Err(PricingError::RateUnavailable("GBP".into())));
        let now = crate::time::now_ms();
        let rates = [("GBP".to_owned(), dec("1.27")), ("EUR".to_owned(), dec("9"))].into_iter().collect();
        pricer.update_feed(FeedSnapshot { usd_rates: rates, as_of_ms: now });
        assert_eq!(pricer.usd_rate("gbp"), Ok(dec("1.27")));
        assert_eq!(pricer.usd_rate("EUR"), Ok(dec("1.08")), "the static table wins");
        assert_eq!(pricer.usd_rate("XYZ"), Err(PricingError::UnknownCurrency("XYZ".into())));
        let stale = [("GBP".to_owned(), dec("1.27"))].into_iter().collect();
        pricer.update_feed(FeedSnapshot { usd_rates: stale, as_of_ms: now - 301_000 });
        assert_eq!(pricer.usd_rate("GBP"), Err(PricingError::RateUnavailable("GBP".into())));
        assert!(pricer.knows("GBP"));
    }

    #[test]
    fn unknown_currencies_are_refused() {
        assert_eq!(pricer().quote(dec("1"), "XYZ", USDC), Err(PricingError::UnknownCurrency("XYZ".into())));
        assert!(pricer().knows("usd") && pricer().knows("USDC") && !pricer().knows("GBP"));
    }
}
