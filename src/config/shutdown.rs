//! `[shutdown]`: what happens between SIGTERM and exit.

use std::time::Duration;

use super::reader::Reader;

/// `[shutdown]`: what happens between SIGTERM and exit.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// Time `/readyz` answers 503 while listeners keep serving.
    pub drain_delay: Duration,
    /// Bound on in-flight requests after the listeners close.
    pub grace_period: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> ShutdownSettings {
    ShutdownSettings {
        drain_delay: r.duration("shutdown.drain_delay"),
        grace_period: r.positive_duration("shutdown.grace_period"),
    }
}
