//! Rate limits in Redis (`rate_limit.backend = "redis"`), against a real Redis (TEST_REDIS_URL):
//! the script's arithmetic on an injected clock, two real instances sharing one budget, Redis
//! cut and stalled behind a TCP proxy under load, and memory after 200,000 clients.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orders_api::config::{Budget, LimiterConfig};
use orders_api::resilience::client_ip::ClientKey;
use orders_api::resilience::limiter::Limiter;
use orders_api::resilience::redis_limiter::{Request, SCRIPT, script_args};

use crate::support::binary::{Running, eventually, get_status, http, start, wait_line};
use crate::support::helpers::{metric, redis_url};

fn prefix() -> String {
    format!("test:{}:", uuid::Uuid::now_v7().simple())
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to TEST_REDIS_URL")
}

fn budget(rate: f64, burst: u32) -> Option<Budget> {
    Some(Budget {
        rate_per_second: rate,
        burst,
    })
}

/// One run of the script at `now` (µs): 0 when admitted, else the refusing bucket's index.
async fn take(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    limiter: &Limiter,
    client: ClientKey,
    write: bool,
    now: u64,
) -> Vec<i64> {
    let rules = limiter.rules(write);
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT);
    script_args(
        &mut cmd,
        prefix,
        &[Request {
            client,
            rules: &rules,
        }],
        Some(now),
    );
    cmd.query_async(conn).await.expect("script")
}

