//! Invoices: the domain model and the merchant-facing resource.
//!
//! The resource ([`InvoiceResource`]) is built here, not in the API crate, because webhooks
//! carry "the full resource as the API returns it" and the watcher emits them too.

use std::fmt;

use alloy::primitives::Address;
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

use crate::fees::FeeSchedule;
use crate::money::BaseUnits;
use crate::text_enum::text_enum;

/// Where an invoice is in its life (the BTCPay model, with seed 002's refund states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    /// Awaiting payment.
    Pending,
    /// A payment was seen and awaits confirmations.
    Processing,
    /// Confirmed payments cover the amount (within the merchant's tolerance).
    Paid,
    /// Not (fully) paid before `expires_at`. Late payments are still credited.
    Expired,
    /// Cancelled by the merchant before anything was paid.
    Cancelled,
    Refunded,
    PartiallyRefunded,
    /// Marked invalid by the merchant (`POST /api/v1/invoices/{id}/mark`): the merchant no longer
    /// wants it paid. Payments that still arrive are credited and flagged, never lost.
    Invalid,
}

text_enum! {
    InvoiceStatus as "status" {
        Pending = "pending", Processing = "processing", Paid = "paid", Expired = "expired", Cancelled = "cancelled",
        Refunded = "refunded", PartiallyRefunded = "partially_refunded", Invalid = "invalid",
    }
}

impl InvoiceStatus {
    /// Whether the invoice is finished (no further status change from payments except flags).
    pub fn is_final(self) -> bool {
        !matches!(self, InvoiceStatus::Pending | InvoiceStatus::Processing)
    }
}

/// The API shape that made an invoice, and so the view its webhooks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvoiceView {
    /// Seed 001: `POST /api/v1/invoices` (and every invoice depositd makes itself, such as a
    /// static address's).
    #[default]
    Invoice,
    /// Seed 003: `POST /api/v1/create-invoice`.
    CreateInvoice,
    /// Seed 004: `POST /api/v1/hosted-payments`.
    HostedPayment,
}

text_enum! {
    InvoiceView as "invoice view" {
        Invoice = "invoice", CreateInvoice = "create_invoice", HostedPayment = "hosted_payment",
    }
}

/// Facts about how an invoice was paid, beside its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentFlag {
    Underpaid,
    Overpaid,
    PaidLate,
}

text_enum! { PaymentFlag as "payment flag" { Underpaid = "underpaid", Overpaid = "overpaid", PaidLate = "paid_late" } }

/// What a merchant may mark an invoice (BTCPay's "mark as settled / mark invalid").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarkStatus {
    Paid,
    Invalid,
}

text_enum! { MarkStatus as "mark status" { Paid = "paid", Invalid = "invalid" } }

impl MarkStatus {
    /// The invoice status the mark gives.
    pub fn invoice_status(self) -> InvoiceStatus {
        match self {
            MarkStatus::Paid => InvoiceStatus::Paid,
            MarkStatus::Invalid => InvoiceStatus::Invalid,
        }
    }
}

/// A merchant's manual resolution of an invoice: no money moves with it (the ledger is
/// untouched); it records who decided what, why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceMark {
    pub status: MarkStatus,
    pub reason: String,
    /// Epoch milliseconds.
    pub marked_at: i64,
    /// The API key that marked it, and its display prefix (kept if the key is revoked).
    pub by_key_id: Uuid,
    pub by: String,
}

/// `marked` in the invoice resource.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MarkView {
    /// What the merchant marked it: `paid` or `invalid`.
    pub status: MarkStatus,
    /// The merchant's reason, as given.
    pub reason: String,
    /// Epoch seconds.
    pub marked_at: i64,
    /// The display prefix of the API key that marked it (`dk_live_1a2b3c4d`).
    pub by: String,
    /// The id of that API key.
    pub api_key_id: Uuid,
}

