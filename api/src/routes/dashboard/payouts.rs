//! The Payouts pages and an invoice's refund:
//! - `GET /dashboard/payouts`: payouts and refunds, newest first, cursor paging;
//! - `GET /dashboard/payouts/{id}`: one payout (status, tx hash, fee, events), cancel while pending
//!   (`POST /dashboard/payouts/{id}/cancel`);
//! - create in two steps: `GET|POST /dashboard/payouts/new` (the form, checked by the API's rules,
//!   `routes::payouts::validate_payout`, then the confirmation with the fee reserve and the
//!   available balance after, `depositd_core::payouts::preview`), then `POST /dashboard/payouts`
//!   (the password, or a TOTP code when the member has one, re-entered: `SignedIn::reauthenticate`; created with
//!   `depositd_core::payouts::create`);
//! - `GET|POST /dashboard/invoices/{id}/refund` and `POST /dashboard/invoices/{id}/refund/confirm`:
//!   the same for a refund (`routes::payouts::validate_refund`).
//!
//! Moving money is the owner's (`Action::MoveMoney`). The confirmation carries a key made when
//! it was shown (`idempotency_key`), claimed with the API's idempotency records in the creating
//! transaction: a form sent twice creates one payout and the second answer shows it. Each
//! creation and cancellation is recorded with `depositd_core::audit::record` in its transaction.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use depositd_core::audit;
use depositd_core::config::ChainConfig;
use depositd_core::member::Action;
use depositd_core::money::BaseUnits;
use depositd_core::outbox::Subject;
use depositd_core::payout::{Payout, PayoutKind, PayoutStatus};
use depositd_core::payouts::{self, NewPayout, PayoutError, Preview};
use depositd_core::store::idempotency::{self, Claim};
use depositd_core::store::{self, StoreError, invoices};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::sign_in::ReauthError;
use super::{Chrome, Form, SignedIn, internal, message, not_found, render, secured, when};
use crate::error::ApiError;
use crate::routes::payouts::{CreatePayout, CreateRefund, payout_ctx, resource, validate_payout, validate_refund};
use crate::state::AppState;

/// Payouts per page of the list.
const PAGE: u32 = 50;

// === errors next to their fields ===

/// A form's errors: each field's, and one for the form as a whole.
#[derive(Default)]
struct Errors {
    chain: Option<String>,
    asset: Option<String>,
    amount: Option<String>,
    destination: Option<String>,
    reference: Option<String>,
    password: Option<String>,
    form: Option<String>,
}

/// What a refused creation answers: the form with the error next to its field, or a page.
enum Refusal {
    Form(StatusCode, Box<Errors>),
    Page(Box<Response>),
}

impl Refusal {
    fn form(status: StatusCode, errors: Errors) -> Refusal {
        Refusal::Form(status, Box::new(errors))
    }

    fn page(response: Response) -> Refusal {
        Refusal::Page(Box::new(response))
    }
}

/// The API's refusal of a payout or refund, placed next to the form's field it names (the
/// API's `param`; a refund's `address` is the form's destination, `external_id` its reference).
fn refusal(error: ApiError, chrome: impl FnOnce() -> Chrome) -> Refusal {
    let (status, param, message) = match error {
        ApiError::InvalidRequest { message, param, .. } => (StatusCode::BAD_REQUEST, param, message),
        ApiError::Conflict { message, param, .. } => (StatusCode::CONFLICT, param, message),
        ApiError::Forbidden { message, param, .. } => (StatusCode::FORBIDDEN, param, message),
        ApiError::Unavailable { message, .. } => (StatusCode::SERVICE_UNAVAILABLE, None, message),
        ApiError::NotFound { .. } => return Refusal::page(not_found(Some(chrome()), "invoice")),
        other => return Refusal::page(internal(other)),
    };
    let mut errors = Errors::default();
    let slot = match param.as_deref() {
        Some("chain") => &mut errors.chain,
        Some("asset") => &mut errors.asset,
        Some("amount") => &mut errors.amount,
        Some("destination" | "address") => &mut errors.destination,
        Some("external_id") => &mut errors.reference,
        _ => &mut errors.form,
    };
    *slot = Some(message);
    Refusal::form(status, errors)
}

