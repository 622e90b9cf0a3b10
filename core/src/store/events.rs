//! The `events` table: the outbox's event rows. What an event says and which deliveries it gets
//! is `crate::outbox`'s to decide; this module only writes and reads the rows.

use uuid::Uuid;

use super::codec::Text;
use super::webhooks::EventRecord;
use super::{Conn, StoreError};

/// Inserts events (each with its merchant's id). Call in the transaction of the change they
/// report. A statement per [`super::statement_chunks`] of events.
#[tracing::instrument(skip_all, fields(count = events.len()))]
pub(crate) async fn insert(conn: &mut Conn, events: &[(Uuid, &EventRecord)]) -> Result<(), StoreError> {
    for chunk in super::statement_chunks(events) {
        let sql = format!(
            "INSERT INTO events (id, merchant_id, event_type, resource_type, resource_id, payload, created_at) VALUES {}",
            super::value_rows(chunk.len(), 7, 1)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (merchant_id, event) in chunk {
            query = query
                .bind(Text(event.id))
                .bind(Text(*merchant_id))
                .bind(event.event_type)
                .bind(&event.resource_type)
                .bind(Text(event.resource_id))
                .bind(&event.payload)
                .bind(event.created_at);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
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
