//! `x-request-id`: accepted when sane, minted (UUIDv7) otherwise, echoed on the response, recorded
//! on the request span (so on every log line) and readable by error bodies.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request id header.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted incoming id.
const MAX_LEN: usize = 128;

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
pub async fn layer(req: Request, next: Next) -> Response {
    let id = accept_or_mint(req.headers().get(&HEADER));
    let span = tracing::info_span!("request", request_id = %id);
    let mut res = CURRENT
        .scope(id.clone(), next.run(req).instrument(span))
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(HEADER.clone(), value);
    }
    res
}

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
