//! Multi-producer multi-consumer channels of `T: Pod` between processes: every item is
//! delivered to exactly one consumer.
//!
//! ```no_run
//! use shmlane::{mpmc, Backing};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chan = mpmc::Channel::<u64>::create(Backing::shm("doc-jobs"), 1024)?;
//! let mut tx = chan.producer()?; // any number, in any number of processes
//! tx.push(7)?;
//! let mut rx = mpmc::Channel::<u64>::open(Backing::shm("doc-jobs"))?.consumer()?;
//! assert_eq!(rx.pop()?, 7);
//! # Ok(()) }
//! ```
//!
//! # Endpoints and disconnects
//! `producer()` and `consumer()` may be called any number of times, in any number of
//! processes, up to the registry size fixed at create ([`Builder::registry_len`], default
//! 64; `Error::RegistryFull` beyond). Each endpoint holds a liveness lock on its registry
//! entry; the entry of one that closed or died is reused. Consumers get `Disconnected` once
//! every producer is gone and the ring is drained; producers once every consumer is gone.
//! While no endpoint of a role has ever registered, the other side waits for it.
//!
//! # Polling with `try_` calls
//! `try_push` and `try_pop` never block. When one misses 8 times in a row with no progress
//! on its side of the ring, and then every 4th miss, it yields the CPU (`sched_yield`)
//! before it returns: with more producers and consumers than CPUs, the one that would make
//! room or publish may be waiting for this CPU, and a caller spinning on misses would hold
//! it for a whole time slice. On a CPU of its own the yield returns at once.
//!
//! # When a process dies mid-operation
//! - A producer that dies after claiming a slot and before publishing it leaves a hole. A
//!   consumer that reaches it finds the producer dead (its lock is gone), skips the slot and
//!   returns [`PopError::ProducerDied`] (or [`TryPopError::ProducerDied`], or from
//!   `pop_slice`, [`ChunkError::ProducerDied`]) with its position, once; the next pop
//!   continues with the items after it. A `pop_slice` that popped items before reaching the
//!   hole returns them, and the next pop reports the hole. Every item that was published,
//!   before or after the hole, is delivered exactly once. A blocked consumer notices within
//!   about 50 ms.
//! - A consumer that dies after taking an item and before releasing its slot loses that one
//!   item (it was taken, never delivered). Producers that find the ring full because of it
//!   free the slot when they notice the consumer is dead, and carry on; no error is reported.
//! - Nothing needs recreating: the channel keeps working for the survivors. A process that
//!   wants a clean slate after a crash can drain what is published and create a new channel.

use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::channel::{Builder, Flavor, Options, ProbeClock, RoleLock, Shared};
use crate::error::{ChunkError, Error, PopError, PushError, TryPopError, TryPushError};
use crate::layout::{entry_state, type_tag_of, Expected, Geometry, Kind, MpmcSlot};
use crate::region::{lock, Backing};
use crate::ring::mpmc::Endpoint;
use crate::sync::yield_now;
use crate::wait::{deadline, WaitMode};

/// A handle to an MPMC channel region.
pub struct Channel<T> {
    shared: Arc<Shared>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> Flavor for Channel<T> {
    fn expected(options: &Options) -> Expected {
        Expected {
            kind: Kind::Mpmc,
            slot_size: core::mem::size_of::<T>(),
            slot_align: core::mem::align_of::<T>(),
            stride: core::mem::size_of::<MpmcSlot<T>>(),
            type_tag: options.type_tag.unwrap_or_else(type_tag_of::<T>),
        }
    }

    fn geometry(options: &Options, capacity: u64) -> Result<Geometry, Error> {
        if options.registry_len == 0 {
            return Err(Error::InvalidArgument(
                "an MPMC registry needs at least one entry".into(),
            ));
        }
        let e = Self::expected(options);
        Geometry::new(
            Kind::Mpmc,
            capacity,
            e.slot_size,
            e.slot_align,
            e.stride,
            e.type_tag,
            options.registry_len,
        )
    }

    fn init(shared: &Arc<Shared>) {
        crate::ring::mpmc::init(&shared.ring_mem::<MpmcSlot<T>>());
    }

    crate::channel::flavor_plumbing!();
}

impl<T: Pod> Channel<T> {
    crate::channel::channel_methods!();

    /// Registers a new producer. `Error::RegistryFull` when every entry is held by a live
    /// endpoint.
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        Ok(Producer(self.endpoint(entry_state::PRODUCER)?))
    }

    /// Registers a new consumer. `Error::RegistryFull` when every entry is held by a live
    /// endpoint.
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        Ok(Consumer {
            registered: self.endpoint(entry_state::CONSUMER)?,
            hole: None,
        })
    }

    fn endpoint(&self, role: u32) -> Result<Registered<T>, Error> {
        let mem = self.shared.ring_mem();
        Endpoint::check_positions(&mem)?;
        let (lock, entry) = self.shared.claim_entry()?;
        let mut alive = |i: usize| lock.held_elsewhere(lock::REGISTRY + i as u64);
        let core = Endpoint::register(mem, entry, role, &mut alive);
        Ok(Registered {
            core,
            lock,
            entry,
            wait: WaitMode::default(),
            probe: ProbeClock::new(),
        })
    }
}

