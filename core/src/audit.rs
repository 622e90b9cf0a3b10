//! What dashboard members did: every change a member makes in the dashboard is recorded as a
//! `member.action` event (who, what, about which resource, when) in the transaction that makes
//! the change, so it is in the merchant's event log exactly when the change is, and never when
//! the change rolled back. It is an ordinary outbox event ([`outbox::record`]): the events API and
//! the dashboard's event log list it, and endpoints that want every type (or list
//! `member.action`) receive it.
//!
//! A lifecycle function that a member calls through the dashboard (cancel an invoice, create a
//! payout, add a webhook endpoint, ...) is not changed for it: the dashboard handler calls
//! [`record`] in the same transaction as the lifecycle call. API key changes already carry who
//! acted in their own events (`api_key.created`, `api_key.revoked`) and are not recorded twice.

use serde::Serialize;
use uuid::Uuid;

use crate::member::Member;
use crate::outbox::{self, EventType, Subject};
use crate::store::{StoreError, Tx};

/// Who acted, as the event shows them.
#[derive(Debug, Serialize)]
struct Actor<'a> {
    id: Uuid,
    email: &'a str,
    role: &'static str,
}

/// The event's `data`.
#[derive(Debug, Serialize)]
struct MemberAction<'a, D: Serialize> {
    /// What was done, `<resource>.<verb>`: `invoice.cancel`, `payout.create`, ...
    action: &'a str,
    member: Actor<'a>,
    resource_type: &'static str,
    resource_id: Uuid,
    /// What the action changed (never a secret).
    details: &'a D,
}

/// Records that `member` did `action` to `subject` with `details` (see the module doc), in `tx`.
/// `action` is `<resource>.<verb>` in lower case (`invoice.cancel`); `details` must hold no
/// secret (webhook secrets, passwords and API keys never go in).
pub async fn record<D: Serialize>(
    tx: &mut Tx,
    member: &Member,
    action: &str,
    subject: Subject<'_>,
    details: &D,
) -> Result<Uuid, StoreError> {
    let data = MemberAction {
        action,
        member: Actor { id: member.id, email: &member.email, role: member.role.as_str() },
        resource_type: subject.resource_type,
        resource_id: subject.resource_id,
        details,
    };
    // The resource's own callback URL hears about the resource, not about who clicked what.
    let subject = Subject { callback_url: None, ..subject };
    outbox::record(tx, member.merchant_id, EventType::MemberAction, subject, &data).await
}
