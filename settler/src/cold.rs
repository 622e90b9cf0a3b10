//! Cold storage: what the treasury holds of an asset beyond its `hot_max` goes to the operator's
//! cold address (`[cold_storage.<SYMBOL>]` in the chain file).
//!
//! - **What the treasury holds** is the ledger's `hot_wallet` balance, not the on-chain balance:
//!   like a sweep, a cold transfer moves only money depositd can account for (money sent to the
//!   treasury and not recorded stays where it is), and its posting (`hot_wallet -> cold`) can never
//!   take the hot wallet below zero.
//! - **What it keeps**: `hot_max`, plus what its open transactions (intents included: a payout
//!   is reserved the moment it is created) will still take of the asset: pending payouts and
//!   refunds, gas top-ups; for the native coin also every open transaction's gas budget (intents
//!   not yet priced: [`UNPRICED_GAS`] at today's budget) and the cold transfer's own, and never less
//!   than the operator's gas money (capital recorded by `depositd treasury fund`, plus fees
//!   earned, less gas spent), which pays for the sweeps and top-ups to come.
//! - **Sent**: the rest, when it reaches `settler.sweep_min` for the asset (a smaller excess waits
//!   rather than spend gas on dust).
//! - **Exactly once**: at most one cold transfer per chain and asset is open (from its intent to
//!   its confirmation) at a time, and the ledger moves only when it is confirmed; while one is
//!   signed or further nothing is planned, so a crash, a restart or a re-plan never sends twice.
//!   An intent still unsigned (waiting for gas money) whose amount the treasury can no longer
//!   spare (payouts came meanwhile) is failed, never having had a nonce, and planned anew; signing
//!   checks this again under the nonce lock (`cold_transfer_stale`), so a payout created between
//!   planning and signing is never starved. A partial unique index backs the one-open rule. The intent is
//!   written under the treasury's nonce-row lock after reading everything again, so two daemons
//!   cannot both plan one. The transaction manager signs, sends and follows it like any other
//!   (`txm.rs`); `outcome.rs` posts it once under its transaction's key.
//! - The cold address must be no address of ours: the treasury or a deposit address would turn
//!   the transfer into a deposit or a no-op, so such a configuration is refused at every step.

use alloy::primitives::U256;
use alloy::providers::Provider;
use depositd_core::chain_tx::{ChainTx, Purpose, TxState};
use depositd_core::gas::{self, Fees};
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::money::BaseUnits;
use depositd_core::store::{Conn, StoreError, chain_txs, deposit_addresses};

use crate::{SettleError, Settler};

/// The gas an open treasury intent not yet priced (a token payout's: priced when signed) is
/// allowed: a generous ERC-20 transfer (first transfer to a new holder, proxied token).
pub const UNPRICED_GAS: u64 = 100_000;

