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
    pub session_token: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
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
        let to = self.address.to_checksum(None);
        match self.token_address {
            Some(token) => format!(
                "ethereum:{}@{}/transfer?address={to}&uint256={}",
                token.to_checksum(None),
                self.chain_id,
                self.amount_base_units
            ),
            None => format!("ethereum:{to}@{}?value={}", self.chain_id, self.amount_base_units),
        }
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
    pub amount: String,
    pub amount_base_units: BaseUnits,
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
    pub amount_paid: String,
    pub amount_paid_base_units: BaseUnits,
    pub amount_due: String,
    pub amount_due_base_units: BaseUnits,
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
            amount_paid: invoice.amount_paid_base_units.to_display(d),
            amount_paid_base_units: invoice.amount_paid_base_units,
            amount_due: invoice.amount_due().to_display(d),
            amount_due_base_units: invoice.amount_due(),
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