/// What producers and consumers share: the ring endpoint, its registry entry and lock.
struct Registered<T: Pod> {
    core: Endpoint<T>,
    lock: RoleLock,
    entry: usize,
    wait: WaitMode,
    probe: ProbeClock,
}

impl<T: Pod> Registered<T> {
    /// Whether entry `i`'s endpoint lives: ours does; another's if its lock is held.
    fn alive(lock: &RoleLock, mine: usize) -> impl FnMut(usize) -> bool + '_ {
        move |i| i == mine || lock.held_elsewhere(lock::REGISTRY + i as u64)
    }

    /// Called when a non-blocking call found no room (or nothing to take): whether a lock
    /// probe for dead peers is due now. A long run of misses yields the CPU: when parties
    /// outnumber CPUs, the one that would make room or publish may be waiting for this one,
    /// and without the yield every party that waits on it spins out its time slice (on two
    /// CPUs with two producers and two consumers, runs stalled for 8 ms at a time, dozens
    /// in a row). With nothing else to run, the yield returns at once.
    fn missed(&mut self) -> bool {
        if self.probe.due_at(self.core.side_pos()) {
            return true;
        }
        if self.probe.stalled() {
            yield_now();
        }
        false
    }
}

impl<T: Pod> Drop for Registered<T> {
    fn drop(&mut self) {
        // Before the lock (a later field) goes: a clean close is never taken for a death.
        self.core.unregister();
    }
}

/// A sending end. `Send`, not `Sync`: one thread uses it at a time; make one per thread.
pub struct Producer<T: Pod>(Registered<T>);

impl<T: Pod> Producer<T> {
    /// Pushes `value` if there is room, without waiting. Never blocks; a caller that keeps
    /// finding the ring full has the CPU given away now and then (module docs).
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        if self.push_at_once(value) {
            return Ok(());
        }
        match self.claim_slot_slow() {
            Ok(pos) => {
                self.0.core.put(pos, value);
                Ok(())
            }
            Err(e) => Err(e.with(value)),
        }
    }

    /// Every push's common case, small enough to inline: consumers are there and a slot is
    /// claimed at once. `false` if not (nothing was claimed).
    #[inline(always)]
    fn push_at_once(&self, value: T) -> bool {
        let core = &self.0.core;
        let Some(claimed) = core.claim_slot_if_easy() else {
            return false;
        };
        core.put_at(claimed, value);
        true
    }

    /// `try_push` past its common case: a full ring, lost CASes, or no consumers. The
    /// claimed position when there is room.
    #[inline(never)]
    fn claim_slot_slow(&mut self) -> Result<u64, TryPushError<()>> {
        let r = &mut self.0;
        if let Some(result) = r.core.try_claim_slot(false, &mut |_| true) {
            return result;
        }
        // Full: worth a (rate-limited) look for dead consumers.
        if !r.missed() {
            return Err(TryPushError::Full(()));
        }
        r.core
            .try_claim_slot(true, &mut Registered::<T>::alive(&r.lock, r.entry))
            .unwrap_or(Err(TryPushError::Full(())))
    }

    /// Pushes `value`, waiting for room as the [`WaitMode`] says; fails with the value once
    /// every consumer is gone.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.push_until(value, None)
    }

    /// Like [`push`](Self::push), giving up with `PushError::Timeout(value)` after `timeout`.
    #[inline]
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_until(value, deadline(timeout))
    }

    #[inline]
    fn push_until(&mut self, value: T, deadline: Option<Instant>) -> Result<(), PushError<T>> {
        // A push that need not wait costs what `try_push`'s does: the wait's set-up, run on
        // every call, had a push and a pop at 14.0 ns against 7.3 (`cargo bench --bench
        // calls`). The value is moved once, into the slot, either way.
        if self.push_at_once(value) {
            return Ok(());
        }
        match self.claim_slot_waiting(deadline) {
            Ok(pos) => {
                self.0.core.put(pos, value);
                Ok(())
            }
            Err(e) => Err(e.with(value)),
        }
    }

    /// `push_until` past its common case: waits for room (the claimed position), or finds
    /// the consumers gone.
    #[inline(never)]
    fn claim_slot_waiting(&mut self, deadline: Option<Instant>) -> Result<u64, PushError<()>> {
        self.0.probe.prime();
        let r = &self.0;
        r.core.claim_slot_until(
            r.wait,
            deadline,
            &mut Registered::<T>::alive(&r.lock, r.entry),
        )
    }

    /// Pushes values from the front of `values` until the ring is full; returns how many.
    /// An error only when nothing was pushed, so the count of what went in is never lost
    /// (a lasting failure shows again on the next call).
    pub fn push_slice(&mut self, values: &[T]) -> Result<usize, ChunkError> {
        for (pushed, value) in values.iter().enumerate() {
            let error = match self.try_push(*value) {
                Ok(()) => continue,
                Err(TryPushError::Full(_)) => return Ok(pushed),
                Err(TryPushError::Disconnected(_)) => ChunkError::Disconnected,
                Err(TryPushError::Corrupt(_, c)) => ChunkError::Corrupt(c),
            };
            return if pushed > 0 { Ok(pushed) } else { Err(error) };
        }
        Ok(values.len())
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.0.core.mem().capacity() as usize
    }

    /// How blocking calls wait (default [`WaitMode::Adaptive`]).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.0.wait = mode;
    }
}

