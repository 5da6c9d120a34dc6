//! The Kubernetes manifests in deploy/k8s agree with the binary they run: every probe names a
//! container port and a path that answers as the probe expects, every setting the manifests
//! provide is a real configuration key, the termination grace period covers the shutdown
//! sequence of the production profile, and the objects select and target each other.
//!
//! The manifests are read as written (plus the kustomization's generated ConfigMap); no
//! cluster and no kubectl are involved.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orders_api::config::META_VARS;
use serde::Deserialize;
use serde_json::Value;

use crate::support::helpers::repo_root;

mod api_keys;

const BIN: &str = env!("CARGO_BIN_EXE_orders-api");

/// The binary flushes queued spans for at most this long at exit (after the grace period).
const TELEMETRY_FLUSH: Duration = Duration::from_secs(5);

fn k8s(file: &str) -> PathBuf {
    repo_root().join("deploy/k8s").join(file)
}

/// One YAML document as JSON values (the manifests use string keys only).
fn manifest(file: &str) -> Value {
    let path = k8s(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut docs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect::<Vec<_>>();
    assert_eq!(docs.len(), 1, "{file}: expected one document");
    docs.remove(0)
}

fn pod_spec() -> Value {
    manifest("deployment.yaml")["spec"]["template"]["spec"].clone()
}

fn container() -> Value {
    let containers = pod_spec()["containers"].as_array().unwrap().clone();
    assert_eq!(containers.len(), 1, "one container: orders-api");
    containers[0].clone()
}

fn pod_labels() -> BTreeMap<String, String> {
    string_map(&manifest("deployment.yaml")["spec"]["template"]["metadata"]["labels"])
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected a mapping, got {v}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// `selector.matchLabels` selects pods labelled `labels` (and has no matchExpressions to
/// second-guess).
fn assert_selects(what: &str, selector: &Value, labels: &BTreeMap<String, String>) {
    assert!(
        selector.get("matchExpressions").is_none(),
        "{what}: only matchLabels are used"
    );
    let wanted = string_map(&selector["matchLabels"]);
    assert!(
        !wanted.is_empty(),
        "{what}: empty selector selects everything"
    );
    for (k, v) in &wanted {
        assert_eq!(
            labels.get(k),
            Some(v),
            "{what}: selector {k}={v} does not match the pod labels {labels:?}"
        );
    }
}

/// Container port name -> number.
fn container_ports() -> BTreeMap<String, u64> {
    container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A port given by name or number, as a container port number.
fn resolve_port(port: &Value) -> u64 {
    let ports = container_ports();
    match port {
        Value::String(name) => *ports
            .get(name)
            .unwrap_or_else(|| panic!("port {name:?} is not a container port ({ports:?})")),
        Value::Number(n) => {
            let n = n.as_u64().unwrap();
            assert!(
                ports.values().any(|p| *p == n),
                "port {n} is not a container port"
            );
            n
        }
        other => panic!("not a port: {other}"),
    }
}

/// The container's literal environment, with `$(VAR)` references expanded the way the kubelet
/// does; downward-API and Secret values are stood in for by `stand_ins`.
fn container_env(stand_ins: &BTreeMap<&str, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in container()["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e.get("value") {
            Some(v) => {
                let mut v = v.as_str().unwrap().to_string();
                for (k, val) in &out {
                    v = v.replace(&format!("$({k})"), val);
                }
                assert!(!v.contains("$("), "{name}: unresolved reference in {v}");
                v
            }
            None => stand_ins
                .get(name.as_str())
                .unwrap_or_else(|| panic!("{name}: no stand-in for its valueFrom"))
                .clone(),
        };
        out.push((name, value));
    }
    out
}

/// The configuration file the ConfigMap provides: its path inside the pod (from
/// APP_CONFIG_FILE) and its source file in deploy/k8s (from the kustomization's generator).
fn config_map_file() -> (String, PathBuf) {
    let kustomization = manifest("kustomization.yaml");
    let generators = kustomization["configMapGenerator"].as_array().unwrap();
    assert_eq!(generators.len(), 1);
    let generator = &generators[0];
    let cm_name = generator["name"].as_str().unwrap();
    let files: Vec<&str> = generator["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();

    let volume = pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm_name)
        .unwrap_or_else(|| panic!("no volume mounts ConfigMap {cm_name}"))
        .clone();
    let mount = mount_of(&volume);
    let mount_path = mount["mountPath"].as_str().unwrap().trim_end_matches('/');

    let env = container_env(&stand_ins());
    let in_pod = env
        .iter()
        .find(|(k, _)| k == "APP_CONFIG_FILE")
        .map(|(_, v)| v.clone())
        .expect("APP_CONFIG_FILE names the mounted file");
    let file_name = in_pod
        .strip_prefix(&format!("{mount_path}/"))
        .unwrap_or_else(|| panic!("APP_CONFIG_FILE {in_pod} is not under {mount_path}"));
    assert!(
        files.contains(&file_name),
        "APP_CONFIG_FILE names {file_name}, the ConfigMap holds {files:?}"
    );
    (in_pod.clone(), k8s(file_name))
}

/// The container's mount of the pod volume `volume`.
fn mount_of(volume: &Value) -> Value {
    container()["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap_or_else(|| panic!("volume {} is not mounted", volume["name"]))
        .clone()
}

/// Placeholder values for the variables the manifests take from the API server or a Secret.
fn stand_ins() -> BTreeMap<&'static str, String> {
    let secret = manifest("secret.example.yaml");
    let url = secret["stringData"]["DATABASE_URL"]
        .as_str()
        .expect("the example Secret shows DATABASE_URL")
        .to_string();
    BTreeMap::from([
        ("DATABASE_URL", url),
        ("POD_NAME", "orders-api-7d9f-abcde".to_string()),
        ("POD_NAMESPACE", "orders".to_string()),
        (
            "POD_UID",
            "0190b8a0-0000-7000-8000-000000000000".to_string(),
        ),
        ("NODE_NAME", "node-1".to_string()),
    ])
}

/// `ENV` values of the Dockerfile's final stage (the image's environment).
fn image_env() -> BTreeMap<String, String> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let mut env = BTreeMap::new();
    let joined = last_stage.replace("\\\n", " ");
    for line in joined.lines() {
        if let Some(rest) = line.trim().strip_prefix("ENV ") {
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=').expect("ENV KEY=VALUE form");
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
    }
    env
}

/// The binary with the pod's configuration: the image's environment (its config directory
/// mapped to this checkout), the manifest's environment, the ConfigMap's file, the keys
/// Secret's file.
fn pod_command(extra_env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(repo_root()).env_clear();
    for (k, v) in image_env() {
        let v = if k == "APP_CONFIG_DIR" {
            repo_root().join("config").display().to_string()
        } else {
            v
        };
        cmd.env(k, v);
    }
    let (_, source) = config_map_file();
    for (k, v) in container_env(&stand_ins()) {
        let v = if k == "APP_CONFIG_FILE" {
            source.display().to_string()
        } else {
            v
        };
        cmd.env(k, v);
    }
    // The Secret's mount point does not exist here: the example's file stands in for it.
    let (_, keys) = api_keys::keys_file();
    cmd.env("APP_AUTH__KEYS_FILE", keys);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run orders-api")
}

/// `config print` as TOML: the effective settings.
fn effective_config(cmd: Command) -> toml::Table {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "config print failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .parse::<toml::Table>()
        .expect("config print is TOML")
}

/// Dotted names of every setting (`server.port`, `telemetry.otlp.endpoint`, ...).
fn leaf_keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => leaf_keys(t, &key, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

fn duration(table: &toml::Table, section: &str, key: &str) -> Duration {
    let text = table[section][key]
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} is not a duration string"));
    humantime::parse_duration(text).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The running binary.

/// Starts `serve` as the pod would, on ephemeral loopback ports, and waits for its
/// "listening" log line. `database_url` replaces the Secret's placeholder.
fn start_pod(database_url: Option<&str>) -> crate::support::binary::Running {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("orders.db").display());
    let url = database_url.map_or(sqlite, str::to_string);
    let cmd = pod_command(&[
        ("APP_SERVER__HOST", "127.0.0.1"),
        ("APP_SERVER__PORT", "0"),
        ("APP_SERVER__OPS_PORT", "0"),
        ("APP_LOG__FORMAT", "json"),
        ("APP_DATABASE__URL", &url),
        // No export from a test: the manifest's collector is a cluster address.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
    ]);
    crate::support::binary::spawn(cmd, dir)
}

/// The status of `GET path` as a kubelet's probe sends it.
fn get_status(addr: SocketAddr, path: &str) -> u16 {
    crate::support::binary::get_status(addr, path).expect("probe request")
}

/// Polls until `path` on `addr` answers `want`, or panics after 15 s with the last status.
fn wait_status(addr: SocketAddr, path: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while Instant::now() < deadline {
        last = get_status(addr, path);
        if last == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{path} on {addr} answered {last}, never {want}");
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn container_ports_are_the_binarys_listeners_and_the_images_exposed_ports() {
    let cfg = effective_config({
        let mut c = pod_command(&[]);
        c.args(["config", "print"]);
        c
    });
    let ports = container_ports();
    let api = cfg["server"]["port"].as_integer().unwrap() as u64;
    let ops = cfg["server"]["ops_port"].as_integer().unwrap() as u64;
    assert_eq!(ports.get("http"), Some(&api), "http is server.port");
    assert_eq!(ports.get("ops"), Some(&ops), "ops is server.ops_port");
    assert_eq!(ports.len(), 2);

    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let exposed: BTreeSet<u64> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u64>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([api, ops]), "EXPOSE");

    let annotations = &manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], ops.to_string());
}

#[test]
fn probes_name_real_ports_and_paths_that_answer_as_kubernetes_expects() {
    let c = container();
    let probes: Vec<(&str, &Value)> = ["startupProbe", "livenessProbe", "readinessProbe"]
        .into_iter()
        .map(|name| (name, &c[name]["httpGet"]))
        .collect();
    for (name, probe) in &probes {
        assert!(probe.is_object(), "{name} is an httpGet probe");
        assert!(probe["port"].is_string(), "{name} names its port");
        assert_eq!(
            resolve_port(&probe["port"]),
            container_ports()["ops"],
            "{name} probes the ops listener (no rate limit or load shedding there)"
        );
    }

    // Healthy pod: every probe answers 200 (readiness once the schema is in place).
    let pod = start_pod(None);
    let addr = |port: &Value| match resolve_port(port) {
        8080 => pod.api,
        9090 => pod.ops,
        other => panic!("no listener for container port {other}"),
    };
    for (name, probe) in &probes {
        let path = probe["path"].as_str().unwrap();
        wait_status(addr(&probe["port"]), path, 200);
        eprintln!("{name}: {path} -> 200");
    }
    // The scrape path the annotations and the ServiceMonitor name answers on the same port.
    let annotations = &manifest("deployment.yaml")["spec"]["template"]["metadata"]["annotations"];
    let metrics_path = annotations["prometheus.io/path"].as_str().unwrap();
    assert_eq!(get_status(pod.ops, metrics_path), 200, "{metrics_path}");
    drop(pod);

    // Database down: liveness and startup must still pass (or every pod would restart in an
    // outage), readiness must fail (so the pod leaves the Service).
    let pod = start_pod(Some("postgres://orders@127.0.0.1:1/orders"));
    let addr = |port: &Value| match resolve_port(port) {
        8080 => pod.api,
        9090 => pod.ops,
        other => panic!("no listener for container port {other}"),
    };
    for (name, probe) in &probes {
        let path = probe["path"].as_str().unwrap();
        let want = if *name == "readinessProbe" { 503 } else { 200 };
        assert_eq!(
            get_status(addr(&probe["port"]), path),
            want,
            "{name} {path} with the database down"
        );
    }
}

#[test]
fn every_setting_the_manifests_provide_is_a_real_configuration_key() {
    let known = {
        let mut c = pod_command(&[]);
        c.args(["config", "print"]);
        let mut keys = BTreeSet::new();
        leaf_keys(&effective_config(c), "", &mut keys);
        keys
    };
    assert!(known.contains("server.port") && known.contains("shutdown.drain_delay"));

    // APP_<SECTION>__<KEY> variables name settings; the meta variables are the only others.
    let mut app_vars = 0;
    let env: Vec<(String, String)> = container_env(&stand_ins())
        .into_iter()
        .chain(image_env())
        .collect();
    for (name, _) in &env {
        let Some(rest) = name.strip_prefix("APP_") else {
            continue;
        };
        app_vars += 1;
        if META_VARS.contains(&name.as_str()) {
            continue;
        }
        let key = rest.to_lowercase().replace("__", ".");
        assert!(known.contains(&key), "{name} is no setting ({key})");
    }
    assert!(app_vars >= 2, "APP_PROFILE and APP_CONFIG_FILE at least");

    // The ConfigMap's file: every key is a setting.
    let (_, source) = config_map_file();
    let file: toml::Table = std::fs::read_to_string(&source).unwrap().parse().unwrap();
    let mut file_keys = BTreeSet::new();
    leaf_keys(&file, "", &mut file_keys);
    assert!(!file_keys.is_empty());
    for key in &file_keys {
        assert!(
            known.contains(key),
            "{}: {key} is no setting",
            source.display()
        );
    }

    // The binary agrees: the pod's whole configuration passes `config check`.
    let out = run({
        let mut c = pod_command(&[]);
        c.args(["config", "check"]);
        c
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "config check with the pod's configuration: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And the check can fail: a misspelled key in the file, or in a variable, exits 78.
    let first = file_keys.iter().next().unwrap();
    let leaf = first.rsplit('.').next().unwrap();
    let misspelled = format!("{leaf}x");
    let text = std::fs::read_to_string(&source).unwrap();
    let broken = text.replacen(&format!("\n{leaf} ="), &format!("\n{misspelled} ="), 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let broken_path = dir.path().join("orders-api.toml");
    std::fs::write(&broken_path, broken).unwrap();
    let out = run({
        let mut c = pod_command(&[("APP_CONFIG_FILE", broken_path.to_str().unwrap())]);
        c.args(["config", "check"]);
        c
    });
    assert_eq!(
        out.status.code(),
        Some(78),
        "misspelled {misspelled} in the file"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&misspelled));

    let out = run({
        let mut c = pod_command(&[("APP_SHUTDOWN__GRACE_PERIODS", "20s")]);
        c.args(["config", "check"]);
        c
    });
    assert_eq!(out.status.code(), Some(78), "misspelled APP_ variable");
}

#[test]
fn termination_grace_period_covers_prestop_drain_grace_and_flush() {
    let cfg = effective_config({
        let mut c = pod_command(&[]);
        c.args(["config", "print"]);
        c
    });
    let drain = duration(&cfg, "shutdown", "drain_delay");
    let grace = duration(&cfg, "shutdown", "grace_period");
    assert!(
        drain > Duration::ZERO,
        "the production profile drains before closing listeners"
    );

    let pre_stop = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop uses the native sleep action");
    let pre_stop = Duration::from_secs(pre_stop);
    assert!(pre_stop > Duration::ZERO);
    let termination = Duration::from_secs(
        pod_spec()["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap(),
    );
    let needed = pre_stop + drain + grace + TELEMETRY_FLUSH;
    assert!(
        termination > needed,
        "terminationGracePeriodSeconds {termination:?} must exceed preStop {pre_stop:?} + \
         drain_delay {drain:?} + grace_period {grace:?} + span flush {TELEMETRY_FLUSH:?}"
    );
}

#[test]
fn service_ports_target_the_container_ports() {
    let service = manifest("service.yaml");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_selects(
        "Service",
        &serde_json::json!({"matchLabels": service["spec"]["selector"]}),
        &pod_labels(),
    );
    let ports = container_ports();
    let by_name: BTreeMap<&str, &Value> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    for (name, container_port) in [("http", ports["http"]), ("metrics", ports["ops"])] {
        let port = by_name
            .get(name)
            .unwrap_or_else(|| panic!("Service has no port {name}"));
        assert_eq!(resolve_port(&port["targetPort"]), container_port, "{name}");
        assert_eq!(port["port"].as_u64(), Some(container_port), "{name}");
    }
    assert_eq!(by_name.len(), 2);

    let monitor = manifest("monitoring/servicemonitor.yaml");
    assert_selects(
        "ServiceMonitor",
        &monitor["spec"]["selector"],
        &string_map(&service["metadata"]["labels"]),
    );
    for endpoint in monitor["spec"]["endpoints"].as_array().unwrap() {
        assert_eq!(endpoint["port"], "metrics");
        assert_eq!(endpoint["path"], "/metrics");
    }
}

#[test]
fn autoscaler_disruption_budget_and_network_policy_apply_to_the_deployment() {
    let deployment = manifest("deployment.yaml");
    let labels = pod_labels();
    assert_selects("Deployment", &deployment["spec"]["selector"], &labels);

    let hpa = manifest("hpa.yaml");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["apiVersion"], deployment["apiVersion"]);
    assert_eq!(target["kind"], deployment["kind"]);
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    let (min, max) = (
        hpa["spec"]["minReplicas"].as_u64().unwrap(),
        hpa["spec"]["maxReplicas"].as_u64().unwrap(),
    );
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert!(min >= 2 && min <= replicas && replicas <= max);

    let pdb = manifest("pdb.yaml");
    assert_selects("PodDisruptionBudget", &pdb["spec"]["selector"], &labels);
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(
        min > 1,
        "with maxUnavailable 1, one replica could be evicted to zero"
    );

    let policy = manifest("networkpolicy.yaml");
    assert_selects("NetworkPolicy", &policy["spec"]["podSelector"], &labels);
    let ports: BTreeSet<u64> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_array().unwrap().iter())
        .map(|p| resolve_port(&p["port"]))
        .collect();
    assert_eq!(ports, container_ports().values().copied().collect());

    // Everything but the example Secrets is applied by the kustomization; monitoring apart.
    let kustomization = manifest("kustomization.yaml");
    let resources: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for entry in std::fs::read_dir(k8s("")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let is_manifest = Path::new(&name).extension().is_some_and(|e| e == "yaml");
        if is_manifest && name != "kustomization.yaml" && !name.ends_with(".example.yaml") {
            assert!(
                resources.contains(name.as_str()),
                "{name} not in kustomization.yaml"
            );
        }
    }
    assert!(!resources.iter().any(|r| r.ends_with(".example.yaml")));
    assert!(!resources.iter().any(|r| r.starts_with("monitoring")));
}

/// The pods believe `X-Forwarded-For` only from the ingress controller: the ConfigMap's
/// trusted proxies are narrow ranges (a placeholder until set), never the cluster's whole
/// private range, from which any pod could forge its client address.
#[test]
fn the_pods_trust_forwarded_addresses_only_from_a_narrow_ingress_range() {
    let (_, source) = config_map_file();
    let text = std::fs::read_to_string(&source).unwrap();
    let file: toml::Table = text.parse().unwrap();
    let proxies = file["server"]["trusted_proxies"]
        .as_array()
        .expect("a list");
    assert!(!proxies.is_empty());
    for proxy in proxies {
        let net: ipnet::IpNet = proxy.as_str().unwrap().parse().unwrap();
        let widest = if net.addr().is_ipv4() { 16 } else { 48 };
        assert!(
            net.prefix_len() >= widest,
            "{net} trusts too much of the network"
        );
    }
    assert!(
        text.contains("INGRESS_CIDR"),
        "the placeholder says what to put there"
    );
}

/// The egress rules of `policy` that admit TCP or UDP `port`, by `protocol`.
fn egress_for<'a>(policy: &'a Value, port: u64, protocol: &str) -> Vec<&'a Value> {
    policy["spec"]["egress"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|rule| {
            rule["ports"].as_array().is_some_and(|ports| {
                ports
                    .iter()
                    .any(|p| p["port"].as_u64() == Some(port) && p["protocol"] == protocol)
            })
        })
        .collect()
}

