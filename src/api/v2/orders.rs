//! v2 order handlers: create (idempotent with `Idempotency-Key`), read (`ETag`,
//! `If-None-Match`), list (cursor pages), and status changes that require `If-Match`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::PREFIX;
use super::requests::{IfMatch, IfNoneMatch, ListQueryV2, NewOrderV2};
use super::wire::{
    OrderV2, PageV2, encode_cursor, parse_list_query, parse_new_order, position, query_string,
};
use crate::api::body::{JsonBody, QueryPairs};
use crate::api::create::{self, Idempotency};
use crate::api::openapi::{
    BadRequest, Conflict, IdempotencyKey, PreconditionFailed, PreconditionRequired, StatusChange,
    UnprocessableEntity,
};
use crate::api::status::{Expect, change_status, etag, not_found, parse_id, parse_status_change};
use crate::config::IdempotencySettings;
use crate::error::ApiError;
use crate::orders::Order;
use crate::state::AppState;
use crate::store::Store;

/// The path of the collection, for `Location` and links.
const COLLECTION: &str = "/api/v2/orders";

/// The v2 order routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/orders"), get(list).post(create))
        .route(
            &format!("{PREFIX}/orders/{{id}}"),
            get(fetch).patch(update_status),
        )
}

/// Creates an order.
#[utoipa::path(
    post,
    path = "/api/v2/orders",
    operation_id = "createOrder_v2",
    tag = "orders",
    params(IdempotencyKey),
    request_body(content = NewOrderV2, content_type = "application/json"),
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key`, the first \
            request's response replayed); `Location` names the order", body = OrderV2,
            headers(("ETag" = String, description = "The order's version"))),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(store): State<Store>,
    State(cfg): State<IdempotencySettings>,
    idem: Idempotency,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let new = parse_new_order(&body)?;
    create::create(
        &store,
        cfg,
        idem,
        (COLLECTION, &body),
        new,
        |order: &Order| (OrderV2::from(order), vec![("etag".into(), etag(order))]),
    )
    .await
}

/// Reads one order; with `If-None-Match`, 304 while it is unchanged.
#[utoipa::path(
    get,
    path = "/api/v2/orders/{id}",
    operation_id = "getOrder_v2",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"), IfNoneMatch),
    responses(
        (status = 200, description = "The order", body = OrderV2,
            headers(("ETag" = String, description = "The order's version"))),
        (status = 304, description = "Unchanged since the tag in `If-None-Match`",
            headers(("ETag" = String, description = "The order's version"))),
    ),
    security(("bearer" = []))
)]
pub async fn fetch(
    State(store): State<Store>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let uuid = parse_id(&id)?;
    let order = store.get(uuid).await?.ok_or_else(|| not_found(&id))?;
    let tag = etag(&order);
    if if_none_match(&headers, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    Ok(with_etag(tag, &order))
}

/// Lists orders, newest first, a cursor page at a time.
#[utoipa::path(
    get,
    path = "/api/v2/orders",
    operation_id = "listOrders_v2",
    tag = "orders",
    params(ListQueryV2),
    responses(
        (status = 200, description = "A page of orders", body = PageV2),
        (status = 400, response = BadRequest),
        (status = 422, response = UnprocessableEntity),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(store): State<Store>,
    QueryPairs(params): QueryPairs,
) -> Result<Json<PageV2>, ApiError> {
    let q = parse_list_query(&params)?;
    // One more than asked tells whether there is a next page without counting.
    let mut page = store.list_after(&q.filter, q.after, q.limit + 1).await?;
    let more = page.len() > q.limit as usize;
    page.truncate(q.limit as usize);
    let next_cursor = page
        .last()
        .filter(|_| more)
        .map(|last| encode_cursor(position(last)));
    let this = q.after.map(encode_cursor);
    Ok(Json(PageV2 {
        data: page.iter().map(OrderV2::from).collect(),
        links: super::wire::Links {
            this: format!("{COLLECTION}?{}", query_string(&q, this.as_deref())),
            next: next_cursor
                .as_deref()
                .map(|c| format!("{COLLECTION}?{}", query_string(&q, Some(c)))),
        },
        next_cursor,
    }))
}

/// Moves an order to another status, if it is still at the version `If-Match` names and the
/// state machine allows it.
#[utoipa::path(
    patch,
    path = "/api/v2/orders/{id}",
    operation_id = "changeOrderStatus_v2",
    tag = "orders",
    params(("id" = Uuid, Path, description = "The order's id"), IfMatch),
    request_body(content = StatusChange, content_type = "application/json"),
    responses(
        (status = 200, description = "The order after the change", body = OrderV2,
            headers(("ETag" = String, description = "The order's new version"))),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 428, response = PreconditionRequired),
    ),
    security(("bearer" = []))
)]
pub async fn update_status(
    State(store): State<Store>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let uuid = parse_id(&id)?;
    let expect = if_match(&headers)?.ok_or_else(|| {
        ApiError::PreconditionRequired(
            "send If-Match with the order's ETag (from GET), or If-Match: * to change \
             whatever version is current"
                .into(),
        )
    })?;
    let to = parse_status_change(&body)?;
    let order = change_status(&store, uuid, to, &expect).await?;
    Ok(with_etag(etag(&order), &order))
}

/// 200 with the order and its tag.
fn with_etag(tag: String, order: &Order) -> Response {
    let mut res = Json(OrderV2::from(order)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res
}

/// The entity tags of a conditional header: `*` (`None`), or the listed tags as
/// `(weak, opaque-tag)` pairs. `Err` when a member is not an entity tag.
fn entity_tags(headers: &HeaderMap, name: header::HeaderName) -> Option<Result<Tags, ()>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut tags = Vec::new();
    for value in values {
        let Ok(text) = value.to_str() else {
            return Some(Err(()));
        };
        // A field with no tag at all names nothing: malformed, not a list that never matches.
        if text.trim().is_empty() {
            return Some(Err(()));
        }
        for member in members(text) {
            if member == "*" {
                return Some(Ok(Tags::Any));
            }
            let (weak, quoted) = match member.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, member),
            };
            match quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                Some(opaque) if !opaque.contains('"') => tags.push((weak, opaque.to_string())),
                _ => return Some(Err(())),
            }
        }
    }
    Some(Ok(Tags::List(tags)))
}

/// The members of a list header, split at the commas between them: a comma inside a quoted
/// entity tag belongs to the tag (RFC 9110 8.8.3 allows it there).
fn members(text: &str) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    text.split(move |c| {
        if c == '"' {
            quoted = !quoted;
        }
        c == ',' && !quoted
    })
    .map(str::trim)
    .filter(|m| !m.is_empty())
}

enum Tags {
    Any,
    List(Vec<(bool, String)>),
}

/// `If-Match`, compared strongly (RFC 9110 13.1.1): weak tags never match. `None` when absent.
fn if_match(headers: &HeaderMap) -> Result<Option<Expect>, ApiError> {
    match entity_tags(headers, header::IF_MATCH) {
        None => Ok(None),
        Some(Err(())) => Err(ApiError::BadRequest(
            "If-Match must be * or a list of entity tags such as \"3\"".into(),
        )),
        Some(Ok(Tags::Any)) => Ok(Some(Expect::Any)),
        // Strong comparison is byte for byte: a tag names a version only if it is exactly the
        // tag the server sends for it ("1"), never "01" or "+1".
        Some(Ok(Tags::List(tags))) => Ok(Some(Expect::Versions(
            tags.iter()
                .filter(|(weak, _)| !weak)
                .filter_map(|(_, opaque)| {
                    opaque
                        .parse::<i64>()
                        .ok()
                        .filter(|v| v.to_string() == *opaque)
                })
                .collect(),
        ))),
    }
}

/// Whether `If-None-Match` matches `tag` (weak comparison, RFC 9110 13.1.2). A malformed
/// header is ignored, as if absent: the full response is always a safe answer.
fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    match entity_tags(headers, header::IF_NONE_MATCH) {
        Some(Ok(Tags::Any)) => true,
        Some(Ok(Tags::List(tags))) => tags.iter().any(|(_, opaque)| {
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .is_some_and(|t| t == opaque)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn if_match_compares_strongly() {
        let parse = |v: &[&str]| if_match(&headers(header::IF_MATCH, v)).ok().flatten();
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["*"]), Some(Expect::Any));
        assert_eq!(parse(&["\"3\""]), Some(Expect::Versions(vec![3])));
        assert_eq!(
            parse(&["\"1\", W/\"2\"", "\"4\""]),
            Some(Expect::Versions(vec![1, 4]))
        );
        assert_eq!(parse(&["\"abc\""]), Some(Expect::Versions(vec![])));
        // Byte for byte: only the tag the server sends ("1") names version 1.
        assert_eq!(
            parse(&["\"01\", \"+1\", \"1 \", \"-0\""]),
            Some(Expect::Versions(vec![]))
        );
        assert_eq!(
            parse(&["\"a,b\", \"3\""]),
            Some(Expect::Versions(vec![3])),
            "a comma inside a tag is part of it"
        );
        assert!(if_match(&headers(header::IF_MATCH, &["3"])).is_err());
        assert!(if_match(&headers(header::IF_MATCH, &[""])).is_err());
        assert!(if_match(&headers(header::IF_MATCH, &["  "])).is_err());
        assert!(if_match(&headers(header::IF_MATCH, &["\"3"])).is_err());
    }

    #[test]
    fn if_none_match_compares_weakly() {
        let matches = |v: &[&str]| if_none_match(&headers(header::IF_NONE_MATCH, v), "\"7\"");
        assert!(matches(&["\"7\""]));
        assert!(matches(&["W/\"7\""]));
        assert!(matches(&["\"1\", \"7\""]));
        assert!(matches(&["*"]));
        assert!(!matches(&["\"8\""]));
        assert!(!matches(&[]));
        assert!(!matches(&["garbage"]));
    }
}