fn payout_refusal(error: PayoutError, signed_in: &SignedIn) -> Refusal {
    match error {
        PayoutError::Store(error) => Refusal::page(internal(error)),
        PayoutError::Ledger(error) => Refusal::page(internal(error)),
        error => refusal(ApiError::from(error), || signed_in.chrome("payouts")),
    }
}

// === the form's fields ===

/// What the create forms send (as typed, trimmed).
#[derive(Default, Clone)]
struct Fields {
    chain: String,
    asset: String,
    amount: String,
    destination: String,
    reference: String,
}

impl Fields {
    fn of(form: &Form) -> Fields {
        Fields {
            chain: form.text("chain"),
            asset: form.text("asset"),
            amount: form.text("amount"),
            destination: form.text("destination"),
            reference: form.text("reference"),
        }
    }

    fn optional(text: &str) -> Option<String> {
        (!text.is_empty()).then(|| text.to_owned())
    }

    fn payout(&self) -> CreatePayout {
        CreatePayout {
            chain: Fields::optional(&self.chain),
            asset: self.asset.clone(),
            amount: serde_json::Value::String(self.amount.clone()),
            destination: self.destination.clone(),
            external_id: Fields::optional(&self.reference),
            metadata: None,
        }
    }

    fn refund(&self) -> CreateRefund {
        CreateRefund {
            amount: serde_json::Value::String(self.amount.clone()),
            address: self.destination.clone(),
            external_id: Fields::optional(&self.reference),
            metadata: None,
            asset: Fields::optional(&self.asset),
            chain: Fields::optional(&self.chain),
        }
    }

    /// The fields as hidden inputs of the confirmation.
    fn hidden(&self) -> Vec<(&'static str, String)> {
        vec![
            ("chain", self.chain.clone()),
            ("asset", self.asset.clone()),
            ("amount", self.amount.clone()),
            ("destination", self.destination.clone()),
            ("reference", self.reference.clone()),
        ]
    }
}

/// A confirmation's idempotency record: its key (`dashboard:<uuid>`), what it is for, and what
/// the confirmed request was (the fields as sent): a key sent again with another request is
/// refused, not replayed.
struct Once {
    key: String,
    endpoint: &'static str,
    request_hash: String,
}

impl Once {
    fn new(key: Uuid, kind: PayoutKind, invoice_id: Option<Uuid>, fields: &Fields) -> Once {
        let endpoint = match kind {
            PayoutKind::Payout => "dashboard POST /dashboard/payouts",
            PayoutKind::Refund => "dashboard POST /dashboard/invoices/{id}/refund",
        };
        let text = serde_json::json!([
            invoice_id,
            fields.chain,
            fields.asset,
            fields.amount,
            fields.destination,
            fields.reference
        ])
        .to_string();
        Once {
            key: format!("{}{key}", crate::idempotency::DASHBOARD_PREFIX),
            endpoint,
            request_hash: hex::encode(Sha256::digest(text.as_bytes())),
        }
    }

    /// The payout an earlier answer to this confirmation created, if any (a form sent twice).
    async fn earlier(&self, state: &AppState, merchant_id: Uuid) -> Result<Option<Uuid>, Refusal> {
        let mut conn = state.store.conn().await.map_err(|e| Refusal::page(internal(e)))?;
        let found = idempotency::lookup(&mut conn, merchant_id, &self.key, self.endpoint, &self.request_hash)
            .await
            .map_err(|e| Refusal::page(internal(e)))?;
        match found {
            None | Some(Claim::Owned) => Ok(None),
            Some(claim) => Once::answer(claim).map(Some),
        }
    }

