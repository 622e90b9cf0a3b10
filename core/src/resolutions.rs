//! Resolving a transfer in suspense: the one place its rules are written. A transfer the watcher
//! recorded as `rejected` (wrong asset or chain for its invoice, a disabled static address, a
//! pooled address no one was given) is posted to the platform's `suspense` account
//! (`crate::crediting::on_rejected`); an operator then resolves it, once, with a reason, from
//! the CLI (`depositd deposits resolve`) or the operator API, which both call [`resolve`]:
//!
//! - **credit an invoice**: `suspense` -> the invoice merchant's `pending`, then credited by the
//!   invoice's own rules (`crediting::credit_invoice`: status and flags move, credit and fee
//!   posted, `invoice.*` events); only in the invoice's chain and asset;
//! - **credit a merchant**: `suspense` -> the merchant's `available`, less the merchant's fee for
//!   the asset (`fee` -> `fee_revenue`);
//! - **refund**: the treasury sends the amount to the payer (the transfer's sender) or to an
//!   address the operator gives (EIP-55 checked). The resolution writes the transaction's intent
//!   row in its own database transaction, and the settler's transaction manager sends it like
//!   every send (nonce, bytes and hash stored before the first broadcast, rebroadcast after a
//!   crash, never re-signed); the money leaves suspense when the send is confirmed
//!   ([`refund_confirmed`]: `suspense` -> hot wallet, the gas the operator's), and a failed send
//!   puts the deposit back to be resolved again ([`refund_failed`]). Suspense money is swept
//!   into the treasury like custody money (`store::deposits::SWEEPABLE`), so the treasury
//!   refunds what it holds;
//! - **revenue**: `suspense` -> the platform's `fee_revenue`.
//!
//! Each records `deposit.resolved` (who, what, why: [`ResolutionResource`]) in the same
//! transaction: to the merchant it touches (credited, or the one whose invoice or static address
//! the transfer paid), or, for a transfer no merchant is concerned with, under the nil merchant
//! id, which no merchant reads (the event row is the record).
//!
//! Exactly once: one live resolution per life of a deposit (a unique index), its ledger entries
//! keyed by the deposit and its generation. Resolving a deposit already resolved the same way
//! (same action, target and reason) returns that resolution (a retried request); any other
//! resolution of it is refused with [`ResolveError::AlreadyResolved`].

use alloy::primitives::Address;
use uuid::Uuid;

use crate::chain_tx::{ChainTx, Purpose};
use crate::config::ChainConfig;
use crate::crediting;
use crate::deposit::{Deposit, DepositState};
use crate::evm::parse_address;
use crate::ledger::suspense::{self, Release};
use crate::ledger::{AccountKind, LedgerError, settlement};
use crate::outbox::{self, EventType, Subject};
use crate::resolution::{Resolution, ResolutionAction, ResolutionResource, ResolutionState};
use crate::store::{StoreError, Tx, chain_txs, deposits, invoices, merchants, resolutions};
use crate::time::now_ms;

/// What a resolution does (parsed from the CLI's flags or the API's body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Credit invoice `id`.
    CreditInvoice(Uuid),
    /// Credit merchant `id`'s balance.
    CreditMerchant(Uuid),
    /// Refund to this address, or (`None`) to the transfer's sender. Unparsed: [`resolve`]
    /// checks it (EIP-55).
    Refund(Option<String>),
    /// The operator's revenue.
    Revenue,
}

/// A request to resolve deposit `deposit_id`.
#[derive(Debug, Clone)]
pub struct ResolveRequest {
    pub deposit_id: Uuid,
    pub target: Target,
    /// Why; required, never empty.
    pub reason: String,
    /// Who: `cli:<user>` or `api_key:<key id>`.
    pub actor: String,
}

/// What resolving needs besides the transaction: the chains (the deposit's assets and
/// decimals), the treasury (a refund's sender) and what renders an invoice for its events.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub chains: &'a [ChainConfig],
    pub treasury: Address,
    pub crediting: crediting::Context<'a>,
}

/// Why a deposit cannot be resolved as asked. Each is the operator's to fix, except `Store` and
/// `Ledger`, which are ours.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no deposit {0}")]
    DepositNotFound(Uuid),
    /// Only a transfer in suspense (recorded as `rejected`) is resolved.
    #[error("{0}")]
    NotInSuspense(String),
    /// Not yet as deep as the chain's confirmations: a reorg could still take it away.
    #[error("{0}")]
    NotConfirmed(String),
    #[error("{0}")]
    AlreadyResolved(String),
    /// The deposit left suspense (a reorg) while it was being resolved.
    #[error("{0}")]
    Changed(String),
    /// The invoice forwards what it is paid to the merchant's own address (a receiver override):
    /// a credit from suspense would sit in transit with nothing to forward it.
    #[error("{0}")]
    InvoicePassThrough(String),
    #[error("a reason is required")]
    ReasonRequired,
    #[error("no invoice {0}")]
    InvoiceNotFound(Uuid),
    #[error("no merchant {0}")]
    MerchantNotFound(Uuid),
    /// The invoice is on another chain or in another asset than the transfer.
    #[error("{0}")]
    AssetMismatch(String),
    #[error("refund address {address}: {why}")]
    BadAddress { address: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(LedgerError),
}

