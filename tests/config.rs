//! Configuration: layer precedence, every problem reported at once with its source, redaction,
//! and the `config` subcommands of the real binary. The environment is passed explicitly, so
//! these tests never change the process environment.

use std::path::Path;
use std::process::Command;

use orders_api::config::{ConfigError, LoadOptions, Settings, Sources, render_effective};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The embedded defaults require API keys; tests of other settings switch them off.
const NO_AUTH: (&str, &str) = ("APP_AUTH__ENABLED", "false");

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn layers_apply_in_order_default_profile_file_env() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("staging.toml"),
        "[server]\nport = 1111\nops_port = 1112\n[log]\nlevel = \"debug\"\n",
    );
    let file = dir.path().join("override.toml");
    write(&file, "[server]\nport = 2222\n");
    // The defaults require API keys; these layers are about other settings.
    let base = [
        ("APP_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("APP_PROFILE", "staging"),
        ("APP_AUTH__ENABLED", "false"),
    ];

    // Defaults only (profile file absent).
    let s = Settings::load(&LoadOptions {
        config_file: None,
        env: env(&[("APP_CONFIG_DIR", "/nonexistent"), NO_AUTH]),
    })
    .unwrap();
    assert_eq!(
        (s.server.port, s.server.ops_port, s.profile.as_str()),
        (8080, 9090, "development")
    );

    // Profile beats defaults.
    let s = Settings::load(&LoadOptions {
        config_file: None,
        env: env(&base),
    })
    .unwrap();
    assert_eq!(
        (s.server.port, s.server.ops_port, s.log.level.as_str()),
        (1111, 1112, "debug")
    );

    // The file beats the profile.
    let s = Settings::load(&LoadOptions {
        config_file: Some(file.clone()),
        env: env(&base),
    })
    .unwrap();
    assert_eq!((s.server.port, s.server.ops_port), (2222, 1112));

    // The environment beats the file; APP_* beats DATABASE_URL and RUST_LOG.
    let mut vars = base.to_vec();
    vars.extend([
        ("APP_SERVER__PORT", "3333"),
        ("DATABASE_URL", "postgres://u@h/generic"),
        ("RUST_LOG", "warn"),
    ]);
    let opts = LoadOptions {
        config_file: Some(file.clone()),
        env: env(&vars),
    };
    let s = Settings::load(&opts).unwrap();
    assert_eq!((s.server.port, s.server.ops_port), (3333, 1112));
    assert_eq!(s.database.url.expose(), "postgres://u@h/generic");
    assert_eq!(s.log.level, "warn");
    let sources = Sources::collect(&opts);
    assert_eq!(sources.source_of("server.port"), "env APP_SERVER__PORT");
    assert_eq!(
        sources.source_of("server.ops_port"),
        dir.path().join("staging.toml").display().to_string()
    );
    assert_eq!(sources.source_of("database.url"), "env DATABASE_URL");
    assert_eq!(sources.source_of("server.host"), "default");

    vars.push(("APP_DATABASE__URL", "sqlite://specific.db"));
    let s = Settings::load(&LoadOptions {
        config_file: None,
        env: env(&vars),
    })
    .unwrap();
    assert_eq!(s.database.url.expose(), "sqlite://specific.db");
}

