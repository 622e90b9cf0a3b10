//! Which deposit addresses to empty, and how: sweeps into the treasury, pass-through forwards to
//! a merchant's own address, and the gas top-ups they need.
//!
//! An address's **known balance** is what depositd can account for there: its confirmed
//! deposits and confirmed gas top-ups, less what its confirmed transactions sent and the gas its
//! mined transactions burned. Plans are sized from it, never from the raw on-chain balance, so
//! money nobody was credited with is never swept into the ledger's hot wallet.
//!
//! One plan per address at a time: an address with any open transaction (or an open top-up to
//! it) is left alone until that settles; the plan is written under the address's nonce-row lock,
//! so two daemons never plan the same address twice. A failed plan is simply planned again.
//!
//! - A pass-through invoice's address: the merchant's unforwarded amount (its `in_transit`) to
//!   the override address, the rest (the fee) to the treasury; gas comes from a top-up, so both
//!   arrive exact.
//! - A token balance worth sweeping (`settler.sweep_min`): all of it to the treasury, after a
//!   top-up with the gas budget of the transfer.
//! - A native balance alone: the balance less the sweep's whole gas budget to the treasury.

use std::collections::BTreeMap;

use alloy::primitives::{Address, U256};
use depositd_core::chain_tx::{ChainTx, Purpose, TxState};
use depositd_core::deposit::Deposit;
use depositd_core::gas::{self, Fees, NATIVE_TRANSFER_GAS};
use depositd_core::ledger::settlement;
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_core::store::deposits;
use depositd_core::store::{Conn, StoreError, invoices};
use uuid::Uuid;

use crate::{SettleError, Settler};

/// What depositd can account for at `address`, per asset.
pub fn known_balances(
    address: &str,
    native: &str,
    deposits: &[Deposit],
    touching: &[ChainTx],
) -> Result<BTreeMap<String, BaseUnits>, StoreError> {
    let mut known: BTreeMap<String, BaseUnits> = BTreeMap::new();
    let corrupt = || StoreError::Corrupt(format!("the known balance of {address} would be negative"));
    for d in deposits {
        let total = known.entry(d.asset.clone()).or_default();
        *total = total.checked_add(d.amount).ok_or_else(corrupt)?;
    }
    for t in touching {
        if t.purpose == Purpose::GasTopup && t.to_address == address && t.state == TxState::Confirmed {
            let total = known.entry(native.to_owned()).or_default();
            *total = total.checked_add(t.value).ok_or_else(corrupt)?;
        }
    }
    for t in touching.iter().filter(|t| t.signer_address == address) {
        if t.state == TxState::Confirmed {
            let total = known.entry(t.asset.clone()).or_default();
            *total = total.checked_sub(t.value).ok_or_else(corrupt)?;
        }
        if let Some(gas) = t.gas_cost {
            let total = known.entry(native.to_owned()).or_default();
            *total = total.checked_sub(gas).ok_or_else(corrupt)?;
        }
    }
    Ok(known)
}

/// An address's known balances and its pass-through duty, if any.
type AddressState = (BTreeMap<String, BaseUnits>, Option<(Uuid, Uuid, String, Address, BaseUnits)>);

impl Settler {
    /// Plans every address that holds confirmed deposits not yet followed by a sweep or forward.
    pub(crate) async fn plan(&mut self, fees: Fees) -> Result<(), SettleError> {
        let addresses = {
            let mut conn = self.store.conn().await?;
            deposits::unsettled_addresses(&mut conn, self.chain.chain_id).await?
        };
        for address in addresses {
            if let Err(error) = self.plan_address(&address, fees).await {
                tracing::warn!(chain = %self.chain.name, address, %error, "cannot plan a sweep of this address yet");
            }
        }
        Ok(())
    }

    pub(crate) fn sweep_min(&self, asset: &str, decimals: u8) -> BaseUnits {
        self.settings
            .sweep_min
            .iter()
            .find(|(symbol, _)| symbol.eq_ignore_ascii_case(asset))
            .and_then(|(_, min)| BaseUnits::from_decimal_round_up(*min, decimals).ok())
            .unwrap_or(BaseUnits::ZERO)
    }

    /// What a plan for `address` is made from: its known balances and, for a pass-through
    /// invoice's address, `(invoice, merchant, asset, destination, unforwarded)`. `None` while any
    /// transaction of the address (or a top-up to it) is open.
    async fn address_state(&self, conn: &mut Conn, address: &str) -> Result<Option<AddressState>, SettleError> {
        let chain_id = self.chain.chain_id;
        let touching = chain_txs::touching(conn, chain_id, address).await?;
        if touching.iter().any(|t| t.state.is_open()) {
            return Ok(None);
        }
        let confirmed = deposits::confirmed_at(conn, chain_id, address).await?;
        let known = known_balances(address, self.native_symbol(), &confirmed, &touching)?;
        let mut passthrough = None;
        for invoice_id in confirmed.iter().filter_map(|d| d.invoice_id) {
            if let Some(invoice) = invoices::get_any(conn, invoice_id).await?
                && let Some(destination) = invoice.receiver_override_address
            {
                let unforwarded = settlement::in_transit_of(conn, invoice.id).await?;
                passthrough = Some((invoice.id, invoice.merchant_id, invoice.asset.clone(), destination, unforwarded));
                break;
            }
        }
        Ok(Some((known, passthrough)))
    }

