//! A count-based circuit breaker with Resilience4j's semantics.
//!
//! Closed: the last `window` calls are kept; once at least `min(minimum_calls, window)` are
//! recorded, a failure rate or slow-call rate at or above its threshold opens the breaker.
//! Open: every call is rejected until the wait is over (optionally growing exponentially up to
//! a cap on each reopening). Half-open: exactly `half_open_calls` trial calls are admitted, the
//! rest rejected; when all trials have reported, the same thresholds decide between closed and
//! open again. Results of calls admitted before a transition are ignored.
//!
//! Time is `tokio::time::Instant`, so tests drive it with the paused clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::config::BreakerConfig;

/// The breaker's state, as exported (`circuit_breaker_state`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes are recorded.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few trial calls decide.
    HalfOpen,
}

impl State {
    /// Lower-case name, for labels and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> f64 {
        match self {
            Self::Closed => 0.0,
            Self::Open => 1.0,
            Self::HalfOpen => 2.0,
        }
    }
}

/// How one call went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The call failed (a dependency error or a timeout).
    pub failed: bool,
    /// The call took longer than `slow_call_duration`.
    pub slow: bool,
}

/// A refused call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// When a call may be tried again.
    pub retry_after: Duration,
}

/// Observes transitions (metrics, logs).
pub trait Observer: Send + Sync {
    /// The breaker moved from one state to another.
    fn transition(&self, from: State, to: State);
}

impl Observer for () {
    fn transition(&self, _: State, _: State) {}
}

#[derive(Debug)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: usize },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Bumped on every transition; permits from an older generation are ignored.
    generation: u64,
    /// Closed: the sliding window. Half-open: the trial results.
    calls: Window,
    /// Consecutive openings without a close in between (for the backoff).
    openings: u32,
}

/// The breaker. Cheap to share behind an `Arc`.
pub struct Breaker {
    /// Swapped whole by [`Breaker::reconfigure`]; the state stays.
    cfg: ArcSwap<BreakerConfig>,
    inner: Mutex<Inner>,
    observer: Box<dyn Observer>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("cfg", &**self.cfg.load())
            .finish_non_exhaustive()
    }
}

/// Admission to make one call; report how it went with [`Permit::record`]. A permit dropped
/// without a report was cancelled: if its [`Deadline`] had passed, the call timed out and counts
/// as a failure; otherwise the client went away, which says nothing about the dependency, so it
/// is not counted (and a half-open trial slot is given back).
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    generation: u64,
    started: Instant,
    done: bool,
    deadline: Option<Deadline>,
}

/// Set by whoever enforces the call's time budget when the budget runs out, just before the
/// call is cancelled.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<std::sync::atomic::AtomicBool>);

impl Deadline {
    /// Marks the budget as spent.
    pub fn expire(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the budget was spent.
    pub fn expired(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Permit {
    /// Ties the permit to the call's time budget (see the type's docs).
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Gives the permit back without a result: the call never reached the dependency, so it
    /// says nothing about it (a half-open trial slot is freed for another call).
    pub fn abandon(mut self) {
        self.done = true;
        self.breaker.on_abandoned(self.generation);
    }

    /// Whether the call has run out of its time budget.
    pub fn expired(&self) -> bool {
        self.deadline.as_ref().is_some_and(Deadline::expired)
    }

    /// Reports the call's result; slowness is measured from admission. Returns whether the
    /// call was slow.
    pub fn record(mut self, failed: bool) -> bool {
        self.done = true;
        let slow = self.started.elapsed() > self.breaker.cfg.load().slow_call_duration;
        self.breaker
            .on_result(self.generation, Outcome { failed, slow });
        slow
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.deadline.as_ref().is_some_and(Deadline::expired) {
            let slow = self.started.elapsed() > self.breaker.cfg.load().slow_call_duration;
            self.breaker
                .on_result(self.generation, Outcome { failed: true, slow });
        } else {
            self.breaker.on_abandoned(self.generation);
        }
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig, observer: Box<dyn Observer>) -> Arc<Self> {
        Arc::new(Self {
            cfg: ArcSwap::from_pointee(cfg),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                generation: 0,
                calls: Window::default(),
                openings: 0,
            }),
            observer,
        })
    }

    /// Takes new thresholds and waits, keeping the state and the recorded calls (the oldest
    /// dropped if the window shrank); an open breaker keeps its current wait.
    pub fn reconfigure(&self, cfg: BreakerConfig) {
        let mut inner = self.lock();
        if matches!(inner.phase, Phase::Closed) {
            while inner.calls.len() > cfg.window {
                inner.calls.pop_front();
            }
        }
        self.cfg.store(Arc::new(cfg));
    }

    /// The thresholds and waits in force.
    pub fn config(&self) -> BreakerConfig {
        BreakerConfig::clone(&self.cfg.load())
    }

    /// Calls slower than this are slow.
    pub fn slow_call_duration(&self) -> Duration {
        self.cfg.load().slow_call_duration
    }

    /// The current state (an expired open wait reads as half-open).
    pub fn state(&self) -> State {
        let inner = self.lock();
        match inner.phase {
            Phase::Closed => State::Closed,
            Phase::Open { until } if Instant::now() < until => State::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }

    /// Asks to make a call.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Phase::Open { until } = inner.phase {
            if now < until {
                return Err(Rejected {
                    retry_after: until - now,
                });
            }
            self.move_to(&mut inner, Phase::HalfOpen { admitted: 0 });
        }
        if let Phase::HalfOpen { admitted } = &mut inner.phase {
            if *admitted >= self.cfg.load().half_open_calls {
                return Err(Rejected {
                    retry_after: Duration::from_secs(1),
                });
            }
            *admitted += 1;
        }
        Ok(Permit {
            breaker: Arc::clone(self),
            generation: inner.generation,
            started: now,
            done: false,
            deadline: None,
        })
    }

