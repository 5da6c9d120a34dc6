//! Settings: one struct per concern, loaded once from layered sources, validated once.
//!
//! Layers (lowest to highest): the embedded `config/default.toml`, `<config dir>/<profile>.toml`,
//! `--config FILE` / `APP_CONFIG_FILE`, `DATABASE_URL` and `RUST_LOG`, then
//! `APP_<SECTION>__<KEY>`. [`Settings::load`] reports *every* problem at once, each with its key,
//! the offending value (secrets redacted) and where it came from. Each component receives only its
//! own section.

mod api;
mod auth;
mod circuit_breaker;
mod layers;
mod print;
mod rate_limit;
mod reader;
mod telemetry;
mod values;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use api::ApiSettings;
pub use auth::AuthSettings;
pub use circuit_breaker::BreakerSettings;
pub use layers::{Sources, env_var_for};
pub use print::render as render_effective;
pub use rate_limit::{Fallback, LimitBackend, RateLimitSettings, RedisSettings, RedisUrl};
pub use telemetry::{OtlpProtocol, OtlpSettings, SamplerKind, TelemetrySettings};
pub use values::{Backend, DatabaseUrl, redact_url};

use reader::Reader;

/// The exit code for a configuration error (`EX_CONFIG` from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// Where to look for configuration besides the environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Explicit file (`--config` / `APP_CONFIG_FILE`); it must exist.
    pub config_file: Option<PathBuf>,
    /// The environment to read `APP_*`, `DATABASE_URL` and `RUST_LOG` from.
    pub env: Vec<(String, String)>,
}

impl LoadOptions {
    /// Options reading the process environment.
    pub fn from_process_env(config_file: Option<PathBuf>) -> Self {
        Self {
            config_file,
            env: std::env::vars().collect(),
        }
    }
}

/// The whole effective configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The profile whose file was layered in (`APP_PROFILE`, default `development`).
    pub profile: String,
    /// Listeners and request limits.
    pub server: ServerSettings,
    /// Storage backend and pool.
    pub database: DatabaseSettings,
    /// Log filter and format.
    pub log: LogSettings,
    /// Trace export.
    pub telemetry: TelemetrySettings,
    /// Token-bucket rate limiting.
    pub rate_limit: RateLimitSettings,
    /// The circuit breaker around the database-backed routes.
    pub circuit_breaker: BreakerSettings,
    /// API keys on the `/api` routes.
    pub auth: AuthSettings,
    /// Graceful shutdown timing.
    pub shutdown: ShutdownSettings,
    /// `Idempotency-Key` records.
    pub idempotency: IdempotencySettings,
    /// API version lifecycle (deprecation and sunset dates).
    pub api: ApiSettings,
}

/// `[idempotency]`: how long `Idempotency-Key` records are held and kept.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencySettings {
    /// How long a completed request's response is replayed.
    pub ttl: Duration,
    /// How long a request may hold its key before a repeat may take it over.
    pub lock_timeout: Duration,
    /// How often expired records are purged.
    pub purge_interval: Duration,
}

