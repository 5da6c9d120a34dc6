//! `x-request-id`: accepted when sane, minted (UUIDv7) otherwise, echoed on the response, kept as
//! a request extension (the server span records it, so it is on every log line) and readable by
//! error bodies.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The request id header.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted incoming id.
const MAX_LEN: usize = 128;

/// The request's id, as a request extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

tokio::task_local! {
    static CURRENT: String;
}

/// The request id of the request being served by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The id to use for a request: the caller's if it is 1-128 visible ASCII characters.
pub fn accept_or_mint(incoming: Option<&HeaderValue>) -> String {
    incoming
        .map(HeaderValue::as_bytes)
        .filter(|b| !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic()))
        .and_then(|b| std::str::from_utf8(b).ok())
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string)
}

/// Middleware: see the module docs.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = accept_or_mint(req.headers().get(&HEADER));
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = CURRENT.scope(id.clone(), next.run(req)).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER.clone(), value);
    }
    res
}

/// Middleware for the ops listener: a plain span carrying the request id (not exported).
pub async fn ops_span(req: Request, next: Next) -> Response {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let span = tracing::debug_span!(target: OPS_TARGET, "ops request", request_id = %id);
    tracing::Instrument::instrument(next.run(req), span).await
}

/// The tracing target of ops-listener spans; never exported as traces.
pub const OPS_TARGET: &str = "orders_api::ops";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sane_ids_only() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(accept_or_mint(Some(&hv("abc-123"))), "abc-123");
        let long = "a".repeat(129);
        assert_ne!(accept_or_mint(Some(&hv(&long))), long);
        assert_ne!(accept_or_mint(Some(&hv("has space"))), "has space");
        assert_eq!(accept_or_mint(Some(&hv(&"a".repeat(128)))).len(), 128);
        let minted = accept_or_mint(None);
        assert_eq!(
            uuid::Uuid::parse_str(&minted).map(|u| u.get_version_num()),
            Ok(7)
        );
    }
}
