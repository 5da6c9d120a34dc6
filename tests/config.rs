//! Configuration: layer precedence, every problem reported at once with its source, redaction,
//! and the `config` subcommands of the real binary. The environment is passed explicitly, so
//! these tests never change the process environment.

use std::path::Path;
use std::process::Command;

use orders_api::config::{LoadOptions, Settings, Sources, render_effective};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

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
    let base = [
        ("APP_CONFIG_DIR", dir.path().to_str().unwrap()),
        ("APP_PROFILE", "staging"),
    ];

    // Defaults only (profile file absent).
    let s = Settings::load(&LoadOptions {
        config_file: None,
        env: env(&[("APP_CONFIG_DIR", "/nonexistent")]),
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
    let out = binary(
        &["config", "print"],
        &[
            ("APP_PROFILE", "production"),
            ("DATABASE_URL", "postgres://a:topsecret@h/d"),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
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
        let mut all = vec![("APP_CONFIG_DIR", "/nonexistent")];
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
