//! The exporter thread: workers append finished spans to a bounded buffer (a short lock, never
//! a wait, and no wake-up per span); the thread takes the whole buffer every `export_interval`,
//! and the whole batches in it as soon as a batch of [`MAX_BATCH`] spans waits (or the whole
//! buffer, if smaller), and sends them in batches of at most that many. What cannot be buffered or delivered is dropped
//! and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use metrics::counter;

use super::SpanRecord;
use super::encode;
use super::transport::{Connect, Failed, Transport};
use crate::telemetry::metrics::SPANS_DROPPED;

/// Spans per export request: about 250 bytes each on the wire, so a request is about 512 KiB.
/// Each request waits for the collector's answer before the next is sent, so at one span per
/// 10 µs of a busy core the batch must be this large for the thread to keep up: with 512 it
/// dropped 39-63 % of the spans in the load test (`benches/RESULTS.md`).
pub(super) const MAX_BATCH: usize = 2048;

/// Largest request body sent, when it holds more than one span: a batch that encodes larger
/// goes out in halves. A client chooses its spans' user agent and path, so long ones must not
/// take a whole batch past a collector's limit (4 MiB by default for OTLP/gRPC), where it would
/// be refused with every other span in it.
pub(super) const MAX_BODY: usize = 1 << 20;

/// Quiet period between two warnings about undeliverable spans.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the workers and the thread share.
#[derive(Debug)]
struct Shared {
    spans: Mutex<Vec<SpanRecord>>,
    capacity: usize,
    /// How many waiting spans wake the thread: a batch, or the whole buffer if smaller.
    batch: usize,
    closing: AtomicBool,
    thread: OnceLock<Thread>,
    warn: Warner,
}

impl Shared {
    fn spans(&self) -> MutexGuard<'_, Vec<SpanRecord>> {
        // A panic while holding the lock leaves a valid Vec: keep going with it.
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// Where spans go: the buffer the workers append to.
#[derive(Debug)]
pub(super) struct Queue(Arc<Shared>);

impl Queue {
    /// Buffers `span`, or drops and counts it when the buffer is full: never waits.
    pub(super) fn push(&self, span: SpanRecord) {
        let mut spans = self.0.spans();
        if spans.len() >= self.0.capacity {
            drop(spans);
            self.0.warn.dropped(1, "the export queue is full");
            return;
        }
        spans.push(span);
        let full_batch = spans.len() == self.0.batch;
        drop(spans);
        if full_batch {
            self.0.wake();
        }
    }
}

/// Stops the exporter thread after it has sent what is buffered.
#[derive(Debug)]
pub struct Stopper {
    shared: Arc<Shared>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Stopper {
    /// Sends what is buffered and stops the thread, waiting at most `timeout`. `false` if the
    /// thread did not finish in time (its spans are lost).
    pub(super) fn stop(self, timeout: Duration) -> bool {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake();
        self.done.recv_timeout(timeout).is_ok()
    }
}

/// Counts dropped spans and warns at most once a minute.
#[derive(Debug, Default)]
pub(super) struct Warner {
    last: Mutex<Option<Instant>>,
}

impl Warner {
    pub(super) fn dropped(&self, n: usize, error: &str) {
        counter!(SPANS_DROPPED).increment(n as u64);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped = n,
                error,
                "trace export failed; dropping spans (next warning in a minute at the earliest)"
            );
        }
    }
}

/// What the thread needs besides its queue.
pub(super) struct Setup {
    pub resource: Vec<u8>,
    pub scope: Vec<u8>,
    pub interval: Duration,
    pub queue_size: usize,
}

/// Starts the exporter thread.
pub(super) fn start(connect: Connect, setup: Setup) -> Result<(Queue, Stopper), String> {
    let shared = Arc::new(Shared {
        spans: Mutex::new(Vec::with_capacity(MAX_BATCH)),
        capacity: setup.queue_size.max(1),
        batch: setup.queue_size.clamp(1, MAX_BATCH),
        closing: AtomicBool::new(false),
        thread: OnceLock::new(),
        warn: Warner::default(),
    });
    let (done_tx, done) = std::sync::mpsc::sync_channel(1);
    let worker = Worker {
        shared: shared.clone(),
        taken: Vec::with_capacity(MAX_BATCH),
        last_len: std::cell::Cell::new(0),
        setup,
    };
    let handle = std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let transport = connect().unwrap_or_else(|e| Box::new(Failed(e)));
            worker.run(transport);
            let _ = done_tx.send(());
        })
        .map_err(|e| format!("cannot start the trace exporter thread: {e}"))?;
    let _ = shared.thread.set(handle.thread().clone());
    Ok((Queue(shared.clone()), Stopper { shared, done }))
}

struct Worker {
    shared: Arc<Shared>,
    /// The buffer taken from the workers, swapped back in empty next time.
    taken: Vec<SpanRecord>,
    last_len: std::cell::Cell<usize>,
    setup: Setup,
}

impl Worker {
    fn run(mut self, mut transport: Box<dyn Transport>) {
        let mut next = Instant::now() + self.setup.interval;
        loop {
            let closing = self.shared.closing.load(Ordering::Acquire);
            let due = Instant::now() >= next;
            {
                let mut spans = self.shared.spans();
                let len = spans.len();
                // Woken by a full batch, take whole batches only: what is left of one waits for
                // the next batch or the interval rather than going out as a request of its own.
                let whole = if closing || due {
                    len
                } else {
                    len - len % self.shared.batch
                };
                if whole == len {
                    std::mem::swap(&mut *spans, &mut self.taken);
                } else {
                    self.taken.extend(spans.drain(..whole));
                }
            }
            for batch in self.taken.chunks(MAX_BATCH) {
                self.export(&mut *transport, batch);
            }
            self.taken.clear();
            if due {
                next = Instant::now() + self.setup.interval;
            }
            if closing {
                return;
            }
            // A batch that filled meanwhile has already unparked this thread, so this returns at
            // once; otherwise it sleeps until the interval or a full batch. A spurious wake-up
            // only loops.
            std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
        }
    }

    fn export(&self, transport: &mut dyn Transport, batch: &[SpanRecord]) {
        // The body is handed to the transport; the next one starts at the last one's size.
        let mut body = Vec::with_capacity(self.last_len.get());
        encode::request(&mut body, &self.setup.resource, &self.setup.scope, batch);
        if body.len() > MAX_BODY && batch.len() > 1 {
            let (first, second) = batch.split_at(batch.len() / 2);
            self.export(transport, first);
            self.export(transport, second);
            return;
        }
        self.last_len.set(body.len());
        if let Err(e) = transport.send(body) {
            self.shared.warn.dropped(batch.len(), &e);
        }
    }
}
