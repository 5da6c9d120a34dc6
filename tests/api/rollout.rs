//! A rolling update, as Kubernetes performs it, against the real binary on PostgreSQL: no
//! client request may fail while the old replica is replaced by a new one.
//!
//! Two instances (A, then B) share one fresh database. A client stands in for kube-proxy and
//! the Service's endpoints: it sends a steady mix of listings and creates only to instances it
//! believes ready, and re-checks `/readyz` on the ops port every `PROBE_PERIOD`. Replacing A
//! follows the kubelet: on pod deletion the endpoint is marked terminating and the preStop hook
//! runs *at the same time*; the client learns of the endpoint change at its next update (not
//! at once), and SIGTERM is sent only when preStop is over.
//!
//! Times are scaled down from deploy/k8s/deployment.yaml so that the test takes seconds:
//! endpoint propagation / probe period 100 ms, preStop 5 s -> 500 ms, drain_delay 5 s -> 1 s,
//! grace_period 20 s -> 5 s, and terminationGracePeriodSeconds is their sum plus a margin.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::helpers::PgDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_orders-api");

/// How often the client's view of the endpoints is refreshed (probe and endpoint updates).
const PROBE_PERIOD: Duration = Duration::from_millis(100);
/// The preStop sleep: several endpoint updates, so the client has let go of A before SIGTERM.
const PRE_STOP: Duration = Duration::from_millis(500);
/// shutdown.drain_delay of instance A.
const DRAIN_DELAY: Duration = Duration::from_secs(1);
/// shutdown.grace_period of instance A.
const GRACE_PERIOD: Duration = Duration::from_secs(5);
/// Closing the pool and exiting, after the grace period.
const EXIT_MARGIN: Duration = Duration::from_millis(1500);
/// Concurrent client loops (each one request at a time).
const WORKERS: usize = 4;
/// Successful requests an instance must serve before the next step: shows it is in rotation.
const WARM: u64 = 20;
/// Every wait for a condition gives up after this.
const DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// One replica: the real binary with the production profile on loopback ephemeral ports.

struct Instance {
    name: &'static str,
    child: Child,
    api: SocketAddr,
    ops: SocketAddr,
    /// Its stdout lines after "listening".
    lines: mpsc::Receiver<String>,
}

impl Instance {
    fn start(name: &'static str, database_url: &str) -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(BIN)
            .current_dir(&root)
            .env_clear()
            .env("APP_PROFILE", "production")
            .env("APP_CONFIG_DIR", root.join("config"))
            .env("DATABASE_URL", database_url)
            .env("APP_SERVER__HOST", "127.0.0.1")
            .env("APP_SERVER__PORT", "0")
            .env("APP_SERVER__OPS_PORT", "0")
            .env("APP_LOG__FORMAT", "json")
            .env("APP_SHUTDOWN__DRAIN_DELAY", millis(DRAIN_DELAY))
            .env("APP_SHUTDOWN__GRACE_PERIOD", millis(GRACE_PERIOD))
            // Every request comes from 127.0.0.1: per-client limits would answer 429 to a
            // load that, in a cluster, comes from many clients.
            .env("APP_RATE_LIMIT__ENABLED", "false")
            // The load carries no API key; authentication has tests of its own.
            .env("APP_AUTH__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn orders-api");
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Keep draining stdout after the "listening" line so the process never blocks.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + DEADLINE;
        let listening = loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("{name}: no \"listening\" log line"));
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{name}: exited before listening ({e})"));
            if let Ok(json) = serde_json::from_str::<Value>(&line)
                && json["message"] == "listening"
            {
                break json;
            }
        };
        let addr = |k: &str| {
            listening[k]
                .as_str()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap()
        };
        Self {
            name,
            api: addr("api"),
            ops: addr("ops"),
            child,
            lines: rx,
        }
    }

    /// After the exit: the API requests its access log says it answered with 2xx, and the
    /// last line it wrote.
    fn logged(&self) -> (u64, String) {
        // The reader thread ends at the pipe's end of file, which the exit brings.
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(DEADLINE) {
            lines.push(line);
        }
        let served = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["target"] == "access"
                    && l["route"].as_str().is_some_and(|r| r.starts_with("/api/"))
                    && l["status"]
                        .as_u64()
                        .is_some_and(|s| (200..300).contains(&s))
            })
            .count() as u64;
        (served, lines.last().cloned().unwrap_or_default())
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "{}: SIGTERM not delivered", self.name);
    }

    /// Waits for the exit until `deadline`; past it, SIGKILL (as the kubelet would) and `None`.
    async fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The client's view of the Service: endpoints, their readiness, and what was served.

