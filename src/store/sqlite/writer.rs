//! The one writer: a thread of its own that owns the only connection that writes, and
//! group-commits. It waits for a job, takes every job queued behind it (up to [`MAX_BATCH`]),
//! runs them in one transaction (a job of several statements in a savepoint of its own, so that
//! one failing job undoes only itself), commits once (one fsync for the batch, which keeps `synchronous = FULL`
//! affordable), and only then answers each caller: an answer means the write is durable.
//!
//! Because nothing else writes, the write path never meets `SQLITE_BUSY` from the service
//! itself (only from a process outside it that holds the lock), and the order in which jobs
//! commit is the order in which they ran, so the writer can give each new order its place
//! (`created_at`) in commit order from a clock it keeps in memory.
//!
//! The queue is bounded (`database.write_queue`): a full queue is refused at once
//! ([`StoreError::Busy`], 503 with `Retry-After`), never waited on. A job whose caller has gone
//! away by the time its turn comes (a client that gave up) is skipped: it writes nothing.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::readers::Readers;
use super::{Connector, from_sqlite};
use crate::store::{StoreError, commit_time, sql};

/// Most jobs committed together.
const MAX_BATCH: usize = 512;

/// What a job may use: the write connection, inside the batch's transaction, and the clock
/// that places new orders.
pub(super) struct Session<'c> {
    /// The write connection.
    pub conn: &'c Connection,
    clock: &'c mut Clock,
}

impl Session<'_> {
    /// The place of an order inserted now: after every order committed or queued before it.
    pub fn place(&mut self) -> Result<DateTime<Utc>, StoreError> {
        if self.clock.newest.is_none() {
            let newest: Option<String> = self
                .conn
                .prepare_cached(sql::NEWEST_CREATED_AT)
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(from_sqlite)?;
            self.clock.newest = Some(newest.as_deref().and_then(crate::orders::timestamp::parse));
        }
        let newest = self.clock.newest.flatten();
        let at = commit_time(crate::orders::now(), newest);
        self.clock.newest = Some(Some(at));
        Ok(at)
    }
}

/// The newest order's place, loaded from the database on first use (`None`: not yet loaded;
/// `Some(None)`: no orders).
#[derive(Debug, Default)]
struct Clock {
    newest: Option<Option<DateTime<Utc>>>,
}

