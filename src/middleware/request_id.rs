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
            // Its random bits come from the thread's fast generator: `Uuid::now_v7` asks the
            // kernel (a getrandom(2) call) for every id, and a request id is no secret.
            let millis = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let random = fastrand::u128(..).to_le_bytes();
            let mut random_bytes = [0u8; 10];
            random_bytes.copy_from_slice(&random[..10]);
            let id = uuid::Builder::from_unix_timestamp_millis(millis, &random_bytes).into_uuid();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = id.hyphenated().encode_lower(&mut buf);
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
        let parsed = uuid::Uuid::parse_str(minted.to_str().unwrap()).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        // Its time is now (to the second, either side of a tick).
        let (secs, _) = parsed.get_timestamp().unwrap().to_unix();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now.abs_diff(secs) <= 1, "{secs} vs {now}");
        assert_ne!(accept_or_mint(None), minted, "ids are random");
    }
}