#[test]
fn every_problem_is_reported_with_key_value_and_source() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("development.toml"),
        "[shutdown]\ngrace_period = \"soon\"\n",
    );
    let file = dir.path().join("extra.toml");
    write(&file, "[database]\nmax_connections = 0\n");
    let vars = env(&[
        ("APP_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("APP_SERVER__PORT", "eighty"),
        ("APP_SERVER__PORTT", "1"),
        NO_AUTH,
    ]);
    let errors = Settings::load(&LoadOptions {
        config_file: Some(file.clone()),
        env: vars,
    })
    .unwrap_err()
    .0;
    let find = |key: &str| {
        errors
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key} in {errors:?}"))
    };
    let port = find("server.port");
    assert_eq!(port.source, "env APP_SERVER__PORT");
    assert_eq!(port.value.as_deref(), Some("\"eighty\""));
    let pool = find("database.max_connections");
    assert_eq!(pool.source, file.display().to_string());
    assert_eq!(pool.value.as_deref(), Some("0"));
    let grace = find("shutdown.grace_period");
    assert_eq!(
        grace.source,
        dir.path().join("development.toml").display().to_string()
    );
    assert!(grace.message.contains("duration"));
    let typo = find("server.portt");
    assert_eq!(typo.source, "env APP_SERVER__PORTT");
    assert!(typo.message.contains("unknown"));
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn strings_from_the_environment_stay_strings() {
    let vars = env(&[
        ("APP_CONFIG_DIR", "/nonexistent"),
        ("APP_LOG__LEVEL", "info,orders_api=debug"),
        ("OTEL_SERVICE_NAME", "0123"),
        ("APP_DATABASE__URL", "postgres://u:007@h/d"),
        ("APP_SERVER__BODY_LIMIT", "1MiB"),
        ("APP_DATABASE__MIGRATE_ON_START", "false"),
        NO_AUTH,
    ]);
    let s = Settings::load(&LoadOptions {
        config_file: None,
        env: vars,
    })
    .unwrap();
    assert_eq!(s.database.url.expose(), "postgres://u:007@h/d");
    assert_eq!(s.log.level, "info,orders_api=debug");
    assert_eq!(
        s.telemetry.service_name, "0123",
        "a numeric-looking string keeps its zero"
    );
    assert_eq!(s.server.body_limit, 1 << 20);
    assert!(!s.database.migrate_on_start);
}

#[test]
fn config_print_annotates_sources_and_redacts_secrets() {
    let opts = LoadOptions {
        config_file: None,
        env: env(&[
            ("APP_CONFIG_DIR", "/nonexistent"),
            ("APP_DATABASE__URL", "postgres://app:hunter2@db:5432/orders"),
        ]),
    };
    let out = render_effective(&Sources::collect(&opts));
    assert!(!out.contains("hunter2"), "{out}");
    assert!(
        out.contains("url = \"postgres://app:***@db:5432/orders\"  # env APP_DATABASE__URL"),
        "{out}"
    );
    assert!(out.contains("port = 8080  # default"), "{out}");
    // The output is TOML that parses, with every section.
    let parsed: toml::Table = out.parse().unwrap();
    for section in ["server", "database", "log", "shutdown"] {
        assert!(parsed.contains_key(section), "{section} missing");
    }
}