/// An invoice as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub external_id: Option<String>,
    pub status: InvoiceStatus,
    pub payment_flags: Vec<PaymentFlag>,
    /// The price, in `currency`.
    pub amount: Decimal,
    pub currency: String,
    pub conversion_rate: Decimal,
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    /// `None` for the chain's native coin.
    pub token_address: Option<Address>,
    pub decimals: u8,
    pub deposit_address_id: Uuid,
    pub address: Address,
    /// What the payer sends.
    pub amount_base_units: BaseUnits,
    /// The operator's fee out of `amount_base_units`.
    pub fee_base_units: BaseUnits,
    /// What the merchant receives: `amount_base_units - fee_base_units` (seed 003's merchant_usdt).
    pub merchant_amount_base_units: BaseUnits,
    /// The fee schedule the invoice was created under; the ledger charges by it (also on over,
    /// partial and late payments), whatever the merchant's schedule is later.
    pub fee_schedule: FeeSchedule,
    /// Sum of confirmed payments.
    pub amount_paid_base_units: BaseUnits,
    pub details: InvoiceDetails,
    pub receiver_override_address: Option<Address>,
    pub static_address_id: Option<Uuid>,
    /// The API shape that made it, whose view its webhooks carry.
    pub view: InvoiceView,
    /// The merchant's manual resolution, if any (`None`: never marked).
    pub mark: Option<InvoiceMark>,
    /// The ways the invoice may be paid, when there are several (`payment_options`): every
    /// option, the primary first (the invoice's own chain, asset, amount and fee above). Empty for
    /// an invoice payable one way, which is paid exactly as before options existed. With options,
    /// `amount_paid_base_units` is what all options' payments are worth in the primary option's
    /// base units at their locked rates, rounded down ([`Invoice::paid_in_primary`]).
    pub options: Vec<PaymentOption>,
    pub session_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
}

/// One way to pay an invoice that offers several: a chain and asset, its amount at the rate locked
/// when the invoice was made, its fee schedule, and what has been paid in it. Every option of an
/// invoice shares its deposit address (an EVM address is the same key on every chain, and a
/// payment names its chain and token contract, so the option paid is never ambiguous).
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentOption {
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    /// `None` for the chain's native coin.
    pub token_address: Option<Address>,
    pub decimals: u8,
    pub address: Address,
    /// The invoice's price in this asset, locked for the invoice's life.
    pub amount_base_units: BaseUnits,
    /// The fee on `amount_base_units` under `fee_schedule`.
    pub fee_base_units: BaseUnits,
    /// The merchant's schedule for this asset when the invoice was made; the ledger charges by it
    /// on what this option received.
    pub fee_schedule: FeeSchedule,
    /// Invoice-currency units per token (informational: rounded like the invoice's).
    pub conversion_rate: Decimal,
    /// Confirmed payments in this option.
    pub amount_paid_base_units: BaseUnits,
}

impl PaymentOption {
    /// Whether a payment of `asset` on chain `chain_id` is this option.
    pub fn is(&self, chain_id: u64, asset: &str) -> bool {
        self.chain_id == chain_id && self.asset.eq_ignore_ascii_case(asset)
    }

    /// EIP-681 link for `amount` of this option.
    pub fn payment_uri(&self, amount: BaseUnits) -> String {
        eip681(self.address, self.token_address, self.chain_id, amount)
    }
}

/// The most payment options an invoice may offer.
pub const MAX_PAYMENT_OPTIONS: usize = 10;

/// Wide enough for the exact sums of [`PaidShare`]: ten options of 256-bit amounts.
type Wide = alloy::primitives::ruint::Uint<3072, 48>;

/// What the payments of a multi-option invoice cover of its price, exactly: `Σ paid_i / amount_i`
/// over the options, as the fraction `num / den`. A payment counts at its option's locked rate,
/// which is exactly `price / amount_i` (the rounded `conversion_rate` is only shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidShare {
    num: Wide,
    den: Wide,
}

impl PaidShare {
    pub fn of(options: &[PaymentOption]) -> PaidShare {
        let amount = |o: &PaymentOption| Wide::from(o.amount_base_units.0.max(alloy::primitives::U256::from(1)));
        let den = options.iter().fold(Wide::from(1u8), |acc, o| acc * amount(o));
        let num =
            options.iter().fold(Wide::ZERO, |acc, o| acc + Wide::from(o.amount_paid_base_units.0) * (den / amount(o)));
        PaidShare { num, den }
    }

    /// Whether the payments cover the whole price.
    pub fn covers(&self) -> bool {
        self.num >= self.den
    }

    /// The share in base units of an amount `amount` (the price in one option), rounded down.
    pub fn of_amount(&self, amount: BaseUnits) -> BaseUnits {
        BaseUnits((self.num * Wide::from(amount.0) / self.den).saturating_to())
    }

