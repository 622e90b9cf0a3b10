//! The Invoices pages:
//! - `GET /dashboard/invoices`: the list, newest first, filtered (status, payment flag, created
//!   from/to, external_id, customer id or e-mail) and paged by cursor ("Next" carries `after`,
//!   "Previous" carries `before`); the store's list query (`store::invoices::list`, the merchant
//!   API's) with its filters. A bad filter value is shown next to its field.
//! - `GET /dashboard/invoices/{id}`: the detail: amounts, every payment option with what was paid
//!   in it, status and flags, the payments (`store::invoices::payments`), the ledger entries about
//!   it (`ledger::statements::entries`), its events with their deliveries and attempts, the
//!   checkout link. While the invoice is not final the page reloads itself every 3 seconds (a
//!   `meta` refresh: the CSP allows no script), so it turns paid before the merchant's eyes.
//! - `GET|POST /dashboard/invoices/new`: a test invoice (amount, currency, optional external_id,
//!   description, customer e-mail) made by `invoicing::create` exactly as the API makes one, with
//!   the test key mode (a testnet only). Allowed to `Action::ManageKeys` (developers and owners):
//!   a test invoice moves no real money, and a developer may already grant a key `invoices:write`
//!   (`api_keys::scope_action`) that creates the same invoice; viewers may not.
//! - `POST /dashboard/invoices/{id}/cancel`: `invoicing::cancel`, the API's cancel. Allowed to
//!   `Action::MoveMoney` (owners): cancelling turns away a customer's payment for an order.
//!
//! Every change is recorded with `audit::record` (`invoice.create_test`, `invoice.cancel`) in the
//! change's transaction. Another merchant's invoice is a 404.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::api_key::KeyMode;
use depositd_core::audit;
use depositd_core::invoice::{Invoice, InvoiceDetails, InvoiceResource, InvoiceStatus, PaymentFlag};
use depositd_core::invoice_views::InvoiceView;
use depositd_core::invoicing::{self, CancelError, InvoiceRequest, InvoicingError};
use depositd_core::ledger::statements::{self, EntryFilter};
use depositd_core::member::Action;
use depositd_core::money::BaseUnits;
use depositd_core::outbox::Subject;
use depositd_core::store::invoices::{self, InvoiceFilter};
use depositd_core::store::webhooks::{self as webhook_rows, EventFilter};
use depositd_core::store::{Conn, StoreError};
use serde::Serialize;
use uuid::Uuid;

use super::{Chrome, Refused, SignedIn, internal, not_found, render, secured, when};
use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

/// Invoices per page of the list.
const PAGE_SIZE: u32 = 25;
/// How many ledger entries and events the detail shows (an invoice has a handful).
const DETAIL_LIMIT: u32 = 100;

// === the list ===

/// The list's filter form as sent (echoed back), with an error per field.
#[derive(Default)]
struct Filters {
    status: String,
    flag: String,
    from: String,
    to: String,
    external_id: String,
    customer: String,
    status_error: Option<String>,
    flag_error: Option<String>,
    from_error: Option<String>,
    to_error: Option<String>,
    external_id_error: Option<String>,
    customer_error: Option<String>,
    cursor_error: Option<String>,
}

impl Filters {
    fn has_error(&self) -> bool {
        self.status_error.is_some()
            || self.flag_error.is_some()
            || self.from_error.is_some()
            || self.to_error.is_some()
            || self.external_id_error.is_some()
            || self.customer_error.is_some()
            || self.cursor_error.is_some()
    }

    /// The query string of these filters (without a cursor), for the paging links.
    fn query(&self) -> url::form_urlencoded::Serializer<'static, String> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("status", &self.status),
            ("flag", &self.flag),
            ("from", &self.from),
            ("to", &self.to),
            ("external_id", &self.external_id),
            ("customer", &self.customer),
        ] {
            if !value.is_empty() {
                query.append_pair(name, value);
            }
        }
        query
    }

    fn link(&self, cursor: (&str, Uuid)) -> String {
        let mut query = self.query();
        query.append_pair(cursor.0, &cursor.1.to_string());
        format!("/dashboard/invoices?{}", query.finish())
    }
}