    /// What a claim that is not this request's to own answers.
    fn answer(claim: Claim) -> Result<Uuid, Refusal> {
        let message = match claim {
            Claim::Replay { body, .. } => {
                return body
                    .parse()
                    .map_err(|_| Refusal::page(internal("a dashboard idempotency record holds no payout id")));
            }
            Claim::Mismatch => "this confirmation was already used for another request; start again",
            Claim::InProgress | Claim::Owned => {
                "this confirmation is being processed; look at the payouts list in a moment"
            }
        };
        Err(Refusal::form(StatusCode::CONFLICT, Errors { form: Some(message.into()), ..Errors::default() }))
    }
}

// === pages ===

/// A payout as the list and the detail show it.
struct PayoutRow {
    id: Uuid,
    kind: &'static str,
    status: &'static str,
    chain: String,
    asset: String,
    amount: String,
    destination: String,
    reference: String,
    fee_reserve: String,
    network_fee: String,
    tx_hash: String,
    invoice_id: Option<Uuid>,
    failure_reason: String,
    created: String,
    updated: String,
}

impl PayoutRow {
    async fn build(state: &AppState, conn: &mut store::Conn, payout: &Payout) -> Result<PayoutRow, ApiError> {
        let shown = resource(state, conn, payout).await?;
        let decimals = crate::routes::ledger::describe(&state.config, payout.chain_id, &payout.asset).1.unwrap_or(18);
        let money = |v: BaseUnits| format!("{} {}", v.to_display(decimals), payout.asset);
        Ok(PayoutRow {
            id: payout.id,
            kind: payout.kind.as_str(),
            status: payout.status.as_str(),
            chain: shown.chain,
            asset: payout.asset.clone(),
            amount: shown.amount,
            destination: payout.destination.clone(),
            reference: payout.external_id.clone().unwrap_or_default(),
            fee_reserve: money(payout.fee_reserve),
            network_fee: payout.network_fee.map(money).unwrap_or_else(|| "not yet charged".into()),
            tx_hash: shown.tx_hash.unwrap_or_default(),
            invoice_id: payout.invoice_id,
            failure_reason: payout.failure_reason.clone().unwrap_or_default(),
            created: when(payout.created_at),
            updated: when(payout.updated_at),
        })
    }
}

#[derive(Template)]
#[template(path = "dashboard/payouts.html")]
struct ListPage {
    chrome: Option<Chrome>,
    payouts: Vec<PayoutRow>,
    may_move_money: bool,
    next: Option<Uuid>,
}

#[derive(Template)]
#[template(path = "dashboard/payout.html")]
struct DetailPage {
    chrome: Option<Chrome>,
    csrf: String,
    payout: PayoutRow,
    events: Vec<(String, String)>,
    cancellable: bool,
}

#[derive(Template)]
#[template(path = "dashboard/payout_new.html")]
struct NewPayoutPage {
    chrome: Option<Chrome>,
    csrf: String,
    fields: Fields,
    /// Every enabled chain, and whether the form has it.
    chains: Vec<(String, bool)>,
    /// Every asset symbol of an enabled chain, and whether the form has it.
    assets: Vec<(String, bool)>,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "dashboard/refund_new.html")]
struct RefundPage {
    chrome: Option<Chrome>,
    csrf: String,
    invoice_id: Uuid,
    invoice_status: String,
    /// The options the invoice can be refunded in: `chain/asset` value, label with what was
    /// paid, whether chosen.
    options: Vec<(String, String, bool)>,
    fields: Fields,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "dashboard/payout_confirm.html")]
