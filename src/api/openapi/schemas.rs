//! Schemas both versions share: the problem body, and the strings whose rules the domain sets
//! (so the documents cannot drift from the parsers: the lists come from the domain types).

use serde::{Deserialize, Serialize};
use utoipa::openapi::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use crate::orders::{Currency, OrderStatus};

/// An RFC 9457 problem: the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `about:blank` (see `title`) or `urn:orders-api:problem:*`.
    #[serde(rename = "type")]
    #[schema(example = "urn:orders-api:problem:validation")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// The request's `x-request-id`; quote it when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub request_id: Option<String>,
    /// The W3C trace id of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: Option<String>,
    /// 422 only: one entry per invalid field or parameter, the first 50 of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_items = 50)]
    pub errors: Option<Vec<FieldError>>,
    /// 422 only, when more than 50 problems were found: how many `errors` does not list.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1)]
    pub omitted_errors: Option<u64>,
    /// 409 only: the order's status now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = order_status)]
    pub current_status: Option<String>,
    /// 429 only: the rate-limit policies that refused the request.
    #[serde(rename = "violated-policies", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub violated_policies: Option<Vec<String>>,
}

/// One invalid field or query parameter of a 422.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// RFC 6901 pointer into the body, e.g. `/items/0/sku`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pointer: Option<String>,
    /// The query parameter, for errors in the query string.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub parameter: Option<String>,
    /// What is wrong.
    pub detail: String,
}

/// A status name, as the wire writes it (the names come from the state machine).
pub fn order_status() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(OrderStatus::ALL.map(OrderStatus::as_str)))
}

/// An accepted currency code (the list is the domain's).
pub fn currency() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::codes()))
}

/// The optional `Idempotency-Key` request header of create operations.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes a retried create safe: the same key with the same body answers with the first
    /// result instead of creating a second order. 1-255 printable ASCII characters, no
    /// leading or trailing space.
    #[serde(rename = "Idempotency-Key")]
    #[param(
        nullable = false,
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]([ -~]{0,253}[!-~])?$"
    )]
    pub key: Option<String>,
}

/// The body of a status change: `{"status": "..."}`. Unknown members are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The status to move to; the state machine decides whether it may (409 if not).
    #[schema(schema_with = order_status)]
    pub status: String,
}

fn string_matching(pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
}

/// A customer id: 1-64 of `A-Z a-z 0-9 _ -` (`CustomerId::parse`).
pub fn customer_id() -> ObjectBuilder {
    string_matching("^[A-Za-z0-9_-]{1,64}$")
}

/// A SKU: 1-64 of `A-Z 0-9 -` (`Sku::parse`).
pub fn sku() -> ObjectBuilder {
    string_matching("^[A-Z0-9-]{1,64}$")
}
