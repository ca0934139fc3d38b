//! Single-producer single-consumer channels of `T: Pod` between processes.
//!
//! ```no_run
//! use shmlane::{spsc, Backing};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Process A
//! let chan = spsc::Channel::<u64>::create(Backing::shm("doc-ticks"), 1024)?;
//! let mut tx = chan.producer()?;
//! tx.push(42)?;
//!
//! // Process B
//! let chan = spsc::Channel::<u64>::open(Backing::shm("doc-ticks"))?;
//! let mut rx = chan.consumer()?;
//! assert_eq!(rx.pop()?, 42);
//! # Ok(()) }
//! ```
//!
//! # Roles and disconnects
//! One live producer and one live consumer at a time, each holding an OFD lock on the
//! region's file. Dropping an endpoint closes its role; a killed process's lock is released by
//! the kernel, which the peer notices (within [`wait::PARK_SLICE`](crate::WaitMode) when
//! blocked). The consumer always drains every item committed before the producer went away,
//! and only then gets `Disconnected`. A role may be claimed again after its endpoint closed or
//! died: a new consumer continues at the first item the old one did not release, so nothing
//! committed is lost (an item read through a [`ReadChunk`] that was not released is delivered
//! again).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::channel::{
    peer_state, Builder, Flavor, Options, PeerState, ProbeClock, RoleLock, Shared,
};
use crate::error::{ChunkError, Error, PopError, PushError, TryPopError, TryPushError};
use crate::layout::{type_tag_of, Expected, Geometry, Header, Kind};
use crate::region::{lock, Backing};
use crate::ring::{self as rings, spsc as ring};
use crate::sync::AtomicU32;
use crate::wait::{deadline, WaitMode};

/// A handle to an SPSC channel region. Cheap to keep; endpoints keep the region mapped on
/// their own.
pub struct Channel<T> {
    shared: Arc<Shared>,
    _type: PhantomData<fn() -> T>,
}

impl<T: Pod> Flavor for Channel<T> {
    fn expected(options: &Options) -> Expected {
        Expected {
            kind: Kind::Spsc,
            slot_size: core::mem::size_of::<T>(),
            slot_align: core::mem::align_of::<T>(),
            stride: core::mem::size_of::<T>(),
            type_tag: options.type_tag.unwrap_or_else(type_tag_of::<T>),
        }
    }

    fn geometry(options: &Options, capacity: u64) -> Result<Geometry, Error> {
        let e = Self::expected(options);
        Geometry::new(
            Kind::Spsc,
            capacity,
            e.slot_size,
            e.slot_align,
            e.stride,
            e.type_tag,
            0,
        )
    }

    fn init(_: &Arc<Shared>) {
        // Zero-filled slots and counters are an empty ring.
    }

    crate::channel::flavor_plumbing!();
}

impl<T: Pod> Channel<T> {
    crate::channel::channel_methods!();

    /// Claims the producer role. `Error::RoleTaken` while another live producer holds it.
    pub fn producer(&self) -> Result<Producer<T>, Error> {
        let role = self.shared.claim(
            lock::PRODUCER,
            "producer",
            &self.shared.header().producer_state,
        )?;
        let ring = ring::Producer::attach(self.shared.ring_mem())?;
        Ok(Producer {
            ring,
            role,
            wait: WaitMode::default(),
            probe: ProbeClock::new(),
        })
    }

    /// Claims the consumer role. `Error::RoleTaken` while another live consumer holds it.
    pub fn consumer(&self) -> Result<Consumer<T>, Error> {
        let role = self.shared.claim(
            lock::CONSUMER,
            "consumer",
            &self.shared.header().consumer_state,
        )?;
        let ring = ring::Consumer::attach(self.shared.ring_mem())?;
        Ok(Consumer {
            ring,
            role,
            wait: WaitMode::default(),
            probe: ProbeClock::new(),
        })
    }
}

/// Whether the role on `byte` has died: its state word says ACTIVE but no live lock holds
/// it (a system call).
fn role_died(role: &RoleLock, byte: u64, state: &AtomicU32) -> bool {
    peer_state(role, byte, state) == PeerState::Died
}

/// The sending end. `Send`, not `Sync`: one thread uses it at a time.
pub struct Producer<T: Pod> {
    ring: ring::Producer<T>,
    role: RoleLock,
    wait: WaitMode,
    probe: ProbeClock,
}

impl<T: Pod> Producer<T> {
    fn header(&self) -> &Header {
        self.role.shared().header()
    }

