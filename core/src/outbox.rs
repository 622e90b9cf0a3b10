//! The outbox: the one place its rules are written. Every state change a merchant hears about is
//! announced by [`record`], in the caller's transaction, which writes the event row and queues
//! its webhook deliveries there too:
//!
//! - the event is `{"id","type","created_at","data"}` (`created_at` in epoch seconds, `data` the
//!   resource as it is now), stored as the exact bytes every delivery sends and signs, and its id
//!   is the `webhook-id` of every delivery and redelivery;
//! - a delivery is queued to each enabled endpoint of the merchant that wants the type (one that
//!   lists no types wants every type), then to the resource's own `callback_url` (invoices and
//!   static addresses can have one), which the caller names in the event's [`Subject`];
//! - queueing is idempotent per event and endpoint, per event and callback URL, and per event and
//!   URL (the store's `insert_delivery`), so [`redeliver`] can queue again safely;
//! - the transaction notes that it queued deliveries, and its commit (not before) wakes this
//!   process's delivery worker; a rolled-back transaction leaves neither event nor delivery nor
//!   wake behind. Other daemons' workers find the deliveries by polling.
//!
//! - the event's e-mails (receipts and merchant notifications, `crate::notify`'s rules) are
//!   queued in the same transaction, when this process sends e-mail; their commit wakes the
//!   mailer.
//!
//! Nothing is ever delivered that is not committed: the worker claims only committed rows, and
//! the event, its deliveries and the change they report commit or roll back together.
//!
//! The store modules (`store::events`, `store::webhooks`) only hold the rows and the SQL.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

pub use crate::event::{EventType, Subject};
use crate::invoice::{Invoice, InvoiceResource};
use crate::invoice_views;
use crate::notify;
use crate::store::webhooks::{self, EventRecord};
use crate::store::{StoreError, Tx, events};
use crate::time::now_ms;
use crate::webhooks::Endpoint;

/// Records merchant `merchant_id`'s event `event_type` about `subject`, with `data` (the
/// resource as the API shows it now), and queues its deliveries (see the module doc), all in
/// `tx`. Returns the event id, stable across redeliveries.
pub async fn record<T: Serialize>(
    tx: &mut Tx,
    merchant_id: Uuid,
    event_type: EventType,
    subject: Subject<'_>,
    data: &T,
) -> Result<Uuid, StoreError> {
    let ids = record_many(tx, &[NewEvent { merchant_id, event_type, subject, data }]).await?;
    ids.first().copied().ok_or_else(|| StoreError::Corrupt("an event was recorded without its id".into()))
}

/// One event for [`record_many`].
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a, T> {
    pub merchant_id: Uuid,
    pub event_type: EventType,
    pub subject: Subject<'a>,
    pub data: &'a T,
}

