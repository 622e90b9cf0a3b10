//! Fees: what the operator takes out of each payment.
//!
//! A merchant's schedule is a percent of the paid amount plus a fixed part, per asset, set by the
//! operator (`depositd merchant set-fee`). An invoice keeps the schedule it was created under, so
//! the fee it posts when paid is the `fee` it showed, whatever the operator changes later.
//!
//! The fee on a total paid `P` is `min(floor(P * percent / 100) + fixed, P)`: it never rounds up
//! against the merchant and never exceeds what was paid. Each confirmed deposit posts the growth
//! of that figure, so partial payments add up to exactly the fee on their sum.

use rust_decimal::Decimal;

use crate::money::{BaseUnits, MoneyError};

/// A fee schedule in the base units of one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeeSchedule {
    /// Percent of the paid amount, 0 to 100.
    pub percent: Decimal,
    /// Charged once per invoice, in base units of the invoice's asset.
    pub fixed: BaseUnits,
}

impl FeeSchedule {
    /// The fee on a total of `paid` (see the module doc).
    pub fn fee_on(&self, paid: BaseUnits) -> Result<BaseUnits, MoneyError> {
        if paid.is_zero() {
            return Ok(BaseUnits::ZERO);
        }
        let fee = paid.percent_floor(self.percent)?.checked_add(self.fixed).ok_or(MoneyError::Overflow)?;
        Ok(fee.min(paid))
    }
}

/// Why an operator's fee setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    #[error("fee percent {0} must be between 0 and 100")]
    Percent(Decimal),
    #[error("fixed fee {0} must not be negative")]
    Fixed(Decimal),
}

/// Checks an operator's fee setting (percent 0..=100, fixed >= 0).
pub fn validate(percent: Decimal, fixed: Decimal) -> Result<(), FeeError> {
    if percent.is_sign_negative() && !percent.is_zero() || percent > Decimal::ONE_HUNDRED {
        return Err(FeeError::Percent(percent));
    }
    if fixed.is_sign_negative() && !fixed.is_zero() {
        return Err(FeeError::Fixed(fixed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(percent: &str, fixed: u64) -> FeeSchedule {
        FeeSchedule { percent: percent.parse().unwrap(), fixed: BaseUnits::from(fixed) }
    }

    #[test]
    fn percent_plus_fixed_capped_at_the_amount() {
        assert_eq!(schedule("1", 0).fee_on(BaseUnits::from(10_000_000)).unwrap(), BaseUnits::from(100_000));
        assert_eq!(schedule("1.5", 300_000).fee_on(BaseUnits::from(10_000_000)).unwrap(), BaseUnits::from(450_000));
        assert_eq!(schedule("0", 300_000).fee_on(BaseUnits::from(200_000)).unwrap(), BaseUnits::from(200_000));
        assert_eq!(schedule("2", 300_000).fee_on(BaseUnits::ZERO).unwrap(), BaseUnits::ZERO);
    }

    #[test]
    fn increments_add_up_to_the_fee_on_the_sum() {
        let s = schedule("2.5", 7);
        let parts = [333u64, 1, 999_999, 12_345, 5];
        let (mut paid, mut charged) = (BaseUnits::ZERO, BaseUnits::ZERO);
        for part in parts {
            paid = paid.checked_add(BaseUnits::from(part)).unwrap();
            let due = s.fee_on(paid).unwrap();
            let increment = due.checked_sub(charged).unwrap();
            assert!(increment <= BaseUnits::from(part), "a deposit never pays more fee than it brings");
            charged = due;
        }
        assert_eq!(charged, s.fee_on(BaseUnits::from(parts.iter().sum::<u64>())).unwrap());
    }

    #[test]
    fn settings_are_validated() {
        assert!(validate("1.5".parse().unwrap(), "0.3".parse().unwrap()).is_ok());
        assert_eq!(validate("101".parse().unwrap(), Decimal::ZERO), Err(FeeError::Percent("101".parse().unwrap())));
        assert!(validate("-1".parse().unwrap(), Decimal::ZERO).is_err());
        assert!(validate(Decimal::ZERO, "-0.01".parse().unwrap()).is_err());
    }
}
