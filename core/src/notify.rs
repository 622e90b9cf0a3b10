//! E-mail receipts and notifications (issue 23): an outbox channel beside webhook deliveries.
//! The rules are written here once; `crate::outbox` calls them for every event it records, in
//! the event's transaction, so an e-mail exists exactly when its event does:
//!
//! - a **receipt** to the invoice's `customer_email` when the invoice is paid (`invoice.paid`, or
//!   `invoice.paid_late` that makes it paid), and the same news to the merchant's
//!   `notification_email`;
//! - to the merchant's `notification_email`: a payout or refund that failed (`payout.failed`), a
//!   webhook endpoint that was disabled (`webhook_endpoint.disabled`);
//! - to an invited dashboard member, the invite link ([`member_invite`], queued by whoever
//!   invites, in the transaction of the invite and of its `member.action` event).
//!
//! Only a process whose configuration has `[smtp]` queues e-mails
//! ([`crate::store::Store::set_mail_enabled`]): without it nothing is written and nothing can fail.
//! Each e-mail has a key naming its cause (`receipt:<invoice id>`, ...), unique in the table: an
//! invoice paid, un-paid by a reorg and paid again still gets one receipt. Subject and body are
//! rendered here, when the row is written, with amounts exact from the stored base units (never
//! a float); the mailer (`depositd-webhooks`' `mail.rs`) only sends them.

use serde::Serialize;
use uuid::Uuid;

use crate::event::EventType;
use crate::invoice::{Invoice, InvoiceStatus};
use crate::store::emails::{self, EmailKind, NewEmail};
use crate::store::{StoreError, Tx, merchants};
use crate::time::iso8601;

/// Queues the e-mails an event about `invoice` asks for (see the module doc).
pub(crate) async fn invoice_event(
    tx: &mut Tx,
    event_id: Uuid,
    event_type: EventType,
    invoice: &Invoice,
) -> Result<(), StoreError> {
    if !tx.mail_enabled() {
        return Ok(());
    }
    let paid = matches!(event_type, EventType::InvoicePaid | EventType::InvoicePaidLate)
        && invoice.status == InvoiceStatus::Paid;
    if !paid {
        return Ok(());
    }
    let merchant = merchants::get(tx, invoice.merchant_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("invoice {} has no merchant", invoice.id)))?;
    let shop = merchant.display_name().to_owned();
    let paid_amount = format!("{} {}", invoice.amount_paid_base_units.to_display(invoice.decimals), invoice.asset);
    let priced = format!("{} {}", invoice.amount, invoice.currency);
    let when = iso8601(invoice.finished_at.unwrap_or(invoice.updated_at));
    if let Some(customer) = invoice.details.customer_email.as_deref() {
        let mut body = format!("Thank you for your payment to {shop}.\n\n");
        if let Some(description) = invoice.details.description.as_deref() {
            body.push_str(&format!("For: {description}\n"));
        }
        body.push_str(&format!(
            "Invoice: {}\nAmount: {priced}\nPaid: {paid_amount} on {}\nPaid at: {when}\n",
            invoice.id, invoice.chain
        ));
        if let Some(external) = invoice.external_id.as_deref() {
            body.push_str(&format!("Order: {external}\n"));
        }
        body.push_str("\nThis receipt was sent by depositd on behalf of the merchant.\n");
        let email = NewEmail {
            event_id,
            merchant_id: invoice.merchant_id,
            kind: EmailKind::Receipt,
            dedupe_key: format!("receipt:{}", invoice.id),
            recipient: customer.to_owned(),
            subject: format!("Receipt from {shop}: {paid_amount} paid"),
            body,
        };
        queue(tx, &email).await?;
    }
    if let Some(address) = emails::notification_email(tx, invoice.merchant_id).await? {
        let body = format!(
            "Invoice {} was paid.\n\nAmount: {priced}\nPaid: {paid_amount} on {} (chain id {})\nFee: {} {}\n\
             Credited to you: {} {}\nPaid at: {when}\nOrder: {}\nCustomer: {}\n",
            invoice.id,
            invoice.chain,
            invoice.chain_id,
            invoice.fee_base_units.to_display(invoice.decimals),
            invoice.asset,
            invoice.merchant_amount_base_units.to_display(invoice.decimals),
            invoice.asset,
            invoice.external_id.as_deref().unwrap_or("-"),
            invoice.details.customer_email.as_deref().unwrap_or("-"),
        );
        let email = NewEmail {
            event_id,
            merchant_id: invoice.merchant_id,
            kind: EmailKind::InvoicePaid,
            dedupe_key: format!("invoice_paid:{}", invoice.id),
            recipient: address,
            subject: format!("Invoice {} paid: {paid_amount}", invoice.id),
            body,
        };
        queue(tx, &email).await?;
    }
    Ok(())
}

