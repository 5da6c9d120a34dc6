use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

#[derive(Default, Clone)]
struct Log(Arc<Mutex<Vec<(State, State)>>>);

impl Observer for Log {
    fn transition(&self, from: State, to: State) {
        self.0.lock().unwrap().push((from, to));
    }
}

impl Log {
    fn take(&self) -> Vec<(State, State)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

fn small() -> BreakerConfig {
    BreakerConfig {
        window: 5,
        failure_rate_threshold: 50.0,
        minimum_calls: 5,
        slow_call_duration: Duration::from_secs(1),
        slow_call_rate_threshold: 80.0,
        open_wait: Duration::from_secs(10),
        backoff_multiplier: 1.0,
        open_wait_max: Duration::from_secs(10),
        half_open_calls: 3,
    }
}

fn breaker(cfg: BreakerConfig) -> (Arc<Breaker>, Log) {
    let log = Log::default();
    (Breaker::new(cfg, Box::new(log.clone())), log)
}

fn call(b: &Arc<Breaker>, failed: bool) {
    b.try_acquire().expect("admitted").record(failed);
}

#[tokio::test(start_paused = true)]
async fn fffss_opens_on_the_fifth_call_at_sixty_percent() {
    let (b, log) = breaker(small());
    for (i, failed) in [true, true, true, false].into_iter().enumerate() {
        call(&b, failed);
        assert_eq!(b.state(), State::Closed, "after call {}", i + 1);
    }
    assert_eq!(b.lock().calls.len(), 4);
    call(&b, false);
    assert_eq!(b.state(), State::Open);
    assert_eq!(log.take(), [(State::Closed, State::Open)]);
}

#[tokio::test(start_paused = true)]
async fn below_the_threshold_stays_closed_and_the_window_slides() {
    let (b, log) = breaker(small());
    // F,F,S,S,S: 40% < 50%.
    for failed in [true, true, false, false, false] {
        call(&b, failed);
    }
    assert_eq!(b.state(), State::Closed);
    // One more failure: the first F slides out, window F,S,S,S,F = 40%.
    call(&b, true);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.lock().calls.len(), 5);
    // Another: S,S,S,F,F = 40%; then F: S,S,F,F,F = 60% opens.
    call(&b, true);
    assert_eq!(b.state(), State::Closed);
    call(&b, true);
    assert_eq!(b.state(), State::Open);
    assert_eq!(log.take(), [(State::Closed, State::Open)]);
}

fn trip(b: &Arc<Breaker>) {
    for _ in 0..5 {
        call(b, true);
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_until_the_wait_is_over_then_half_opens() {
    let (b, log) = breaker(small());
    trip(&b);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_secs(10));
    tokio::time::advance(Duration::from_millis(9_999)).await;
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.retry_after, Duration::from_millis(1));
    assert_eq!(b.state(), State::Open);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(b.state(), State::HalfOpen);
    let permit = b.try_acquire().expect("first trial");
    assert_eq!(
        log.take(),
        [(State::Closed, State::Open), (State::Open, State::HalfOpen)]
    );
    permit.record(false);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_trials_and_closes_when_they_pass() {
    let (b, log) = breaker(small());
    trip(&b);
    tokio::time::advance(Duration::from_secs(10)).await;
    let trials: Vec<Permit> = (0..3).map(|_| b.try_acquire().expect("trial")).collect();
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(1)
    );
    let mut trials = trials.into_iter();
    trials.next().unwrap().record(false);
    trials.next().unwrap().record(true);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "decided only when all trials report"
    );
    trials.next().unwrap().record(false);
    // 1 of 3 failed: 33% < 50%.
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        log.take(),
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert!(b.lock().calls.is_empty(), "closing starts a fresh window");
}

