//! Field validation shared by the API's resources. Each function names its `param` in the error.

use depositd_core::api_key::KeyMode;
use depositd_core::config::{AssetRef, ChainConfig, Config};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// The requested chain and asset (or the configured defaults): an enabled chain and an asset it accepts.
pub fn chain_and_asset(
    config: &Config,
    chain: Option<String>,
    asset: Option<String>,
    mode: KeyMode,
) -> Result<(&ChainConfig, AssetRef<'_>), ApiError> {
    Ok(depositd_core::invoicing::resolve_asset(config, chain.as_deref(), asset.as_deref(), Some(mode))?)
}

/// An optional text field: if present, 1..=`max` characters without control characters.
pub fn text(param: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let chars = value.chars().count();
    if chars == 0 || chars > max {
        return Err(ApiError::invalid(param, "invalid_parameter", format!("{param} must be 1 to {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid(param, "invalid_parameter", format!("{param} contains control characters")));
    }
    Ok(Some(value))
}

/// A money amount: a decimal string (`"19.99"`) or a JSON number, positive, at most 18 decimals.
/// A number is read from its text as written, never through `f64`: `0.1234567890123456789` is
/// that decimal exactly.
pub fn amount(value: &RawValue) -> Result<Decimal, ApiError> {
    let invalid = |message: &str| ApiError::invalid("amount", "invalid_amount", message.to_owned());
    let raw = value.get().trim();
    let text = match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw)
            .map_err(|_| invalid("amount is not a valid JSON string"))?
            .trim()
            .to_owned(),
        Some(b'-' | b'0'..=b'9') => raw.to_owned(),
        _ => return Err(invalid("amount must be a decimal string such as \"19.99\" or a number")),
    };
    decimal_amount(&text)
}

/// A money amount written as a plain positive decimal (`"1500.00"`), at most 18 decimals.
pub fn decimal_amount(text: &str) -> Result<Decimal, ApiError> {
    let invalid = |message: &str| ApiError::invalid("amount", "invalid_amount", message.to_owned());
    let text = text.trim();
    if text.contains(['e', 'E']) {
        return Err(invalid("amount must not be in exponent form (such as 1e2); write it as a plain decimal"));
    }
    let plain =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && text.matches('.').count() <= 1;
    if !plain {
        return Err(invalid(
            "amount must be a plain positive decimal such as \"19.99\" (no sign, exponent or separators)",
        ));
    }
    let amount: Decimal = text.parse().map_err(|_| invalid("amount is not a valid decimal number"))?;
    if amount.scale() > 18 {
        return Err(invalid("amount has more than 18 decimal places"));
    }
    Ok(amount)
}

/// An e-mail address: a light shape check, because the real check is delivery.
pub fn email(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(value) = text(param, value, 255)? else { return Ok(None) };
    let valid = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    };
    if !valid || value.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(param, "invalid_parameter", format!("{param} is not an e-mail address")));
    }
    Ok(Some(value))
}

/// A URL the server or a browser will visit: https (http only when allowed), with a host, <= 2048.
pub fn url(param: &str, value: Option<String>, allow_http: bool) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let invalid = |message: String| ApiError::invalid(param, "invalid_url", message);
    if value.len() > 2048 {
        return Err(invalid(format!("{param} is longer than 2048 characters")));
    }
    // What the OpenAPI document states: printable ASCII only (no spaces or control characters,
    // which URL parsers would silently drop or encode; international host names in punycode).
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!("{param} must be printable ASCII without spaces (percent-encode the rest)")));
    }
    let parsed = url::Url::parse(&value).map_err(|e| invalid(format!("{param} is not a valid URL: {e}")))?;
    let scheme_ok = parsed.scheme() == "https" || (allow_http && parsed.scheme() == "http");
    if !scheme_ok {
        return Err(invalid(format!("{param} must be an https:// URL")));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{param} must have a host")));
    }
    // A host name is DNS labels of letters, digits and inner hyphens, the last one starting with
    // a letter (URL parsers take far more: `a*` is a host to them).
    if let Some(url::Host::Domain(name)) = parsed.host() {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let labels: Vec<&str> = name.split('.').collect();
        let last_ok = labels.last().is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()));
        if !labels.iter().all(|l| label_ok(l)) || !last_ok {
            return Err(invalid(format!("{param} has no valid host name")));
        }
    }
    Ok(Some(value))
}