    /// Whether the consumer is gone, probing its lock if `probe` (or if the rate limit
    /// allows, for `None`).
    fn consumer_gone(&mut self, probe: Option<bool>) -> bool {
        let probe = probe.unwrap_or_else(|| self.probe.due_at(self.ring.tail()));
        let (role, header) = (&self.role, self.role.shared().header());
        self.ring.consumer_gone(probe, &mut || {
            role_died(role, lock::CONSUMER, &header.consumer_state)
        })
    }

    /// Pushes `value` if there is room, without waiting.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), TryPushError<T>> {
        // The value goes to one of two places, both inline: its slot or the error. Passed to
        // a call out of line, it would be copied to the stack first on every push, and for a
        // 64-byte item those extra stores, queued behind the slot stores that wait for the
        // consumer's cache lines, halved the rate between two threads.
        if !self.room_at_once() {
            if let Err(e) = self.try_room_slow() {
                return Err(e.with(value));
            }
        }
        self.ring.push_into_room(value);
        Ok(())
    }

    /// Every push's common case, kept small enough to inline: the consumer is there and the
    /// cached head shows room.
    #[inline(always)]
    fn room_at_once(&self) -> bool {
        !self.ring.consumer_gone(false, &mut || false) && self.ring.has_cached_room()
    }

    /// `try_push` past its common case: the cached head shows no room, or the consumer
    /// closed. `Ok` when a fresh look found room.
    #[inline(never)]
    fn try_room_slow(&mut self) -> Result<(), TryPushError<()>> {
        match self.ring.try_room(1, false, &mut || false) {
            Some(result) => result,
            // Full: worth a (rate-limited) look at whether the consumer died.
            None if self.consumer_gone(None) => Err(TryPushError::Disconnected(())),
            None => Err(TryPushError::Full(())),
        }
    }

    /// Pushes `value`, waiting for room as the [`WaitMode`] says. Fails with the value when the
    /// consumer is gone.
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
        // every call, had a push and a pop at 4.1 ns against 3.1 (`cargo bench --bench
        // calls`). The value is moved once, into the slot, either way.
        if !self.room_at_once() {
            if let Err(e) = self.wait_room(deadline) {
                return Err(e.with(value));
            }
        }
        self.ring.push_into_room(value);
        Ok(())
    }

    /// `push_until` past its common case: waits for room, or finds the consumer gone.
    #[inline(never)]
    fn wait_room(&mut self, deadline: Option<Instant>) -> Result<(), PushError<()>> {
        self.probe.prime();
        let (role, header) = (&self.role, self.role.shared().header());
        let mut died = || role_died(role, lock::CONSUMER, &header.consumer_state);
        self.ring.wait_room(1, self.wait, deadline, &mut died)
    }

    /// Pushes as many values from the front of `values` as fit now, publishing them with one
    /// store, and returns how many (0 when full).
    pub fn push_slice(&mut self, values: &[T]) -> Result<usize, ChunkError> {
        if self.consumer_gone(Some(false)) {
            return Err(ChunkError::Disconnected);
        }
        let n = self.ring.push_slice(values).map_err(ChunkError::Corrupt)?;
        if n == 0 && !values.is_empty() && self.consumer_gone(None) {
            return Err(ChunkError::Disconnected);
        }
        Ok(n)
    }

    /// Reserves exactly `n` free slots for writing in place; `ChunkError::TooFew(free)` when
    /// fewer are free.
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.reserve(n, n)
    }

    /// Reserves between 1 and `max` free slots, as many as are free; `TooFew(0)` when full.
    pub fn write_chunk_upto(&mut self, max: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        self.reserve(1, max)
    }

    /// Waits (as the [`WaitMode`] says, at most `timeout` if given) until `n` slots are free,
    /// then reserves them.
    pub fn write_chunk_blocking(
        &mut self,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<WriteChunk<'_, T>, ChunkError> {
        let (role, header) = (&self.role, self.role.shared().header());
        let mut died = || role_died(role, lock::CONSUMER, &header.consumer_state);
        self.ring
            .wait_free(n, self.wait, timeout.and_then(deadline), &mut died)?;
        self.reserve(n, n)
    }

    fn reserve(&mut self, min: usize, max: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        if self.consumer_gone(Some(false)) {
            return Err(ChunkError::Disconnected);
        }
        // Asks for `max` (at least one), so a cached count short of it is refreshed: "as many
        // as are free".
        let free = self.ring.free(max.max(1)).map_err(ChunkError::Corrupt)?;
        if free < min || min > max {
            if self.consumer_gone(None) {
                return Err(ChunkError::Disconnected);
            }
            return Err(ChunkError::TooFew(free));
        }
        let (first, second) = self.ring.mem().split(self.ring.tail(), free.min(max));
        Ok(WriteChunk {
            producer: self,
            first,
            second,
        })
    }

    /// Free slots now (re-reads the consumer's position).
    pub fn slots(&mut self) -> Result<usize, Error> {
        Ok(self.ring.free(usize::MAX)?)
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.mem().capacity() as usize
    }

    /// What became of the consumer role (a lock probe: a system call).
    pub fn consumer_state(&self) -> PeerState {
        peer_state(&self.role, lock::CONSUMER, &self.header().consumer_state)
    }

    /// How blocking calls wait (default [`WaitMode::Adaptive`]).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.wait = mode;
    }

    /// Express pushes (default off): each item of 1 to 48 bytes pushed on its own
    /// ([`try_push`](Self::try_push), [`push`](Self::push)) is also copied beside the tail,
    /// on the cache line the consumer polls, so that a consumer that finds exactly that item
    /// reads one cache line from this producer's core instead of two (the tail's, then the
    /// slot's). Without it the copy is made only while the consumer asks for it: a consumer
    /// that misses 4 looks in a row at the same item asks, and withdraws the ask once it
    /// finds items without such a wait (more than one, or one after fewer misses). So
    /// request/response traffic gets the copy from its first wait on, and a busy-polled round
    /// trip between two processes costs about what two cache-padded atomics bounced by hand
    /// do (the README's Performance section), while a producer that streams does not pay for
    /// it. Express pushes make the copy from the first item whatever the consumer does. Leave
    /// them off for a producer that streams: a consumer that keeps up then reads a line this
    /// producer writes four times per push instead of once, and items of a u64 moved one by
    /// one, the consumer chasing, ran at about 0.4x the rate. Slices and chunks never use the
    /// copy; larger items never do.
    pub fn set_express(&mut self, express: bool) {
        self.ring.set_express(express);
    }
}

