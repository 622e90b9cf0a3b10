//! EIP-1559 gas prices: what a transaction is first signed with, its budget, and replacements.
//! Shared by the settler (signing, bumping) and the API (a native payout's fee reserve).

use crate::config::SettlerSettings;
use crate::money::BaseUnits;

/// Gas of a plain native transfer to an account without code.
pub const NATIVE_TRANSFER_GAS: u64 = 21_000;

/// Fees per gas, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// Fees for inclusion in the next blocks: twice the latest base fee (room for six full blocks of
/// +12.5%) plus the node's suggested tip, never above `cap`.
pub fn current(base_fee: u128, tip: u128, cap: u128) -> Fees {
    let max = base_fee.saturating_mul(2).saturating_add(tip).min(cap);
    Fees { max_fee_per_gas: max, max_priority_fee_per_gas: tip.min(max) }
}

/// The most a transaction may bid per gas over its life: `multiplier` times its first fee, at
/// most `cap`.
pub fn budget_per_gas(first: Fees, multiplier: u64, cap: u128) -> u128 {
    first.max_fee_per_gas.saturating_mul(u128::from(multiplier)).min(cap).max(first.max_fee_per_gas.min(cap))
}

/// The replacement of a transaction signed with `previous`: both fees raised by at least
/// `percent` plus 1 wei (what nodes require), and at least today's fees; `None` when that would
/// exceed `limit` (the transaction's budget per gas): it can only wait.
pub fn bumped(previous: Fees, now: Fees, percent: u64, limit: u128) -> Option<Fees> {
    let raise = |fee: u128| fee.saturating_add(fee.saturating_mul(u128::from(percent)) / 100).saturating_add(1);
    let tip = raise(previous.max_priority_fee_per_gas).max(now.max_priority_fee_per_gas);
    let max = raise(previous.max_fee_per_gas).max(now.max_fee_per_gas).max(tip);
    (max <= limit).then_some(Fees { max_fee_per_gas: max, max_priority_fee_per_gas: tip })
}

/// What a native payout reserves for its network fee, from the chain's latest fees: a plain
/// transfer's gas at the transaction's whole budget, so no replacement can cost more.
pub fn native_payout_fee_reserve(base_fee: u128, tip: u128, settings: &SettlerSettings) -> BaseUnits {
    let first = current(base_fee, tip, settings.max_fee_per_gas_cap);
    let budget = budget_per_gas(first, settings.fee_budget_multiplier, settings.max_fee_per_gas_cap);
    BaseUnits(alloy::primitives::U256::from(budget) * alloy::primitives::U256::from(NATIVE_TRANSFER_GAS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fees_leave_room_for_rising_base_fees_and_respect_the_cap() {
        assert_eq!(current(10, 2, 1000), Fees { max_fee_per_gas: 22, max_priority_fee_per_gas: 2 });
        assert_eq!(current(10, 2, 15), Fees { max_fee_per_gas: 15, max_priority_fee_per_gas: 2 });
        assert_eq!(current(10, 50, 15), Fees { max_fee_per_gas: 15, max_priority_fee_per_gas: 15 });
    }

    #[test]
    fn a_replacement_raises_both_fees_by_at_least_ten_percent_plus_one_wei() {
        let first = Fees { max_fee_per_gas: 1_000, max_priority_fee_per_gas: 100 };
        let next = bumped(first, first, 10, u128::MAX).unwrap();
        assert_eq!(next, Fees { max_fee_per_gas: 1_101, max_priority_fee_per_gas: 111 });
        assert!(next.max_fee_per_gas > first.max_fee_per_gas + first.max_fee_per_gas / 10, "+10% and 1 wei");
        // Today's fees win when they are higher.
        let now = Fees { max_fee_per_gas: 5_000, max_priority_fee_per_gas: 300 };
        assert_eq!(bumped(first, now, 10, u128::MAX).unwrap(), now);
        // Never above the budget.
        assert_eq!(bumped(first, first, 10, 1_100), None);
    }

    #[test]
    fn the_budget_is_a_multiple_of_the_first_fee_within_the_cap() {
        let first = Fees { max_fee_per_gas: 100, max_priority_fee_per_gas: 1 };
        assert_eq!(budget_per_gas(first, 3, 1_000), 300);
        assert_eq!(budget_per_gas(first, 3, 250), 250);
    }
}
