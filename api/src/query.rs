//! Query strings: every list endpoint's parameters are one `#[derive(Deserialize, IntoParams)]`
//! struct, so what the server parses and what the OpenAPI document says come from one place.
//!
//! [`List`] authenticates, decodes the query strictly (a `%ff` or a name given twice is a 400,
//! not a U+FFFD or "the last one wins"), checks the scope, then deserializes the struct; every
//! 400 is the JSON error body naming the parameter in `param`. Parameters a struct does not have
//! are refused (`unknown_parameter`). Fields that are not plain text parse with the functions
//! below (`deserialize_with`), whose messages are the ones clients see.

use std::str::FromStr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use depositd_core::api_key::Scope;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::state::AppState;

/// A list endpoint's query parameters.
pub trait ListQuery: DeserializeOwned {
    /// What the API key needs to read the list.
    const SCOPE: Scope;
}

/// An authenticated list request whose key has [`ListQuery::SCOPE`], with its query parsed.
/// The order of the checks (and so which error a request with several faults gets) is the one
/// every endpoint has: the key, then an undecodable or repeated parameter, then the scope, then
/// the parameters' names and values.
pub struct List<Q> {
    pub auth: Authenticated,
    pub query: Q,
}

impl<Q: ListQuery> FromRequestParts<AppState> for List<Q> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let auth = Authenticated::from_request_parts(parts, state).await?;
        let pairs = pairs(parts.uri.query().unwrap_or_default())?;
        auth.require(Q::SCOPE)?;
        Ok(List { auth, query: typed(&pairs)? })
    }
}

/// The query string as (name, value) pairs in order, as application/x-www-form-urlencoded
/// decoded strictly (axum's `Query` replaces bad bytes); a name given twice is a 400
/// `duplicate_parameter`.
fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let undecodable = || ApiError::InvalidRequest {
        code: "invalid_parameter",
        message: "the query string is not valid percent-encoded UTF-8".into(),
        param: None,
    };
    let decode = |text: &str| -> Result<String, ApiError> {
        let text = text.replace('+', " ");
        percent_encoding::percent_decode_str(&text).decode_utf8().map(|s| s.into_owned()).map_err(|_| undecodable())
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (decode(name)?, decode(value)?);
        if pairs.iter().any(|(seen, _)| *seen == name) {
            return Err(ApiError::invalid(
                name.clone(),
                "duplicate_parameter",
                format!("query parameter {name:?} is given more than once"),
            ));
        }
        pairs.push((name, value));
    }
    Ok(pairs)
}

/// Deserializes `Q` from decoded pairs. A parameter `Q` lacks is `unknown_parameter`; a value
/// its field refuses is `invalid_parameter` with the field's own message (serde's wording never
/// reaches the client: every typed field parses with a function of this module).
fn typed<Q: DeserializeOwned>(pairs: &[(String, String)]) -> Result<Q, ApiError> {
    // Re-encoded from the strictly decoded text, so serde_urlencoded's lenient decoding has
    // nothing left to be lenient about.
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
    let deserializer = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(encoded.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let message = error.inner().to_string();
        let unknown = pairs.iter().find(|(name, _)| message.starts_with(&format!("unknown field `{name}`,")));
        if let Some((name, _)) = unknown {
            return ApiError::InvalidRequest {
                code: "unknown_parameter",
                message: format!("unknown query parameter {name:?}"),
                param: Some(name.clone()),
            };
        }
        let param = error.path().to_string();
        ApiError::invalid(param, "invalid_parameter", message)
    })
}

/// The text of a parameter, parsed by `parse`; its error is the message.
fn parsed<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map(Some).map_err(D::Error::custom)
}

/// `limit`: an integer from 1 to 100 (the default, 20, is [`crate::extract::Page`]'s).
pub fn limit<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    parsed(deserializer, |text| {
        text.parse()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| "limit must be an integer from 1 to 100".into())
    })
}

/// `starting_after`: the last id of the previous page.
pub fn starting_after<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    parsed(deserializer, |text| text.parse().map_err(|_| "starting_after must be an id from a previous page".into()))
}