    fn on_result(&self, generation: u64, outcome: Outcome) {
        let mut inner = self.lock();
        if generation != inner.generation {
            return;
        }
        // Once per result: every call of a busy service comes through here.
        let cfg = self.cfg.load();
        match inner.phase {
            Phase::Closed => {
                inner.calls.push(outcome);
                while inner.calls.len() > cfg.window {
                    inner.calls.pop_front();
                }
                let needed = cfg.minimum_calls.min(cfg.window).max(1);
                if inner.calls.len() >= needed && Self::trips(&cfg, &inner.calls) {
                    self.open(&mut inner);
                }
            }
            Phase::HalfOpen { .. } => {
                inner.calls.push(outcome);
                if inner.calls.len() >= cfg.half_open_calls {
                    if Self::trips(&cfg, &inner.calls) {
                        self.open(&mut inner);
                    } else {
                        inner.openings = 0;
                        self.move_to(&mut inner, Phase::Closed);
                    }
                }
            }
            Phase::Open { .. } => {}
        }
    }

    /// A call went away without a result: free its half-open slot, count nothing.
    fn on_abandoned(&self, generation: u64) {
        let mut inner = self.lock();
        if generation != inner.generation {
            return;
        }
        if let Phase::HalfOpen { admitted } = &mut inner.phase {
            *admitted = admitted.saturating_sub(1);
        }
    }

    fn trips(cfg: &BreakerConfig, calls: &Window) -> bool {
        let n = calls.len() as f64;
        calls.failed as f64 * 100.0 / n >= cfg.failure_rate_threshold
            || calls.slow as f64 * 100.0 / n >= cfg.slow_call_rate_threshold
    }

    fn open(&self, inner: &mut Inner) {
        let wait = self.open_wait(inner.openings);
        inner.openings = inner.openings.saturating_add(1);
        self.move_to(
            inner,
            Phase::Open {
                until: Instant::now() + wait,
            },
        );
    }

    /// The wait after `openings` consecutive openings: `open_wait × multiplier^openings`, capped
    /// at `open_wait_max`. Saturating: past the cap (or past what a `Duration` holds, after some
    /// 60 reopenings at 2.0) it stays at the cap instead of overflowing.
    fn open_wait(&self, openings: u32) -> Duration {
        let cfg = self.cfg.load();
        let cap = cfg.open_wait_max.max(cfg.open_wait);
        let factor = cfg
            .backoff_multiplier
            .powi(i32::try_from(openings).unwrap_or(i32::MAX));
        Duration::try_from_secs_f64(cfg.open_wait.as_secs_f64() * factor)
            .map_or(cap, |wait| wait.min(cap))
    }

    fn move_to(&self, inner: &mut Inner, to: Phase) {
        let from = phase_state(&inner.phase);
        inner.phase = to;
        inner.generation += 1;
        inner.calls.clear();
        self.observer.transition(from, phase_state(&inner.phase));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is a single
        // assignment sequence), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn phase_state(phase: &Phase) -> State {
    match phase {
        Phase::Closed => State::Closed,
        Phase::Open { .. } => State::Open,
        Phase::HalfOpen { .. } => State::HalfOpen,
    }
}

pub mod metrics;
mod window;

use window::Window;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
