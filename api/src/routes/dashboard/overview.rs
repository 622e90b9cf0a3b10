//! `GET /dashboard`: the overview. Balances per chain and asset (the API's balances,
//! `routes::ledger::merchant_balances`, rendered), the last 30 days' paid volume per asset and
//! the invoices by status as charts drawn here as inline SVG (no script, each bar with a
//! `<title>` and the numbers as text too), the latest payments, and the webhook endpoints'
//! health (disabled or failing ones highlighted). The queries are `depositd_core::store::overview`'s.

use std::collections::BTreeMap;

use alloy::primitives::U256;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use depositd_core::member::Action;
use depositd_core::money::BaseUnits;
use depositd_core::store::overview::{self, DailyVolume};
use depositd_core::time::now_ms;

use super::{Chrome, SignedIn, internal, render, when};
use crate::routes::ledger::describe;
use crate::state::AppState;

/// Days the charts cover.
const DAYS: i64 = 30;
const DAY_MS: i64 = 86_400_000;
/// Payments listed.
const LATEST: u32 = 10;
/// Chart geometry (SVG user units).
const CHART_WIDTH: u64 = 420;
const CHART_HEIGHT: u64 = 160;
const AXIS: u64 = 20;

/// One balance row as shown.
struct BalanceRow {
    chain: String,
    asset: String,
    available: String,
    pending: String,
    reserved: String,
    in_transit: String,
    receivable: String,
}

/// A bar of a chart.
struct Bar {
    x: u64,
    y: u64,
    width: u64,
    height: u64,
    /// What hovering (and a screen reader) tells.
    title: String,
}

/// A text label of a chart.
struct Label {
    x: u64,
    y: u64,
    anchor: &'static str,
    text: String,
}

/// A bar chart drawn as SVG.
struct Chart {
    id: String,
    title: String,
    width: u64,
    height: u64,
    bars: Vec<Bar>,
    labels: Vec<Label>,
    /// The same numbers as text, for a table beside the chart.
    total: String,
}

struct PaymentRow {
    invoice_id: Option<String>,
    chain: String,
    tx_hash: String,
    amount: String,
    state: &'static str,
    detected: String,
}

struct EndpointRow {
    url: String,
    status: &'static str,
    unhealthy: bool,
    detail: String,
    last_success: String,
}

#[derive(Template)]
#[template(path = "dashboard/overview.html")]
struct OverviewPage {
    chrome: Option<Chrome>,
    balances: Vec<BalanceRow>,
    volume_charts: Vec<Chart>,
    status_chart: Option<Chart>,
    payments: Vec<PaymentRow>,
    endpoints: Vec<EndpointRow>,
}

/// `amount` of `max` as a share of `full`, exactly (integers; no float near money).
fn scaled(amount: BaseUnits, max: BaseUnits, full: u64) -> u64 {
    if max.is_zero() {
        return 0;
    }
    let share = amount.0.saturating_mul(U256::from(full)) / max.0;
    u64::try_from(share).unwrap_or(full).min(full)
}

/// The day label `2026-12-07` of a day's first millisecond.
fn day_of(ms: i64) -> String {
    when(ms).get(..10).unwrap_or_default().to_owned()
}

/// One chart per chain and asset: a bar per day of the last [`DAYS`].
fn volume_charts(state: &AppState, volumes: &[DailyVolume], first_day: i64) -> Vec<Chart> {
    let mut per_asset: BTreeMap<(u64, &str), (u8, Vec<&DailyVolume>)> = BTreeMap::new();
    for v in volumes {
        per_asset.entry((v.chain_id, v.asset.as_str())).or_insert((v.decimals, Vec::new())).1.push(v);
    }
    let slot = CHART_WIDTH / DAYS as u64;
    per_asset
        .into_iter()
        .enumerate()
        .map(|(i, ((chain_id, asset), (decimals, days)))| {
            let chain = describe(&state.config, chain_id, asset).0.unwrap_or_else(|| format!("chain {chain_id}"));
            let max = days.iter().map(|d| d.amount).max().unwrap_or(BaseUnits::ZERO);
            let total = days.iter().fold(BaseUnits::ZERO, |sum, d| sum.checked_add(d.amount).unwrap_or(sum));
            let plot = CHART_HEIGHT - AXIS;
            let bars = days
                .iter()
                .filter(|d| d.day_start >= first_day)
                .map(|d| {
                    let index = ((d.day_start - first_day) / DAY_MS) as u64;
                    // The top 18 units hold the "max" label.
                    let height = scaled(d.amount, max, plot - 18).max(1);
                    Bar {
                        x: index * slot + 1,
                        y: plot - height,
                        width: slot.saturating_sub(2).max(1),
                        height,
                        title: format!("{}: {} {asset}", day_of(d.day_start), d.amount.to_display(decimals)),
                    }
                })
                .collect();
            let labels = vec![
                Label { x: 0, y: CHART_HEIGHT - 4, anchor: "start", text: day_of(first_day) },
                Label {
                    x: CHART_WIDTH,
                    y: CHART_HEIGHT - 4,
                    anchor: "end",
                    text: day_of(first_day + (DAYS - 1) * DAY_MS),
                },
                Label { x: 0, y: 12, anchor: "start", text: format!("max {} {asset}/day", max.to_display(decimals)) },
            ];
            Chart {
                id: format!("volume-{i}"),
                title: format!("Paid volume per day, {asset} on {chain}, last {DAYS} days"),
                width: CHART_WIDTH,
                height: CHART_HEIGHT,
                bars,
                labels,
                total: format!("{} {asset} paid on {chain} in the last {DAYS} days", total.to_display(decimals)),
            }
        })
        .collect()
}