/// `host:port` of a URL such as `scheme://user:pass@host:port/path`.
fn host_port(url: &str) -> (String, u64) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url}: no port"));
    (host.to_owned(), port.parse().unwrap())
}

#[test]
fn egress_admits_what_the_pods_call_and_nothing_else() {
    let policy = manifest("networkpolicy.yaml");
    let types = policy["spec"]["policyTypes"].as_array().unwrap();
    assert!(
        types.contains(&Value::from("Egress")),
        "the base policy must isolate egress: {types:?}"
    );
    // DNS, to the cluster's resolver only, over UDP and TCP.
    for protocol in ["UDP", "TCP"] {
        let dns = egress_for(&policy, 53, protocol);
        assert_eq!(dns.len(), 1, "DNS over {protocol}");
        assert_eq!(
            dns[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
    }
    // PostgreSQL at the port the Secret's URL names.
    let secret: Value = {
        let text = std::fs::read_to_string(k8s("secret.example.yaml")).unwrap();
        serde_yaml_ng::from_str(&text).unwrap()
    };
    let (_, db_port) = host_port(secret["stringData"]["DATABASE_URL"].as_str().unwrap());
    assert_eq!(egress_for(&policy, db_port, "TCP").len(), 1, "PostgreSQL");
    // OTLP to the namespace and port of the Deployment's endpoint.
    let endpoint = container_env(&stand_ins())
        .into_iter()
        .find(|(k, _)| k == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|(_, v)| v)
        .expect("OTEL_EXPORTER_OTLP_ENDPOINT in the Deployment");
    let (host, otlp_port) = host_port(&endpoint);
    let namespace = host.split('.').nth(1).expect("a service.namespace host");
    let otlp = egress_for(&policy, otlp_port, "TCP");
    assert_eq!(otlp.len(), 1, "OTLP at {endpoint}");
    assert_eq!(
        otlp[0]["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        namespace
    );
    // Nothing else: every rule is one of those.
    let rules = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(rules.len(), 3, "DNS, PostgreSQL and OTLP only: {rules:?}");

    // The Redis component adds Redis, and only Redis, to it.
    let redis = manifest("components/redis-rate-limit/networkpolicy-egress.yaml");
    assert_eq!(redis["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    assert_eq!(
        redis["spec"]["podSelector"], policy["spec"]["podSelector"],
        "both policies select the same pods, so their rules add up"
    );
    assert_eq!(egress_for(&redis, 6379, "TCP").len(), 1);
    assert_eq!(redis["spec"]["egress"].as_array().unwrap().len(), 1);
}