    /// What is still due if paid in an option whose price is `amount`: rounded up, so that paying
    /// it covers the price; zero once covered.
    pub fn due_of(&self, amount: BaseUnits) -> BaseUnits {
        if self.covers() {
            return BaseUnits::ZERO;
        }
        BaseUnits(((self.den - self.num) * Wide::from(amount.0)).div_ceil(self.den).saturating_to())
    }

    /// What the payments exceed the price by, in base units of an option whose price is
    /// `amount`, rounded down; zero until covered.
    pub fn excess_of(&self, amount: BaseUnits) -> BaseUnits {
        if !self.covers() {
            return BaseUnits::ZERO;
        }
        BaseUnits(((self.num - self.den) * Wide::from(amount.0) / self.den).saturating_to())
    }

    /// The share of `price` (in the invoice's currency), rounded down to `dp` decimals.
    pub fn of_price(&self, price: Decimal, dp: u32) -> Decimal {
        let (mantissa, scale) = (price.mantissa().unsigned_abs(), price.scale());
        let dp = dp.max(scale);
        let scaled = Wide::from(mantissa) * Wide::from(10u8).pow(Wide::from(dp - scale)) * self.num / self.den;
        let value: u128 = scaled.saturating_to();
        Decimal::try_from_i128_with_scale(value.min(i128::MAX as u128) as i128, dp).unwrap_or(Decimal::MAX)
    }
}

fn eip681(to: Address, token: Option<Address>, chain_id: u64, amount: BaseUnits) -> String {
    let to = to.to_checksum(None);
    match token {
        Some(token) => {
            format!("ethereum:{}@{chain_id}/transfer?address={to}&uint256={amount}", token.to_checksum(None))
        }
        None => format!("ethereum:{to}@{chain_id}?value={amount}"),
    }
}

/// The merchant's optional, descriptive fields: stored and echoed (flattened into the invoice
/// resource), never interpreted by money paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InvoiceDetails {
    pub description: Option<String>,
    pub customer_id: Option<String>,
    pub customer_email: Option<String>,
    /// Seed 004's `customer_name` ("for receipts").
    pub customer_name: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub title: Option<String>,
    pub footer: Option<String>,
    pub return_url: Option<String>,
    pub use_return_url: Option<bool>,
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
    pub callback_url: Option<String>,
    pub questions: Option<Vec<String>>,
    /// The payer's answers to `questions`, in order, given on the checkout page.
    pub answers: Option<Vec<String>>,
}

impl Invoice {
    /// A fresh random payment-session token (256 bits, hex).
    pub fn new_session_token() -> String {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    }

    /// Sets the fee schedule and, from it, `fee_base_units` and `merchant_amount_base_units`.
    pub fn apply_fee_schedule(&mut self, schedule: FeeSchedule) -> Result<(), crate::money::MoneyError> {
        let fee = schedule.fee_on(self.amount_base_units)?;
        self.fee_schedule = schedule;
        self.fee_base_units = fee;
        self.merchant_amount_base_units = self.amount_base_units.checked_sub(fee).unwrap_or_default();
        Ok(())
    }

    /// The hosted checkout page, under the API's base URL.
    pub fn checkout_url(&self, public_url: &str) -> String {
        format!("{}/checkout/{}", public_url.trim_end_matches('/'), self.id)
    }

    /// What is still to pay (zero once paid or overpaid).
    pub fn amount_due(&self) -> BaseUnits {
        self.amount_base_units.checked_sub(self.amount_paid_base_units).unwrap_or(BaseUnits::ZERO)
    }

    /// EIP-681 link a wallet can open: an ERC-20 `transfer` call or a plain value transfer.
    pub fn payment_uri(&self) -> String {
        eip681(self.address, self.token_address, self.chain_id, self.amount_base_units)
    }

    /// Whether a payment of `asset` on chain `chain_id` is one this invoice offered (its one way
    /// to pay, or one of its options). Anything else to its address is `rejected` (suspense).
    pub fn accepts(&self, chain_id: u64, asset: &str) -> bool {
        if self.options.is_empty() {
            self.chain_id == chain_id && self.asset.eq_ignore_ascii_case(asset)
        } else {
            self.options.iter().any(|o| o.is(chain_id, asset))
        }
    }

