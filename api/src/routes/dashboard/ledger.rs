//! The Balances and ledger page (`GET /dashboard/ledger`): balances per chain and asset (the
//! API's, `routes::ledger::merchant_balances`), the journal with filters (asset, kind, dates,
//! invoice, payout) and cursor paging, each line with its account's running balance; and its
//! CSV export (`GET /dashboard/ledger.csv`, the same filters, every matching entry, one row per
//! line), written by the API's export (`routes::ledger::journal_csv`) from the same core query
//! (`depositd_core::ledger::statements::entries`).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use depositd_core::ledger::EntryType;
use depositd_core::ledger::statements::{self, EntryFilter};
use depositd_core::member::Action;
use uuid::Uuid;

use super::{Chrome, Form, SignedIn, internal, render, secured, when};
use crate::routes::ledger::{journal_csv, merchant_balances, posting_view};
use crate::state::AppState;

/// Entries per page of the journal.
const PAGE: u32 = 50;

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

/// One line of an entry: a posting to one of the merchant's accounts.
struct LineRow {
    account: String,
    chain: String,
    asset: String,
    amount: String,
    balance_after: String,
}

/// One journal entry as shown.
struct EntryRow {
    id: Uuid,
    created: String,
    kind: String,
    invoice_id: Option<Uuid>,
    payout_id: Option<Uuid>,
    memo: String,
    lines: Vec<LineRow>,
}

/// The filter form's values as sent, and each field's error.
#[derive(Default)]
struct Filters {
    asset: String,
    kind: String,
    from: String,
    to: String,
    invoice_id: String,
    payout_id: String,
    asset_error: Option<String>,
    kind_error: Option<String>,
    from_error: Option<String>,
    to_error: Option<String>,
    invoice_id_error: Option<String>,
    payout_id_error: Option<String>,
}

impl Filters {
    fn has_error(&self) -> bool {
        self.asset_error.is_some()
            || self.kind_error.is_some()
            || self.from_error.is_some()
            || self.to_error.is_some()
            || self.invoice_id_error.is_some()
            || self.payout_id_error.is_some()
    }

