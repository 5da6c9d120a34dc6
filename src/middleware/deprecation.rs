//! v1 is deprecated: every `/api/v1` response, errors included, carries `Deprecation`
//! (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the successor version, so that clients
//! and their gateways learn it from any call they already make.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::ApiSettings;

/// The prefix of the routes that announce their deprecation.
pub const V1_PREFIX: &str = "/api/v1";

/// The `Deprecation` header (not in `http`'s list of standard names).
pub static DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// The `Sunset` header.
pub static SUNSET: HeaderName = HeaderName::from_static("sunset");

/// The `Link` value naming v1's successor.
pub const SUCCESSOR_LINK: &str = "</api/v2/orders>; rel=\"successor-version\"";

/// The three header values, rendered once at start-up.
#[derive(Debug, Clone)]
pub struct V1Headers {
    deprecation: HeaderValue,
    sunset: HeaderValue,
    link: HeaderValue,
}

impl V1Headers {
    /// Renders the dates of `[api]`.
    pub fn new(api: &ApiSettings) -> Self {
        Self {
            deprecation: ascii(format!("@{}", api.v1_deprecated_at.timestamp())),
            sunset: imf_fixdate(api.v1_sunset),
            link: HeaderValue::from_static(SUCCESSOR_LINK),
        }
    }
}

/// RFC 9110 IMF-fixdate, e.g. `Wed, 30 Jun 2027 00:00:00 GMT`.
pub fn imf_fixdate(t: chrono::DateTime<chrono::Utc>) -> HeaderValue {
    ascii(t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

fn ascii(text: String) -> HeaderValue {
    // Both formats produce visible ASCII only, so the fallback is never taken.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Middleware: see the module docs. Selects by `MatchedPath`, so unmatched paths under
/// `/api/v1` (plain 404s) and every other version stay untouched.
pub async fn layer(State(v1): State<Arc<V1Headers>>, req: Request, next: Next) -> Response {
    let is_v1 = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| in_v1(p.as_str()));
    let mut res = next.run(req).await;
    if is_v1 {
        let headers = res.headers_mut();
        headers.insert(DEPRECATION.clone(), v1.deprecation.clone());
        headers.insert(SUNSET.clone(), v1.sunset.clone());
        headers.append(header::LINK, v1.link.clone());
    }
    res
}

/// Whether a route template belongs to v1: the prefix as a whole path segment, so that a
/// later `/api/v10` is not mistaken for it.
fn in_v1(route: &str) -> bool {
    route
        .strip_prefix(V1_PREFIX)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_a_whole_path_segment() {
        assert!(in_v1("/api/v1/orders/{id}"));
        assert!(in_v1("/api/v1/openapi.json"));
        assert!(!in_v1("/api/v10/orders"));
        assert!(!in_v1("/api/v2/orders"));
        assert!(!in_v1("/healthz"));
    }

    #[test]
    fn renders_rfc_dates() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let h = V1Headers::new(&ApiSettings {
            v1_deprecated_at: at("2026-11-23T00:00:00Z"),
            v1_sunset: at("2027-06-30T00:00:00Z"),
        });
        assert_eq!(h.deprecation, "@1795392000");
        assert_eq!(h.sunset, "Wed, 30 Jun 2027 00:00:00 GMT");
    }
}