struct ConfirmPage {
    chrome: Option<Chrome>,
    csrf: String,
    heading: String,
    action: String,
    back: String,
    rows: Vec<(&'static str, String)>,
    hidden: Vec<(&'static str, String)>,
    idempotency_key: String,
    errors: Errors,
}

fn chain_choices(state: &AppState, chosen: &str) -> Vec<(String, bool)> {
    state.config.chains.iter().map(|c| (c.name.clone(), c.name == chosen)).collect()
}

fn asset_choices(state: &AppState, chosen: &str) -> Vec<(String, bool)> {
    let mut symbols: Vec<String> =
        state.config.chains.iter().flat_map(|c| c.asset_symbols()).map(str::to_owned).collect();
    symbols.sort();
    symbols.dedup();
    symbols.into_iter().map(|s| (s.clone(), s.eq_ignore_ascii_case(chosen))).collect()
}

fn new_payout_page(state: &AppState, signed_in: &SignedIn, fields: Fields, errors: Errors) -> NewPayoutPage {
    NewPayoutPage {
        chrome: Some(signed_in.chrome("payouts")),
        csrf: signed_in.session.csrf_token.clone(),
        chains: chain_choices(state, &fields.chain),
        assets: asset_choices(state, &fields.asset),
        fields,
        errors,
    }
}

/// A payout or refund checked by the API's rules, and what it would reserve.
struct Checked<'a> {
    chain: &'a ChainConfig,
    new: NewPayout,
    preview: Preview,
}

/// The confirmation of a checked payout or refund, posting to `action` (`back`: its form).
fn confirm_page(
    signed_in: &SignedIn,
    checked: &Checked<'_>,
    fields: &Fields,
    (action, back): (String, String),
    idempotency_key: String,
    errors: Errors,
) -> ConfirmPage {
    let Checked { chain, new, preview } = checked;
    let money = |v: BaseUnits| format!("{} {}", v.to_display(new.decimals), new.asset);
    let mut rows = vec![
        ("Chain", chain.name.clone()),
        ("Asset", new.asset.clone()),
        ("Amount", money(new.amount)),
        ("Destination", new.destination.to_checksum(None)),
        ("Reference", new.external_id.clone().unwrap_or_else(|| "(none)".into())),
        ("Network fee reserve", money(preview.fee_reserve)),
        ("Available now", money(preview.available)),
        ("Available after", money(preview.available_after)),
    ];
    if let Some(invoice) = &new.refund_of {
        rows.insert(0, ("Refund of invoice", invoice.id.to_string()));
    }
    let noun = match new.kind {
        PayoutKind::Payout => "payout",
        PayoutKind::Refund => "refund",
    };
    ConfirmPage {
        chrome: Some(signed_in.chrome("payouts")),
        csrf: signed_in.session.csrf_token.clone(),
        heading: format!("Confirm the {noun}"),
        action,
        back,
        rows,
        hidden: fields.hidden(),
        idempotency_key,
        errors,
    }
}

/// What the audit record of a creation says (never a secret).
#[derive(Serialize)]
struct Created<'a> {
    kind: &'static str,
    chain: &'a str,
    asset: &'a str,
    amount: String,
    destination: String,
    external_id: Option<&'a str>,
    invoice_id: Option<Uuid>,
}

/// Creates `new` once per `key` (see the module doc) and records who did it; the created (or
/// earlier) payout's id.
async fn create_once(
    state: &AppState,
    signed_in: &SignedIn,
    chain: &ChainConfig,
    new: NewPayout,
    once: &Once,
) -> Result<Uuid, Refusal> {
    let merchant_id = signed_in.merchant.id;
    let store_failed = |error: StoreError| Refusal::page(internal(error));
    let mut tx = state.store.begin().await.map_err(store_failed)?;
    match idempotency::claim(&mut tx, merchant_id, &once.key, once.endpoint, &once.request_hash)
        .await
        .map_err(store_failed)?
    {
        Claim::Owned => {}
        claim => return Once::answer(claim),
    }
    let details_of = |new: &NewPayout| {
        serde_json::to_value(Created {
            kind: new.kind.as_str(),
            chain: &chain.name,
            asset: &new.asset,
            amount: new.amount.to_display(new.decimals),
            destination: new.destination.to_checksum(None),
            external_id: new.external_id.as_deref(),
            invoice_id: new.refund_of.as_ref().map(|i| i.id),
        })
        .unwrap_or_default()
    };
    let details = details_of(&new);
    let (payout, _) =
        payouts::create(&mut tx, payout_ctx(state, chain), new).await.map_err(|e| payout_refusal(e, signed_in))?;
    let resource_type = payout.kind.as_str();
    let action = format!("{resource_type}.create");
    audit::record(&mut tx, &signed_in.member, &action, Subject::new(resource_type, payout.id), &details)
        .await
        .map_err(store_failed)?;
    idempotency::complete(&mut tx, merchant_id, &once.key, 201, &payout.id.to_string()).await.map_err(store_failed)?;
    tx.commit().await.map_err(|e| store_failed(StoreError::from(e)))?;
    Ok(payout.id)
}

