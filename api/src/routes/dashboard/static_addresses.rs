//! The Static addresses pages:
//! - `GET /dashboard/static-addresses`: the list, newest first, with each address's status
//!   ("Next" carries the `after` cursor), and the form that creates one.
//! - `POST /dashboard/static-addresses`: create (customer id, chain, asset) through
//!   `depositd_core::static_addresses::create`, the API's lifecycle. Allowed to
//!   `Action::ManageKeys` (developers and owners), who may grant a key `invoices:write`, the scope
//!   that creates one through the API.
//! - `GET /dashboard/static-addresses/{id}`: the detail: its deposits and the invoices they
//!   auto-created.
//! - `POST /dashboard/static-addresses/{id}/disable`: `depositd_core::static_addresses::disable`.
//!   Allowed to `Action::MoveMoney` (owners): a disabled address's deposits are no longer
//!   credited to the merchant but held in suspense, like cancelling an invoice.
//!
//! Both changes are recorded with `audit::record` (`static_address.create`,
//! `static_address.disable`). Another merchant's address is a 404.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::invoicing::{self, InvoicingError};
use depositd_core::member::Action;
use depositd_core::outbox::Subject;
use depositd_core::static_address::{StaticAddress, StaticAddressStatus};
use depositd_core::static_addresses::{self as lifecycle, NewStaticAddress};
use depositd_core::store::invoices::{self, InvoiceFilter};
use depositd_core::store::{StoreError, static_addresses};
use serde::Serialize;
use uuid::Uuid;

use super::{Chrome, SignedIn, internal, not_found, render, secured, when};
use crate::state::AppState;
use crate::validate;

const PAGE_SIZE: u32 = 25;
/// How many deposits and invoices the detail shows, newest first.
const DETAIL_LIMIT: u32 = 100;

struct AddressRow {
    id: Uuid,
    customer_id: String,
    chain: String,
    asset: String,
    address: String,
    status: &'static str,
    created: String,
}

