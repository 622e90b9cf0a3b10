//! An operator's resolution of a transfer in suspense, as the domain sees it: what was done with
//! the money, why, by whom, and the resource the CLI, the operator API and `deposit.resolved`
//! show. The lifecycle is `crate::resolutions`; the rows are `store::resolutions`.

use serde::Serialize;
use uuid::Uuid;

use crate::deposit::{Deposit, DepositResource};
use crate::text_enum::text_enum;

/// What a resolution does with a suspense deposit's money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolutionAction {
    /// Credited to an invoice, by the invoice's rules (status, flags, fee).
    CreditInvoice,
    /// Credited to a merchant's available balance, less the merchant's fee.
    CreditMerchant,
    /// Sent back (to the payer, or an address the operator gives) by the treasury.
    Refund,
    /// Kept by the operator as revenue.
    Revenue,
}

text_enum! {
    ResolutionAction as "resolution action" {
        CreditInvoice = "credit_invoice", CreditMerchant = "credit_merchant", Refund = "refund", Revenue = "revenue",
    }
}

/// `pending` (a refund not yet confirmed on chain) -> `completed`, or `failed` (the refund's
/// transaction failed; the money is back in suspense and the deposit can be resolved again).
/// Credits and revenue are `completed` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolutionState {
    Pending,
    Completed,
    Failed,
}

text_enum! { ResolutionState as "resolution state" { Pending = "pending", Completed = "completed", Failed = "failed" } }

#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub id: Uuid,
    pub deposit_id: Uuid,
    /// The life of the deposit it resolves (a reorg that takes a deposit away and brings it back
    /// puts it in suspense again, as a new life).
    pub generation: i64,
    pub action: ResolutionAction,
    /// The invoice credited.
    pub invoice_id: Option<Uuid>,
    /// The merchant credited (also the invoice's merchant for a credit to an invoice).
    pub merchant_id: Option<Uuid>,
    /// A refund's recipient, EIP-55.
    pub destination: Option<String>,
    /// The treasury transaction that sends a refund.
    pub transaction_id: Option<Uuid>,
    pub state: ResolutionState,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who: `cli:<user>` or `api_key:<key id>`.
    pub actor: String,
    pub failure_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A resolution as the CLI, the operator API and the `deposit.resolved` event show it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ResolutionResource {
    /// Always `deposit_resolution`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    /// `credit_invoice`, `credit_merchant`, `refund` or `revenue`.
    pub action: String,
    /// `pending` (a refund on its way), `completed` or `failed`.
    pub state: String,
    pub reason: String,
    pub actor: String,
    pub invoice_id: Option<Uuid>,
    pub merchant_id: Option<Uuid>,
    pub destination: Option<String>,
    pub transaction_id: Option<Uuid>,
    pub failure_reason: Option<String>,
    /// Epoch seconds.
    pub created_at: i64,
    pub deposit: DepositResource,
}

impl ResolutionResource {
    pub fn build(r: &Resolution, deposit: &Deposit) -> ResolutionResource {
        ResolutionResource {
            object: "deposit_resolution",
            id: r.id,
            action: r.action.as_str().to_owned(),
            state: r.state.as_str().to_owned(),
            reason: r.reason.clone(),
            actor: r.actor.clone(),
            invoice_id: r.invoice_id,
            merchant_id: r.merchant_id,
            destination: r.destination.clone(),
            transaction_id: r.transaction_id,
            failure_reason: r.failure_reason.clone(),
            created_at: r.created_at.div_euclid(1000),
            deposit: DepositResource::build(deposit),
        }
    }
}
