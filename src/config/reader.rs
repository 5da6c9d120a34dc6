//! Reads settings key by key so that one run reports every problem, not just the first.

use std::collections::BTreeSet;
use std::time::Duration;

use figment::value::Value;
use serde::de::DeserializeOwned;

use super::values::{display_value, parse_size};
use super::{ConfigError, ConfigErrors, Sources};

/// Extracts typed values, collecting errors instead of stopping at the first one.
pub(super) struct Reader<'a> {
    sources: &'a Sources,
    errors: Vec<ConfigError>,
    read: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    pub(super) fn new(sources: &'a Sources) -> Self {
        Self {
            sources,
            errors: sources.problems.clone(),
            read: BTreeSet::new(),
        }
    }

    /// A typed value; strings from the environment are converted leniently (`"8081"` → 8081).
    pub(super) fn get<T: DeserializeOwned + Default>(&mut self, key: &'static str) -> T {
        self.read.insert(key);
        match self.sources.figment.extract_inner_lossy::<T>(key) {
            Ok(v) => v,
            Err(e) => {
                let message = match self.sources.figment.find_value(key) {
                    Ok(_) => e.kind.to_string(),
                    Err(_) => "missing".to_string(),
                };
                self.invalid(key, &message);
                T::default()
            }
        }
    }

    /// A string value turned into `T` by `parse`; `expected` describes a valid value.
    pub(super) fn parsed<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        let raw: String = self.get(key);
        let value = parse(&raw);
        if value.is_none() && self.errors.iter().all(|e| e.key != key) {
            self.invalid(key, &format!("expected {expected}"));
        }
        value
    }

    /// A duration written as text, e.g. `"250ms"` or `"30s"`.
    pub(super) fn duration(&mut self, key: &'static str) -> Duration {
        self.parsed(key, "a duration such as \"250ms\" or \"30s\"", |s| {
            humantime::parse_duration(s.trim()).ok()
        })
        .unwrap_or_default()
    }

    /// A duration that must be greater than zero.
    pub(super) fn positive_duration(&mut self, key: &'static str) -> Duration {
        let d = self.duration(key);
        if d.is_zero() && self.errors.iter().all(|e| e.key != key) {
            self.invalid(key, "must be greater than zero");
        }
        d
    }

    /// A TCP port; 0 lets the OS pick one.
    pub(super) fn port(&mut self, key: &'static str) -> u16 {
        self.whole_number(key, "a port number from 0 to 65535")
    }

    /// A non-negative integer that fits in a `u32`.
    pub(super) fn count(&mut self, key: &'static str) -> u32 {
        self.whole_number(key, "a whole number")
    }

    /// A whole number of at least 1.
    pub(super) fn positive_count(&mut self, key: &'static str) -> u32 {
        let n = self.count(key);
        self.check(key, n >= 1, "must be at least 1");
        n
    }

    fn whole_number<T: TryFrom<u64> + Default>(&mut self, key: &'static str, expected: &str) -> T {
        self.read.insert(key);
        let n = self.sources.figment.extract_inner_lossy::<u64>(key).ok();
        match n.and_then(|n| T::try_from(n).ok()) {
            Some(v) => v,
            None => {
                self.invalid(key, &format!("expected {expected}"));
                T::default()
            }
        }
    }

    /// A list of CIDR blocks (a plain address means just that host): a TOML array, or a
    /// comma-separated string from the environment.
    pub(super) fn cidrs(&mut self, key: &'static str) -> Vec<ipnet::IpNet> {
        self.read.insert(key);
        let items: Vec<String> = match self.sources.figment.find_value(key) {
            Ok(Value::Array(_, items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).unwrap_or_default())
                .collect(),
            Ok(Value::String(_, s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => {
                self.invalid(key, "expected a list of CIDRs such as [\"10.0.0.0/8\"]");
                return Vec::new();
            }
        };
        let mut nets = Vec::new();
        for item in items {
            let net = item.parse::<ipnet::IpNet>().ok().or_else(|| {
                item.parse::<std::net::IpAddr>()
                    .ok()
                    .map(ipnet::IpNet::from)
            });
            match net {
                Some(n) => nets.push(n),
                None => self.invalid(key, &format!("{item:?} is not a CIDR or IP address")),
            }
        }
        nets
    }

    /// A floating-point number. Strings from the environment are parsed as f64 here: the
    /// lenient conversion would go through f32 and turn "0.01" into 0.0099999998.
    pub(super) fn float(&mut self, key: &'static str) -> f64 {
        self.read.insert(key);
        let parsed = match self.sources.figment.find_value(key) {
            Ok(Value::String(_, s)) => s.trim().parse::<f64>().ok(),
            Ok(Value::Num(_, n)) => n.to_f64(),
            _ => None,
        };
        parsed.filter(|f| f.is_finite()).unwrap_or_else(|| {
            self.invalid(key, "expected a number");
            0.0
        })
    }

    /// A size in bytes: an integer, or text such as `"64KiB"`.
    pub(super) fn size(&mut self, key: &'static str) -> usize {
        self.read.insert(key);
        let value = self.sources.figment.find_value(key).ok();
        let parsed = match &value {
            Some(Value::Num(_, n)) => n.to_u128().and_then(|n| usize::try_from(n).ok()),
            Some(Value::String(_, s)) => parse_size(s),
            _ => None,
        };
        if parsed.is_none() {
            self.invalid(key, "expected a size such as 65536, \"64KiB\" or \"1MiB\"");
        }
        parsed.unwrap_or_default()
    }

    /// The raw value of `key`, for settings with a structure of their own.
    pub(super) fn raw(&mut self, key: &'static str) -> Option<Value> {
        self.read.insert(key);
        self.sources.figment.find_value(key).ok()
    }

    /// Where the value of `key` came from.
    pub(super) fn source_of(&self, key: &str) -> String {
        self.sources.source_of(key)
    }

    /// Records a problem located by the caller.
    pub(super) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Whether a problem with `key` has been recorded.
    pub(super) fn has_error(&self, key: &str) -> bool {
        self.errors.iter().any(|e| e.key == key)
    }

    /// Records `message` against `key` unless `ok`.
    pub(super) fn check(&mut self, key: &'static str, ok: bool, message: &str) {
        if !ok && self.errors.iter().all(|e| e.key != key) {
            self.invalid(key, message);
        }
    }

    /// Records a problem with the current value of `key`.
    pub(super) fn invalid(&mut self, key: &str, message: &str) {
        let value = self
            .sources
            .figment
            .find_value(key)
            .ok()
            .map(|v| display_value(key, &v));
        self.errors.push(ConfigError {
            key: key.to_string(),
            value,
            source: self.sources.source_of(key),
            message: message.to_string(),
        });
    }

    /// Fails with every problem found, including keys that no setting reads (typos).
    pub(super) fn finish(mut self) -> Result<(), ConfigErrors> {
        let mut leaves = Vec::new();
        if let Ok(dict) = self.sources.figment.extract::<figment::value::Dict>() {
            collect_leaves("", &dict, &mut leaves);
        }
        for key in leaves {
            if !self.read.contains(key.as_str()) {
                self.errors.push(ConfigError {
                    source: self.sources.source_of(&key),
                    key,
                    value: None,
                    message: "unknown key (misspelled?)".into(),
                });
            }
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// Dotted paths of every non-table value.
pub(super) fn collect_leaves(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
    for (k, v) in dict {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Dict(_, inner) => collect_leaves(&path, inner, out),
            _ => out.push(path),
        }
    }
}