#[tokio::test(start_paused = true)]
async fn failing_half_open_reopens_with_backoff_up_to_the_cap() {
    let cfg = BreakerConfig {
        backoff_multiplier: 2.0,
        open_wait_max: Duration::from_secs(25),
        ..small()
    };
    let (b, log) = breaker(cfg);
    trip(&b);
    for expected_wait in [20, 25, 25] {
        tokio::time::advance(Duration::from_secs(30)).await;
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(b.state(), State::Open);
        let wait = b.try_acquire().unwrap_err().retry_after;
        assert_eq!(wait, Duration::from_secs(expected_wait));
    }
    assert_eq!(log.take().len(), 1 + 3 * 2);
    // A close resets the backoff.
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..3 {
        call(&b, false);
    }
    assert_eq!(b.state(), State::Closed);
    trip(&b);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after,
        Duration::from_secs(10)
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker() {
    let (b, _) = breaker(small());
    for i in 0..5 {
        let permit = b.try_acquire().expect("admitted");
        // Four slow successes out of five: 80% slow.
        if i < 4 {
            tokio::time::advance(Duration::from_millis(1001)).await;
        }
        permit.record(false);
        let expected = if i < 4 { State::Closed } else { State::Open };
        assert_eq!(b.state(), expected, "after call {}", i + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_half_open_admits_exactly_n() {
    let (b, _) = breaker(BreakerConfig {
        half_open_calls: 5,
        ..small()
    });
    trip(&b);
    tokio::time::advance(Duration::from_secs(10)).await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.try_acquire().ok() })
        })
        .collect();
    let mut permits = Vec::new();
    for t in tasks {
        if let Some(p) = t.await.unwrap() {
            permits.push(p);
        }
    }
    assert_eq!(permits.len(), 5);
    for p in permits {
        p.record(false);
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn timed_out_calls_are_failures_and_stale_results_are_ignored() {
    let (b, _) = breaker(small());
    let stale = b.try_acquire().unwrap();
    for _ in 0..5 {
        let deadline = Deadline::default();
        let permit = b.try_acquire().unwrap().with_deadline(deadline.clone());
        deadline.expire();
        drop(permit);
    }
    assert_eq!(
        b.state(),
        State::Open,
        "five timed-out calls are five failures"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let trial = b.try_acquire().unwrap();
    // A result from before the opening does not count as a trial.
    stale.record(true);
    assert_eq!(b.state(), State::HalfOpen);
    trial.record(false);
    assert_eq!(b.lock().calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn calls_abandoned_by_the_client_count_for_nothing() {
    let (b, _) = breaker(small());
    for _ in 0..50 {
        // The client disconnected: dropped before its deadline.
        drop(b.try_acquire().unwrap().with_deadline(Deadline::default()));
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.state(), State::Closed);
    assert!(b.lock().calls.is_empty());
    // In half-open an abandoned trial gives its slot back.
    trip(&b);
    tokio::time::advance(Duration::from_secs(10)).await;
    let trials: Vec<Permit> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err());
    let mut trials = trials.into_iter();
    drop(trials.next());
    let replacement = b.try_acquire().expect("slot given back");
    for p in trials.chain([replacement]) {
        p.record(false);
    }
    assert_eq!(b.state(), State::Closed);
}

/// Fails every half-open trial, so the breaker reopens again.
async fn reopen(b: &Arc<Breaker>, cfg: &BreakerConfig) {
    tokio::time::advance(cfg.open_wait_max).await;
    for _ in 0..cfg.half_open_calls {
        call(b, true);
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_run_of_reopenings_saturates_the_backoff() {
    let cfg = BreakerConfig {
        backoff_multiplier: 2.0,
        open_wait_max: Duration::from_secs(60),
        ..small()
    };
    let (b, _log) = breaker(cfg.clone());
    trip(&b);
    // 2^62 × 10 s overflows a Duration: the wait must stay at the cap instead of panicking.
    for _ in 0..200 {
        reopen(&b, &cfg).await;
        assert_eq!(b.state(), State::Open);
    }
    let retry = b.try_acquire().expect_err("open");
    assert_eq!(retry.retry_after, Duration::from_secs(60));
    // Still usable afterwards: a passing trial round closes it.
    tokio::time::advance(cfg.open_wait_max).await;
    for _ in 0..cfg.half_open_calls {
        call(&b, false);
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_reconfigured_breaker_keeps_its_calls_and_applies_the_new_thresholds() {
    let (b, log) = breaker(small());
    // Two failures, then two successes: 4 of the 5 calls needed.
    for failed in [true, true, false, false] {
        call(&b, failed);
    }
    assert_eq!(b.state(), State::Closed);
    // A window of 4 and a lower bar. Unchanged, one more failure would make 2 of 5 (40 % <
    // 50 %: closed); a breaker that lost its calls would have 1 of the 4 needed.
    b.reconfigure(BreakerConfig {
        window: 4,
        minimum_calls: 4,
        failure_rate_threshold: 40.0,
        ..small()
    });
    assert_eq!(b.config().window, 4);
    call(&b, true);
    // The last 4 calls: failure, success, success, failure: 50 % ≥ 40 %.
    assert_eq!(b.state(), State::Open);
    assert_eq!(log.take(), [(State::Closed, State::Open)]);
}
