//! Invoicing: the one place an invoice is made. Every route that creates one (whichever API
//! shape it speaks) parses its own request into an [`InvoiceRequest`] and calls [`create`],
//! which validates it against the server's and the merchant's rules, prices it, applies the
//! merchant's fee schedule, claims a deposit address and writes the invoice with its
//! `invoice.created` event, in the caller's transaction. It returns a complete invoice or a
//! typed [`InvoicingError`], never a half-built one. [`create_many`] makes several in one
//! transaction by the same rules (the API's group commit).
//!
//! What is the transport's and what is the core's: field names, types, text limits and URL
//! rules belong to each API shape (they differ between the reference docs); the amount bounds,
//! currencies, chains and assets, expiry bounds, the price, the fee and the address are the
//! product's, and are decided here.
//!
//! [`cancel`] ends a pending, unpaid invoice at the merchant's request (the API's and the
//! dashboard's one rule for it).
//!
//! [`mark`] is the merchant's manual resolution of an invoice (BTCPay's "mark as settled / mark
//! invalid"): a status and a recorded reason, never money (see its doc for the rules).

use std::collections::{HashMap, HashSet};

use alloy::primitives::Address;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::api_key::{KeyMode, KeyModeMismatch};
use crate::config::{AssetRef, ChainConfig, Config};
use crate::deposit_address::AddressPurpose;
use crate::fees::FeeSchedule;
use crate::invoice::{
    Invoice, InvoiceDetails, InvoiceMark, InvoiceResource, InvoiceStatus, MAX_PAYMENT_OPTIONS, MarkStatus,
    PaymentOption, SessionSigner,
};
use crate::invoice_views::InvoiceView;
use crate::merchant::Merchant;
use crate::money::BaseUnits;
use crate::outbox::{self, EventType};
use crate::pricing::{Pricer, PricingError};
use crate::store::deposit_addresses;
use crate::store::merchants;
use crate::store::{StoreError, Tx, invoices};
use crate::time::now_ms;
use crate::wallet::HdWallet;

/// What invoicing needs besides the transaction.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub config: &'a Config,
    pub pricer: &'a Pricer,
    pub wallet: &'a HdWallet,
    pub sessions: &'a SessionSigner,
}

/// A request for an invoice, parsed by the transport (its text fields already checked against
/// that API shape's limits).
#[derive(Debug, Clone, Default)]
pub struct InvoiceRequest {
    /// The price, in `currency` (major units, exact).
    pub amount: Decimal,
    /// An ISO 4217 code or an accepted asset's symbol; default USD.
    pub currency: Option<String>,
    /// Default: the server's default chain and asset.
    pub chain: Option<String>,
    pub asset: Option<String>,
    /// Lifetime in milliseconds; default `invoices.default_expires_in_ms`.
    pub expires_in_ms: Option<u64>,
    /// Pass-through: the merchant's own address the payment is forwarded to.
    pub receiver_override_address: Option<Address>,
    pub external_id: Option<String>,
    pub details: InvoiceDetails,
    /// The API shape asking (its webhooks carry this view).
    pub view: InvoiceView,
    /// The mode of the API key asking: a test key creates only on testnets, a live key only on
    /// mainnets. `None` (no restriction) for the daemon's own creations, which no key asks for.
    pub key_mode: Option<KeyMode>,
    /// Several ways to pay (`payment_options`), the first the primary; `None`: the one way that
    /// `chain` and `asset` (or the defaults) name. One option is the same as naming it as
    /// `chain` and `asset`: an invoice payable one way.
    pub payment_options: Option<Vec<OptionRequest>>,
}

/// One entry of `payment_options`: a chain (default: as for the invoice's `chain`) and an asset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionRequest {
    pub chain: Option<String>,
    pub asset: String,
}

