//! The transaction manager: intents become signed transactions with a nonce, signed transactions
//! are broadcast, and what is in flight is followed to a final state.
//!
//! - **Signing** happens in one database transaction that locks the signer's nonce row, checks
//!   the intent is still an intent (a cancellation may have won), stores the signed bytes and
//!   hash, and advances the nonce. Nothing is broadcast before that commit, so a restart finds
//!   every transaction that may be on the wire.
//! - **Following**: each signed, broadcast or mined transaction's attempts are looked up (newest
//!   first); the one the chain included wins. Deep enough, it is confirmed (or failed, for a
//!   receipt with status 0) together with what that does ([`crate::outcome`]). Not mined after
//!   `bump_after_blocks`, it is replaced with higher fees within its budget; otherwise its
//!   latest attempt is rebroadcast (a node may have dropped it).
//! - **Nonces**: at start-up each signer's stored nonce is compared with the chain. A chain that
//!   shows more nonces used than depositd ever assigned means someone else sent from that key: the
//!   signer is paused and the drift reported, never papered over.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::Encodable2718;
use alloy::network::{TransactionBuilder, TxSignerSync};
use alloy::primitives::{Address, B256, Bytes, TxKind, U256, hex};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use depositd_core::chain_tx::{Attempt, ChainTx, Purpose, TxState};
use depositd_core::gas::{self, Fees};
use depositd_core::ledger::{self, Account, AccountKind};
use depositd_core::money::BaseUnits;
use depositd_core::store::chain_txs;
use depositd_core::store::{Conn, StoreError};
use depositd_core::time::now_ms;
use depositd_rpc::RpcError;
use uuid::Uuid;

use crate::{CrashPoint, SettleError, Settler, outcome};

alloy::sol! {
    function transfer(address to, uint256 amount) returns (bool);
}

/// Node answers to a broadcast that mean the transaction (or one with its nonce) is known
/// already: nothing to do, the receipts will tell.
/// ("nonce too low" is not among them: it may mean another transaction took the nonce, which
/// the follow-up step tells apart from our own being mined.)
const KNOWN: [&str; 5] = [
    "already known",
    "known transaction",
    "already imported",
    "replacement transaction underpriced",
    "transaction already exists",
];

/// What a transaction calls: `(to, value, input)`.
pub(crate) fn call_of(tx: &ChainTx) -> Result<(Address, U256, Bytes), SettleError> {
    let recipient: Address = tx
        .to_address
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("transaction {} has a malformed recipient", tx.id)))?;
    match &tx.token_address {
        None => Ok((recipient, tx.value.0, Bytes::new())),
        Some(token) => {
            let token: Address = token
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("transaction {} has a malformed token", tx.id)))?;
            let input = transferCall { to: recipient, amount: tx.value.0 }.abi_encode();
            Ok((token, U256::ZERO, input.into()))
        }
    }
}

fn u128_of(value: BaseUnits) -> u128 {
    u128::try_from(value.0).unwrap_or(u128::MAX)
}

impl Settler {
    /// Gas for `tx` sent from `from` (token transfers get a fifth more: their cost depends on
    /// storage that may change before they are mined).
    pub(crate) async fn estimate_gas(&self, from: Address, tx: &ChainTx) -> Result<u64, SettleError> {
        let (to, value, input) = call_of(tx)?;
        let request = TransactionRequest::default().with_from(from).with_to(to).with_value(value).with_input(input);
        let gas = self
            .rpc
            .once("eth_estimateGas", |p| {
                let request = request.clone();
                async move { p.estimate_gas(request).await }
            })
            .await?;
        Ok(if tx.token_address.is_some() { gas + gas / 5 } else { gas })
    }

