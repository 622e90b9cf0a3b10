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