/// Why an invoice was not made. Each names the request field at fault ([`InvoicingError::param`]),
/// except `Store`, which is ours.
#[derive(Debug, thiserror::Error)]
pub enum InvoicingError {
    #[error("chain {0:?} is not enabled on this server")]
    UnsupportedChain(String),
    #[error("asset {asset:?} is not accepted on {chain} (accepted: {accepted})")]
    UnsupportedAsset { asset: String, chain: String, accepted: String },
    #[error("currency {0:?} is not supported (an ISO 4217 code with a configured rate, or an accepted asset)")]
    UnsupportedCurrency(String),
    /// Outside the merchant's bounds, too small to pay, or not covering the fee.
    #[error("{0}")]
    AmountOutOfRange(String),
    #[error("{0}")]
    InvalidExpiry(String),
    /// The rate for the currency is not available right now (a price feed behind).
    #[error("{0}")]
    RateUnavailable(String),
    #[error("an invoice with this external_id already exists")]
    ExternalIdTaken,
    /// The key's mode does not match the chain (a test key on a mainnet, a live key on a
    /// testnet); `chain_named` when the request named the chain, not the server's default.
    #[error("{mismatch}")]
    KeyModeMismatch { mismatch: KeyModeMismatch, chain_named: bool },
    /// `payment_options` as a whole is wrong (empty, too long, a duplicate, beside `chain` or
    /// `asset`, on a pass-through invoice); `param` names the field, `code` the API's error code.
    #[error("{message}")]
    InvalidPaymentOptions { param: String, code: &'static str, message: String },
    /// Entry `index` of `payment_options` is wrong: `error` says how (its `param` is the entry's
    /// `chain` or `asset`).
    #[error("payment_options[{index}]: {error}")]
    PaymentOption { index: usize, error: Box<InvoicingError> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl InvoicingError {
    /// The request field at fault (in [`InvoiceRequest`]'s terms).
    pub fn param(&self) -> Option<String> {
        match self {
            InvoicingError::InvalidPaymentOptions { param, .. } => Some(param.clone()),
            InvoicingError::PaymentOption { index, error } => Some(match error.param() {
                Some(field) => format!("payment_options[{index}].{field}"),
                None => format!("payment_options[{index}]"),
            }),
            other => other.static_param().map(str::to_owned),
        }
    }

    /// The error of an entry of `payment_options` itself (the error when not about an entry).
    pub fn inner(&self) -> &InvoicingError {
        match self {
            InvoicingError::PaymentOption { error, .. } => error.inner(),
            other => other,
        }
    }

    fn static_param(&self) -> Option<&'static str> {
        match self {
            InvoicingError::UnsupportedChain(_) => Some("chain"),
            InvoicingError::UnsupportedAsset { .. } => Some("asset"),
            InvoicingError::UnsupportedCurrency(_) => Some("currency"),
            InvoicingError::AmountOutOfRange(_) => Some("amount"),
            InvoicingError::InvalidExpiry(_) => Some("expires_in"),
            InvoicingError::ExternalIdTaken => Some("external_id"),
            InvoicingError::KeyModeMismatch { chain_named: true, .. } => Some("chain"),
            InvoicingError::KeyModeMismatch { chain_named: false, .. } => None,
            InvoicingError::RateUnavailable(_) | InvoicingError::Store(_) => None,
            InvoicingError::InvalidPaymentOptions { .. } | InvoicingError::PaymentOption { .. } => None,
        }
    }
}

/// The chain and asset a request names, or the server's defaults. A request that names no chain
/// and comes with a key (`mode`) gets the default chain when it suits the key's mode (test keys:
/// testnets; live keys: mainnets), else the first enabled chain of the key's mode that accepts
/// the asset, so that a route with no `chain` field (seeds 003 and 004) serves live and test
/// keys alike on a server with both kinds of chain.
pub fn resolve_asset<'a>(
    config: &'a Config,
    chain: Option<&str>,
    asset: Option<&str>,
    mode: Option<KeyMode>,
) -> Result<(&'a ChainConfig, AssetRef<'a>), InvoicingError> {
    let defaults = &config.settings.chains;
    let symbol = asset.unwrap_or(&defaults.default_asset);
    let default_chain = || {
        let default = config.chain(&defaults.default_chain);
        let suits = |c: &ChainConfig| mode.is_none_or(|m| m.check(c).is_ok());
        match default {
            Some(chain) if suits(chain) => defaults.default_chain.as_str(),
            _ => config
                .chains
                .iter()
                .find(|c| suits(c) && c.payable_asset(symbol).is_some())
                .map_or(defaults.default_chain.as_str(), |c| c.name.as_str()),
        }
    };
    let chain_name = chain.unwrap_or_else(default_chain);
    let chain = config.chain(chain_name).ok_or_else(|| InvoicingError::UnsupportedChain(chain_name.to_owned()))?;
    // A native coin whose deposits the watcher does not look for (`native_deposits = false`)
    // cannot be paid in.
    let asset = chain.payable_asset(symbol).ok_or_else(|| InvoicingError::UnsupportedAsset {
        asset: symbol.to_owned(),
        chain: chain.name.clone(),
        accepted: chain.payable_symbols().join(", "),
    })?;
    Ok((chain, asset))
}

/// The price bounds for `merchant`'s invoices, in the invoice currency: its own, else the server's.
pub fn amount_bounds(config: &Config, merchant: &Merchant) -> (Decimal, Decimal) {
    let settings = &config.settings.invoices;
    (
        merchant.min_invoice_amount.unwrap_or(settings.min_amount),
        merchant.max_invoice_amount.unwrap_or(settings.max_amount),
    )
}

/// The chain and asset of every payment option `request` asks for (the primary first), checked:
/// each enabled and accepted, of the key's mode, none twice, at most [`MAX_PAYMENT_OPTIONS`].
/// A request without `payment_options` (or with one) asks for one.
fn resolve_options<'a>(
    config: &'a Config,
    request: &mut InvoiceRequest,
) -> Result<Vec<(&'a ChainConfig, AssetRef<'a>)>, InvoicingError> {
    let invalid = |param: &str, code: &'static str, message: &str| InvoicingError::InvalidPaymentOptions {
        param: param.to_owned(),
        code,
        message: message.to_owned(),
    };
    if request.payment_options.is_none()
        && request.chain.is_none()
        && request.asset.is_none()
        && request.receiver_override_address.is_none()
    {
        // The server's default options, those of the key's mode.
        let suits = |name: &Option<String>| {
            name.as_deref().is_none_or(|name| {
                config.chain(name).is_some_and(|chain| request.key_mode.is_none_or(|m| m.check(chain).is_ok()))
            })
        };
        let defaults: Vec<OptionRequest> = config
            .settings
            .invoices
            .default_payment_options
            .iter()
            .filter(|o| suits(&o.chain))
            .map(|o| OptionRequest { chain: o.chain.clone(), asset: o.asset.clone() })
            .collect();
        if !defaults.is_empty() {
            request.payment_options = Some(defaults);
        }
    }
    let Some(options) = request.payment_options.take() else {
        let (chain, asset) =
            resolve_asset(config, request.chain.as_deref(), request.asset.as_deref(), request.key_mode)?;
        if let Some(mode) = request.key_mode {
            mode.check(chain).map_err(|mismatch| InvoicingError::KeyModeMismatch {
                mismatch,
                chain_named: request.chain.is_some(),
            })?;
        }
        return Ok(vec![(chain, asset)]);
    };
    for (field, given) in [("chain", request.chain.is_some()), ("asset", request.asset.is_some())] {
        if given {
            return Err(invalid(
                field,
                "invalid_parameter",
                &format!("give either {field} (and asset/chain) or payment_options, not both"),
            ));
        }
    }
    if options.is_empty() || options.len() > MAX_PAYMENT_OPTIONS {
        return Err(invalid(
            "payment_options",
            "invalid_parameter",
            &format!("payment_options takes 1 to {MAX_PAYMENT_OPTIONS} entries"),
        ));
    }
    if request.receiver_override_address.is_some() && options.len() > 1 {
        return Err(invalid(
            "payment_options",
            "invalid_parameter",
            "a pass-through invoice (receiver_override) is paid one way: give one payment option, or none",
        ));
    }
    let mut resolved: Vec<(&ChainConfig, AssetRef<'_>)> = Vec::with_capacity(options.len());
    for (index, option) in options.iter().enumerate() {
        let wrap = |error| InvoicingError::PaymentOption { index, error: Box::new(error) };
        let (chain, asset) =
            resolve_asset(config, option.chain.as_deref(), Some(&option.asset), request.key_mode).map_err(wrap)?;
        if let Some(mode) = request.key_mode {
            mode.check(chain).map_err(|mismatch| {
                wrap(InvoicingError::KeyModeMismatch { mismatch, chain_named: option.chain.is_some() })
            })?;
        }
        if resolved.iter().any(|(c, a)| c.chain_id == chain.chain_id && a.symbol == asset.symbol) {
            return Err(invalid(
                &format!("payment_options[{index}]"),
                "duplicate_payment_option",
                &format!("{} on {} is offered twice", asset.symbol, chain.name),
            ));
        }
        resolved.push((chain, asset));
    }
    Ok(resolved)
}