/// The password (or TOTP code) check of a confirmation, [`SignedIn::reauthenticate`]: `Ok` when
/// right, else the error for the password field and the status to answer.
async fn password_checked(state: &AppState, signed_in: &SignedIn, form: &Form) -> Result<(), (StatusCode, String)> {
    if form.raw("password").is_empty() {
        return Err((StatusCode::BAD_REQUEST, "enter your password to confirm".into()));
    }
    match signed_in.reauthenticate(state, form).await {
        Ok(()) => Ok(()),
        // The shared message ("the password is not correct", or "the password or the code is not
        // correct" for a member with TOTP on), saying that nothing was created.
        Err(ReauthError::Field { status: StatusCode::UNAUTHORIZED, message }) => {
            Err((StatusCode::UNAUTHORIZED, format!("{message}; nothing was created")))
        }
        Err(ReauthError::Field { status, message }) => Err((status, message)),
        Err(ReauthError::Page(_)) => {
            Err((StatusCode::INTERNAL_SERVER_ERROR, "the password could not be checked; try again".into()))
        }
    }
}

// === list and detail ===

/// `GET /dashboard/payouts`.
pub async fn list(State(state): State<AppState>, signed_in: SignedIn, RawQuery(query): RawQuery) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let form = Form::parse(&Bytes::from(query.unwrap_or_default()));
    let cursor = form.text("starting_after");
    let starting_after = if cursor.is_empty() {
        None
    } else {
        match cursor.parse::<Uuid>() {
            Ok(id) => Some(id),
            Err(_) => return not_found(Some(signed_in.chrome("payouts")), "page"),
        }
    };
    let outcome = async {
        let mut conn = state.store.conn().await?;
        let found =
            store::payouts::list(&mut conn, signed_in.merchant.id, None, None, starting_after, PAGE + 1).await?;
        let more = found.len() > PAGE as usize;
        let mut rows = Vec::new();
        for payout in found.iter().take(PAGE as usize) {
            rows.push(PayoutRow::build(&state, &mut conn, payout).await?);
        }
        Ok::<_, ApiError>((rows, more))
    }
    .await;
    let (payouts, more) = match outcome {
        Ok(found) => found,
        Err(error) => return internal(error),
    };
    let next = if more { payouts.last().map(|p| p.id) } else { None };
    render(
        StatusCode::OK,
        &ListPage {
            chrome: Some(signed_in.chrome("payouts")),
            payouts,
            may_move_money: signed_in.member.role.may(Action::MoveMoney),
            next,
        },
    )
}

/// `GET /dashboard/payouts/{id}`.
pub async fn detail(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    if let Err(refused) = signed_in.require(Action::Read) {
        return *refused;
    }
    let Ok(id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("payouts")), "payout") };
    let outcome = async {
        let mut conn = state.store.conn().await?;
        let Some(payout) = store::payouts::get(&mut conn, signed_in.merchant.id, id).await? else {
            return Ok(None);
        };
        let row = PayoutRow::build(&state, &mut conn, &payout).await?;
        let events = store::payouts::events_of(&mut conn, signed_in.merchant.id, id).await?;
        Ok::<_, ApiError>(Some((payout, row, events)))
    }
    .await;
    let (payout, row, events) = match outcome {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(Some(signed_in.chrome("payouts")), "payout"),
        Err(error) => return internal(error),
    };
    render(
        StatusCode::OK,
        &DetailPage {
            chrome: Some(signed_in.chrome("payouts")),
            csrf: signed_in.session.csrf_token.clone(),
            payout: row,
            events: events.into_iter().map(|e| (e.event_type, when(e.created_at))).collect(),
            cancellable: payout.status == PayoutStatus::Pending && signed_in.member.role.may(Action::MoveMoney),
        },
    )
}

