//! The dashboard overview's queries (issue 20): one merchant's paid volume per asset and day,
//! its invoices by status, its latest payments and the health of its webhook endpoints. Rows and
//! SQL only, each scoped to the merchant; amounts exact (base units, summed as integers).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::codec::Text;
use super::{Conn, StoreError};
use crate::deposit::DepositState;
use crate::invoice::InvoiceStatus;
use crate::money::BaseUnits;

/// A milliseconds day, UTC.
const DAY_MS: i64 = 86_400_000;

/// One asset's paid volume on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyVolume {
    pub chain_id: u64,
    pub asset: String,
    pub decimals: u8,
    /// The day's first millisecond (UTC midnight).
    pub day_start: i64,
    pub amount: BaseUnits,
}

/// What invoices finished since `since` were paid, per chain, asset and UTC day (days without any
/// are absent), ordered by chain, asset, day. Counted: invoices paid (refunded ones too: they
/// were paid), by their `amount_paid_base_units` on the day they finished.
#[tracing::instrument(skip(conn))]
pub async fn paid_volume_by_day(
    conn: &mut Conn,
    merchant_id: Uuid,
    since: i64,
) -> Result<Vec<DailyVolume>, StoreError> {
    let rows: Vec<(i64, String, i64, BaseUnits, i64)> = sqlx::query_as(
        "SELECT chain_id, asset, decimals, amount_paid_base_units, finished_at FROM invoices \
         WHERE merchant_id = $1 AND finished_at >= $2 AND status IN ('paid', 'refunded', 'partially_refunded')",
    )
    .bind(Text(merchant_id))
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    let mut days: BTreeMap<(u64, String, i64), (u8, BaseUnits)> = BTreeMap::new();
    for (chain_id, asset, decimals, amount, finished_at) in rows {
        let day_start = finished_at.div_euclid(DAY_MS) * DAY_MS;
        let decimals =
            u8::try_from(decimals).map_err(|_| StoreError::Corrupt(format!("invoice decimals {decimals}")))?;
        let entry = days.entry((chain_id as u64, asset, day_start)).or_insert((decimals, BaseUnits::ZERO));
        entry.1 = entry
            .1
            .checked_add(amount)
            .ok_or_else(|| StoreError::Corrupt("a day's paid volume overflows 256 bits".into()))?;
    }
    Ok(days
        .into_iter()
        .map(|((chain_id, asset, day_start), (decimals, amount))| DailyVolume {
            chain_id,
            asset,
            decimals,
            day_start,
            amount,
        })
        .collect())
}

/// How many of the merchant's invoices created since `since` are in each status (statuses
/// without any are absent).
#[tracing::instrument(skip(conn))]
pub async fn invoices_by_status(
    conn: &mut Conn,
    merchant_id: Uuid,
    since: i64,
) -> Result<Vec<(InvoiceStatus, i64)>, StoreError> {
    let rows: Vec<(InvoiceStatus, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*) FROM invoices WHERE merchant_id = $1 AND created_at >= $2 GROUP BY status",
    )
    .bind(Text(merchant_id))
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// A payment (deposit) to one of the merchant's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentPayment {
    pub id: Uuid,
    pub invoice_id: Option<Uuid>,
    pub chain_id: u64,
    pub tx_hash: String,
    pub asset: String,
    /// The invoice's asset decimals (`None` without an invoice).
    pub decimals: Option<u8>,
    pub amount: BaseUnits,
    pub state: DepositState,
    pub detected_at: i64,
}

#[derive(sqlx::FromRow)]
struct RecentPaymentRow {
    id: Text<Uuid>,
    invoice_id: Option<Text<Uuid>>,
    chain_id: i64,
    tx_hash: String,
    asset: String,
    decimals: Option<i64>,
    amount_base_units: BaseUnits,
    state: DepositState,
    detected_at: i64,
}

/// The merchant's `limit` latest payments, newest first.
#[tracing::instrument(skip(conn))]
pub async fn latest_payments(conn: &mut Conn, merchant_id: Uuid, limit: u32) -> Result<Vec<RecentPayment>, StoreError> {
    let rows: Vec<RecentPaymentRow> = sqlx::query_as(
        "SELECT d.id, d.invoice_id, d.chain_id, d.tx_hash, d.asset, i.decimals, d.amount_base_units, d.state, \
         d.detected_at FROM deposits d LEFT JOIN invoices i ON i.id = d.invoice_id \
         WHERE d.merchant_id = $1 ORDER BY d.detected_at DESC, d.id DESC LIMIT $2",
    )
    .bind(Text(merchant_id))
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| RecentPayment {
            id: r.id.0,
            invoice_id: r.invoice_id.map(|i| i.0),
            chain_id: r.chain_id as u64,
            tx_hash: r.tx_hash,
            asset: r.asset,
            decimals: r.decimals.and_then(|d| u8::try_from(d).ok()),
            amount: r.amount_base_units,
            state: r.state,
            detected_at: r.detected_at,
        })
        .collect())
}

/// A webhook endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub id: Uuid,
    pub url: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub last_success_at: Option<i64>,
    /// Deliveries being retried after a failed attempt.
    pub retrying: i64,
    /// Deliveries given up since the `since` asked for.
    pub failed: i64,
}

impl EndpointHealth {
    /// Disabled, or with deliveries failing: to be highlighted.
    pub fn unhealthy(&self) -> bool {
        !self.enabled || self.retrying > 0 || self.failed > 0
    }
}

#[derive(sqlx::FromRow)]
struct EndpointHealthRow {
    id: Text<Uuid>,
    url: String,
    status: String,
    disabled_reason: Option<String>,
    last_success_at: Option<i64>,
    retrying: i64,
    failed: i64,
}

/// The merchant's webhook endpoints (not deleted) with their deliveries being retried and those
/// given up since `since`, oldest endpoint first.
#[tracing::instrument(skip(conn))]
pub async fn webhook_health(conn: &mut Conn, merchant_id: Uuid, since: i64) -> Result<Vec<EndpointHealth>, StoreError> {
    let rows: Vec<EndpointHealthRow> = sqlx::query_as(
        "SELECT e.id, e.url, e.status, e.disabled_reason, e.last_success_at, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.state = 'pending' \
          AND d.attempt_count > 0) AS retrying, \
         (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.endpoint_id = e.id AND d.state = 'failed' \
          AND d.updated_at >= $2) AS failed \
         FROM webhook_endpoints e WHERE e.merchant_id = $1 AND e.deleted_at IS NULL ORDER BY e.id",
    )
    .bind(Text(merchant_id))
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let enabled = match r.status.as_str() {
                "enabled" => true,
                "disabled" => false,
                other => return Err(StoreError::Corrupt(format!("webhook_endpoints.status = {other:?}"))),
            };
            Ok(EndpointHealth {
                id: r.id.0,
                url: r.url,
                enabled,
                disabled_reason: r.disabled_reason,
                last_success_at: r.last_success_at,
                retrying: r.retrying,
                failed: r.failed,
            })
        })
        .collect()
}
