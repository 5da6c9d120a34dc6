//! Property tests: the breaker's invariants over long random sequences of calls and time.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// What a caller can do to the breaker.
#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    /// The client went away before the call finished.
    Abandon(usize),
    /// The request timeout cancelled the call.
    TimeOut(usize),
    Advance(u64),
    /// The dependency is down: wait out the open state, then every admitted call fails.
    Outage,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Abandon),
        1 => any::<usize>().prop_map(Op::TimeOut),
        2 => (0u64..30_000).prop_map(Op::Advance),
        2 => Just(Op::Outage),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (
        1usize..20,
        1usize..30,
        1usize..6,
        1.0f64..8.0,
        1u64..20,
        0u64..120,
    )
        .prop_map(
            |(window, minimum_calls, half_open_calls, backoff_multiplier, wait, extra)| {
                BreakerConfig {
                    window,
                    failure_rate_threshold: 50.0,
                    minimum_calls,
                    slow_call_duration: Duration::from_secs(2),
                    slow_call_rate_threshold: 80.0,
                    open_wait: Duration::from_secs(wait),
                    backoff_multiplier,
                    open_wait_max: Duration::from_secs(wait + extra),
                    half_open_calls,
                }
            },
        )
}

/// Runs `ops`, checking after each step what must always hold.
async fn run(cfg: BreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let breaker = Breaker::new(cfg.clone(), Box::new(()));
    let cap = cfg.open_wait_max.max(cfg.open_wait);
    let mut held: Vec<(Permit, Deadline)> = Vec::new();
    let take = |held: &mut Vec<(Permit, Deadline)>, i: usize| {
        (!held.is_empty()).then(|| held.swap_remove(i % held.len()))
    };
    for op in ops {
        match op {
            Op::Acquire => match breaker.try_acquire() {
                Ok(p) => {
                    let deadline = Deadline::default();
                    held.push((p.with_deadline(deadline.clone()), deadline));
                }
                Err(rejected) => prop_assert!(
                    rejected.retry_after <= cap,
                    "retry after {:?} beyond the cap {cap:?}",
                    rejected.retry_after
                ),
            },
            Op::Succeed(i) => take(&mut held, i).into_iter().for_each(|(p, _)| {
                p.record(false);
            }),
            Op::Fail(i) => take(&mut held, i).into_iter().for_each(|(p, _)| {
                p.record(true);
            }),
            Op::Abandon(i) => drop(take(&mut held, i)),
            Op::TimeOut(i) => {
                if let Some((p, deadline)) = take(&mut held, i) {
                    deadline.expire();
                    drop(p);
                }
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
            Op::Outage => {
                tokio::time::advance(cap).await;
                while let Ok(p) = breaker.try_acquire() {
                    p.record(true);
                }
            }
        }
        let inner = breaker.lock();
        match inner.phase {
            Phase::Closed => prop_assert!(inner.calls.len() <= cfg.window),
            Phase::HalfOpen { admitted } => {
                prop_assert!(admitted <= cfg.half_open_calls);
                prop_assert!(inner.calls.len() <= cfg.half_open_calls);
            }
            Phase::Open { until } => {
                prop_assert!(until <= tokio::time::Instant::now() + cap);
            }
        }
    }
    // Never wedged: once every call has ended and the longest wait has passed, a call is
    // admitted again.
    held.clear();
    tokio::time::advance(cap).await;
    prop_assert!(
        breaker.try_acquire().is_ok(),
        "wedged: {:?}",
        breaker.lock()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn long_random_runs_never_panic_overflow_or_wedge(
        cfg in config(),
        ops in proptest::collection::vec(op(), 1..600),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(run(cfg, ops))?;
    }
}
