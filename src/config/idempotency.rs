//! `[idempotency]`: how long `Idempotency-Key` records are held and kept.

use std::time::Duration;

use super::reader::Reader;

/// `[idempotency]`: how long `Idempotency-Key` records are held and kept.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a completed request's response is replayed.
    pub ttl: Duration,
    /// How long a request may hold its key before a repeat may take it over.
    pub lock_timeout: Duration,
    /// How often expired records are purged.
    pub purge_interval: Duration,
}

pub(super) fn read(r: &mut Reader<'_>, request_timeout: Duration) -> IdempotencySettings {
    let ttl = r.positive_duration("idempotency.ttl");
    let lock_timeout = r.positive_duration("idempotency.lock_timeout");
    r.check(
        "idempotency.lock_timeout",
        lock_timeout >= request_timeout,
        "must not be shorter than server.request_timeout (a request would lose its key)",
    );
    IdempotencySettings {
        ttl,
        lock_timeout,
        purge_interval: r.positive_duration("idempotency.purge_interval"),
    }
}