impl AddressRow {
    fn new(a: &StaticAddress) -> AddressRow {
        AddressRow {
            id: a.id,
            customer_id: a.customer_id.clone(),
            chain: a.chain.clone(),
            asset: a.asset.clone(),
            address: a.address.to_checksum(None),
            status: a.status.as_str(),
            created: when(a.created_at),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/static_addresses.html")]
struct ListPage {
    chrome: Option<Chrome>,
    csrf: String,
    rows: Vec<AddressRow>,
    next: Option<String>,
    first_page: bool,
    may_create: bool,
    /// `chain` values and whether chosen.
    chain_choices: Vec<(String, bool)>,
    /// Every asset symbol of every chain, and whether chosen.
    asset_choices: Vec<(String, bool)>,
    customer_id: String,
    customer_id_error: Option<String>,
    chain_error: Option<String>,
    asset_error: Option<String>,
    cursor_error: Option<String>,
}

impl ListPage {
    fn new(state: &AppState, signed_in: &SignedIn, chain: &str, asset: &str) -> ListPage {
        let chain = if chain.is_empty() { state.config.settings.chains.default_chain.as_str() } else { chain };
        let asset = if asset.is_empty() { state.config.settings.chains.default_asset.as_str() } else { asset };
        let mut assets: Vec<String> = Vec::new();
        for c in &state.config.chains {
            for symbol in c.payable_symbols() {
                if !assets.iter().any(|a| a == symbol) {
                    assets.push(symbol.to_owned());
                }
            }
        }
        ListPage {
            chrome: Some(signed_in.chrome("static_addresses")),
            csrf: signed_in.session.csrf_token.clone(),
            rows: Vec::new(),
            next: None,
            first_page: true,
            may_create: signed_in.member.role.may(Action::ManageKeys),
            chain_choices: state.config.chains.iter().map(|c| (c.name.clone(), c.name == chain)).collect(),
            asset_choices: assets.into_iter().map(|a| (a.clone(), a == asset)).collect(),
            customer_id: String::new(),
            customer_id_error: None,
            chain_error: None,
            asset_error: None,
            cursor_error: None,
        }
    }

    /// Fills the list's rows: the page after `after`.
    async fn load(&mut self, state: &AppState, merchant_id: Uuid, after: Option<Uuid>) -> Result<(), StoreError> {
        let mut conn = state.store.conn().await?;
        let mut found = static_addresses::list(&mut conn, merchant_id, None, None, after, PAGE_SIZE + 1).await?;
        let more = found.len() > PAGE_SIZE as usize;
        found.truncate(PAGE_SIZE as usize);
        self.next = more.then(|| found.last().map(|a| format!("/dashboard/static-addresses?after={}", a.id))).flatten();
        self.first_page = after.is_none();
        self.rows = found.iter().map(AddressRow::new).collect();
        Ok(())
    }
}

pub async fn list(State(state): State<AppState>, signed_in: SignedIn, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let mut page = ListPage::new(&state, &signed_in, "", "");
    let mut after = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name == "after" && !value.is_empty() {
            match value.parse::<Uuid>() {
                Ok(id) => after = Some(id),
                Err(_) => {
                    page.cursor_error = Some("the page link is not valid; start again from the first page".into())
                }
            }
        }
    }
    if page.cursor_error.is_some() {
        return render(StatusCode::BAD_REQUEST, &page);
    }
    match page.load(&state, signed_in.merchant.id, after).await {
        Ok(()) => render(StatusCode::OK, &page),
        Err(error) => internal(error),
    }
}

/// What the audit event of a creation records.
#[derive(Serialize)]
struct CreateDetails<'a> {
    customer_id: &'a str,
    chain: &'a str,
    asset: &'a str,
    address: String,
}

pub async fn create(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::ManageKeys) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let (customer_id, chain, asset) = (form.text("customer_id"), form.text("chain"), form.text("asset"));
    let mut page = ListPage::new(&state, &signed_in, &chain, &asset);
    page.customer_id = customer_id.clone();
    // The API's checks, with its messages.
    let customer = if customer_id.is_empty() {
        Err("customer_id is required".to_owned())
    } else {
        validate::text("customer_id", Some(customer_id), 128).map(Option::unwrap_or_default).map_err(|e| e.to_string())
    };
    let optional = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let resolved =
        invoicing::resolve_asset(&state.config, optional(&chain).as_deref(), optional(&asset).as_deref(), None);
    if let Err(error) = &customer {
        page.customer_id_error = Some(error.clone());
    }
    if let Err(error) = &resolved {
        match error {
            InvoicingError::UnsupportedAsset { .. } => page.asset_error = Some(error.to_string()),
            _ => page.chain_error = Some(error.to_string()),
        }
    }
    let (Ok(customer_id), Ok((chain, asset))) = (customer, resolved) else {
        if let Err(error) = page.load(&state, signed_in.merchant.id, None).await {
            return internal(error);
        }
        return render(StatusCode::BAD_REQUEST, &page);
    };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let new = NewStaticAddress { customer_id, chain, asset, metadata: None, callback_url: None };
        let (address, _) = lifecycle::create(&mut tx, &state.wallet, signed_in.merchant.id, new).await?;
        let details = CreateDetails {
            customer_id: &address.customer_id,
            chain: &address.chain,
            asset: &address.asset,
            address: address.address.to_checksum(None),
        };
        audit::record(
            &mut tx,
            &signed_in.member,
            "static_address.create",
            Subject::new("static_address", address.id),
            &details,
        )
        .await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, StoreError>(address)
    }
    .await;
    match outcome {
        Ok(address) => secured(Redirect::to(&format!("/dashboard/static-addresses/{}", address.id)).into_response()),
        Err(error) => internal(error),
    }
}

struct DepositRow {
    tx_hash: String,
    chain: String,
    block: u64,
    amount: String,
    state: String,
    invoice_id: Option<Uuid>,
    detected: String,
}

struct InvoiceRow {
    id: Uuid,
    created: String,
    status: &'static str,
    amount: String,
}

#[derive(Template)]
#[template(path = "dashboard/static_address.html")]
struct DetailPage {
    chrome: Option<Chrome>,
    csrf: String,
    id: Uuid,
    customer_id: String,
    chain: String,
    asset: String,
    address: String,
    payment_uri: String,
    status: &'static str,
    created: String,
    disabled: String,
    may_disable: bool,
    deposits: Vec<DepositRow>,
    invoices: Vec<InvoiceRow>,
}

