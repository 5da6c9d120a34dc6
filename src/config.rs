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
mod database;
mod idempotency;
mod layers;
mod log;
mod print;
mod rate_limit;
mod reader;
mod reload;
mod server;
mod shutdown;
mod telemetry;
mod values;

use std::path::PathBuf;

pub use api::ApiSettings;
pub use auth::AuthSettings;
pub use circuit_breaker::{BreakerConfig, BreakerSettings};
pub use database::{DatabaseSettings, SqliteSynchronous};
pub use idempotency::IdempotencySettings;
pub use layers::{META_VARS, Sources, env_var_for};
pub use log::{LogFormat, LogSettings};
pub use print::{flatten as flatten_effective, render as render_effective};
pub use rate_limit::{
    Budget, Fallback, LimitBackend, LimiterConfig, RateLimitSettings, RedisSettings, RedisUrl,
};
pub use reload::ReloadSettings;
pub use server::ServerSettings;
pub use shutdown::ShutdownSettings;
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
    /// The profile's file (`APP_CONFIG_DIR/<APP_PROFILE>.toml`), whether or not it exists;
    /// `None` for a profile name that cannot be a file name (a load reports it).
    pub fn profile_file(&self) -> Option<PathBuf> {
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let profile = env("APP_PROFILE").unwrap_or_else(|| "development".into());
        let ok = !profile.is_empty()
            && profile
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| {
            PathBuf::from(env("APP_CONFIG_DIR").unwrap_or_else(|| "./config".into()))
                .join(format!("{profile}.toml"))
        })
    }

    /// The files a load reads: the profile's file and `--config`.
    pub fn files(&self) -> Vec<PathBuf> {
        self.profile_file()
            .into_iter()
            .chain(self.config_file.clone())
            .collect()
    }

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
    /// `[config]`: live reload of the configuration files.
    pub reload: ReloadSettings,
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
        let server = server::read(&mut r);
        let settings = Settings {
            profile: sources.profile.clone(),
            idempotency: idempotency::read(&mut r, server.request_timeout),
            server,
            database: database::read(&mut r),
            log: log::read(&mut r),
            telemetry: telemetry::read(&mut r),
            rate_limit: rate_limit::read(&mut r),
            circuit_breaker: circuit_breaker::read(&mut r),
            auth: auth::auth(&mut r),
            shutdown: shutdown::read(&mut r),
            api: api::read(&mut r),
            reload: reload::read(&mut r),
        };
        r.finish().map(|()| settings)
    }
}