/// One invoice as the list shows it.
struct ListRow {
    id: Uuid,
    created: String,
    status: &'static str,
    flags: String,
    price: String,
    paid: String,
    external_id: String,
    customer: String,
}

impl ListRow {
    fn new(invoice: &Invoice) -> ListRow {
        let details = &invoice.details;
        ListRow {
            id: invoice.id,
            created: when(invoice.created_at),
            status: invoice.status.as_str(),
            flags: flags_of(invoice),
            price: format!("{} {}", invoice.amount.normalize(), invoice.currency),
            paid: paid_of(invoice),
            external_id: invoice.external_id.clone().unwrap_or_default(),
            customer: details.customer_email.clone().or_else(|| details.customer_id.clone()).unwrap_or_default(),
        }
    }
}

fn flags_of(invoice: &Invoice) -> String {
    invoice.payment_flags.iter().map(|f| f.as_str().replace('_', " ")).collect::<Vec<_>>().join(", ")
}

/// What was paid, with its unit: the pay asset, or the currency with several options.
fn paid_of(invoice: &Invoice) -> String {
    let unit = if invoice.options.is_empty() { &invoice.asset } else { &invoice.currency };
    format!("{} {unit}", invoice.amount_paid_display())
}

#[derive(Template)]
#[template(path = "dashboard/invoices.html")]
struct ListPage {
    chrome: Option<Chrome>,
    filters: Filters,
    status_choices: Vec<(&'static str, bool)>,
    flag_choices: Vec<(&'static str, bool)>,
    rows: Vec<ListRow>,
    next: Option<String>,
    previous: Option<String>,
    may_create: bool,
}

/// `YYYY-MM-DD` (UTC) as the epoch milliseconds of its midnight.
fn date_ms(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4
        || m.len() != 2
        || d.len() != 2
        || !(y.bytes().chain(m.bytes()).chain(d.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=days_in_month[(m - 1) as usize]).contains(&d) {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400_000)
}

/// The filters of the list's query string, checked.
fn parse_filters(query: Option<&str>) -> (Filters, InvoiceFilter) {
    let mut filters = Filters::default();
    let mut filter = InvoiceFilter::default();
    let (mut after, mut before) = (String::new(), String::new());
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.trim().to_owned();
        match name.as_ref() {
            "status" => filters.status = value,
            "flag" => filters.flag = value,
            "from" => filters.from = value,
            "to" => filters.to = value,
            "external_id" => filters.external_id = value,
            "customer" => filters.customer = value,
            "after" => after = value,
            "before" => before = value,
            _ => {}
        }
    }
    if !filters.status.is_empty() {
        match filters.status.parse::<InvoiceStatus>() {
            Ok(status) => filter.status = Some(status),
            Err(message) => filters.status_error = Some(message),
        }
    }
    if !filters.flag.is_empty() {
        match filters.flag.parse::<PaymentFlag>() {
            Ok(flag) => filter.flag = Some(flag),
            Err(message) => filters.flag_error = Some(message),
        }
    }
    if !filters.from.is_empty() {
        match date_ms(&filters.from) {
            Some(ms) => filter.created_from = Some(ms),
            None => filters.from_error = Some("from must be a date such as 2026-12-07".into()),
        }
    }
    if !filters.to.is_empty() {
        match date_ms(&filters.to) {
            // The whole day `to` is included.
            Some(ms) => filter.created_before = Some(ms + 86_400_000),
            None => filters.to_error = Some("to must be a date such as 2026-12-07".into()),
        }
    }
    if let (Some(from), Some(before)) = (filter.created_from, filter.created_before)
        && before <= from
    {
        filters.to_error = Some("to must not be before from".into());
    }
    if !filters.external_id.is_empty() {
        match validate::text("external_id", Some(filters.external_id.clone()), 128) {
            Ok(id) => filter.external_id = id,
            Err(error) => filters.external_id_error = Some(error.to_string()),
        }
    }
    if !filters.customer.is_empty() {
        match validate::text("customer", Some(filters.customer.clone()), 255) {
            Ok(customer) => filter.customer = customer,
            Err(error) => filters.customer_error = Some(error.to_string()),
        }
    }
    let cursor = |text: &str| {
        text.parse::<Uuid>().map_err(|_| "the page link is not valid; start again from the first page".to_owned())
    };
    if !after.is_empty() {
        match cursor(&after) {
            Ok(id) => filter.starting_after = Some(id),
            Err(message) => filters.cursor_error = Some(message),
        }
    } else if !before.is_empty() {
        match cursor(&before) {
            Ok(id) => filter.ending_before = Some(id),
            Err(message) => filters.cursor_error = Some(message),
        }
    }
    (filters, filter)
}

pub async fn list(State(state): State<AppState>, signed_in: SignedIn, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let (filters, filter) = parse_filters(query.as_deref());
    let mut rows = Vec::new();
    let (mut next, mut previous) = (None, None);
    let status = if filters.has_error() {
        StatusCode::BAD_REQUEST
    } else {
        let found = async {
            let mut conn = state.store.conn().await?;
            invoices::list(&mut conn, signed_in.merchant.id, &filter, PAGE_SIZE + 1).await
        }
        .await;
        let mut found = match found {
            Ok(found) => found,
            Err(error) => return internal(error),
        };
        let more = found.len() > PAGE_SIZE as usize;
        if let Some(before) = filter.ending_before.filter(|_| filter.starting_after.is_none()) {
            // Backwards: the extra one is the newest, and there is always an older page (the
            // cursor's own invoice at least).
            if more {
                found.remove(0);
            }
            previous = more.then(|| found.first().map(|i| filters.link(("before", i.id)))).flatten();
            next = Some(filters.link(("after", found.last().map_or(before, |i| i.id))));
        } else {
            found.truncate(PAGE_SIZE as usize);
            next = more.then(|| found.last().map(|i| filters.link(("after", i.id)))).flatten();
            if filter.starting_after.is_some() {
                previous = found.first().map(|i| filters.link(("before", i.id)));
            }
        }
        rows = found.iter().map(ListRow::new).collect();
        StatusCode::OK
    };
    let page = ListPage {
        chrome: Some(signed_in.chrome("invoices")),
        status_choices: InvoiceStatus::ALL.iter().map(|s| (s.as_str(), filters.status == s.as_str())).collect(),
        flag_choices: PaymentFlag::ALL.iter().map(|f| (f.as_str(), filters.flag == f.as_str())).collect(),
        filters,
        rows,
        next,
        previous,
        may_create: signed_in.member.role.may(Action::ManageKeys),
    };
    render(status, &page)
}

// === the detail ===

struct OptionRow {
    chain: String,
    asset: String,
    address: String,
    amount: String,
    paid: String,
    due: String,
}

struct PaymentRow {
    tx_hash: String,
    chain: String,
    block: u64,
    confirmations: u64,
    state: String,
    amount: String,
    detected: String,
}

struct PostingRow {
    account: String,
    side: &'static str,
    amount: String,
    balance_after: String,
}

struct EntryRow {
    id: Uuid,
    entry_type: &'static str,
    created: String,
    memo: String,
    postings: Vec<PostingRow>,
}

struct AttemptRow {
    attempted: String,
    status_code: String,
    latency_ms: i64,
    error: String,
}

struct DeliveryRow {
    url: String,
    state: String,
    attempts: Vec<AttemptRow>,
}

struct EventRow {
    id: Uuid,
    event_type: &'static str,
    created: String,
    deliveries: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "dashboard/invoice.html")]
struct DetailPage {
    chrome: Option<Chrome>,
    csrf: String,
    id: Uuid,
    /// Reload every few seconds: the invoice is not final.
    refresh: bool,
    status: &'static str,
    flags: String,
    marked: String,
    price: String,
    paid: String,
    due: String,
    fee: String,
    merchant_amount: String,
    options: Vec<OptionRow>,
    payments: Vec<PaymentRow>,
    entries: Vec<EntryRow>,
    events: Vec<EventRow>,
    /// The checkout page's full URL (shown) and its path on this origin (the link).
    checkout_url: String,
    checkout_path: String,
    external_id: String,
    customer_id: String,
    customer_email: String,
    description: String,
    static_address_id: Option<Uuid>,
    created: String,
    expires: String,
    finished: String,
    may_cancel: bool,
    may_refund: bool,
    cancel_error: Option<String>,
}

/// The name of chain `chain_id` as configured (its id when it is not).
fn chain_name(state: &AppState, chain_id: u64) -> String {
    state.config.chains.iter().find(|c| c.chain_id == chain_id).map_or_else(|| chain_id.to_string(), |c| c.name.clone())
}

/// `amount` of `asset` on chain `chain_id` in whole tokens (base units when the asset is not
/// configured any more).
fn tokens(state: &AppState, invoice: &Invoice, chain_id: u64, asset: &str, amount: BaseUnits) -> String {
    let decimals = invoice
        .options
        .iter()
        .find(|o| o.is(chain_id, asset))
        .map(|o| o.decimals)
        .or_else(|| {
            (invoice.chain_id == chain_id && invoice.asset.eq_ignore_ascii_case(asset)).then_some(invoice.decimals)
        })
        .or_else(|| {
            state.config.chains.iter().find(|c| c.chain_id == chain_id).and_then(|c| c.asset(asset)).map(|a| a.decimals)
        });
    match decimals {
        Some(decimals) => format!("{} {asset}", amount.to_display(decimals)),
        None => format!("{amount} base units of {asset}"),
    }
}

/// Loads the invoice and everything its page shows; `None` when the merchant has no such invoice.
async fn detail(
    state: &AppState,
    conn: &mut Conn,
    signed_in: &SignedIn,
    id: Uuid,
) -> Result<Option<DetailPage>, StoreError> {
    let merchant_id = signed_in.merchant.id;
    let Some(invoice) = invoices::get(conn, merchant_id, id).await? else { return Ok(None) };
    let payments = invoices::payments(conn, &invoice).await?;
    let resource = InvoiceResource::build(&invoice, payments, &state.config.settings.api.public_url, &state.sessions);
    let entry_filter = EntryFilter { invoice_id: Some(id), ..EntryFilter::default() };
    let mut entries = statements::entries(conn, merchant_id, &entry_filter, DETAIL_LIMIT).await?;
    entries.reverse();
    let event_filter = EventFilter { resource_id: Some(id), ..EventFilter::default() };
    let mut records = webhook_rows::list_events(conn, merchant_id, &event_filter, DETAIL_LIMIT).await?;
    records.reverse();
    let mut events = Vec::with_capacity(records.len());
    for record in records {
        let mut deliveries = Vec::new();
        for delivery in webhook_rows::deliveries(conn, record.id).await? {
            let attempts = webhook_rows::attempts(conn, delivery.id)
                .await?
                .into_iter()
                .map(|a| AttemptRow {
                    attempted: when(a.attempted_at),
                    status_code: a.status_code.map_or_else(|| "no answer".into(), |c| c.to_string()),
                    latency_ms: a.latency_ms,
                    error: a.error.unwrap_or_default(),
                })
                .collect();
            deliveries.push(DeliveryRow { url: delivery.url, state: delivery.state, attempts });
        }
        events.push(EventRow {
            id: record.id,
            event_type: record.event_type.as_str(),
            created: when(record.created_at),
            deliveries,
        });
    }
    let unit = if invoice.options.is_empty() { invoice.asset.clone() } else { invoice.currency.clone() };
    let owner = signed_in.member.role.may(Action::MoveMoney);
    let paid_or_over = invoice.status == InvoiceStatus::Paid || invoice.payment_flags.contains(&PaymentFlag::Overpaid);
    let details = &invoice.details;
    Ok(Some(DetailPage {
        chrome: Some(signed_in.chrome("invoices")),
        csrf: signed_in.session.csrf_token.clone(),
        id,
        refresh: !invoice.status.is_final(),
        status: invoice.status.as_str(),
        flags: flags_of(&invoice),
        marked: invoice
            .mark
            .as_ref()
            .map(|m| format!("{} by {}: {}", m.status.as_str(), m.by, m.reason))
            .unwrap_or_default(),
        price: format!("{} {}", resource.amount, resource.currency),
        paid: format!("{} {unit}", resource.amount_paid),
        due: format!("{} {unit}", resource.amount_due),
        fee: format!("{} {}", resource.fee, invoice.asset),
        merchant_amount: format!("{} {}", resource.merchant_amount, invoice.asset),
        options: resource
            .payment_options
            .iter()
            .map(|o| OptionRow {
                chain: o.chain.clone(),
                asset: o.asset.clone(),
                address: o.address.clone(),
                amount: o.amount.clone(),
                paid: o.amount_paid.clone(),
                due: o.amount_due.clone(),
            })
            .collect(),
        payments: resource
            .payments
            .iter()
            .map(|p| PaymentRow {
                tx_hash: p.tx_hash.clone(),
                chain: chain_name(state, p.chain_id),
                block: p.block_number,
                confirmations: p.confirmations,
                state: p.state.clone(),
                amount: format!("{} {}", p.amount, p.asset),
                detected: when(p.detected_at * 1000),
            })
            .collect(),
        entries: entries
            .iter()
            .map(|e| EntryRow {
                id: e.entry.id,
                entry_type: e.entry.entry_type.as_str(),
                created: when(e.entry.created_at),
                memo: e.entry.memo.clone().unwrap_or_default(),
                postings: e
                    .postings
                    .iter()
                    .map(|p| {
                        let (chain_id, asset) = (p.account.chain_id, p.account.asset.as_str());
                        PostingRow {
                            account: format!(
                                "{} {} on {}",
                                p.account.kind.as_str(),
                                asset,
                                chain_name(state, chain_id)
                            ),
                            side: p.side.as_str(),
                            amount: tokens(state, &invoice, chain_id, asset, p.amount),
                            balance_after: tokens(state, &invoice, chain_id, asset, p.balance_after),
                        }
                    })
                    .collect(),
            })
            .collect(),
        events,
        checkout_url: resource.checkout_url.clone(),
        checkout_path: format!("/checkout/{}", invoice.id),
        external_id: invoice.external_id.clone().unwrap_or_default(),
        customer_id: details.customer_id.clone().unwrap_or_default(),
        customer_email: details.customer_email.clone().unwrap_or_default(),
        description: details.description.clone().unwrap_or_default(),
        static_address_id: invoice.static_address_id,
        created: when(invoice.created_at),
        expires: when(invoice.expires_at),
        finished: invoice.finished_at.map(when).unwrap_or_default(),
        may_cancel: owner && invoice.status == InvoiceStatus::Pending,
        may_refund: owner && paid_or_over,
        cancel_error: None,
    }))
}

/// The detail page of `id` (a 404 page for an id that is not one of the merchant's invoices).
async fn detail_page(state: &AppState, signed_in: &SignedIn, id: &str) -> Result<DetailPage, Refused> {
    let missing = || Box::new(not_found(Some(signed_in.chrome("invoices")), "invoice"));
    let id = id.parse::<Uuid>().map_err(|_| missing())?;
    let found = async {
        let mut conn = state.store.conn().await?;
        detail(state, &mut conn, signed_in, id).await
    }
    .await;
    match found {
        Ok(Some(page)) => Ok(page),
        Ok(None) => Err(missing()),
        Err(error) => Err(Box::new(internal(error))),
    }
}

pub async fn show(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    match detail_page(&state, &signed_in, &id).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(refused) => *refused,
    }
}

