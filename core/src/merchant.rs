//! Merchants: the operator's customers, who own API keys, invoices and balances.

use rust_decimal::Decimal;
use uuid::Uuid;

use crate::text_enum::text_enum;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant {
    pub id: Uuid,
    pub name: String,
    /// Default title and footer of the checkout page (seed 001).
    pub company_name: Option<String>,
    pub status: MerchantStatus,
    /// The operator's fee, percent of each paid amount.
    pub fee_percent: Decimal,
    /// A payment this many percent short still counts as paid.
    pub payment_tolerance_percent: Decimal,
    /// Invoice amount bounds in the invoice currency; `None` = the server's defaults.
    pub min_invoice_amount: Option<Decimal>,
    pub max_invoice_amount: Option<Decimal>,
    pub created_at: i64,
}

impl Merchant {
    /// The name payers see (checkout title and footer by default, seed 001): the company name,
    /// else the merchant's name.
    pub fn display_name(&self) -> &str {
        self.company_name.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantStatus {
    Active,
    Disabled,
}

text_enum! { MerchantStatus as "merchant status" { Active = "active", Disabled = "disabled" } }