/// A command on one key with an integer reply.
async fn on_key(conn: &mut redis::aio::MultiplexedConnection, command: &str, key: String) -> i64 {
    redis::cmd(command)
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

fn ip(n: u8) -> ClientKey {
    ClientKey::Ip(std::net::IpAddr::from([10, 0, 0, n]))
}

/// The same property the local limiter's tests check: hammered from a full bucket for T
/// seconds, a policy admits exactly burst + floor(rate·T).
#[tokio::test]
async fn the_script_admits_exactly_burst_plus_rate_times_t_on_an_injected_clock() {
    let Some(url) = redis_url() else { return };
    let mut conn = connect(&url).await;
    for (rate, burst, secs) in [(10.0, 20, 3), (5.0, 1, 2), (2.5, 4, 4), (100.0, 100, 1)] {
        let prefix = prefix();
        let limiter = Limiter::new(&LimiterConfig {
            global: None,
            per_client: budget(rate, burst),
            writes: None,
        });
        let start: u64 = 1_700_000_000_000_000;
        let (mut passed, mut elapsed) = (0u64, 0u64);
        loop {
            for _ in 0..10 {
                let reply = take(&mut conn, &prefix, &limiter, ip(1), false, start + elapsed).await;
                passed += u64::from(reply[0] == 0);
            }
            if elapsed >= secs * 1_000_000 {
                break;
            }
            elapsed += 10_000;
        }
        let expected = u64::from(burst) + (rate * secs as f64).floor() as u64;
        assert_eq!(passed, expected, "rate {rate} burst {burst} over {secs}s");
    }
}

/// A refusal by one policy spends nothing of the others, and reports how long to wait; keys
/// expire when their bucket has refilled.
#[tokio::test]
async fn a_refusal_spends_no_other_policy_and_keys_expire_at_full_refill() {
    let Some(url) = redis_url() else { return };
    let mut conn = connect(&url).await;
    let prefix = prefix();
    let limiter = Limiter::new(&LimiterConfig {
        global: budget(10.0, 3),
        per_client: budget(1.0, 1),
        writes: None,
    });
    let now: u64 = 1_700_000_000_000_000;
    // Client 1 takes its only token: global 3 -> 2 (TAT 100 ms ahead), per-client 1 s ahead.
    assert_eq!(
        take(&mut conn, &prefix, &limiter, ip(1), false, now).await,
        [0, 0, 100_000, 1_000_000]
    );
    // Refused by per-client, which could pass in 1 s; global is reported, not charged.
    assert_eq!(
        take(&mut conn, &prefix, &limiter, ip(1), false, now).await,
        [2, 1_000_000, 100_000, 1_000_000]
    );
    // So two other clients still get global's last two tokens, and a third is refused by it.
    for n in [2, 3] {
        assert_eq!(
            take(&mut conn, &prefix, &limiter, ip(n), false, now).await[0],
            0
        );
    }
    let refused = take(&mut conn, &prefix, &limiter, ip(4), false, now).await;
    assert_eq!(refused[..2], [1, 100_000]);
    // Each key lives until its bucket is full again: at most its TAT ahead of now.
    let ttl = on_key(&mut conn, "PTTL", format!("{prefix}per-client:10.0.0.1")).await;
    assert!((1..=1_001).contains(&ttl), "per-client PTTL {ttl}");
    let ttl = on_key(&mut conn, "PTTL", format!("{prefix}global")).await;
    assert!((1..=301).contains(&ttl), "global PTTL {ttl}");
    // Client 4 was refused by global before per-client was asked: no key of its own.
    let exists = on_key(&mut conn, "EXISTS", format!("{prefix}per-client:10.0.0.4")).await;
    assert_eq!(exists, 0);
}

/// A batch of requests in one script call is decided as the same requests one call each:
/// in order, each seeing the tokens the ones before it took (here two share one client and
/// every one shares `global`).
#[tokio::test]
async fn a_batch_decides_as_the_same_requests_one_by_one() {
    let Some(url) = redis_url() else { return };
    let mut conn = connect(&url).await;
    let limiter = Limiter::new(&LimiterConfig {
        global: budget(10.0, 3),
        per_client: budget(1.0, 2),
        writes: budget(1.0, 1),
    });
    let (reads, writes) = (limiter.rules(false), limiter.rules(true));
    let batch: Vec<Request<'_>> = [
        (1, &writes),
        (1, &writes),
        (1, &reads),
        (2, &reads),
        (3, &reads),
    ]
    .into_iter()
    .map(|(n, rules)| Request {
        client: ip(n),
        rules,
    })
    .collect();
    let now: u64 = 1_700_000_000_000_000;
    let batched_prefix = prefix();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT);
    script_args(&mut cmd, &batched_prefix, &batch, Some(now));
    let batched: Vec<i64> = cmd.query_async(&mut conn).await.unwrap();
    let single_prefix = prefix();
    let mut one_by_one = Vec::new();
    for request in &batch {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT);
        script_args(
            &mut cmd,
            &single_prefix,
            std::slice::from_ref(request),
            Some(now),
        );
        let reply: Vec<i64> = cmd.query_async(&mut conn).await.unwrap();
        one_by_one.extend(reply);
    }
    assert_eq!(batched, one_by_one);
    // Admitted, refused by writes (client 1 has 1 write), admitted (a read), admitted, and
    // refused by global (3 tokens taken).
    let verdicts: Vec<i64> = {
        let mut rest = batched.as_slice();
        batch
            .iter()
            .map(|r| {
                let (head, tail) = rest.split_at(2 + r.rules.len());
                rest = tail;
                head[0]
            })
            .collect()
    };
    assert_eq!(verdicts, [0, 3, 0, 0, 1]);
}

// ---------------------------------------------------------------------------------------------
// The real binary on the redis backend.

/// An instance limited in Redis at `url` under `prefix`, trusting X-Forwarded-For from
/// loopback so that a test can play several clients.
fn instance(url: &str, prefix: &str, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("APP_RATE_LIMIT__ENABLED", "true"),
        ("APP_RATE_LIMIT__BACKEND", "redis"),
        ("APP_RATE_LIMIT__REDIS__URL", url),
        ("APP_RATE_LIMIT__REDIS__KEY_PREFIX", prefix),
        ("APP_SERVER__TRUSTED_PROXIES", "127.0.0.1"),
        ("APP_AUTH__ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    start(&env)
}

/// One request as client `n` (10.0.0.n); the status and the response head, lower-cased.
fn request(addr: SocketAddr, method: &str, n: u8) -> (u16, String) {
    let body = r#"{"customer_id":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price":"1.00"}]}"#;
    let (path, body) = match method {
        "POST" => ("/api/v1/orders", body),
        _ => ("/api/v1/orders?limit=1", ""),
    };
    let res = http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.{n}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .expect("request");
    let status = res.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = res
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (status, head)
}

fn header<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {head}"))
}