    /// The query string of these filters (for the next page and the CSV link).
    fn query(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("asset", &self.asset),
            ("kind", &self.kind),
            ("from", &self.from),
            ("to", &self.to),
            ("invoice_id", &self.invoice_id),
            ("payout_id", &self.payout_id),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}

#[derive(Template)]
#[template(path = "dashboard/ledger.html")]
struct LedgerPage {
    chrome: Option<Chrome>,
    balances: Vec<BalanceRow>,
    filters: Filters,
    /// Every asset symbol of an enabled chain, for the asset filter, and whether it is chosen.
    assets: Vec<(String, bool)>,
    /// Every entry type, and whether it is chosen.
    kinds: Vec<(&'static str, bool)>,
    entries: Vec<EntryRow>,
    /// The query of the next page, when there is one.
    next: Option<String>,
    /// The query of the CSV export of these filters.
    csv_query: String,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A `YYYY-MM-DD` date (UTC) as epoch milliseconds of its midnight.
fn date_ms(text: &str, field: &str) -> Result<i64, String> {
    let invalid = || format!("{field} must be a date as YYYY-MM-DD, such as 2026-12-01");
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else { return Err(invalid()) };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return Err(invalid());
    }
    let number = |s: &str| s.parse::<i64>().map_err(|_| invalid());
    let (year, month, day) = (number(year)?, number(month)?, number(day)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(invalid()),
    };
    if !(1..=days_in_month).contains(&day) {
        return Err(invalid());
    }
    Ok(days_from_civil(year, month, day) * 86_400_000)
}

const DAY_MS: i64 = 86_400_000;

/// The request's filters checked: the form's values with their errors, and the core filter.
fn parse_filters(state: &AppState, form: &Form) -> (Filters, EntryFilter) {
    let mut filters = Filters {
        asset: form.text("asset"),
        kind: form.text("kind"),
        from: form.text("from"),
        to: form.text("to"),
        invoice_id: form.text("invoice_id"),
        payout_id: form.text("payout_id"),
        ..Filters::default()
    };
    let mut filter = EntryFilter::default();
    if !filters.asset.is_empty() {
        // One of the enabled chains' symbols, as configured (the API's rule and message).
        if state.config.chains.iter().any(|c| c.asset_symbols().contains(&filters.asset.as_str())) {
            filter.asset = Some(filters.asset.clone());
        } else {
            filters.asset_error = Some(format!("asset {:?} is not an asset of an enabled chain", filters.asset));
        }
    }
    if !filters.kind.is_empty() {
        match filters.kind.parse::<EntryType>() {
            Ok(kind) => filter.entry_type = Some(kind),
            Err(message) => filters.kind_error = Some(message),
        }
    }
    if !filters.from.is_empty() {
        match date_ms(&filters.from, "from") {
            // From midnight on, inclusive.
            Ok(ms) => filter.created_after = Some(ms - 1),
            Err(message) => filters.from_error = Some(message),
        }
    }
    if !filters.to.is_empty() {
        match date_ms(&filters.to, "to") {
            // Up to the end of that day, inclusive.
            Ok(ms) => filter.created_before = Some(ms + DAY_MS),
            Err(message) => filters.to_error = Some(message),
        }
    }
    if let (Some(after), Some(before)) = (filter.created_after, filter.created_before)
        && before <= after + 1
    {
        filters.to_error = Some("to must not be before from".into());
    }
    let id = |text: &str, name: &str| text.parse::<Uuid>().map_err(|_| format!("{name} must be a UUID"));
    if !filters.invoice_id.is_empty() {
        match id(&filters.invoice_id, "invoice_id") {
            Ok(id) => filter.invoice_id = Some(id),
            Err(message) => filters.invoice_id_error = Some(message),
        }
    }
    if !filters.payout_id.is_empty() {
        match id(&filters.payout_id, "payout_id") {
            Ok(id) => filter.payout_id = Some(id),
            Err(message) => filters.payout_id_error = Some(message),
        }
    }
    (filters, filter)
}

fn query_form(query: Option<String>) -> Form {
    Form::parse(&Bytes::from(query.unwrap_or_default()))
}

/// `GET /dashboard/ledger`.
pub async fn page(State(state): State<AppState>, signed_in: SignedIn, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let form = query_form(query);
    let (filters, mut filter) = parse_filters(&state, &form);
    let balances = match merchant_balances(&state, signed_in.merchant.id).await {
        Ok(balances) => balances,
        Err(error) => return internal(error),
    };
    let shown = |amount: &Option<String>| amount.clone().unwrap_or_else(|| "?".into());
    let balances = balances
        .iter()
        .map(|b| BalanceRow {
            chain: b.chain.clone().unwrap_or_else(|| "(chain not enabled)".into()),
            asset: b.asset.clone(),
            available: shown(&b.available),
            pending: shown(&b.pending),
            reserved: shown(&b.reserved),
            in_transit: shown(&b.in_transit),
            receivable: shown(&b.receivable),
        })
        .collect();
    let mut assets: Vec<String> =
        state.config.chains.iter().flat_map(|c| c.asset_symbols()).map(str::to_owned).collect();
    assets.sort();
    assets.dedup();
    let assets = assets.into_iter().map(|a| (a.clone(), a == filters.asset)).collect();
    let kinds = EntryType::ALL.iter().map(|k| (k.as_str(), k.as_str() == filters.kind)).collect();
    let mut page = LedgerPage {
        chrome: Some(signed_in.chrome("ledger")),
        balances,
        csv_query: filters.query(),
        filters,
        assets,
        kinds,
        entries: Vec::new(),
        next: None,
    };
    if page.filters.has_error() {
        return render(StatusCode::BAD_REQUEST, &page);
    }
    let cursor = form.text("starting_after");
    if !cursor.is_empty() {
        match cursor.parse::<Uuid>() {
            Ok(id) => filter.starting_after = Some(id),
            Err(_) => return render(StatusCode::BAD_REQUEST, &page),
        }
    }
    let found = {
        let mut conn = match state.store.conn().await {
            Ok(conn) => conn,
            Err(error) => return internal(error),
        };
        match statements::entries(&mut conn, signed_in.merchant.id, &filter, PAGE + 1).await {
            Ok(found) => found,
            Err(error) => return internal(error),
        }
    };
    let more = found.len() > PAGE as usize;
    for merchant_entry in found.into_iter().take(PAGE as usize) {
        let entry = &merchant_entry.entry;
        let lines = merchant_entry
            .postings
            .iter()
            .map(|posting| {
                let view = posting_view(&state.config, posting.clone());
                LineRow {
                    account: view.account.to_string(),
                    chain: view.chain.unwrap_or_else(|| format!("chain {}", posting.account.chain_id)),
                    asset: view.asset,
                    amount: view.amount.unwrap_or_else(|| format!("{} base units", view.amount_base_units)),
                    balance_after: view
                        .balance_after
                        .unwrap_or_else(|| format!("{} base units", view.balance_after_base_units)),
                }
            })
            .collect();
        page.entries.push(EntryRow {
            id: entry.id,
            created: when(entry.created_at),
            kind: entry.entry_type.to_string(),
            invoice_id: entry.refs.invoice_id,
            payout_id: entry.refs.payout_id,
            memo: entry.memo.clone().unwrap_or_default(),
            lines,
        });
    }
    if more && let Some(last) = page.entries.last() {
        let mut next = page.filters.query();
        if !next.is_empty() {
            next.push('&');
        }
        next.push_str(&format!("starting_after={}", last.id));
        page.next = Some(next);
    }
    render(StatusCode::OK, &page)
}

/// `GET /dashboard/ledger.csv`: every entry the filters select, as an attachment.
pub async fn export(State(state): State<AppState>, signed_in: SignedIn, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let form = query_form(query.clone());
    let (filters, filter) = parse_filters(&state, &form);
    if filters.has_error() {
        // The page shows each error next to its filter.
        return page(State(state), signed_in, RawQuery(query)).await;
    }
    let mut conn = match state.store.conn().await {
        Ok(conn) => conn,
        Err(error) => return internal(error),
    };
    match journal_csv(&mut conn, &state.config, signed_in.merchant.id, filter, None, csv::Terminator::CRLF).await {
        Ok(body) => secured(
            (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"ledger.csv\""),
                ],
                body,
            )
                .into_response(),
        ),
        Err(error) => internal(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_midnights_and_checked() {
        assert_eq!(date_ms("1970-01-01", "from"), Ok(0));
        assert_eq!(date_ms("2026-12-07", "from"), Ok(1_796_601_600_000));
        assert_eq!(date_ms("2024-02-29", "from"), Ok(1_709_164_800_000));
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "2026-1-01", "26-01-01", "2026/01/01", "", "x"] {
            assert!(date_ms(bad, "from").is_err(), "{bad}");
        }
    }
}