/// Validates and prices `request` for `merchant`: everything that needs no database.
fn price(ctx: Context<'_>, merchant: &Merchant, mut request: InvoiceRequest) -> Result<Invoice, InvoicingError> {
    let settings = &ctx.config.settings;
    let resolved = resolve_options(ctx.config, &mut request)?;
    let (chain, asset) = resolved[0];
    let currency = request.currency.map(|c| c.trim().to_ascii_uppercase()).unwrap_or_else(|| "USD".into());
    let is_iso = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !(is_iso || chain.asset(&currency).is_some()) || !ctx.pricer.knows(&currency) {
        return Err(InvoicingError::UnsupportedCurrency(currency));
    }
    let amount = request.amount;
    let (min, max) = amount_bounds(ctx.config, merchant);
    if amount < min || amount > max {
        return Err(InvoicingError::AmountOutOfRange(format!("amount must be between {min} and {max} {currency}")));
    }
    let quote_in = |asset: AssetRef<'_>| {
        let quote = ctx.pricer.quote(amount, &currency, asset).map_err(|e| match e {
            PricingError::RateUnavailable(_) => InvoicingError::RateUnavailable(e.to_string()),
            PricingError::UnknownCurrency(_) => InvoicingError::UnsupportedCurrency(currency.clone()),
            PricingError::Overflow | PricingError::Money(_) => InvoicingError::AmountOutOfRange(e.to_string()),
        })?;
        if quote.pay_amount.is_zero() {
            return Err(InvoicingError::AmountOutOfRange(format!("amount is too small to pay in {}", asset.symbol)));
        }
        Ok(quote)
    };
    let quote = quote_in(asset)?;
    // With several options, each is priced now, at the rate of now, and keeps that amount for the
    // invoice's life (the address and the fee are filled in by `create`).
    let mut options = Vec::new();
    if resolved.len() > 1 {
        for (index, (chain, asset)) in resolved.iter().enumerate() {
            let quote = if index == 0 { quote.clone() } else { quote_in(*asset)? };
            options.push(PaymentOption {
                chain: chain.name.clone(),
                chain_id: chain.chain_id,
                asset: asset.symbol.to_owned(),
                token_address: asset.token_address,
                decimals: asset.decimals,
                address: Default::default(),
                amount_base_units: quote.pay_amount,
                fee_base_units: BaseUnits::ZERO,
                fee_schedule: Default::default(),
                conversion_rate: quote.conversion_rate,
                amount_paid_base_units: BaseUnits::ZERO,
            });
        }
    }
    let expires_in = match request.expires_in_ms {
        None => settings.invoices.default_expires_in_ms,
        Some(ms) if (1..=settings.invoices.max_expires_in_ms).contains(&ms) => ms,
        Some(_) => {
            return Err(InvoicingError::InvalidExpiry(format!(
                "expires_in is milliseconds between 1 and {}",
                settings.invoices.max_expires_in_ms
            )));
        }
    };
    let now = now_ms();
    Ok(Invoice {
        id: Uuid::now_v7(),
        merchant_id: merchant.id,
        external_id: request.external_id,
        status: InvoiceStatus::Pending,
        payment_flags: Vec::new(),
        amount: amount.normalize(),
        currency,
        conversion_rate: quote.conversion_rate,
        chain: chain.name.clone(),
        chain_id: chain.chain_id,
        asset: asset.symbol.to_owned(),
        token_address: asset.token_address,
        decimals: asset.decimals,
        deposit_address_id: Uuid::nil(),
        address: Default::default(),
        amount_base_units: quote.pay_amount,
        fee_base_units: Default::default(),
        merchant_amount_base_units: quote.pay_amount,
        amount_paid_base_units: Default::default(),
        fee_schedule: Default::default(),
        details: request.details,
        receiver_override_address: request.receiver_override_address,
        static_address_id: None,
        view: request.view,
        mark: None,
        options,
        session_token: Invoice::new_session_token(),
        created_at: now,
        expires_at: now + expires_in as i64,
        finished_at: None,
        updated_at: now,
    })
}