fn scrape(addr: SocketAddr) -> String {
    let res = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .expect("metrics");
    res.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

#[test]
fn two_instances_share_one_budget_per_policy() {
    let Some(url) = redis_url() else { return };
    let prefix = prefix();
    // Refills are slow (100 s a token): only the bursts matter during the test.
    let limits = [
        ("APP_RATE_LIMIT__GLOBAL__RATE_PER_SECOND", "0.01"),
        ("APP_RATE_LIMIT__GLOBAL__BURST", "8"),
        ("APP_RATE_LIMIT__PER_CLIENT__RATE_PER_SECOND", "0.01"),
        ("APP_RATE_LIMIT__PER_CLIENT__BURST", "4"),
        ("APP_RATE_LIMIT__WRITES__RATE_PER_SECOND", "0.01"),
        ("APP_RATE_LIMIT__WRITES__BURST", "2"),
        // No Redis trouble is expected here; a slow CI machine must not fall back.
        ("APP_RATE_LIMIT__REDIS__TIMEOUT", "1s"),
    ];
    let a = instance(&url, &prefix, &limits);
    let b = instance(&url, &prefix, &limits);
    for ops in [a.ops, b.ops] {
        eventually("ready", || get_status(ops, "/readyz").ok() == Some(200));
    }
    let both = [a.api, b.api];

    // Per-client: client 1 alternates; together the instances admit its burst of 4, once.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let (status, head) = request(both[i % 2], "GET", 1);
        if i == 0 {
            assert_eq!(
                header(&head, "ratelimit-policy"),
                "\"global\";q=8;w=800, \"per-client\";q=4;w=400"
            );
            assert!(
                header(&head, "ratelimit").ends_with("\"per-client\";r=3;t=100"),
                "{head}"
            );
        }
        if i == 3 {
            assert!(
                header(&head, "ratelimit").ends_with("\"per-client\";r=0;t=400"),
                "{head}"
            );
        }
        if i == 4 {
            assert_eq!(status, 429, "{head}");
            assert!(
                head.contains("content-type: application/problem+json"),
                "{head}"
            );
            assert!(
                header(&head, "ratelimit").ends_with("\"per-client\";r=0;t=100"),
                "{head}"
            );
            assert_eq!(header(&head, "retry-after"), "100");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429, 429, 429]);

    // Redis forgets the script (a restart, a failover, SCRIPT FLUSH): EVALSHA gets NOSCRIPT,
    // and the instances send the script itself. Redis still decides (checked below).
    let mut conn = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .expect("connect to TEST_REDIS_URL");
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn).unwrap();

    // Writes: client 2's POSTs, alternating; 2 created in all, then refused by `writes`.
    let posts: Vec<u16> = (0..3).map(|i| request(both[i % 2], "POST", 2).0).collect();
    assert_eq!(posts, [201, 201, 429]);

    // Global: 4 + 2 tokens are spent, refusals spent none; two more clients pass, the third
    // is refused by global, on whichever instance it reaches.
    let (s3, _) = request(a.api, "GET", 3);
    let (s4, _) = request(b.api, "GET", 4);
    let (s5, head) = request(a.api, "GET", 5);
    assert_eq!([s3, s4, s5], [200, 200, 429]);
    assert!(
        header(&head, "ratelimit").starts_with("\"global\";r=0;"),
        "{head}"
    );

    // Every decision was Redis's.
    for addr in [a.ops, b.ops] {
        let text = scrape(addr);
        assert!(
            metric(
                &text,
                "rate_limit_backend_decisions_total",
                "backend=\"redis\""
            ) >= 5.0
        );
        assert_eq!(
            metric(
                &text,
                "rate_limit_backend_decisions_total",
                "backend=\"fallback\""
            ),
            0.0
        );
        assert_eq!(metric(&text, "rate_limit_fallback_active", ""), 0.0);
    }
}