impl Settler {
    /// Plans a cold transfer for every asset of the chain that has cold storage configured.
    pub(crate) async fn plan_cold(&self, fees: Fees) -> Result<(), SettleError> {
        let symbols: Vec<String> = self
            .chain
            .cold_storage
            .keys()
            .filter_map(|symbol| self.chain.asset(symbol).map(|a| a.symbol.to_owned()))
            .collect();
        for symbol in symbols {
            match self.plan_cold_asset(&symbol, fees).await {
                Ok(()) => {}
                Err(error @ SettleError::Crashed(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(chain = %self.chain.name, asset = symbol, %error, "cannot plan a cold transfer yet")
                }
            }
        }
        Ok(())
    }

    async fn plan_cold_asset(&self, symbol: &str, fees: Fees) -> Result<(), SettleError> {
        let chain_id = self.chain.chain_id;
        let Some((cold, hot_max)) =
            self.chain.cold_storage_of(symbol).map_err(|e| SettleError::Config(e.to_string()))?
        else {
            return Ok(());
        };
        let cold_address = cold.cold_address.to_checksum(None);
        let treasury = self.treasury_address();
        let treasury_text = treasury.to_checksum(None);
        if cold.cold_address == treasury {
            return Err(SettleError::Config(format!("cold_storage.{symbol}.cold_address is the treasury itself")));
        }
        {
            let mut conn = self.store.conn().await?;
            if deposit_addresses::index_of(&mut conn, &cold_address).await?.is_some() {
                return Err(SettleError::Config(format!(
                    "cold_storage.{symbol}.cold_address {cold_address} is one of depositd's deposit addresses"
                )));
            }
        }
        let token = self.chain.asset(symbol).and_then(|a| a.token_address).map(|a| a.to_checksum(None));
        let budget = gas::budget_per_gas(fees, self.settings.fee_budget_multiplier, self.settings.max_fee_per_gas_cap);
        let at_budget = |gas_limit: u64| BaseUnits(U256::from(budget) * U256::from(gas_limit));

        // A first reading, to price the transfer (its gas depends on the recipient and amount).
        let (open, provisional) = {
            let mut conn = self.store.conn().await?;
            let open = self.open_cold_transfer(&mut conn, symbol).await?;
            if open.as_ref().is_some_and(|t| t.state != TxState::Intent) {
                return Ok(()); // signed: on its way, the txm follows it
            }
            let ignore = open.as_ref().map(|t| t.id);
            let own_gas = at_budget(gas::NATIVE_TRANSFER_GAS);
            (open, self.cold_excess(&mut conn, symbol, hot_max, own_gas, budget, ignore).await?)
        };
        let mut intent = ChainTx::intent(
            chain_id,
            treasury_text.clone(),
            Purpose::ColdTransfer,
            cold_address.clone(),
            symbol,
            provisional.unwrap_or_default(),
            token,
            BaseUnits::ZERO,
        );
        match (&open, provisional) {
            (None, None) => return Ok(()),
            (Some(t), Some(v)) if t.value <= v => return Ok(()), // still within the excess
            (_, Some(_)) => intent.max_gas_cost = at_budget(self.estimate_gas(treasury, &intent).await?),
            (Some(_), None) => {}
        }
        let mined_nonce = self
            .rpc
            .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(treasury).latest().await })
            .await?;