/// A URL depositd will POST events to (a `callback_url`): [`url`], then the delivery SSRF
/// guard's checks that need no DNS (scheme, literal internal addresses, `localhost` names), under
/// the same `webhooks.allow_private_targets` switch deliveries obey, refused with the error
/// webhook endpoints get. A host name is checked again where it is resolved, at delivery.
pub fn callback_url(param: &str, value: Option<String>, config: &Config) -> Result<Option<String>, ApiError> {
    let Some(value) = url(param, value, config.settings.invoices.allow_http_urls)? else { return Ok(None) };
    let parsed = url::Url::parse(&value).map_err(|e| ApiError::invalid(param, "invalid_url", e.to_string()))?;
    // The scheme was checked just above, under the invoices' own http switch.
    depositd_webhooks::ssrf::check_url(&parsed, true, config.settings.webhooks.allow_private_targets)
        .map_err(|refused| ApiError::invalid(param, "url_not_allowed", format!("{param}: {refused}")))?;
    Ok(Some(value))
}

/// Metadata: a JSON object of at most 50 keys (1..=40 characters), scalar values (string, number,
/// boolean), at most 5 KB serialized (seed 004).
pub fn metadata(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    let Some(map) = structured_metadata(value)? else { return Ok(None) };
    if let Some((key, _)) = map.iter().find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean())) {
        return Err(ApiError::invalid(
            "metadata",
            "invalid_metadata",
            format!("metadata.{key} must be a string, number or boolean"),
        ));
    }
    Ok(Some(map))
}

/// Seed 001's metadata ("additional structured data"): a JSON object of at most 50 keys (seed
/// 004's rule), keys 1 to 40 characters, values any JSON (nested objects and arrays, at most 8
/// levels deep), at most 5,120 bytes serialized. Seed 001 names 512 bytes; 5,120 (seed 004's
/// 5 KB) accepts both seeds' integrations.
pub fn structured_metadata(
    value: Option<serde_json::Value>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, ApiError> {
    let invalid = |message: String| ApiError::invalid("metadata", "invalid_metadata", message);
    let Some(value) = value else { return Ok(None) };
    let serde_json::Value::Object(map) = value else {
        return Err(invalid("metadata must be a JSON object".into()));
    };
    if map.len() > 50 {
        return Err(invalid(format!("metadata has {} keys; at most 50 are allowed", map.len())));
    }
    if let Some(key) = map.keys().find(|key| key.is_empty() || key.chars().count() > 40) {
        return Err(invalid(format!("metadata key {key:?} must be 1 to 40 characters")));
    }
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let levels = map.values().map(depth).max().unwrap_or(0) + 1;
    if levels > 8 {
        return Err(invalid(format!("metadata is nested {levels} levels deep; at most 8 are allowed")));
    }
    let size = serde_json::to_string(&map).map(|s| s.len()).unwrap_or(usize::MAX);
    if size > 5 * 1024 {
        return Err(invalid(format!("metadata is {size} bytes serialized; at most 5120 are allowed")));
    }
    Ok(Some(map))
}

/// Checkout questions: at most 5 non-empty strings, at most 512 bytes in all (seed 001).
pub fn questions(value: Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    let invalid = |message: String| ApiError::invalid("questions", "invalid_parameter", message);
    let Some(questions) = value else { return Ok(None) };
    if questions.len() > 5 {
        return Err(invalid(format!("{} questions; at most 5 are allowed", questions.len())));
    }
    if questions.iter().any(|q| q.trim().is_empty()) {
        return Err(invalid("questions must not be empty".into()));
    }
    let size: usize = questions.iter().map(String::len).sum();
    if size > 512 {
        return Err(invalid(format!("questions are {size} bytes; at most 512 are allowed")));
    }
    Ok(Some(questions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).unwrap();
        assert_eq!(amount(&raw(r#""19.99""#)).unwrap().to_string(), "19.99");
        assert_eq!(amount(&raw("19.99")).unwrap().to_string(), "19.99");
        assert_eq!(amount(&raw("100")).unwrap().to_string(), "100");
        assert_eq!(amount(&raw("12.345678901234567891")).unwrap().to_string(), "12.345678901234567891");
        for bad in [
            "0.1234567890123456789",
            r#""-1""#,
            r#""1e3""#,
            "1e2",
            "1E2",
            r#""1,000""#,
            r#""""#,
            "null",
            "true",
            "-5",
            r#""1.2.3""#,
        ] {
            assert!(amount(&raw(bad)).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn urls() {
        assert!(url("u", Some("https://shop.example/ok".into()), false).unwrap().is_some());
        assert!(url("u", Some("http://shop.example/ok".into()), false).is_err());
        assert!(url("u", Some("http://localhost:3000/ok".into()), true).is_ok());
        assert!(url("u", Some("javascript:alert(1)".into()), true).is_err());
        assert!(url("u", Some("not a url".into()), true).is_err());
        assert!(url("u", Some("https://shop.example/a b".into()), true).is_err());
        assert!(url("u", Some("https://a*/".into()), true).is_err());
        assert!(url("u", Some("https://a.1b/".into()), true).is_err());
        assert!(url("u", Some("http://127.0.0.1:9/ok".into()), true).is_ok());
        assert!(url("u", Some("https://shop.example/\u{e9}".into()), true).is_err());
    }
}