pub async fn show(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let missing = || not_found(Some(signed_in.chrome("static_addresses")), "static address");
    let Ok(id) = id.parse::<Uuid>() else { return missing() };
    let merchant_id = signed_in.merchant.id;
    let loaded = async {
        let mut conn = state.store.conn().await?;
        let Some(address) = static_addresses::get(&mut conn, merchant_id, id).await? else { return Ok(None) };
        let deposits = static_addresses::deposits(&mut conn, merchant_id, id, DETAIL_LIMIT).await?;
        let filter = InvoiceFilter { static_address_id: Some(id), ..InvoiceFilter::default() };
        let invoices = invoices::list(&mut conn, merchant_id, &filter, DETAIL_LIMIT).await?;
        Ok::<_, StoreError>(Some((address, deposits, invoices)))
    }
    .await;
    let (address, deposits, invoices) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => return missing(),
        Err(error) => return internal(error),
    };
    let resource = lifecycle::resource(&state.config, &address);
    let decimals = state.config.chain(&address.chain).and_then(|c| c.asset(&address.asset)).map(|a| a.decimals);
    let chain_name = |chain_id: u64| {
        state
            .config
            .chains
            .iter()
            .find(|c| c.chain_id == chain_id)
            .map_or_else(|| chain_id.to_string(), |c| c.name.clone())
    };
    let page = DetailPage {
        chrome: Some(signed_in.chrome("static_addresses")),
        csrf: signed_in.session.csrf_token.clone(),
        id,
        customer_id: address.customer_id.clone(),
        chain: address.chain.clone(),
        asset: address.asset.clone(),
        address: resource.address.clone(),
        payment_uri: resource.payment_uri.clone(),
        status: address.status.as_str(),
        created: when(address.created_at),
        disabled: address.disabled_at.map(when).unwrap_or_default(),
        may_disable: address.status == StaticAddressStatus::Active && signed_in.member.role.may(Action::MoveMoney),
        deposits: deposits
            .iter()
            .map(|d| DepositRow {
                tx_hash: d.tx_hash.clone(),
                chain: chain_name(d.chain_id),
                block: d.block_number,
                amount: match decimals.filter(|_| d.asset.eq_ignore_ascii_case(&address.asset)) {
                    Some(decimals) => format!("{} {}", d.amount.to_display(decimals), d.asset),
                    None => format!("{} base units of {}", d.amount, d.asset),
                },
                state: d.state.clone(),
                invoice_id: d.invoice_id,
                detected: when(d.detected_at),
            })
            .collect(),
        invoices: invoices
            .iter()
            .map(|i| InvoiceRow {
                id: i.id,
                created: when(i.created_at),
                status: i.status.as_str(),
                amount: format!("{} {}", i.amount.normalize(), i.currency),
            })
            .collect(),
    };
    render(StatusCode::OK, &page)
}

/// What the audit event of a disabling records.
#[derive(Serialize)]
struct DisableDetails {
    address: String,
}

pub async fn disable(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::MoveMoney) {
        return *refused;
    }
    let missing = || not_found(Some(signed_in.chrome("static_addresses")), "static address");
    let Ok(id) = id.parse::<Uuid>() else { return missing() };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let Some(disabled) = lifecycle::disable(&mut tx, &state.config, signed_in.merchant.id, id).await? else {
            return Ok(false);
        };
        // Disabled already (a second click): nothing changed, nothing to record.
        if disabled.changed {
            let details = DisableDetails { address: disabled.resource.address.clone() };
            audit::record(
                &mut tx,
                &signed_in.member,
                "static_address.disable",
                Subject::new("static_address", disabled.address.id),
                &details,
            )
            .await?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, StoreError>(true)
    }
    .await;
    match outcome {
        Ok(true) => secured(Redirect::to(&format!("/dashboard/static-addresses/{id}")).into_response()),
        Ok(false) => missing(),
        Err(error) => internal(error),
    }
}