/// While Redis is unreachable the local fallback decides with its share of each budget, but
/// `RateLimit-Policy` still announces the configured policies, from the first response on.
#[test]
fn the_policy_header_announces_the_configured_budgets_while_the_fallback_decides() {
    if redis_url().is_none() {
        return;
    }
    // A port nobody listens on: every call fails at once.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = instance(
        &format!("redis://{closed}"),
        &prefix(),
        &[
            ("APP_RATE_LIMIT__PER_CLIENT__RATE_PER_SECOND", "0.01"),
            ("APP_RATE_LIMIT__PER_CLIENT__BURST", "4"),
            ("APP_RATE_LIMIT__GLOBAL__BURST", "0"),
            ("APP_RATE_LIMIT__REDIS__REPLICAS_HINT", "2"),
        ],
    );
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, head) = request(app.api, "GET", 1);
        assert_eq!(
            header(&head, "ratelimit-policy"),
            "\"per-client\";q=4;w=400",
            "{head}"
        );
        statuses.push(status);
    }
    // The fallback's share: burst 4 / 2 replicas.
    assert_eq!(statuses, [200, 200, 429]);
    let text = scrape(app.ops);
    assert!(
        metric(
            &text,
            "rate_limit_backend_decisions_total",
            "backend=\"fallback\""
        ) >= 3.0
    );
    assert_eq!(
        metric(
            &text,
            "rate_limit_backend_decisions_total",
            "backend=\"redis\""
        ),
        0.0
    );
}

// ---------------------------------------------------------------------------------------------
// Faults: a TCP proxy between the service and Redis.

const FORWARD: u8 = 0;
const CUT: u8 = 1;
const STALL: u8 = 2;

/// Forwards to `target` (FORWARD), closes every connection and each new one at once (CUT), or
/// holds every connection without moving a byte (STALL). [`Proxy::abandon`] leaves the
/// connections open so far stalled for good, as a peer that vanished without a FIN would.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far (each one's number is its place in that count).
    accepted: Arc<AtomicU64>,
    /// Connections numbered below this one never move a byte again.
    dead_below: Arc<AtomicU64>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            mode: Arc::default(),
            open: Arc::default(),
            stop: Arc::default(),
            accepted: Arc::default(),
            dead_below: Arc::default(),
        };
        let (mode, open, stop) = (proxy.mode.clone(), proxy.open.clone(), proxy.stop.clone());
        let (accepted, dead_below) = (proxy.accepted.clone(), proxy.dead_below.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let inbound = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => break,
                };
                if mode.load(Ordering::SeqCst) == CUT {
                    drop(inbound);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let number = accepted.fetch_add(1, Ordering::SeqCst);
                for s in [&inbound, &outbound] {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                    open.lock().unwrap().push(s.try_clone().unwrap());
                }
                for (from, to) in [
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap()),
                    (outbound, inbound),
                ] {
                    let (mode, dead_below) = (mode.clone(), dead_below.clone());
                    let dead = move || number < dead_below.load(Ordering::SeqCst);
                    std::thread::spawn(move || pump(from, to, &mode, dead));
                }
            }
        });
        proxy
    }

    /// Every connection open so far is stalled for good; new ones follow the mode.
    fn abandon(&self) {
        let so_far = self.accepted.load(Ordering::SeqCst);
        self.dead_below.store(so_far, Ordering::SeqCst);
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        if mode == CUT {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.set(CUT);
    }
}

