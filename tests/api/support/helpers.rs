//! The test harness: `TestApp` (a served instance), backends, and the `both_backends!` macro.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orders_api::auth::keys::{ApiKey, RawKey};
use orders_api::config::{Budget, LimiterConfig, LoadOptions, Settings};
use orders_api::server::Server;
use orders_api::store::Store;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Runs each listed `async fn name(backend: Backend)` as `sqlite::name` and `postgres::name`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::helpers::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(backend) = $crate::support::helpers::Backend::postgres().await {
                        super::$name(backend).await;
                    }
                }
            )*
        }
    };
}
pub(crate) use both_backends;

/// A database for one test, removed when dropped.
pub enum Backend {
    /// A SQLite file in its own temp directory.
    Sqlite(tempfile::TempDir),
    /// A fresh PostgreSQL database.
    Postgres(PgDatabase),
}

impl Backend {
    pub fn sqlite() -> Self {
        Backend::Sqlite(tempfile::tempdir().expect("temp dir"))
    }

    /// A fresh database, or `None` (with a notice) when TEST_DATABASE_URL is unset outside CI.
    pub async fn postgres() -> Option<Self> {
        PgDatabase::create().await.map(Backend::Postgres)
    }

    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(dir) => format!("sqlite://{}", dir.path().join("orders.db").display()),
            Backend::Postgres(db) => db.url.clone(),
        }
    }
}

/// The PostgreSQL admin URL, or `None` with a printed notice; under `CI=true` its absence fails.
pub fn postgres_admin_url() -> Option<String> {
    service_url(
        "TEST_DATABASE_URL",
        "PostgreSQL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// The Redis URL for tests, or `None` with a printed notice; under `CI=true` its absence
/// fails.
pub fn redis_url() -> Option<String> {
    service_url("TEST_REDIS_URL", "Redis", "redis://127.0.0.1:6379")
}

/// The URL of a service in `var`: without it a test is skipped with a notice, but never
/// under `CI=true`.
fn service_url(var: &str, service: &str, example: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} must be set when CI=true: {service} tests may not be skipped"
            );
            // Written past the test harness's capture so that the skip is visible.
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: {service} test skipped: set {var} (e.g. {example})"
            );
            None
        }
    }
}