    /// The fee schedule the ledger charges a payment of `asset` on `chain_id` by: its option's,
    /// else the invoice's.
    pub fn fee_schedule_for(&self, chain_id: u64, asset: &str) -> FeeSchedule {
        self.options.iter().find(|o| o.is(chain_id, asset)).map_or(self.fee_schedule, |o| o.fee_schedule)
    }

    /// What the options' payments are worth in the primary option's base units, exactly rounded
    /// down (so it reaches `amount_base_units` exactly when the payments cover the price).
    pub fn paid_in_primary(&self) -> BaseUnits {
        if self.options.is_empty() {
            return self.amount_paid_base_units;
        }
        PaidShare::of(&self.options).of_amount(self.amount_base_units)
    }

    /// Adds (or, `remove`, takes away) a confirmed payment of `amount` in `asset` on `chain_id`
    /// to what the invoice was paid: to its option, then `amount_paid_base_units` follows. `None`
    /// when the invoice did not offer it, the sum does not fit, or a removal exceeds what was paid
    /// (in its option): the invoice is left as it was.
    pub fn apply_payment(&mut self, chain_id: u64, asset: &str, amount: BaseUnits, remove: bool) -> Option<()> {
        if self.options.is_empty() {
            self.amount_paid_base_units = if remove {
                self.amount_paid_base_units.checked_sub(amount)?
            } else {
                self.amount_paid_base_units.checked_add(amount)?
            };
            return Some(());
        }
        let option = self.options.iter_mut().find(|o| o.is(chain_id, asset))?;
        option.amount_paid_base_units = if remove {
            option.amount_paid_base_units.checked_sub(amount)?
        } else {
            option.amount_paid_base_units.checked_add(amount)?
        };
        self.amount_paid_base_units = self.paid_in_primary();
        Some(())
    }

    /// Takes a reorged payment out as far as it can when [`Invoice::apply_payment`] refused the
    /// removal (more than was recorded paid, or an asset it did not offer: inconsistent data):
    /// what was paid in its option (or in all) goes down to zero at most, and an asset it did
    /// not offer changes nothing.
    pub fn remove_payment_saturating(&mut self, chain_id: u64, asset: &str, amount: BaseUnits) {
        let less = |paid: BaseUnits| BaseUnits(paid.0.saturating_sub(amount.0));
        if self.options.is_empty() {
            self.amount_paid_base_units = less(self.amount_paid_base_units);
            return;
        }
        if let Some(option) = self.options.iter_mut().find(|o| o.is(chain_id, asset)) {
            option.amount_paid_base_units = less(option.amount_paid_base_units);
        }
        self.amount_paid_base_units = self.paid_in_primary();
    }

    /// Whether the invoice is paid more than its price by at least one base unit of the option
    /// `asset` on `chain_id` (the one a payment came in): paying an option's rounded-up
    /// `amount_due` exactly is no overpayment, though its excess may be worth a base unit or more
    /// of a primary option with more decimals. An invoice payable one way: paid more than its
    /// amount.
    pub fn overpaid_in(&self, chain_id: u64, asset: &str) -> bool {
        if self.options.is_empty() {
            return self.amount_paid_base_units > self.amount_base_units;
        }
        let Some(option) = self.options.iter().find(|o| o.is(chain_id, asset)) else { return false };
        !PaidShare::of(&self.options).excess_of(option.amount_base_units).is_zero()
    }

    /// `amount_paid` as the resource shows it: whole tokens of the pay asset, or, with several
    /// options, the invoice's currency.
    pub fn amount_paid_display(&self) -> String {
        if self.options.is_empty() {
            return self.amount_paid_base_units.to_display(self.decimals);
        }
        PaidShare::of(&self.options).of_price(self.amount, self.currency_dp()).normalize().to_string()
    }

    /// `amount_due` as the resource shows it (see [`Invoice::amount_paid_display`]).
    pub fn amount_due_display(&self) -> String {
        if self.options.is_empty() {
            return self.amount_due().to_display(self.decimals);
        }
        let share = PaidShare::of(&self.options);
        if share.covers() {
            return "0".into();
        }
        let dp = self.currency_dp();
        let due = self.amount - share.of_price(self.amount, dp);
        // Not covered: never shown as nothing due.
        due.max(Decimal::new(1, dp)).normalize().to_string()
    }