    /// Signs every intent that is ready: no dependency, or a confirmed one.
    pub(crate) async fn sign_ready(&mut self, fees: Fees, head: u64) -> Result<(), SettleError> {
        let intents = {
            let mut conn = self.store.conn().await?;
            chain_txs::intents(&mut conn, self.chain.chain_id).await?
        };
        let mut waiting = 0;
        let mut unsent: Vec<(ChainTx, Stall)> = Vec::new();
        for (tx, dependency) in intents {
            match dependency {
                Some(TxState::Failed) => {
                    self.fail_intent(&tx, "the gas top-up it waited for failed").await?;
                    continue;
                }
                Some(TxState::Confirmed) | None => {}
                Some(_) => {
                    unsent.push((tx, Stall::WaitingForDependency));
                    continue;
                }
            }
            match self.sign_one(&tx, fees, head).await {
                Ok(None) => {}
                Ok(Some(why)) => {
                    if why == Stall::WaitingForFunds {
                        waiting += 1;
                    }
                    unsent.push((tx, why));
                }
                Err(error @ SettleError::Crashed(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), %error, "cannot sign yet; will retry");
                    unsent.push((tx, Stall::CannotSign));
                }
            }
        }
        self.metrics.settler_waiting_for_funds.with_label_values(&[self.chain.name.as_str()]).set(waiting);
        self.report_stalls(&Stall::UNSIGNED, &unsent);
        Ok(())
    }

    /// Sets `depositd_settler_stalled_transactions` for the `kinds` of stall one phase judges,
    /// from that phase's unsent transactions; logs each transaction once when it crosses
    /// `settler.stall_alert_secs`.
    fn report_stalls(&mut self, kinds: &[Stall], unsent: &[(ChainTx, Stall)]) {
        let threshold = i64::try_from(self.settings.stall_alert_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = now_ms();
        for kind in kinds {
            let stalled: Vec<&ChainTx> = unsent
                .iter()
                .filter(|(tx, why)| why == kind && now.saturating_sub(tx.created_at) > threshold)
                .map(|(tx, _)| tx)
                .collect();
            for tx in &stalled {
                if self.stalls_reported.insert(tx.id) {
                    tracing::error!(
                        chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(),
                        reason = kind.as_str(), age_secs = now.saturating_sub(tx.created_at) / 1000,
                        "transaction stalled: planned long ago and still not mined"
                    );
                }
            }
            self.metrics
                .settler_stalled_transactions
                .with_label_values(&[self.chain.name.as_str(), kind.as_str()])
                .set(stalled.len() as i64);
        }
    }

    /// An intent that can never be signed: failed, with what that means for its purpose.
    async fn fail_intent(&self, tx: &ChainTx, reason: &str) -> Result<(), SettleError> {
        let mut db = self.store.begin().await?;
        if chain_txs::set_failed(&mut db, tx.id, TxState::Intent, reason).await? {
            outcome::failed(&mut db, self.payout_ctx(), tx, None, reason).await?;
        }
        db.commit().await.map_err(StoreError::from)?;
        tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, reason, "transaction failed before signing");
        Ok(())
    }

    /// Signs one intent and broadcasts it. `Ok(Some(why))`: it waits (the treasury's recorded
    /// funds do not cover it yet, or its signer is paused).
    async fn sign_one(&mut self, tx: &ChainTx, fees: Fees, head: u64) -> Result<Option<Stall>, SettleError> {
        self.crash_point(CrashPoint::BeforeSign)?;
        let signer = self.signer_for(&tx.signer_address).await?;
        let from = signer.address();
        let gas_limit = self.estimate_gas(from, tx).await?;
        if matches!(tx.purpose, Purpose::Payout | Purpose::Refund)
            && tx.token_address.is_none()
            && gas_limit > gas::NATIVE_TRANSFER_GAS
        {
            // Its fee reserve covers a plain transfer; a contract recipient would outbid it.
            let reason = format!(
                "the destination needs {gas_limit} gas to receive the coin; native payouts go to plain accounts \
                 (a transfer costs {})",
                gas::NATIVE_TRANSFER_GAS
            );
            self.fail_intent(tx, &reason).await?;
            return Ok(None);
        }
        let max_gas_cost = if tx.max_gas_cost.is_zero() {
            let budget =
                gas::budget_per_gas(fees, self.settings.fee_budget_multiplier, self.settings.max_fee_per_gas_cap);
            BaseUnits(U256::from(budget) * U256::from(gas_limit))
        } else {
            tx.max_gas_cost
        };
        let per_gas = u128_of(max_gas_cost) / u128::from(gas_limit.max(1));
        let first = Fees {
            max_fee_per_gas: fees.max_fee_per_gas.min(per_gas),
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas.min(per_gas),
        };
        let is_treasury = tx.signer_address == self.treasury_address().to_checksum(None);
        // A signer's first nonce is the chain's count of its mined transactions: an outside
        // transaction still pending is not counted, so a dropped one cannot leave a gap.
        let mined_nonce = self
            .rpc
            .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(from).latest().await })
            .await?;

        let mut db = self.store.begin().await?;
        chain_txs::init_nonce(&mut db, self.chain.chain_id, &tx.signer_address, mined_nonce).await?;
        let (nonce, paused) = chain_txs::lock_nonce(&mut db, self.chain.chain_id, &tx.signer_address)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a nonce row vanished inside its transaction".into()))?;
        if let Some(reason) = paused {
            tracing::warn!(chain = %self.chain.name, signer = %tx.signer_address, reason, "signer is paused; not signing");
            return Ok(Some(Stall::SignerPaused));
        }
        match chain_txs::lock(&mut db, tx.id).await? {
            Some(current) if current.state == TxState::Intent => {}
            _ => return Ok(None), // cancelled, or signed by another daemon
        }
        if tx.purpose == Purpose::ColdTransfer
            && let Some(reason) = self.cold_transfer_stale(&mut db, tx, max_gas_cost, fees).await?
        {
            // Planned before a payout or refund came: never signed, so dropped (planned anew next tick).
            chain_txs::set_failed(&mut db, tx.id, TxState::Intent, reason).await?;
            db.commit().await.map_err(StoreError::from)?;
            tracing::info!(chain = %self.chain.name, transaction_id = %tx.id, reason, "cold transfer not signed");
            return Ok(None);
        }
        if is_treasury && !self.treasury_covers(&mut db, tx, max_gas_cost).await? {
            return Ok(Some(Stall::WaitingForFunds));
        }
        let attempt = self.sign_attempt(&signer, tx, nonce, gas_limit, first)?;
        chain_txs::set_signed(&mut db, tx.id, nonce, max_gas_cost, &attempt).await?;
        chain_txs::set_next_nonce(&mut db, self.chain.chain_id, &tx.signer_address, nonce + 1).await?;
        db.commit().await.map_err(StoreError::from)?;
        tracing::info!(chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), nonce, tx_hash = %attempt.tx_hash, "transaction signed");

        self.crash_point(CrashPoint::AfterSign)?;
        let mut signed = tx.clone();
        signed.state = TxState::Signed;
        signed.nonce = Some(nonce);
        self.broadcast(&signed, &attempt, head).await?;
        Ok(None)
    }

    /// Whether the hot wallet's ledger balance, less what its other unconfirmed transactions may
    /// still take, covers `tx` (its value and its gas budget); and, for gas the operator pays
    /// (everything but a native payout's, which its reserve covers), whether the operator's own
    /// native funds (capital put in, plus fees earned, less gas spent) cover it beside the gas
    /// already committed: merchants' coin never pays the operator's gas. Read under the
    /// treasury's nonce lock, so two signings cannot both count the same funds.
    async fn treasury_covers(&self, db: &mut Conn, tx: &ChainTx, max_gas_cost: BaseUnits) -> Result<bool, SettleError> {
        let native = self.native_symbol().to_owned();
        let operator_pays =
            // (A refund out of suspense has no payout and no reserve: the operator pays its gas.)
            |t: &ChainTx| {
                !(matches!(t.purpose, Purpose::Payout | Purpose::Refund)
                    && t.token_address.is_none()
                    && t.payout_id.is_some())
            };
        let operator_share = |t: &ChainTx, gas: BaseUnits| {
            let value = if t.purpose == Purpose::GasTopup { t.value } else { BaseUnits::ZERO };
            gas.checked_add(value).unwrap_or(gas)
        };
        let mut needed: Vec<(String, BaseUnits)> = vec![(tx.asset.clone(), tx.value), (native.clone(), max_gas_cost)];
        let mut operator_needed = if operator_pays(tx) { operator_share(tx, max_gas_cost) } else { BaseUnits::ZERO };
        for other in chain_txs::in_flight(db, self.chain.chain_id).await? {
            if other.signer_address != tx.signer_address {
                continue;
            }
            needed.push((other.asset.clone(), other.value));
            needed.push((native.clone(), other.max_gas_cost));
            if operator_pays(&other) {
                operator_needed = operator_needed
                    .checked_add(operator_share(&other, other.max_gas_cost))
                    .ok_or(ledger::LedgerError::Overflow)?;
            }
        }
        let mut totals: std::collections::BTreeMap<String, BaseUnits> = Default::default();
        for (asset, amount) in needed {
            let total = totals.entry(asset).or_default();
            *total = total.checked_add(amount).ok_or(ledger::LedgerError::Overflow)?;
        }
        let platform = |kind| Account::platform(kind, self.chain.chain_id, &native);
        for (asset, total) in totals {
            let account = Account::platform(AccountKind::HotWallet, self.chain.chain_id, &asset);
            let held = ledger::balance(db, &account).await?;
            if held < total {
                tracing::warn!(
                    chain = %self.chain.name, transaction_id = %tx.id, asset, held = %held, needed = %total,
                    "the hot wallet's recorded funds do not cover this transaction yet (sweeps pending, or fund \
                     the treasury and record it with `depositd treasury fund`)"
                );
                return Ok(false);
            }
        }
        if !operator_needed.is_zero() {
            let capital = ledger::balance(db, &platform(AccountKind::OperatorCapital)).await?;
            let earned = ledger::balance(db, &platform(AccountKind::FeeRevenue)).await?;
            let spent = ledger::balance(db, &platform(AccountKind::NetworkFees)).await?;
            let own = capital.checked_add(earned).unwrap_or(capital).checked_sub(spent).unwrap_or_default();
            if own < operator_needed {
                tracing::warn!(
                    chain = %self.chain.name, transaction_id = %tx.id, own = %own, needed = %operator_needed,
                    "the operator's own funds do not cover this gas: fund the treasury and record it with \
                     `depositd treasury fund`"
                );
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn sign_attempt(
        &self,
        signer: &PrivateKeySigner,
        tx: &ChainTx,
        nonce: u64,
        gas_limit: u64,
        fees: Fees,
    ) -> Result<Attempt, SettleError> {
        let (to, value, input) = call_of(tx)?;
        let mut unsigned = TxEip1559 {
            chain_id: self.chain.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let signature = signer.sign_transaction_sync(&mut unsigned).map_err(|e| SettleError::Signing(e.to_string()))?;
        let envelope = TxEnvelope::from(unsigned.into_signed(signature));
        Ok(Attempt {
            id: Uuid::now_v7(),
            transaction_id: tx.id,
            tx_hash: format!("{:#x}", envelope.tx_hash()),
            raw_tx: hex::encode_prefixed(envelope.encoded_2718()),
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            gas_limit,
            broadcast_at: None,
            broadcast_block: None,
            created_at: now_ms(),
        })
    }

    /// Sends an attempt's stored bytes; the first time, records it (and a payout becomes
    /// `submitted`). A refusal is logged and retried by the next check. Returns whether a node
    /// took it.
    async fn broadcast(&self, tx: &ChainTx, attempt: &Attempt, head: u64) -> Result<bool, SettleError> {
        if !self.send_raw(attempt).await {
            // Refused (too low a fee, a node in trouble): start its clock anyway, so that it is
            // repriced after `bump_after_blocks` like one the node accepted and never mined.
            let mut db = self.store.begin().await?;
            chain_txs::set_broadcast(&mut db, attempt.id, head).await?;
            db.commit().await.map_err(StoreError::from)?;
            return Ok(false);
        }
        self.crash_point(CrashPoint::AfterBroadcast)?;
        let mut db = self.store.begin().await?;
        chain_txs::set_broadcast(&mut db, attempt.id, head).await?;
        if tx.state == TxState::Signed
            && chain_txs::transition(&mut db, tx.id, TxState::Signed, TxState::Broadcast).await?
        {
            outcome::submitted(&mut db, self.payout_ctx(), tx, &attempt.tx_hash).await?;
        }
        db.commit().await.map_err(StoreError::from)?;
        Ok(true)
    }

    /// Sends raw bytes; true when the node accepted them or knows them already.
    async fn send_raw(&self, attempt: &Attempt) -> bool {
        let raw = match hex::decode(&attempt.raw_tx) {
            Ok(raw) => raw,
            Err(_) => {
                tracing::error!(attempt_id = %attempt.id, "stored raw transaction is not hex");
                return false;
            }
        };
        match self
            .rpc
            .once("eth_sendRawTransaction", |p| {
                let raw = raw.clone();
                async move { p.send_raw_transaction(&raw).await.map(|_| ()) }
            })
            .await
        {
            Ok(()) => true,
            Err(RpcError::Failed { message, .. }) if KNOWN.iter().any(|k| message.to_ascii_lowercase().contains(k)) => {
                tracing::debug!(tx_hash = %attempt.tx_hash, message, "broadcast: already known");
                true
            }
            Err(error) => {
                tracing::warn!(chain = %self.chain.name, tx_hash = %attempt.tx_hash, %error, "broadcast refused; will retry");
                false
            }
        }
    }

    /// Follows every signed, broadcast or mined transaction one step. First, every transaction no
    /// node has accepted yet (its broadcast was refused or lost) is sent again, in nonce order: a
    /// signer's later nonces cannot be mined before it, so it must not wait for its turn in the
    /// slower follow-up pass below.
    pub(crate) async fn monitor(&mut self, head: u64, fees: Fees) -> Result<(), SettleError> {
        self.recheck_confirmed(head).await?;
        let load = || async {
            let mut conn = self.store.conn().await?;
            chain_txs::in_flight(&mut conn, self.chain.chain_id).await.map_err(SettleError::from)
        };
        let mut in_flight = load().await?;
        // Sent (or tried) this step already: the follow-up pass does not send them again.
        let mut sent = std::collections::HashSet::new();
        if in_flight.iter().any(|tx| tx.state == TxState::Signed) {
            // A signer whose transaction no node took this step: its later nonces cannot be
            // mined before it, so they wait for the next step rather than each burning retries.
            let mut refused_signers = std::collections::HashSet::new();
            for tx in in_flight.iter().filter(|tx| tx.state == TxState::Signed) {
                sent.insert(tx.id);
                if refused_signers.contains(&tx.signer_address) {
                    continue;
                }
                match self.resend(tx, head).await {
                    Ok(true) => {}
                    Ok(false) => {
                        refused_signers.insert(tx.signer_address.clone());
                    }
                    Err(error @ SettleError::Crashed(_)) => return Err(error),
                    Err(error) => {
                        refused_signers.insert(tx.signer_address.clone());
                        tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, %error, "cannot resend transaction; will retry");
                    }
                }
            }
            in_flight = load().await?;
        }
        let mut stuck = 0;
        let mut unsent: Vec<(ChainTx, Stall)> = Vec::new();
        for tx in in_flight {
            let followed = self.follow(&tx, head, fees, sent.contains(&tx.id)).await;
            let why = match &followed {
                Ok(Followed::Confirmed | Followed::Failed | Followed::FailedAfterConfirmed | Followed::Mined) => None,
                Ok(Followed::Stuck) => Some(Stall::Stuck),
                Ok(_) if tx.state == TxState::Signed => Some(Stall::NotAccepted),
                Ok(Followed::Pending) => Some(Stall::NotMined),
                Err(_) => Some(Stall::CannotFollow),
            };
            match followed {
                Ok(Followed::Stuck) => stuck += 1,
                Ok(_) => {}
                Err(error @ SettleError::Crashed(_)) => return Err(error),
                Err(error) => {
                    tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, %error, "cannot follow transaction; will retry");
                }
            }
            if let Some(why) = why {
                unsent.push((tx, why));
            }
        }
        self.metrics.settler_stuck_transactions.with_label_values(&[self.chain.name.as_str()]).set(stuck);
        self.report_stalls(&Stall::SIGNED, &unsent);
        Ok(())
    }

    /// A reorg deeper than the confirmations can take a confirmed transaction away; its signer's
    /// later nonces then wait for ever. For every signer with a transaction confirmed within
    /// `max(4 x confirmations, 16)` blocks below the head of the previous recheck (or this one's,
    /// whichever is lower: a reorg between two rechecks is caught however far the head ran in
    /// between), the chain's count of its mined transactions is read, and each such transaction
    /// at or above that count goes to [`Settler::reopen_if_gone`]; each one below it to
    /// [`Settler::moved_if_reincluded`]. Once per head: a reorg at the same height is seen at the
    /// next block, whose recheck reaches back as far. After a start or a lease change
    /// [`Settler::reconcile_nonces`] does the same for every signer whose count is behind.
    async fn recheck_confirmed(&mut self, head: u64) -> Result<(), SettleError> {
        if self.rechecked_at == Some(head) {
            return Ok(());
        }
        let depth = self.chain.confirmations.saturating_mul(4).max(16);
        let from = self.rechecked_at.map_or(head, |last| last.min(head)).saturating_sub(depth);
        let recent = {
            let mut conn = self.store.conn().await?;
            chain_txs::confirmed_since(&mut conn, self.chain.chain_id, from).await?
        };
        let mut used_by: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for tx in &recent {
            let Some(nonce) = tx.nonce else { continue };
            let used = match used_by.get(&tx.signer_address) {
                Some(used) => *used,
                None => {
                    let used = self.mined_count(&tx.signer_address).await?;
                    used_by.insert(tx.signer_address.clone(), used);
                    used
                }
            };
            if nonce >= used {
                self.reopen_if_gone(tx).await?;
            } else {
                self.moved_if_reincluded(tx).await?;
            }
        }
        self.rechecked_at = Some(head);
        Ok(())
    }

    /// A confirmed transaction its signer's count still includes may have been put into another
    /// block by a reorg deeper than the confirmations (re-included, perhaps as another of its
    /// attempts), at that block's base fee. When its receipt no longer says the block and cost
    /// recorded, it goes back to `broadcast`, and nothing is sent: the follow-up records where it
    /// is now and confirms it again once deep enough, and that confirmation posts what its gas
    /// now differs by (its other entries stay and post nothing new). When no attempt of it has a
    /// receipt (a node behind the others answered), nothing is decided.
    async fn moved_if_reincluded(&self, tx: &ChainTx) -> Result<(), SettleError> {
        let Some(mined_hash) = tx.mined_tx_hash.as_deref() else { return Ok(()) };
        let parse = |hash: &str| -> Result<B256, SettleError> {
            hash.parse().map_err(|_| StoreError::Corrupt(format!("transaction {} has a malformed hash", tx.id)).into())
        };
        match self.receipt(parse(mined_hash)?).await? {
            Some(receipt) if Some(receipt.block) == tx.mined_block && Some(receipt.gas_cost) == tx.gas_cost => {
                return Ok(());
            }
            Some(_) => {}
            None => {
                let attempts = {
                    let mut conn = self.store.conn().await?;
                    chain_txs::attempts(&mut conn, tx.id).await?
                };
                let mut other_mined = false;
                for attempt in attempts.iter().filter(|a| a.tx_hash != mined_hash) {
                    if self.receipt(parse(&attempt.tx_hash)?).await?.is_some() {
                        other_mined = true;
                        break;
                    }
                }
                if !other_mined {
                    return Ok(());
                }
            }
        }
        let mut db = self.store.begin().await?;
        let moved = chain_txs::set_unconfirmed(&mut db, tx.id).await?;
        db.commit().await.map_err(StoreError::from)?;
        if moved {
            tracing::warn!(
                chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), tx_hash = mined_hash,
                "a reorg deeper than the confirmations moved a confirmed transaction to another block; confirming it again"
            );
            self.count(tx.purpose, "moved");
        }
        Ok(())
    }

    /// How many transactions of `signer` the chain had mined at the confirmations' depth below
    /// `head`: a count no reorg within the confirmations can lower.
    async fn mined_count_at_depth(&self, signer: Address, head: u64) -> Result<u64, SettleError> {
        let deep = (head + 1).saturating_sub(self.chain.confirmations);
        Ok(self
            .rpc
            .call("eth_getTransactionCount", |p| async move {
                p.get_transaction_count(signer).block_id(alloy::eips::BlockId::number(deep)).await
            })
            .await?)
    }

    /// How many transactions of `signer` the chain has mined (its next nonce).
    async fn mined_count(&self, signer: &str) -> Result<u64, SettleError> {
        let parsed: Address =
            signer.parse().map_err(|_| StoreError::Corrupt(format!("signer {signer} is malformed")))?;
        Ok(self
            .rpc
            .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(parsed).latest().await })
            .await?)
    }

    /// A confirmed transaction at or above its signer's mined count: if its receipt is gone too
    /// (two readings, so a node that lags on one does not decide), a reorg deeper than the
    /// confirmations took it away. It goes back to `broadcast` and its mined bytes are sent again:
    /// same nonce, same bytes, so it can only be the same payment. What it posted to the ledger
    /// stays (keyed by the transaction), and counts once when it is mined again.
    async fn reopen_if_gone(&self, tx: &ChainTx) -> Result<(), SettleError> {
        let (Some(nonce), Some(mined_hash)) = (tx.nonce, tx.mined_tx_hash.as_deref()) else { return Ok(()) };
        let hash: B256 = mined_hash
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("transaction {} has a malformed mined hash", tx.id)))?;
        if self.receipt(hash).await?.is_some() {
            return Ok(()); // the nonce reading lagged; the receipt is there
        }
        let attempts = {
            let mut conn = self.store.conn().await?;
            chain_txs::attempts(&mut conn, tx.id).await?
        };
        let mut db = self.store.begin().await?;
        let moved = chain_txs::set_unconfirmed(&mut db, tx.id).await?;
        db.commit().await.map_err(StoreError::from)?;
        if !moved {
            return Ok(());
        }
        tracing::error!(
            chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), nonce,
            tx_hash = mined_hash, "a reorg deeper than the confirmations took a confirmed transaction away; sending it again"
        );
        self.count(tx.purpose, "reorged");
        if let Some(mined) = attempts.iter().find(|a| a.tx_hash == mined_hash) {
            self.send_raw(mined).await;
        }
        Ok(())
    }

    /// Sends a signed transaction's latest attempt again (recording it as broadcast once a node
    /// takes it).
    async fn resend(&self, tx: &ChainTx, head: u64) -> Result<bool, SettleError> {
        let attempts = {
            let mut conn = self.store.conn().await?;
            chain_txs::attempts(&mut conn, tx.id).await?
        };
        let latest = attempts
            .last()
            .ok_or_else(|| StoreError::Corrupt(format!("transaction {} is {} with no attempt", tx.id, tx.state)))?;
        self.broadcast(tx, latest, head).await
    }

    /// Follows one transaction a step: its receipts, confirmations, a bump when it is due, or
    /// sending its latest attempt again (unless `sent`: this step sent it already).
    async fn follow(&self, tx: &ChainTx, head: u64, fees: Fees, sent: bool) -> Result<Followed, SettleError> {
        let attempts = {
            let mut conn = self.store.conn().await?;
            chain_txs::attempts(&mut conn, tx.id).await?
        };
        let Some(latest) = attempts.last().cloned() else {
            return Err(StoreError::Corrupt(format!("transaction {} is {} with no attempt", tx.id, tx.state)).into());
        };
        let nonce = tx.nonce.ok_or_else(|| StoreError::Corrupt(format!("transaction {} has no nonce", tx.id)))?;
        let signer: Address = tx
            .signer_address
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("transaction {} has a malformed signer", tx.id)))?;
        // The nonce is read before the receipts: a transaction mined in between shows a receipt.
        let used = self
            .rpc
            .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(signer).latest().await })
            .await?;
        let mut included = None;
        for attempt in attempts.iter().rev() {
            let hash: B256 = attempt
                .tx_hash
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("attempt {} has a malformed hash", attempt.id)))?;
            if let Some(receipt) = self.receipt(hash).await? {
                included = Some((attempt.clone(), receipt));
                break;
            }
        }

        let Some((attempt, receipt)) = included else {
            if tx.state == TxState::Mined {
                let mut db = self.store.begin().await?;
                chain_txs::set_unmined(&mut db, tx.id).await?;
                db.commit().await.map_err(StoreError::from)?;
                tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, "a reorg took a mined transaction away; rebroadcasting");
            }
            if used > nonce {
                // Another transaction may have taken the nonce; or a reorg between the two
                // readings took ours away (the count came before it, the receipts after), which
                // the chaos test caught pausing the treasury for good. So the count is read again,
                // now and at the confirmations' depth: only a nonce used that deep, with none of
                // our attempts mined, is a conflict. Even then it is not a verdict to release money
                // on: stop signing with this key and let an operator look (`depositd treasury
                // resume-signer`). A shallower use is waited on.
                let used_deep = self.mined_count_at_depth(signer, head).await?;
                // One the ledger records was confirmed at this nonce by one of our attempts: a
                // moment without its receipt (a node behind, an index rebuilt after a reorg) is
                // no conflict; the next recheck reads it again.
                let recorded = {
                    let mut conn = self.store.conn().await?;
                    ledger::settlement::records_transaction(&mut conn, tx.id).await?
                };
                if used_deep > nonce && !recorded {
                    self.nonce_conflict(tx, used).await?;
                    return Ok(Followed::Stuck);
                }
                tracing::warn!(
                    chain = %self.chain.name, transaction_id = %tx.id, nonce, chain_nonce = used,
                    chain_nonce_at_depth = used_deep,
                    "the nonce shows as used but none of our attempts is mined (near the head, or a receipt of a transaction confirmed before is missing for now); waiting"
                );
                return Ok(Followed::Pending);
            }
            return match latest.broadcast_block {
                None if sent => Ok(Followed::Pending),
                None => {
                    self.broadcast(tx, &latest, head).await?;
                    Ok(Followed::Pending)
                }
                Some(at) if head.saturating_sub(at) >= self.settings.bump_after_blocks => {
                    self.bump(tx, &latest, fees, head).await
                }
                Some(_) => {
                    if !sent {
                        self.send_raw(&latest).await;
                    }
                    Ok(Followed::Pending)
                }
            };
        };

        let (block, gas_cost) = (receipt.block, receipt.gas_cost);
        let mut db = self.store.begin().await?;
        match chain_txs::lock(&mut db, tx.id).await? {
            Some(locked) if locked.state == tx.state => {}
            _ => return Ok(Followed::Pending), // moved by another process meanwhile
        }
        let mut current = tx.clone();
        if tx.state != TxState::Mined
            || tx.mined_tx_hash.as_deref() != Some(attempt.tx_hash.as_str())
            || tx.mined_block != Some(block)
        {
            if tx.state == TxState::Mined {
                chain_txs::set_unmined(&mut db, tx.id).await?;
            }
            if tx.state == TxState::Signed {
                // Broadcast before a crash kept it from being recorded.
                chain_txs::set_broadcast(&mut db, attempt.id, head).await?;
                if chain_txs::transition(&mut db, tx.id, TxState::Signed, TxState::Broadcast).await? {
                    outcome::submitted(&mut db, self.payout_ctx(), tx, &attempt.tx_hash).await?;
                }
            }
            if !chain_txs::set_mined(&mut db, tx.id, TxState::Broadcast, &attempt.tx_hash, block, gas_cost).await? {
                return Err(StoreError::Corrupt(format!("transaction {} left its state under a lock", tx.id)).into());
            }
            current.state = TxState::Mined;
            current.mined_tx_hash = Some(attempt.tx_hash.clone());
            current.mined_block = Some(block);
            current.gas_cost = Some(gas_cost);
        }
        let deep_enough = block + self.chain.confirmations <= head + 1;
        let followed = if !deep_enough {
            Followed::Mined
        } else if receipt.succeeded {
            if !chain_txs::transition(&mut db, tx.id, TxState::Mined, TxState::Confirmed).await? {
                return Err(StoreError::Corrupt(format!("transaction {} left its state under a lock", tx.id)).into());
            }
            current.state = TxState::Confirmed;
            outcome::confirmed(&mut db, self.payout_ctx(), &current).await?;
            Followed::Confirmed
        } else {
            if !chain_txs::set_failed(&mut db, tx.id, TxState::Mined, "reverted on chain").await? {
                return Err(StoreError::Corrupt(format!("transaction {} left its state under a lock", tx.id)).into());
            }
            current.state = TxState::Failed;
            // Recorded already: it confirmed once, then a reorg deeper than the confirmations
            // took it away, and its resend reverted. What it moved stays in the ledger.
            let undone = ledger::settlement::records_transaction(&mut db, tx.id).await?;
            outcome::failed(&mut db, self.payout_ctx(), &current, Some(gas_cost), "the transaction reverted on chain")
                .await?;
            if undone { Followed::FailedAfterConfirmed } else { Followed::Failed }
        };
        db.commit().await.map_err(StoreError::from)?;
        match followed {
            Followed::Confirmed => {
                tracing::info!(chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), tx_hash = %attempt.tx_hash, block, "transaction confirmed");
                self.count(tx.purpose, "confirmed");
            }
            Followed::Failed => {
                tracing::error!(chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), tx_hash = %attempt.tx_hash, "transaction reverted on chain");
                self.count(tx.purpose, "failed");
            }
            Followed::FailedAfterConfirmed => {
                tracing::error!(chain = %self.chain.name, transaction_id = %tx.id, purpose = tx.purpose.as_str(), tx_hash = %attempt.tx_hash, "a transaction confirmed before a deep reorg reverted when sent again; the ledger still records what it moved");
                self.count(tx.purpose, "failed_after_confirmed");
            }
            _ => {}
        }
        Ok(followed)
    }

    /// A transaction's receipt, read as JSON so that rollups' extra fees are seen: OP-stack chains
    /// charge an L1 data fee (`l1Fee`) on top of `gasUsed` x `effectiveGasPrice`.
    async fn receipt(&self, hash: B256) -> Result<Option<Receipt>, SettleError> {
        let raw: Option<serde_json::Value> = self
            .rpc
            .call("eth_getTransactionReceipt", |p| async move {
                p.raw_request("eth_getTransactionReceipt".into(), (hash,)).await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let field = |name: &str| -> Result<U256, SettleError> {
            raw.get(name)
                .and_then(|v| v.as_str())
                .and_then(|v| U256::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .ok_or_else(|| SettleError::BadAnswer {
                    what: "eth_getTransactionReceipt",
                    message: format!("no {name} in {raw}"),
                })
        };
        let block = u64::try_from(field("blockNumber")?).unwrap_or(u64::MAX);
        let mut gas_cost = field("gasUsed")? * field("effectiveGasPrice")?;
        if raw.get("l1Fee").is_some_and(|v| !v.is_null()) {
            gas_cost += field("l1Fee")?;
        }
        Ok(Some(Receipt { block, succeeded: field("status")? == U256::from(1u8), gas_cost: BaseUnits(gas_cost) }))
    }

    fn count(&self, purpose: Purpose, state: &str) {
        self.metrics
            .settler_transactions_total
            .with_label_values(&[self.chain.name.as_str(), purpose.as_str(), state])
            .inc();
    }

    /// The chain shows this transaction's nonce used, but none of its attempts mined: pause the
    /// signer and report. Nothing is failed or released on this reading alone.
    async fn nonce_conflict(&self, tx: &ChainTx, used: u64) -> Result<(), SettleError> {
        let reason = format!(
            "nonce {} of {} shows as used but none of transaction {}'s attempts is mined: another transaction \
             may have used the key",
            tx.nonce.unwrap_or_default(),
            tx.signer_address,
            tx.id
        );
        let mut db = self.store.begin().await?;
        chain_txs::set_paused(&mut db, self.chain.chain_id, &tx.signer_address, Some(&reason)).await?;
        db.commit().await.map_err(StoreError::from)?;
        tracing::error!(chain = %self.chain.name, transaction_id = %tx.id, chain_nonce = used, reason, "signer paused");
        self.metrics.settler_signers_paused.with_label_values(&[self.chain.name.as_str()]).set(1);
        Ok(())
    }

    /// An operator looked at a paused signer: fail (and release) each of its transactions whose
    /// nonce the chain used at a confirmed depth while none of its attempts has a receipt, adopt
    /// the chain's nonce and resume signing. Returns the signer's next nonce.
    pub async fn resume_signer(&self, signer: Address) -> Result<u64, SettleError> {
        let address = signer.to_checksum(None);
        let head = self.rpc.head().await?;
        let used_deep = self.mined_count_at_depth(signer, head).await?;
        let in_flight = {
            let mut conn = self.store.conn().await?;
            chain_txs::in_flight(&mut conn, self.chain.chain_id).await?
        };
        for tx in in_flight.iter().filter(|t| t.signer_address == address && t.state != TxState::Mined) {
            let Some(nonce) = tx.nonce else { continue };
            if nonce >= used_deep {
                continue;
            }
            let attempts = {
                let mut conn = self.store.conn().await?;
                chain_txs::attempts(&mut conn, tx.id).await?
            };
            let mut mined = false;
            for attempt in &attempts {
                let hash: B256 = attempt
                    .tx_hash
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("attempt {} has a malformed hash", attempt.id)))?;
                mined |= self.receipt(hash).await?.is_some();
            }
            if mined {
                continue; // the next follow-up step records it
            }
            let reason = format!("nonce {nonce} was used by a transaction depositd did not sign");
            let mut db = self.store.begin().await?;
            let undone = ledger::settlement::records_transaction(&mut db, tx.id).await?;
            if chain_txs::set_failed(&mut db, tx.id, tx.state, &reason).await? {
                outcome::failed(&mut db, self.payout_ctx(), tx, None, &reason).await?;
            }
            db.commit().await.map_err(StoreError::from)?;
            tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, reason, "transaction failed: its nonce was taken");
            self.count(tx.purpose, if undone { "failed_after_confirmed" } else { "failed" });
        }
        let pending = self
            .rpc
            .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(signer).pending().await })
            .await?;
        let mut db = self.store.begin().await?;
        let Some((next, _)) = chain_txs::lock_nonce(&mut db, self.chain.chain_id, &address).await? else {
            return Err(SettleError::Config(format!("{address} has never signed on {}", self.chain.name)));
        };
        let adopted = pending.max(next);
        chain_txs::set_next_nonce(&mut db, self.chain.chain_id, &address, adopted).await?;
        chain_txs::set_paused(&mut db, self.chain.chain_id, &address, None).await?;
        db.commit().await.map_err(StoreError::from)?;
        Ok(adopted)
    }

    /// Replaces an unmined transaction with higher fees (same nonce), within its budget.
    async fn bump(&self, tx: &ChainTx, latest: &Attempt, fees: Fees, head: u64) -> Result<Followed, SettleError> {
        let limit = u128_of(tx.max_gas_cost) / u128::from(latest.gas_limit.max(1));
        let previous =
            Fees { max_fee_per_gas: latest.max_fee_per_gas, max_priority_fee_per_gas: latest.max_priority_fee_per_gas };
        let Some(next) = gas::bumped(previous, fees, self.settings.bump_percent, limit) else {
            tracing::warn!(chain = %self.chain.name, transaction_id = %tx.id, max_fee_per_gas = latest.max_fee_per_gas, "transaction not mined and at its fee budget; waiting");
            self.send_raw(latest).await;
            return Ok(Followed::Stuck);
        };
        let signer = self.signer_for(&tx.signer_address).await?;
        let nonce = tx.nonce.ok_or_else(|| StoreError::Corrupt(format!("transaction {} has no nonce", tx.id)))?;
        let attempt = self.sign_attempt(&signer, tx, nonce, latest.gas_limit, next)?;
        {
            let mut db = self.store.begin().await?;
            chain_txs::insert_attempt(&mut db, &attempt).await?;
            db.commit().await.map_err(StoreError::from)?;
        }
        self.metrics.settler_fee_bumps_total.with_label_values(&[self.chain.name.as_str()]).inc();
        tracing::info!(
            chain = %self.chain.name, transaction_id = %tx.id, nonce, from = latest.max_fee_per_gas,
            to = next.max_fee_per_gas, tx_hash = %attempt.tx_hash, "transaction not mined in time; replaced with higher fees"
        );
        self.broadcast(tx, &attempt, head).await?;
        Ok(Followed::Pending)
    }

    /// Start-up check of every signer's stored nonce against the chain.
    pub(crate) async fn reconcile_nonces(&self) -> Result<(), SettleError> {
        let signers = {
            let mut conn = self.store.conn().await?;
            chain_txs::signers(&mut conn, self.chain.chain_id).await?
        };
        let (mut drift, mut paused) = (0i64, 0i64);
        for (address, next, paused_reason) in signers {
            if let Some(reason) = paused_reason {
                tracing::error!(chain = %self.chain.name, signer = %address, reason, "signer is paused until an operator resolves it");
                paused += 1;
                continue;
            }
            let parsed: Address =
                address.parse().map_err(|_| StoreError::Corrupt(format!("signer {address} is malformed")))?;
            let used = self
                .rpc
                .call("eth_getTransactionCount", |p| async move { p.get_transaction_count(parsed).latest().await })
                .await?;
            if used > next {
                let reason = format!(
                    "the chain shows {used} transactions from {address} but depositd assigned only {next} nonces: \
                     someone else sent from this key"
                );
                let mut db = self.store.begin().await?;
                chain_txs::set_paused(&mut db, self.chain.chain_id, &address, Some(&reason)).await?;
                db.commit().await.map_err(StoreError::from)?;
                tracing::error!(chain = %self.chain.name, signer = %address, reason, "nonce drift; signer paused");
                drift += (used - next) as i64;
                paused += 1;
            } else if used < next {
                tracing::info!(chain = %self.chain.name, signer = %address, chain_nonce = used, next, "signed transactions not yet mined; they are rebroadcast");
                // A transaction recorded confirmed at a nonce the chain no longer counts was taken
                // away by a reorg while no recheck was watching (this process was down, or the
                // head ran past the recheck's reach): send it again before anything is planned on
                // top of the gap.
                let confirmed = {
                    let mut conn = self.store.conn().await?;
                    chain_txs::confirmed_from_nonce(&mut conn, self.chain.chain_id, &address, used).await?
                };
                for tx in &confirmed {
                    self.reopen_if_gone(tx).await?;
                }
            }
        }
        self.metrics.settler_nonce_drift.with_label_values(&[self.chain.name.as_str()]).set(drift);
        self.metrics.settler_signers_paused.with_label_values(&[self.chain.name.as_str()]).set(paused);
        Ok(())
    }
}