/// Copies bytes while forwarding; while stalled, reads nothing (the bytes wait in the kernel).
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8, dead: impl Fn() -> bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match mode.load(Ordering::SeqCst) {
            CUT => return,
            _ if dead() => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            STALL => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            _ => {}
        }
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Client loops that send GETs until stopped, recording every status and the slowest answer.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<u16>>>,
    slowest_ms: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, loops: u8) -> Self {
        let load = Self {
            stop: Arc::default(),
            sent: Arc::default(),
            failed: Arc::default(),
            slowest_ms: Arc::default(),
            threads: Vec::new(),
        };
        let threads = (0..loops)
            .map(|n| {
                let (stop, sent, failed, slowest) = (
                    load.stop.clone(),
                    load.sent.clone(),
                    load.failed.clone(),
                    load.slowest_ms.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let started = Instant::now();
                        let (status, _) = request(addr, "GET", 10 + n);
                        let took = started.elapsed().as_millis() as u64;
                        slowest.fetch_max(took, Ordering::SeqCst);
                        sent.fetch_add(1, Ordering::SeqCst);
                        if status != 200 {
                            failed.lock().unwrap().push(status);
                        }
                    }
                })
            })
            .collect();
        Self { threads, ..load }
    }

    /// Waits until `n` more requests have been answered.
    fn wait_for(&self, n: u64) {
        let target = self.sent.load(Ordering::SeqCst) + n;
        eventually("load progresses", || {
            self.sent.load(Ordering::SeqCst) >= target
        });
    }

    fn finish(self) -> (u64, Vec<u16>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (
            self.sent.load(Ordering::SeqCst),
            failed,
            self.slowest_ms.load(Ordering::SeqCst),
        )
    }
}

fn value(ops: SocketAddr, name: &str, labels: &str) -> f64 {
    metric(&scrape(ops), name, labels)
}

#[test]
fn redis_cut_then_stalled_under_load_falls_back_and_recovers_without_a_5xx() {
    let Some(url) = redis_url() else { return };
    let target = redis::Client::open(url.as_str())
        .ok()
        .and_then(|c| match &c.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port))
                    .ok()?
                    .next()
            }
            _ => None,
        })
        .expect("TEST_REDIS_URL names a TCP address");
    let proxy = Proxy::start(target);
    let via = format!("redis://{}", proxy.addr);
    let mut app = instance(
        &via,
        &prefix(),
        &[
            // Budgets the load cannot reach: every refusal here would be a fault.
            ("APP_RATE_LIMIT__GLOBAL__RATE_PER_SECOND", "1000000"),
            ("APP_RATE_LIMIT__GLOBAL__BURST", "1000000"),
            ("APP_RATE_LIMIT__PER_CLIENT__RATE_PER_SECOND", "1000000"),
            ("APP_RATE_LIMIT__PER_CLIENT__BURST", "1000000"),
            ("APP_RATE_LIMIT__REDIS__TIMEOUT", "50ms"),
            ("APP_RATE_LIMIT__REDIS__OPEN_WAIT", "300ms"),
            ("APP_SERVER__REQUEST_TIMEOUT", "5s"),
        ],
    );
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let load = Load::start(app.api, 4);
    let decided = |backend: &str| {
        value(
            app.ops,
            "rate_limit_backend_decisions_total",
            &format!("backend=\"{backend}\""),
        )
    };
    let active = || value(app.ops, "rate_limit_fallback_active", "");
    eventually("Redis decides", || decided("redis") >= 20.0);
    assert_eq!(active(), 0.0);

    // Cut: every connection closed, every new one refused.
    proxy.set(CUT);
    eventually("the fallback takes over", || active() == 1.0);
    let before = decided("fallback");
    load.wait_for(50);
    assert!(
        decided("fallback") >= before + 50.0,
        "the fallback does not decide"
    );
    assert!(
        value(
            app.ops,
            "rate_limit_redis_errors_total",
            "kind=\"connection\""
        ) > 0.0
    );

    proxy.set(FORWARD);
    eventually("Redis takes back over", || active() == 0.0);
    let before = decided("redis");
    load.wait_for(50);
    assert!(decided("redis") >= before + 40.0);

    // Stall: connections stay open and nothing comes back.
    proxy.set(STALL);
    eventually("the fallback takes over a stalled Redis", || {
        active() == 1.0
    });
    load.wait_for(50);
    assert!(value(app.ops, "rate_limit_redis_errors_total", "kind=\"timeout\"") > 0.0);

    proxy.set(FORWARD);
    eventually("Redis takes back over after the stall", || active() == 0.0);
    load.wait_for(50);

    // Stall again, and this time the stalled connections never come back (the peer is gone,
    // no FIN): only a new connection reaches Redis, so the service must open one.
    proxy.set(STALL);
    eventually("the fallback takes over again", || active() == 1.0);
    proxy.abandon();
    proxy.set(FORWARD);
    eventually("Redis takes back over on a new connection", || {
        active() == 0.0
    });
    load.wait_for(50);
    let (sent, failed, slowest_ms) = load.finish();
    eprintln!("fault test: {sent} requests, slowest {slowest_ms} ms");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );
    // Nothing waited on Redis for long: a request pays at most one call budget (50 ms).
    assert!(slowest_ms < 2_000, "slowest request took {slowest_ms} ms");

    // The log says it once each way, per outage.
    app.terminate();
    // The reader thread ends at the pipe's end of file, which the exit brings.
    let mut lines = Vec::new();
    while let Ok(line) = app.lines.recv_timeout(Duration::from_secs(10)) {
        lines.extend(serde_json::from_str::<serde_json::Value>(&line).ok());
    }
    let count = |message: &str| lines.iter().filter(|l| l["message"] == message).count();
    assert_eq!(
        count("Redis rate limiting unavailable: the fallback decides"),
        3
    );
    assert_eq!(count("Redis rate limiting restored"), 3);
}

