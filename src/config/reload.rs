//! `[config]`: reloading the configuration while running.

use std::time::Duration;

use super::reader::Reader;

/// `[config]`: whether and how the running service picks up changed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Watch the configuration files and `auth.keys_file` (their directories, so that a
    /// ConfigMap's `..data` swap is seen) and apply what changed.
    pub watch: bool,
    /// How often the files are compared when the platform cannot notify changes (0: never).
    pub reload_interval: Duration,
}

pub(super) fn read(r: &mut Reader<'_>) -> ReloadSettings {
    ReloadSettings {
        watch: r.get("config.watch"),
        reload_interval: r.duration("config.reload_interval"),
    }
}
