//! `ApiError`: the only place that maps failures to HTTP status codes. Every error leaves as an
//! RFC 9457 `application/problem+json` body carrying the request id and trace id; internal detail
//! rides on the response as a [`Failure`] for the logging layer, and is never sent.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context::RequestContext;
use crate::store::StoreError;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Most problems one 422 lists; the rest are only counted (`omitted_errors`), so that a small
/// request full of mistakes cannot make a large response.
pub const MAX_LISTED_ERRORS: usize = 50;

/// The realm of every `WWW-Authenticate` challenge.
pub const REALM: &str = "orders-api";

/// One invalid input, located by a JSON pointer into the body or by a query parameter name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// RFC 6901 pointer into the request body, e.g. `/items/0/sku`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Query parameter name, for errors in the query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: the request is unusable for another reason (bad query encoding).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401: no `Authorization: Bearer` credentials.
    #[error("no API key")]
    Unauthenticated,
    /// 401: a bearer token that is malformed or matches no configured key.
    #[error("invalid API key")]
    InvalidToken,
    /// 403: the key is valid but lacks the scope the request needs.
    #[error("API key lacks scope {scope}")]
    InsufficientScope {
        /// The scope the request needs.
        scope: &'static str,
    },
    /// 404: nothing at this path, or no such order.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405: the path exists, the method does not (axum adds `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: the order's current status forbids the change.
    #[error("conflict: {detail}")]
    Conflict {
        /// Human-readable explanation.
        detail: String,
        /// The order's status now.
        current_status: &'static str,
    },
    /// 409: a request with the same `Idempotency-Key` is still being processed.
    #[error("idempotency key in use")]
    IdempotencyInProgress,
    /// 412: `If-Match` names another version than the current one.
    #[error("precondition failed: {detail}")]
    PreconditionFailed {
        /// Human-readable explanation.
        detail: String,
        /// The current entity tag, sent as `ETag` so the client can retry with it.
        etag: Option<String>,
    },
    /// 428: a conditional request (`If-Match`) is required and was not made.
    #[error("precondition required: {0}")]
    PreconditionRequired(String),
    /// 422: the `Idempotency-Key` was used before with another request.
    #[error("idempotency key reused with another payload")]
    IdempotencyMismatch,
    /// 413: body larger than `server.body_limit`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: not `application/json`.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// 422: one entry per invalid field, the first [`MAX_LISTED_ERRORS`] of them.
    #[error("validation failed: {} problem(s)", .errors.len() + .omitted)]
    Validation {
        /// The problems listed.
        errors: Vec<FieldError>,
        /// How many more there were.
        omitted: usize,
    },
    /// 429: a rate-limit policy refused the request.
    #[error("rate limited by {violated:?}")]
    RateLimited {
        /// The refusing policies.
        violated: Vec<&'static str>,
        /// Whole seconds to wait, at least 1.
        retry_after: u64,
    },
    /// 503: the database failed or is unreachable (counts against the circuit breaker).
    #[error("{0}")]
    Database(#[from] StoreError),
    /// 503: the circuit breaker is open; the database is not asked.
    #[error("circuit breaker open")]
    CircuitOpen {
        /// Until the breaker lets a trial call through.
        retry_after: Duration,
    },
    /// 503: at the concurrency cap; refused at once, not queued.
    #[error("overloaded")]
    Overloaded,
    /// 503: the store is not ready yet (not connected, or its schema not current).
    #[error("not ready")]
    NotReady,
    /// 504: the request took longer than `server.request_timeout`.
    #[error("request timed out")]
    Timeout,
    /// 503: a dependency is down or saturated; retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500: a bug or a broken invariant; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    omitted_errors: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_status: Option<&'a str>,
    #[serde(rename = "violated-policies", skip_serializing_if = "Option::is_none")]
    violated_policies: Option<&'a [&'static str]>,
}

