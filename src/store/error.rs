//! [`StoreError`]: what a storage failure means to the caller, from either backend.

/// A storage failure, classified by what the caller should tell the client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, is overloaded or failing over: retry later (503). The
    /// only kind the circuit breaker counts as a failure.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The write queue is full: refused at once, retry shortly (503). Not a database failure:
    /// the database is answering, just not faster.
    #[error("too many writes queued")]
    Busy,
    /// Anything else: a bug or a broken invariant (500).
    #[error("database error: {0}")]
    Internal(String),
    /// A stored row that does not decode into a valid order.
    #[error("corrupt row for order {id}: {reason}")]
    Corrupt {
        /// The row's id.
        id: String,
        /// What did not decode.
        reason: String,
    },
    /// The database URL or options are unusable.
    #[error("database.url: {0}")]
    Config(String),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(String),
    /// A response to store could not be encoded (a bug).
    #[error("cannot encode the stored response: {0}")]
    Encode(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => true,
            E::Protocol(_) => true,
            E::Database(db) => is_transient(db.code().as_deref()),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e.to_string())
    }
}

impl StoreError {
    /// The `kind` label of `db_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) | Self::Closed => "unavailable",
            Self::Busy => "busy",
            Self::Corrupt { .. } => "corrupt",
            Self::Internal(_) | Self::Config(_) | Self::Migrate(_) | Self::Encode(_) => "internal",
        }
    }

    /// The same failure again, for each of several callers it befell (one write batch).
    pub(crate) fn again(&self) -> Self {
        match self {
            Self::Unavailable(m) => Self::Unavailable(m.clone()),
            Self::Busy => Self::Busy,
            Self::Internal(m) => Self::Internal(m.clone()),
            Self::Corrupt { id, reason } => Self::Corrupt {
                id: id.clone(),
                reason: reason.clone(),
            },
            Self::Config(m) => Self::Config(m.clone()),
            Self::Migrate(m) => Self::Migrate(m.clone()),
            Self::Encode(m) => Self::Encode(m.clone()),
            Self::Closed => Self::Closed,
        }
    }
}

/// SQLite busy/locked; PostgreSQL connection exceptions (08), serialization failures (40001)
/// and deadlocks (40P01), a read-only server after a failover (25006), statement timeouts
/// (57014), shutdowns (57P) and resource exhaustion (53, e.g. 53300 too many connections).
fn is_transient(code: Option<&str>) -> bool {
    match code {
        Some("5" | "6" | "261" | "262" | "517" | "57014" | "40001" | "40P01" | "25006") => true,
        Some(c) => c.starts_with("08") || c.starts_with("53") || c.starts_with("57P"),
        None => false,
    }
}
