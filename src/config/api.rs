//! `[api]`: the lifecycle of the API versions, announced on every response of a version.

use chrono::{DateTime, Utc};

use super::reader::Reader;

/// `[api]`: when v1 was deprecated and when it goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Sent as `Deprecation: @<unix seconds>` (RFC 9745) on every v1 response.
    pub v1_deprecated_at: DateTime<Utc>,
    /// Sent as `Sunset: <IMF-fixdate>` (RFC 8594) on every v1 response.
    pub v1_sunset: DateTime<Utc>,
}

pub(super) fn read(r: &mut Reader<'_>) -> ApiSettings {
    let deprecated_at = timestamp(r, "api.v1_deprecated_at");
    let sunset = timestamp(r, "api.v1_sunset");
    if let (Some(deprecated_at), Some(sunset)) = (deprecated_at, sunset) {
        // A sunset before the deprecation would tell clients the version vanished unannounced.
        r.check(
            "api.v1_sunset",
            sunset >= deprecated_at,
            "must not precede api.v1_deprecated_at",
        );
    }
    ApiSettings {
        v1_deprecated_at: deprecated_at.unwrap_or_default(),
        v1_sunset: sunset.unwrap_or_default(),
    }
}

fn timestamp(r: &mut Reader<'_>, key: &'static str) -> Option<DateTime<Utc>> {
    r.parsed(
        key,
        "an RFC 3339 timestamp such as \"2026-11-23T00:00:00Z\"",
        |s| {
            DateTime::parse_from_rfc3339(s.trim())
                .ok()
                .map(|t| t.with_timezone(&Utc))
        },
    )
}
