use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

fn only_per_client(rate: f64, burst: u32) -> Limiter {
    Limiter::new(&LimiterConfig {
        global: None,
        per_client: Some(Budget {
            rate_per_second: rate,
            burst,
        }),
        writes: None,
    })
}

/// Hammers one client every `step` for `total` and counts what passed.
async fn passes_over(limiter: &Limiter, total: Duration, step: Duration) -> u64 {
    let mut passed = 0;
    let mut elapsed = Duration::ZERO;
    loop {
        for _ in 0..10 {
            if !limiter.check(ip(1), false).limited() {
                passed += 1;
            }
        }
        if elapsed >= total {
            return passed;
        }
        tokio::time::advance(step).await;
        elapsed += step;
    }
}

#[tokio::test(start_paused = true)]
async fn exactly_burst_plus_rate_times_t_pass() {
    for (rate, burst, secs) in [(10.0, 20, 3), (5.0, 1, 2), (2.5, 4, 4), (100.0, 100, 1)] {
        let limiter = only_per_client(rate, burst);
        let passed = passes_over(
            &limiter,
            Duration::from_secs(secs),
            Duration::from_millis(10),
        )
        .await;
        let expected = u64::from(burst) + (rate * secs as f64).floor() as u64;
        assert_eq!(passed, expected, "rate {rate} burst {burst} over {secs}s");
    }
}

