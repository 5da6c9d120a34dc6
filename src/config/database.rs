//! `[database]`: the backend chosen by URL scheme, the pool, migrations and SQLite durability.

use std::time::Duration;

use super::reader::Reader;
use super::values::DatabaseUrl;

/// `[database]`: backend chosen by URL scheme, pool and migrations.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`; the password is redacted when printed.
    pub url: DatabaseUrl,
    /// Pool size.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long a request waits for a connection before failing with 503.
    pub acquire_timeout: Duration,
    /// SQLite lock wait.
    pub busy_timeout: Duration,
    /// Run migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Budget for the readiness database check.
    pub health_timeout: Duration,
    /// PostgreSQL statement timeout.
    pub statement_timeout: Duration,
    /// SQLite's `synchronous` pragma: how durable an acknowledged write is.
    pub sqlite_synchronous: SqliteSynchronous,
    /// SQLite only: writes waiting for the writer thread before new ones are refused (503).
    pub write_queue: u32,
}

/// SQLite's `synchronous` setting (with its WAL journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// No fsync: a crash of the OS or power loss can lose and corrupt recent writes.
    Off,
    /// fsync at checkpoints only: power loss can lose the last acknowledged writes.
    Normal,
    /// fsync on every commit: an acknowledged write survives power loss.
    Full,
    /// As `full`, and the directory too after the WAL is reset.
    Extra,
}

pub(super) fn read(r: &mut Reader<'_>) -> DatabaseSettings {
    let url = r.parsed(
        "database.url",
        "a sqlite:// or postgres:// URL",
        DatabaseUrl::parse,
    );
    let max_connections = r.positive_count("database.max_connections");
    let min_connections = r.count("database.min_connections");
    r.check(
        "database.min_connections",
        min_connections <= max_connections,
        "must not exceed database.max_connections",
    );
    let acquire_timeout = r.positive_duration("database.acquire_timeout");
    let busy_timeout = r.duration("database.busy_timeout");
    let migrate_on_start = r.get("database.migrate_on_start");
    let health_timeout = r.positive_duration("database.health_timeout");
    let statement_timeout = r.positive_duration("database.statement_timeout");
    let write_queue = r.positive_count("database.write_queue");
    let sqlite_synchronous = r.parsed(
        "database.sqlite_synchronous",
        "one of \"off\", \"normal\", \"full\", \"extra\"",
        |s| match s.trim().to_ascii_lowercase().as_str() {
            "off" => Some(SqliteSynchronous::Off),
            "normal" => Some(SqliteSynchronous::Normal),
            "full" => Some(SqliteSynchronous::Full),
            "extra" => Some(SqliteSynchronous::Extra),
            _ => None,
        },
    );
    DatabaseSettings {
        url: url.unwrap_or_default(),
        max_connections,
        min_connections,
        acquire_timeout,
        busy_timeout,
        migrate_on_start,
        health_timeout,
        statement_timeout,
        sqlite_synchronous: sqlite_synchronous.unwrap_or(SqliteSynchronous::Full),
        write_queue,
    }
}