    /// Decimals the invoice's currency amounts are shown with (a multi-option invoice's
    /// `amount_paid` and `amount_due`): the price's own, at least 2.
    fn currency_dp(&self) -> u32 {
        self.amount.scale().max(2)
    }
}

/// Signs payment sessions: `signature = HMAC-SHA256(key, "{invoice_id}.{session_token}")`, hex.
/// The key is derived from the hot wallet's seed, so every daemon on one database agrees.
#[derive(Clone)]
pub struct SessionSigner {
    key: [u8; 32],
}

impl fmt::Debug for SessionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSigner([REDACTED])")
    }
}

impl SessionSigner {
    pub fn new(key: [u8; 32]) -> SessionSigner {
        SessionSigner { key }
    }

    pub fn sign(&self, invoice_id: Uuid, session_token: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{invoice_id}.{session_token}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Constant-time check of a presented signature.
    pub fn verify(&self, invoice_id: Uuid, session_token: &str, signature: &str) -> bool {
        let Ok(presented) = hex::decode(signature) else { return false };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{invoice_id}.{session_token}").as_bytes());
        mac.verify_slice(&presented).is_ok()
    }
}

/// A deposit as shown in an invoice's `payments`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PaymentView {
    pub id: Uuid,
    pub tx_hash: String,
    pub log_index: i64,
    pub block_number: u64,
    pub from_address: String,
    /// The asset that arrived (an invoice with several payment options may be paid in each).
    pub asset: String,
    /// The chain it arrived on (an invoice with payment options may be paid on several).
    pub chain_id: u64,
    pub amount: String,
    pub amount_base_units: BaseUnits,
    /// Blocks on its own chain from its block to that chain's last scanned block, inclusive.
    pub confirmations: u64,
    pub state: String,
    pub detected_at: i64,
}

/// `pay`: what the payer must do.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PayInstructions {
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    pub token_address: Option<String>,
    pub decimals: u8,
    pub address: String,
    /// In whole tokens, exact.
    pub amount: String,
    pub amount_base_units: BaseUnits,
    pub payment_uri: String,
}

/// One entry of `payment_options`: a way to pay the invoice, what it costs at its locked rate and
/// what was paid in it. An invoice payable one way has one, its `pay`.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct PaymentOptionView {
    pub chain: String,
    pub chain_id: u64,
    pub asset: String,
    pub token_address: Option<String>,
    pub decimals: u8,
    pub address: String,
    /// The price in this asset (whole tokens, exact), locked for the invoice's life.
    pub amount: String,
    pub amount_base_units: BaseUnits,
    /// Invoice-currency units per token at the locked rate (rounded to 12 decimals).
    pub rate: String,
    /// EIP-681 link for what is still due in this option (the whole amount before any payment).
    pub payment_uri: String,
    /// Confirmed payments in this option (whole tokens, and base units).
    pub amount_paid: String,
    pub amount_paid_base_units: BaseUnits,
    /// What is still due if the rest is paid in this option (rounded up; zero once paid).
    pub amount_due: String,
    pub amount_due_base_units: BaseUnits,
}

impl PaymentOptionView {
    /// The invoice's options as the resource shows them (its one way to pay when it has no options).
    pub fn list(invoice: &Invoice) -> Vec<PaymentOptionView> {
        if invoice.options.is_empty() {
            let d = invoice.decimals;
            let due = invoice.amount_due();
            return vec![PaymentOptionView {
                chain: invoice.chain.clone(),
                chain_id: invoice.chain_id,
                asset: invoice.asset.clone(),
                token_address: invoice.token_address.map(|a| a.to_checksum(None)),
                decimals: d,
                address: invoice.address.to_checksum(None),
                amount: invoice.amount_base_units.to_display(d),
                amount_base_units: invoice.amount_base_units,
                rate: invoice.conversion_rate.normalize().to_string(),
                payment_uri: eip681(
                    invoice.address,
                    invoice.token_address,
                    invoice.chain_id,
                    if due.is_zero() { invoice.amount_base_units } else { due },
                ),
                amount_paid: invoice.amount_paid_base_units.to_display(d),
                amount_paid_base_units: invoice.amount_paid_base_units,
                amount_due: due.to_display(d),
                amount_due_base_units: due,
            }];
        }
        let share = PaidShare::of(&invoice.options);
        invoice
            .options
            .iter()
            .map(|o| {
                let d = o.decimals;
                let due = share.due_of(o.amount_base_units);
                PaymentOptionView {
                    chain: o.chain.clone(),
                    chain_id: o.chain_id,
                    asset: o.asset.clone(),
                    token_address: o.token_address.map(|a| a.to_checksum(None)),
                    decimals: d,
                    address: o.address.to_checksum(None),
                    amount: o.amount_base_units.to_display(d),
                    amount_base_units: o.amount_base_units,
                    rate: o.conversion_rate.normalize().to_string(),
                    payment_uri: o.payment_uri(if due.is_zero() { o.amount_base_units } else { due }),
                    amount_paid: o.amount_paid_base_units.to_display(d),
                    amount_paid_base_units: o.amount_paid_base_units,
                    amount_due: due.to_display(d),
                    amount_due_base_units: due,
                }
            })
            .collect()
    }
}

