//! Field validation shared by the API's resources. Each function names its `param` in the error.

use depositd_core::config::{AssetRef, ChainConfig, Config};
use rust_decimal::Decimal;

use crate::error::ApiError;

/// The requested chain and asset (or the configured defaults): an enabled chain and an asset it accepts.
pub fn chain_and_asset(
    config: &Config,
    chain: Option<String>,
    asset: Option<String>,
) -> Result<(&ChainConfig, AssetRef<'_>), ApiError> {
    Ok(depositd_core::invoicing::resolve_asset(config, chain.as_deref(), asset.as_deref())?)
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
pub fn amount(value: &serde_json::Value) -> Result<Decimal, ApiError> {
    let invalid = |message: &str| ApiError::invalid("amount", "invalid_amount", message.to_owned());
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_owned(),
        // serde_json prints the shortest form that reads back as the same f64: "19.99" for 19.99.
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(invalid("amount must be a decimal string such as \"19.99\" or a number")),
    };
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
    let parsed = url::Url::parse(&value).map_err(|e| invalid(format!("{param} is not a valid URL: {e}")))?;
    let scheme_ok = parsed.scheme() == "https" || (allow_http && parsed.scheme() == "http");
    if !scheme_ok {
        return Err(invalid(format!("{param} must be an https:// URL")));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{param} must have a host")));
    }
    Ok(Some(value))
}

/// Metadata: a JSON object of at most 50 keys (1..=40 characters), scalar values (string, number,
/// boolean), at most 5 KB serialized (seed 004).
pub fn metadata(
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
    for (key, value) in &map {
        if key.is_empty() || key.chars().count() > 40 {
            return Err(invalid(format!("metadata key {key:?} must be 1 to 40 characters")));
        }
        if !(value.is_string() || value.is_number() || value.is_boolean()) {
            return Err(invalid(format!("metadata.{key} must be a string, number or boolean")));
        }
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
        assert_eq!(amount(&serde_json::json!("19.99")).unwrap().to_string(), "19.99");
        assert_eq!(amount(&serde_json::json!(19.99)).unwrap().to_string(), "19.99");
        assert_eq!(amount(&serde_json::json!(100)).unwrap().to_string(), "100");
        for bad in [
            serde_json::json!("-1"),
            serde_json::json!("1e3"),
            serde_json::json!("1,000"),
            serde_json::json!(""),
            serde_json::json!(null),
            serde_json::json!(true),
            serde_json::json!(-5),
            serde_json::json!("1.2.3"),
        ] {
            assert!(amount(&bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn urls() {
        assert!(url("u", Some("https://shop.example/ok".into()), false).unwrap().is_some());
        assert!(url("u", Some("http://shop.example/ok".into()), false).is_err());
        assert!(url("u", Some("http://localhost:3000/ok".into()), true).is_ok());
        assert!(url("u", Some("javascript:alert(1)".into()), true).is_err());
        assert!(url("u", Some("not a url".into()), true).is_err());
    }
}