/// What the audit event of a cancellation records.
#[derive(Serialize)]
struct CancelDetails<'a> {
    status_before: &'a str,
}

pub async fn cancel(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::MoveMoney) {
        return *refused;
    }
    let Ok(invoice_id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("invoices")), "invoice") };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let (invoice, _) = invoicing::cancel(&mut tx, state.invoicing(), signed_in.merchant.id, invoice_id).await?;
        let details = CancelDetails { status_before: InvoiceStatus::Pending.as_str() };
        audit::record(&mut tx, &signed_in.member, "invoice.cancel", Subject::new("invoice", invoice.id), &details)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, CancelError>(())
    }
    .await;
    match outcome {
        Ok(()) => secured(Redirect::to(&format!("/dashboard/invoices/{invoice_id}")).into_response()),
        Err(CancelError::NotFound) => not_found(Some(signed_in.chrome("invoices")), "invoice"),
        Err(CancelError::Store(error)) => internal(error),
        Err(error @ CancelError::NotCancellable(_)) => match detail_page(&state, &signed_in, &id).await {
            Ok(mut page) => {
                page.cancel_error = Some(error.to_string());
                render(StatusCode::CONFLICT, &page)
            }
            Err(refused) => *refused,
        },
    }
}

// === a test invoice ===

#[derive(Template)]
#[template(path = "dashboard/invoice_new.html")]
struct NewPage {
    chrome: Option<Chrome>,
    csrf: String,
    amount: String,
    currency: String,
    external_id: String,
    description: String,
    customer_email: String,
    amount_error: Option<String>,
    currency_error: Option<String>,
    external_id_error: Option<String>,
    description_error: Option<String>,
    customer_email_error: Option<String>,
    /// An error about no one field (no testnet enabled, a rate unavailable).
    form_error: Option<String>,
}