/// One queued write.
trait Work: Send {
    /// Whether the job runs several statements that must stand or fall together (it then runs
    /// in a savepoint of its own). A single statement needs none: SQLite undoes a failed
    /// statement by itself, and a savepoint costs a copy of every page the job touches.
    fn atomic(&self) -> bool;
    /// Whether the caller has gone away (then the job is skipped).
    fn abandoned(&self) -> bool;
    /// Runs the job; `false` when it failed (its savepoint is rolled back).
    fn run(&mut self, session: &mut Session<'_>) -> bool;
    /// Answers the caller: its own result if the batch committed, else `failed`.
    fn answer(self: Box<Self>, failed: Option<&StoreError>);
}

struct Job<T, F> {
    atomic: bool,
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Work for Job<T, F>
where
    T: Send,
    F: FnOnce(&mut Session<'_>) -> Result<T, StoreError> + Send,
{
    fn atomic(&self) -> bool {
        self.atomic
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(&mut self, session: &mut Session<'_>) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let result = op(session);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failed: Option<&StoreError>) {
        let result = match (self.result, failed) {
            // A job's own error stands, whatever happened to the batch.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Some(e)) | (None, Some(e)) => Err(e.again()),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Closed),
        };
        // The caller may be gone: then nobody wants the answer.
        let _ = self.reply.send(result);
    }
}

enum Message {
    /// A write for the next batch.
    Batch(Box<dyn Work>),
    /// A write that runs alone and manages its own transactions (migrations).
    Alone(Box<dyn Work>),
    /// Finish what is queued, then stop.
    Stop,
}

/// The handle to the writer thread.
#[derive(Debug)]
pub(super) struct Writer {
    queue: SyncSender<Message>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the thread; it opens its connection when the first job arrives (and again after
    /// a failure), so that a bad path or a missing disk shows as errors, not as a failed start.
    pub fn start(
        connector: Connector,
        queue: usize,
        readers: Arc<Readers>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(queue.max(1));
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(&connector, &rx, &readers))?;
        Ok(Self {
            queue: tx,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Queues `op`, one statement (or reads and one statement), for the next batch and waits
    /// for its durable result.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(op, false, Message::Batch).await
    }

    /// As [`Writer::write`], for an `op` of several statements: if one fails, the others are
    /// undone too.
    pub async fn write_atomic<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(op, true, Message::Batch).await
    }

    /// Runs `op` alone, outside any batch (it manages its own transactions).
    pub async fn alone<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.send(op, false, Message::Alone).await
    }

    async fn send<T, F>(
        &self,
        op: F,
        atomic: bool,
        kind: fn(Box<dyn Work>) -> Message,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Session<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            atomic,
            op: Some(op),
            result: None,
            reply,
        });
        match self.queue.try_send(kind(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        answer.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Lets the queued jobs finish, then stops the thread and waits for it.
    pub fn stop(&self) {
        // A full queue drains on its own; Stop waits its turn behind it.
        let _ = self.queue.send(Message::Stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// The thread: batches until `Stop`, or until every handle is gone.
fn run(connector: &Connector, rx: &Receiver<Message>, readers: &Readers) {
    let mut conn: Option<Connection> = None;
    let mut clock = Clock::default();
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let mut batch = match first {
            Message::Stop => return,
            Message::Alone(job) => {
                alone(connector, &mut conn, &mut clock, job, readers);
                continue;
            }
            Message::Batch(job) => vec![job],
        };
        // Woken by the first write, give the threads that are producing more a turn before
        // taking the batch: on a busy core that lets a whole round of requests queue up behind
        // one commit (one fsync) instead of committing them one by one as each wakes us.
        // As long as each turn brings more, give another (a few at most).
        for _ in 0..4 {
            let before = batch.len();
            std::thread::yield_now();
            while next.is_none() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Message::Batch(job)) => batch.push(job),
                    Ok(other) => next = Some(other),
                    Err(_) => break,
                }
            }
            if batch.len() == before || next.is_some() || batch.len() >= MAX_BATCH {
                break;
            }
        }
        // Looked up per batch: the thread starts before the metrics recorder is installed.
        metrics::histogram!(crate::telemetry::metrics::DB_WRITE_BATCH).record(batch.len() as f64);
        commit(connector, &mut conn, &mut clock, batch, readers);
    }
}

/// The write connection, opened if need be.
fn connection<'c>(
    connector: &Connector,
    conn: &'c mut Option<Connection>,
) -> Result<&'c Connection, StoreError> {
    if conn.is_none() {
        *conn = Some(connector.open_writer()?);
    }
    conn.as_ref().ok_or(StoreError::Closed)
}

/// Runs `batch` in one transaction and answers every job after the commit.
fn commit(
    connector: &Connector,
    slot: &mut Option<Connection>,
    clock: &mut Clock,
    batch: Vec<Box<dyn Work>>,
    readers: &Readers,
) {
    let mut batch: Vec<Box<dyn Work>> = batch.into_iter().filter(|j| !j.abandoned()).collect();
    if batch.is_empty() {
        return;
    }
    let conn = match connection(connector, slot) {
        Ok(conn) => conn,
        Err(e) => return batch.into_iter().for_each(|j| j.answer(Some(&e))),
    };
    let started = std::time::Instant::now();
    let outcome = conn.execute_batch("BEGIN IMMEDIATE").map_err(from_sqlite);
    if let Err(e) = outcome {
        return batch.into_iter().for_each(|j| j.answer(Some(&e)));
    }
    let mut session = Session { conn, clock };
    let committed = run_jobs(&mut session, &mut batch)
        .and_then(|()| session.conn.execute_batch("COMMIT").map_err(from_sqlite));
    if let Err(e) = &committed {
        // The batch is lost (disk full, I/O error): nothing of it is stored, and the clock may
        // have moved past places nobody holds, which only leaves a gap. The connection is
        // opened afresh for the next batch.
        let _ = conn.execute_batch("ROLLBACK");
        tracing::warn!(error = %e, jobs = batch.len(), "a write batch failed to commit");
        *slot = None;
    }
    // Before the answers, so that a caller who has heard of its write finds it counted.
    metrics::histogram!(crate::telemetry::metrics::DB_WRITE_COMMIT_DURATION)
        .record(started.elapsed().as_secs_f64());
    let failed = committed.err();
    if failed.is_none() {
        // Before anyone hears of the commit, so that their next read sees it.
        readers.committed();
    }
    for job in batch {
        job.answer(failed.as_ref());
    }
}

/// Runs each job; an atomic one in a savepoint of its own, so that a failing job undoes only
/// its own statements. A job whose caller went away while the batch waited for the lock is
/// skipped.
fn run_jobs(session: &mut Session<'_>, batch: &mut [Box<dyn Work>]) -> Result<(), StoreError> {
    for job in batch.iter_mut().filter(|j| !j.abandoned()) {
        if !job.atomic() {
            job.run(session);
            continue;
        }
        session
            .conn
            .execute_batch("SAVEPOINT job")
            .map_err(from_sqlite)?;
        let undo = if job.run(session) {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        session.conn.execute_batch(undo).map_err(from_sqlite)?;
    }
    Ok(())
}

/// Runs a job that manages its own transactions, such as the migrations.
fn alone(
    connector: &Connector,
    slot: &mut Option<Connection>,
    clock: &mut Clock,
    mut job: Box<dyn Work>,
    readers: &Readers,
) {
    let conn = match connection(connector, slot) {
        Ok(conn) => conn,
        Err(e) => return job.answer(Some(&e)),
    };
    let mut session = Session { conn, clock };
    job.run(&mut session);
    // What the job wrote may change the newest order (a migration that loads data), and what
    // readers see.
    clock.newest = None;
    readers.committed();
    job.answer(None);
}