/// `[server]`: listeners and request limits.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address both listeners bind to.
    pub host: IpAddr,
    /// API listener port (0 picks a free one).
    pub port: u16,
    /// Operations listener port (0 picks a free one).
    pub ops_port: u16,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Whole-request budget (504 past it).
    pub request_timeout: Duration,
    /// Time a client has to send a complete request head (from the accept, or from the first
    /// byte of a later request on the connection).
    pub header_read_timeout: Duration,
    /// Time a connection may stay open and silent between two requests.
    pub keep_alive_timeout: Duration,
    /// Open connections per listener; past it, new ones are closed at accept.
    pub max_connections: u32,
    /// API requests served at once before shedding.
    pub max_in_flight: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[database]`: backend chosen by URL scheme, pool and migrations.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; the password is redacted when printed.
    pub url: DatabaseUrl,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a request waits for a connection before failing with 503.
    pub acquire_timeout: Duration,
    /// SQLite lock wait.
    pub busy_timeout: Duration,
    /// Run migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Budget for the readiness database check.
    pub health_timeout: Duration,
    /// PostgreSQL statement timeout.
    pub statement_timeout: Duration,
    /// SQLite's `synchronous` pragma: how durable an acknowledged write is.
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite only: writes waiting for the writer thread before new ones are refused (503).
    pub write_queue: u32,
}

/// SQLite's `synchronous` setting (with its WAL journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// No fsync: a crash of the OS or power loss can lose and corrupt recent writes.
    Off,
    /// fsync at checkpoints only: power loss can lose the last acknowledged writes.
    Normal,
    /// fsync on every commit: an acknowledged write survives power loss.
    Full,
    /// As `full`, and the directory too after the WAL is reset.
    Extra,
}

/// `[log]`: filter directives and output format.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `tracing` filter directives (RUST_LOG syntax).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Whether the access layer runs.
    pub access: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured when on a terminal.
    Pretty,
}

/// `[shutdown]`: what happens between SIGTERM and exit.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// Time `/readyz` answers 503 while listeners keep serving.
    pub drain_delay: Duration,
    /// Bound on in-flight requests after the listeners close.
    pub grace_period: Duration,
}

/// One configuration problem: which key, what value, from where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `server.port` (empty for a whole-file problem).
    pub key: String,
    /// The offending value as given (secrets redacted), if there was one.
    pub value: Option<String>,
    /// Where the value came from: a file path, an environment variable, or the defaults.
    pub source: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.key[..], &self.value) {
            ("", _) => write!(f, "{}: {}", self.source, self.message),
            (key, Some(value)) => {
                write!(
                    f,
                    "{key} = {value} (from {}): {}",
                    self.source, self.message
                )
            }
            (key, None) => write!(f, "{key} (from {}): {}", self.source, self.message),
        }
    }
}

/// Every problem found in one load, in key order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Settings {
    /// Loads, layers and validates the configuration, reporting every problem at once.
    pub fn load(opts: &LoadOptions) -> Result<Self, ConfigErrors> {
        let sources = Sources::collect(opts);
        Self::from_sources(&sources)
    }

    /// Extracts and validates settings from already-layered sources.
    pub fn from_sources(sources: &Sources) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(sources);
        let server = server(&mut r);
        let settings = Settings {
            profile: sources.profile.clone(),
            idempotency: idempotency(&mut r, server.request_timeout),
            server,
            database: database(&mut r),
            log: log(&mut r),
            telemetry: telemetry::read(&mut r),
            rate_limit: rate_limit::read(&mut r),
            circuit_breaker: circuit_breaker::read(&mut r),
            auth: auth::auth(&mut r),
            shutdown: shutdown(&mut r),
            api: api::read(&mut r),
        };
        r.finish().map(|()| settings)
    }
}

fn server(r: &mut Reader<'_>) -> ServerSettings {
    let host = r.parsed(
        "server.host",
        "an IP address such as 0.0.0.0 or ::",
        |s: &str| s.parse::<IpAddr>().ok(),
    );
    let port = r.port("server.port");
    let ops_port = r.port("server.ops_port");
    if port != 0 && port == ops_port {
        r.invalid("server.ops_port", "must differ from server.port");
    }
    let body_limit = r.size("server.body_limit");
    r.check(
        "server.body_limit",
        body_limit > 0,
        "must be at least 1 byte",
    );
    let request_timeout = r.positive_duration("server.request_timeout");
    let header_read_timeout = r.positive_duration("server.header_read_timeout");
    let keep_alive_timeout = r.positive_duration("server.keep_alive_timeout");
    let max_connections = r.positive_count("server.max_connections");
    let max_in_flight = r.positive_count("server.max_in_flight");
    let trusted_proxies = r.cidrs("server.trusted_proxies");
    ServerSettings {
        host: host.unwrap_or(IpAddr::from([0, 0, 0, 0])),
        port,
        ops_port,
        body_limit,
        request_timeout,
        header_read_timeout,
        keep_alive_timeout,
        max_connections,
        max_in_flight,
        trusted_proxies,
    }
}

fn database(r: &mut Reader<'_>) -> DatabaseSettings {
    let url = r.parsed(
        "database.url",
        "a sqlite:// or postgres:// URL",
        DatabaseUrl::parse,
    );
    let max_connections = r.positive_count("database.max_connections");
    let min_connections = r.count("database.min_connections");
    r.check(
        "database.min_connections",
        min_connections <= max_connections,
        "must not exceed database.max_connections",
    );
    let acquire_timeout = r.positive_duration("database.acquire_timeout");
    let busy_timeout = r.duration("database.busy_timeout");
    let migrate_on_start = r.get("database.migrate_on_start");
    let health_timeout = r.positive_duration("database.health_timeout");
    let statement_timeout = r.positive_duration("database.statement_timeout");
    let write_queue = r.positive_count("database.write_queue");
    let sqlite_synchronous = r.parsed(
        "database.sqlite_synchronous",
        "one of \"off\", \"normal\", \"full\", \"extra\"",
        |s| match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(SqliteSynchronous::Off),
            "normal" => Some(SqliteSynchronous::Normal),
            "full" => Some(SqliteSynchronous::Full),
            "extra" => Some(SqliteSynchronous::Extra),
            _ => None,
        },
    );
    DatabaseSettings {
        url: url.unwrap_or_default(),
        max_connections,
        min_connections,
        acquire_timeout,
        busy_timeout,
        migrate_on_start,
        health_timeout,
        statement_timeout,
        sqlite_synchronous: sqlite_synchronous.unwrap_or(SqliteSynchronous::Full),
        write_queue,
    }
}

fn log(r: &mut Reader<'_>) -> LogSettings {
    let level: String = r.get("log.level");
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&level) {
        r.invalid("log.level", &format!("not a valid filter: {e}"));
    }
    let format = r.parsed("log.format", "\"json\" or \"pretty\"", |s: &str| match s {
        "json" => Some(LogFormat::Json),
        "pretty" => Some(LogFormat::Pretty),
        _ => None,
    });
    let access = r.get("log.access");
    LogSettings {
        level,
        format: format.unwrap_or(LogFormat::Json),
        access,
    }
}

fn shutdown(r: &mut Reader<'_>) -> ShutdownSettings {
    ShutdownSettings {
        drain_delay: r.duration("shutdown.drain_delay"),
        grace_period: r.positive_duration("shutdown.grace_period"),
    }
}

fn idempotency(r: &mut Reader<'_>, request_timeout: Duration) -> IdempotencySettings {
    let ttl = r.positive_duration("idempotency.ttl");
    let lock_timeout = r.positive_duration("idempotency.lock_timeout");
    r.check(
        "idempotency.lock_timeout",
        lock_timeout >= request_timeout,
        "must not be shorter than server.request_timeout (a request would lose its key)",
    );
    IdempotencySettings {
        ttl,
        lock_timeout,
        purge_interval: r.positive_duration("idempotency.purge_interval"),
    }
}
