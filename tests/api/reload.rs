//! Live reconfiguration on the real binary: the kubelet's ConfigMap update reproduced (a new
//! timestamped directory, then an atomic swap of the `..data` symlink), invalid edits, SIGHUP,
//! restart-only settings, and reloads in the middle of traffic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use orders_api::auth::keys::hash;

use crate::support::binary::{self, Running, eventually, get_status, http, wait_line};
use crate::support::helpers::{Backend, TestApp, api_key, metric};

/// A directory laid out as the kubelet mounts a ConfigMap or Secret: each file is a symlink
/// `name → ..data/name`, `..data` is a symlink to a timestamped directory holding the files.
struct Mounted {
    dir: tempfile::TempDir,
    generation: usize,
}

impl Mounted {
    fn new(files: &[(&str, &str)]) -> Self {
        let mut m = Self {
            dir: tempfile::tempdir().unwrap(),
            generation: 0,
        };
        m.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), m.dir.path().join(name)).unwrap();
        }
        m
    }

    /// The kubelet's update: write the files into a fresh directory, point `..data_tmp` at it,
    /// rename that over `..data` (one atomic step), then remove the old directory.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let fresh = format!("..2026_12_02_{:02}", self.generation);
        std::fs::create_dir(self.dir.path().join(&fresh)).unwrap();
        for (name, text) in files {
            std::fs::write(self.dir.path().join(&fresh).join(name), text).unwrap();
        }
        let tmp = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&fresh, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        if self.generation > 1 {
            let old = format!("..2026_12_02_{:02}", self.generation - 1);
            std::fs::remove_dir_all(self.dir.path().join(old)).unwrap();
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The binary with `config` as its `--config` file (and that file's directory as the profile
/// directory, holding no profile file), authentication off unless `env` turns it on, ports,
/// log level and rate limits as the file says; ready.
fn serve(config: &Path, env: &[(&str, &str)]) -> Running {
    let dir = config.parent().unwrap().display().to_string();
    let file = config.display().to_string();
    let mut all = vec![
        ("APP_CONFIG_FILE", file.as_str()),
        ("APP_CONFIG_DIR", dir.as_str()),
        ("APP_AUTH__ENABLED", "false"),
    ];
    all.extend_from_slice(env);
    let (mut cmd, data) = binary::command(&all);
    // The file decides these (the environment would override it): see [`file`].
    for var in [
        "APP_RATE_LIMIT__ENABLED",
        "APP_LOG__LEVEL",
        "APP_SERVER__PORT",
        "APP_SERVER__OPS_PORT",
    ] {
        cmd.env_remove(var);
    }
    let app = binary::spawn(cmd, data);
    eventually("ready", || get_status(app.ops, "/readyz").ok() == Some(200));
    app
}

fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{auth}Connection: close\r\n\r\n"),
    )
    .unwrap()
}

fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn metrics(app: &Running) -> String {
    get(app.ops, "/metrics", None)
}

/// A config file: ephemeral ports plus `server` lines in `[server]`, then `rest`.
fn file(server: &str, rest: &str) -> String {
    format!("[server]\nport = 0\nops_port = 0\n{server}\n{rest}")
}

/// A config file with a per-client limit of `burst` (and no other policy) and `level`.
fn limits(burst: u32, level: &str) -> String {
    file(
        "",
        &format!(
            "[log]\nlevel = \"{level}\"\n\n[rate_limit]\nenabled = true\n\n\
             [rate_limit.per_client]\nburst = {burst}\nrate_per_second = 0.01\n\n\
             [rate_limit.global]\nburst = 0\n\n[rate_limit.writes]\nburst = 0\n"
        ),
    )
}

fn keys_file(keys: &[(&str, &str)]) -> String {
    keys.iter()
        .map(|(id, key)| {
            let sha: String = hash(key).iter().map(|b| format!("{b:02x}")).collect();
            format!("[[keys]]\nid = \"{id}\"\nsha256 = \"{sha}\"\nscopes = [\"orders:read\"]\n")
        })
        .collect()
}

const KEY_A: &str = "oak_alpha-0123456789abcdefghijklmnopqrstuvwxyz";
const KEY_B: &str = "oak_bravo-0123456789abcdefghijklmnopqrstuvwxyz";

