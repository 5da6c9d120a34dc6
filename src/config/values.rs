//! Value types with their own syntax: URLs (with a secret inside), `k=v,k=v` lists and byte
//! sizes.

use std::collections::HashMap;

use figment::value::Value;

/// A database URL. The password never appears in `Debug` output, logs or `config print`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DatabaseUrl(String);

/// The storage backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:`
    Sqlite,
    /// `postgres:` or `postgresql:`
    Postgres,
}

impl DatabaseUrl {
    /// Accepts `sqlite:` and `postgres:`/`postgresql:` URLs.
    pub fn parse(s: &str) -> Option<Self> {
        let url = Self(s.trim().to_string());
        url.backend().map(|_| url)
    }

    /// The backend chosen by the URL scheme.
    pub fn backend(&self) -> Option<Backend> {
        let scheme = self.0.split(':').next()?.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Backend::Sqlite),
            "postgres" | "postgresql" => Some(Backend::Postgres),
            _ => None,
        }
    }

    /// The URL with its secret in it, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The URL with its secrets replaced by `***`: the password of `scheme://user:password@host`,
/// and the value of every query parameter whose name suggests a credential
/// (`?password=...`, `sslpassword`, `api_key`, `token`, ...). Everything else is kept, so an
/// operator can still tell which host, database and options are in use.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out.push_str(fragment);
    out
}

/// `scheme://user:password@host...` with the password as `***`.
fn redact_userinfo(url: &str) -> String {
    let Some(after) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[after..].find('/').map_or(url.len(), |i| after + i);
    let Some(at) = url[after..authority_end].rfind('@').map(|i| after + i) else {
        return url.to_string();
    };
    match url[after..at].find(':').map(|i| after + i) {
        Some(colon) => format!("{}***{}", &url[..=colon], &url[at..]),
        None => url.to_string(),
    }
}

/// Whether a query parameter's name suggests that its value is a credential.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Parses `k1=v1,k2=v2` (the OTEL_* list syntax, e.g. `telemetry.otlp.headers`); an entry
/// without `=` or with an empty key is an error.
pub fn parse_pairs(s: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (k, v) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?} is not key=value"))?;
        if k.trim().is_empty() {
            return Err(format!("{entry:?} has an empty key"));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// `k1=v1,k2=v2` with every value replaced by `***`.
pub fn redact_pairs(s: &str) -> String {
    s.split(',')
        .map(|entry| match entry.split_once('=') {
            Some((k, _)) => format!("{}=***", k.trim()),
            None => entry.trim().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Settings holding URLs that may carry credentials.
const URL_KEYS: [&str; 4] = [
    "database.url",
    "rate_limit.redis.url",
    "telemetry.otlp.endpoint",
    "telemetry.otlp.traces_endpoint",
];

/// A value as shown in errors and `config print`: TOML syntax, secrets redacted.
pub fn display_value(key: &str, value: &Value) -> String {
    match value {
        Value::String(_, s) if URL_KEYS.contains(&key) => toml_string(&redact_url(s)),
        Value::String(_, s) if key == "telemetry.otlp.headers" => toml_string(&redact_pairs(s)),
        Value::String(_, s) if may_be_a_key(key, s) => toml_string("***"),
        Value::String(_, s) => toml_string(s),
        Value::Char(_, c) => toml_string(&c.to_string()),
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => n
            .to_i128()
            .map(|i| i.to_string())
            .or_else(|| n.to_f64().map(|f| f.to_string()))
            .unwrap_or_default(),
        Value::Empty(..) => "\"\"".into(),
        Value::Array(_, items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| display_value(key, v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Dict(_, dict) => format!(
            "{{ {} }}",
            dict.iter()
                .map(|(k, v)| format!("{k} = {}", display_value(&format!("{key}.{k}"), v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Strings under `auth.keys` other than ids, scopes and well-formed hashes: a key pasted where
/// its hash belongs, or under a misspelled field, must not be printed.
fn may_be_a_key(key: &str, s: &str) -> bool {
    match key {
        "auth.keys.id" | "auth.keys.scopes" => false,
        "auth.keys.sha256" => crate::auth::keys::parse_sha256(s).is_none(),
        _ => key == "auth.keys" || key.starts_with("auth.keys."),
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Parses `65536`, `"64KiB"`, `"1MiB"`, `"10KB"` (KB/MB are decimal, KiB/MiB binary).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_only_the_password() {
        assert_eq!(
            redact_url("postgres://app:s3cr@t@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact_url("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(
            redact_url("sqlite://data/orders.db"),
            "sqlite://data/orders.db"
        );
        assert_eq!(
            format!("{:?}", DatabaseUrl::parse("postgresql://u:pw@h/d").unwrap()),
            "postgresql://u:***@h/d"
        );
    }

    #[test]
    fn redacts_credentials_in_query_strings_and_userinfo() {
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=s3cret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&PassWord=x&sslpassword=y&application_name=a"),
            "postgres://h/db?user=u&PassWord=***&sslpassword=***&application_name=a"
        );
        assert_eq!(
            redact_url("https://user:pw@collector:4318"),
            "https://user:***@collector:4318"
        );
        assert_eq!(
            redact_url("https://c:4318/v1/traces?api_key=k&x=1#frag"),
            "https://c:4318/v1/traces?api_key=***&x=1#frag"
        );
        // An '@' in the query is not userinfo.
        assert_eq!(redact_url("https://c/?to=a@b"), "https://c/?to=a@b");
    }

    #[test]
    fn redacts_header_values() {
        assert_eq!(
            redact_pairs("authorization=Bearer x, x-tenant=t"),
            "authorization=***,x-tenant=***"
        );
        assert_eq!(redact_pairs(""), "");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10 KB"), Some(10_000));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("-1"), None);
    }

    #[test]
    fn backend_by_scheme() {
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").and_then(|u| u.backend()),
            Some(Backend::Sqlite)
        );
        assert!(DatabaseUrl::parse("mysql://x").is_none());
    }

    #[test]
    fn pairs() {
        let p = parse_pairs("a=1, b = two ,,c=x=y").unwrap();
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "two");
        assert_eq!(p["c"], "x=y");
        assert!(parse_pairs("novalue").is_err());
        assert!(parse_pairs("=v").is_err());
    }
}