// ---------------------------------------------------------------------------------------------
// Memory: a Redis of its own, so that nothing else moves its figures.

struct OwnRedis {
    child: Child,
    url: String,
}

impl OwnRedis {
    /// A free port, for a server that starts later.
    fn free_port() -> Option<u16> {
        Some(
            TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port(),
        )
    }

    fn start() -> Option<Self> {
        Self::on(Self::free_port()?, &[])
    }

    /// redis-server on `port`, with `settings` (`--name value` pairs) on its command line.
    fn on(port: u16, settings: &[&str]) -> Option<Self> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(settings)
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        let redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        eventually("redis-server answers", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(redis)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_baseline_after_200k_clients_once_buckets_refill() {
    if redis_url().is_none() {
        return;
    }
    let Some(redis) = OwnRedis::start() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server must be installed when CI=true"
        );
        eprintln!("NOTICE: Redis memory test skipped: no redis-server binary");
        return;
    };
    let mut conn = connect(&redis.url).await;
    let baseline = used_memory(&mut conn).await;
    // A full refill takes 2 s: each client's key lives that long after its request.
    let limiter = Limiter::new(&LimiterConfig {
        global: None,
        per_client: budget(5.0, 10),
        writes: None,
    });
    let rules = limiter.rules(false);
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(SCRIPT)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (clients, batch) = (200_000u32, 2_000u32);
    let mut peak_keys = 0i64;
    for start in (0..clients).step_by(batch as usize) {
        // 2,000 clients a round trip: 40 script calls of 50 requests, pipelined.
        let mut pipe = redis::pipe();
        let requests: Vec<Request<'_>> = (start..start + batch)
            .map(|n| Request {
                client: ClientKey::Ip(std::net::IpAddr::from((0x0a00_0000u32 + n).to_be_bytes())),
                rules: &rules,
            })
            .collect();
        for chunk in requests.chunks(50) {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&sha);
            script_args(&mut cmd, "mem:", chunk, None);
            pipe.add_command(cmd).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        peak_keys = peak_keys.max(keys);
    }
    let peak = used_memory(&mut conn).await;
    assert!(
        peak_keys >= 10_000,
        "too few keys alive at once ({peak_keys})"
    );
    assert!(
        peak > baseline + 1_000_000,
        "no growth: {baseline} -> {peak}"
    );
    // Keys go as their buckets refill; Redis's active expiry reclaims them without reads.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        if keys == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{keys} keys still alive after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = used_memory(&mut conn).await;
    assert!(
        after <= baseline + 256 * 1024,
        "used_memory {baseline} -> peak {peak} -> {after} after expiry"
    );
}

/// Sets a Redis setting for the test's length and puts the old value back after, whatever
/// the test's outcome.
struct ConfigOverride {
    conn: redis::Connection,
    old: Vec<(String, String)>,
}

