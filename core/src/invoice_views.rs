//! One invoice, the views of it that the reference docs' API shapes speak.
//!
//! depositd has one invoice ([`Invoice`]); merchants integrate through three request shapes,
//! each with its own response: seed 001's `/api/v1/invoices` (the [`InvoiceResource`]), seed
//! 003's `/api/v1/create-invoice` ([`CreateInvoiceResource`]) and seed 004's
//! `/api/v1/hosted-payments` ([`HostedPaymentResource`]). Every invoice remembers the shape that
//! made it ([`InvoiceView`]); its webhooks carry that view as `data`, so a merchant's callback
//! handler reads the field names of the API it integrated. Any invoice can be read in any view
//! (seed 004's only where its amount is whole cents).
//!
//! The status words differ per seed; the mapping is here and in the API reference's table.

use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

pub use crate::invoice::InvoiceView;
use crate::invoice::{Invoice, InvoiceResource, InvoiceStatus};
use crate::time::iso8601;

/// Seed 003's status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreateInvoiceStatus {
    /// Awaiting payment (depositd's `pending` and `processing`).
    Pending,
    /// Paid (depositd's `paid`, and `refunded`/`partially_refunded`: the payment succeeded; a
    /// refund is a later payout).
    Success,
    /// Not paid in time.
    Expired,
    /// Cancelled by the merchant (and depositd's `invalid`: marked invalid by the merchant).
    Cancelled,
}

impl From<InvoiceStatus> for CreateInvoiceStatus {
    fn from(status: InvoiceStatus) -> Self {
        match status {
            InvoiceStatus::Pending | InvoiceStatus::Processing => CreateInvoiceStatus::Pending,
            InvoiceStatus::Paid | InvoiceStatus::Refunded | InvoiceStatus::PartiallyRefunded => {
                CreateInvoiceStatus::Success
            }
            InvoiceStatus::Expired => CreateInvoiceStatus::Expired,
            InvoiceStatus::Cancelled | InvoiceStatus::Invalid => CreateInvoiceStatus::Cancelled,
        }
    }
}

/// Seed 003's invoice: times in ISO 8601 UTC, amounts as decimal strings.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(example = json!({
    "amount": "1500.00",
    "callback_url": "https://yoursite.com/webhooks/payment",
    "conversion_rate": "41.50",
    "created_at": "2026-02-25T12:00:00Z",
    "currency": "UAH",
    "customer_id": "user_12345",
    "expires_at": "2026-02-25T12:20:00Z",
    "external_id": "order-2026-0001",
    "fail_url": "https://yoursite.com/payment/failed",
    "finished_at": null,
    "invoice_id": "a1b2c3d4-5678-90ab-cdef-1234567890ab",
    "merchant_usdt": "35.42",
    "payment_link": "https://pay.example.com/checkout/a1b2c3d4-5678-90ab-cdef-1234567890ab",
    "purpose": "Payment for Premium subscription",
    "status": "pending",
    "success_url": "https://yoursite.com/payment/success"
}))]
pub struct CreateInvoiceResource {
    /// Use this to query the invoice's status (`GET /api/v1/invoice-status/{invoice_id}`).
    pub invoice_id: Uuid,
    pub external_id: Option<String>,
    /// The price in `currency`, with at least two decimals (`"1500.00"`).
    pub amount: String,
    pub currency: String,
    /// Units of `currency` per one token of the pay asset.
    pub conversion_rate: String,
    /// What the merchant's balance is credited when the invoice is paid, after the fee, in whole
    /// tokens of the pay asset (USDT, or whichever asset the invoice is paid in), exact.
    pub merchant_usdt: String,
    pub status: CreateInvoiceStatus,
    /// The hosted checkout page (valid until `expires_at`).
    pub payment_link: String,
    pub customer_id: Option<String>,
    pub purpose: Option<String>,
    pub callback_url: Option<String>,
    pub success_url: Option<String>,
    pub fail_url: Option<String>,
    #[schema(example = "2026-02-25T12:00:00Z")]
    pub created_at: String,
    pub expires_at: String,
    /// When it was paid (or otherwise finished); null until then.
    pub finished_at: Option<String>,
}

impl CreateInvoiceResource {
    pub fn build(invoice: &Invoice, resource: &InvoiceResource) -> CreateInvoiceResource {
        let details = &invoice.details;
        let status = CreateInvoiceStatus::from(invoice.status);
        CreateInvoiceResource {
            invoice_id: invoice.id,
            external_id: invoice.external_id.clone(),
            amount: at_least_two_decimals(invoice.amount),
            currency: invoice.currency.clone(),
            conversion_rate: at_least_two_decimals(invoice.conversion_rate),
            merchant_usdt: resource.merchant_amount.clone(),
            status,
            payment_link: resource.checkout_url.clone(),
            customer_id: details.customer_id.clone(),
            purpose: details.description.clone(),
            callback_url: details.callback_url.clone(),
            success_url: details.success_url.clone(),
            fail_url: details.fail_url.clone(),
            created_at: iso8601(invoice.created_at),
            expires_at: iso8601(invoice.expires_at),
            // Seed 003: "null until paid" (an expiry or cancellation also finishes an invoice).
            finished_at: invoice.finished_at.filter(|_| status == CreateInvoiceStatus::Success).map(iso8601),
        }
    }
}

