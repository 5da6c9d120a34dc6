//! Log lines to stdout in batches. Writing each line with its own `write(2)` under stdout's
//! lock costs a system call per request (the access line); here lines are appended to a
//! buffer that is written out when it passes [`BATCH`] bytes, and by a flusher thread every
//! [`PERIOD`], so a line reaches the collector at most that late. [`flush`] empties it at
//! exit. Nothing is dropped: when stdout blocks, the writer that filled the batch waits, as
//! it would with a plain `println!`.

use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes that make a batch worth a write of its own.
pub const BATCH: usize = 32 * 1024;
/// Longest a line waits in the buffer.
pub const PERIOD: Duration = Duration::from_millis(50);

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Held across take-and-write, so batches reach stdout in the order they were filled.
    out: Mutex<io::Stdout>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    SHARED.get_or_init(|| {
        // The flusher runs for the life of the process; if it cannot start, lines still leave
        // when a batch fills and at exit.
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(PERIOD);
                    flush();
                }
            });
        Shared {
            pending: Mutex::new(Vec::with_capacity(BATCH)),
            out: Mutex::new(io::stdout()),
        }
    })
}

/// Writes out whatever is buffered.
pub fn flush() {
    let Some(s) = SHARED.get() else { return };
    write_out(s);
}

/// Takes the pending bytes and writes them, holding the output lock throughout (always taken
/// before the buffer's) so batches keep their order.
fn write_out(s: &Shared) {
    let mut out = s
        .out
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut pending = s
        .pending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if pending.is_empty() {
        return;
    }
    let batch = std::mem::replace(&mut *pending, Vec::with_capacity(BATCH));
    drop(pending);
    // stdout gone (closed pipe): nothing useful to do with the error from a log writer.
    let _ = out.write_all(&batch).and_then(|()| out.flush());
}

/// The `MakeWriter` for the JSON log layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct BufferedStdout;

impl<'a> MakeWriter<'a> for BufferedStdout {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(shared())
    }
}

/// Appends one formatted event to the batch.
pub struct LineWriter(&'static Shared);

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut pending = self
            .0
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.extend_from_slice(data);
        if pending.len() >= BATCH {
            // Release the buffer lock first: the output lock is always taken before it.
            drop(pending);
            write_out(self.0);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
