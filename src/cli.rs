//! The command line: `serve` (default), `migrate`, `config check`, `config print`,
//! `healthcheck`, `keys generate`.

mod healthcheck;
mod keys;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::Scopes;
use crate::auth::generate::parse_scopes;
use crate::config::{EXIT_CONFIG, LoadOptions, Settings, Sources, render_effective};
use crate::server::{Server, shutdown_signal};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// Bound on flushing queued spans at exit.
const TELEMETRY_FLUSH: Duration = Duration::from_secs(5);

const ENV_HELP: &str = "\
Environment:
  APP_PROFILE              profile file to layer in: <config dir>/<profile>.toml [default: development]
  APP_CONFIG_DIR           directory of profile files [default: ./config]
  APP_CONFIG_FILE          same as --config
  APP_<SECTION>__<KEY>     any setting, e.g. APP_SERVER__PORT=8081, APP_DATABASE__URL=postgres://...
  DATABASE_URL             database.url (APP_DATABASE__URL wins over it)
  RUST_LOG                 log.level (APP_LOG__LEVEL wins over it)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
  OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER,
  OTEL_TRACES_SAMPLER_ARG  the telemetry.* settings (APP_TELEMETRY__* wins over them)

Exit codes: 0 ok, 1 runtime failure, 78 invalid configuration.
`orders-api config print` lists every setting, its value and where it came from.";

/// orders-api: a REST API for orders, with health probes and graceful shutdown.
#[derive(Debug, Parser)]
#[command(name = "orders-api", version, about, after_help = ENV_HELP)]
pub struct Cli {
    /// Configuration file layered over the profile file (must exist).
    #[arg(long, global = true, env = "APP_CONFIG_FILE", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and the ops endpoints until SIGTERM/SIGINT (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// GET /healthz on the ops port (or --url); exit 0 when it answers 2xx, else 1.
    Healthcheck {
        /// Probe this URL instead of http://127.0.0.1:<server.ops_port>/healthz.
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Manage API keys.
    Keys {
        /// generate.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Inspect the configuration.
    Config {
        /// check or print.
        #[command(subcommand)]
        action: ConfigAction,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate; exit 0 when valid, 78 with every problem listed when not.
    Check,
    /// Print the effective configuration as TOML, each key with its source; secrets as ***.
    Print,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Print a new random key (shown once), its SHA-256 and a [[auth.keys]] table to paste
    /// into the configuration. Only the hash belongs in configuration.
    Generate {
        /// The key's id, as access logs show it [default: "key-" and 8 hex digits of the hash].
        #[arg(long)]
        id: Option<String>,
        /// Comma-separated scopes: orders:read, orders:write, ops:admin.
        #[arg(long, default_value = "orders:read", value_parser = parse_scopes)]
        scopes: Scopes,
    },
}

/// Parses the command line and runs the chosen command.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    let opts = LoadOptions::from_process_env(cli.config.clone());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config {
            action: ConfigAction::Print,
        } => {
            let sources = Sources::collect(&opts);
            print!("{}", render_effective(&sources));
            match Settings::from_sources(&sources) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => config_failure(&e),
            }
        }
        Command::Config {
            action: ConfigAction::Check,
        } => match Settings::load(&opts) {
            Ok(s) => {
                println!("configuration is valid (profile {})", s.profile);
                ExitCode::SUCCESS
            }
            Err(e) => config_failure(&e),
        },
        Command::Healthcheck { url, timeout } => {
            let url = url.unwrap_or_else(|| {
                // A broken configuration must not make a live process look dead: fall back to
                // the default port if the settings do not load.
                let port = Settings::load(&opts).map_or(9090, |s| s.server.ops_port);
                format!("http://127.0.0.1:{port}/healthz")
            });
            healthcheck_main(&url, timeout)
        }
        Command::Keys {
            action: KeysAction::Generate { id, scopes },
        } => keys::generate(id, scopes),
        Command::Serve => with_settings(&opts, |settings| serve(settings, opts.clone())),
        Command::Migrate => with_settings(&opts, migrate),
    }
}

fn healthcheck_main(url: &str, timeout: Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(healthcheck::probe(url, timeout)) {
        Ok(status @ 200..=299) => {
            println!("{url}: {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_failure(e: &crate::config::ConfigErrors) -> ExitCode {
    eprint!("{e}");
    ExitCode::from(EXIT_CONFIG)
}

fn with_settings<F>(opts: &LoadOptions, run: impl FnOnce(Settings) -> F) -> ExitCode
where
    F: Future<Output = ExitCode>,
{
    let settings = match Settings::load(opts) {
        Ok(s) => s,
        Err(e) => return config_failure(&e),
    };
    let telemetry = match telemetry::init(&settings.log, &settings.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("telemetry.otlp: cannot build the trace exporter: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = rt.block_on(run(settings));
            // Outside the runtime: the exporter's blocking client must not drop on its threads.
            drop(rt);
            telemetry.shutdown(TELEMETRY_FLUSH);
            code
        }
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn open_store(settings: &Settings) -> Result<Store, ExitCode> {
    Store::open(&settings.database).map_err(|e| {
        tracing::error!(error = %e, "unusable database configuration");
        eprintln!("{e}");
        match e {
            StoreError::Config(_) => ExitCode::from(EXIT_CONFIG),
            _ => ExitCode::FAILURE,
        }
    })
}

async fn serve(settings: Settings, opts: LoadOptions) -> ExitCode {
    let store = match open_store(&settings) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match Server::bind(settings, store).await {
        Ok(server) => {
            server.reload_from(opts).run(shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot bind the listeners");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: Settings) -> ExitCode {
    let store = match open_store(&settings) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = store.migrate().await;
    store.close().await;
    match result {
        Ok(()) => {
            tracing::info!(backend = store.backend_name(), "migrations applied");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "migration failed");
            ExitCode::FAILURE
        }
    }
}