/// Makes merchant `merchant`'s invoice for `request` in the caller's transaction (see the module
/// doc), and returns it with the resource `invoice.created` announced.
pub async fn create(
    tx: &mut Tx,
    ctx: Context<'_>,
    merchant: &Merchant,
    request: InvoiceRequest,
) -> Result<(Invoice, InvoiceResource), InvoicingError> {
    let made = create_many(tx, ctx, vec![(merchant, request)]).await.map_err(|e| match e {
        StoreError::Conflict("external_id") => InvoicingError::ExternalIdTaken,
        other => other.into(),
    })?;
    made.into_iter().next().ok_or_else(|| StoreError::Corrupt("an invoice was made without its result".into()))?
}

/// [`create`] for several requests made together, in the caller's one transaction (the API's
/// group commit): each is judged on its own and gets its invoice or its own error, and the
/// invoices, their addresses and their `invoice.created` events are written a statement per
/// many rows. An `external_id` the merchant already has is that request's
/// [`InvoicingError::ExternalIdTaken`]. `Err` is what fails them all: a store error, among them
/// `StoreError::Conflict("external_id")` when one is taken meanwhile or twice among them (the
/// caller rolls back and makes them one by one to learn whose).
pub async fn create_many(
    tx: &mut Tx,
    ctx: Context<'_>,
    requests: Vec<(&Merchant, InvoiceRequest)>,
) -> Result<Vec<Result<(Invoice, InvoiceResource), InvoicingError>>, StoreError> {
    let mut taken: HashSet<(Uuid, String)> = HashSet::new();
    let mut merchants_with_ids: Vec<Uuid> =
        requests.iter().filter(|(_, request)| request.external_id.is_some()).map(|(merchant, _)| merchant.id).collect();
    merchants_with_ids.sort();
    merchants_with_ids.dedup();
    for merchant_id in merchants_with_ids {
        let ids: Vec<&str> = requests
            .iter()
            .filter(|(merchant, _)| merchant.id == merchant_id)
            .filter_map(|(_, request)| request.external_id.as_deref())
            .collect();
        taken
            .extend(invoices::external_ids_taken(tx, merchant_id, &ids).await?.into_iter().map(|id| (merchant_id, id)));
    }
    let mut schedules = HashMap::new();
    let mut made: Vec<Result<Invoice, InvoicingError>> = Vec::with_capacity(requests.len());
    for (merchant, request) in requests {
        // (Judged after the request's own fields, as the insert judged it when it came last.)
        let external_id_taken =
            request.external_id.as_ref().is_some_and(|id| taken.contains(&(merchant.id, id.clone())));
        match charged(tx, ctx, merchant, request, &mut schedules).await {
            Err(InvoicingError::Store(error)) => return Err(error),
            Ok(_) if external_id_taken => made.push(Err(InvoicingError::ExternalIdTaken)),
            other => made.push(other),
        }
    }
    // The addresses are claimed last, just before the insert, so the counter row (locked until
    // commit on PostgreSQL, when the pool runs dry) is held as briefly as possible. One address
    // serves every option of an invoice.
    let wanted = made.iter().filter(|m| m.is_ok()).count();
    let mut addresses =
        deposit_addresses::allocate_many(tx, ctx.wallet, AddressPurpose::Invoice, wanted).await?.into_iter();
    for invoice in made.iter_mut().flatten() {
        let deposit =
            addresses.next().ok_or_else(|| StoreError::Corrupt("too few deposit addresses allocated".into()))?;
        invoice.deposit_address_id = deposit.id;
        invoice.address = deposit.address;
        for option in &mut invoice.options {
            option.address = deposit.address;
        }
    }
    let resources: Vec<InvoiceResource> = {
        let invoices: Vec<&Invoice> = made.iter().filter_map(|m| m.as_ref().ok()).collect();
        invoices::insert_many(tx, &invoices).await?;
        let public_url = &ctx.config.settings.api.public_url;
        let resources: Vec<InvoiceResource> = invoices
            .iter()
            .map(|invoice| InvoiceResource::build(invoice, Vec::new(), public_url, ctx.sessions))
            .collect();
        let announced: Vec<(&Invoice, &InvoiceResource)> = invoices.iter().copied().zip(&resources).collect();
        outbox::record_invoices(tx, EventType::InvoiceCreated, &announced).await?;
        resources
    };
    let mut resources = resources.into_iter();
    made.into_iter()
        .map(|made| match made {
            Ok(invoice) => resources
                .next()
                .map(|resource| Ok((invoice, resource)))
                .ok_or_else(|| StoreError::Corrupt("an invoice was made without its resource".into())),
            Err(error) => Ok(Err(error)),
        })
        .collect()
}