fn binary(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_orders-api"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn binary_exits_78_listing_three_bad_values_with_their_sources() {
    let bad = [
        ("APP_SERVER__PORT", "99999"),
        ("APP_LOG__FORMAT", "xml"),
        ("APP_DATABASE__URL", "mysql://root:pw@h/d"),
    ];
    for args in [&["config", "check"][..], &["serve"][..], &[][..]] {
        let out = binary(args, &bad);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("3 problems"), "{stderr}");
        for var in ["APP_SERVER__PORT", "APP_LOG__FORMAT", "APP_DATABASE__URL"] {
            assert!(
                stderr.contains(&format!("env {var}")),
                "{var} not named: {stderr}"
            );
        }
        assert!(!stderr.contains("pw@"), "secret leaked: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let ok = binary(&["config", "check"], &[]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn binary_config_print_uses_the_profile_file_and_redacts() {
    // Production requires API keys: a keys file as a mounted Secret would provide it.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    write(
        &keys,
        &format!("[[keys]]\n{}", entry_fields("prod", HASH_A, "orders:read")),
    );
    let out = binary(
        &["config", "print"],
        &[
            ("APP_PROFILE", "production"),
            ("DATABASE_URL", "postgres://a:topsecret@h/d"),
            ("APP_AUTH__KEYS_FILE", keys.to_str().unwrap()),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "keys_file = \"{}\"  # env APP_AUTH__KEYS_FILE",
            keys.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("# profile: production"), "{stdout}");
    assert!(
        stdout.contains("drain_delay = \"5s\"  # ./config/production.toml"),
        "{stdout}"
    );
    assert!(stdout.contains("postgres://a:***@h/d"), "{stdout}");
    assert!(!stdout.contains("topsecret"));
}

#[test]
fn help_names_the_environment_variables() {
    let out = binary(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    for var in [
        "APP_PROFILE",
        "APP_CONFIG_DIR",
        "APP_CONFIG_FILE",
        "APP_<SECTION>__<KEY>",
        "DATABASE_URL",
        "RUST_LOG",
    ] {
        assert!(text.contains(var), "--help lacks {var}");
    }
}

#[test]
fn api_dates_are_validated_with_key_and_source() {
    let load = |vars: &[(&str, &str)]| {
        // Without keys, auth on would be one more problem.
        let mut all = vec![
            ("APP_CONFIG_DIR", "/nonexistent"),
            ("APP_AUTH__ENABLED", "false"),
        ];
        all.extend_from_slice(vars);
        Settings::load(&LoadOptions {
            config_file: None,
            env: env(&all),
        })
    };
    let s = load(&[]).unwrap();
    assert_eq!(
        s.api.v1_deprecated_at.to_rfc3339(),
        "2026-11-23T00:00:00+00:00"
    );
    assert_eq!(s.api.v1_sunset.to_rfc3339(), "2027-06-30T00:00:00+00:00");

    let errors = load(&[("APP_API__V1_DEPRECATED_AT", "next tuesday")])
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "api.v1_deprecated_at");
    assert_eq!(errors[0].source, "env APP_API__V1_DEPRECATED_AT");
    assert!(errors[0].message.contains("RFC 3339"));

    let errors = load(&[("APP_API__V1_SUNSET", "2026-01-01T00:00:00Z")])
        .unwrap_err()
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "api.v1_sunset");
    assert_eq!(errors[0].source, "env APP_API__V1_SUNSET");
    assert!(errors[0].message.contains("must not precede"));
}

// ---------------------------------------------------------------------------------------------
// API keys.

/// Two well-formed hashes (of no key anyone holds).
const HASH_A: &str = "6b1d3a4a1e4c1c7e5b3b2d7e0f5d0c9a8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e";
const HASH_B: &str = "AB1d3a4a1e4c1c7e5b3b2d7e0f5d0c9a8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e";

fn entry_fields(id: &str, sha256: &str, scopes: &str) -> String {
    format!("id = \"{id}\"\nsha256 = \"{sha256}\"\nscopes = [\"{scopes}\"]\n")
}

/// Loads with the embedded defaults, `file` as --config and `vars`; the problems, if any.
fn load_auth(file: Option<&Path>, vars: &[(&str, &str)]) -> Result<Settings, Vec<ConfigError>> {
    let mut all = vec![("APP_CONFIG_DIR", "/nonexistent")];
    all.extend_from_slice(vars);
    Settings::load(&LoadOptions {
        config_file: file.map(Path::to_path_buf),
        env: env(&all),
    })
    .map_err(|e| e.0)
}

fn only<'a>(errors: &'a [ConfigError], key: &str) -> &'a ConfigError {
    let found: Vec<_> = errors.iter().filter(|e| e.key == key).collect();
    assert_eq!(found.len(), 1, "one error for {key} in {errors:#?}");
    found[0]
}

