//! Events as the domain names them: what happened ([`EventType`], the word merchants subscribe
//! to) and what it happened to ([`Subject`]). Recording one, and queueing its deliveries, is
//! `crate::outbox`'s job; the rows are `store::events`'.

use uuid::Uuid;

use crate::invoice::Invoice;
use crate::static_address::StaticAddress;
use crate::text_enum::text_enum;

/// What happened. Merchants subscribe to types by their stored word (`invoice.paid`), which is
/// also the payload's `type`: a word never changes once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    InvoiceCreated,
    InvoiceProcessing,
    InvoicePaid,
    InvoiceUnderpaid,
    InvoiceOverpaid,
    InvoicePaidLate,
    InvoiceExpired,
    InvoiceCancelled,
    InvoiceRefunded,
    /// A merchant marked the invoice paid (no money moved).
    InvoiceMarkedPaid,
    /// A merchant marked the invoice invalid (no money moved).
    InvoiceMarkedInvalid,
    DepositDetected,
    DepositConfirmed,
    DepositReversed,
    /// An operator resolved a transfer in suspense (credited, refunded or taken as revenue).
    DepositResolved,
    StaticAddressCreated,
    StaticAddressDeposit,
    StaticAddressDisabled,
    PayoutCreated,
    PayoutSent,
    PayoutConfirmed,
    PayoutFailed,
    PayoutCancelled,
    SettlementForwarded,
    WebhookEndpointDisabled,
    /// A test event a merchant sent one endpoint (`crate::webhook_endpoints::send_test`): delivered
    /// to that endpoint alone, never to others (whatever they list).
    WebhookEndpointTest,
    /// An API key was created (by the operator, another key or a dashboard member: `created_by`).
    ApiKeyCreated,
    /// An API key was revoked (`revoked_by` says by whom).
    ApiKeyRevoked,
    /// A merchant's balance changed: one per ledger entry that posts to the merchant's accounts
    /// (`crate::ledger::post` records it), with the entry and the balances after it.
    BalanceUpdated,
    /// A dashboard member changed something (`crate::audit`: who, what, about which resource).
    MemberAction,
}

text_enum! {
    EventType as "event type" {
        InvoiceCreated = "invoice.created",
        InvoiceProcessing = "invoice.processing",
        InvoicePaid = "invoice.paid",
        InvoiceUnderpaid = "invoice.underpaid",
        InvoiceOverpaid = "invoice.overpaid",
        InvoicePaidLate = "invoice.paid_late",
        InvoiceExpired = "invoice.expired",
        InvoiceCancelled = "invoice.cancelled",
        InvoiceRefunded = "invoice.refunded",
        InvoiceMarkedPaid = "invoice.marked_paid",
        InvoiceMarkedInvalid = "invoice.marked_invalid",
        DepositDetected = "deposit.detected",
        DepositConfirmed = "deposit.confirmed",
        DepositReversed = "deposit.reversed",
        DepositResolved = "deposit.resolved",
        StaticAddressCreated = "static_address.created",
        StaticAddressDeposit = "static_address.deposit",
        StaticAddressDisabled = "static_address.disabled",
        PayoutCreated = "payout.created",
        PayoutSent = "payout.sent",
        PayoutConfirmed = "payout.confirmed",
        PayoutFailed = "payout.failed",
        PayoutCancelled = "payout.cancelled",
        SettlementForwarded = "settlement.forwarded",
        WebhookEndpointDisabled = "webhook_endpoint.disabled",
        WebhookEndpointTest = "webhook_endpoint.test",
        ApiKeyCreated = "api_key.created",
        ApiKeyRevoked = "api_key.revoked",
        BalanceUpdated = "balance.updated",
        MemberAction = "member.action",
    }
}

/// What an event is about: the resource it reports (the events API filters by it), and where
/// that resource wants its own callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// `invoice`, `deposit`, `static_address`, `payout`, `refund`, `settlement`,
    /// `webhook_endpoint`, `api_key`, `ledger_entry`.
    pub resource_type: &'static str,
    pub resource_id: Uuid,
    /// The resource's `callback_url`: it receives every event about the resource, whatever the
    /// merchant's endpoints want.
    pub callback_url: Option<&'a str>,
}

impl Subject<'static> {
    /// A resource without a callback URL of its own.
    pub fn new(resource_type: &'static str, resource_id: Uuid) -> Subject<'static> {
        Subject { resource_type, resource_id, callback_url: None }
    }
}

impl<'a> Subject<'a> {
    /// An invoice, with its callback URL.
    pub fn invoice(invoice: &'a Invoice) -> Subject<'a> {
        Subject {
            resource_type: "invoice",
            resource_id: invoice.id,
            callback_url: invoice.details.callback_url.as_deref(),
        }
    }

    /// A static address, with its callback URL (which the invoices its deposits create copy).
    pub fn static_address(address: &'a StaticAddress) -> Subject<'a> {
        Subject {
            resource_type: "static_address",
            resource_id: address.id,
            callback_url: address.callback_url.as_deref(),
        }
    }
}
