//! Idempotent creates (draft-ietf-httpapi-idempotency-key-header): the `Idempotency-Key` value,
//! the request fingerprint, and what a stored record tells a repeated request. No HTTP framework
//! and no SQL here: the handlers decide, the store persists (so a retry works on any replica).
//!
//! A record is *held* while its first request runs (until `locked_until`, so a crashed replica's
//! hold lapses), then *completed* with the response, kept until `expires_at`. A repeat of a
//! completed request replays the response; a repeat while held is a conflict (409); the same key
//! with another payload is refused (422). Keys are scoped per client (the API key, else the
//! client address): one client cannot replay or block another's. Only completed records expire
//! by the TTL; a hold ends at `locked_until`, whatever the TTL.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;

/// The header that carries the key.
pub const HEADER: &str = "idempotency-key";

/// The response header that marks a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// A parsed `Idempotency-Key`: 1-255 printable ASCII characters. The draft sends it as a
/// structured-field string (`"abc"`); a bare token (`abc`) is accepted too, as most clients send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header value, or says what is wrong with it.
    pub fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let value = match raw {
            [b'"', inner @ .., b'"'] => unescape(inner).ok_or("has a malformed quoted string")?,
            [b'"', ..] => return Err("has a malformed quoted string"),
            _ => raw.to_vec(),
        };
        if value.is_empty() {
            return Err("must not be empty");
        }
        if value.len() > MAX_KEY_LEN {
            return Err("must be at most 255 characters");
        }
        if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err("may contain only printable ASCII characters");
        }
        String::from_utf8(value)
            .map(Self)
            .map_err(|_| "may contain only printable ASCII characters")
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The inside of a structured-field string: `\"` and `\\` are the only escapes.
fn unescape(inner: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e),
                _ => return None,
            },
            b'"' => return None,
            _ => out.push(b),
        }
    }
    Some(out)
}

/// SHA-256 (hex) of what makes two requests "the same": method, route and JSON body. The body is
/// the parsed value re-serialised, so whitespace does not matter but member order does.
pub fn fingerprint(method: &str, route: &str, body: &serde_json::Value) -> String {
    let mut hash = Sha256::new();
    for part in [method.as_bytes(), b"\n", route.as_bytes(), b"\n"] {
        hash.update(part);
    }
    // Writing a Value into a hasher cannot fail: it is valid JSON by construction.
    let _ = serde_json::to_writer(HashWriter(&mut hash), body);
    hex(&hash.finalize())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One request's claim on a key: what the store writes when it reserves the key, and the token
/// (`created_at`) with which it later completes or releases exactly its own hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The client: `key:<api key id>` or `ip:<address>`.
    pub scope: String,
    /// The key the client sent.
    pub key: IdempotencyKey,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// When the hold was taken; identifies this hold.
    pub created_at: DateTime<Utc>,
    /// Until when the hold excludes repeats (then a repeat may take it over).
    pub locked_until: DateTime<Utc>,
    /// When the completed record may be purged.
    pub expires_at: DateTime<Utc>,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status code.
    pub status: u16,
    /// The headers worth replaying (content type, location, ETag), in order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

/// Renders the response a create will store with its order, once the store has given the
/// order its place (`created_at`, in commit order) inside the transaction that completes the
/// key. `Err` only if the response cannot be encoded.
pub type Render = dyn Fn(&crate::orders::Order) -> Result<StoredResponse, String> + Send + Sync;

/// What reserving a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The key is this request's now: process it, then complete or release the hold.
    Acquired,
    /// Another request with this key is still being processed.
    InProgress,
    /// The key was used with another payload.
    Mismatch,
    /// The key's request finished: replay this.
    Completed(StoredResponse),
}

impl Reservation {
    /// What an existing, unexpired record means for a request with `fingerprint`.
    pub fn of_existing(
        stored_fingerprint: &str,
        fingerprint: &str,
        response: Option<StoredResponse>,
    ) -> Self {
        match response {
            _ if stored_fingerprint != fingerprint => Self::Mismatch,
            None => Self::InProgress,
            Some(r) => Self::Completed(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_parse_bare_or_quoted() {
        let parse = |s: &str| IdempotencyKey::parse(s.as_bytes()).map(|k| k.0);
        assert_eq!(parse("abc-123").as_deref(), Ok("abc-123"));
        assert_eq!(parse("\"8e03978e\"").as_deref(), Ok("8e03978e"));
        assert_eq!(parse(r#""a\"b\\c""#).as_deref(), Ok(r#"a"b\c"#));
        assert_eq!(parse("with space").as_deref(), Ok("with space"));
        assert!(parse("").is_err());
        assert!(parse("\"\"").is_err());
        assert!(parse(r#""a\x""#).is_err());
        assert!(parse(r#""a"b""#).is_err());
        assert!(parse("\"unterminated").is_err());
        assert!(parse(&"k".repeat(255)).is_ok());
        assert!(parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse(b"tab\there").is_err());
        assert!(IdempotencyKey::parse("é".as_bytes()).is_err());
    }

    #[test]
    fn fingerprints_tell_payloads_apart() {
        let a = fingerprint("POST", "/api/v2/orders", &json!({"x": 1, "y": [2]}));
        let same: serde_json::Value = serde_json::from_str("{ \"x\" : 1, \"y\" : [ 2 ] }").unwrap();
        assert_eq!(a, fingerprint("POST", "/api/v2/orders", &same));
        assert_eq!(a.len(), 64);
        assert_ne!(a, fingerprint("POST", "/api/v1/orders", &same));
        assert_ne!(
            a,
            fingerprint("POST", "/api/v2/orders", &json!({"x": 2, "y": [2]}))
        );
    }

    #[test]
    fn existing_records_decide_in_order() {
        let done = StoredResponse {
            status: 201,
            headers: vec![],
            body: b"{}".to_vec(),
        };
        assert_eq!(
            Reservation::of_existing("a", "b", Some(done.clone())),
            Reservation::Mismatch
        );
        assert_eq!(
            Reservation::of_existing("a", "b", None),
            Reservation::Mismatch
        );
        assert_eq!(
            Reservation::of_existing("a", "a", None),
            Reservation::InProgress
        );
        assert_eq!(
            Reservation::of_existing("a", "a", Some(done.clone())),
            Reservation::Completed(done)
        );
    }
}