#[test]
fn auth_on_without_keys_is_an_error_naming_the_keys_and_the_source() {
    let errors = load_auth(None, &[]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = only(&errors, "auth.enabled");
    assert_eq!(e.source, "default");
    assert!(e.message.contains("auth.keys"), "{}", e.message);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders-api.toml");
    write(&file, "[auth]\nenabled = true\nkeys = []\n");
    let errors = load_auth(Some(&file), &[]).unwrap_err();
    assert_eq!(
        only(&errors, "auth.enabled").source,
        file.display().to_string()
    );

    // The production profile, as the binary reads it, refuses to start.
    for args in [&["config", "check"][..], &["serve"][..]] {
        let out = binary(args, &[("APP_PROFILE", "production")]);
        assert_eq!(out.status.code(), Some(78), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("auth.enabled = true (from default)") && stderr.contains("auth.keys"),
            "{stderr}"
        );
    }
    // Off, it needs none.
    assert!(load_auth(None, &[NO_AUTH]).unwrap().auth.keys.is_empty());
}

#[test]
fn keys_from_the_configuration_and_the_keys_file_load_together() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders-api.toml");
    write(
        &file,
        &format!(
            "[[auth.keys]]\n{}",
            entry_fields("shop", HASH_A, "orders:write")
        ),
    );
    let keys_file = dir.path().join("keys.toml");
    write(
        &keys_file,
        &format!("[[keys]]\n{}", entry_fields("ci", HASH_B, "orders:read")),
    );
    let s = load_auth(
        Some(&file),
        &[("APP_AUTH__KEYS_FILE", keys_file.to_str().unwrap())],
    )
    .unwrap();
    assert!(s.auth.enabled);
    assert_eq!(s.auth.keys_file.as_deref(), Some(keys_file.as_path()));
    let ids: Vec<&str> = s.auth.keys.iter().map(|k| &*k.id).collect();
    assert_eq!(ids, ["shop", "ci"]);
    assert_eq!(s.auth.keys[1].sha256[0], 0xab, "hex in either case");
}

#[test]
fn every_bad_key_is_reported_with_its_place_and_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders-api.toml");
    write(
        &file,
        &format!(
            "[[auth.keys]]\n{}[[auth.keys]]\n{}[[auth.keys]]\n{}[[auth.keys]]\n{}",
            entry_fields("a", "oak_pasted-key-not-hash", "orders:read"),
            entry_fields("b", HASH_A, "orders:admin"),
            entry_fields("c", HASH_A, "orders:read"),
            entry_fields("c", HASH_B, "orders:read"),
        ),
    );
    let errors = load_auth(Some(&file), &[]).unwrap_err();
    let source = file.display().to_string();
    let hash = only(&errors, "auth.keys[0].sha256");
    assert!(hash.message.contains("64 hex digits"), "{}", hash.message);
    let scope = only(&errors, "auth.keys[1].scopes");
    assert!(
        scope.message.contains("\"orders:admin\""),
        "{}",
        scope.message
    );
    let dup = only(&errors, "auth.keys[3].id");
    assert!(dup.message.contains("already"), "{}", dup.message);
    for e in [hash, scope, dup] {
        assert_eq!(e.source, source);
    }
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        !format!("{errors:?}").contains("oak_pasted"),
        "a key pasted as a hash is never echoed"
    );
}

#[test]
fn a_missing_or_broken_keys_file_is_an_error_naming_auth_keys_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml");
    let broken = dir.path().join("broken.toml");
    write(&broken, "[[keys]\nid = ");
    let bad_entry = dir.path().join("bad-entry.toml");
    write(
        &bad_entry,
        &format!("[[keys]]\n{}", entry_fields("x", "beef", "orders:read")),
    );
    for (path, what) in [
        (&missing, "cannot read"),
        (&broken, "not valid TOML"),
        (&bad_entry, "keys[0].sha256: expected 64 hex digits"),
    ] {
        let shown = path.display().to_string();
        let errors = load_auth(None, &[("APP_AUTH__KEYS_FILE", &shown)]).unwrap_err();
        // One problem: the file's, not also "no keys configured".
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = only(&errors, "auth.keys_file");
        assert_eq!(e.source, "env APP_AUTH__KEYS_FILE");
        assert_eq!(e.value.as_deref(), Some(format!("\"{shown}\"").as_str()));
        assert!(e.message.contains(what), "{}", e.message);
    }
}