struct Endpoint {
    name: &'static str,
    api: SocketAddr,
    ops: SocketAddr,
    /// In rotation: the last probe answered 200 and no terminating update has been applied.
    ready: AtomicBool,
    /// Set on pod deletion; applied to `ready` at the next endpoint update.
    terminating: AtomicBool,
    /// A probe answered 503 after deletion: the instance reported itself draining.
    saw_not_ready_while_terminating: AtomicBool,
    /// Successful client requests served by this endpoint.
    served: AtomicU64,
}

impl Endpoint {
    fn new(instance: &Instance) -> Arc<Self> {
        Arc::new(Self {
            name: instance.name,
            api: instance.api,
            ops: instance.ops,
            ready: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            saw_not_ready_while_terminating: AtomicBool::new(false),
            served: AtomicU64::new(0),
        })
    }
}

#[derive(Default)]
struct Load {
    endpoints: Mutex<Vec<Arc<Endpoint>>>,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    created: AtomicU64,
    next: AtomicU64,
}

impl Load {
    fn add(&self, endpoint: Arc<Endpoint>) {
        self.endpoints.lock().unwrap().push(endpoint);
    }

    /// Round-robin over the endpoints in rotation.
    fn pick(&self) -> Option<Arc<Endpoint>> {
        let ready: Vec<Arc<Endpoint>> = self
            .endpoints
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.ready.load(Ordering::SeqCst))
            .cloned()
            .collect();
        if ready.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % ready.len();
        Some(ready[i].clone())
    }
}

/// Readiness as the endpoints controller sees it: the probe every `PROBE_PERIOD` (a fresh
/// connection each time, like the kubelet's), and the terminating mark applied at the next
/// update. Probing goes on after deletion, as the kubelet's does, until the listener is gone.
async fn watch_readiness(endpoint: Arc<Endpoint>, load: Arc<Load>) {
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let url = format!("http://{}/readyz", endpoint.ops);
    let mut tick = tokio::time::interval(PROBE_PERIOD);
    while !load.stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let terminating = endpoint.terminating.load(Ordering::SeqCst);
        let status = probe
            .get(&url)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if terminating && status == Some(503) {
            endpoint
                .saw_not_ready_while_terminating
                .store(true, Ordering::SeqCst);
        }
        endpoint
            .ready
            .store(!terminating && status == Some(200), Ordering::SeqCst);
        if terminating && status.is_none() {
            return; // listeners closed: nothing left to probe
        }
    }
}

