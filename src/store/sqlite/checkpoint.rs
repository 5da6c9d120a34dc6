//! WAL checkpoints off the write path.
//!
//! SQLite's automatic checkpoint runs inside the `COMMIT` that takes the WAL past 1,000 pages.
//! On the one writer that is a batch whose callers all wait while a few hundred pages are
//! copied into the database file and the file is fsynced: 10-20 ms, every few dozen commits
//! under a steady stream of creates. So the write connection has no automatic checkpoint.
//! Instead a WAL hook notes the log's size after each commit, and:
//!
//! - each time the WAL grows by another [`BACKGROUND`] pages the writer wakes a thread of its
//!   own, which runs a `PASSIVE` checkpoint on its own connection while the writer goes on
//!   appending to the WAL;
//! - past [`INLINE`] pages (the background checkpoints cannot keep up, or every one was cut
//!   short by new frames) the writer runs a `PASSIVE` checkpoint itself, after it has answered
//!   the batch. With no frame added meanwhile it can finish, so the next write transaction
//!   starts the WAL again from its beginning; most pages were already copied by then.
//!
//! The WAL therefore stays bounded as before, and a write's callers never wait for a copy.

use std::cell::Cell;
use std::os::raw::c_int;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

use super::{Connector, from_sqlite};
use crate::store::StoreError;

/// WAL pages past which the background thread checkpoints (SQLite's own default threshold).
pub(super) const BACKGROUND: i32 = 1000;
/// WAL pages past which the writer checkpoints itself, between two batches.
pub(super) const INLINE: i32 = 4 * BACKGROUND;

thread_local! {
    /// The WAL's size in pages after the last commit on this thread's write connection.
    static WAL_PAGES: Cell<i32> = const { Cell::new(0) };
    /// The multiple of [`BACKGROUND`] pages the WAL had reached at the last request.
    static REQUESTED_AT: Cell<i32> = const { Cell::new(0) };
}

/// The WAL hook: called by SQLite on the committing thread (the writer's) after each commit.
fn note_wal_pages(_: &rusqlite::hooks::Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// Runs one `PASSIVE` checkpoint: it copies what no reader still needs, never waits for a
/// lock, and never blocks the writer.
fn passive(conn: &Connection) -> Result<(), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        .map_err(from_sqlite)
}

#[derive(Debug, Default)]
struct State {
    requested: bool,
    stop: bool,
    /// Checkpoints completed by the thread.
    done: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Signalled after each checkpoint of the thread.
    finished: Condvar,
}

/// The checkpoint thread and the writer's side of the policy.
#[derive(Debug)]
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts the thread; it opens its connection on its first checkpoint.
    pub fn start(connector: Connector) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn({
                let shared = shared.clone();
                move || run(&connector, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Takes over the checkpoints of the write connection `conn` (it has none of its own from
    /// now on). Call it on the writer thread.
    pub fn watch(conn: &Connection) {
        WAL_PAGES.with(|p| p.set(0));
        REQUESTED_AT.with(|r| r.set(0));
        conn.wal_hook(Some(note_wal_pages));
    }

    /// After a commit on the writer thread (with no transaction open): wakes the thread, or
    /// checkpoints on `conn` when the WAL has grown past [`INLINE`].
    pub fn after_commit(&self, conn: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        let band = pages / BACKGROUND;
        if band == 0 {
            // The WAL started again from its beginning.
            REQUESTED_AT.with(|r| r.set(0));
            return;
        }
        if pages >= INLINE {
            // Nothing to do with a failure here: the next commit tries again.
            if let Err(e) = passive(conn) {
                tracing::warn!(error = %e, wal_pages = pages, "WAL checkpoint failed");
            }
            WAL_PAGES.with(|p| p.set(0));
            REQUESTED_AT.with(|r| r.set(0));
            return;
        }
        // Once per BACKGROUND pages of growth: a checkpoint per commit would fsync the
        // database file as often as the WAL.
        if band <= REQUESTED_AT.with(Cell::get) {
            return;
        }
        REQUESTED_AT.with(|r| r.set(band));
        let mut state = self.shared.lock();
        if !state.requested {
            state.requested = true;
            self.shared.wake.notify_one();
        }
    }

    /// Waits until the thread has completed `n` checkpoints, or `limit` has passed; returns
    /// how many it has completed.
    #[cfg(test)]
    pub fn wait_done(&self, n: u64, limit: std::time::Duration) -> u64 {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .finished
            .wait_timeout_while(state, limit, |s| s.done < n)
            .unwrap_or_else(PoisonError::into_inner);
        state.done
    }

    /// Stops the thread (after the checkpoint it is running, if any) and waits for it.
    pub fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The thread: one checkpoint per wake-up, until stopped.
fn run(connector: &Connector, shared: &Shared) {
    let mut conn: Option<Connection> = None;
    loop {
        {
            let mut state = shared.lock();
            while !state.requested && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if state.stop {
                return;
            }
            state.requested = false;
        }
        if conn.is_none() {
            match connector.open(OpenFlags::SQLITE_OPEN_READ_WRITE) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    // The writer asks again after its next commit; past INLINE it checkpoints
                    // itself, so the WAL stays bounded.
                    tracing::warn!(error = %e, "cannot open the checkpoint connection");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        match passive(c) {
            Ok(()) => {
                shared.lock().done += 1;
                shared.finished.notify_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                conn = None;
            }
        }
    }
}