impl ApiError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } | Self::IdempotencyInProgress => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Database(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::CircuitOpen { .. } | Self::Overloaded | Self::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6750 `WWW-Authenticate` challenge of a 401 or 403.
    fn challenge(&self) -> Option<HeaderValue> {
        let value = match self {
            Self::Unauthenticated => format!("Bearer realm=\"{REALM}\""),
            Self::InvalidToken => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            Self::InsufficientScope { scope } => {
                format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{scope}\"")
            }
            _ => return None,
        };
        HeaderValue::from_str(&value).ok()
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "urn:orders-api:problem:validation",
            Self::Conflict { .. } => "urn:orders-api:problem:invalid-transition",
            Self::MalformedJson(_) => "urn:orders-api:problem:malformed-json",
            Self::RateLimited { .. } => "urn:orders-api:problem:rate-limited",
            Self::CircuitOpen { .. } => "urn:orders-api:problem:circuit-open",
            Self::Overloaded => "urn:orders-api:problem:overloaded",
            Self::NotReady => "urn:orders-api:problem:not-ready",
            Self::IdempotencyInProgress => "urn:orders-api:problem:idempotency-key-in-use",
            Self::IdempotencyMismatch => "urn:orders-api:problem:idempotency-key-reused",
            Self::PreconditionFailed { .. } => "urn:orders-api:problem:precondition-failed",
            Self::PreconditionRequired(_) => "urn:orders-api:problem:precondition-required",
            Self::Unauthenticated | Self::InvalidToken => "urn:orders-api:problem:unauthenticated",
            Self::InsufficientScope { .. } => "urn:orders-api:problem:insufficient-scope",
            _ => "about:blank",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::MalformedJson(e) => format!("the body is not valid JSON: {e}"),
            Self::BadRequest(d) | Self::NotFound(d) | Self::UnsupportedMediaType(d) => d.clone(),
            Self::Unauthenticated => {
                "this API needs an API key: send Authorization: Bearer <key>".into()
            }
            Self::InvalidToken => "the API key is malformed or not valid".into(),
            Self::InsufficientScope { scope } => {
                format!("the API key lacks the scope {scope} this request needs")
            }
            Self::MethodNotAllowed => "this path does not support this method; see Allow".into(),
            Self::Conflict { detail, .. } | Self::PreconditionFailed { detail, .. } => {
                detail.clone()
            }
            Self::PreconditionRequired(d) => d.clone(),
            Self::IdempotencyInProgress => "a request with this Idempotency-Key is still being \
                processed; retry after it completes"
                .into(),
            Self::IdempotencyMismatch => "this Idempotency-Key was already used with a \
                different request; use a new key for a new request"
                .into(),
            Self::PayloadTooLarge => "the request body is larger than the server accepts".into(),
            Self::Validation { errors, omitted } => match (errors.len() + omitted, omitted) {
                (1, _) => "1 invalid field; see errors".into(),
                (n, 0) => format!("{n} invalid fields; see errors"),
                (n, _) => format!(
                    "{n} invalid fields; the first {} are listed in errors",
                    errors.len()
                ),
            },
            Self::RateLimited { violated, .. } => {
                format!(
                    "rate limit exceeded ({}); see Retry-After",
                    violated.join(", ")
                )
            }
            Self::CircuitOpen { .. } => {
                "the database is failing; requests are refused until it recovers (see Retry-After)"
                    .into()
            }
            Self::Overloaded => "too many requests in flight; retry shortly".into(),
            Self::NotReady => "the service is starting and its database is not ready yet; \
                retry shortly"
                .into(),
            Self::Timeout => "the request took too long and was abandoned".into(),
            Self::Database(StoreError::Unavailable(_)) | Self::Unavailable(_) => {
                "a dependency is unavailable; retry later".into()
            }
            Self::Database(_) | Self::Internal(_) => {
                "an internal error occurred; quote the request_id".into()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let failure = match &self {
            Self::Internal(cause) => Some(Failure::error("request failed", cause.clone())),
            Self::Database(e @ StoreError::Unavailable(_)) => {
                Some(Failure::warn("database unavailable", e.to_string()))
            }
            Self::Database(e) => Some(Failure::error("database error", e.to_string())),
            Self::Unavailable(cause) => {
                Some(Failure::warn("dependency unavailable", cause.clone()))
            }
            _ => None,
        };
        let (errors, omitted_errors, current_status) = match &self {
            Self::Validation { errors, omitted } => (
                Some(errors.as_slice()),
                (*omitted > 0).then_some(*omitted),
                None,
            ),
            Self::Conflict { current_status, .. } => (None, None, Some(*current_status)),
            _ => (None, None, None),
        };
        let problem = Problem {
            kind: self.kind(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            request_id: RequestContext::request_id(),
            trace_id: RequestContext::trace_id(),
            errors,
            omitted_errors,
            current_status,
            violated_policies: match &self {
                Self::RateLimited { violated, .. } => Some(violated.as_slice()),
                _ => None,
            },
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (status, body).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let retry_after = match &self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::CircuitOpen { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Self::PreconditionFailed {
            etag: Some(etag), ..
        } = &self
            && let Ok(v) = HeaderValue::from_str(etag)
        {
            headers.insert(header::ETAG, v);
        }
        if let Some(challenge) = self.challenge() {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(failure) = failure {
            res.extensions_mut().insert(failure);
        }
        res
    }
}

/// Why a request failed on our side (a 5xx with a cause the client is not told), carried on
/// the response for the layer that logs requests ([`Failure::log`]), so that building an
/// error response never writes a log line of its own.
#[derive(Debug, Clone)]
pub struct Failure {
    error: bool,
    message: &'static str,
    cause: String,
}

impl Failure {
    fn error(message: &'static str, cause: String) -> Self {
        Self {
            error: true,
            message,
            cause,
        }
    }

    fn warn(message: &'static str, cause: String) -> Self {
        Self {
            error: false,
            message,
            cause,
        }
    }

    /// Writes the event (ERROR for a bug of ours, WARN for a dependency that is down), in the
    /// current span.
    pub fn log(&self) {
        if self.error {
            tracing::error!(error = %self.cause, "{}", self.message);
        } else {
            tracing::warn!(error = %self.cause, "{}", self.message);
        }
    }
}

/// The fallback for unmatched paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no resource at this path".into())
}

/// The fallback for known paths with an unsupported method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