/// `request` priced and charged the merchant's fee schedule (for the invoice's asset, and each
/// option's own), without an address yet. `schedules` keeps the schedules read in this
/// transaction, by merchant, asset and decimals.
async fn charged(
    tx: &mut Tx,
    ctx: Context<'_>,
    merchant: &Merchant,
    request: InvoiceRequest,
    schedules: &mut HashMap<(Uuid, String, u8), FeeSchedule>,
) -> Result<Invoice, InvoicingError> {
    let mut invoice = price(ctx, merchant, request)?;
    let schedule = fee_schedule_of(tx, merchant, &invoice.asset, invoice.decimals, schedules).await?;
    invoice
        .apply_fee_schedule(schedule)
        .map_err(|e| InvoicingError::AmountOutOfRange(format!("the fee cannot be applied to this amount: {e}")))?;
    if invoice.merchant_amount_base_units.is_zero() {
        return Err(InvoicingError::AmountOutOfRange(format!(
            "amount does not cover the fee ({} {})",
            invoice.fee_base_units.to_display(invoice.decimals),
            invoice.asset
        )));
    }
    // Each option is charged by the merchant's schedule for its own asset.
    for index in 0..invoice.options.len() {
        let option = &invoice.options[index];
        let schedule = fee_schedule_of(tx, merchant, &option.asset, option.decimals, schedules).await?;
        let fee = schedule
            .fee_on(option.amount_base_units)
            .map_err(|e| InvoicingError::AmountOutOfRange(format!("the fee cannot be applied to this amount: {e}")))?;
        if fee >= option.amount_base_units {
            return Err(InvoicingError::PaymentOption {
                index,
                error: Box::new(InvoicingError::AmountOutOfRange(format!(
                    "amount does not cover the fee ({} {})",
                    fee.to_display(option.decimals),
                    option.asset
                ))),
            });
        }
        let option = &mut invoice.options[index];
        option.fee_schedule = schedule;
        option.fee_base_units = fee;
    }
    Ok(invoice)
}

