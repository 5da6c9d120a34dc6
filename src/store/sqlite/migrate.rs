//! The SQLite schema's migrations, applied by the writer. The files are embedded with sqlx's
//! `migrate!` (which records each one's checksum) and applied here, through rusqlite, into the
//! same `_sqlx_migrations` table sqlx keeps, so that a database migrated by an earlier build is
//! recognised as it is.

use std::collections::HashMap;
use std::time::Instant;

use rusqlite::Connection;
use sqlx::migrate::Migrator;

use super::from_sqlite;
use crate::store::StoreError;

/// Every migration, embedded at build time.
pub(in crate::store) static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

const TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
)";

/// Applies what is pending, each migration in a transaction of its own; refuses a database
/// whose applied migrations were changed since, or that a failed migration left dirty.
pub(super) fn run(conn: &Connection) -> Result<(), StoreError> {
    run_below(conn, i64::MAX)
}

/// [`run`], for the migrations older than `end` only (as an earlier build left a database).
pub(super) fn run_below(conn: &Connection, end: i64) -> Result<(), StoreError> {
    conn.execute_batch(TABLE).map_err(from_sqlite)?;
    let applied: HashMap<i64, (bool, Vec<u8>)> = conn
        .prepare("SELECT version, success, checksum FROM _sqlx_migrations")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                .collect()
        })
        .map_err(from_sqlite)?;
    for m in MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && m.version < end)
    {
        match applied.get(&m.version) {
            Some((true, checksum)) if checksum.as_slice() == &*m.checksum => continue,
            Some((true, _)) => {
                return Err(StoreError::Migrate(format!(
                    "migration {} was changed after it was applied",
                    m.version
                )));
            }
            Some((false, _)) => {
                return Err(StoreError::Migrate(format!(
                    "migration {} failed earlier and left the database dirty",
                    m.version
                )));
            }
            None => {}
        }
        let started = Instant::now();
        let apply = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            conn.execute_batch(m.sql.as_str())?;
            conn.execute(
                "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES (?1, ?2, TRUE, ?3, ?4)",
                rusqlite::params![
                    m.version,
                    &*m.description,
                    &*m.checksum,
                    i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)
                ],
            )?;
            conn.execute_batch("COMMIT")
        };
        if let Err(e) = apply() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(StoreError::Migrate(format!(
                "migration {} ({}): {e}",
                m.version, m.description
            )));
        }
    }
    Ok(())
}

/// The versions applied successfully (none before the table exists).
pub(super) fn applied(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = '_sqlx_migrations')",
            [],
            |r| r.get(0),
        )
        .map_err(from_sqlite)?;
    if !exists {
        return Ok(Vec::new());
    }
    conn.prepare("SELECT version FROM _sqlx_migrations WHERE success")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(from_sqlite)
}
