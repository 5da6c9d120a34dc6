//! `x-request-id`: accepted when sane, minted (UUIDv7) otherwise, echoed on the response and
//! put in the request's [`RequestContext`](crate::context::RequestContext) (error bodies quote
//! it) and on its span (every log line of the request carries it).

use axum::http::{HeaderName, HeaderValue};

/// The request id header.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest accepted incoming id.
const MAX_LEN: usize = 128;

/// The id to use for a request: the caller's if it is 1-128 visible ASCII characters (kept as
/// the header value it came in, without a copy), else a new UUIDv7.
pub fn accept_or_mint(incoming: Option<&HeaderValue>) -> HeaderValue {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_LEN
                && v.as_bytes().iter().all(u8::is_ascii_graphic) =>
        {
            v.clone()
        }
        _ => {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
            // A hyphenated UUID is visible ASCII: always a valid header value.
            HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sane_ids_only() {
        let hv = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(accept_or_mint(Some(&hv("abc-123"))), "abc-123");
        let long = "a".repeat(129);
        assert_ne!(accept_or_mint(Some(&hv(&long))), long.as_str());
        assert_ne!(accept_or_mint(Some(&hv("has space"))), "has space");
        assert_eq!(accept_or_mint(Some(&hv(&"a".repeat(128)))).len(), 128);
        let minted = accept_or_mint(None);
        assert_eq!(
            uuid::Uuid::parse_str(minted.to_str().unwrap()).map(|u| u.get_version_num()),
            Ok(7)
        );
    }
}