/// Merchant `merchant`'s fee schedule for `asset`, read once per transaction (see [`charged`]).
async fn fee_schedule_of(
    tx: &mut Tx,
    merchant: &Merchant,
    asset: &str,
    decimals: u8,
    schedules: &mut HashMap<(Uuid, String, u8), FeeSchedule>,
) -> Result<FeeSchedule, StoreError> {
    let key = (merchant.id, asset.to_owned(), decimals);
    if let Some(schedule) = schedules.get(&key) {
        return Ok(*schedule);
    }
    let schedule = merchants::fee_schedule(tx, merchant, asset, decimals).await?;
    schedules.insert(key, schedule);
    Ok(schedule)
}

/// Why an invoice was not cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no such invoice")]
    NotFound,
    /// Not pending, or a payment was seen: why, for the merchant (the status it is in, or
    /// that a payment to it is waiting for confirmations).
    #[error("{0}")]
    NotCancellable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Cancels merchant `merchant_id`'s invoice `id` in the caller's transaction and announces it
/// (`invoice.cancelled`, carrying the resource with its payments, which is returned). Only a
/// `pending` invoice with nothing paid and no payment awaiting confirmations may be cancelled:
/// the store's compare-and-set (`invoices::cancel`) decides, so a payment detected concurrently
/// wins. The merchant API (`POST /api/v1/invoices/{id}/cancel`) and the dashboard call this.
pub async fn cancel(
    tx: &mut Tx,
    ctx: Context<'_>,
    merchant_id: Uuid,
    id: Uuid,
) -> Result<(Invoice, InvoiceResource), CancelError> {
    let before = invoices::get(tx, merchant_id, id).await?.ok_or(CancelError::NotFound)?;
    if !invoices::cancel(tx, merchant_id, id).await? {
        // Read again: a concurrent change may have moved it since `before`.
        let now = invoices::get(tx, merchant_id, id).await?.map_or(before.status, |i| i.status);
        return Err(CancelError::NotCancellable(if now == InvoiceStatus::Pending {
            "only a pending invoice with nothing paid can be cancelled; a payment to this one is waiting for \
             confirmations"
                .to_owned()
        } else {
            format!("only a pending invoice with nothing paid can be cancelled; this one is {now}")
        }));
    }
    let invoice = invoices::get(tx, merchant_id, id).await?.ok_or(CancelError::NotFound)?;
    let payments = invoices::payments(tx, &invoice).await?;
    let resource = InvoiceResource::build(&invoice, payments, &ctx.config.settings.api.public_url, ctx.sessions);
    outbox::record_invoice(tx, EventType::InvoiceCancelled, &invoice, &resource).await?;
    Ok((invoice, resource))
}

/// A merchant's mark, as the transport parsed it (the reason already checked for length).
#[derive(Debug, Clone)]
pub struct MarkRequest {
    pub status: MarkStatus,
    pub reason: String,
    /// The API key asking: its id and display prefix, recorded with the mark.
    pub by_key_id: Uuid,
    pub by: String,
}