/// [`record`] for several events of one change (a batch of invoices made together): the rows
/// and their deliveries are written a statement per many rows, and each merchant's endpoints
/// are read once. Returns the events' ids, in order.
#[tracing::instrument(skip_all, fields(count = new.len()))]
pub async fn record_many<T: Serialize>(tx: &mut Tx, new: &[NewEvent<'_, T>]) -> Result<Vec<Uuid>, StoreError> {
    let created_at = now_ms();
    let records: Vec<(Uuid, EventRecord)> = new
        .iter()
        .map(|event| {
            let id = Uuid::now_v7();
            let record = EventRecord {
                id,
                event_type: event.event_type,
                resource_type: event.subject.resource_type.to_owned(),
                resource_id: event.subject.resource_id,
                payload: payload(id, event.event_type, created_at, event.data),
                created_at,
            };
            (event.merchant_id, record)
        })
        .collect();
    let rows: Vec<(Uuid, &EventRecord)> = records.iter().map(|(merchant_id, record)| (*merchant_id, record)).collect();
    events::insert(tx, &rows).await?;
    let mut endpoints: HashMap<Uuid, Vec<Endpoint>> = HashMap::new();
    let mut deliveries: Vec<(Uuid, Option<Uuid>, String)> = Vec::new();
    for (event, (merchant_id, record)) in new.iter().zip(&records) {
        if !endpoints.contains_key(merchant_id) {
            endpoints.insert(*merchant_id, webhooks::enabled_endpoints(tx, *merchant_id).await?);
        }
        for (endpoint_id, url) in targets(&endpoints[merchant_id], record.event_type, event.subject.callback_url) {
            // One delivery per event and URL (an endpoint whose URL is the callback URL gets one).
            if !deliveries.iter().any(|(id, _, queued)| *id == record.id && *queued == url) {
                deliveries.push((record.id, endpoint_id, url));
            }
        }
    }
    let deliveries: Vec<(Uuid, Option<Uuid>, &str)> =
        deliveries.iter().map(|(event_id, endpoint_id, url)| (*event_id, *endpoint_id, url.as_str())).collect();
    if webhooks::insert_new_deliveries(tx, &deliveries, created_at).await? {
        tx.deliveries_were_queued();
    }
    for (event, (merchant_id, record)) in new.iter().zip(&records) {
        notify::event(tx, *merchant_id, record.id, record.event_type, event.subject.resource_id, event.data).await?;
    }
    Ok(records.into_iter().map(|(_, record)| record.id).collect())
}

/// Records an event about `invoice` (see [`record`]), its `data` the view of the API shape that
/// made the invoice (`resource` is seed 001's; see [`crate::invoice_views`]), so a merchant's
/// callback handler reads the field names of the API it integrated.
pub async fn record_invoice(
    tx: &mut Tx,
    event_type: EventType,
    invoice: &Invoice,
    resource: &InvoiceResource,
) -> Result<Uuid, StoreError> {
    let ids = record_invoices(tx, event_type, &[(invoice, resource)]).await?;
    ids.first().copied().ok_or_else(|| StoreError::Corrupt("an event was recorded without its id".into()))
}

/// [`record_invoice`] for several invoices (see [`record_many`]).
pub async fn record_invoices(
    tx: &mut Tx,
    event_type: EventType,
    invoices: &[(&Invoice, &InvoiceResource)],
) -> Result<Vec<Uuid>, StoreError> {
    let data: Vec<serde_json::Value> =
        invoices.iter().map(|(invoice, resource)| invoice_views::webhook_data(invoice, resource)).collect();
    let new: Vec<NewEvent<'_, serde_json::Value>> = invoices
        .iter()
        .zip(&data)
        .map(|((invoice, _), data)| NewEvent {
            merchant_id: invoice.merchant_id,
            event_type,
            subject: Subject::invoice(invoice),
            data,
        })
        .collect();
    let ids = record_many(tx, &new).await?;
    for (id, (invoice, _)) in ids.iter().zip(invoices) {
        notify::invoice_event(tx, *id, event_type, invoice).await?;
    }
    Ok(ids)
}

/// Records `endpoint`'s test event (`event_type`, about the endpoint, with `data`) and queues
/// its one delivery, to that endpoint alone, in `tx`: the worker signs and sends it like any
/// other. No other endpoint wants a test event ([`wants`]), so a redelivery goes to this one
/// only too. Returns the event id.
pub async fn record_test<T: Serialize>(
    tx: &mut Tx,
    endpoint: &Endpoint,
    event_type: EventType,
    data: &T,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    let created_at = now_ms();
    let event = EventRecord {
        id,
        event_type,
        resource_type: "webhook_endpoint".to_owned(),
        resource_id: endpoint.id,
        payload: payload(id, event_type, created_at, data),
        created_at,
    };
    events::insert(tx, &[(endpoint.merchant_id, &event)]).await?;
    if webhooks::insert_delivery(tx, id, Some(endpoint.id), &endpoint.url, created_at).await? {
        tx.deliveries_were_queued();
    }
    Ok(id)
}

/// Redelivers merchant `merchant_id`'s `event` (in `tx`): its deliveries start over (due now, a
/// fresh retry schedule; earlier attempts stay recorded; not to endpoints since disabled or
/// deleted), and endpoints that want it but never had it get one. The event keeps its id and
/// its payload, byte for byte.
#[tracing::instrument(skip(tx, event), fields(event_id = %event.id))]
pub async fn redeliver(tx: &mut Tx, event: &EventRecord, merchant_id: Uuid) -> Result<(), StoreError> {
    if webhooks::restart_deliveries(tx, event.id, now_ms()).await? > 0 {
        tx.deliveries_were_queued();
    }
    // The callback URL already has its delivery (queued with the event, restarted above).
    queue(tx, merchant_id, event, None).await
}

/// The event's payload: the bytes stored, delivered and signed. Merchants verify signatures over
/// them, so this is written once and never changes shape (the unit test below holds it to the
/// bytes). The resources it carries always serialize, as they do in the API's answers.
fn payload<T: Serialize>(id: Uuid, event_type: EventType, created_at: i64, data: &T) -> String {
    serde_json::json!({
        "id": id,
        "type": event_type.as_str(),
        "created_at": created_at.div_euclid(1000),
        "data": data,
    })
    .to_string()
}

/// Queues `event` again (a redelivery) for every enabled endpoint of the merchant that wants its
/// type, then for `callback_url`, and notes on `tx` when that queued anything.
async fn queue(
    tx: &mut Tx,
    merchant_id: Uuid,
    event: &EventRecord,
    callback_url: Option<&str>,
) -> Result<(), StoreError> {
    let now = now_ms();
    let endpoints = webhooks::enabled_endpoints(tx, merchant_id).await?;
    let mut queued = false;
    for (endpoint_id, url) in targets(&endpoints, event.event_type, callback_url) {
        // The delivery records the URL it was queued for; the worker sends to the endpoint's
        // URL as it is when it sends.
        queued |= webhooks::insert_delivery(tx, event.id, endpoint_id, &url, now).await?;
    }
    if queued {
        tx.deliveries_were_queued();
    }
    Ok(())
}

/// Where an event of `event_type` goes: each of `endpoints` that wants it, then `callback_url`.
fn targets(endpoints: &[Endpoint], event_type: EventType, callback_url: Option<&str>) -> Vec<(Option<Uuid>, String)> {
    let mut targets: Vec<(Option<Uuid>, String)> = endpoints
        .iter()
        .filter(|endpoint| wants(endpoint, event_type))
        .map(|endpoint| (Some(endpoint.id), endpoint.url.clone()))
        .collect();
    if let Some(url) = callback_url {
        targets.push((None, url.to_owned()));
    }
    targets
}

/// Whether `endpoint` receives events of `event_type`: it is enabled and lists the type, or
/// lists none (every type). A test event is queued by [`record_test`] alone, for its endpoint.
fn wants(endpoint: &Endpoint, event_type: EventType) -> bool {
    event_type != EventType::WebhookEndpointTest
        && endpoint.enabled
        && (endpoint.enabled_events.is_empty() || endpoint.enabled_events.iter().any(|e| e == event_type.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_keeps_its_shape_byte_for_byte() {
        let id: Uuid = "01890a5d-ac96-774b-bcce-b302099a8057".parse().unwrap();
        let data = serde_json::json!({"object": "invoice", "id": "x", "amount": "1.50"});
        assert_eq!(
            payload(id, EventType::InvoicePaid, 1_700_000_000_999, &data),
            r#"{"created_at":1700000000,"data":{"amount":"1.50","id":"x","object":"invoice"},"id":"01890a5d-ac96-774b-bcce-b302099a8057","type":"invoice.paid"}"#
        );
    }

    #[test]
    fn event_words_are_unique_and_read_back() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(EventType::ALL.iter().filter(|u| u.as_str() == t.as_str()).count(), 1);
        }
        assert!("invoice.shipped".parse::<EventType>().is_err());
    }

    #[test]
    fn endpoints_want_what_they_list_or_everything() {
        let mut endpoint = Endpoint {
            id: Uuid::now_v7(),
            merchant_id: Uuid::now_v7(),
            url: "https://example.com/hooks".into(),
            description: None,
            enabled_events: vec![],
            enabled: true,
            disabled_reason: None,
            secret_sealed: String::new(),
            previous_secret_sealed: None,
            previous_secret_expires_at: None,
            last_success_at: None,
            created_at: 0,
            updated_at: 0,
        };
        assert!(
            EventType::ALL.iter().filter(|t| **t != EventType::WebhookEndpointTest).all(|t| wants(&endpoint, *t)),
            "no list: every type"
        );
        assert!(!wants(&endpoint, EventType::WebhookEndpointTest), "a test event goes to its endpoint alone");
        endpoint.enabled_events = vec!["invoice.paid".into()];
        assert!(wants(&endpoint, EventType::InvoicePaid));
        assert!(!wants(&endpoint, EventType::InvoiceCreated));
        endpoint.enabled = false;
        assert!(!wants(&endpoint, EventType::InvoicePaid), "a disabled endpoint wants nothing");
    }
}
