//! What the versioned OpenAPI 3.1 documents share, so that v1 and v2 describe errors, headers
//! and security the same way: the problem schema, one error response per status, the headers
//! every response carries, the bearer scheme, and the route that serves a document.
//!
//! Each version derives its operations and wire schemas from its own handlers and types with
//! `utoipa`; [`finish`] then adds what applies to every operation of a version (the error
//! statuses outer layers produce, the request id and rate-limit headers, the deprecation
//! headers of a deprecated version), so no handler can forget them.

mod headers;
mod responses;
mod schemas;

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::routing::{MethodRouter, get};
use utoipa::openapi::path::{Operation, OperationBuilder, PathItem};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Deprecated, ObjectBuilder, OpenApi, ResponseBuilder, Type};
use utoipa::{PartialSchema, ToSchema};

pub use responses::{
    BadRequest, Conflict, PreconditionFailed, PreconditionRequired, ProblemResponse,
    UnprocessableEntity,
};
pub use schemas::{
    FieldError, IdempotencyKey, Problem, StatusChange, currency, customer_id, order_status, sku,
};

/// The last segment of every version's document path (`/api/v1/openapi.json`).
pub const DOCUMENT_NAME: &str = "/openapi.json";

/// The name of the bearer security scheme; operations list it in `security(...)`.
pub const BEARER: &str = "bearer";

/// What differs between the versions' documents.
#[derive(Debug, Clone, Copy)]
pub struct Version {
    /// `v1` or `v2`: the document is served at `/api/<name>/openapi.json`.
    pub name: &'static str,
    /// Whether the version is deprecated: operations are marked and every response carries
    /// `Deprecation`, `Sunset` and `Link`.
    pub deprecated: bool,
    /// Whether the API asks for API keys (`auth.enabled`). When it does not, the document lists
    /// no security requirement, no bearer scheme and no 401 or 403: it describes the service
    /// as it runs.
    pub secured: bool,
}

/// Completes a version's derived document with what every operation shares, and renders it.
pub fn finish(mut doc: OpenApi, version: Version) -> Bytes {
    // utoipa fills the licence from Cargo.toml, which names none: an empty name says nothing.
    doc.info.license = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(Problem::name().into(), Problem::schema());
    components
        .schemas
        .insert(FieldError::name().into(), FieldError::schema());
    if version.secured {
        components.security_schemes.insert(
            BEARER.into(),
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
    doc.paths.paths.insert(
        format!("/api/{}{DOCUMENT_NAME}", version.name),
        document_item(version),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for op in operations(item) {
            if !version.secured {
                op.security = None;
            }
            responses::add_common(path, op);
            headers::add_request_id_parameter(op);
            if version.deprecated {
                op.deprecated = Some(Deprecated::True);
            }
        }
    }
    responses::register(
        components,
        doc.paths
            .paths
            .values_mut()
            .flat_map(operations)
            .map(|op| &*op),
    );
    headers::add_to_every_response(&mut doc, version.deprecated);
    headers::render_with_required(&doc)
}

fn document_item(version: Version) -> PathItem {
    let json = ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
        .build();
    let op = OperationBuilder::new()
        .operation_id(Some(format!("openApiDocument_{}", version.name)))
        .summary(Some("This version's OpenAPI 3.1 document (public)"))
        .tag("documents")
        .response(
            "200",
            ResponseBuilder::new()
                .description("The document")
                .content("application/json", json),
        )
        .build();
    PathItem::new(utoipa::openapi::HttpMethod::Get, op)
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// A `GET` route answering with the document `render` makes, rendered on the first request and
/// kept: building it at start would cost every instance start time and memory (the builder's
/// allocations) for a document most never serve.
pub fn route<S: Clone + Send + Sync + 'static>(
    render: impl Fn() -> Bytes + Clone + Send + Sync + 'static,
) -> MethodRouter<S> {
    let cache = std::sync::Arc::new(OnceLock::<Bytes>::new());
    get(move || {
        let body = cache.get_or_init(&render).clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
        }
    })
}