#[tokio::test(start_paused = true)]
async fn refusals_carry_header_values() {
    let limiter = only_per_client(1.0, 3);
    let first = limiter.check(ip(7), false);
    assert_eq!(Limiter::policy_header(&first), "\"per-client\";q=3;w=3");
    assert_eq!(Limiter::state_header(&first), "\"per-client\";r=2;t=1");
    limiter.check(ip(7), false);
    limiter.check(ip(7), false);
    let refused = limiter.check(ip(7), false);
    assert!(refused.limited());
    assert_eq!(Limiter::state_header(&refused), "\"per-client\";r=0;t=1");
    assert_eq!(refused.retry_after(), 1);
    // Another client has its own bucket.
    assert!(!limiter.check(ip(8), false).limited());
    // After the wait the next request passes.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!limiter.check(ip(7), false).limited());
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_never_before_the_reset() {
    let limiter = only_per_client(0.25, 1);
    assert!(!limiter.check(ip(1), false).limited());
    let refused = limiter.check(ip(1), false);
    let p = &refused.policies[0];
    assert_eq!((p.remaining, p.reset), (0, 4));
    assert!(refused.retry_after() >= p.reset);
}

#[tokio::test(start_paused = true)]
async fn writes_add_a_stricter_policy_and_global_covers_everyone() {
    let limiter = Limiter::new(&LimiterConfig {
        global: Some(Budget {
            rate_per_second: 1.0,
            burst: 5,
        }),
        per_client: Some(Budget {
            rate_per_second: 1.0,
            burst: 3,
        }),
        writes: Some(Budget {
            rate_per_second: 1.0,
            burst: 1,
        }),
    });
    let read = limiter.check(ip(1), false);
    assert_eq!(read.policies.len(), 2, "writes policy only for writes");
    let write = limiter.check(ip(1), true);
    assert_eq!(write.policies.len(), 3);
    assert!(!write.limited());
    let second_write = limiter.check(ip(1), true);
    assert!(second_write.limited());
    assert_eq!(
        second_write
            .policies
            .iter()
            .filter(|p| !p.allowed)
            .map(|p| p.policy)
            .collect::<Vec<_>>(),
        ["writes"]
    );
    // The global budget is shared: clients 2, 3 and 4 use the last of it (the refused write
    // gave its global token back).
    assert!(!limiter.check(ip(2), false).limited());
    assert!(!limiter.check(ip(3), false).limited());
    assert!(!limiter.check(ip(4), false).limited());
    let starved = limiter.check(ip(5), false);
    assert_eq!(
        starved
            .policies
            .iter()
            .find(|p| !p.allowed)
            .map(|p| p.policy),
        Some("global")
    );
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let limiter = only_per_client(10.0, 10);
    for n in 0..200_000 {
        limiter.check(ip(n), false);
    }
    assert_eq!(
        limiter.evict(),
        [("per-client", 200_000)],
        "all still recent"
    );
    // A full bucket refills in burst/rate = 1 s; after that every key is idle.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(limiter.evict(), [("per-client", 0)]);
}

#[tokio::test(start_paused = true)]
async fn api_keys_have_buckets_of_their_own_apart_from_addresses() {
    use crate::resilience::client_ip::ClientKey;
    let limiter = only_per_client(0.01, 2);
    let (a, b) = (ClientKey::ApiKey(0), ClientKey::ApiKey(1));
    assert!(!limiter.check(a, false).limited());
    assert!(!limiter.check(a, false).limited());
    assert!(
        limiter.check(a, false).limited(),
        "key 0 has spent its burst"
    );
    // Another key (wherever it comes from) and the address itself still have theirs.
    assert!(!limiter.check(b, false).limited());
    assert!(!limiter.check(ip(0), false).limited());
    assert_eq!(limiter.evict(), [("per-client", 3)]);
}

fn budget(rate_per_second: f64, burst: u32) -> Option<Budget> {
    Some(Budget {
        rate_per_second,
        burst,
    })
}

#[tokio::test(start_paused = true)]
async fn a_refusal_spends_no_token_of_any_other_policy() {
    // The reproduction: per-client 1/s burst 2, global 10/s burst 20.
    let limiter = Limiter::new(&LimiterConfig {
        global: budget(10.0, 20),
        per_client: budget(1.0, 2),
        writes: None,
    });
    let outcomes: Vec<bool> = (0..40)
        .map(|_| limiter.check(ip(1), false).limited())
        .collect();
    assert_eq!(outcomes.iter().filter(|l| !**l).count(), 2);
    // Only the two admitted requests spent global tokens: 18 are left for everyone else.
    let other = limiter.check(ip(2), false);
    assert!(!other.limited(), "{other:?}");
    let global = &other.policies[0];
    assert_eq!((global.policy, global.remaining), ("global", 17));
    // A per-client refusal reports the global state as it is, unspent.
    let refused = limiter.check(ip(1), false);
    assert!(refused.limited());
    assert_eq!(refused.policies[0].remaining, 17);
    assert!(refused.policies[0].allowed);
}

#[tokio::test(start_paused = true)]
async fn a_global_refusal_creates_no_client_key_and_spends_no_client_token() {
    let limiter = Limiter::new(&LimiterConfig {
        global: budget(0.01, 2),
        per_client: budget(0.01, 5),
        writes: budget(0.01, 1),
    });
    assert!(!limiter.check(ip(1), false).limited());
    assert!(!limiter.check(ip(2), false).limited());
    assert_eq!(limiter.evict(), [("per-client", 2), ("writes", 0)]);
    for n in 3..100 {
        let d = limiter.check(ip(n), true);
        let violated: Vec<_> = d
            .policies
            .iter()
            .filter(|p| !p.allowed)
            .map(|p| p.policy)
            .collect();
        assert_eq!(violated, ["global"]);
        // The client's own buckets are reported whole: nothing was taken from them.
        assert_eq!(d.policies[1].remaining, 5, "{d:?}");
        assert_eq!(d.policies[2].remaining, 1, "{d:?}");
    }
    assert_eq!(limiter.evict(), [("per-client", 2), ("writes", 0)]);
}

#[tokio::test(start_paused = true)]
async fn a_writes_refusal_gives_back_the_client_and_global_tokens() {
    let limiter = Limiter::new(&LimiterConfig {
        global: budget(0.01, 10),
        per_client: budget(0.01, 5),
        writes: budget(0.01, 1),
    });
    assert!(!limiter.check(ip(1), true).limited());
    for _ in 0..20 {
        let d = limiter.check(ip(1), true);
        assert!(d.limited());
        assert_eq!(
            d.policies
                .iter()
                .map(|p| (p.policy, p.remaining))
                .collect::<Vec<_>>(),
            [("global", 9), ("per-client", 4), ("writes", 0)]
        );
    }
    // Reads of the same client still have the four per-client tokens the refusals did not take.
    for left in (0..4).rev() {
        let d = limiter.check(ip(1), false);
        assert!(!d.limited());
        assert_eq!(d.policies[1].remaining, left);
    }
}