impl ConfigOverride {
    fn set(url: &str, settings: &[(&str, &str)]) -> Self {
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("connect to TEST_REDIS_URL");
        let mut old = Vec::new();
        for (name, value) in settings {
            let (_, was): (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query(&mut conn)
                .expect("CONFIG GET");
            old.push(((*name).to_owned(), was));
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query(&mut conn)
                .expect("CONFIG SET");
        }
        Self { conn, old }
    }
}

impl Drop for ConfigOverride {
    fn drop(&mut self) {
        for (name, value) in self.old.iter().rev() {
            let _: redis::RedisResult<()> = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query(&mut self.conn);
        }
    }
}

#[test]
fn a_redis_that_may_evict_buckets_is_reported_and_one_that_cannot_is_not() {
    let Some(url) = redis_url() else { return };
    // A memory limit far above what the tests use (so nothing is evicted meanwhile), with an
    // evicting policy: what a Redis left on a cache's defaults looks like.
    let evicting = ConfigOverride::set(
        &url,
        &[("maxmemory", "4gb"), ("maxmemory-policy", "volatile-lru")],
    );
    // At debug, a reading that fails says why: a failure of this test then shows it.
    let mut app = instance(
        &url,
        &prefix(),
        &[(
            "APP_LOG__LEVEL",
            "info,orders_api::resilience::redis_limiter::eviction=debug",
        )],
    );
    let warning = wait_line(&app.lines, |l| {
        l["level"] == "WARN" && l["maxmemory_policy"] == "volatile-lru"
    });
    assert_eq!(warning["maxmemory"], 4u64 << 30, "{warning}");
    eventually("the gauge says it", || {
        scrape(app.ops).contains("rate_limit_redis_may_evict 1")
    });
    assert_eq!(app.terminate(), Some(0));

    // The same limit under noeviction: a full Redis fails calls, it drops nothing.
    let _never = ConfigOverride::set(&url, &[("maxmemory-policy", "noeviction")]);
    let app = instance(&url, &prefix(), &[]);
    eventually("the gauge says it cannot", || {
        scrape(app.ops).contains("rate_limit_redis_may_evict 0")
    });
    drop(app);
    drop(_never);
    drop(evicting);
}

#[test]
fn a_redis_that_comes_up_after_the_service_is_reported_within_seconds() {
    if redis_url().is_none() {
        return;
    }
    let port = OwnRedis::free_port().expect("a free port");
    // Nothing listens yet: the readings get no answer (said at debug level).
    let mut app = instance(
        &format!("redis://127.0.0.1:{port}"),
        &prefix(),
        &[(
            "APP_LOG__LEVEL",
            "info,orders_api::resilience::redis_limiter::eviction=debug",
        )],
    );
    wait_line(&app.lines, |l| {
        l["message"] == "cannot read Redis's eviction policy (INFO memory)"
            || l["message"] == "no answer from Redis to INFO memory"
    });
    let verdicts = |text: String| {
        text.lines()
            .filter(|l| l.starts_with("rate_limit_redis_may_evict "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(verdicts(scrape(app.ops)), Vec::<String>::new());
    let Some(_redis) = OwnRedis::on(
        port,
        &["--maxmemory", "1gb", "--maxmemory-policy", "allkeys-lru"],
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "redis-server must be installed when CI=true"
        );
        eprintln!("NOTICE: late-Redis test skipped: no redis-server binary");
        return;
    };
    // The port was free when the service started; make sure it is this redis-server that took
    // it, not another test's process.
    let mut check = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection())
        .expect("connect to the late redis-server");
    let (_, policy): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut check)
        .expect("CONFIG GET on the late redis-server");
    assert_eq!(
        policy, "allkeys-lru",
        "port {port} was taken by another process"
    );
    // Asked again 1, 2, 4, 8 s apart: well before the five-minute reading.
    let warning = wait_line(&app.lines, |l| {
        l["level"] == "WARN" && l["maxmemory_policy"] == "allkeys-lru"
    });
    assert_eq!(warning["maxmemory"], 1u64 << 30, "{warning}");
    assert_eq!(verdicts(scrape(app.ops)), ["rate_limit_redis_may_evict 1"]);
    assert_eq!(app.terminate(), Some(0));
}