/// A horizontal bar per invoice status.
fn status_chart(counts: &[(depositd_core::invoice::InvoiceStatus, i64)]) -> Option<Chart> {
    if counts.is_empty() {
        return None;
    }
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1) as u64;
    let row = 24u64;
    let label_width = 130u64;
    let plot = CHART_WIDTH - label_width - 50;
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, (status, count)) in counts.iter().enumerate() {
        let y = i as u64 * row + 4;
        let count = (*count).max(0) as u64;
        let width = (count * plot / max).max(1);
        bars.push(Bar {
            x: label_width,
            y,
            width,
            height: row - 8,
            title: format!("{}: {count} invoice(s)", status.as_str()),
        });
        labels.push(Label { x: label_width - 8, y: y + 13, anchor: "end", text: status.as_str().to_owned() });
        labels.push(Label { x: label_width + width + 6, y: y + 13, anchor: "start", text: count.to_string() });
    }
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    Some(Chart {
        id: "statuses".into(),
        title: format!("Invoices created in the last {DAYS} days, by status"),
        width: CHART_WIDTH,
        height: counts.len() as u64 * row + 8,
        bars,
        labels,
        total: format!("{total} invoice(s) created in the last {DAYS} days"),
    })
}

pub async fn page(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let merchant_id = signed_in.merchant.id;
    let balances = match crate::routes::ledger::merchant_balances(&state, merchant_id).await {
        Ok(balances) => balances,
        Err(error) => return internal(error),
    };
    // What the balances API gives, every field of it (read through its JSON shape).
    let balances = balances
        .iter()
        .map(|b| {
            let json = serde_json::to_value(b).unwrap_or_default();
            let shown = |field: &str| json[field].as_str().map(str::to_owned).unwrap_or_else(|| "?".into());
            BalanceRow {
                chain: b.chain.clone().unwrap_or_else(|| "(chain not enabled)".into()),
                asset: b.asset.clone(),
                available: shown("available"),
                pending: shown("pending"),
                reserved: shown("reserved"),
                in_transit: shown("in_transit"),
                receivable: shown("receivable"),
            }
        })
        .collect();
    let now = now_ms();
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let first_day = today - (DAYS - 1) * DAY_MS;
    let queried = async {
        let mut conn = state.store.conn().await?;
        let volumes = overview::paid_volume_by_day(&mut conn, merchant_id, first_day).await?;
        let statuses = overview::invoices_by_status(&mut conn, merchant_id, first_day).await?;
        let payments = overview::latest_payments(&mut conn, merchant_id, LATEST).await?;
        let endpoints = overview::webhook_health(&mut conn, merchant_id, now - DAY_MS).await?;
        Ok::<_, depositd_core::store::StoreError>((volumes, statuses, payments, endpoints))
    }
    .await;
    let (volumes, statuses, payments, endpoints) = match queried {
        Ok(found) => found,
        Err(error) => return internal(error),
    };
    let payments = payments
        .iter()
        .map(|p| {
            let chain =
                describe(&state.config, p.chain_id, &p.asset).0.unwrap_or_else(|| format!("chain {}", p.chain_id));
            PaymentRow {
                invoice_id: p.invoice_id.map(|id| id.to_string()),
                chain,
                tx_hash: p.tx_hash.clone(),
                amount: match p.decimals {
                    Some(decimals) => format!("{} {}", p.amount.to_display(decimals), p.asset),
                    None => format!("{} {} (base units)", p.amount, p.asset),
                },
                state: p.state.as_str(),
                detected: when(p.detected_at),
            }
        })
        .collect();
    let endpoints = endpoints
        .iter()
        .map(|e| EndpointRow {
            url: e.url.clone(),
            status: if !e.enabled {
                "disabled"
            } else if e.unhealthy() {
                "failing"
            } else {
                "healthy"
            },
            unhealthy: e.unhealthy(),
            detail: match (&e.disabled_reason, e.retrying, e.failed) {
                (Some(reason), _, _) if !e.enabled => reason.clone(),
                (_, 0, 0) => "no failures in the last 24 hours".into(),
                (_, retrying, failed) => {
                    format!("{retrying} delivery(ies) being retried, {failed} given up in the last 24 hours")
                }
            },
            last_success: e.last_success_at.map(when).unwrap_or_else(|| "never".into()),
        })
        .collect();
    let page = OverviewPage {
        chrome: Some(signed_in.chrome("overview")),
        balances,
        volume_charts: volume_charts(&state, &volumes, first_day),
        status_chart: status_chart(&statuses),
        payments,
        endpoints,
    };
    render(StatusCode::OK, &page)
}