impl<T: Pod> Drop for Producer<T> {
    fn drop(&mut self) {
        // Before the lock (a later field) goes: a clean close is never taken for a death.
        rings::close(self.header(), &self.header().producer_state);
    }
}

/// Free slots of a producer, reserved for writing in place: write them through
/// [`as_mut_slices`](Self::as_mut_slices), then publish a prefix with
/// [`commit`](Self::commit). Dropping it commits nothing.
pub struct WriteChunk<'a, T: Pod> {
    producer: &'a mut Producer<T>,
    first: usize,
    second: usize,
}

impl<T: Pod> WriteChunk<'_, T> {
    /// Slots reserved.
    pub fn len(&self) -> usize {
        self.first + self.second
    }

    /// Whether no slot is reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reserved slots, in order: the run up to the end of the ring and the run that
    /// wraps around (often empty). They live in the shared mapping: writes go straight to the
    /// consumer.
    pub fn as_mut_slices(&mut self) -> (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]) {
        let mem = self.producer.ring.mem();
        let tail = self.producer.ring.tail();
        let first = mem.slot_ptr(tail).cast::<MaybeUninit<T>>();
        let second = mem
            .slot_ptr(tail + self.first as u64)
            .cast::<MaybeUninit<T>>();
        // SAFETY: the two runs are free slots (reserved above, owned by the producer until it
        // commits them), in bounds (`split`), disjoint, and borrowed mutably through `self`
        // for no longer than `self`.
        unsafe {
            (
                std::slice::from_raw_parts_mut(first, self.first),
                std::slice::from_raw_parts_mut(second, self.second),
            )
        }
    }

    /// Publishes the first `n` reserved slots (at most [`len`](Self::len)) with one store.
    ///
    /// # Safety
    /// The first `n` slots must have been initialised through
    /// [`as_mut_slices`](Self::as_mut_slices) (not overwritten with `MaybeUninit::uninit()`).
    pub unsafe fn commit(self, n: usize) {
        let n = n.min(self.len());
        self.producer.ring.commit(n);
    }

    /// Writes values from `iter` into the reserved slots in order, then commits what was
    /// written; returns that count.
    pub fn fill_from_iter(mut self, iter: impl IntoIterator<Item = T>) -> usize {
        let mut iter = iter.into_iter();
        let mut written = 0;
        {
            let (a, b) = self.as_mut_slices();
            // Each run on its own (not `chain`ed): a plain loop over one slice is what the
            // compiler turns into wide stores, a quarter of the instructions per item here.
            'runs: for run in [a, b] {
                for slot in run {
                    let Some(value) = iter.next() else {
                        break 'runs;
                    };
                    slot.write(value);
                    written += 1;
                }
            }
        }
        // SAFETY: the first `written` slots were just initialised.
        unsafe { self.commit(written) };
        written
    }
}

