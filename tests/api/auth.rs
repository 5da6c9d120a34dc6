//! API keys over real HTTP: 401 and 403 with their challenges, each scope's reach, the routes
//! that need no key, unknown paths, rate-limit buckets per key, and the real binary's logs.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use orders_api::auth::keys::hash;
use serde_json::{Value, json};

use crate::support::binary::{self, eventually, get_status, http, wait_line};
use orders_api::config::Settings;

use crate::support::helpers::{Backend, TestApp, api_key, order_body, per_client_limit, problem};

const READER: &str = "oak_reader-0123456789abcdefghijklmnopqrstuvwxyz";
const WRITER: &str = "oak_writer-0123456789abcdefghijklmnopqrstuvwxyz";
const ADMIN: &str = "oak_admin-0123456789abcdefghijklmnopqrstuvwxyz";

/// A keys file (the shape of the mounted Secret) with the three test keys, and the settings
/// that turn authentication on with it.
/// The three keys of [`Keys`]: id, the key itself, scopes.
const KEYS: [(&str, &str, &[&str]); 3] = [
    ("reader", READER, &["orders:read"]),
    ("writer", WRITER, &["orders:write"]),
    ("admin", ADMIN, &["orders:read", "orders:write"]),
];

fn sha256_hex(key: &str) -> String {
    hash(key).iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Keys {
    _dir: tempfile::TempDir,
    path: String,
}

impl Keys {
    pub fn write() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (id, key, scopes) in KEYS {
            let sha = sha256_hex(key);
            let scopes = scopes
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            text.push_str(&format!(
                "[[keys]]\nid = \"{id}\"\nsha256 = \"{sha}\"\nscopes = [{scopes}]\n"
            ));
        }
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, text).unwrap();
        Self {
            path: path.display().to_string(),
            _dir: dir,
        }
    }

    /// The settings of an instance that reads this file: authentication on, the three keys.
    pub fn enable(&self) -> impl FnOnce(&mut Settings) + Send + use<> {
        let path = PathBuf::from(&self.path);
        move |s| {
            s.auth.enabled = true;
            s.auth.keys_file = Some(path);
            s.auth.keys = KEYS
                .iter()
                .map(|(id, key, scopes)| api_key(id, &sha256_hex(key), scopes))
                .collect();
        }
    }
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.request(method.clone(), app.url(path));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if method == reqwest::Method::POST {
        req = req.json(&order_body("cust-auth"));
    } else if method == reqwest::Method::PATCH {
        req = req.json(&json!({ "status": "paid" }));
    }
    req.send().await.unwrap()
}