/// `POST /dashboard/payouts/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refused) = signed_in.form_for(&body, Action::MoveMoney) {
        return *refused;
    }
    let Ok(id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("payouts")), "payout") };
    let outcome = async {
        let mut tx = state.store.begin().await?;
        let found = store::payouts::get(&mut tx, signed_in.merchant.id, id).await?.ok_or(PayoutError::NotFound)?;
        let chain = state.config.chains.iter().find(|c| c.chain_id == found.chain_id).ok_or_else(|| {
            StoreError::Corrupt(format!("payout {id}: chain {} is no longer configured", found.chain_id))
        })?;
        let (payout, _) = payouts::cancel(&mut tx, payout_ctx(&state, chain), signed_in.merchant.id, id).await?;
        let resource_type = payout.kind.as_str();
        let details = serde_json::json!({ "status": payout.status.as_str() });
        let action = format!("{resource_type}.cancel");
        audit::record(&mut tx, &signed_in.member, &action, Subject::new(resource_type, id), &details).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok::<_, PayoutError>(())
    }
    .await;
    let back = format!("/dashboard/payouts/{id}");
    match outcome {
        Ok(()) => secured(Redirect::to(&back).into_response()),
        Err(PayoutError::NotFound) => not_found(Some(signed_in.chrome("payouts")), "payout"),
        Err(PayoutError::NotCancellable(reason)) => message(
            StatusCode::CONFLICT,
            Some(signed_in.chrome("payouts")),
            "Not cancelled",
            &reason,
            (&back, "Back to the payout"),
        ),
        Err(error) => internal(error),
    }
}

// === create a payout ===

/// `GET /dashboard/payouts/new`.
pub async fn new_form(State(state): State<AppState>, signed_in: SignedIn) -> Response {
    if let Err(refused) = signed_in.require(Action::MoveMoney) {
        return *refused;
    }
    let fields = Fields { chain: state.config.settings.chains.default_chain.clone(), ..Fields::default() };
    render(StatusCode::OK, &new_payout_page(&state, &signed_in, fields, Errors::default()))
}

/// The form's payout checked and previewed, or the answer that refuses it.
async fn checked_payout<'a>(
    state: &'a AppState,
    signed_in: &SignedIn,
    fields: &Fields,
) -> Result<Checked<'a>, Refusal> {
    let (chain, new) = validate_payout(state, signed_in.merchant.id, None, fields.payout(), |_| Ok(()))
        .map_err(|e| refusal(e, || signed_in.chrome("payouts")))?;
    let mut conn = state.store.conn().await.map_err(|e| Refusal::page(internal(e)))?;
    let preview =
        payouts::preview(&mut conn, payout_ctx(state, chain), &new).await.map_err(|e| payout_refusal(e, signed_in))?;
    Ok(Checked { chain, new, preview })
}

fn payout_form_refused(state: &AppState, signed_in: &SignedIn, fields: Fields, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Form(status, errors) => render(status, &new_payout_page(state, signed_in, fields, *errors)),
        Refusal::Page(response) => *response,
    }
}

const PAYOUT_TARGETS: (&str, &str) = ("/dashboard/payouts", "/dashboard/payouts/new");

/// `POST /dashboard/payouts/new`: the form checked, then its confirmation.
pub async fn review(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::MoveMoney) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let fields = Fields::of(&form);
    match checked_payout(&state, &signed_in, &fields).await {
        Ok(checked) => render(
            StatusCode::OK,
            &confirm_page(
                &signed_in,
                &checked,
                &fields,
                (PAYOUT_TARGETS.0.into(), PAYOUT_TARGETS.1.into()),
                Uuid::new_v4().to_string(),
                Errors::default(),
            ),
        ),
        Err(refusal) => payout_form_refused(&state, &signed_in, fields, refusal),
    }
}