/// Why an invoice was not marked.
#[derive(Debug, thiserror::Error)]
pub enum MarkError {
    #[error("no such invoice")]
    NotFound,
    /// The invoice's state does not allow the mark; the message says why and what to do.
    #[error("{0}")]
    NotMarkable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`mark`] did.
#[derive(Debug, Clone)]
pub struct Marked {
    pub invoice: Invoice,
    /// False when the invoice already carried this mark: nothing was written or announced.
    pub changed: bool,
}

/// How often [`mark`] decides again when a concurrent change (a deposit confirming, an expiry)
/// committed between its read and its write.
const MARK_ATTEMPTS: usize = 5;

/// Marks merchant `merchant_id`'s invoice `id` paid or invalid with a reason, in the caller's
/// transaction, and announces it (`invoice.marked_paid` / `invoice.marked_invalid`). The mark
/// moves no money: nothing is posted, the amount paid and the flags stay what the chain paid.
///
/// Rules:
/// - `pending`, `processing` and `expired` (with or without an underpayment) invoices may be
///   marked either way; `finished_at` is set if it was not;
/// - a marked invoice may be marked the other way (the merchant corrects a mark: the new mark
///   replaces the old and is announced); the same mark again changes nothing and announces
///   nothing (the first reason stays);
/// - a `paid` invoice that the chain paid (not marked) cannot be marked: paid again means
///   nothing, and marking invalid an invoice whose money was credited in full would show a
///   void order while the merchant holds its money; such an invoice is refunded instead
///   (`POST /api/v1/invoices/{id}/refunds`), which the ledger records;
/// - `cancelled`, `refunded` and `partially_refunded` invoices cannot be marked: they are
///   resolved already.
///
/// Concurrency: the write is a compare-and-set on the status, the amount paid and the mark
/// read (`invoices::set_mark`); a deposit confirming in between makes it decide again on the
/// fresh invoice, and crediting's own compare-and-set retries the other way round, so neither
/// change is lost. Payments that arrive after a mark are credited by `crediting` as to any
/// finished invoice: to the ledger exactly once, flagged, with the mark and its status kept
/// (a merchant's decision stands until the merchant changes it).
pub async fn mark(
    tx: &mut Tx,
    ctx: Context<'_>,
    merchant_id: Uuid,
    id: Uuid,
    request: MarkRequest,
) -> Result<Marked, MarkError> {
    for _ in 0..MARK_ATTEMPTS {
        let read = invoices::get(tx, merchant_id, id).await?.ok_or(MarkError::NotFound)?;
        if read.mark.as_ref().is_some_and(|m| m.status == request.status) {
            return Ok(Marked { invoice: read, changed: false });
        }
        markable(&read, request.status)?;
        let now = now_ms();
        let mut invoice = read.clone();
        invoice.status = request.status.invoice_status();
        invoice.finished_at = Some(read.finished_at.unwrap_or(now));
        invoice.mark = Some(InvoiceMark {
            status: request.status,
            reason: request.reason.clone(),
            marked_at: now,
            by_key_id: request.by_key_id,
            by: request.by.clone(),
        });
        if !invoices::set_mark(tx, &read, &invoice).await? {
            continue; // Changed since the read: decide again on what it is now.
        }
        let resource = InvoiceResource::build(&invoice, Vec::new(), &ctx.config.settings.api.public_url, ctx.sessions);
        let event = match request.status {
            MarkStatus::Paid => EventType::InvoiceMarkedPaid,
            MarkStatus::Invalid => EventType::InvoiceMarkedInvalid,
        };
        outbox::record_invoice(tx, event, &invoice, &resource).await?;
        return Ok(Marked { invoice, changed: true });
    }
    Err(StoreError::Conflict("invoice changed concurrently; retry").into())
}

/// Whether `invoice` may take `status` (see [`mark`]'s rules).
fn markable(invoice: &Invoice, status: MarkStatus) -> Result<(), MarkError> {
    // Whatever its status or mark says, money that covers the invoice was credited: voiding it
    // would leave the merchant holding a payment for an order it calls invalid.
    let refund_instead = || {
        MarkError::NotMarkable(
            "the invoice was paid and its payments credited; refund it (POST /api/v1/invoices/{id}/refunds) \
             instead of marking it invalid"
                .to_owned(),
        )
    };
    if status == MarkStatus::Invalid && invoice.amount_due().is_zero() {
        return Err(refund_instead());
    }
    match invoice.status {
        InvoiceStatus::Pending | InvoiceStatus::Processing | InvoiceStatus::Expired => Ok(()),
        // Only a mark makes these (an `invalid` invoice always carries one).
        InvoiceStatus::Paid | InvoiceStatus::Invalid if invoice.mark.is_some() => Ok(()),
        InvoiceStatus::Paid => Err(match status {
            MarkStatus::Paid => {
                MarkError::NotMarkable("the invoice is already paid (its payments were credited)".into())
            }
            MarkStatus::Invalid => refund_instead(),
        }),
        other => Err(MarkError::NotMarkable(format!(
            "only a pending, processing or expired invoice (or one marked before) can be marked; this one is {other}"
        ))),
    }
}