/// Seed 004's status words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostedPaymentStatus {
    /// Awaiting payment or confirmations (depositd's `pending` and `processing`).
    Pending,
    /// Paid (depositd's `paid`, and `partially_refunded`: most of the payment stays with the
    /// merchant, as a partially refunded card payment stays succeeded).
    Completed,
    /// Not paid: expired, cancelled or marked invalid.
    Failed,
    /// Refunded in full.
    Refunded,
}

impl From<InvoiceStatus> for HostedPaymentStatus {
    fn from(status: InvoiceStatus) -> Self {
        match status {
            InvoiceStatus::Pending | InvoiceStatus::Processing => HostedPaymentStatus::Pending,
            InvoiceStatus::Paid | InvoiceStatus::PartiallyRefunded => HostedPaymentStatus::Completed,
            InvoiceStatus::Expired | InvoiceStatus::Cancelled | InvoiceStatus::Invalid => HostedPaymentStatus::Failed,
            InvoiceStatus::Refunded => HostedPaymentStatus::Refunded,
        }
    }
}

/// Seed 004's payment: the amount in cents, the currency in lower case.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(example = json!({
    "id": "0190b5a6-4c2e-7d6f-9a1b-2c3d4e5f6a7b",
    "amount": 5000,
    "currency": "usd",
    "status": "pending",
    "checkout_url": "https://pay.example.com/checkout/0190b5a6-4c2e-7d6f-9a1b-2c3d4e5f6a7b",
    "customer_email": "customer@example.com",
    "customer_name": "John Doe",
    "metadata": {"order_id": "12345"},
    "created_at": "2026-02-25T12:00:00Z"
}))]
pub struct HostedPaymentResource {
    pub id: Uuid,
    /// In cents (minor units): 5000 is 50.00.
    pub amount: i64,
    /// Lower case: `usd`.
    pub currency: String,
    pub status: HostedPaymentStatus,
    pub checkout_url: String,
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
    /// As given (`{}` when none was).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[schema(example = "2026-02-25T12:00:00Z")]
    pub created_at: String,
}

impl HostedPaymentResource {
    /// The view, or `None` when the invoice's amount is not a whole number of cents (an invoice
    /// made through another shape, in a currency with other minor units).
    pub fn build(invoice: &Invoice, resource: &InvoiceResource) -> Option<HostedPaymentResource> {
        let details = &invoice.details;
        Some(HostedPaymentResource {
            id: invoice.id,
            amount: cents(invoice.amount)?,
            currency: invoice.currency.to_ascii_lowercase(),
            status: invoice.status.into(),
            checkout_url: resource.checkout_url.clone(),
            customer_email: details.customer_email.clone(),
            customer_name: details.customer_name.clone(),
            metadata: details.metadata.clone().unwrap_or_default(),
            created_at: iso8601(invoice.created_at),
        })
    }
}

/// The amount in cents, when it is a whole number of them.
pub fn cents(amount: Decimal) -> Option<i64> {
    let cents = amount.checked_mul(Decimal::ONE_HUNDRED)?;
    if cents.fract().is_zero() { i64::try_from(cents.trunc()).ok() } else { None }
}

/// `1500` as `"1500.00"`, `41.666666666667` unchanged: fiat amounts as seed 003 writes them.
fn at_least_two_decimals(value: Decimal) -> String {
    let mut value = value.normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    value.to_string()
}

/// What a webhook about `invoice` carries as `data`: the view of the shape that made it.
pub fn webhook_data(invoice: &Invoice, resource: &InvoiceResource) -> serde_json::Value {
    let view = match invoice.view {
        InvoiceView::Invoice => None,
        InvoiceView::CreateInvoice => serde_json::to_value(CreateInvoiceResource::build(invoice, resource)).ok(),
        // An invoice made through seed 004's route always has a whole number of cents.
        InvoiceView::HostedPayment => {
            HostedPaymentResource::build(invoice, resource).and_then(|view| serde_json::to_value(view).ok())
        }
    };
    view.unwrap_or_else(|| {
        if invoice.view != InvoiceView::Invoice {
            tracing::error!(invoice_id = %invoice.id, view = invoice.view.as_str(), "an invoice has no view of its own shape; its event carries seed 001's");
        }
        serde_json::to_value(resource).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn cents_are_whole_or_nothing() {
        assert_eq!(cents(dec("50")), Some(5000));
        assert_eq!(cents(dec("0.50")), Some(50));
        assert_eq!(cents(dec("0.505")), None);
    }

    #[test]
    fn fiat_strings_have_two_decimals_at_least() {
        assert_eq!(at_least_two_decimals(dec("1500")), "1500.00");
        assert_eq!(at_least_two_decimals(dec("41.5")), "41.50");
        assert_eq!(at_least_two_decimals(dec("41.666666666667")), "41.666666666667");
    }

    #[test]
    fn every_status_has_a_word_in_each_seed() {
        use InvoiceStatus::*;
        let words: Vec<serde_json::Value> =
            [Pending, Processing, Paid, Expired, Cancelled, Refunded, PartiallyRefunded, Invalid]
                .into_iter()
                .map(|s| serde_json::json!([CreateInvoiceStatus::from(s), HostedPaymentStatus::from(s)]))
                .collect();
        let expected = [
            ["pending", "pending"],
            ["pending", "pending"],
            ["success", "completed"],
            ["expired", "failed"],
            ["cancelled", "failed"],
            ["success", "refunded"],
            ["success", "completed"],
            ["cancelled", "failed"],
        ];
        assert_eq!(InvoiceStatus::ALL.len(), expected.len(), "a status without its words here");
        assert_eq!(words, expected.map(|pair| serde_json::json!(pair)));
    }
}