    async fn plan_address(&self, address: &str, fees: Fees) -> Result<(), SettleError> {
        let chain_id = self.chain.chain_id;
        let native = self.native_symbol().to_owned();
        let treasury = self.treasury_address().to_checksum(None);
        let from: Address =
            address.parse().map_err(|_| StoreError::Corrupt(format!("deposit address {address} is malformed")))?;

        let Some((known, passthrough)) = ({
            let mut conn = self.store.conn().await?;
            self.address_state(&mut conn, address).await?
        }) else {
            return Ok(());
        };

        let budget = gas::budget_per_gas(fees, self.settings.fee_budget_multiplier, self.settings.max_fee_per_gas_cap);
        let intent = |purpose: Purpose, to: String, asset: &str, value: BaseUnits| {
            let token = self.chain.asset(asset).and_then(|a| a.token_address).map(|a| a.to_checksum(None));
            ChainTx::intent(chain_id, address.to_owned(), purpose, to, asset, value, token, BaseUnits::ZERO)
        };
        let mut outputs: Vec<ChainTx> = Vec::new();
        for (asset, amount) in &known {
            let Some(asset_ref) = self.chain.asset(asset) else { continue };
            if amount.is_zero() {
                continue;
            }
            if let Some((invoice_id, merchant_id, invoice_asset, destination, unforwarded)) = &passthrough
                && invoice_asset == asset
                && !unforwarded.is_zero()
            {
                let forward = (*unforwarded).min(*amount);
                let mut out = intent(Purpose::Passthrough, destination.to_checksum(None), asset, forward);
                out.invoice_id = Some(*invoice_id);
                out.merchant_id = Some(*merchant_id);
                outputs.push(out);
                let rest = amount.checked_sub(forward).unwrap_or_default();
                if !rest.is_zero() {
                    let mut fee = intent(Purpose::Sweep, treasury.clone(), asset, rest);
                    fee.invoice_id = Some(*invoice_id);
                    outputs.push(fee);
                }
                continue;
            }
            if asset_ref.token_address.is_some() && *amount >= self.sweep_min(asset, asset_ref.decimals) {
                outputs.push(intent(Purpose::Sweep, treasury.clone(), asset, *amount));
            }
        }

        let native_known = known.get(&native).copied().unwrap_or_default();
        let mut topup = None;
        if outputs.is_empty() {
            // Native coin alone: it pays its own gas.
            let max_gas = BaseUnits(U256::from(budget) * U256::from(NATIVE_TRANSFER_GAS));
            let Some(value) = native_known.checked_sub(max_gas) else { return Ok(()) };
            if value.is_zero() || value < self.sweep_min(&native, self.chain.native.decimals) {
                return Ok(());
            }
            let mut sweep = intent(Purpose::Sweep, treasury.clone(), &native, value);
            sweep.max_gas_cost = max_gas;
            outputs.push(sweep);
        } else {
            // Everything else is paid for by a top-up from the treasury, so amounts arrive exact.
            let mut required = BaseUnits::ZERO;
            for out in &mut outputs {
                let gas_limit = self.estimate_gas(from, out).await?;
                out.max_gas_cost = BaseUnits(U256::from(budget) * U256::from(gas_limit));
                required = required.checked_add(out.max_gas_cost).ok_or(StoreError::Corrupt("overflow".into()))?;
                if out.token_address.is_none() {
                    required = required.checked_add(out.value).ok_or(StoreError::Corrupt("overflow".into()))?;
                }
            }
            if let Some(missing) = required.checked_sub(native_known)
                && !missing.is_zero()
            {
                let mut t = ChainTx::intent(
                    chain_id,
                    treasury.clone(),
                    Purpose::GasTopup,
                    address.to_owned(),
                    &native,
                    missing,
                    None,
                    BaseUnits(U256::from(budget) * U256::from(NATIVE_TRANSFER_GAS)),
                );
                t.created_at -= 1; // signed before what it pays for
                topup = Some(t);
            }
        }

        let mut db = self.store.begin().await?;
        chain_txs::init_nonce(&mut db, chain_id, address, 0).await?;
        chain_txs::lock_nonce(&mut db, chain_id, address).await?;
        // Planned on a reading taken before the lock: if anything changed since (another daemon
        // planned, a plan completed, a deposit confirmed), plan again next time.
        if self.address_state(&mut db, address).await? != Some((known, passthrough)) {
            return Ok(());
        }
        let depends_on: Option<Uuid> = topup.as_ref().map(|t| t.id);
        if let Some(t) = &topup {
            chain_txs::insert_intent(&mut db, t).await?;
        }
        for out in &mut outputs {
            out.depends_on = depends_on;
            chain_txs::insert_intent(&mut db, out).await?;
        }
        db.commit().await.map_err(StoreError::from)?;
        for out in &outputs {
            tracing::info!(
                chain = %self.chain.name, address, purpose = out.purpose.as_str(), asset = out.asset,
                value = %out.value, to = out.to_address, topup = topup.as_ref().map(|t| t.value.to_string()),
                "planned"
            );
        }
        Ok(())
    }
}
