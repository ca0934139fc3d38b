//! Heap-backed SPSC and MPMC endpoints for loom models (`--cfg shmlane_loom` only). They run the very
//! ring, wait and close code the shared-memory endpoints run; only the liveness probe is
//! absent (a model has no processes to die), so a peer is gone only once it closed.

use crate::error::{Corruption, PopError, PushError, TryPopError, TryPushError};
use crate::layout::entry_state;
use crate::ring::{self, mpmc, spsc};
use crate::wait::WaitMode;

/// A ring of `capacity` slots on the heap, split into its two ends.
pub fn spsc<T: bytemuck::Pod + Send + 'static>(capacity: u64) -> (Producer<T>, Consumer<T>) {
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

impl<T: bytemuck::Pod> Producer<T> {
    /// As `spsc::Producer::set_express`.
    pub fn set_express(&mut self, express: bool) {
        self.ring.set_express(express);
    }

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

impl<T: bytemuck::Pod> Consumer<T> {
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

/// An MPMC ring on the heap with `registry_len` entries, to register endpoints on.
pub struct Mpmc<T> {
    mem: mpmc::Mem<T>,
    next_entry: usize,
}

/// An MPMC ring of `capacity` slots with room for `registry_len` endpoints.
pub fn mpmc<T: bytemuck::Zeroable + Copy + Send + 'static>(
    capacity: u64,
    registry_len: u32,
) -> Mpmc<T> {
    Mpmc {
        mem: mpmc::heap::<T>(capacity, registry_len),
        next_entry: 0,
    }
}

impl<T: Copy> Mpmc<T> {
    fn register(&mut self, role: u32) -> Endpoint<T> {
        let entry = self.next_entry;
        self.next_entry += 1;
        Endpoint {
            core: mpmc::Endpoint::register(self.mem.clone(), entry, role, &mut always_alive),
        }
    }

    /// As `mpmc::Channel::producer`.
    pub fn producer(&mut self) -> Endpoint<T> {
        self.register(entry_state::PRODUCER)
    }

    /// As `mpmc::Channel::consumer`.
    pub fn consumer(&mut self) -> Endpoint<T> {
        self.register(entry_state::CONSUMER)
    }
}

fn always_alive(_: usize) -> bool {
    true
}

/// An MPMC endpoint of a model ring (a producer or a consumer: use the calls of its role).
pub struct Endpoint<T> {
    core: mpmc::Endpoint<T>,
}

impl<T: Copy> Endpoint<T> {
    /// As `mpmc::Producer::try_push`.
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        match self.core.try_claim_slot(false, &mut always_alive) {
            Some(Ok(pos)) => {
                self.core.put(pos, value);
                Ok(())
            }
            Some(Err(e)) => Err(e.with(value)),
            None => Err(TryPushError::Full(value)),
        }
    }

    /// As `mpmc::Producer::push`, parking at once when full.
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.core
            .push_until(value, WaitMode::Park, None, &mut always_alive)
    }

    /// As `mpmc::Consumer::try_pop`.
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        let pos = self
            .core
            .try_claim(false, &mut always_alive)
            .unwrap_or(Err(TryPopError::Empty))?;
        Ok(self.core.take(pos))
    }

    /// As `mpmc::Consumer::pop`, parking at once when empty.
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.core.pop_until(WaitMode::Park, None, &mut always_alive)
    }

    /// As dropping the endpoint.
    pub fn close(self) {
        self.core.unregister();
    }
}