/// The receiving end. `Send`, not `Sync`: one thread uses it at a time.
pub struct Consumer<T: Pod> {
    ring: ring::Consumer<T>,
    role: RoleLock,
    wait: WaitMode,
    probe: ProbeClock,
}

impl<T: Pod> Consumer<T> {
    fn header(&self) -> &Header {
        self.role.shared().header()
    }

    /// Whether the producer is gone, probing its lock if `probe` (or if the rate limit
    /// allows, for `None`).
    fn producer_gone(&mut self, probe: Option<bool>) -> bool {
        let probe = probe.unwrap_or_else(|| self.probe.due_at(self.ring.head()));
        let (role, header) = (&self.role, self.role.shared().header());
        self.ring.producer_gone(probe, &mut || {
            role_died(role, lock::PRODUCER, &header.producer_state)
        })
    }

    /// Pops a value if one is ready, without waiting.
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, TryPopError> {
        // The common cases, kept small enough to inline: the cached tail shows an item, or
        // one look at the producer's line finds one (as it does for most items when the
        // consumer keeps up with the producer: a call out of line there cost up to 8% of the
        // rate), or finds the ring empty with the producer there (most misses; the rest, and
        // one in 32 of those for the liveness probe, go out of line).
        if self.ring.has_cached() {
            return Ok(self.ring.take_cached());
        }
        if let Err(tail) = self.ring.look() {
            if self.ring.quiet(tail) && self.probe.quiet_miss() {
                return Err(TryPopError::Empty);
            }
            self.ready_slow(tail)?;
        }
        Ok(self.ring.take())
    }

    /// `try_pop` past its common cases: the look at the producer's line saw `tail` and no
    /// item, and either something to report (the producer gone, or `tail` corrupt) or the
    /// miss is one that goes through the probe's bookkeeping. `Ok(())` when an item is ready
    /// to take after all.
    #[inline(never)]
    fn ready_slow(&mut self, tail: u64) -> Result<(), TryPopError> {
        if let Some(result) = self.ring.after_miss(tail, false, &mut || false) {
            return result;
        }
        // Empty: worth a (rate-limited) look at whether the producer died. Otherwise, no
        // second look at the producer's line: a busy poller would only bounce it more.
        if !self.probe.due_at(self.ring.head()) {
            return Err(TryPopError::Empty);
        }
        let (role, header) = (&self.role, self.role.shared().header());
        let mut died = || role_died(role, lock::PRODUCER, &header.producer_state);
        self.ring
            .try_ready(true, &mut died)
            .unwrap_or(Err(TryPopError::Empty))
    }

