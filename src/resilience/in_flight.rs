//! The concurrency cap's slots. A request holds a [`Slot`] while it is served; work that
//! outlives its request (a keyed create finishing in a task of its own) keeps a clone, so the
//! slot is free only when the last holder is done and `server.max_in_flight` bounds the work
//! the service does, not just the requests it is answering.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A fixed number of slots.
#[derive(Debug, Clone)]
pub struct Slots(Arc<Semaphore>);

/// One taken slot; cloning it shares the slot, which is given back when the last clone drops.
#[derive(Debug, Clone)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

impl Slots {
    /// `n` free slots.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }

    /// A slot, or `None` when all are taken (the caller refuses rather than waits).
    pub fn try_take(&self) -> Option<Slot> {
        self.0
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot(Arc::new(permit)))
    }
}