/// `POST /dashboard/payouts`: the confirmation with the password re-entered: creates the payout.
pub async fn create(State(state): State<AppState>, signed_in: SignedIn, body: Bytes) -> Response {
    let form = match signed_in.form_for(&body, Action::MoveMoney) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let fields = Fields::of(&form);
    let Ok(key) = form.text("idempotency_key").parse::<Uuid>() else {
        let errors = Errors { form: Some("this form is incomplete; start again".into()), ..Errors::default() };
        return render(StatusCode::BAD_REQUEST, &new_payout_page(&state, &signed_in, fields, errors));
    };
    let once = Once::new(key, PayoutKind::Payout, None, &fields);
    match once.earlier(&state, signed_in.merchant.id).await {
        Ok(Some(id)) => return secured(Redirect::to(&format!("/dashboard/payouts/{id}")).into_response()),
        Ok(None) => {}
        Err(refusal) => return payout_form_refused(&state, &signed_in, fields, refusal),
    }
    let checked = match checked_payout(&state, &signed_in, &fields).await {
        Ok(checked) => checked,
        Err(refusal) => return payout_form_refused(&state, &signed_in, fields, refusal),
    };
    if let Err((status, error)) = password_checked(&state, &signed_in, &form).await {
        let errors = Errors { password: Some(error), ..Errors::default() };
        let targets = (PAYOUT_TARGETS.0.into(), PAYOUT_TARGETS.1.into());
        return render(status, &confirm_page(&signed_in, &checked, &fields, targets, key.to_string(), errors));
    }
    match create_once(&state, &signed_in, checked.chain, checked.new, &once).await {
        Ok(id) => secured(Redirect::to(&format!("/dashboard/payouts/{id}")).into_response()),
        Err(refusal) => payout_form_refused(&state, &signed_in, fields, refusal),
    }
}

// === refund an invoice ===

/// Merchant's invoice `id` as the refund form shows it, or the 404.
async fn refund_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
    fields: Fields,
    errors: Errors,
) -> Result<RefundPage, Response> {
    let chrome = || signed_in.chrome("payouts");
    let Ok(id) = id.parse::<Uuid>() else { return Err(not_found(Some(chrome()), "invoice")) };
    let invoice = {
        let mut conn = state.store.conn().await.map_err(internal)?;
        invoices::get(&mut conn, signed_in.merchant.id, id).await.map_err(internal)?
    };
    let Some(invoice) = invoice else { return Err(not_found(Some(chrome()), "invoice")) };
    let option = |chain: &str, asset: &str, decimals: u8, paid: BaseUnits| {
        let value = format!("{chain}/{asset}");
        let chosen = fields.chain == chain && fields.asset.eq_ignore_ascii_case(asset);
        (value, format!("{asset} on {chain} ({} {asset} paid)", paid.to_display(decimals)), chosen)
    };
    let mut options = if invoice.options.is_empty() {
        vec![option(&invoice.chain, &invoice.asset, invoice.decimals, invoice.amount_paid_base_units)]
    } else {
        invoice.options.iter().map(|o| option(&o.chain, &o.asset, o.decimals, o.amount_paid_base_units)).collect()
    };
    if let [only] = options.as_mut_slice() {
        only.2 = true;
    }
    Ok(RefundPage {
        chrome: Some(chrome()),
        csrf: signed_in.session.csrf_token.clone(),
        invoice_id: invoice.id,
        invoice_status: invoice.status.to_string(),
        options,
        fields,
        errors,
    })
}

/// The refund form's fields: its `option` (`chain/asset`) split into chain and asset.
fn refund_fields(form: &Form) -> Fields {
    let mut fields = Fields::of(form);
    if let Some((chain, asset)) = form.text("option").split_once('/') {
        fields.chain = chain.to_owned();
        fields.asset = asset.to_owned();
    }
    fields
}

/// `GET /dashboard/invoices/{id}/refund`.
pub async fn refund_form(State(state): State<AppState>, signed_in: SignedIn, Path(id): Path<String>) -> Response {
    if let Err(refused) = signed_in.require(Action::MoveMoney) {
        return *refused;
    }
    match refund_page(&state, &signed_in, &id, Fields::default(), Errors::default()).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(response) => response,
    }
}