#[test]
fn config_print_shows_hashes_but_never_a_pasted_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders-api.toml");
    write(
        &file,
        &format!(
            "[[auth.keys]]\n{}[[auth.keys]]\n{}key = \"oak_under-a-typo\"\n",
            entry_fields("good", HASH_A, "orders:read"),
            entry_fields("pasted", "oak_in-the-hash-field", "orders:read"),
        ),
    );
    let out = render_effective(&Sources::collect(&LoadOptions {
        config_file: Some(file.clone()),
        env: env(&[("APP_CONFIG_DIR", "/nonexistent")]),
    }));
    assert!(out.contains(HASH_A), "{out}");
    assert!(out.contains("\"pasted\""), "{out}");
    assert!(!out.contains("oak_"), "{out}");
    out.parse::<toml::Table>().expect("still TOML");
}

/// Credentials hide in more places than `user:password@`: a database URL's query string, and
/// the userinfo of an OTLP endpoint. None of them may show in `config print`, in a config
/// error, or in the start-up log.
#[test]
fn secrets_in_query_strings_and_otlp_endpoints_are_redacted_everywhere() {
    let secrets = [
        (
            "APP_DATABASE__URL",
            "postgres://u@h/db?sslmode=require&password=s3cret",
        ),
        (
            "APP_TELEMETRY__OTLP__ENDPOINT",
            "https://user:pw0tlp@collector:4318",
        ),
        (
            "APP_TELEMETRY__OTLP__TRACES_ENDPOINT",
            "https://collector:4318/v1/traces?api_key=k3yvalue",
        ),
        (
            "APP_RATE_LIMIT__REDIS__URL",
            "redis://:r3dispw@redis:6379/0",
        ),
    ];
    let leaked = |text: &str| {
        ["s3cret", "pw0tlp", "k3yvalue", "r3dispw"]
            .iter()
            .any(|s| text.contains(s))
    };
    let mut vars = vec![
        ("APP_CONFIG_DIR", "/nonexistent"),
        ("APP_AUTH__ENABLED", "false"),
    ];
    vars.extend(secrets);

    let print = binary(&["config", "print"], &vars);
    let stdout = String::from_utf8_lossy(&print.stdout);
    assert_eq!(print.status.code(), Some(0), "{stdout}");
    assert!(!leaked(&stdout), "{stdout}");
    assert!(
        stdout.contains("postgres://u@h/db?sslmode=require&password=***"),
        "{stdout}"
    );
    assert!(
        stdout.contains("https://user:***@collector:4318"),
        "{stdout}"
    );
    assert!(stdout.contains("/v1/traces?api_key=***"), "{stdout}");
    assert!(stdout.contains("redis://:***@redis:6379/0"), "{stdout}");

    // A config error shows the values of the keys it names.
    let mut bad = vars.clone();
    bad.push(("APP_DATABASE__URL", "mysql://u@h/db?password=s3cret"));
    bad.push((
        "APP_TELEMETRY__OTLP__ENDPOINT",
        "ftp://user:pw0tlp@collector",
    ));
    bad.push((
        "APP_TELEMETRY__OTLP__TRACES_ENDPOINT",
        "ftp://c/?api_key=k3yvalue",
    ));
    bad.push(("APP_RATE_LIMIT__REDIS__URL", "http://:r3dispw@redis:6379"));
    let check = binary(&["config", "check"], &bad);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("4 problems"), "{stderr}");
    assert!(stderr.contains("rate_limit.redis.url"), "{stderr}");
    assert!(!leaked(&stderr), "{stderr}");

    // The start-up log names the collector it exports to.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_orders-api"));
    serve
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(vars.iter().copied())
        .envs([
            ("APP_SERVER__PORT", "0"),
            ("APP_SERVER__OPS_PORT", "0"),
            ("APP_SERVER__HOST", "127.0.0.1"),
            ("APP_LOG__FORMAT", "json"),
        ])
        .env("APP_DATABASE__URL", "sqlite::memory:")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = serve.spawn().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("\"listening\"") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("exporting traces over OTLP"), "{seen}");
    assert!(!leaked(&seen), "{seen}");
}

