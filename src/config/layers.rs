//! The configuration layers and where each value came from.

use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};

use super::{ConfigError, LoadOptions};

/// The embedded defaults: every key, commented (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Environment variables that steer loading and are not settings themselves.
pub const META_VARS: [&str; 3] = ["APP_PROFILE", "APP_CONFIG_DIR", "APP_CONFIG_FILE"];
const ENV_PREFIX: &str = "APP_";

/// Conventional variables honoured as settings, below `APP_*` in precedence.
pub const ALIASES: [(&str, &str); 10] = [
    ("DATABASE_URL", "database.url"),
    ("RUST_LOG", "log.level"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "telemetry.resource_attributes"),
    ("OTEL_TRACES_SAMPLER", "telemetry.sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "telemetry.sampler_arg"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp.endpoint"),
    (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "telemetry.otlp.traces_endpoint",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "telemetry.otlp.protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "telemetry.otlp.headers"),
];

/// The layered sources, ready to extract, plus problems found while reading files.
#[derive(Debug)]
pub struct Sources {
    /// The merged layers.
    pub figment: Figment,
    /// The selected profile.
    pub profile: String,
    /// Human-readable list of the layers that were found, lowest first.
    pub layers: Vec<String>,
    /// Problems with whole sources (unreadable files, bad profile names).
    pub problems: Vec<ConfigError>,
}

impl Sources {
    /// Reads every layer named by `opts`, lowest precedence first.
    pub fn collect(opts: &LoadOptions) -> Self {
        let env = |name: &str| {
            opts.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut problems = Vec::new();
        let mut layers = vec!["built-in defaults".to_string()];
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));

        let profile = env("APP_PROFILE").unwrap_or_else(|| "development".into());
        if let Some(path) = opts.profile_file() {
            if path.is_file() {
                figment = merge_file(figment, &path, &mut layers, &mut problems);
            }
        } else {
            problems.push(ConfigError {
                key: String::new(),
                value: None,
                source: "env APP_PROFILE".into(),
                message: format!("profile {profile:?} must be letters, digits, '-' or '_'"),
            });
        }

        if let Some(path) = &opts.config_file {
            if path.is_file() {
                figment = merge_file(figment, path, &mut layers, &mut problems);
            } else {
                problems.push(ConfigError {
                    key: String::new(),
                    value: None,
                    source: "--config / APP_CONFIG_FILE".into(),
                    message: format!("{} is not a readable file", path.display()),
                });
            }
        }

        let mut vars: Vec<EnvVar> = Vec::new();
        for (name, key) in ALIASES {
            if let Some(value) = env(name) {
                vars.push(EnvVar::new(name, key.into(), value));
            }
        }
        let mut app: Vec<_> = opts
            .env
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !META_VARS.contains(&k.as_str()))
            .collect();
        app.sort();
        for (name, value) in app {
            vars.push(EnvVar::new(name, env_key(name), value.clone()));
        }
        if !vars.is_empty() {
            layers.push("environment".into());
        }
        for var in vars {
            figment = figment.merge(var);
        }

        Sources {
            figment,
            profile,
            layers,
            problems,
        }
    }

    /// Where the effective value of `key` came from: a file path, `env NAME`, or `default`.
    pub fn source_of(&self, key: &str) -> String {
        match self.figment.find_metadata(key) {
            Some(Metadata {
                source: Some(Source::File(path)),
                ..
            }) => path.display().to_string(),
            Some(Metadata {
                source: Some(Source::Custom(s)),
                ..
            }) => s.clone(),
            _ => "default".into(),
        }
    }
}

fn merge_file(
    figment: Figment,
    path: &Path,
    layers: &mut Vec<String>,
    problems: &mut Vec<ConfigError>,
) -> Figment {
    let file = Toml::file_exact(path);
    match file.data() {
        Ok(_) => {
            layers.push(path.display().to_string());
            figment.merge(file)
        }
        Err(e) => {
            problems.push(ConfigError {
                key: String::new(),
                value: None,
                source: path.display().to_string(),
                message: format!("not valid TOML: {}", e.kind),
            });
            figment
        }
    }
}

/// `APP_SERVER__PORT` → `server.port`.
fn env_key(name: &str) -> String {
    name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".")
}

/// The literal environment variable for `key`, e.g. `server.port` → `APP_SERVER__PORT`.
pub fn env_var_for(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join("__")
    )
}

/// One environment variable as a provider of its own, so that a value's metadata names the
/// literal variable. The value stays a string: typed fields are read leniently, so `"0123"`
/// keeps its leading zero where a string is wanted.
struct EnvVar {
    name: String,
    key: String,
    value: String,
}

impl EnvVar {
    fn new(name: &str, key: String, value: String) -> Self {
        Self {
            name: name.to_string(),
            key,
            value,
        }
    }
}

impl Provider for EnvVar {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("env {}", self.name))
            .source(Source::Custom(format!("env {}", self.name)))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let nested = figment::util::nest(&self.key, Value::from(self.value.clone()));
        let dict = nested.into_dict().unwrap_or_default();
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_both_ways() {
        assert_eq!(env_key("APP_SERVER__OPS_PORT"), "server.ops_port");
        assert_eq!(env_var_for("server.ops_port"), "APP_SERVER__OPS_PORT");
    }
}
