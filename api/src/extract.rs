//! Request bodies and path ids: JSON parsed with the path of any offending field, so every 400
//! names its `param`. (Query strings are [`crate::query`]'s.)
//!
//! A body is read twice: [`json_object`] checks the document as written (one object, no key twice
//! in any object, no number in exponent form) and returns it as a [`serde_json::Value`] (what
//! idempotency compares); [`typed`] then deserializes the request type from the same bytes, so
//! fields that need a number's exact text (amounts, as [`serde_json::value::RawValue`]) get it
//! rather than its nearest `f64`.

use std::collections::HashSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Request bodies above this are refused (an invoice with 5 KB of metadata is far below it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body, or a JSON error when it is over the limit or cannot be read.
pub fn body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<axum::body::Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES },
        _ => ApiError::InvalidRequest { code: "invalid_body", message: rejection.body_text(), param: None },
    })
}

/// A request type from a body that must be one JSON object: [`body`], [`json_object`], [`typed`].
/// (Creating requests go through [`crate::idempotency::Create`], which claims a key between the
/// last two.)
pub fn json<T: DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = self::body(body)?;
    json_object(&body)?;
    typed(&body)
}

/// A body [`json_object_exact`] accepted: the JSON, and the number literals in it that a
/// [`serde_json::Value`] (an `f64`) does not hold exactly.
pub struct Checked {
    pub value: serde_json::Value,
    inexact_numbers: Vec<String>,
}

impl Checked {
    /// What an `Idempotency-Key` is claimed with: the canonical JSON, and the exact text of any
    /// number the JSON rounds, so that two amounts one rounding apart are two requests (a
    /// replay of one for the other would be another amount). Bodies without such numbers
    /// fingerprint as their JSON alone.
    pub fn fingerprint(&self) -> serde_json::Value {
        if self.inexact_numbers.is_empty() {
            self.value.clone()
        } else {
            serde_json::json!({"body": self.value, "exact_numbers": self.inexact_numbers})
        }
    }
}

/// Parses a request body into JSON, refusing anything that is not one JSON object, and any
/// duplicated key or exponent-form number in it.
pub fn json_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    json_object_exact(body).map(|checked| checked.value)
}

/// [`json_object`], keeping what it needs to tell apart numbers the JSON rounds to one.
pub fn json_object_exact(body: &[u8]) -> Result<Checked, ApiError> {
    let not_json = |e: serde_json::Error| ApiError::InvalidRequest {
        code: "invalid_json",
        message: format!("the request body is not valid JSON: {e}"),
        param: None,
    };
    let raw: &RawValue = serde_json::from_slice(body).map_err(not_json)?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::InvalidRequest {
            code: "invalid_json",
            message: "the request body must be a JSON object".into(),
            param: None,
        });
    }
    let mut inexact_numbers = Vec::new();
    check_document(raw, &mut String::new(), &mut inexact_numbers)?;
    Ok(Checked { value: serde_json::from_str(raw.get()).map_err(not_json)?, inexact_numbers })
}

/// Whether `f64` holds the number `text` (a JSON number without exponent) exactly.
fn exact_in_f64(text: &str) -> bool {
    let Ok(exact) = text.parse::<rust_decimal::Decimal>() else { return false };
    let Some(held) = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) else { return false };
    held.to_string().parse::<rust_decimal::Decimal>().is_ok_and(|held| held == exact)
}

/// The entries of one JSON object in document order, duplicates kept.
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Walks the document as written: serde_json's `Value` keeps the last of duplicated keys and
/// turns numbers into `f64`, so both are checked here, on the text.
fn check_document(raw: &RawValue, path: &mut String, inexact: &mut Vec<String>) -> Result<(), ApiError> {
    let text = raw.get();
    let internal = |e: serde_json::Error| ApiError::internal(e);
    match text.as_bytes().first() {
        Some(b'{') => {
            let entries: Entries = serde_json::from_str(text).map_err(internal)?;
            let mut seen = HashSet::new();
            for (key, value) in entries.0 {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                if !seen.insert(key) {
                    return Err(ApiError::InvalidRequest {
                        code: "duplicate_key",
                        message: format!("{path} appears more than once in the request body"),
                        param: Some(path.clone()),
                    });
                }
                check_document(value, path, inexact)?;
                path.truncate(len);
            }
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(internal)?;
            for (i, item) in items.into_iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_document(item, path, inexact)?;
                path.truncate(len);
            }
        }
        Some(b'-' | b'0'..=b'9') if text.contains(['e', 'E']) => {
            let param = if path.is_empty() { None } else { Some(path.clone()) };
            return Err(ApiError::InvalidRequest {
                code: "invalid_number",
                message: format!(
                    "{}: {text} is in exponent form; write numbers out in plain decimal digits",
                    param.as_deref().unwrap_or("number")
                ),
                param,
            });
        }
        Some(b'-' | b'0'..=b'9') if !exact_in_f64(text) => inexact.push(format!("{path}={text}")),
        _ => {}
    }
    Ok(())
}