#[test]
fn a_configmap_update_raises_a_limit_swaps_keys_and_changes_the_log_level() {
    let mut config = Mounted::new(&[("app.toml", &limits(2, "info"))]);
    let mut secret = Mounted::new(&[("keys.toml", &keys_file(&[("alpha", KEY_A)]))]);
    let keys = secret.path("keys.toml").display().to_string();
    let app = serve(
        &config.path("app.toml"),
        &[
            ("APP_AUTH__ENABLED", "true"),
            ("APP_AUTH__KEYS_FILE", keys.as_str()),
        ],
    );
    let orders = |key| status(&get(app.api, "/api/v1/orders", Some(key)));
    assert_eq!(
        [orders(KEY_A), orders(KEY_A), orders(KEY_A)],
        [200, 200, 429]
    );
    assert_eq!(orders(KEY_B), 401);

    config.update(&[("app.toml", &limits(5, "debug"))]);
    secret.update(&[("keys.toml", &keys_file(&[("bravo", KEY_B)]))]);
    eventually("the new keys", || {
        orders(KEY_A) == 401 && orders(KEY_B) != 401
    });
    // The raised limit: bravo's bucket holds 5 (one spent by the probe above).
    let admitted = (0..6).filter(|_| orders(KEY_B) == 200).count();
    assert_eq!(admitted, 4, "burst 5, one request already spent");
    // DEBUG lines now: the ops listener's access events are logged at DEBUG.
    get(app.ops, "/healthz", None);
    let debug = wait_line(&app.lines, |l| {
        l["level"] == "DEBUG" && l["target"] == "access"
    });
    assert_eq!(debug["path"], "/healthz", "{debug}");
    let text = metrics(&app);
    assert!(
        metric(&text, "config_reloads_total", "result=\"success\"") >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "config_last_reload_successful", ""), 1.0);
    assert_eq!(metric(&text, "config_restart_required_settings", ""), 0.0);
}

#[test]
fn an_invalid_edit_keeps_the_running_config_and_a_fix_recovers() {
    let mut config = Mounted::new(&[("app.toml", &limits(2, "info"))]);
    let app = serve(&config.path("app.toml"), &[]);
    let policy = || {
        header(&get(app.api, "/api/v1/orders", None), "ratelimit-policy")
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(policy(), "\"per-client\";q=2;w=200");

    config.update(&[(
        "app.toml",
        &limits(2, "info").replace("burst = 2", "burst = \"lots\""),
    )]);
    let refused = wait_line(&app.lines, |l| {
        l["message"] == "configuration reload refused: the running configuration stays"
    });
    assert_eq!(refused["key"], "rate_limit.per_client.burst", "{refused}");
    assert!(
        refused["source"].as_str().unwrap().contains("app.toml"),
        "{refused}"
    );
    let text = metrics(&app);
    assert_eq!(
        metric(&text, "config_last_reload_successful", ""),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "config_reloads_total", "result=\"failure\""),
        1.0
    );
    assert_eq!(policy(), "\"per-client\";q=2;w=200", "the old limits stay");

    config.update(&[("app.toml", &limits(4, "info"))]);
    eventually("the fixed file applied", || {
        policy() == "\"per-client\";q=4;w=400"
    });
    assert_eq!(
        metric(&metrics(&app), "config_last_reload_successful", ""),
        1.0
    );
}

#[test]
fn sighup_reloads_and_a_port_change_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.toml");
    // Not watched: only the signal reloads.
    let watch_off = "\n[config]\nwatch = false\n";
    std::fs::write(&file, limits(2, "info") + watch_off).unwrap();
    let app = serve(&file, &[]);
    let policy = || {
        header(&get(app.api, "/api/v1/orders", None), "ratelimit-policy")
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(policy(), "\"per-client\";q=2;w=200");
    let edited = limits(3, "info").replace("\nport = 0", "\nport = 1") + watch_off;
    std::fs::write(&file, edited).unwrap();
    Command::new("kill")
        .args(["-HUP", &app.child.id().to_string()])
        .status()
        .unwrap();
    let restart = wait_line(&app.lines, |l| {
        l["message"] == "configuration changed where only a restart applies: restart required"
    });
    assert_eq!(restart["settings"], "server.port", "{restart}");
    let reloaded = wait_line(&app.lines, |l| l["message"] == "configuration reloaded");
    assert_eq!(reloaded["trigger"], "SIGHUP");
    // The old port keeps serving, with the new limit; /config says what is not in force.
    assert_eq!(policy(), "\"per-client\";q=3;w=300");
    let shown = get(app.ops, "/config", None);
    assert!(
        shown.contains("# not in force until a restart")
            && shown.contains("#   server.port: 0 -> 1"),
        "{shown}"
    );
    assert_eq!(
        metric(&metrics(&app), "config_restart_required_settings", ""),
        1.0
    );
}

