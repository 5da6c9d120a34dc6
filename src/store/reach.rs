//! Whether a request reached the database, and how that went: what the circuit breaker
//! counts. The breaker layer opens a [`Reach`] around each request; every store operation
//! notes in it that it ran and whether the database failed it. A request that never reached
//! the store (refused as unauthenticated, malformed or invalid) then counts for nothing.
//!
//! Only trouble on the database side ([`StoreError::Unavailable`]: connection errors, pool and
//! statement timeouts, transient server errors) is a failure; a row that does not decode or a
//! constraint the code violated is a bug of ours (500), not the database's.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use super::StoreError;

const UNTOUCHED: u8 = 0;
const REACHED: u8 = 1;
const FAILED: u8 = 2;

tokio::task_local! {
    static CURRENT: Arc<Reach>;
}

/// What one request did with the database so far.
#[derive(Debug, Default)]
pub struct Reach(AtomicU8);

impl Reach {
    /// A fresh record: nothing reached yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Runs `fut` with `reach` as the current record (`None`: with no record, as background
    /// work runs).
    pub async fn scope<F: Future>(reach: Option<Arc<Self>>, fut: F) -> F::Output {
        match reach {
            Some(reach) => CURRENT.scope(reach, fut).await,
            None => fut.await,
        }
    }

    /// The current task's record, to carry into a task it spawns.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    /// `None` when the store was never reached, else whether the database failed a call.
    pub fn outcome(&self) -> Option<bool> {
        match self.0.load(Ordering::Acquire) {
            UNTOUCHED => None,
            state => Some(state == FAILED),
        }
    }

    /// A store operation starts.
    pub(super) fn started() {
        let _ = CURRENT.try_with(|r| {
            let _ =
                r.0.compare_exchange(UNTOUCHED, REACHED, Ordering::AcqRel, Ordering::Acquire);
        });
    }

    /// A store operation ended with `result`.
    pub(super) fn finished<T>(result: &Result<T, StoreError>) {
        if matches!(result, Err(StoreError::Unavailable(_))) {
            let _ = CURRENT.try_with(|r| r.0.store(FAILED, Ordering::Release));
        }
    }
}
