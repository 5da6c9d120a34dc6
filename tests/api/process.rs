//! The real binary: graceful shutdown on SIGTERM, the JSON access log, the healthcheck command.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::binary::{eventually, get_status, http, start, wait_line};
use crate::support::helpers::Backend;

#[test]
fn sigterm_drains_finishes_in_flight_requests_and_exits_zero() {
    let mut app = start(&[
        ("APP_SHUTDOWN__DRAIN_DELAY", "1s"),
        ("APP_SHUTDOWN__GRACE_PERIOD", "10s"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));

    // A request in flight: headers and half the body sent before SIGTERM.
    let body = r#"{"customer_id":"late","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price":"1.00"}]}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(app.api).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        in_flight,
        "POST /api/v1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    in_flight.flush().unwrap();
    wait_line(&app.lines, |_| true); // nothing else is logged until the request completes
    let started = Instant::now();

    let pid = app.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );

    // During the drain the process still serves, but reports not ready, and tells keep-alive
    // clients to go elsewhere.
    eventually("readyz 503 while draining", || {
        get_status(app.ops, "/readyz").ok() == Some(503)
    });
    let mut keep_alive = TcpStream::connect(app.api).unwrap();
    keep_alive
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 1024];
    let n = keep_alive.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("connection: close"),
        "no Connection: close while draining: {head}"
    );
    // After the drain new connections are refused.
    eventually("new connections refused", || {
        TcpStream::connect(app.api).is_err()
    });

    // The in-flight request still completes.
    in_flight.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201"),
        "in-flight request got: {response}"
    );

    let status = app.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exit within the grace period"
    );
}