/// A database created for one test and dropped (forcefully) afterwards.
pub struct PgDatabase {
    admin: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create() -> Option<Self> {
        let admin = postgres_admin_url()?;
        let name = format!("orders_test_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to TEST_DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        Some(Self { admin, name, url })
    }
}

/// `admin` with its database path replaced by `name`.
pub fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The `host:port` of a database URL.
pub fn authority(url: &str) -> &str {
    let start = url
        .find('@')
        .or_else(|| url.find("://").map(|i| i + 2))
        .map_or(0, |i| i + 1);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    &url[start..end]
}

/// `url` with its `host:port` replaced by `addr` (to route it through a proxy).
pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
    url.replacen(authority(url), &addr.to_string(), 1)
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop cannot be async, and the test's runtime may be shutting down: use a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Settings for a test: ephemeral ports on loopback, no profile file, no drain delay, rate
/// limiting and authentication off (tests that need them turn them on with
/// [`Builder::with`]).
pub fn test_settings(db_url: &str) -> Settings {
    let vars: Vec<(String, String)> = [
        ("APP_CONFIG_DIR", "/nonexistent"),
        ("APP_DATABASE__URL", db_url),
        // Without keys, authentication on would not load; set below as the other defaults.
        ("APP_AUTH__ENABLED", "false"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let mut settings = Settings::load(&LoadOptions {
        config_file: None,
        env: vars,
    })
    .unwrap_or_else(|e| panic!("test settings: {e}"));
    settings.server.host = std::net::Ipv4Addr::LOCALHOST.into();
    settings.server.port = 0;
    settings.server.ops_port = 0;
    settings.shutdown.drain_delay = Duration::ZERO;
    // Tests send bursts from one address; the limiter has tests of its own.
    settings.rate_limit.enabled = false;
    // Requests carry no API key; the tests of authentication turn it back on
    // (`APP_AUTH__ENABLED` above).
    settings
}

/// Rate limiting on, with a per-client budget only (no global or writes policy): `burst`
/// requests at once, refilled at `rate_per_second`.
pub fn per_client_limit(rate_per_second: f64, burst: u32) -> impl FnOnce(&mut Settings) + Send {
    move |s| {
        s.rate_limit.enabled = true;
        s.rate_limit.policies = LimiterConfig {
            global: None,
            per_client: Some(Budget {
                rate_per_second,
                burst,
            }),
            writes: None,
        };
    }
}

/// An API key entry, validated as a keys file's `[[keys]]` entry is.
pub fn api_key(id: &str, sha256_hex: &str, scopes: &[&str]) -> ApiKey {
    RawKey {
        id: Some(id.into()),
        sha256: Some(sha256_hex.into()),
        scopes: Some(scopes.iter().map(ToString::to_string).collect()),
    }
    .validate()
    .unwrap_or_else(|e| panic!("test key {id}: {e:?}"))
}

/// A change to a test instance's settings, typed: `|s| s.server.max_in_flight = 1`.
type Edit = Box<dyn FnOnce(&mut Settings) + Send>;

/// How a [`TestApp`] is made: `TestApp::builder(backend).with(|s| …).spawn().await`.
pub struct Builder {
    backend: Backend,
    url: Option<String>,
    edits: Vec<Edit>,
}

impl Builder {
    /// Changes the settings; edits apply in order, after [`test_settings`].
    pub fn with(mut self, edit: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Connects to `url` instead of the backend's own database (e.g. through a proxy).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Serves and waits until ready.
    pub async fn spawn(self) -> TestApp {
        let app = self.start().await;
        app.wait_ready().await;
        app
    }

    /// Serves without waiting for readiness.
    pub async fn start(self) -> TestApp {
        let url = self.url.unwrap_or_else(|| self.backend.url());
        let mut settings = test_settings(&url);
        for edit in self.edits {
            edit(&mut settings);
        }
        TestApp::serve(self.backend, settings).await
    }
}

/// A served instance plus a client.
pub struct TestApp {
    pub api: SocketAddr,
    pub ops: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    pub backend: Backend,
}

impl TestApp {
    /// Serves on `backend` with the test settings and waits until ready.
    pub async fn spawn(backend: Backend) -> Self {
        Self::builder(backend).spawn().await
    }

    /// A builder, for changed settings or another database URL.
    pub fn builder(backend: Backend) -> Builder {
        Builder {
            backend,
            url: None,
            edits: Vec::new(),
        }
    }

    async fn serve(backend: Backend, settings: Settings) -> Self {
        let store = Store::open(&settings.database).expect("store");
        let server = Server::bind(settings, store).await.expect("bind");
        let api = server.api_addr().expect("api addr");
        let ops = server.ops_addr().expect("ops addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            api,
            ops,
            client: client(),
            stop: Some(tx),
            task: Some(task),
            backend,
        }
    }

    /// Polls `/readyz` until 200 (the schema task runs in the background).
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.ops_url("/readyz")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("not ready after 5 s");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// The ops listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.ops_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Creates an order and returns its body.
    pub async fn create_order(&self, body: &Value) -> Value {
        let res = self.post_json("/api/v1/orders", body).await;
        assert_eq!(res.status(), 201, "create failed");
        res.json().await.expect("order json")
    }

    /// Sets an order's status, asserting 200.
    pub async fn set_status(&self, id: &str, status: &str) -> Value {
        let res = self
            .patch_json(
                &format!("/api/v1/orders/{id}"),
                &json!({ "status": status }),
            )
            .await;
        assert_eq!(res.status(), 200, "PATCH {id} to {status}");
        res.json().await.expect("order json")
    }

    /// Graceful stop, waiting for the server to finish; returns the backend for reuse.
    pub async fn stop(mut self) -> Backend {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
        std::mem::replace(
            &mut self.backend,
            Backend::Sqlite(tempfile::tempdir().expect("dir")),
        )
    }
}

/// An HTTP client (plain HTTP; the crypto provider is installed because the crate's TLS stack
/// is built without a default one).
pub fn client() -> reqwest::Client {
    orders_api::install_crypto_provider();
    reqwest::Client::new()
}

/// A valid v1 create body.
pub fn order_body(customer: &str) -> Value {
    json!({
        "customer_id": customer,
        "currency": "EUR",
        "items": [
            { "sku": "SKU-1", "quantity": 2, "unit_price": "9.99" },
            { "sku": "SKU-2", "quantity": 1, "unit_price": "0.05" }
        ]
    })
}

/// The sum of the samples of `name` whose labels contain `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Asserts an RFC 9457 body with `status`, and returns it.
pub async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let header_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["type"].is_string() && body["detail"].is_string());
    // Every problem names its request, in the body and in the header alike.
    let header_id = header_id.expect("a problem without an x-request-id header");
    assert_eq!(
        body["request_id"].as_str(),
        Some(header_id.as_str()),
        "{body}"
    );
    body
}

/// The repository root (for the config directory and the binary's working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A connection of the test's own to a SQLite database by URL (`sqlite://PATH`), to hold its
/// locks or look at its rows from outside the service. It creates the file if need be.
pub fn sqlite(url: &str) -> rusqlite::Connection {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let conn = rusqlite::Connection::open(path).expect("open the SQLite file");
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

/// The one integer `sql` selects.
pub fn sqlite_count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