/// A receiving end. `Send`, not `Sync`: one thread uses it at a time; make one per thread.
pub struct Consumer<T: Pod> {
    registered: Registered<T>,
    /// A hole `pop_slice` skipped after it had popped values: reported by the next call.
    hole: Option<u64>,
}

impl<T: Pod> Consumer<T> {
    /// Pops a value if one is ready, without waiting. Never blocks; a caller that keeps
    /// finding the ring empty has the CPU given away now and then (module docs).
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        if let Some(position) = self.hole_left() {
            return Err(TryPopError::ProducerDied { position });
        }
        let core = &self.registered.core;
        if let Some(claimed) = core.dequeue_at_once() {
            return Ok(core.take_at(claimed));
        }
        let pos = self.claim_slow()?;
        Ok(self.registered.core.take(pos))
    }

    /// The hole `pop_slice` left for the next pop to report, if any; it is reported once.
    #[inline(always)]
    fn hole_left(&mut self) -> Option<u64> {
        // Not `Option::take()`: that stores on every pop.
        let position = self.hole?;
        self.hole = None;
        Some(position)
    }

    /// `try_pop` past its common case: an empty ring, a pending slot, a lost CAS, or a
    /// dead producer's tombstone. The claimed position when there is a value to take.
    #[inline(never)]
    fn claim_slow(&mut self) -> Result<u64, TryPopError> {
        let r = &mut self.registered;
        if let Some(result) = r.core.try_claim(false, &mut |_| true) {
            return result;
        }
        // Empty (or a slow producer's slot): worth a (rate-limited) look for dead producers.
        if !r.missed() {
            return Err(TryPopError::Empty);
        }
        r.core
            .try_claim(true, &mut Registered::<T>::alive(&r.lock, r.entry))
            .unwrap_or(Err(TryPopError::Empty))
    }

    /// Pops a value, waiting as the [`WaitMode`] says. `Disconnected` once every producer
    /// is gone and the ring drained; `ProducerDied` once per hole a dead producer left.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.pop_until(None)
    }

    /// Like [`pop`](Self::pop), giving up with `PopError::Timeout` after `timeout`.
    #[inline]
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        self.pop_until(deadline(timeout))
    }

    #[inline]
    fn pop_until(&mut self, deadline: Option<Instant>) -> Result<T, PopError> {
        if let Some(position) = self.hole_left() {
            return Err(PopError::ProducerDied { position });
        }
        // As in `Producer::push_until`: a pop that need not wait costs what `try_pop`'s does,
        // and one `take` serves both ways (a large T is copied once).
        let pos = match self.registered.core.dequeue_at_once() {
            Some(claimed) => claimed.pos(),
            None => self.claim_waiting(deadline)?,
        };
        Ok(self.registered.core.take(pos))
    }

    /// `pop_until` past its common case: waits for a value (the claimed position), or finds
    /// the producers gone.
    #[inline(never)]
    fn claim_waiting(&mut self, deadline: Option<Instant>) -> Result<u64, PopError> {
        self.registered.probe.prime();
        let r = &self.registered;
        r.core.claim_until(
            r.wait,
            deadline,
            &mut Registered::<T>::alive(&r.lock, r.entry),
        )
    }

    /// Pops ready values into the front of `out` until the ring is empty; returns how many.
    /// An error only when nothing was popped: `Disconnected` once every producer is gone and
    /// the ring drained, `ProducerDied` for a hole. A hole met after some values is reported
    /// by the next pop (of any kind), so the values popped before it are not lost.
    pub fn pop_slice(&mut self, out: &mut [T]) -> Result<usize, ChunkError> {
        for (popped, slot) in out.iter_mut().enumerate() {
            let error = match self.try_pop() {
                Ok(value) => {
                    *slot = value;
                    continue;
                }
                Err(TryPopError::Empty) => return Ok(popped),
                Err(TryPopError::Disconnected) => ChunkError::Disconnected,
                Err(TryPopError::ProducerDied { position }) if popped > 0 => {
                    self.hole = Some(position);
                    return Ok(popped);
                }
                Err(TryPopError::ProducerDied { position }) => {
                    ChunkError::ProducerDied { position }
                }
                Err(TryPopError::Corrupt(c)) => ChunkError::Corrupt(c),
            };
            // What was popped is the caller's; a lasting failure shows again next call.
            return if popped > 0 { Ok(popped) } else { Err(error) };
        }
        Ok(out.len())
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.registered.core.mem().capacity() as usize
    }

    /// How blocking calls wait (default [`WaitMode::Adaptive`]).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.registered.wait = mode;
    }
}
