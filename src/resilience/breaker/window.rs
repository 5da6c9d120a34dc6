//! The breaker's record of recent calls.

use std::collections::VecDeque;

use super::Outcome;

/// Recent outcomes with their failures and slow calls counted as they come and go, so that
/// a verdict costs the same with a window of 5 calls or of 5,000.
#[derive(Debug, Default)]
pub(super) struct Window {
    calls: VecDeque<Outcome>,
    pub(super) failed: usize,
    pub(super) slow: usize,
}

impl Window {
    pub(super) fn push(&mut self, outcome: Outcome) {
        self.failed += usize::from(outcome.failed);
        self.slow += usize::from(outcome.slow);
        self.calls.push_back(outcome);
    }

    pub(super) fn pop_front(&mut self) {
        if let Some(old) = self.calls.pop_front() {
            self.failed -= usize::from(old.failed);
            self.slow -= usize::from(old.slow);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}