impl From<LedgerError> for ResolveError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Store(e) => ResolveError::Store(e),
            other => ResolveError::Ledger(other),
        }
    }
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone)]
pub struct Resolved {
    pub resolution: Resolution,
    pub resource: ResolutionResource,
    /// The same request was made before: this is that resolution, nothing was done now.
    pub replayed: bool,
}

impl Target {
    fn action(&self) -> ResolutionAction {
        match self {
            Target::CreditInvoice(_) => ResolutionAction::CreditInvoice,
            Target::CreditMerchant(_) => ResolutionAction::CreditMerchant,
            Target::Refund(_) => ResolutionAction::Refund,
            Target::Revenue => ResolutionAction::Revenue,
        }
    }

    /// Whether `existing` is what this target (with `reason`) asks for: a retried request.
    fn matches(&self, existing: &Resolution, reason: &str, refund_to: Option<&str>) -> bool {
        existing.action == self.action()
            && existing.reason == reason
            && match self {
                Target::CreditInvoice(id) => existing.invoice_id == Some(*id),
                Target::CreditMerchant(id) => existing.merchant_id == Some(*id),
                Target::Refund(_) => existing.destination.as_deref() == refund_to,
                Target::Revenue => true,
            }
    }
}

fn chain_of<'a>(ctx: &Context<'a>, deposit: &Deposit) -> Result<&'a ChainConfig, ResolveError> {
    ctx.chains.iter().find(|c| c.chain_id == deposit.chain_id).ok_or_else(|| {
        ResolveError::NotInSuspense(format!("chain {} of deposit {} is not configured", deposit.chain_id, deposit.id))
    })
}

