//! The API's error contract.
//!
//! Every error is `{"error":{"type","code","message","param"}}` with a stable `code` a merchant's
//! code can switch on. Client errors name the offending `param`; server errors get a generic
//! message and a reference, while the cause chain goes to the log only (never to the client).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use depositd_core::api_key::KeyModeMismatch;
use depositd_core::store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong; `param` names the field when there is one.
    #[error("{message}")]
    InvalidRequest { code: &'static str, message: String, param: Option<String> },
    /// 401: no usable credentials.
    #[error("{message}")]
    Unauthenticated { code: &'static str, message: String },
    /// 403: credentials are fine but do not allow this: the key lacks the scope, or its mode
    /// (test or live) does not match the chain; `param` names the field at fault, if any.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String, param: Option<String> },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("this endpoint does not support this method")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 408: the body did not arrive in time (slow or stalled client); the connection is closed.
    #[error("the request body did not arrive within {seconds} seconds")]
    RequestTimeout { seconds: u64 },
    #[error("{message}")]
    Conflict { code: &'static str, message: String, param: Option<String> },
    /// 429 with `Retry-After`.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// 503: a dependency (price feed, database) is unavailable; retrying later may work.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 500: our fault. The source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Not an error: the stored response of an `Idempotency-Key` that a concurrent request with
    /// the same body completed first, answered as is (see `crate::idempotency::begin`).
    #[error("replayed an idempotent response")]
    Replay(Box<Response>),
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidRequest { code, message: message.into(), param: Some(param.into()) }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::NotFound { code: "resource_missing", message: format!("no such {what}") }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(error))
    }

    /// 403 `key_mode_mismatch`: a test key creating on a mainnet or a live key on a testnet;
    /// `param` is the request field that named the chain (`None`: the server's default chain, or
    /// the chain of the invoice refunded).
    pub fn key_mode_mismatch(mismatch: KeyModeMismatch, param: Option<&str>) -> ApiError {
        ApiError::Forbidden {
            code: "key_mode_mismatch",
            message: mismatch.to_string(),
            param: param.map(str::to_owned),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str, Option<&str>) {
        match self {
            ApiError::InvalidRequest { code, param, .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", code, param.as_deref())
            }
            ApiError::Unauthenticated { code, .. } => (StatusCode::UNAUTHORIZED, "authentication_error", code, None),
            ApiError::Forbidden { code, param, .. } => {
                (StatusCode::FORBIDDEN, "permission_error", code, param.as_deref())
            }
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, "invalid_request_error", code, None),
            ApiError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed", None)
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "payload_too_large", None)
            }
            ApiError::RequestTimeout { .. } => {
                (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", "request_timeout", None)
            }
            ApiError::Conflict { code, param, .. } => {
                (StatusCode::CONFLICT, "invalid_request_error", code, param.as_deref())
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limited", None),
            ApiError::Unavailable { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, "api_error", code, None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "internal_error", None),
            ApiError::Replay(response) => (response.status(), "", "", None),
        }
    }
}

/// A row the request names that is not there is the client's 404; a row in the way (a unique
/// value taken, a concurrent change) is its 409; everything else is ours (500, logged).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::NotFound { code: "resource_missing", message: "no such resource".into() },
            StoreError::Conflict(what) => {
                ApiError::Conflict { code: "conflict", message: format!("conflict: {what}"), param: None }
            }
            error => ApiError::internal(error),
        }
    }
}

/// The error body of every failed request.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail<'a> {
    /// `invalid_request_error`, `authentication_error`, `permission_error`, `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: &'a str,
    /// Stable, machine-readable: switch on this.
    #[schema(value_type = String)]
    code: &'a str,
    /// For humans; may change.
    message: String,
    /// The offending request field, when there is one.
    #[schema(value_type = Option<String>)]
    param: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Replay(response) = self {
            return *response;
        }
        let (status, kind, code, param) = self.parts();
        let message = match &self {
            ApiError::Internal(source) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, error = %source, cause = ?source.source(), "request failed with an internal error");
                format!("An internal error occurred (reference {reference}); it has been logged.")
            }
            other => other.to_string(),
        };
        let body = ErrorBody { error: ErrorDetail { kind, code, message, param } };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after_secs, .. } = self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, retry_after_secs.max(1).into());
        }
        response
    }
}

impl From<depositd_core::payouts::PayoutError> for ApiError {
    fn from(error: depositd_core::payouts::PayoutError) -> Self {
        use depositd_core::payouts::PayoutError;
        match error {
            PayoutError::ExternalIdTaken => ApiError::Conflict {
                code: "external_id_conflict",
                message: error.to_string(),
                param: Some("external_id".into()),
            },
            PayoutError::InsufficientFunds(message) => ApiError::invalid("amount", "insufficient_funds", message),
            PayoutError::RefundExceedsPaid(message) => ApiError::invalid("amount", "refund_exceeds_paid", message),
            PayoutError::RefundOptionNotOffered { param, message } => {
                ApiError::invalid(param, "refund_option_not_offered", message)
            }
            PayoutError::RefundOptionAmbiguous(message) => {
                ApiError::Conflict { code: "refund_option_ambiguous", message, param: Some("asset".into()) }
            }
            PayoutError::FeeEstimateUnavailable(message) => {
                ApiError::Unavailable { code: "fee_estimate_unavailable", message }
            }
            PayoutError::NotCancellable(message) => {
                ApiError::Conflict { code: "payout_not_cancellable", message, param: None }
            }
            PayoutError::NotFound => ApiError::not_found("payout"),
            PayoutError::Store(e) => e.into(),
            PayoutError::Ledger(e) => ApiError::internal(e),
        }
    }
}

impl From<depositd_core::invoicing::InvoicingError> for ApiError {
    fn from(error: depositd_core::invoicing::InvoicingError) -> Self {
        use depositd_core::invoicing::InvoicingError;
        let param = error.param();
        let code = match error.inner() {
            InvoicingError::UnsupportedChain(_) => "unsupported_chain",
            InvoicingError::UnsupportedAsset { .. } => "unsupported_asset",
            InvoicingError::UnsupportedCurrency(_) => "unsupported_currency",
            InvoicingError::AmountOutOfRange(_) => "amount_out_of_range",
            InvoicingError::InvalidExpiry(_) => "invalid_parameter",
            InvoicingError::RateUnavailable(_) => {
                return ApiError::Unavailable { code: "rate_unavailable", message: error.to_string() };
            }
            InvoicingError::ExternalIdTaken => {
                return ApiError::Conflict { code: "external_id_conflict", message: error.to_string(), param };
            }
            InvoicingError::KeyModeMismatch { mismatch, .. } => {
                return ApiError::Forbidden { code: "key_mode_mismatch", message: mismatch.to_string(), param };
            }
            InvoicingError::InvalidPaymentOptions { code, .. } => code,
            // `inner` never answers the wrapper.
            InvoicingError::PaymentOption { .. } => "invalid_parameter",
            InvoicingError::Store(_) => {
                let InvoicingError::Store(e) = error else { return ApiError::internal(std::io::Error::other("store")) };
                return e.into();
            }
        };
        ApiError::InvalidRequest { code, message: error.to_string(), param }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_their_status() {
        let status = |e: StoreError| ApiError::from(e).into_response().status();
        assert_eq!(status(StoreError::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status(StoreError::Conflict("external_id")), StatusCode::CONFLICT);
        assert_eq!(status(StoreError::Corrupt("column 1".into())), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