    /// Pops a value, waiting as the [`WaitMode`] says. `PopError::Disconnected` once the
    /// producer is gone and every item it committed has been popped.
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
        // As in `Producer::push_until`: a pop that need not wait costs what `try_pop`'s does.
        if self.ring.has_cached() {
            return Ok(self.ring.take_cached());
        }
        if self.ring.look().is_ok() {
            return Ok(self.ring.take());
        }
        self.pop_waiting(deadline)
    }

    /// `pop_until` past its common case: waits for an item, or finds the producer gone.
    #[inline(never)]
    fn pop_waiting(&mut self, deadline: Option<Instant>) -> Result<T, PopError> {
        self.probe.prime();
        let (role, header) = (&self.role, self.role.shared().header());
        let mut died = || role_died(role, lock::PRODUCER, &header.producer_state);
        self.ring.pop_until(self.wait, deadline, &mut died)
    }

    /// Pops as many ready values as fit into the front of `out`, releasing their slots with
    /// one store, and returns how many (0 when empty). `Disconnected` once the producer is gone
    /// and the ring drained.
    pub fn pop_slice(&mut self, out: &mut [T]) -> Result<usize, ChunkError> {
        let n = self.ring.pop_slice(out).map_err(ChunkError::Corrupt)?;
        if n > 0 || out.is_empty() || !self.producer_gone(None) {
            return Ok(n);
        }
        // Gone: whatever it committed before going is visible now.
        match self.ring.pop_slice(out).map_err(ChunkError::Corrupt)? {
            0 => Err(ChunkError::Disconnected),
            n => Ok(n),
        }
    }

    /// Borrows exactly `n` ready items in place; `ChunkError::TooFew(ready)` when fewer are
    /// ready, `Disconnected` when none are and the producer is gone.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        self.view(n, n)
    }

    /// Borrows between 1 and `max` ready items, as many as are ready; `TooFew(0)` when empty.
    pub fn read_chunk_upto(&mut self, max: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        self.view(1, max)
    }

    /// Waits (as the [`WaitMode`] says, at most `timeout` if given) until `n` items are
    /// ready, then borrows them. If the producer goes away first: `TooFew(ready)`, or
    /// `Disconnected` when nothing is left.
    pub fn read_chunk_blocking(
        &mut self,
        n: usize,
        timeout: Option<Duration>,
    ) -> Result<ReadChunk<'_, T>, ChunkError> {
        let (role, header) = (&self.role, self.role.shared().header());
        let mut died = || role_died(role, lock::PRODUCER, &header.producer_state);
        self.ring
            .wait_available(n, self.wait, timeout.and_then(deadline), &mut died)?;
        self.view(n, n)
    }

    fn view(&mut self, min: usize, max: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        // Asks for `max` (at least one), so a cached count short of it is refreshed: "as many
        // as are ready", and never "none" from a stale cache when items wait.
        let want = max.max(1);
        let mut ready = self.ring.available(want).map_err(ChunkError::Corrupt)?;
        if ready < min.max(1) && self.producer_gone(None) {
            ready = self.ring.available(want).map_err(ChunkError::Corrupt)?;
            if ready == 0 {
                return Err(ChunkError::Disconnected);
            }
        }
        if ready < min || min > max {
            return Err(ChunkError::TooFew(ready));
        }
        let head = self.ring.head();
        let (first, second) = self.ring.mem().split(head, ready.min(max));
        self.ring.mem().prefetch(head, (first, second));
        Ok(ReadChunk {
            consumer: self,
            first,
            second,
        })
    }

    /// Items ready now (re-reads the producer's position).
    pub fn items(&mut self) -> Result<usize, Error> {
        Ok(self.ring.available(usize::MAX)?)
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> usize {
        self.ring.mem().capacity() as usize
    }

    /// What became of the producer role (a lock probe: a system call). After
    /// `Disconnected`, tells whether the producer closed or died.
    pub fn producer_state(&self) -> PeerState {
        peer_state(&self.role, lock::PRODUCER, &self.header().producer_state)
    }

    /// How blocking calls wait (default [`WaitMode::Adaptive`]).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.wait = mode;
    }
}

impl<T: Pod> Drop for Consumer<T> {
    fn drop(&mut self) {
        // Before the lock (a later field) goes: a clean close is never taken for a death.
        rings::close(self.header(), &self.header().consumer_state);
    }
}

/// Ready items of a consumer, borrowed in place: read them through
/// [`as_slices`](Self::as_slices), then hand a prefix back with [`release`](Self::release).
/// Dropping it releases nothing (the items stay for the next read). Handing one out starts
/// loading its first 4 KiB into this CPU's cache, so read it soon after taking it.
///
/// The views point into shared memory that, by the protocol, only the consumer reads until
/// released. A hostile peer could still write under them: with untrusted peers, copy values
/// out with `pop`/`pop_slice` instead.
pub struct ReadChunk<'a, T: Pod> {
    consumer: &'a mut Consumer<T>,
    first: usize,
    second: usize,
}

impl<T: Pod> ReadChunk<'_, T> {
    /// Items borrowed.
    pub fn len(&self) -> usize {
        self.first + self.second
    }

    /// Whether no item is borrowed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items, in order: the run up to the end of the ring and the run that wraps around.
    pub fn as_slices(&self) -> (&[T], &[T]) {
        let mem = self.consumer.ring.mem();
        let head = self.consumer.ring.head();
        // SAFETY: both runs are published, unreleased slots (owned by the consumer until it
        // releases them), in bounds (`split`), holding valid `T` (Pod), borrowed no longer
        // than `self`.
        unsafe {
            (
                std::slice::from_raw_parts(mem.slot_ptr(head), self.first),
                std::slice::from_raw_parts(mem.slot_ptr(head + self.first as u64), self.second),
            )
        }
    }

    /// Hands the first `n` items (at most [`len`](Self::len)) back to the producer with one
    /// store.
    pub fn release(self, n: usize) {
        let n = n.min(self.len());
        self.consumer.ring.release(n);
    }
}
