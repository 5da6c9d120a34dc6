//! `applies_live` (the keys a reload reports as applied) and `merged` (the fields a reload
//! copies) are two lists of the same thing: every setting is changed alone, and the merge must
//! take it from the new configuration exactly when `applies_live` says so.

use std::time::Duration;

use super::*;

/// The `APP_*` variable of a dotted key.
fn env_name(key: &str) -> String {
    format!("APP_{}", key.replace('.', "__").to_uppercase())
}

/// Another valid-looking value than `shown` (the displayed default), if one can be made.
fn another(key: &str, shown: &str) -> Option<String> {
    let explicit = [
        ("log.level", "debug"),
        ("log.format", "pretty"),
        ("telemetry.sampler", "always_off"),
        ("rate_limit.redis.fallback", "allow"),
        ("database.sqlite_synchronous", "normal"),
    ];
    if let Some((_, v)) = explicit.iter().find(|(k, _)| *k == key) {
        return Some((*v).to_owned());
    }
    match shown {
        "true" => return Some("false".into()),
        "false" => return Some("true".into()),
        _ => {}
    }
    if let Ok(n) = shown.parse::<u64>() {
        return Some((n + 1).to_string());
    }
    if let Ok(x) = shown.parse::<f64>() {
        return Some((x / 2.0).to_string());
    }
    let unquoted = shown.trim_matches('"');
    humantime::parse_duration(unquoted)
        .ok()
        .map(|d| humantime::format_duration(d + Duration::from_secs(1)).to_string())
}

#[test]
fn every_setting_a_reload_applies_is_merged_and_no_other() {
    let base = vec![
        ("APP_PROFILE".to_owned(), "production".to_owned()),
        ("APP_AUTH__ENABLED".to_owned(), "false".to_owned()),
    ];
    let load = |env: Vec<(String, String)>| {
        let opts = LoadOptions {
            config_file: None,
            env,
        };
        (
            Settings::load(&opts),
            flatten_effective(&Sources::collect(&opts)),
        )
    };
    let (running, shown) = load(base.clone());
    let running = running.expect("the production defaults load");
    let (mut live, mut fixed) = (Vec::new(), Vec::new());
    for (key, value) in &shown {
        let Some(changed) = another(key, value) else {
            continue;
        };
        let mut env = base.clone();
        env.push((env_name(key), changed));
        let (Ok(new), _) = load(env) else { continue };
        let (was, now) = (format!("{running:?}"), format!("{new:?}"));
        if was == now {
            continue; // not visible in the settings' Debug (a secret, or a no-op change)
        }
        let got = format!("{:?}", merged(&running, &new));
        if applies_live(key) {
            assert_eq!(
                got, now,
                "{key} applies live but the reload does not copy it"
            );
            live.push(key.clone());
        } else {
            assert_eq!(got, was, "{key} needs a restart but the reload copies it");
            fixed.push(key.clone());
        }
    }
    assert!(
        live.len() >= 15,
        "too few live settings exercised: {live:?}"
    );
    assert!(
        fixed.len() >= 25,
        "too few restart settings exercised: {fixed:?}"
    );
}
