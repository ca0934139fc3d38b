//! Heap-backed SPSC endpoints for loom models (`--cfg shmlane_loom` only). They run the very
//! ring, wait and close code the shared-memory endpoints run; only the liveness probe is
//! absent (a model has no processes to die), so a peer is gone only once it closed.

use crate::error::{Corruption, PopError, PushError, TryPopError, TryPushError};
use crate::ring::{self, spsc};
use crate::wait::WaitMode;

/// A ring of `capacity` slots on the heap, split into its two ends.
pub fn spsc<T: bytemuck::Zeroable + Copy + Send + 'static>(
    capacity: u64,
) -> (Producer<T>, Consumer<T>) {
    let mem = spsc::heap::<T>(capacity);
    let producer = spsc::Producer::attach(mem.clone()).expect("a new ring is consistent");
    let consumer = spsc::Consumer::attach(mem).expect("a new ring is consistent");
    (Producer { ring: producer }, Consumer { ring: consumer })
}

fn never_died() -> bool {
    false
}

/// The producer end of a model ring.
pub struct Producer<T> {
    ring: spsc::Producer<T>,
}

impl<T: Copy> Producer<T> {
    /// As `spsc::Producer::try_push`.
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        self.ring
            .try_push(value, false, &mut never_died)
            .unwrap_or(Err(TryPushError::Full(value)))
    }

    /// As `spsc::Producer::push`, parking at once when full.
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.ring
            .push_until(value, WaitMode::Park, None, &mut never_died)
    }

    /// As `spsc::Producer::push_slice` (one publication for the whole run).
    pub fn push_slice(&mut self, values: &[T]) -> Result<usize, Corruption> {
        self.ring.push_slice(values)
    }

    /// As dropping `spsc::Producer`.
    pub fn close(self) {
        let header = self.ring.mem().header();
        ring::close(header, &header.producer_state);
    }
}

/// The consumer end of a model ring.
pub struct Consumer<T> {
    ring: spsc::Consumer<T>,
}

impl<T: Copy> Consumer<T> {
    /// As `spsc::Consumer::try_pop`.
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        self.ring
            .try_pop(false, &mut never_died)
            .unwrap_or(Err(TryPopError::Empty))
    }

    /// As `spsc::Consumer::pop`, parking at once when empty.
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.ring.pop_until(WaitMode::Park, None, &mut never_died)
    }

    /// As `spsc::Consumer::pop_slice` (one release for the whole run).
    pub fn pop_slice(&mut self, out: &mut [T]) -> Result<usize, Corruption> {
        self.ring.pop_slice(out)
    }

    /// As dropping `spsc::Consumer`.
    pub fn close(self) {
        let header = self.ring.mem().header();
        ring::close(header, &header.consumer_state);
    }
}