        let mut db = self.store.begin().await?;
        chain_txs::init_nonce(&mut db, chain_id, &treasury_text, mined_nonce).await?;
        chain_txs::lock_nonce(&mut db, chain_id, &treasury_text).await?;
        // Read again under the lock (signing takes it too): another daemon may have planned or
        // signed, a payout may have come.
        let open = self.open_cold_transfer(&mut db, symbol).await?;
        if open.as_ref().is_some_and(|t| t.state != TxState::Intent) {
            return Ok(());
        }
        let own_gas =
            if intent.max_gas_cost.is_zero() { at_budget(gas::NATIVE_TRANSFER_GAS) } else { intent.max_gas_cost };
        let value = self.cold_excess(&mut db, symbol, hot_max, own_gas, budget, open.as_ref().map(|t| t.id)).await?;
        if let Some(stale) = &open {
            if value.is_some_and(|v| stale.value <= v) {
                return Ok(());
            }
            // Planned when the treasury could spare more than it can now (payouts came while it
            // waited for gas money): never signed, so it is dropped and planned anew.
            let reason = "superseded before signing: the treasury's excess over hot_max shrank";
            chain_txs::set_failed(&mut db, stale.id, TxState::Intent, reason).await?;
            tracing::info!(chain = %self.chain.name, asset = symbol, transaction_id = %stale.id, "{reason}");
        }
        let Some(value) = value.filter(|_| !intent.max_gas_cost.is_zero()) else {
            db.commit().await.map_err(StoreError::from)?;
            return Ok(());
        };
        intent.value = value;
        chain_txs::insert_intent(&mut db, &intent).await?;
        db.commit().await.map_err(StoreError::from)?;
        tracing::info!(
            chain = %self.chain.name, asset = symbol, value = %value, to = cold_address, transaction_id = %intent.id,
            hot_max = %hot_max, "planned a cold transfer of the treasury's excess"
        );
        Ok(())
    }

    /// Why the unsigned cold transfer `tx` must not be signed now (read under the treasury's nonce
    /// lock, like everything signing reads): the treasury's excess over `hot_max`, computed again
    /// without `tx`, no longer covers its value (a payout or refund was created after it was
    /// planned), or cold storage of its asset is no longer configured. `None`: it may be signed.
    pub(crate) async fn cold_transfer_stale(
        &self,
        db: &mut Conn,
        tx: &ChainTx,
        max_gas_cost: BaseUnits,
        fees: Fees,
    ) -> Result<Option<&'static str>, SettleError> {
        let Some((_, hot_max)) =
            self.chain.cold_storage_of(&tx.asset).map_err(|e| SettleError::Config(e.to_string()))?
        else {
            return Ok(Some("cold storage of this asset is no longer configured"));
        };
        let budget = gas::budget_per_gas(fees, self.settings.fee_budget_multiplier, self.settings.max_fee_per_gas_cap);
        let excess = self.cold_excess(db, &tx.asset, hot_max, max_gas_cost, budget, Some(tx.id)).await?;
        if excess.is_some_and(|e| tx.value <= e) {
            return Ok(None);
        }
        Ok(Some("superseded before signing: the treasury's excess over hot_max shrank"))
    }

    /// The open cold transfer of `asset` on this chain, if any (at most one is ever open).
    async fn open_cold_transfer(&self, conn: &mut Conn, asset: &str) -> Result<Option<ChainTx>, SettleError> {
        let open = chain_txs::open(conn, self.chain.chain_id).await?;
        Ok(open.into_iter().find(|t| t.purpose == Purpose::ColdTransfer && t.asset == asset))
    }

    /// What the treasury holds of `asset` beyond what it keeps (see the module doc), `own_gas`
    /// being the cold transfer's own gas budget and `ignore` an unsigned cold transfer being
    /// planned anew; `None` when the excess is below `settler.sweep_min`.
    async fn cold_excess(
        &self,
        conn: &mut Conn,
        asset: &str,
        hot_max: BaseUnits,
        own_gas: BaseUnits,
        budget_per_gas: u128,
        ignore: Option<uuid::Uuid>,
    ) -> Result<Option<BaseUnits>, SettleError> {
        let chain_id = self.chain.chain_id;
        let native = self.native_symbol().to_owned();
        let treasury = self.treasury_address().to_checksum(None);
        let open = chain_txs::open(conn, chain_id).await?;
        let overflow = || SettleError::Ledger(ledger::LedgerError::Overflow);
        let mut keep = hot_max;
        if asset == native {
            let platform = |kind| Account::platform(kind, chain_id, &native);
            let capital = ledger::balance(conn, &platform(AccountKind::OperatorCapital)).await?;
            let earned = ledger::balance(conn, &platform(AccountKind::FeeRevenue)).await?;
            let spent = ledger::balance(conn, &platform(AccountKind::NetworkFees)).await?;
            let gas_money = capital.checked_add(earned).ok_or_else(overflow)?.checked_sub(spent).unwrap_or_default();
            keep = keep.max(gas_money).checked_add(own_gas).ok_or_else(overflow)?;
        }
        for t in open.iter().filter(|t| t.signer_address == treasury && Some(t.id) != ignore) {
            if t.asset == asset {
                keep = keep.checked_add(t.value).ok_or_else(overflow)?;
            }
            if asset == native {
                let gas = if t.max_gas_cost.is_zero() {
                    BaseUnits(U256::from(budget_per_gas) * U256::from(UNPRICED_GAS))
                } else {
                    t.max_gas_cost
                };
                keep = keep.checked_add(gas).ok_or_else(overflow)?;
            }
        }
        let held = ledger::balance(conn, &Account::platform(AccountKind::HotWallet, chain_id, asset)).await?;
        let Some(excess) = held.checked_sub(keep).filter(|e| !e.is_zero()) else { return Ok(None) };
        let decimals = self.chain.asset(asset).map_or(0, |a| a.decimals);
        if excess < self.sweep_min(asset, decimals) {
            return Ok(None);
        }
        Ok(Some(excess))
    }
}