/// The invoice as the API returns it and as webhooks carry it. Timestamps are epoch seconds.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct InvoiceResource {
    /// Always `invoice`.
    #[schema(value_type = String)]
    pub object: &'static str,
    pub id: Uuid,
    pub external_id: Option<String>,
    pub status: InvoiceStatus,
    pub payment_flags: Vec<PaymentFlag>,
    pub amount: String,
    pub currency: String,
    pub conversion_rate: String,
    pub pay: PayInstructions,
    /// Fee and merchant amount in whole tokens of the pay asset, and in base units.
    pub fee: String,
    pub fee_base_units: BaseUnits,
    pub merchant_amount: String,
    pub merchant_amount_base_units: BaseUnits,
    /// What was paid: in whole tokens of the pay asset for an invoice payable one way; in the
    /// invoice's `currency` for one with several `payment_options` (every option's payments at its
    /// locked rate, rounded down to the price's decimals, at least 2).
    pub amount_paid: String,
    /// In base units of the pay asset (with several options: all payments' worth in the primary
    /// option, rounded down).
    pub amount_paid_base_units: BaseUnits,
    /// What is still due, in the same unit as `amount_paid`.
    pub amount_due: String,
    /// What is still due in base units of the pay asset.
    pub amount_due_base_units: BaseUnits,
    /// Every way the invoice may be paid, the primary (`pay`) first, each with what was paid in it.
    pub payment_options: Vec<PaymentOptionView>,
    pub payments: Vec<PaymentView>,
    pub checkout_url: String,
    pub session_token: String,
    pub signature: String,
    /// `{"x-session-token": ..., "x-signature": ...}` for browser calls to `/api/v1/payments/*`.
    #[schema(value_type = Object)]
    pub payment_session_headers: serde_json::Value,
    /// The merchant's descriptive fields, echoed as given.
    #[serde(flatten)]
    pub details: InvoiceDetails,
    pub receiver_override: bool,
    pub receiver_override_address: Option<String>,
    pub static_address_id: Option<Uuid>,
    /// The merchant's manual resolution (`POST /api/v1/invoices/{id}/mark`), or null. The mark
    /// moves no money: `amount_paid` and the balances show only what was really paid.
    pub marked: Option<MarkView>,
    pub created_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
}

