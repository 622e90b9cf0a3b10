//! Exact money.
//!
//! Two representations, each where it belongs:
//! - prices, rates and invoice amounts in a currency are [`Decimal`] (28 significant digits, exact);
//! - token amounts on chain are [`BaseUnits`]: an unsigned 256-bit integer of the token's smallest
//!   unit, as ERC-20 defines it. They exceed every native integer and `Decimal`'s range, so they are
//!   stored as decimal strings and validated on the way in.
//!
//! Converting between them is explicit about rounding: a payer is never asked for less than the
//! price ([`BaseUnits::from_decimal_round_up`]).

use std::fmt;
use std::str::FromStr;

use alloy::primitives::U256;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest number of decimals a token may declare and still be handled exactly here.
/// (U256 holds 77 digits; 36 leaves room for amounts of 10^40 whole tokens.)
pub const MAX_TOKEN_DECIMALS: u8 = 36;

/// Why a money value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a non-negative integer amount of base units")]
    InvalidBaseUnits(String),
    #[error("the amount does not fit in 256 bits")]
    Overflow,
    #[error("a negative amount is not allowed")]
    Negative,
    #[error("a token with {0} decimals is not supported (at most {MAX_TOKEN_DECIMALS})")]
    UnsupportedDecimals(u8),
    /// Not a plain decimal: a sign, an exponent, separators, a bare `.`.
    #[error("`{0}` is not a plain positive decimal such as \"1.5\" (no sign, exponent or separators)")]
    NotADecimal(String),
    #[error("the amount has {places} decimal places; the asset has at most {decimals}")]
    TooPrecise { places: usize, decimals: u8 },
}

/// A token amount in the token's smallest unit (wei for ETH, 10^-6 USDC for USDC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BaseUnits(pub U256);

impl BaseUnits {
    pub const ZERO: BaseUnits = BaseUnits(U256::ZERO);

    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: BaseUnits) -> Option<BaseUnits> {
        self.0.checked_add(other.0).map(BaseUnits)
    }

    pub fn checked_sub(self, other: BaseUnits) -> Option<BaseUnits> {
        self.0.checked_sub(other.0).map(BaseUnits)
    }

    /// `percent` % of this amount, rounded down to a whole base unit (fees never round up
    /// against the merchant). `percent` must be within 0..=100.
    pub fn percent_floor(self, percent: Decimal) -> Result<BaseUnits, MoneyError> {
        if percent.is_sign_negative() && !percent.is_zero() {
            return Err(MoneyError::Negative);
        }
        // percent = mantissa / 10^scale, so the share is amount * mantissa / (100 * 10^scale).
        let mantissa = U256::from(percent.mantissa().unsigned_abs());
        let divisor = U256::from(100u8) * U256::from(10u8).pow(U256::from(percent.scale()));
        let product = self.0.checked_mul(mantissa).ok_or(MoneyError::Overflow)?;
        Ok(BaseUnits(product / divisor))
    }

    /// `amount` whole tokens in base units, rounded **up** to the token's precision, so that
    /// rounding never makes a payer pay less than the price.
    pub fn from_decimal_round_up(amount: Decimal, decimals: u8) -> Result<BaseUnits, MoneyError> {
        Self::from_decimal(amount, decimals, true)
    }

    /// `amount` whole tokens in base units, rounded **down** (a fixed fee never rounds up against
    /// the merchant).
    pub fn from_decimal_round_down(amount: Decimal, decimals: u8) -> Result<BaseUnits, MoneyError> {
        Self::from_decimal(amount, decimals, false)
    }

    fn from_decimal(amount: Decimal, decimals: u8, round_up: bool) -> Result<BaseUnits, MoneyError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(MoneyError::Negative);
        }
        if decimals > MAX_TOKEN_DECIMALS {
            return Err(MoneyError::UnsupportedDecimals(decimals));
        }
        // Decimal = mantissa / 10^scale; base units = mantissa * 10^decimals / 10^scale.
        let mantissa = U256::from(amount.mantissa().unsigned_abs());
        let scale = amount.scale() as u8;
        let ten = U256::from(10u8);
        let value = if decimals >= scale {
            mantissa.checked_mul(ten.pow(U256::from(decimals - scale))).ok_or(MoneyError::Overflow)?
        } else {
            let divisor = ten.pow(U256::from(scale - decimals));
            let (quotient, remainder) = mantissa.div_rem(divisor);
            if round_up && !remainder.is_zero() { quotient + U256::from(1u8) } else { quotient }
        };
        Ok(BaseUnits(value))
    }

    /// Parses an amount in whole tokens written as a plain decimal (`"1.5"`, at most `decimals`
    /// places) into base units, exactly: no float, no rounding, the whole U256 range. The inverse
    /// of [`BaseUnits::to_display`]. Surrounding whitespace is ignored; zero is allowed (callers
    /// that need more than zero say so).
    pub fn from_whole_units(text: &str, decimals: u8) -> Result<BaseUnits, MoneyError> {
        let text = text.trim();
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
            return Err(MoneyError::NotADecimal(text.to_owned()));
        }
        if fraction.len() > usize::from(decimals) {
            return Err(MoneyError::TooPrecise { places: fraction.len(), decimals });
        }
        let base = format!("{whole}{fraction:0<width$}", width = usize::from(decimals));
        let base = base.trim_start_matches('0');
        if base.is_empty() {
            return Ok(BaseUnits::ZERO);
        }
        base.parse().map_err(|_| MoneyError::Overflow)
    }

    /// The amount in whole tokens as an exact decimal string without trailing zeros
    /// (`1500000` with 6 decimals is `"1.5"`). Exact for every U256, unlike `Decimal`.
    pub fn to_display(&self, decimals: u8) -> String {
        let digits = self.0.to_string();
        let decimals = decimals as usize;
        if decimals == 0 {
            return digits;
        }
        let padded = format!("{digits:0>width$}", width = decimals + 1);
        let (whole, frac) = padded.split_at(padded.len() - decimals);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() { whole.to_owned() } else { format!("{whole}.{frac}") }
    }
}