/// Resolves a transfer in suspense as `request` says (see the module doc), in the caller's
/// transaction (which the caller commits).
pub async fn resolve(tx: &mut Tx, ctx: Context<'_>, request: ResolveRequest) -> Result<Resolved, ResolveError> {
    let reason = request.reason.trim().to_owned();
    if reason.is_empty() {
        return Err(ResolveError::ReasonRequired);
    }
    let deposit =
        deposits::get_any(tx, request.deposit_id).await?.ok_or(ResolveError::DepositNotFound(request.deposit_id))?;
    if deposit.state != DepositState::Rejected {
        return Err(ResolveError::NotInSuspense(format!(
            "deposit {} is {}, not in suspense: only a transfer recorded as rejected is resolved",
            deposit.id, deposit.state
        )));
    }
    // Hold the deposit's row for this transaction, on the condition that it is still rejected in
    // the same life: a reorg committing rejected -> reorged between the read above and here must
    // not let this release money that is gone (PostgreSQL re-checks the condition after waiting
    // for the row; SQLite's BEGIN IMMEDIATE already serialises writers).
    if !deposits::hold_rejected(tx, deposit.id, deposit.generation).await? {
        return Err(ResolveError::Changed(format!(
            "deposit {} changed while it was being resolved (a reorg took it out of suspense); look at it again",
            deposit.id
        )));
    }
    let chain = chain_of(&ctx, &deposit)?;
    let refund_to = match &request.target {
        Target::Refund(to) => {
            let text = to.clone().unwrap_or_else(|| deposit.from_address.clone());
            let address = parse_address(&text)
                .map_err(|e| ResolveError::BadAddress { address: text.clone(), why: e.to_string() })?;
            Some(address.to_checksum(None))
        }
        _ => None,
    };
    if let Some(existing) = resolutions::live_any(tx, deposit.id).await? {
        if existing.generation == deposit.generation && request.target.matches(&existing, &reason, refund_to.as_deref())
        {
            let resource = ResolutionResource::build(&existing, &deposit);
            return Ok(Resolved { resolution: existing, resource, replayed: true });
        }
        return Err(ResolveError::AlreadyResolved(format!(
            "deposit {} was already resolved by resolution {} ({}, {}, by {}, reason {:?}, life {}); a deposit is \
             resolved once, also after a reorg revives it",
            deposit.id,
            existing.id,
            existing.action,
            existing.state,
            existing.actor,
            existing.reason,
            existing.generation
        )));
    }
    if deposit.confirmed_at.is_none() {
        return Err(ResolveError::NotConfirmed(format!(
            "deposit {} is in block {} and not yet {} blocks deep on {}; resolve it once it is",
            deposit.id, deposit.block_number, chain.confirmations, chain.name
        )));
    }
    if !suspense::in_suspense(tx, &deposit).await? {
        return Err(ResolveError::NotInSuspense(format!(
            "deposit {} holds nothing in suspense (an amount that could not be read, or not posted yet)",
            deposit.id
        )));
    }

    let now = now_ms();
    let mut resolution = Resolution {
        id: Uuid::now_v7(),
        deposit_id: deposit.id,
        generation: deposit.generation,
        action: request.target.action(),
        invoice_id: None,
        merchant_id: None,
        destination: refund_to.clone(),
        transaction_id: None,
        state: ResolutionState::Completed,
        reason,
        actor: request.actor.clone(),
        failure_reason: None,
        created_at: now,
        updated_at: now,
    };
    let mut intent = None;
    match &request.target {
        Target::CreditInvoice(invoice_id) => {
            let invoice =
                invoices::get_any(tx, *invoice_id).await?.ok_or(ResolveError::InvoiceNotFound(*invoice_id))?;
            if !invoice.accepts(deposit.chain_id, &deposit.asset) {
                return Err(ResolveError::AssetMismatch(format!(
                    "invoice {} is paid in {} on chain {}, the transfer is {} on chain {}; credit the merchant's \
                     {} balance instead, or refund it",
                    invoice.id, invoice.asset, invoice.chain_id, deposit.asset, deposit.chain_id, deposit.asset
                )));
            }
            if invoice.receiver_override_address.is_some() {
                return Err(ResolveError::InvoicePassThrough(format!(
                    "invoice {} forwards its payments to the merchant's own address (a receiver override); \
                     suspense money cannot be credited to it: credit the merchant's {} balance instead, or refund it",
                    invoice.id, deposit.asset
                )));
            }
            resolution.invoice_id = Some(invoice.id);
            resolution.merchant_id = Some(invoice.merchant_id);
        }
        Target::CreditMerchant(merchant_id) => {
            merchants::get(tx, *merchant_id).await?.ok_or(ResolveError::MerchantNotFound(*merchant_id))?;
            resolution.merchant_id = Some(*merchant_id);
        }
        Target::Refund(_) => {
            let asset = chain.asset(&deposit.asset).ok_or_else(|| {
                ResolveError::NotInSuspense(format!(
                    "asset {} is no longer configured on {}",
                    deposit.asset, chain.name
                ))
            })?;
            let mut send = ChainTx::intent(
                chain.chain_id,
                ctx.treasury.to_checksum(None),
                Purpose::Refund,
                refund_to.clone().expect("parsed above"),
                &deposit.asset,
                deposit.amount,
                asset.token_address.map(|a| a.to_checksum(None)),
                crate::money::BaseUnits::ZERO,
            );
            send.merchant_id = deposit.merchant_id;
            resolution.transaction_id = Some(send.id);
            resolution.state = ResolutionState::Pending;
            intent = Some(send);
        }
        Target::Revenue => {}
    }
    if let Some(send) = &intent {
        chain_txs::insert_intent(tx, send).await?;
    }
    resolutions::insert(tx, &resolution).await.map_err(|e| match e {
        StoreError::Conflict(_) => ResolveError::AlreadyResolved(format!(
            "deposit {} is being resolved by another request; look at it again",
            deposit.id
        )),
        other => other.into(),
    })?;

    match &request.target {
        Target::CreditInvoice(invoice_id) => {
            let invoice =
                invoices::get_any(tx, *invoice_id).await?.ok_or(ResolveError::InvoiceNotFound(*invoice_id))?;
            suspense::post_release(
                tx,
                &deposit,
                Release::InvoicePending { merchant_id: invoice.merchant_id, invoice_id: invoice.id },
                resolution.id,
            )
            .await?;
            let mut credited = deposit.clone();
            credited.merchant_id = Some(invoice.merchant_id);
            credited.invoice_id = Some(invoice.id);
            crediting::credit_invoice(tx, ctx.crediting, &credited, invoice, true).await?;
        }
        Target::CreditMerchant(merchant_id) => {
            let merchant =
                merchants::get(tx, *merchant_id).await?.ok_or(ResolveError::MerchantNotFound(*merchant_id))?;
            suspense::post_release(
                tx,
                &deposit,
                Release::MerchantAvailable { merchant_id: merchant.id },
                resolution.id,
            )
            .await?;
            let decimals = chain.asset(&deposit.asset).map(|a| a.decimals).unwrap_or(18);
            let schedule = merchants::fee_schedule(tx, &merchant, &deposit.asset, decimals).await?;
            let fee = schedule.fee_on(deposit.amount).map_err(|e| LedgerError::Malformed {
                key: format!("fee:{}", deposit.id),
                reason: format!("fee on {}: {e}", deposit.amount),
            })?;
            suspense::post_merchant_fee(tx, &deposit, merchant.id, fee).await?;
        }
        Target::Revenue => {
            suspense::post_release(tx, &deposit, Release::Revenue, resolution.id).await?;
        }
        Target::Refund(_) => {}
    }
    let resource = ResolutionResource::build(&resolution, &deposit);
    announce(tx, &resolution, &deposit, &resource).await?;
    tracing::info!(
        resolution_id = %resolution.id,
        deposit_id = %deposit.id,
        action = resolution.action.as_str(),
        actor = %resolution.actor,
        "deposit in suspense resolved"
    );
    Ok(Resolved { resolution, resource, replayed: false })
}