/// A chain whose `native_deposits` is off while payments in its native coin may still arrive
/// (open invoices, active static addresses) would never see them: refused, naming the chain and
/// the counts, until they are closed (or native deposits are on again).
pub async fn check_native_deposits_off(conn: &mut crate::store::Conn, config: &Config) -> Result<(), String> {
    let mut problems = Vec::new();
    for chain in config.chains.iter().filter(|c| !c.native_deposits_on()) {
        let (invoices, statics) = invoices::open_in_asset(conn, chain.chain_id, &chain.native.symbol)
            .await
            .map_err(|e| format!("cannot check chain {}'s open {} payments: {e}", chain.name, chain.native.symbol))?;
        if invoices > 0 || statics > 0 {
            problems.push(format!(
                "chain {}: native_deposits = false, but {invoices} open invoice(s) and {statics} active static \
                 address(es) take {}: the watcher would never see their payments; close or disable them first, or \
                 keep native_deposits on",
                chain.name, chain.native.symbol
            ));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice(status: InvoiceStatus, marked: Option<MarkStatus>) -> Invoice {
        Invoice {
            id: Uuid::now_v7(),
            merchant_id: Uuid::now_v7(),
            external_id: None,
            status,
            payment_flags: Vec::new(),
            amount: Decimal::TEN,
            currency: "USD".into(),
            conversion_rate: Decimal::ONE,
            chain: "anvil".into(),
            chain_id: 31337,
            asset: "USDC".into(),
            token_address: None,
            decimals: 6,
            deposit_address_id: Uuid::now_v7(),
            address: Default::default(),
            amount_base_units: 10_000_000u64.into(),
            fee_base_units: Default::default(),
            merchant_amount_base_units: 10_000_000u64.into(),
            amount_paid_base_units: Default::default(),
            fee_schedule: Default::default(),
            details: InvoiceDetails::default(),
            receiver_override_address: None,
            static_address_id: None,
            view: InvoiceView::Invoice,
            mark: marked.map(|status| InvoiceMark {
                status,
                reason: "r".into(),
                marked_at: 0,
                by_key_id: Uuid::nil(),
                by: "dk_test_00000000".into(),
            }),
            options: Vec::new(),
            session_token: String::new(),
            created_at: 0,
            expires_at: 0,
            finished_at: None,
            updated_at: 0,
        }
    }

    #[test]
    fn what_may_be_marked() {
        use InvoiceStatus::*;
        for status in [Pending, Processing, Expired] {
            for to in MarkStatus::ALL {
                assert!(markable(&invoice(status, None), to).is_ok(), "{status} -> {to}");
            }
        }
        // A marked invoice may be marked the other way (the same way is answered before this).
        assert!(markable(&invoice(Paid, Some(MarkStatus::Paid)), MarkStatus::Invalid).is_ok());
        assert!(markable(&invoice(Invalid, Some(MarkStatus::Invalid)), MarkStatus::Paid).is_ok());
        // Paid by the chain, or already resolved otherwise: never.
        for status in [Paid, Cancelled, Refunded, PartiallyRefunded] {
            for to in MarkStatus::ALL {
                assert!(
                    matches!(markable(&invoice(status, None), to), Err(MarkError::NotMarkable(_))),
                    "{status} -> {to}"
                );
            }
        }
        // Marked paid, then paid in full by the chain: never invalid.
        let mut covered = invoice(Paid, Some(MarkStatus::Paid));
        covered.amount_paid_base_units = covered.amount_base_units;
        assert!(matches!(markable(&covered, MarkStatus::Invalid), Err(MarkError::NotMarkable(_))));
        // A refunded invoice stays unmarkable even if it was marked before it was refunded.
        assert!(markable(&invoice(Refunded, Some(MarkStatus::Paid)), MarkStatus::Invalid).is_err());
    }
}
