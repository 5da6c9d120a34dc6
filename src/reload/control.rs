//! What the ops listener shows and changes of the running configuration: the effective
//! configuration as `config print` renders it, and a log filter set for a while.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Shared by the reloader and the ops endpoints.
#[derive(Debug)]
pub struct Control {
    shown: Mutex<Shown>,
    log: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct Shown {
    /// `config print`'s rendering of the configuration in force, once a reloader runs.
    rendered: Option<String>,
    /// When a reload last succeeded.
    reloaded_at: Option<SystemTime>,
}

#[derive(Debug)]
struct LogState {
    /// `log.level` of the configuration in force.
    base: String,
    /// A filter set through the ops listener, until its deadline.
    over: Option<Override>,
    /// Numbers the overrides, so that an old timer never ends a newer one.
    generation: u64,
}

#[derive(Debug, Clone)]
struct Override {
    filter: String,
    until: Instant,
    generation: u64,
}

/// The log filter in force, as `GET /log-level` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LogLevel {
    /// The filter applied now.
    pub filter: String,
    /// `log.level` from the configuration, in force again when the override ends.
    pub configured: String,
    /// Seconds until a temporary filter is reverted (absent without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<u64>,
}

impl Control {
    /// A control for a service whose `log.level` is `level`.
    pub fn new(level: &str) -> Arc<Self> {
        Arc::new(Self {
            shown: Mutex::new(Shown::default()),
            log: Mutex::new(LogState {
                base: level.to_string(),
                over: None,
                generation: 0,
            }),
        })
    }

    /// Records the configuration in force (rendered as `config print` does) and, for a
    /// reload, when it was applied.
    pub fn set_config(&self, rendered: String, reloaded_at: Option<SystemTime>) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        shown.rendered = Some(rendered);
        if reloaded_at.is_some() {
            shown.reloaded_at = reloaded_at;
        }
    }

    /// The configuration in force and when it was last reloaded; `None` without a reloader.
    pub fn config(&self) -> Option<(String, Option<SystemTime>)> {
        let shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        shown.rendered.clone().map(|r| (r, shown.reloaded_at))
    }

    /// A reload changed `log.level`: applied now, unless a temporary filter is in force (then
    /// when it ends).
    pub fn set_configured_level(&self, level: &str) -> Result<(), String> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.over.is_none() {
            crate::telemetry::set_log_filter(level)?;
        }
        log.base = level.to_string();
        Ok(())
    }

    /// Applies `filter` at once, and the configured level again after `ttl`. Refuses an
    /// invalid filter, changing nothing.
    pub fn override_level(self: &Arc<Self>, filter: &str, ttl: Duration) -> Result<(), String> {
        let generation = {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            crate::telemetry::set_log_filter(filter)?;
            log.generation += 1;
            log.over = Some(Override {
                filter: filter.to_string(),
                until: Instant::now() + ttl,
                generation: log.generation,
            });
            log.generation
        };
        tracing::warn!(filter, ttl = %humantime::format_duration(ttl), "log filter set");
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            this.revert(generation);
        });
        Ok(())
    }

    /// Ends the override numbered `generation`, if it is still the one in force.
    fn revert(&self, generation: u64) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log
            .over
            .as_ref()
            .is_some_and(|o| o.generation == generation)
        {
            log.over = None;
            if let Err(e) = crate::telemetry::set_log_filter(&log.base) {
                tracing::error!(error = %e, "cannot restore log.level");
            }
            tracing::warn!(filter = %log.base, "log filter override ended: log.level again");
        }
    }

    /// The filter in force.
    pub fn level(&self) -> LogLevel {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        match &log.over {
            Some(o) => LogLevel {
                filter: o.filter.clone(),
                configured: log.base.clone(),
                remaining_seconds: Some(
                    o.until
                        .saturating_duration_since(Instant::now())
                        .as_secs_f64()
                        .ceil() as u64,
                ),
            },
            None => LogLevel {
                filter: log.base.clone(),
                configured: log.base.clone(),
                remaining_seconds: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_override_reverts_when_its_ttl_ends_and_a_newer_one_is_not_cut_short() {
        let control = Control::new("info");
        control
            .override_level("debug", Duration::from_secs(600))
            .unwrap();
        assert_eq!(control.level().filter, "debug");
        assert_eq!(control.level().remaining_seconds, Some(600));
        // A reload meanwhile changes the configured level, not the override.
        control.set_configured_level("warn").unwrap();
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(control.level().remaining_seconds, Some(300));
        // A second override: the first one's timer must not end it.
        control
            .override_level("trace", Duration::from_secs(600))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(301)).await;
        assert_eq!(
            control.level().filter,
            "trace",
            "the first timer ended the second"
        );
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(
            control.level(),
            LogLevel {
                filter: "warn".into(),
                configured: "warn".into(),
                remaining_seconds: None
            }
        );
    }

    #[tokio::test]
    async fn an_invalid_filter_changes_nothing() {
        let control = Control::new("info");
        let e = control
            .override_level("info,=[", Duration::from_secs(60))
            .unwrap_err();
        assert!(e.contains("invalid log filter"), "{e}");
        assert_eq!(control.level().filter, "info");
    }
}