/// `created_after=<epoch seconds>` (exclusive), as the epoch milliseconds rows store: everything
/// created after the end of that second.
pub fn created_after<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    parsed(deserializer, |text| {
        let secs: i64 = text.parse().map_err(|_| "created_after is epoch seconds (an integer)".to_owned())?;
        Ok(secs.saturating_mul(1000).saturating_add(999))
    })
}

/// A word of a fixed set (a status, a state, a type): its `FromStr` says what it may be.
pub fn word<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(deserializer: D) -> Result<Option<T>, D::Error> {
    parsed(deserializer, T::from_str)
}

/// `invoice_id`, an id to filter by.
pub fn invoice_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    parsed(deserializer, |text| text.parse().map_err(|_| "invoice_id must be a UUID".into()))
}

/// `deposit_id`, an id to filter by.
pub fn deposit_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    parsed(deserializer, |text| text.parse().map_err(|_| "deposit_id must be a UUID".into()))
}

/// `resource_id`, an id to filter by.
pub fn resource_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Uuid>, D::Error> {
    parsed(deserializer, |text| text.parse().map_err(|_| "resource_id must be a UUID".into()))
}

/// One of `words`, with `message` when it is not.
pub fn one_of<'de, D: Deserializer<'de>>(
    deserializer: D,
    words: &[&str],
    message: &str,
) -> Result<Option<String>, D::Error> {
    parsed(deserializer, |text| if words.contains(&text) { Ok(text.to_owned()) } else { Err(message.to_owned()) })
}

/// The query of an endpoint that takes no parameters: any is `unknown_parameter`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default, deserialize_with = "limit")]
        limit: Option<u32>,
        #[serde(default, deserialize_with = "starting_after")]
        starting_after: Option<Uuid>,
        #[serde(default, deserialize_with = "created_after")]
        created_after: Option<i64>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }

    fn parse(query: &str) -> Result<Sample, ApiError> {
        typed(&pairs(query)?)
    }

    fn refusal(query: &str) -> (&'static str, Option<String>, String) {
        match parse(query).unwrap_err() {
            ApiError::InvalidRequest { code, param, message } => (code, param, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_parse_as_the_fields_say() {
        let id = Uuid::now_v7();
        let sample = parse(&format!("limit=100&starting_after={id}&created_after=7&type=a+b%21")).unwrap();
        assert_eq!(sample.limit, Some(100));
        assert_eq!(sample.starting_after, Some(id));
        assert_eq!(sample.created_after, Some(7999));
        assert_eq!(sample.kind.as_deref(), Some("a b!"));
        let empty = parse("&&").unwrap();
        assert!(empty.limit.is_none() && empty.kind.is_none());
        assert_eq!(parse("type").unwrap().kind.as_deref(), Some(""));
    }

    #[test]
    fn refusals_name_the_parameter_in_the_words_of_the_field() {
        for bad in ["limit=0", "limit=101", "limit=1.0", "limit=", "limit"] {
            let refused = ("invalid_parameter", Some("limit".into()), "limit must be an integer from 1 to 100".into());
            assert_eq!(refusal(bad), refused, "{bad}");
        }
        assert_eq!(refusal("starting_after=x").2, "starting_after must be an id from a previous page");
        assert_eq!(refusal("created_after=1.5").2, "created_after is epoch seconds (an integer)");
        assert_eq!(
            refusal("limit=5&colour=red"),
            ("unknown_parameter", Some("colour".into()), "unknown query parameter \"colour\"".into())
        );
        assert_eq!(refusal("=1").0, "unknown_parameter");
        assert_eq!(refusal("=1").1.as_deref(), Some(""));
        assert_eq!(refusal("limit=1&limit=2").0, "duplicate_parameter");
        assert_eq!(
            refusal("type=a&t%79pe=b"),
            ("duplicate_parameter", Some("type".into()), refusal("type=a&type=b").2)
        );
        assert_eq!(
            refusal("type=%ff"),
            ("invalid_parameter", None, "the query string is not valid percent-encoded UTF-8".into())
        );
    }
}