#[test]
fn reloads_in_the_middle_of_traffic_fail_no_request() {
    let quiet = |level: &str, timeout: &str| {
        file(
            &format!("request_timeout = \"{timeout}\""),
            &format!("[log]\nlevel = \"{level}\"\n\n[rate_limit]\nenabled = false\n"),
        )
    };
    let mut config = Mounted::new(&[("app.toml", &quiet("info", "30s"))]);
    let app = serve(&config.path("app.toml"), &[]);
    let api = app.api;
    let done = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (done, served, failed) = (done.clone(), served.clone(), failed.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match status(&get(api, "/api/v1/orders?limit=1", None)) {
                        200 => served.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for round in 0..6 {
        let level = if round % 2 == 0 { "debug" } else { "info" };
        let timeout = if round % 2 == 0 { "20s" } else { "30s" };
        config.update(&[("app.toml", &quiet(level, timeout))]);
        eventually("the reload", || {
            let text = metrics(&app);
            metric(&text, "config_reloads_total", "result=\"success\"") >= f64::from(round + 1)
        });
    }
    done.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(served.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn the_admin_endpoints_need_ops_admin_when_authentication_is_on() {
    let (reader, operator) = (
        "oak_reader-for-ops-0123456789abcdefghijklmnop",
        "oak_operator-0123456789abcdefghijklmnopqrstuv",
    );
    let sha = |key: &str| -> String { hash(key).iter().map(|b| format!("{b:02x}")).collect() };
    let keys = vec![
        api_key("reader", &sha(reader), &["orders:read"]),
        api_key("operator", &sha(operator), &["ops:admin"]),
    ];
    let app = TestApp::builder(Backend::sqlite())
        .with(move |s| {
            s.auth.enabled = true;
            s.auth.keys = keys;
        })
        .spawn()
        .await;
    let put = |key: Option<&'static str>, body: serde_json::Value| {
        let mut req = app.client.put(app.ops_url("/log-level")).json(&body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    let body = serde_json::json!({"filter": "debug", "ttl": "10m"});
    let anonymous = put(None, body.clone()).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(put(Some(reader), body.clone()).await.unwrap().status(), 403);
    let get = |key: Option<&'static str>| {
        let mut req = app.client.get(app.ops_url("/log-level"));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    let before: serde_json::Value = get(Some(operator)).await.unwrap().json().await.unwrap();
    assert_eq!(before["filter"], "info");
    assert!(before.get("remaining_seconds").is_none(), "{before}");

    let set = put(Some(operator), body).await.unwrap();
    assert_eq!(set.status(), 200);
    let now: serde_json::Value = get(Some(operator)).await.unwrap().json().await.unwrap();
    assert_eq!(now["filter"], "debug");
    assert_eq!(now["configured"], "info");
    let left = now["remaining_seconds"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{now}");

    // Bad input: every problem, nothing changed.
    let bad = put(
        Some(operator),
        serde_json::json!({"filter": "info,=[", "ttl": "forever", "x": 1}),
    )
    .await
    .unwrap();
    let problem = crate::support::helpers::problem(bad, 422).await;
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/x", "/filter", "/ttl"], "{problem}");
    let still: serde_json::Value = get(Some(operator)).await.unwrap().json().await.unwrap();
    assert_eq!(still["filter"], "debug");
    // Started without files to reload: there is no file configuration to show.
    let config = app
        .client
        .get(app.ops_url("/config"))
        .bearer_auth(operator)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 404);
}

#[test]
fn get_config_shows_the_effective_configuration_with_sources_and_no_secrets() {
    let secret = "[rate_limit.redis]\nurl = \"redis://:hunter2@127.0.0.1:6379/0\"\n";
    let mut config = Mounted::new(&[("app.toml", &(limits(2, "info") + secret))]);
    let app = serve(&config.path("app.toml"), &[]);
    let shown = get(app.ops, "/config", None);
    assert_eq!(status(&shown), 200, "{shown}");
    assert!(
        shown.contains("# last reload: never (as started)"),
        "{shown}"
    );
    assert!(shown.contains("burst = 2  # "), "{shown}");
    assert!(shown.contains("app.toml"), "each key's source: {shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    config.update(&[("app.toml", &(limits(6, "info") + secret))]);
    eventually("the reload shown", || {
        let shown = get(app.ops, "/config", None);
        shown.contains("burst = 6  # ") && !shown.contains("never (as started)")
    });
}

#[test]
fn buckets_survive_a_reload_that_leaves_the_limits_alone() {
    let mut config = Mounted::new(&[("app.toml", &limits(2, "info"))]);
    let app = serve(&config.path("app.toml"), &[]);
    let orders = || status(&get(app.api, "/api/v1/orders", None));
    assert_eq!([orders(), orders(), orders()], [200, 200, 429]);
    // Only the request timeout and the in-flight cap change: the drained bucket stays drained.
    let edited = limits(2, "info").replace(
        "ops_port = 0\n",
        "ops_port = 0\nrequest_timeout = \"20s\"\nmax_in_flight = 100\n",
    );
    config.update(&[("app.toml", &edited)]);
    let reloaded = wait_line(&app.lines, |l| l["message"] == "configuration reloaded");
    assert_eq!(
        reloaded["applied"], "server.max_in_flight,server.request_timeout",
        "{reloaded}"
    );
    assert_eq!(
        orders(),
        429,
        "a reload that kept the limits refilled the bucket"
    );
}

#[test]
fn a_keys_file_moved_by_a_reload_is_watched_from_then_on() {
    const KEY_C: &str = "oak_charlie-0123456789abcdefghijklmnopqrstuvwxy";
    let first = Mounted::new(&[("keys.toml", &keys_file(&[("alpha", KEY_A)]))]);
    let mut second = Mounted::new(&[("keys.toml", &keys_file(&[("bravo", KEY_B)]))]);
    let pointing_at = |keys: &Mounted| {
        file(
            "",
            &format!(
                "[auth]\nkeys_file = \"{}\"\n",
                keys.path("keys.toml").display()
            ),
        )
    };
    let mut config = Mounted::new(&[("app.toml", &pointing_at(&first))]);
    let app = serve(&config.path("app.toml"), &[("APP_AUTH__ENABLED", "true")]);
    let orders = |key| status(&get(app.api, "/api/v1/orders", Some(key)));
    assert_eq!([orders(KEY_A), orders(KEY_B)], [200, 401]);

    // The configuration now names the second file: its keys are in force.
    config.update(&[("app.toml", &pointing_at(&second))]);
    eventually("the second file's keys", || {
        orders(KEY_A) == 401 && orders(KEY_B) == 200
    });
    // An edit of the second file alone is noticed too: its directory is watched now (there is
    // no polling while every file is watched, so only the watch can bring this in).
    second.update(&[(
        "keys.toml",
        &keys_file(&[("bravo", KEY_B), ("charlie", KEY_C)]),
    )]);
    eventually("the edited second file's keys", || orders(KEY_C) == 200);
    assert_eq!(orders(KEY_B), 200);
    drop(first);
}

#[test]
fn a_key_added_in_front_by_a_reload_leaves_the_other_keys_buckets_as_they_were() {
    let config = Mounted::new(&[("app.toml", &limits(2, "info"))]);
    let mut secret = Mounted::new(&[("keys.toml", &keys_file(&[("alpha", KEY_A)]))]);
    let keys = secret.path("keys.toml").display().to_string();
    let app = serve(
        &config.path("app.toml"),
        &[
            ("APP_AUTH__ENABLED", "true"),
            ("APP_AUTH__KEYS_FILE", keys.as_str()),
        ],
    );
    let orders = |key| status(&get(app.api, "/api/v1/orders", Some(key)));
    assert_eq!(
        [orders(KEY_A), orders(KEY_A), orders(KEY_A)],
        [200, 200, 429]
    );

    // bravo takes alpha's place in the list: buckets follow keys, not places.
    secret.update(&[(
        "keys.toml",
        &keys_file(&[("bravo", KEY_B), ("alpha", KEY_A)]),
    )]);
    // Waited for in the log: a probe would spend tokens (an unknown key is its address's).
    wait_line(&app.lines, |l| l["message"] == "configuration reloaded");
    assert_eq!(
        orders(KEY_A),
        429,
        "alpha's drained bucket was refilled or swapped"
    );
    // bravo has a bucket of its own.
    assert_eq!(
        [orders(KEY_B), orders(KEY_B), orders(KEY_B)],
        [200, 200, 429]
    );
}