impl FromStr for BaseUnits {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only plain decimal digits: no sign, no hex, no whitespace, no exponent.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 78 {
            return Err(MoneyError::InvalidBaseUnits(s.chars().take(80).collect()));
        }
        U256::from_str_radix(s, 10).map(BaseUnits).map_err(|_| MoneyError::Overflow)
    }
}

impl fmt::Display for BaseUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for BaseUnits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BaseUnits({})", self.0)
    }
}

impl From<U256> for BaseUnits {
    fn from(value: U256) -> Self {
        BaseUnits(value)
    }
}

impl From<u64> for BaseUnits {
    fn from(value: u64) -> Self {
        BaseUnits(U256::from(value))
    }
}

/// Serialized as a decimal string: JSON numbers cannot carry 256-bit integers exactly.
impl Serialize for BaseUnits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BaseUnits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: a string of decimal digits (JSON numbers cannot carry U256 exactly).
impl utoipa::PartialSchema for BaseUnits {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,78}$"))
            .description(Some("Token amount in base units (the token's smallest unit), as a decimal string"))
            .into()
    }
}

impl utoipa::ToSchema for BaseUnits {}

// Stored as TEXT on both backends: encode/decode through the string form.
impl sqlx::Type<sqlx::Any> for BaseUnits {
    fn type_info() -> sqlx::any::AnyTypeInfo {
        <String as sqlx::Type<sqlx::Any>>::type_info()
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Any> for BaseUnits {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<'q, sqlx::Any>>::encode(self.0.to_string(), buf)
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Any> for BaseUnits {
    fn decode(value: <sqlx::Any as sqlx::Database>::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <String as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
        Ok(s.parse::<BaseUnits>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn converts_decimal_to_base_units_rounding_up() {
        assert_eq!(BaseUnits::from_decimal_round_up(dec("35.42"), 6).unwrap(), BaseUnits::from(35_420_000));
        // 1 / 3 USD priced in a 6-decimal token: never round in the payer's favour.
        assert_eq!(BaseUnits::from_decimal_round_up(dec("0.3333333333"), 6).unwrap(), BaseUnits::from(333_334));
        assert_eq!(BaseUnits::from_decimal_round_up(dec("0.000000"), 6).unwrap(), BaseUnits::ZERO);
        assert_eq!(BaseUnits::from_decimal_round_up(dec("1.5"), 18).unwrap().to_string(), "1500000000000000000");
        assert_eq!(BaseUnits::from_decimal_round_up(dec("-1"), 6), Err(MoneyError::Negative));
        assert_eq!(BaseUnits::from_decimal_round_up(dec("1"), 40), Err(MoneyError::UnsupportedDecimals(40)));
        assert_eq!(BaseUnits::from_decimal_round_down(dec("0.3333333333"), 6).unwrap(), BaseUnits::from(333_333));
        assert_eq!(BaseUnits::from_decimal_round_down(dec("0.30"), 6).unwrap(), BaseUnits::from(300_000));
    }

    #[test]
    fn percentages_round_down() {
        assert_eq!(BaseUnits::from(10_000_000).percent_floor(dec("1")).unwrap(), BaseUnits::from(100_000));
        assert_eq!(BaseUnits::from(999).percent_floor(dec("1.5")).unwrap(), BaseUnits::from(14)); // 14.985
        assert_eq!(BaseUnits::from(5).percent_floor(dec("0")).unwrap(), BaseUnits::ZERO);
        assert_eq!(BaseUnits::from(5).percent_floor(dec("100")).unwrap(), BaseUnits::from(5));
        assert_eq!(BaseUnits::from(5).percent_floor(dec("-1")), Err(MoneyError::Negative));
    }

    #[test]
    fn displays_exactly_in_whole_tokens() {
        assert_eq!(BaseUnits::from(35_420_000).to_display(6), "35.42");
        assert_eq!(BaseUnits::from(1).to_display(18), "0.000000000000000001");
        assert_eq!(BaseUnits::from(7).to_display(0), "7");
        assert_eq!(BaseUnits::ZERO.to_display(6), "0");
        assert_eq!(BaseUnits(U256::MAX).to_display(18).len(), 79);
    }

    #[test]
    fn parses_only_plain_decimal_integers() {
        assert_eq!("0".parse::<BaseUnits>().unwrap(), BaseUnits::ZERO);
        assert_eq!(U256::MAX.to_string().parse::<BaseUnits>().unwrap(), BaseUnits(U256::MAX));
        for bad in ["", "-1", "1.0", "0x10", " 1", "1e6", "abc"] {
            assert!(bad.parse::<BaseUnits>().is_err(), "{bad:?} must be refused");
        }
        // 2^256 overflows.
        let too_big = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(too_big.parse::<BaseUnits>(), Err(MoneyError::Overflow));
    }

    #[test]
    fn serializes_as_string() {
        let v = BaseUnits::from(42);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"42\"");
        assert_eq!(serde_json::from_str::<BaseUnits>("\"42\"").unwrap(), v);
    }
}
