//! Request bodies: JSON parsed with the path of any offending field, so every 400 names its `param`.

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Parses a request body into JSON, refusing anything that is not one JSON object.
pub fn json_object(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest {
        code: "invalid_json",
        message: format!("the request body is not valid JSON: {e}"),
        param: None,
    })?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest {
            code: "invalid_json",
            message: "the request body must be a JSON object".into(),
            param: None,
        });
    }
    Ok(value)
}

/// Deserializes a request type, mapping serde's errors to a 400 that names the field.
pub fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        // Missing and unknown fields are reported at the parent; serde names them in backticks.
        let named = message.split('`').nth(1).map(str::to_owned);
        let (code, param) = if message.starts_with("unknown field") {
            ("unknown_parameter", named)
        } else if message.starts_with("missing field") {
            ("parameter_missing", named)
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

    /// Takes `name=value` if it is a pagination parameter; returns false for any other name.
    pub fn accept(&mut self, name: &str, value: &str) -> Result<bool, ApiError> {
        match name {
            "limit" => {
                self.limit = value.parse().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
                    ApiError::invalid("limit", "invalid_parameter", "limit must be an integer from 1 to 100")
                })?;
                Ok(true)
            }
            "starting_after" => {
                self.starting_after = Some(value.parse().map_err(|_| {
                    ApiError::invalid(
                        "starting_after",
                        "invalid_parameter",
                        "starting_after must be an id from a previous page",
                    )
                })?);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// The 400 for a query parameter an endpoint does not know.
pub fn unknown_query_parameter(name: &str) -> ApiError {
    ApiError::InvalidRequest {
        code: "unknown_parameter",
        message: format!("unknown query parameter {name:?}"),
        param: Some(name.to_owned()),
    }
}

/// A path id that must be a UUID.
pub fn path_id(what: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("id", "invalid_parameter", format!("{what} id {raw:?} is not a UUID")))
}

/// `created_after=<epoch seconds>` (exclusive), as the epoch milliseconds rows store: everything
/// created after the end of that second.
pub fn created_after(value: &str) -> Result<i64, ApiError> {
    let secs: i64 = value.parse().map_err(|_| {
        ApiError::invalid("created_after", "invalid_parameter", "created_after is epoch seconds (an integer)")
    })?;
    Ok(secs.saturating_mul(1000).saturating_add(999))
}

/// `chain=<name>`: an enabled chain's id, or a 400 naming the parameter.
pub fn chain_id(config: &depositd_core::config::Config, value: &str) -> Result<u64, ApiError> {
    config
        .chain(value)
        .map(|chain| chain.chain_id)
        .ok_or_else(|| ApiError::invalid("chain", "unsupported_chain", format!("chain {value:?} is not enabled here")))
}
