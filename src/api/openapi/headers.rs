//! The headers of the documents: those every response carries, the request id a client may send,
//! and which of them a client can count on (`required`).

use axum::body::Bytes;
use serde_json::Value;
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, OpenApi, RefOr, Required, Response, Type};

use crate::middleware::deprecation::SUCCESSOR_LINK;

/// Headers present on every response they are documented on. utoipa's `Header` has no
/// `required` member, so it is set on the rendered document.
const REQUIRED: [&str; 8] = [
    "x-request-id",
    "Location",
    "ETag",
    "Retry-After",
    "WWW-Authenticate",
    "Deprecation",
    "Sunset",
    "Link",
];

/// The request id: what the server accepts from a client, and what it always answers with.
const REQUEST_ID_PATTERN: &str = "^[!-~]{1,128}$";

fn string(pattern: Option<&str>, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(pattern),
        )
        .description(Some(description))
        .build()
}

/// `Retry-After`: whole seconds, at least 1.
pub fn retry_after() -> Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        )
        .description(Some("Seconds to wait before retrying."))
        .build()
}

/// `WWW-Authenticate`: the bearer challenge.
pub fn www_authenticate() -> Header {
    string(
        Some("^Bearer"),
        "The challenge (RFC 6750), e.g. `Bearer realm=\"orders-api\"`.",
    )
}

/// `ETag`: the order's version as a strong entity tag.
pub fn etag() -> Header {
    string(
        Some("^\"[0-9]+\"$"),
        "The order's version as a strong entity tag, e.g. `\"3\"`: send it as `If-Match`.",
    )
}

fn replayed() -> Header {
    string(
        Some("^true$"),
        "Present when this is the stored response of an earlier request with the same \
         `Idempotency-Key`.",
    )
}

fn location() -> Header {
    string(Some("^/api/v[0-9]+/orders/"), "The path of the new order.")
}

/// Adds the headers of every response to every response of `doc`, the shared components
/// included; with `deprecated`, the version's deprecation headers too.
pub(super) fn add_to_every_response(doc: &mut OpenApi, deprecated: bool) {
    let mut common = vec![
        (
            "x-request-id",
            string(
                Some(REQUEST_ID_PATTERN),
                "The client's id if it sent an acceptable one, else one minted by the server.",
            ),
        ),
        (
            "RateLimit",
            string(
                None,
                "The remaining quota per policy, when rate limiting is on.",
            ),
        ),
        (
            "RateLimit-Policy",
            string(None, "The rate-limit policies, when rate limiting is on."),
        ),
    ];
    if deprecated {
        common.extend([
            (
                "Deprecation",
                string(
                    Some("^@-?[0-9]+$"),
                    "When this version was deprecated (RFC 9745: `@` and Unix seconds).",
                ),
            ),
            (
                "Sunset",
                string(
                    Some("^[A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"),
                    "When this version stops being served (RFC 8594, an HTTP date).",
                ),
            ),
            (
                "Link",
                string(
                    Some("rel=\"successor-version\""),
                    &format!("The successor version: `{SUCCESSOR_LINK}`."),
                ),
            ),
        ]);
    }
    let add = |status: &String, response: &mut RefOr<Response>| {
        if let RefOr::T(response) = response {
            // Every create answers 201 with the new resource's path, replayed or not.
            let created = (status == "201")
                .then(|| {
                    [
                        ("Location", location()),
                        ("Idempotent-Replayed", replayed()),
                    ]
                })
                .into_iter()
                .flatten();
            for (name, header) in common.iter().cloned().chain(created) {
                response.headers.entry(name.into()).or_insert(header);
            }
            // Operations name the ETag they send; its form is the same everywhere.
            if let Some(tag) = response.headers.get_mut("ETag") {
                *tag = etag();
            }
        }
    };
    if let Some(components) = doc.components.as_mut() {
        for (name, response) in &mut components.responses {
            add(name, response);
        }
    }
    for item in doc.paths.paths.values_mut() {
        for op in super::operations(item) {
            for (status, response) in &mut op.responses.responses {
                add(status, response);
            }
        }
    }
}

/// Declares the optional `x-request-id` request header.
pub(super) fn add_request_id_parameter(op: &mut Operation) {
    let parameter = ParameterBuilder::new()
        .name("x-request-id")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Correlates logs and problems. Any value is accepted: one that is not 1 to 128 \
             visible ASCII characters is replaced by a server-minted id, and the response's \
             x-request-id says which id was used.",
        ))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build();
    op.parameters.get_or_insert_with(Vec::new).push(parameter);
}

/// Renders `doc` with `required: true` on the headers a client can count on.
pub(super) fn render_with_required(doc: &OpenApi) -> Bytes {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    mark_required(&mut value);
    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

fn mark_required(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(headers)) = map.get_mut("headers") {
                for (name, header) in headers.iter_mut() {
                    if let (true, Value::Object(h)) = (REQUIRED.contains(&name.as_str()), header) {
                        h.insert("required".into(), Value::Bool(true));
                    }
                }
            }
            map.values_mut().for_each(mark_required);
        }
        Value::Array(items) => items.iter_mut().for_each(mark_required),
        _ => {}
    }
}
