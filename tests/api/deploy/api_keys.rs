//! The API keys Secret: mounted read-only where `auth.keys_file` points, its example holding a
//! file the binary accepts, and pods that refuse to start without it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::{config_map_file, k8s, manifest, mount_of, pod_command, pod_spec, run};

/// The API keys file: its path inside the pod (`auth.keys_file` in the ConfigMap's file, under
/// the read-only mount of a Secret volume) and, for this checkout, the example Secret's file
/// written out (hashes only, so it can be checked like the real one).
pub(super) fn keys_file() -> (String, PathBuf) {
    let (_, config) = config_map_file();
    let config: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    let in_pod = config["auth"]["keys_file"]
        .as_str()
        .expect("the ConfigMap's file names auth.keys_file")
        .to_string();

    let volume = pod_spec()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("a Secret volume holds the API keys")
        .clone();
    let secret_name = volume["secret"]["secretName"].as_str().unwrap().to_string();
    let mount = mount_of(&volume);
    assert_eq!(mount["readOnly"], true, "keys are mounted read-only");
    let mount_path = mount["mountPath"].as_str().unwrap().trim_end_matches('/');
    let file_name = in_pod
        .strip_prefix(&format!("{mount_path}/"))
        .unwrap_or_else(|| panic!("auth.keys_file {in_pod} is not under {mount_path}"));

    let example = std::fs::read_dir(k8s(""))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".example.yaml"))
        .map(|name| manifest(&name))
        .find(|m| m["kind"] == "Secret" && m["metadata"]["name"] == secret_name.as_str())
        .unwrap_or_else(|| panic!("no example of Secret {secret_name}"));
    let text = example["stringData"][file_name]
        .as_str()
        .unwrap_or_else(|| panic!("Secret {secret_name} example has no {file_name}"));
    static WRITTEN: OnceLock<PathBuf> = OnceLock::new();
    let local = WRITTEN.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("deploy-keys-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    });
    (in_pod, local.clone())
}

#[test]
fn pods_refuse_to_start_without_the_api_keys_secret() {
    let (in_pod, _) = keys_file();
    // The keys file at its mount point, as the pod sees it: absent here, as in a pod whose
    // Secret is empty of keys.
    for keys in [in_pod.as_str(), ""] {
        let out = run({
            let mut c = pod_command(&[("APP_AUTH__KEYS_FILE", keys)]);
            c.args(["config", "check"]);
            c
        });
        assert_eq!(out.status.code(), Some(78), "keys file {keys:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("auth."), "{stderr}");
    }
}