/// One client loop: alternately create an order and list orders, on a ready endpoint.
///
/// No request is ever retried, so every transport error and every non-2xx answer counts as a
/// failure. Connections are kept alive and pooled per address, as a real client or proxy
/// does: a connection to A is only used for requests routed to A, and A is routed to only
/// while it is in rotation, during which it serves normally and for preStop + drain_delay
/// after it leaves; so by the time A closes its listeners (and its idle pooled connections)
/// no request is on its way to it. An error here is a real failure of the rollout.
async fn drive(worker: usize, client: reqwest::Client, load: Arc<Load>) {
    let mut n = 0u64;
    while !load.stop.load(Ordering::SeqCst) {
        let Some(endpoint) = load.pick() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        n += 1;
        let base = format!("http://{}/api/v1/orders", endpoint.api);
        let create = n.is_multiple_of(2);
        let result = if create {
            client
                .post(&base)
                .json(&json!({
                    "customer_id": format!("rollout-{worker}"),
                    "currency": "EUR",
                    "items": [{"sku": "ROLL-1", "quantity": 1, "unit_price": "1.00"}],
                }))
                .send()
                .await
        } else {
            client.get(format!("{base}?limit=5")).send().await
        };
        let what = if create { "POST" } else { "GET" };
        match result {
            Ok(res) if res.status().is_success() => {
                // The body is read in full: a connection cut mid-body is a failure too.
                match res.bytes().await {
                    Ok(_) => {
                        endpoint.served.fetch_add(1, Ordering::SeqCst);
                        if create {
                            load.created.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) => load
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("{what} {}: body cut: {e:?}", endpoint.name)),
                }
            }
            Ok(res) => {
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("{what} {}: {status} {body}", endpoint.name));
            }
            Err(e) => load
                .failures
                .lock()
                .unwrap()
                .push(format!("{what} {}: {e:?}", endpoint.name)),
        }
    }
}

/// A duration as the binary's configuration spells it.
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Polls `cond` until it holds; panics after `DEADLINE` naming `what`.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_update_loses_no_request() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    orders_api::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let load = Arc::new(Load::default());

    // A is the only replica; the client starts once it is in rotation.
    let mut a = Instance::start("A", &db.url);
    let ep_a = Endpoint::new(&a);
    load.add(ep_a.clone());
    let probes_a = tokio::spawn(watch_readiness(ep_a.clone(), load.clone()));
    until("A ready", || ep_a.ready.load(Ordering::SeqCst)).await;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(drive(w, client.clone(), load.clone())))
        .collect();
    until("A serving", || ep_a.served.load(Ordering::SeqCst) >= WARM).await;

    // Surge: B starts, becomes ready (its schema is already current) and takes traffic.
    let b = Instance::start("B", &db.url);
    let ep_b = Endpoint::new(&b);
    load.add(ep_b.clone());
    let probes_b = tokio::spawn(watch_readiness(ep_b.clone(), load.clone()));
    until("B serving", || ep_b.served.load(Ordering::SeqCst) >= WARM).await;

    // Delete A: endpoint marked terminating and preStop running, concurrently; SIGTERM after.
    let deleted = Instant::now();
    ep_a.terminating.store(true, Ordering::SeqCst);
    tokio::time::sleep(PRE_STOP).await; // the preStop hook's sleep, not a synchronisation
    a.sigterm();
    // terminationGracePeriodSeconds, counted from the deletion as the kubelet does.
    let termination_grace = PRE_STOP + DRAIN_DELAY + GRACE_PERIOD + EXIT_MARGIN;
    let status = a.wait_exit(deleted + termination_grace).await;

    // Traffic goes on, on B alone.
    let b_before = ep_b.served.load(Ordering::SeqCst);
    until("B serving after A is gone", || {
        ep_b.served.load(Ordering::SeqCst) >= b_before + WARM
    })
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    probes_a.await.unwrap();
    probes_b.await.unwrap();

    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} client request(s) failed during the rollout:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let status = status.expect("A did not exit within its termination grace period");
    assert_eq!(status.code(), Some(0), "A's exit after SIGTERM");
    assert!(
        ep_a.saw_not_ready_while_terminating.load(Ordering::SeqCst),
        "A's /readyz never answered 503 while it drained"
    );
    // A accounted for its traffic to the end: every request the client saw it answer is in
    // its access log, and the log ends with the shutdown line (nothing lost in the last
    // buffered batch, nothing served after it).
    let (logged, last) = a.logged();
    assert_eq!(
        logged,
        ep_a.served.load(Ordering::SeqCst),
        "A's access log and what its clients got disagree"
    );
    assert!(last.contains("shutdown complete"), "A's last line: {last}");

    // Both replicas wrote to the one database: B lists every order created through either.
    let created = load.created.load(Ordering::SeqCst);
    assert!(created > 0);
    let listing: Value = client
        .get(format!("http://{}/api/v1/orders?limit=1", b.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listing["total"].as_u64(), Some(created));
}