/// The Redis backend's settings: a URL is required only with the redis backend, every bad
/// value names its key, and a budget whose full refill would take longer than 10^9 s (the
/// Redis script's arithmetic is exact only below 2^53 µs) is refused.
#[test]
fn redis_rate_limit_settings_are_validated_with_key_and_source() {
    let load = |pairs: &[(&str, &str)]| {
        let mut vars = vec![("APP_CONFIG_DIR", "/nonexistent"), NO_AUTH];
        vars.extend_from_slice(pairs);
        Settings::load(&LoadOptions {
            config_file: None,
            env: env(&vars),
        })
    };
    assert!(load(&[]).is_ok(), "the local default needs no URL");
    let errors = load(&[
        ("APP_RATE_LIMIT__BACKEND", "redis"),
        ("APP_RATE_LIMIT__REDIS__FALLBACK", "maybe"),
        ("APP_RATE_LIMIT__REDIS__POOL_SIZE", "0"),
        ("APP_RATE_LIMIT__REDIS__REPLICAS_HINT", "0"),
        ("APP_RATE_LIMIT__GLOBAL__RATE_PER_SECOND", "0.000000001"),
    ])
    .unwrap_err()
    .0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys.len(),
        5,
        "one error for each bad value, none else: {errors:?}"
    );
    for key in [
        "rate_limit.redis.url",
        "rate_limit.redis.fallback",
        "rate_limit.redis.pool_size",
        "rate_limit.redis.replicas_hint",
        "rate_limit.global.rate_per_second",
    ] {
        assert!(keys.contains(&key), "no error for {key}: {errors:?}");
    }
    let fallback = errors
        .iter()
        .find(|e| e.key == "rate_limit.redis.fallback")
        .unwrap();
    assert_eq!(fallback.source, "env APP_RATE_LIMIT__REDIS__FALLBACK");
    let ok = load(&[
        ("APP_RATE_LIMIT__BACKEND", "redis"),
        ("APP_RATE_LIMIT__REDIS__URL", "redis://127.0.0.1:6379/0"),
    ])
    .expect("a redis backend with a URL");
    assert_eq!(
        ok.rate_limit.redis.fallback,
        orders_api::config::Fallback::Local
    );
}

/// Every key of `config/default.toml` has a row in the README's configuration table, and every
/// row names a key of `default.toml`. (`Settings::load` already refuses a default key it does
/// not read and a read key without a default, so the three agree.) A row may name sibling
/// keys as `` `a.b.c`, `.d` ``.
#[test]
fn the_readme_table_and_default_toml_name_the_same_keys() {
    fn leaves(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeSet<String>) {
        for (name, value) in table {
            let key = format!("{prefix}{name}");
            match value {
                toml::Value::Table(inner) => leaves(&format!("{key}."), inner, out),
                _ => {
                    out.insert(key);
                }
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let defaults: toml::Table = std::fs::read_to_string(root.join("config/default.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut in_defaults = std::collections::BTreeSet::new();
    leaves("", &defaults, &mut in_defaults);

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n#").next())
        .expect("a Configuration section");
    let mut in_readme = std::collections::BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        let mut parent = String::new();
        for name in first_cell.split('`').skip(1).step_by(2) {
            let key = match name.strip_prefix('.') {
                Some(sibling) => format!("{parent}.{sibling}"),
                None => name.to_string(),
            };
            parent = key
                .rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            in_readme.insert(key);
        }
    }
    let missing: Vec<_> = in_defaults.difference(&in_readme).collect();
    let unknown: Vec<_> = in_readme.difference(&in_defaults).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "keys of config/default.toml without a README row: {missing:?}; \
         README rows that are not keys: {unknown:?}"
    );
}