/// Deserializes a request type from a body [`json_object`] has accepted, mapping serde's errors
/// to a 400 that names the field.
pub fn typed<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        // serde_json adds where in the text it was; the param says where in the document.
        let inner = error.inner();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let message = inner.to_string();
        let message = message.strip_suffix(&position).unwrap_or(&message).to_owned();
        // Missing and unknown fields are reported at the parent; serde names them in backticks.
        let named = message.split('`').nth(1).map(str::to_owned);
        let (code, param) = if message.starts_with("unknown field") {
            ("unknown_parameter", named)
        } else if message.starts_with("missing field") {
            ("parameter_missing", named)
        } else if message.starts_with("duplicate field") {
            ("duplicate_key", named)
        } else {
            ("invalid_parameter", Some(path.clone()).filter(|p| p != "."))
        };
        let message = match &param {
            Some(p) => format!("{p}: {message}"),
            None => message,
        };
        ApiError::InvalidRequest { code, message, param }
    })
}

/// The `{id}` (or other single) segment of a route, as text: an undecodable segment (`%ff` is
/// not UTF-8) is the JSON 400 every other bad id gets, not axum's plain-text rejection.
#[derive(Debug, Clone)]
pub struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(id)) => Ok(PathId(id)),
            Err(rejection) => {
                let param = parts
                    .extensions
                    .get::<axum::extract::MatchedPath>()
                    .and_then(|p| p.as_str().split('{').nth(1)?.split('}').next().map(str::to_owned))
                    .unwrap_or_else(|| "id".to_owned());
                tracing::debug!(%param, rejection = %rejection.body_text(), "undecodable path segment");
                Err(ApiError::invalid(
                    param.clone(),
                    "invalid_parameter",
                    format!("{param} in the path is not valid percent-encoded UTF-8 text"),
                ))
            }
        }
    }
}

/// An optional whole number that may be written `479` or `479.0` (JSON does not tell them
/// apart, and neither does the OpenAPI document's `integer`); `479.5` is refused.
pub fn optional_whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    if let Some(n) = number.as_u64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53) => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!("expected a whole number of at least 0, found {number}"))),
    }
}

/// A required whole number: `5000` or `5000.0` (JSON Schema's integer), never a fraction.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    optional_whole_number(deserializer)?.ok_or_else(|| serde::de::Error::custom("expected a whole number, found null"))
}

/// Cursor pagination shared by every list endpoint: `limit` (1 to 100, default 20) and
/// `starting_after` (an id; ids are time-ordered, lists are newest first).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: u32,
    pub starting_after: Option<uuid::Uuid>,
}

impl Default for Page {
    fn default() -> Self {
        Page { limit: 20, starting_after: None }
    }
}

impl Page {
    /// How many rows to fetch: one more than the page, to learn whether more follow.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts rows fetched with [`Page::fetch`] to the page; the flag says whether more follow.
    pub fn finish<T>(&self, mut rows: Vec<T>) -> (Vec<T>, bool) {
        let has_more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        (rows, has_more)
    }

    /// The page a list query's `limit` and `starting_after` ask for.
    pub fn new(limit: Option<u32>, starting_after: Option<uuid::Uuid>) -> Page {
        Page { limit: limit.unwrap_or(Page::default().limit), starting_after }
    }
}

/// A path id that must be a UUID.
pub fn path_id(what: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("id", "invalid_parameter", format!("{what} id {raw:?} is not a UUID")))
}

/// `chain=<name>`: an enabled chain's id, or a 400 naming the parameter.
pub fn chain_id(config: &depositd_core::config::Config, value: &str) -> Result<u64, ApiError> {
    config
        .chain(value)
        .map(|chain| chain.chain_id)
        .ok_or_else(|| ApiError::invalid("chain", "unsupported_chain", format!("chain {value:?} is not enabled here")))
}