/// Queues the e-mails any other event asks for (see the module doc); `data` is the event's
/// `data` (the resource as the API shows it).
pub(crate) async fn event<T: Serialize>(
    tx: &mut Tx,
    merchant_id: Uuid,
    event_id: Uuid,
    event_type: EventType,
    resource_id: Uuid,
    data: &T,
) -> Result<(), StoreError> {
    if !tx.mail_enabled() || !matches!(event_type, EventType::PayoutFailed | EventType::WebhookEndpointDisabled) {
        return Ok(());
    }
    let Some(address) = emails::notification_email(tx, merchant_id).await? else { return Ok(()) };
    let data = serde_json::to_value(data).unwrap_or_default();
    let field = |name: &str| match &data[name] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let email = match event_type {
        EventType::PayoutFailed => {
            let what = if field("object") == "refund" { "refund" } else { "payout" };
            NewEmail {
                event_id,
                merchant_id,
                kind: EmailKind::PayoutFailed,
                dedupe_key: format!("payout_failed:{resource_id}"),
                recipient: address,
                subject: format!("A {what} of {} {} failed", field("amount"), field("asset")),
                body: format!(
                    "Your {what} {resource_id} failed and its amount was returned to your available balance.\n\n\
                     Amount: {} {} on {}\nTo: {}\nReason: {}\nTransaction: {}\n",
                    field("amount"),
                    field("asset"),
                    field("chain"),
                    field("destination"),
                    field("failure_reason"),
                    field("tx_hash"),
                ),
            }
        }
        _ => NewEmail {
            event_id,
            merchant_id,
            kind: EmailKind::WebhookEndpointDisabled,
            dedupe_key: format!("webhook_endpoint_disabled:{event_id}"),
            recipient: address,
            subject: format!("Webhook endpoint disabled: {}", field("url")),
            body: format!(
                "Your webhook endpoint {resource_id} ({}) was disabled: {}.\n\n\
                 Events are no longer sent to it. Enable it again with PATCH /api/v1/webhook-endpoints/{resource_id} \
                 {{\"enabled\": true}}, and redeliver what it missed with POST /api/v1/events/{{id}}/redeliver.\n",
                field("url"),
                field("disabled_reason"),
            ),
        },
    };
    queue(tx, &email).await
}

/// An invite's e-mail: to whom, for which invite and merchant, and the one-time link.
pub struct InviteEmail<'a> {
    pub merchant_id: Uuid,
    /// Names the e-mail: one per invite.
    pub invite_id: Uuid,
    pub recipient: &'a str,
    /// The role the member is invited with.
    pub role: &'a str,
    /// The merchant's display name.
    pub shop: &'a str,
    pub link: &'a str,
    pub expires_at: i64,
}

/// Queues the e-mail of an invite (see the module doc); `event_id` is the invite's
/// `member.action` event. One e-mail per invite. The link is in the e-mail row until it is sent,
/// as it must be to be sent at all; it is in no event.
pub async fn member_invite(tx: &mut Tx, event_id: Uuid, invite: &InviteEmail<'_>) -> Result<(), StoreError> {
    if !tx.mail_enabled() {
        return Ok(());
    }
    let shop = invite.shop;
    let email = NewEmail {
        event_id,
        merchant_id: invite.merchant_id,
        kind: EmailKind::MemberInvite,
        dedupe_key: format!("member_invite:{}", invite.invite_id),
        recipient: invite.recipient.to_owned(),
        subject: format!("You are invited to the {shop} dashboard"),
        body: format!(
            "You are invited to {shop}'s depositd dashboard as {}.\n\n\
             Set your password here (the link can be used once, until {}):\n{}\n\n\
             If you did not expect this invitation, ignore this e-mail.\n",
            invite.role,
            iso8601(invite.expires_at),
            invite.link,
        ),
    };
    queue(tx, &email).await
}

async fn queue(tx: &mut Tx, email: &NewEmail) -> Result<(), StoreError> {
    if emails::insert(tx, email).await? {
        tx.emails_were_queued();
    }
    Ok(())
}

/// Whether `address` looks like an e-mail address (`name@example.com`): one `@`, something
/// before it, a dotted domain after it, no spaces or control characters. The SMTP server has
/// the last word; this only refuses what is certainly not one.
pub fn is_email_address(address: &str) -> bool {
    address.len() <= 254
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.contains('@') && domain.contains('.') && !domain.starts_with('.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_told_from_what_is_not_one() {
        for good in ["shop@example.com", "a.b+c@mail.example.co.uk"] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "",
            "shop",
            "@example.com",
            "shop@",
            "shop@localhost",
            "a b@example.com",
            "a@b@example.com",
            "x@example.com\r\nBcc: y@z.com",
        ] {
            assert!(!is_email_address(bad), "{bad:?}");
        }
    }
}
