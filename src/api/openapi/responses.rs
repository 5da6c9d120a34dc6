//! One problem+json response per error status, registered once as a component and referenced
//! by operations, and the statuses every operation can answer whatever its handler does.

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Components, ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{ToResponse, ToSchema};

use super::Problem;
use super::headers::{etag, retry_after, www_authenticate};
use crate::error::PROBLEM_JSON;

/// Component name and description of each error status the API answers with.
const ERRORS: [(u16, &str, &str); 14] = [
    (
        400,
        "BadRequest",
        "The body is not JSON, a header is malformed, or the query string cannot be decoded.",
    ),
    (
        401,
        "Unauthorized",
        "No valid API key: send `Authorization: Bearer <key>`.",
    ),
    (
        403,
        "Forbidden",
        "The API key may not perform this operation.",
    ),
    (
        404,
        "NotFound",
        "No order with this id (a value that is not a UUID names no order).",
    ),
    (
        409,
        "Conflict",
        "The order's status forbids the change (`current_status` says what it is), or a request with the same `Idempotency-Key` is still in progress.",
    ),
    (
        412,
        "PreconditionFailed",
        "`If-Match` names another version than the current one; `ETag` is the current one.",
    ),
    (
        413,
        "PayloadTooLarge",
        "The body is larger than the server accepts.",
    ),
    (
        415,
        "UnsupportedMediaType",
        "The body is not `application/json` (or `application/*+json`).",
    ),
    (
        422,
        "UnprocessableEntity",
        "Invalid fields or parameters (`errors` lists every one), or an `Idempotency-Key` reused with another request.",
    ),
    (
        428,
        "PreconditionRequired",
        "The change must be conditional: send `If-Match`.",
    ),
    (
        429,
        "TooManyRequests",
        "A rate-limit policy refused the request; see `violated-policies` and `Retry-After`.",
    ),
    (500, "InternalServerError", "A bug; quote the `request_id`."),
    (
        503,
        "ServiceUnavailable",
        "Overloaded, the database is unavailable, or the circuit breaker is open; retry after `Retry-After` seconds.",
    ),
    (
        504,
        "GatewayTimeout",
        "The request took longer than the server's budget.",
    ),
];

/// Statuses any operation can answer, from layers outside the handlers.
const ALWAYS: [u16; 4] = [429, 500, 503, 504];
/// Statuses of operations that read a JSON body: malformed, too large, not JSON, invalid.
const BODY: [u16; 4] = [400, 413, 415, 422];
/// Statuses of operations on one order.
const ONE: [u16; 1] = [404];
/// Statuses of operations that require an API key.
const SECURED: [u16; 2] = [401, 403];

/// The problem+json response for `STATUS`, by reference, for `responses(...)` in
/// `#[utoipa::path]`.
#[derive(Debug)]
pub struct ProblemResponse<const STATUS: u16>;

impl<const STATUS: u16> ToResponse<'static> for ProblemResponse<STATUS> {
    fn response() -> (&'static str, RefOr<Response>) {
        let name = ERRORS
            .iter()
            .find(|(status, ..)| *status == STATUS)
            .map_or("Problem", |(_, name, _)| name);
        (name, RefOr::Ref(Ref::from_response_name(name)))
    }
}

/// 400.
pub type BadRequest = ProblemResponse<400>;
/// 409.
pub type Conflict = ProblemResponse<409>;
/// 412.
pub type PreconditionFailed = ProblemResponse<412>;
/// 428.
pub type PreconditionRequired = ProblemResponse<428>;
/// 422.
pub type UnprocessableEntity = ProblemResponse<422>;

/// Adds the error responses the operations refer to (and only those: a version's document
/// describes nothing it does not answer with) to the components.
pub(super) fn register<'a>(
    components: &mut Components,
    operations: impl Iterator<Item = &'a Operation>,
) {
    let used: Vec<String> = operations
        .flat_map(|op| op.responses.responses.values())
        .filter_map(|r| match r {
            RefOr::Ref(r) => Some(r.ref_location.clone()),
            RefOr::T(_) => None,
        })
        .collect();
    for (status, name, description) in ERRORS {
        if !used.contains(&Ref::from_response_name(name).ref_location) {
            continue;
        }
        let mut response = ResponseBuilder::new().description(description).content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(Problem::name())))
                .build(),
        );
        if matches!(status, 429 | 503) {
            response = response.header("Retry-After", retry_after());
        }
        if status == 412 {
            response = response.header("ETag", etag());
        }
        if matches!(status, 401 | 403) {
            response = response.header("WWW-Authenticate", www_authenticate());
        }
        components
            .responses
            .insert(name.into(), RefOr::T(response.build()));
    }
}

/// Adds the statuses that follow from an operation's shape rather than its logic, unless it
/// already describes them: those outer layers produce, those of reading a JSON body (and parsing
/// it: 422), 404 where the path names an order, and those of authentication where the operation
/// requires a key.
pub(super) fn add_common(path: &str, op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let statuses = ALWAYS
        .iter()
        .chain(if op.request_body.is_some() {
            BODY.as_slice()
        } else {
            &[]
        })
        .chain(if path.contains("{id}") {
            ONE.as_slice()
        } else {
            &[]
        })
        .chain(if secured { SECURED.as_slice() } else { &[] });
    for status in statuses {
        if let Some((_, name, _)) = ERRORS.iter().find(|(s, ..)| s == status) {
            op.responses
                .responses
                .entry(status.to_string())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(*name)));
        }
    }
}
