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
    /// Where the checkout sends a payer once paid when the invoice names no URL of its own.
    pub default_return_url: Option<String>,
    /// Origins (`scheme://host[:port]`) whose browser code may call the payer API for the
    /// merchant's invoices (CORS); empty = only the hosted checkout page.
    pub checkout_origins: Vec<String>,
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

/// What a merchant's owner sets in the dashboard's Settings page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantSettings {
    /// `None`: the checkout shows the merchant's name.
    pub company_name: Option<String>,
    pub default_return_url: Option<String>,
    pub checkout_origins: Vec<String>,
}

/// The longest company name.
pub const MAX_COMPANY_NAME: usize = 100;

/// A company name: 1 to [`MAX_COMPANY_NAME`] characters without control characters (an empty
/// one is no company name).
pub fn company_name(value: &str) -> Result<Option<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_COMPANY_NAME {
        return Err(format!("company_name must be at most {MAX_COMPANY_NAME} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err("company_name contains control characters".into());
    }
    Ok(Some(value.to_owned()))
}

/// The most checkout origins a merchant may list.
pub const MAX_CHECKOUT_ORIGINS: usize = 20;

/// A checkout origin: exactly `scheme://host[:port]` (http or https, nothing after it), what a
/// browser sends in `Origin`; returned as the browser writes it.
pub fn checkout_origin(origin: &str) -> Result<String, String> {
    let parsed = url::Url::parse(origin).map_err(|e| format!("{origin:?} is not an origin: {e}"))?;
    let normalized = parsed.origin().ascii_serialization();
    if !(matches!(parsed.scheme(), "https" | "http")
        && parsed.path() == "/"
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && origin.trim_end_matches('/') == normalized)
    {
        return Err(format!("{origin:?} must be scheme://host[:port] with nothing after it (e.g. {normalized})"));
    }
    Ok(normalized)
}

/// Checkout origins, one per line or separated by commas or spaces: each [`checkout_origin`],
/// without repeats, at most [`MAX_CHECKOUT_ORIGINS`].
pub fn checkout_origins(text: &str) -> Result<Vec<String>, String> {
    let mut origins: Vec<String> = Vec::new();
    for word in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()) {
        let origin = checkout_origin(word)?;
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    if origins.len() > MAX_CHECKOUT_ORIGINS {
        return Err(format!("at most {MAX_CHECKOUT_ORIGINS} checkout origins"));
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_precisely() {
        assert_eq!(company_name("  Acme  "), Ok(Some("Acme".into())));
        assert_eq!(company_name(""), Ok(None));
        assert!(company_name(&"x".repeat(101)).unwrap_err().contains("at most 100"));
        assert_eq!(
            checkout_origins("https://shop.example, http://localhost:3000/\nhttps://shop.example"),
            Ok(vec!["https://shop.example".into(), "http://localhost:3000".into()])
        );
        assert!(checkout_origins("https://shop.example/pay").unwrap_err().contains("nothing after it"));
        assert!(checkout_origins("ftp://shop.example").is_err());
        assert!(checkout_origins("shop.example").is_err());
    }
}