/// What a receipt says: where the transaction was mined, whether it succeeded, and what it cost
/// (every fee the chain charged, in the native coin's base units).
struct Receipt {
    block: u64,
    succeeded: bool,
    gas_cost: BaseUnits,
}

/// Where one follow-up step left a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Followed {
    Pending,
    /// Included, not yet deep enough.
    Mined,
    Stuck,
    Confirmed,
    Failed,
    /// Confirmed once, taken away by a reorg deeper than the confirmations, and reverted when
    /// sent again: what it moved stays in the ledger for an operator to settle.
    FailedAfterConfirmed,
}

/// Why a transaction is not mined yet: the `reason` of `depositd_settler_stalled_transactions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// An intent whose gas top-up is not confirmed yet.
    WaitingForDependency,
    /// An intent the hot wallet's recorded funds (or the operator's own) do not cover.
    WaitingForFunds,
    /// An intent whose signer is paused (nonce drift: `depositd treasury resume-signer`).
    SignerPaused,
    /// An intent that failed to sign (gas estimate or nonce read failed).
    CannotSign,
    /// Signed, but no node has accepted its broadcast.
    NotAccepted,
    /// Accepted and not mined yet.
    NotMined,
    /// Not mined and at its fee budget, or its nonce taken by another transaction.
    Stuck,
    /// Its receipts could not be read.
    CannotFollow,
}

impl Stall {
    /// What `sign_ready` judges.
    pub(crate) const UNSIGNED: [Stall; 4] =
        [Stall::WaitingForDependency, Stall::WaitingForFunds, Stall::SignerPaused, Stall::CannotSign];
    /// What `monitor` judges.
    pub(crate) const SIGNED: [Stall; 4] = [Stall::NotAccepted, Stall::NotMined, Stall::Stuck, Stall::CannotFollow];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stall::WaitingForDependency => "waiting_for_gas_topup",
            Stall::WaitingForFunds => "waiting_for_funds",
            Stall::SignerPaused => "signer_paused",
            Stall::CannotSign => "cannot_sign",
            Stall::NotAccepted => "broadcast_refused",
            Stall::NotMined => "not_mined",
            Stall::Stuck => "stuck",
            Stall::CannotFollow => "cannot_follow",
        }
    }
}
