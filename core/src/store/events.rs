//! The outbox: an event row is written in the same transaction as the change it reports, so a
//! crash can neither lose an event nor announce a change that did not commit. Recording an event
//! also queues its webhook deliveries (`store::webhooks::enqueue`), in the same transaction: to
//! the merchant's endpoints that want the type, and to the resource's own `callback_url` (the
//! invoice and static address resources carry one).

use serde::Serialize;
use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError};
use crate::time::now_ms;

/// Records an event `{"id","type","created_at","data"}`; returns its id (stable across redeliveries).
#[tracing::instrument(skip(conn, data))]
pub async fn record<T: Serialize>(
    conn: &mut Conn,
    merchant_id: Uuid,
    event_type: &str,
    resource_type: &str,
    resource_id: Uuid,
    data: &T,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    let created_at = now_ms();
    let payload = serde_json::json!({
        "id": id,
        "type": event_type,
        "created_at": created_at.div_euclid(1000),
        "data": data,
    });
    sqlx::query(
        "INSERT INTO events (id, merchant_id, event_type, resource_type, resource_id, payload, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(Text(id))
    .bind(Text(merchant_id))
    .bind(event_type)
    .bind(resource_type)
    .bind(Text(resource_id))
    .bind(payload.to_string())
    .bind(created_at)
    .execute(&mut *conn)
    .await?;
    let callback_url = payload["data"]["callback_url"].as_str();
    super::webhooks::enqueue(conn, merchant_id, id, event_type, callback_url).await?;
    Ok(id)
}

/// Event types recorded for a resource, oldest first (for tests and the events API).
#[tracing::instrument(skip(conn))]
pub async fn types_for(conn: &mut Conn, resource_id: Uuid) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT event_type FROM events WHERE resource_id = $1 ORDER BY id")
        .bind(Text(resource_id))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}