impl NewPage {
    fn new(signed_in: &SignedIn) -> NewPage {
        NewPage {
            chrome: Some(signed_in.chrome("invoices")),
            csrf: signed_in.session.csrf_token.clone(),
            amount: String::new(),
            currency: "USD".into(),
            external_id: String::new(),
            description: String::new(),
            customer_email: String::new(),
            amount_error: None,
            currency_error: None,
            external_id_error: None,
            description_error: None,
            customer_email_error: None,
            form_error: None,
        }
    }

    /// Shows `message` next to field `param` (or above the form when it names none of them).
    fn error(&mut self, param: Option<&str>, message: String) {
        let slot = match param {
            Some("amount") => &mut self.amount_error,
            Some("currency") => &mut self.currency_error,
            Some("external_id") => &mut self.external_id_error,
            Some("description") => &mut self.description_error,
            Some("customer_email") => &mut self.customer_email_error,
            _ => &mut self.form_error,
        };
        if slot.is_none() {
            *slot = Some(message);
        }
    }

    fn has_error(&self) -> bool {
        self.amount_error.is_some()
            || self.currency_error.is_some()
            || self.external_id_error.is_some()
            || self.description_error.is_some()
            || self.customer_email_error.is_some()
            || self.form_error.is_some()
    }
}