#[test]
fn access_log_lines_are_json_with_every_field_and_no_secrets() {
    let mut app = start(&[]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let res = http(
        app.api,
        "GET /api/v1/orders/0190b8a0-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: t\r\n\
         User-Agent: log-test/1.0\r\nX-Request-Id: log-req-1\r\n\
         Authorization: Bearer super-secret-token\r\nCookie: session=cookie-secret\r\n\
         Connection: close\r\n\r\n",
    )
    .unwrap();
    assert!(res.starts_with("HTTP/1.1 404"));
    let line = wait_line(&app.lines, |l| l["target"] == "access");
    for field in [
        "timestamp",
        "level",
        "message",
        "method",
        "route",
        "path",
        "status",
        "latency_ms",
        "request_id",
        "client_ip",
        "user_agent",
    ] {
        assert!(
            line.get(field).is_some(),
            "access log lacks {field}: {line}"
        );
    }
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/api/v1/orders/{id}");
    assert_eq!(
        line["path"],
        "/api/v1/orders/0190b8a0-0000-7000-8000-000000000000"
    );
    assert_eq!(line["status"], 404);
    assert_eq!(line["request_id"], "log-req-1");
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_agent"], "log-test/1.0");
    assert!(line["latency_ms"].is_number());
    let ts = line["timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok());

    // Unmatched paths get one fixed route label.
    http(
        app.api,
        "GET /x/y/z HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let unmatched = wait_line(&app.lines, |l| l["target"] == "access");
    assert_eq!(unmatched["route"], "<unmatched>");

    let pid = app.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(app.child.wait().unwrap().code(), Some(0));
    let rest: Vec<String> = app.lines.try_iter().collect();
    let all = rest.join("\n");
    assert!(!all.contains("super-secret-token") && !all.contains("cookie-secret"));
    // Probe traffic is logged at DEBUG, so none of it shows at INFO.
    assert!(!all.contains("/readyz"), "probe requests logged at INFO");
    for l in rest {
        serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
}

/// The log filter decides whether a request's access line is written, at start and after a
/// change while running (the line is written without going through the subscriber).
#[test]
fn the_log_filter_keeps_access_lines_out_until_a_change_lets_them_in() {
    let mut app = start(&[
        ("APP_LOG__LEVEL", "info,access=off"),
        ("APP_AUTH__ENABLED", "false"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let get = |id: &str| {
        http(
            app.api,
            &format!(
                "GET /api/v1/orders/0190b8a0-0000-7000-8000-000000000000 HTTP/1.1\r\nHost: t\r\n\
                 X-Request-Id: {id}\r\nConnection: close\r\n\r\n"
            ),
        )
        .unwrap()
    };
    assert!(get("quiet-1").starts_with("HTTP/1.1 404"));
    let body = r#"{"filter":"info","ttl":"10m"}"#;
    let set = http(
        app.ops,
        &format!(
            "PUT /log-level HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    assert!(set.starts_with("HTTP/1.1 200"), "{set}");
    assert!(get("loud-1").starts_with("HTTP/1.1 404"));
    // Lines leave in order: the first request's line, had it been written, comes first.
    let quiet = |l: &Value| l["target"] == "access" && l["request_id"] == "quiet-1";
    let loud = wait_line(&app.lines, |l| {
        assert!(!quiet(l), "filtered out, yet written: {l}");
        l["target"] == "access" && l["request_id"] == "loud-1"
    });
    assert_eq!(loud["status"], 404);
    let pid = app.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert_eq!(app.child.wait().unwrap().code(), Some(0));
    for line in app.lines.try_iter() {
        let line: Value = serde_json::from_str(&line).unwrap();
        assert!(!quiet(&line), "filtered out, yet written: {line}");
    }
}

/// A failure on our side is logged once, by the layer that logs requests: at WARN for a
/// database that is down, in the request's span (its request id), with the cause the client
/// is not told, and before the access line of the same request.
#[test]
fn a_failed_request_logs_its_cause_once_with_its_request_id() {
    let backend = Backend::sqlite();
    let url = backend.url();
    let app = start(&[
        ("APP_DATABASE__URL", url.as_str()),
        ("APP_DATABASE__BUSY_TIMEOUT", "20ms"),
    ]);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    // Another process holds SQLite's write lock: the create fails as "database unavailable".
    let lock = crate::support::helpers::sqlite(&url);
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = r#"{"customer_id":"c","currency":"EUR","items":[{"sku":"A","quantity":1,"unit_price":"1.00"}]}"#;
    let res = http(
        app.api,
        &format!(
            "POST /api/v1/orders HTTP/1.1\r\nHost: t\r\nX-Request-Id: fail-req-1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    lock.execute_batch("ROLLBACK").unwrap();
    assert!(res.starts_with("HTTP/1.1 503"), "{res}");
    let (_, problem) = res.split_once("\r\n\r\n").unwrap();
    let failure = wait_line(&app.lines, |l| {
        l["request_id"] == "fail-req-1" && l["target"] != "access"
    });
    assert_eq!(failure["level"], "WARN", "{failure}");
    assert_eq!(failure["message"], "database unavailable", "{failure}");
    let cause = failure["error"].as_str().unwrap();
    assert!(cause.starts_with("database unavailable:"), "{failure}");
    assert!(
        !problem.contains(cause),
        "the cause stays out of the body: {problem}"
    );
    let access = wait_line(&app.lines, |l| l["request_id"] == "fail-req-1");
    assert_eq!(
        access["target"], "access",
        "one failure line, then the access line"
    );
    assert_eq!(access["status"], 503);
}

#[test]
fn healthcheck_subcommand_exits_0_when_live_and_1_when_not() {
    let mut app = start(&[]);
    let check = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_orders-api"))
            .args(["healthcheck", "--timeout", "2s", "--url", &url])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(check(format!("http://{}/healthz", app.ops)), Some(0));
    assert_eq!(
        check(format!("http://{}/nope", app.ops)),
        Some(1),
        "404 is not healthy"
    );
    // Default URL: the ops port from the configuration.
    let default = Command::new(env!("CARGO_BIN_EXE_orders-api"))
        .arg("healthcheck")
        .env("APP_SERVER__OPS_PORT", app.ops.port().to_string())
        .env("APP_CONFIG_DIR", "/nonexistent")
        // The defaults alone require API keys; a configuration that does not load would send
        // the probe to the default port instead.
        .env("APP_AUTH__ENABLED", "false")
        .output()
        .unwrap();
    assert_eq!(default.status.code(), Some(0));
    Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(app.child.wait().unwrap().code(), Some(0));
    assert_eq!(
        check(format!("http://{}/healthz", app.ops)),
        Some(1),
        "dead process is unhealthy"
    );
}

/// A keyed create cut short by the request timeout goes on without its client; SIGTERM waits
/// for it (within the grace period) before the store closes, so it ends with its order stored
/// and its key completed instead of a hold left to lapse.
#[test]
fn shutdown_waits_for_keyed_creates_that_outlived_their_request() {
    let (cmd, dir) = crate::support::binary::command(&[
        ("APP_AUTH__ENABLED", "false"),
        ("APP_SERVER__REQUEST_TIMEOUT", "300ms"),
        ("APP_DATABASE__BUSY_TIMEOUT", "60s"),
        ("APP_SHUTDOWN__DRAIN_DELAY", "0s"),
        ("APP_SHUTDOWN__GRACE_PERIOD", "30s"),
    ]);
    let url = format!("sqlite://{}", dir.path().join("o.db").display());
    let mut app = crate::support::binary::spawn(cmd, dir);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    let lock = crate::support::helpers::sqlite(&url);
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let body = r#"{"customer_id":"outlives","items":[{"sku":"A","quantity":1,"unit_price":{"amount_minor":100,"currency":"EUR"}}]}"#;
    let res = http(
        app.api,
        &format!(
            "POST /api/v2/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Idempotency-Key: outlives-1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .unwrap();
    assert!(res.starts_with("HTTP/1.1 504"), "{res}");

    let pid = app.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    wait_line(&app.lines, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("waiting for background creates"))
    });
    lock.execute_batch("ROLLBACK").unwrap();
    assert_eq!(app.child.wait().unwrap().code(), Some(0));

    let orders = crate::support::helpers::sqlite_count(
        &lock,
        "SELECT COUNT(*) FROM orders WHERE customer_id = 'outlives'",
    );
    let status: Option<i64> = lock
        .query_row(
            "SELECT status FROM idempotency_keys WHERE key = 'outlives-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!((orders, status), (1, Some(201)));
}
