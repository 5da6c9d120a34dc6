//! The read connections: a small stack, and the read transactions they keep open.
//!
//! Beginning and ending a read transaction in WAL mode takes and drops a lock on the shared
//! WAL index, two `fcntl` calls each time: about a fifth of a point read's cost. So a read
//! connection keeps its transaction (its snapshot) open from one read to the next, as long as
//! nothing was committed meanwhile: the writer bumps a generation after each commit, and a
//! reader whose snapshot is older begins a new one. A reader therefore never sees less than
//! what was committed before its read began (an order acknowledged with 201 is found by the
//! next read), and without writes it takes no lock at all.
//!
//! An idle connection must not keep an old snapshot for long: it would keep the WAL from
//! being checkpointed past it. So after each commit the writer ends the snapshots of the idle
//! connections, and a connection given back after a commit ends its own.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rusqlite::Connection;

use super::{Connector, from_sqlite};
use crate::store::StoreError;

/// One read connection and the generation of the snapshot it holds, if it holds one.
#[derive(Debug)]
struct Reader {
    conn: Connection,
    snapshot: Option<u64>,
}

impl Reader {
    /// Ends the open snapshot, if any. A connection that cannot end it is not worth keeping.
    fn end(&mut self) -> bool {
        match self.snapshot.take() {
            Some(_) => self.conn.execute_batch("COMMIT").is_ok(),
            None => true,
        }
    }
}

/// The stack of read connections.
#[derive(Debug)]
pub(super) struct Readers {
    idle: Mutex<Vec<Reader>>,
    /// Connections kept idle at most (more are closed when given back).
    max_idle: usize,
    /// Connections open now, idle or in use.
    open: AtomicU32,
    /// Commits so far; a snapshot taken at an older one may miss them.
    generation: AtomicU64,
    /// Keep snapshots between reads (not for an in-memory database, whose shared cache would
    /// make an open read transaction block the writer).
    reuse: bool,
}

impl Readers {
    pub fn new(max_idle: usize, reuse: bool) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            open: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            reuse,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Reader>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on a read connection, inside a snapshot at least as new as the last commit.
    pub fn read<T>(
        &self,
        connector: &Connector,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let popped = self.idle().pop();
        let mut reader = match popped {
            Some(reader) => reader,
            None => {
                let conn = connector.open_reader()?;
                self.open.fetch_add(1, Ordering::Relaxed);
                Reader {
                    conn,
                    snapshot: None,
                }
            }
        };
        let now = self.generation.load(Ordering::Acquire);
        if self.reuse && reader.snapshot != Some(now) {
            if !reader.end() {
                self.open.fetch_sub(1, Ordering::Relaxed);
                return Err(StoreError::Unavailable(
                    "cannot end a read transaction".into(),
                ));
            }
            // Deferred: the snapshot is taken by the first statement, after `now` was read.
            reader.conn.execute_batch("BEGIN").map_err(from_sqlite)?;
            reader.snapshot = Some(now);
        }
        let result = f(&reader.conn);
        self.give_back(reader);
        result
    }

    fn give_back(&self, mut reader: Reader) {
        // Committed while this read ran: the snapshot is already old, end it now.
        if reader.snapshot.is_some()
            && reader.snapshot != Some(self.generation.load(Ordering::Acquire))
            && !reader.end()
        {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            idle.push(reader);
        } else {
            drop(idle);
            drop(reader);
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The writer has committed: later reads take a new snapshot, and the idle connections
    /// give up theirs.
    pub fn committed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if !self.reuse {
            return;
        }
        let mut idle = self.idle();
        let before = idle.len();
        idle.retain_mut(Reader::end);
        let dropped = before - idle.len();
        if dropped > 0 {
            self.open.fetch_sub(
                u32::try_from(dropped).unwrap_or(u32::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Idle connections now, and open ones (idle or in use).
    pub fn counts(&self) -> (usize, u32) {
        (self.idle().len(), self.open.load(Ordering::Relaxed))
    }

    /// Closes the idle connections.
    pub fn clear(&self) {
        let mut idle = self.idle();
        let n = idle.len();
        idle.clear();
        self.open
            .fetch_sub(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}
