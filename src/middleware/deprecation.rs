//! v1 is deprecated: every `/api/v1` response, errors included, carries `Deprecation`
//! (RFC 9745), `Sunset` (RFC 8594) and a `Link` to the successor version, so that clients
//! and their gateways learn it from any call they already make. The headers are added by a
//! layer on the v1 routes, outside its guards, so refusals (401, 403, 413, 429, 503, 504) and
//! panics turned into 500 announce it too.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use futures_util::future::BoxFuture;
use tower::{Layer, Service};

use super::Live;
use crate::config::ApiSettings;

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

impl V1Headers {
    /// Adds the three headers to `res`.
    pub fn announce(&self, mut res: Response) -> Response {
        let headers = res.headers_mut();
        headers.insert(DEPRECATION.clone(), self.deprecation.clone());
        headers.insert(SUNSET.clone(), self.sunset.clone());
        headers.append(header::LINK, self.link.clone());
        res
    }
}

/// The layer: the headers of the dates in the request's snapshot of the reloadable settings
/// (the one `observe` put into it), so that a reload never changes them mid-request.
#[derive(Debug, Clone)]
pub struct Announce(pub Arc<ArcSwap<Live>>);

impl<S> Layer<S> for Announce {
    type Service = AnnounceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnnounceService {
            inner,
            live: self.0.clone(),
        }
    }
}

/// The service of [`Announce`].
#[derive(Debug, Clone)]
pub struct AnnounceService<S> {
    inner: S,
    live: Arc<ArcSwap<Live>>,
}

impl<S> Service<Request> for AnnounceService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let live = Live::of(&req, &self.live);
        let served = self.inner.call(req);
        Box::pin(async move {
            let Ok(res) = served.await;
            Ok(live.v1.announce(res))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