pub async fn new_form(signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::ManageKeys) {
        return *refused;
    }
    render(StatusCode::OK, &NewPage::new(&signed_in))
}

/// What the audit event of a test invoice records.
#[derive(Serialize)]
struct CreateDetails<'a> {
    amount: String,
    currency: &'a str,
    chain: &'a str,
    external_id: Option<&'a str>,
}

fn field_error(page: &mut NewPage, error: ApiError) {
    let param = match &error {
        ApiError::InvalidRequest { param, .. } => param.clone(),
        _ => None,
    };
    page.error(param.as_deref(), error.to_string());
}

pub async fn create(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageKeys) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let mut page = NewPage::new(&signed_in);
    page.amount = form.text("amount");
    page.currency = form.text("currency");
    page.external_id = form.text("external_id");
    page.description = form.text("description");
    page.customer_email = form.text("customer_email");
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    // The API's checks of the same fields, with its messages.
    let amount = if page.amount.is_empty() {
        page.error(Some("amount"), "amount is required".into());
        None
    } else {
        validate::decimal_amount(&page.amount).map_err(|e| field_error(&mut page, e)).ok()
    };
    let external_id =
        validate::text("external_id", optional(&page.external_id), 128).map_err(|e| field_error(&mut page, e)).ok();
    let description =
        validate::text("description", optional(&page.description), 255).map_err(|e| field_error(&mut page, e)).ok();
    let customer_email =
        validate::email("customer_email", optional(&page.customer_email)).map_err(|e| field_error(&mut page, e)).ok();
    let (Some(amount), Some(external_id), Some(description), Some(customer_email)) =
        (amount, external_id, description, customer_email)
    else {
        return render(StatusCode::BAD_REQUEST, &page);
    };
    if page.has_error() {
        return render(StatusCode::BAD_REQUEST, &page);
    }
    let request = InvoiceRequest {
        amount,
        currency: optional(&page.currency),
        external_id,
        details: InvoiceDetails { description, customer_email, ..InvoiceDetails::default() },
        view: InvoiceView::Invoice,
        // A test invoice: on a testnet only, as a test key's.
        key_mode: Some(KeyMode::Test),
        ..InvoiceRequest::default()
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let (invoice, _) = invoicing::create(&mut tx, state.invoicing(), &signed_in.merchant, request).await?;
        let details = CreateDetails {
            amount: invoice.amount.normalize().to_string(),
            currency: &invoice.currency,
            chain: &invoice.chain,
            external_id: invoice.external_id.as_deref(),
        };
        audit::record(&mut tx, &signed_in.member, "invoice.create_test", Subject::new("invoice", invoice.id), &details)
            .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, InvoicingError>(invoice)
    }
    .await;
    match outcome {
        Ok(invoice) => {
            crate::routes::invoices::created(&state, &invoice);
            secured(Redirect::to(&format!("/dashboard/invoices/{}", invoice.id)).into_response())
        }
        Err(InvoicingError::Store(error)) => internal(error),
        Err(error) => {
            let param = error.param();
            page.error(param.as_deref(), error.to_string());
            let status = match error.inner() {
                InvoicingError::RateUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                InvoicingError::ExternalIdTaken => StatusCode::CONFLICT,
                InvoicingError::KeyModeMismatch { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::BAD_REQUEST,
            };
            render(status, &page)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::date_ms;

    #[test]
    fn dates_are_utc_midnights_and_impossible_ones_are_refused() {
        assert_eq!(date_ms("1970-01-01"), Some(0));
        // 2026-02-25T12:00:00Z is 1772020800 (core::time's test), so its midnight is 12 h before.
        assert_eq!(date_ms("2026-02-25"), Some(1_772_020_800_000 - 43_200_000));
        assert_eq!(date_ms("2024-02-29").map(|ms| ms + 86_400_000), date_ms("2024-03-01"));
        for bad in ["2023-02-29", "2026-13-01", "2026-00-10", "2026-04-31", "26-01-01", "2026-1-01", "2026-01-01x", ""]
        {
            assert_eq!(date_ms(bad), None, "{bad}");
        }
    }
}
