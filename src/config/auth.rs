//! `[auth]`: API keys from the configuration (`[[auth.keys]]`) and from a mounted keys file
//! (`auth.keys_file`, holding `[[keys]]` tables), validated together: real hashes, known
//! scopes, unique ids, and at least one key while authentication is on.

use std::path::PathBuf;

use figment::value::Value;
use serde::Deserialize;

use super::ConfigError;
use super::reader::Reader;
use crate::auth::keys::{ApiKey, RawKey};

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Require an API key on the `/api` routes.
    pub enabled: bool,
    /// The keys file, if one is named (hashes only; typically a mounted Secret).
    pub keys_file: Option<PathBuf>,
    /// Every key, from the configuration first, then from the keys file.
    pub keys: Vec<ApiKey>,
}

pub(super) fn auth(r: &mut Reader<'_>) -> AuthSettings {
    let enabled = r.get("auth.enabled");
    let keys_file: String = r.get("auth.keys_file");
    let keys_file = (!keys_file.trim().is_empty()).then(|| PathBuf::from(keys_file.trim()));
    let mut keys = Vec::new();

    let source = r.source_of("auth.keys");
    match r.raw("auth.keys") {
        Some(Value::Array(_, items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("auth.keys[{i}]");
                let parsed = item.deserialize::<RawKey>().map_err(|e| e.kind.to_string());
                add(r, &mut keys, parsed, |field, message| ConfigError {
                    key: field.map_or_else(|| at.clone(), |f| format!("{at}.{f}")),
                    value: None,
                    source: source.clone(),
                    message,
                });
            }
        }
        _ => r.invalid(
            "auth.keys",
            "expected [[auth.keys]] tables with id, sha256 and scopes (not settable from \
             the environment: use a file, or auth.keys_file)",
        ),
    }

    if let Some(path) = &keys_file {
        let source = r.source_of("auth.keys_file");
        let shown = path.display().to_string();
        let error = |message: String| ConfigError {
            key: "auth.keys_file".into(),
            value: Some(toml::Value::String(shown.clone()).to_string()),
            source: source.clone(),
            message,
        };
        match read_keys_file(path) {
            Ok(entries) => {
                for (i, parsed) in entries.into_iter().enumerate() {
                    add(r, &mut keys, parsed, |field, message| {
                        let at = field
                            .map_or_else(|| format!("keys[{i}]"), |f| format!("keys[{i}].{f}"));
                        error(format!("{at}: {message}"))
                    });
                }
            }
            Err(message) => r.push(error(message)),
        }
    }

    let file_failed = r.has_error("auth.keys_file");
    if enabled && keys.is_empty() && !file_failed {
        r.invalid(
            "auth.enabled",
            "authentication is on but no API keys are configured (auth.keys and \
             auth.keys_file are empty): add keys (`orders-api keys generate`) or set \
             auth.enabled = false to serve the API to anyone",
        );
    }
    AuthSettings {
        enabled,
        keys_file,
        keys,
    }
}

/// Validates one entry and keeps it, or records its problems; `at(field, message)` locates a
/// problem (`field` is `None` for the entry as a whole).
fn add(
    r: &mut Reader<'_>,
    keys: &mut Vec<ApiKey>,
    parsed: Result<RawKey, String>,
    at: impl Fn(Option<&str>, String) -> ConfigError,
) {
    let validated = parsed.map_err(|e| vec![at(None, e)]).and_then(|raw| {
        raw.validate().map_err(|problems| {
            problems
                .into_iter()
                .map(|(field, message)| at(Some(field), message))
                .collect()
        })
    });
    match validated {
        Ok(key) if keys.iter().any(|k| k.id == key.id) => r.push(at(
            Some("id"),
            format!("{:?} is already the id of another key", &*key.id),
        )),
        Ok(key) => keys.push(key),
        Err(problems) => problems.into_iter().for_each(|p| r.push(p)),
    }
}

/// The `[[keys]]` entries of a keys file, or what is wrong with the file as a whole.
fn read_keys_file(path: &std::path::Path) -> Result<Vec<Result<RawKey, String>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let mut table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
    let entries = match table.remove("keys") {
        Some(toml::Value::Array(items)) => items,
        Some(_) => return Err("`keys` must be [[keys]] tables".into()),
        None => Vec::new(),
    };
    if let Some(other) = table.keys().next() {
        return Err(format!(
            "unknown key {other:?} (the file holds [[keys]] tables only)"
        ));
    }
    Ok(entries
        .into_iter()
        .map(|item| RawKey::deserialize(item).map_err(|e| e.message().to_string()))
        .collect())
}