async fn refund_form_refused(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
    fields: Fields,
    refusal: Refusal,
) -> Response {
    match refusal {
        Refusal::Form(status, errors) => match refund_page(state, signed_in, id, fields, *errors).await {
            Ok(page) => render(status, &page),
            Err(response) => response,
        },
        Refusal::Page(response) => *response,
    }
}

/// The form's refund checked and previewed, or the answer that refuses it.
async fn checked_refund<'a>(
    state: &'a AppState,
    signed_in: &SignedIn,
    invoice_id: Uuid,
    fields: &Fields,
) -> Result<Checked<'a>, Refusal> {
    let (chain, new) = validate_refund(state, signed_in.merchant.id, invoice_id, fields.refund(), |_| Ok(()))
        .await
        .map_err(|e| refusal(e, || signed_in.chrome("payouts")))?;
    let mut conn = state.store.conn().await.map_err(|e| Refusal::page(internal(e)))?;
    let preview =
        payouts::preview(&mut conn, payout_ctx(state, chain), &new).await.map_err(|e| payout_refusal(e, signed_in))?;
    Ok(Checked { chain, new, preview })
}

fn refund_targets(invoice_id: Uuid) -> (String, String) {
    (format!("/dashboard/invoices/{invoice_id}/refund/confirm"), format!("/dashboard/invoices/{invoice_id}/refund"))
}

/// `POST /dashboard/invoices/{id}/refund`: the form checked, then its confirmation.
pub async fn refund_review(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = match signed_in.form_for(&body, Action::MoveMoney) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let fields = refund_fields(&form);
    let Ok(invoice_id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("payouts")), "invoice") };
    match checked_refund(&state, &signed_in, invoice_id, &fields).await {
        Ok(checked) => render(
            StatusCode::OK,
            &confirm_page(
                &signed_in,
                &checked,
                &fields,
                refund_targets(invoice_id),
                Uuid::new_v4().to_string(),
                Errors::default(),
            ),
        ),
        Err(refusal) => refund_form_refused(&state, &signed_in, &id, fields, refusal).await,
    }
}

/// `POST /dashboard/invoices/{id}/refund/confirm`: the confirmation with the password re-entered.
pub async fn refund_create(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let form = match signed_in.form_for(&body, Action::MoveMoney) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    // The confirmation sends the fields themselves (not `option`).
    let fields = Fields::of(&form);
    let Ok(invoice_id) = id.parse::<Uuid>() else { return not_found(Some(signed_in.chrome("payouts")), "invoice") };
    let Ok(key) = form.text("idempotency_key").parse::<Uuid>() else {
        let errors = Errors { form: Some("this form is incomplete; start again".into()), ..Errors::default() };
        return refund_form_refused(&state, &signed_in, &id, fields, Refusal::form(StatusCode::BAD_REQUEST, errors))
            .await;
    };
    let once = Once::new(key, PayoutKind::Refund, Some(invoice_id), &fields);
    match once.earlier(&state, signed_in.merchant.id).await {
        Ok(Some(id)) => return secured(Redirect::to(&format!("/dashboard/payouts/{id}")).into_response()),
        Ok(None) => {}
        Err(refusal) => return refund_form_refused(&state, &signed_in, &id, fields, refusal).await,
    }
    let checked = match checked_refund(&state, &signed_in, invoice_id, &fields).await {
        Ok(checked) => checked,
        Err(refusal) => return refund_form_refused(&state, &signed_in, &id, fields, refusal).await,
    };
    if let Err((status, error)) = password_checked(&state, &signed_in, &form).await {
        let errors = Errors { password: Some(error), ..Errors::default() };
        let targets = refund_targets(invoice_id);
        return render(status, &confirm_page(&signed_in, &checked, &fields, targets, key.to_string(), errors));
    }
    match create_once(&state, &signed_in, checked.chain, checked.new, &once).await {
        Ok(id) => secured(Redirect::to(&format!("/dashboard/payouts/{id}")).into_response()),
        Err(refusal) => refund_form_refused(&state, &signed_in, &id, fields, refusal).await,
    }
}