fn challenge(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn missing_malformed_and_wrong_keys_get_401_with_a_challenge() {
    let keys = Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .spawn()
        .await;
    let plain = r#"Bearer realm="orders-api""#;
    let invalid = r#"Bearer realm="orders-api", error="invalid_token""#;
    let cases: [(Option<String>, &str); 6] = [
        (None, plain),
        (Some("Basic dXNlcjpwYXNz".into()), plain),
        (Some("Bearer".into()), invalid),
        (Some("Bearer two tokens".into()), invalid),
        (Some(bearer("oak_not-a-configured-key")), invalid),
        // A key is matched whole: a prefix of it is not the key.
        (Some(bearer(&READER[..READER.len() - 1])), invalid),
    ];
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        for (authorization, want) in &cases {
            let authorization = authorization.as_deref();
            let res = send(&app, method.clone(), "/api/v1/orders", authorization).await;
            assert_eq!(challenge(&res), *want, "{method} with {authorization:?}");
            let body = problem(res, 401).await;
            assert_eq!(body["type"], "urn:orders-api:problem:unauthenticated");
        }
    }
    // Same answer on a route with a parameter; nothing was created by the refused POSTs.
    let res = send(&app, reqwest::Method::GET, "/api/v1/orders/x", None).await;
    assert_eq!(res.status(), 401);
    let listed: serde_json::Value = send(
        &app,
        reqwest::Method::GET,
        "/api/v1/orders",
        Some(&bearer(ADMIN)),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(listed["total"], 0);
}

#[tokio::test]
async fn each_scope_reaches_its_methods_and_only_those() {
    let keys = Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .spawn()
        .await;
    let (reader, writer, admin) = (bearer(READER), bearer(WRITER), bearer(ADMIN));

    let created = send(&app, reqwest::Method::POST, "/api/v1/orders", Some(&writer)).await;
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let one = format!("/api/v1/orders/{id}");
    assert_eq!(
        send(&app, reqwest::Method::POST, "/api/v1/orders", Some(&admin))
            .await
            .status(),
        201
    );
    for key in [&reader, &admin] {
        assert_eq!(
            send(&app, reqwest::Method::GET, &one, Some(key))
                .await
                .status(),
            200
        );
        assert_eq!(
            send(&app, reqwest::Method::HEAD, "/api/v1/orders", Some(key))
                .await
                .status(),
            200
        );
    }

    // Read-only key writing: 403 naming the missing scope.
    let res = send(&app, reqwest::Method::POST, "/api/v1/orders", Some(&reader)).await;
    assert_eq!(
        challenge(&res),
        r#"Bearer realm="orders-api", error="insufficient_scope", scope="orders:write""#
    );
    let body = problem(res, 403).await;
    assert_eq!(body["type"], "urn:orders-api:problem:insufficient-scope");
    assert!(body["detail"].as_str().unwrap().contains("orders:write"));
    let res = send(&app, reqwest::Method::PATCH, &one, Some(&reader)).await;
    problem(res, 403).await;

    // Write-only key reading: 403 naming orders:read.
    let res = send(&app, reqwest::Method::GET, &one, Some(&writer)).await;
    assert_eq!(
        challenge(&res),
        r#"Bearer realm="orders-api", error="insufficient_scope", scope="orders:read""#
    );
    problem(res, 403).await;

    let res = send(&app, reqwest::Method::PATCH, &one, Some(&writer)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn probes_metrics_and_unknown_paths_need_no_key() {
    let keys = Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .spawn()
        .await;
    for url in [
        app.url("/healthz"),
        app.ops_url("/healthz"),
        app.ops_url("/readyz"),
        app.ops_url("/metrics"),
    ] {
        let res = app.client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200, "{url}");
    }
    // Unknown paths are 404 to everyone, inside /api too: no hint that a key would help.
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v3/orders",
        "/api/v1/orders/x/y",
    ] {
        let res = send(&app, reqwest::Method::GET, path, None).await;
        assert!(res.headers().get("www-authenticate").is_none(), "{path}");
        problem(res, 404).await;
    }
    // The OpenAPI documents are public wherever they are served.
    for path in ["/api/v1/openapi.json", "/api/v2/openapi.json"] {
        let res = send(&app, reqwest::Method::GET, path, None).await;
        assert_ne!(res.status(), 401, "{path}");
    }
}

fn client_from(ip: [u8; 4]) -> reqwest::Client {
    orders_api::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

#[tokio::test]
async fn rate_limits_count_per_key_across_addresses_and_per_address_without_one() {
    let keys = Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .with(per_client_limit(0.01, 2))
        .spawn()
        .await;
    let url = app.url("/api/v1/orders");
    let status = |ip: [u8; 4], key: &str| {
        let req = client_from(ip)
            .get(&url)
            .header("authorization", bearer(key));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // One key from two addresses shares one bucket.
    assert_eq!(status([127, 0, 0, 1], READER).await, 200);
    assert_eq!(status([127, 0, 0, 2], READER).await, 200);
    assert_eq!(status([127, 0, 0, 3], READER).await, 429);
    // Two keys from one address have a bucket each, apart from the address's own.
    assert_eq!(status([127, 0, 0, 1], ADMIN).await, 200);
    assert_eq!(status([127, 0, 0, 1], ADMIN).await, 200);
    assert_eq!(status([127, 0, 0, 1], ADMIN).await, 429);
    // Guessing keys spends the guessing address's budget.
    let guess = "oak_guess";
    assert_eq!(status([127, 0, 0, 4], guess).await, 401);
    assert_eq!(status([127, 0, 0, 4], guess).await, 401);
    assert_eq!(status([127, 0, 0, 4], guess).await, 429);
    assert_eq!(
        status([127, 0, 0, 4], WRITER).await,
        403,
        "a real key has its own bucket"
    );
}

// ---------------------------------------------------------------------------------------------
// The real binary.

fn cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_orders-api"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn generated_keys_work_and_only_their_id_reaches_the_logs() {
    let generated = cli(&[
        "keys",
        "generate",
        "--id",
        "log-test",
        "--scopes",
        "orders:read,orders:write",
    ]);
    let field = |name: &str| {
        generated
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {generated}"))
            .trim()
            .to_string()
    };
    let key = field("key:");
    let sha256 = field("sha256:");
    assert!(key.starts_with("oak_") && key.len() >= 4 + 43, "{key}");
    assert_eq!(
        sha256,
        hash(&key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    // The printed table is pasted into a configuration file as is.
    let snippet = &generated[generated.find("[[auth.keys]]").unwrap()..];
    assert!(!snippet.contains(&key), "the key is not part of the table");
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("orders-api.toml");
    std::fs::write(&config, snippet).unwrap();
    let stderr_path = dir.path().join("stderr.log");

    let (mut cmd, data) = binary::command(&[
        ("APP_AUTH__ENABLED", "true"),
        ("APP_CONFIG_FILE", config.to_str().unwrap()),
    ]);
    cmd.stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
    let mut app = binary::spawn_with_stderr(cmd, data);
    // Every line read while the test runs, to search for the key afterwards.
    let seen = RefCell::new(Vec::new());
    let next = |want: &dyn Fn(&Value) -> bool| {
        wait_line(&app.lines, |l| {
            seen.borrow_mut().push(l.to_string());
            want(l)
        })
    };
    let on = next(&|l| l["message"] == "API key authentication on");
    assert_eq!(on["keys"], "log-test");
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));

    let request = |authorization: &str| {
        http(
            app.api,
            &format!(
                "GET /api/v1/orders HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
        .unwrap()
    };
    assert!(request(&format!("Bearer {key}")).starts_with("HTTP/1.1 200"));
    let line = next(&|l| l["target"] == "access");
    assert_eq!(line["api_key_id"], "log-test");
    assert_eq!(line["status"], 200);
    // A near miss is refused, and its line has no key id.
    assert!(request(&format!("Bearer {key}x")).starts_with("HTTP/1.1 401"));
    let line = next(&|l| l["target"] == "access");
    assert_eq!(line["status"], 401);
    assert!(line.get("api_key_id").is_none(), "{line}");

    assert_eq!(app.terminate(), Some(0));
    let mut stdout = seen.into_inner();
    stdout.extend(app.lines.try_iter());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stdout.len() >= 3, "{stdout:?}");
    for (name, text) in [("stdout", stdout.join("\n")), ("stderr", stderr)] {
        assert!(
            !text.contains(&key[4..]),
            "the key leaked into {name}: {text}"
        );
    }
}

#[test]
fn serving_without_keys_warns_that_the_api_is_open() {
    // The development profile turns authentication off.
    let app = binary::start(&[]);
    let warning = wait_line(&app.lines, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("auth disabled"))
    });
    assert_eq!(warning["level"], "WARN");
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("open to anyone"), "{message}");
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_api_key_not_the_address() {
    let keys = Keys::write();
    let app = TestApp::builder(Backend::sqlite())
        .with(keys.enable())
        .spawn()
        .await;
    let create = |key: &'static str| {
        app.client
            .post(app.url("/api/v1/orders"))
            .header("authorization", bearer(key))
            .header("idempotency-key", "checkout-1")
            .json(&order_body("cust-idem"))
            .send()
    };
    let first: Value = create(WRITER).await.unwrap().json().await.unwrap();
    let replay = create(WRITER).await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap(), first);
    // Another key from the same address: its own key space, so a new order.
    let other = create(ADMIN).await.unwrap();
    assert_eq!(other.status(), 201);
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_ne!(other.json::<Value>().await.unwrap()["id"], first["id"]);
    // v2 is guarded the same way.
    let v2 = "/api/v2/orders";
    let res = send(&app, reqwest::Method::GET, v2, None).await;
    problem(res, 401).await;
    let res = send(&app, reqwest::Method::GET, v2, Some(&bearer(WRITER))).await;
    problem(res, 403).await;
    let res = send(&app, reqwest::Method::GET, v2, Some(&bearer(READER))).await;
    assert_eq!(res.status(), 200);
}