impl InvoiceResource {
    /// Builds the resource. `public_url` is the API's base URL (for `checkout_url`).
    pub fn build(
        invoice: &Invoice,
        payments: Vec<PaymentView>,
        public_url: &str,
        signer: &SessionSigner,
    ) -> InvoiceResource {
        let d = invoice.decimals;
        let signature = signer.sign(invoice.id, &invoice.session_token);
        let secs = |ms: i64| ms.div_euclid(1000);
        let details = &invoice.details;
        InvoiceResource {
            object: "invoice",
            id: invoice.id,
            external_id: invoice.external_id.clone(),
            status: invoice.status,
            payment_flags: invoice.payment_flags.clone(),
            amount: invoice.amount.normalize().to_string(),
            currency: invoice.currency.clone(),
            conversion_rate: invoice.conversion_rate.normalize().to_string(),
            pay: PayInstructions {
                chain: invoice.chain.clone(),
                chain_id: invoice.chain_id,
                asset: invoice.asset.clone(),
                token_address: invoice.token_address.map(|a| a.to_checksum(None)),
                decimals: d,
                address: invoice.address.to_checksum(None),
                amount: invoice.amount_base_units.to_display(d),
                amount_base_units: invoice.amount_base_units,
                payment_uri: invoice.payment_uri(),
            },
            fee: invoice.fee_base_units.to_display(d),
            fee_base_units: invoice.fee_base_units,
            merchant_amount: invoice.merchant_amount_base_units.to_display(d),
            merchant_amount_base_units: invoice.merchant_amount_base_units,
            amount_paid: invoice.amount_paid_display(),
            amount_paid_base_units: invoice.amount_paid_base_units,
            amount_due: invoice.amount_due_display(),
            amount_due_base_units: invoice.amount_due(),
            payment_options: PaymentOptionView::list(invoice),
            payments,
            checkout_url: invoice.checkout_url(public_url),
            payment_session_headers: serde_json::json!({
                "x-session-token": invoice.session_token,
                "x-signature": signature,
            }),
            session_token: invoice.session_token.clone(),
            signature,
            details: details.clone(),
            receiver_override: invoice.receiver_override_address.is_some(),
            receiver_override_address: invoice.receiver_override_address.map(|a| a.to_checksum(None)),
            static_address_id: invoice.static_address_id,
            marked: invoice.mark.as_ref().map(|m| MarkView {
                status: m.status,
                reason: m.reason.clone(),
                marked_at: secs(m.marked_at),
                by: m.by.clone(),
                api_key_id: m.by_key_id,
            }),
            created_at: secs(invoice.created_at),
            expires_at: secs(invoice.expires_at),
            finished_at: invoice.finished_at.map(secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option(amount: u64, paid: u64) -> PaymentOption {
        PaymentOption {
            chain: "anvil".into(),
            chain_id: 31337,
            asset: "USDC".into(),
            token_address: None,
            decimals: 6,
            address: Address::ZERO,
            amount_base_units: BaseUnits::from(amount),
            fee_base_units: BaseUnits::ZERO,
            fee_schedule: FeeSchedule::default(),
            conversion_rate: Decimal::ONE,
            amount_paid_base_units: BaseUnits::from(paid),
        }
    }

    #[test]
    fn payments_in_several_options_add_up_exactly() {
        // Half of each: exactly the price.
        let half = PaidShare::of(&[option(10_000_000, 5_000_000), option(12_525_051, 6_262_525)]);
        assert!(!half.covers(), "6262525 is a hair under half of 12525051");
        let exact = PaidShare::of(&[option(10_000_000, 5_000_000), option(12_000_000, 6_000_000)]);
        assert!(exact.covers());
        assert_eq!(exact.of_amount(BaseUnits::from(10_000_000)), BaseUnits::from(10_000_000));
        assert_eq!(exact.due_of(BaseUnits::from(12_000_000)), BaseUnits::ZERO);
        assert_eq!(exact.of_price("19.99".parse().unwrap(), 2), "19.99".parse::<Decimal>().unwrap());
        // A third in one, nothing in the other: a third of the price, rounded down; the rest due
        // in either option, rounded up so that paying it covers the price.
        let third = PaidShare::of(&[option(3_000_000, 1_000_000), option(7_000_001, 0)]);
        assert_eq!(third.of_price(Decimal::TEN, 2), "3.33".parse::<Decimal>().unwrap());
        assert_eq!(third.of_amount(BaseUnits::from(3_000_000)), BaseUnits::from(1_000_000));
        let due = third.due_of(BaseUnits::from(7_000_001));
        assert_eq!(due, BaseUnits::from(4_666_668));
        assert!(PaidShare::of(&[option(3_000_000, 1_000_000), option(7_000_001, 4_666_668)]).covers());
        assert!(!PaidShare::of(&[option(3_000_000, 1_000_000), option(7_000_001, 4_666_667)]).covers());
        // Ten options of huge amounts do not overflow.
        let big = BaseUnits(alloy::primitives::U256::MAX);
        let mut options: Vec<PaymentOption> = (0..MAX_PAYMENT_OPTIONS).map(|_| option(1, 0)).collect();
        for o in &mut options {
            o.amount_base_units = big;
        }
        options[9].amount_paid_base_units = big;
        assert!(PaidShare::of(&options).covers());
    }
}