/// Records `deposit.resolved` for the merchant the resolution touches (see the module doc).
async fn announce(
    tx: &mut Tx,
    resolution: &Resolution,
    deposit: &Deposit,
    resource: &ResolutionResource,
) -> Result<(), StoreError> {
    let merchant_id = resolution.merchant_id.or(deposit.merchant_id).unwrap_or(Uuid::nil());
    outbox::record(tx, merchant_id, EventType::DepositResolved, Subject::new("deposit", deposit.id), resource).await?;
    Ok(())
}

async fn refund_of(tx: &mut Tx, send: &ChainTx) -> Result<(Resolution, Deposit), StoreError> {
    let resolution = resolutions::by_transaction(tx, send.id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("refund transaction {} has no resolution", send.id)))?;
    let deposit = deposits::get_any(tx, resolution.deposit_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("resolution {} names a missing deposit", resolution.id)))?;
    Ok((resolution, deposit))
}

/// Whether `send` is a resolution's refund (a refund transaction with no payout).
pub fn is_refund(send: &ChainTx) -> bool {
    send.purpose == Purpose::Refund && send.payout_id.is_none()
}

/// A resolution's refund is confirmed on chain: the money leaves suspense (`suspense` -> hot
/// wallet), the operator pays the gas, the resolution is `completed` and announced. Idempotent.
pub async fn refund_confirmed(tx: &mut Tx, chain: &ChainConfig, send: &ChainTx) -> Result<(), LedgerError> {
    let (mut resolution, deposit) = refund_of(tx, send).await?;
    let mut life = deposit.clone();
    life.generation = resolution.generation;
    suspense::post_release(tx, &life, Release::Refunded { transaction_id: send.id }, resolution.id).await?;
    settlement::operator_gas(tx, send, &chain.native.symbol, AccountKind::HotWallet, send.gas_cost.unwrap_or_default())
        .await?;
    if resolutions::finish(tx, resolution.id, ResolutionState::Completed, None).await? {
        resolution.state = ResolutionState::Completed;
        let resource = ResolutionResource::build(&resolution, &deposit);
        announce(tx, &resolution, &deposit, &resource).await?;
    }
    Ok(())
}

/// A resolution's refund failed (reverted: `gas` is what it still cost; or never mined): the
/// money stays in suspense and the deposit can be resolved again. Idempotent.
pub async fn refund_failed(
    tx: &mut Tx,
    chain: &ChainConfig,
    send: &ChainTx,
    gas: Option<crate::money::BaseUnits>,
    reason: &str,
) -> Result<(), LedgerError> {
    let (resolution, _) = refund_of(tx, send).await?;
    settlement::operator_gas(tx, send, &chain.native.symbol, AccountKind::HotWallet, gas.unwrap_or_default()).await?;
    if resolutions::finish(tx, resolution.id, ResolutionState::Failed, Some(reason)).await? {
        tracing::warn!(resolution_id = %resolution.id, deposit_id = %resolution.deposit_id, reason, "a refund out of suspense failed; the deposit can be resolved again");
    } else if resolution.state == ResolutionState::Completed {
        // Confirmed once, then taken away by a reorg deeper than the confirmations, and sent
        // again in vain: the ledger counts it refunded (its money left suspense when it
        // confirmed), so it is not resolved again; an operator must settle it.
        tracing::error!(
            resolution_id = %resolution.id, deposit_id = %resolution.deposit_id, transaction_id = %send.id, reason,
            "a refund out of suspense confirmed before a reorg deeper than the confirmations failed when sent again: \
             the ledger still counts it refunded and its destination holds nothing from it; an operator must settle it"
        );
    }
    Ok(())
}
