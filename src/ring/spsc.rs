//! Single-producer single-consumer ring: Lamport's queue with cached peer counters (as in
//! rtrb). `tail` and `head` are u64 counts of items ever pushed and popped; the slot of a
//! count is `count & (capacity - 1)`, so all `capacity` slots hold items (none is kept empty
//! to tell full from empty: `tail - head` does that).
//!
//! Each side keeps its own counter locally and a cached copy of the peer's, and re-reads the
//! peer's shared counter only when its cache says full (producer) or empty (consumer): an
//! uncontended push touches only the producer's line and the slot.
//!
//! The peer's counter comes from shared memory, so it is checked before use: the head may
//! only move forward and never pass the tail; the tail may only move forward and never run
//! more than `capacity` ahead of the head. Anything else is [`Corruption`]; indices are always
//! masked with the local capacity, so even an unchecked value could not leave the slot array.

use std::time::Instant;

use bytemuck::Pod;

use super::{lane, peer_gone, publish, write_slot, POS_LIMIT};
use super::{RingMem, Slot};
use crate::error::{ChunkError, Corruption, PopError, PushError, TryPopError, TryPushError};
use crate::sync::Ordering::{Acquire, Relaxed};
use crate::wait::{self, WaitMode};

/// The producer's half of the protocol.
pub(crate) struct Producer<T> {
    mem: RingMem<Slot<T>>,
    /// Items pushed, as far as this producer knows: authoritative, the shared tail is only a
    /// publication of it.
    tail: u64,
    /// How far the tail may go by the last head read from the consumer's line: that head
    /// plus the capacity. Kept instead of the head itself, so that "full" is one comparison
    /// on every push.
    limit: u64,
    /// Whether a push of one item also copies it into the lane ([`lane`]).
    express: bool,
}

/// The consumer's half of the protocol.
pub(crate) struct Consumer<T> {
    mem: RingMem<Slot<T>>,
    head: u64,
    /// Last tail read from the producer's line.
    tail_cache: u64,
    /// The item whose value `lane` holds, copied from the producer's lane by the look that
    /// found it; never a head once that item is popped (u64::MAX: none yet).
    lane_pos: u64,
    lane: lane::Words,
    /// Whether this consumer has asked the producer to fill the lane (`Line::lane_wanted`):
    /// from a long enough run of misses at one head until an item is found without one.
    wants_lane: bool,
    /// The head at the current run of misses, and how many looks it has missed.
    miss_head: u64,
    misses: u32,
}

/// Misses in a row at one head after which a consumer asks for the lane: it waits for items
/// one by one (request/response traffic), not for a producer that streams. A consumer
/// chasing a streaming producer misses once or twice between items.
const LANE_AFTER_MISSES: u32 = 4;

/// Checks a (head, tail) pair read at attach time. Below [`POS_LIMIT`] here, the counters
/// stay far from overflowing: each side only adds to its own, and checks the other's
/// against it.
fn check_pair(head: u64, tail: u64, capacity: u64) -> Result<(), Corruption> {
    if tail >= POS_LIMIT || tail < head || tail - head > capacity {
        return Err(Corruption {
            counter: "tail",
            found: tail,
            min: head,
            max: head.saturating_add(capacity).min(POS_LIMIT - 1),
        });
    }
    Ok(())
}

impl<T: Pod> Producer<T> {
    /// Takes over the producer side of a ring, continuing from its shared tail.
    pub(crate) fn attach(mem: RingMem<Slot<T>>) -> Result<Self, Corruption> {
        // Acquire: pairs with the Release stores of a previous producer's `commit` and the
        // consumer's `release`, so we continue from what they published.
        let tail = mem.producer_line().pos.load(Acquire);
        let head = mem.consumer_line().pos.load(Acquire);
        check_pair(head, tail, mem.capacity())?;
        // Relaxed: a hint (see `Header::express`).
        mem.header().express.store(0, Relaxed);
        lane::clear(&mem.producer_line().lane);
        let limit = head + mem.capacity();
        Ok(Producer {
            mem,
            tail,
            limit,
            express: false,
        })
    }

    #[inline(always)]
    fn cached_free(&self) -> usize {
        (self.limit - self.tail) as usize
    }

    /// Free slots: the cached count when it is at least `want`, else a fresh one.
    #[inline]
    pub(crate) fn free(&mut self, want: usize) -> Result<usize, Corruption> {
        let free = self.cached_free();
        if free >= want {
            return Ok(free);
        }
        self.refresh()?;
        Ok(self.cached_free())
    }

    #[cold]
    fn refresh(&mut self) -> Result<(), Corruption> {
        // Acquire: pairs with the Release store in `Consumer::release`, so the consumer's
        // reads of the slots it released happen before we overwrite them.
        let head = self.mem.consumer_line().pos.load(Acquire);
        let cached = self.limit - self.mem.capacity();
        if head < cached || head > self.tail {
            return Err(Corruption {
                counter: "head",
                found: head,
                min: cached,
                max: self.tail,
            });
        }
        self.limit = head + self.mem.capacity();
        Ok(())
    }

    /// Sets whether a push of one item also copies it into the lane, where a consumer that
    /// finds that one item reads it with the tail (items of `T` that [`lane::fits`]).
    pub(crate) fn set_express(&mut self, express: bool) {
        self.express = express;
        // Relaxed: a hint (see `Header::express`).
        self.mem.header().express.store(express.into(), Relaxed);
    }

    /// Whether a push of one item copies it into the lane: always with express pushes on,
    /// otherwise while the consumer asks for it ([`Consumer::look`]). The ask sits beside
    /// `waiters`, which the push's `notify` reads anyway: an L1 hit while it does not change.
    #[inline(always)]
    fn fills_lane(&self) -> bool {
        // Relaxed: a hint (see `Line::lane_wanted`).
        lane::fits::<T>()
            && (self.express || self.mem.producer_line().lane_wanted.load(Relaxed) != 0)
    }

    /// Whether the cached head shows a free slot, reading nothing the consumer writes.
    #[inline(always)]
    pub(crate) fn has_cached_room(&self) -> bool {
        self.cached_free() > 0
    }

    /// Moves `value` into the free slot that a look for room ([`has_cached_room`],
    /// [`try_room`], [`wait_room`]) just found, and publishes it. The one place a pushed
    /// value is written, and no second look: every caller has looked.
    ///
    /// [`has_cached_room`]: Self::has_cached_room
    /// [`try_room`]: Self::try_room
    /// [`wait_room`]: Self::wait_room
    #[inline(always)]
    pub(crate) fn push_into_room(&mut self, value: T) {
        debug_assert!(self.has_cached_room(), "a look for room saw a free slot");
        // SAFETY: the slot at `tail` is free (tail - head < capacity, the caller's look): the
        // consumer has released it and will not read it until we publish a tail past it.
        self.mem
            .slot(self.tail)
            .with_mut(|p| unsafe { write_slot(p, value) });
        if self.fills_lane() {
            lane::put(&self.mem.producer_line().lane, self.tail, &value);
        }
        self.commit(1);
    }

    /// Pushes one value if a slot is free: `Ok(false)` when full.
    #[cfg(test)]
    pub(crate) fn push(&mut self, value: T) -> Result<bool, Corruption> {
        if self.free(1)? == 0 {
            return Ok(false);
        }
        self.push_into_room(value);
        Ok(true)
    }

    /// Pushes as many values from the front of `values` as fit, with one publication.
    #[inline]
    pub(crate) fn push_slice(&mut self, values: &[T]) -> Result<usize, Corruption> {
        let n = self.free(values.len())?.min(values.len());
        let (first, _) = self.mem.split(self.tail, n);
        self.write_run(self.tail, &values[..first]);
        self.write_run(self.tail + first as u64, &values[first..n]);
        self.commit(n);
        Ok(n)
    }

    /// Copies `values` into consecutive free slots from `pos` (no wrap inside the run).
    #[inline(always)]
    fn write_run(&self, pos: u64, values: &[T]) {
        #[cfg(not(shmlane_loom))]
        // SAFETY: the caller passes a run of free slots that does not wrap (see `split`), so
        // `values.len()` slots from `pos` are in the array and owned by the producer.
        unsafe {
            core::ptr::copy_nonoverlapping(values.as_ptr(), self.mem.slot_ptr(pos), values.len())
        };
        #[cfg(shmlane_loom)]
        for (i, value) in values.iter().enumerate() {
            // SAFETY: as above, slot by slot.
            self.mem
                .slot(pos + i as u64)
                .with_mut(|p| unsafe { p.write(*value) });
        }
    }

    /// Publishes the next `n` slots, which the caller has written, and wakes a parked
    /// consumer.
    #[inline(always)]
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(n <= self.cached_free());
        if n == 0 {
            return;
        }
        self.tail += n as u64;
        // Pairs with the Acquire load in `Consumer::refresh`: the slot writes before it are
        // visible before the tail that covers them.
        publish(self.mem.producer_line(), self.tail);
    }

    /// Whether the consumer is gone; see [`peer_gone`].
    #[inline]
    pub(crate) fn consumer_gone(&self, probe: bool, died: &mut impl FnMut() -> bool) -> bool {
        peer_gone(&self.mem.header().consumer_state, probe, died)
    }

    /// One look for `n` free slots: `Some(Ok)` when there are, an error for good (the value,
    /// if any, to be added by the caller), or `None` when there are fewer and the consumer is
    /// still there. It holds no value: a large `T` is not copied through it.
    #[inline]
    pub(crate) fn try_room(
        &mut self,
        n: usize,
        probe: bool,
        died: &mut impl FnMut() -> bool,
    ) -> Option<Result<(), TryPushError<()>>> {
        if self.consumer_gone(probe, died) {
            return Some(Err(TryPushError::Disconnected(())));
        }
        match self.free(n) {
            Ok(free) if free >= n => Some(Ok(())),
            Ok(_) => None,
            Err(c) => Some(Err(TryPushError::Corrupt((), c))),
        }
    }

    /// One push attempt: done (pushed or failed for good), or `None` when the ring is full
    /// and the consumer still there: the model's non-blocking push.
    #[cfg(shmlane_loom)]
    pub(crate) fn try_push(
        &mut self,
        value: T,
        probe: bool,
        died: &mut impl FnMut() -> bool,
    ) -> Option<Result<(), TryPushError<T>>> {
        Some(match self.try_room(1, probe, died)? {
            Ok(()) => {
                self.push_into_room(value);
                Ok(())
            }
            Err(e) => Err(e.with(value)),
        })
    }

    /// Waits as `mode` says until `deadline` for `n` free slots (at most the capacity); too
    /// few at the end of the wait is a `Timeout`.
    pub(crate) fn wait_room(
        &mut self,
        n: usize,
        mode: WaitMode,
        deadline: Option<Instant>,
        died: &mut impl FnMut() -> bool,
    ) -> Result<(), PushError<()>> {
        // SAFETY: `self.mem` keeps the header alive and outlives the wait; the attempts
        // borrow `self` but never replace `self.mem`.
        let header = unsafe { self.mem.header_detached() };
        wait::block_on(&header.consumer, mode, deadline, |probe| {
            self.try_room(n, probe, died)
        })
        // A full ring at the end of the wait is a timeout.
        .unwrap_or(Err(TryPushError::Full(())))
        .map_err(PushError::from)
    }

    /// Pushes, waiting for room as `mode` says until `deadline`: the model's and the tests'
    /// blocking push, made of the pieces the public one uses after its fast path.
    #[cfg(any(test, shmlane_loom))]
    pub(crate) fn push_until(
        &mut self,
        value: T,
        mode: WaitMode,
        deadline: Option<Instant>,
        died: &mut impl FnMut() -> bool,
    ) -> Result<(), PushError<T>> {
        match self.wait_room(1, mode, deadline, died) {
            Ok(()) => {
                self.push_into_room(value);
                Ok(())
            }
            Err(e) => Err(e.with(value)),
        }
    }

    /// Waits as `mode` says until `deadline` for `n` free slots.
    pub(crate) fn wait_free(
        &mut self,
        n: usize,
        mode: WaitMode,
        deadline: Option<Instant>,
        died: &mut impl FnMut() -> bool,
    ) -> Result<(), ChunkError> {
        if n > self.mem.capacity() as usize {
            return Err(ChunkError::TooFew(
                self.free(n).map_err(ChunkError::Corrupt)?,
            ));
        }
        self.wait_room(n, mode, deadline, died)
            .map_err(|e| match e {
                PushError::Timeout(()) => ChunkError::Timeout,
                PushError::Disconnected(()) => ChunkError::Disconnected,
                PushError::Corrupt((), c) => ChunkError::Corrupt(c),
            })
    }

    /// The count of the next slot to write.
    #[inline(always)]
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    pub(crate) fn mem(&self) -> &RingMem<Slot<T>> {
        &self.mem
    }
}

impl<T: Pod> Consumer<T> {
    /// Takes over the consumer side of a ring, continuing from its shared head.
    pub(crate) fn attach(mem: RingMem<Slot<T>>) -> Result<Self, Corruption> {
        // Acquire: pairs with the Release stores in `Consumer::release` (of a previous
        // consumer) and `Producer::commit`.
        let head = mem.consumer_line().pos.load(Acquire);
        let tail = mem.producer_line().pos.load(Acquire);
        check_pair(head, tail, mem.capacity())?;
        // Relaxed: a hint (see `Line::lane_wanted`); a consumer that went left it asking.
        mem.producer_line().lane_wanted.store(0, Relaxed);
        Ok(Consumer {
            mem,
            head,
            tail_cache: tail,
            lane_pos: u64::MAX,
            lane: Default::default(),
            wants_lane: false,
            miss_head: head,
            misses: 0,
        })
    }

    #[inline(always)]
    fn cached_available(&self) -> usize {
        (self.tail_cache - self.head) as usize
    }

    /// Items ready: the cached count when it is at least `want`, else a fresh one.
    #[inline]
    pub(crate) fn available(&mut self, want: usize) -> Result<usize, Corruption> {
        let available = self.cached_available();
        if available >= want {
            return Ok(available);
        }
        self.refresh()?;
        Ok(self.cached_available())
    }

    #[inline]
    fn refresh(&mut self) -> Result<(), Corruption> {
        // Read first: after the Acquire load the compiler would load them again.
        let (head, min) = (self.head, self.tail_cache);
        let tail = self.tail();
        // min <= tail <= head + capacity, in one comparison: below `min`, `tail - min` wraps
        // around past the window's width. `head + capacity` does not overflow: `head`
        // started below POS_LIMIT and only counts pops.
        let max = head.wrapping_add(self.mem.capacity());
        if tail.wrapping_sub(min) > max.wrapping_sub(min) {
            return Err(self.tail_corruption(tail));
        }
        self.tail_cache = tail;
        Ok(())
    }

    /// The producer's position.
    #[inline(always)]
    fn tail(&self) -> u64 {
        // Acquire: pairs with the Release store in `Producer::commit`, so the slot writes it
        // published are visible before we read them.
        self.mem.producer_line().pos.load(Acquire)
    }

    /// What a producer's position outside `tail_cache..=head + capacity` is.
    fn tail_corruption(&self, tail: u64) -> Corruption {
        Corruption {
            counter: "tail",
            found: tail,
            min: self.tail_cache,
            max: self.head.wrapping_add(self.mem.capacity()),
        }
    }

    /// The look at the producer's position that a pop makes once its cached items are used
    /// up (a consumer that keeps up makes it for most items): `Ok(())` when it shows an
    /// item, now cached; otherwise the position it saw, for
    /// [`after_miss`](Self::after_miss). Every pop's wait passes here, so this is also where
    /// the consumer counts its misses and makes or withdraws its ask for the lane.
    #[inline(always)]
    pub(crate) fn look(&mut self) -> Result<(), u64> {
        debug_assert!(!self.has_cached());
        let head = self.head;
        let tail = self.tail();
        // 1..=capacity items in one comparison: none wraps around to u64::MAX (with the
        // cache used up, `tail_cache` is `head`, so this is `refresh`'s window less "none").
        if tail.wrapping_sub(head).wrapping_sub(1) < self.mem.capacity() {
            self.tail_cache = tail;
            let lone = lane::fits::<T>() && tail == head + 1;
            if self.wants_lane && !(lone && self.waited_at(head)) {
                // Items come faster than this consumer waits for them: the producer streams,
                // and copies would only slow it.
                self.ask_for_lane(false);
            }
            // The one item the producer just pushed: its copy came with the tail's line.
            // Relaxed: a hint (see `Header::express`); looking at the lane of a producer that
            // does not fill it costs a second read of a line it keeps writing.
            if lone && (self.wants_lane || self.mem.header().express.load(Relaxed) != 0) {
                self.copy_lane(head);
            }
            Ok(())
        } else {
            self.count_miss();
            Err(tail)
        }
    }

    /// Counts a look that found no item, and asks for the lane once a run of them at one head
    /// is long enough.
    #[inline(always)]
    fn count_miss(&mut self) {
        if !lane::fits::<T>() {
            return;
        }
        if self.miss_head != self.head {
            (self.miss_head, self.misses) = (self.head, 0);
        }
        self.misses = self.misses.saturating_add(1);
        if !self.wants_lane && self.waited_at(self.head) {
            self.ask_for_lane(true);
        }
    }

    /// Whether looks at `head` missed often enough in a row to ask for the lane.
    #[inline(always)]
    fn waited_at(&self, head: u64) -> bool {
        self.miss_head == head && self.misses >= LANE_AFTER_MISSES
    }

    /// Asks the producer to fill the lane, or to stop.
    #[cold]
    #[inline(never)]
    fn ask_for_lane(&mut self, wanted: bool) {
        self.wants_lane = wanted;
        // Relaxed: a hint (see `Line::lane_wanted`).
        self.mem
            .producer_line()
            .lane_wanted
            .store(wanted.into(), Relaxed);
    }

    /// Copies the lane's words, if it holds item `head` whole, for [`take`](Self::take).
    /// Out of line: inlined, it slowed every look of a consumer whose producer does not fill
    /// the lane (the busy-poll round trip by some 10%), though it never ran there.
    #[inline(never)]
    fn copy_lane(&mut self, head: u64) {
        if let Some(words) = lane::get::<T>(&self.mem.producer_line().lane, head) {
            (self.lane, self.lane_pos) = (words, head);
        }
    }

    /// [`try_ready`](Self::try_ready) past a [`look`](Self::look) that saw position
    /// `tail` and no item there: `None` while the ring is empty and the producer there.
    pub(crate) fn after_miss(
        &mut self,
        tail: u64,
        probe: bool,
        died: &mut impl FnMut() -> bool,
    ) -> Option<Result<(), TryPopError>> {
        if let Err(c) = self.empty_or_corrupt(tail) {
            return Some(Err(TryPopError::Corrupt(c)));
        }
        if !self.producer_gone(probe, died) {
            return None;
        }
        // The producer's last commits happen before its close (and its death is seen after
        // them): look once more before declaring the ring drained.
        Some(match self.look() {
            Ok(()) => Ok(()),
            Err(tail) => match self.empty_or_corrupt(tail) {
                Ok(()) => Err(TryPopError::Disconnected),
                Err(c) => Err(TryPopError::Corrupt(c)),
            },
        })
    }

    /// Whether a [`look`](Self::look) that saw `tail` and no item found nothing to report:
    /// an empty ring, and the producer's state word saying it is there. Cheap enough for a
    /// poller's every miss; [`after_miss`](Self::after_miss) decides the rest.
    #[inline(always)]
    pub(crate) fn quiet(&self, tail: u64) -> bool {
        tail == self.head && !self.producer_gone(false, &mut || false)
    }

    /// What a look that found no item saw: an empty ring (`tail` is the head), or a corrupt
    /// position.
    fn empty_or_corrupt(&self, tail: u64) -> Result<(), Corruption> {
        if tail == self.head {
            Ok(())
        } else {
            Err(self.tail_corruption(tail))
        }
    }

    /// Whether the cached tail shows an item, reading nothing the producer writes.
    #[inline(always)]
    pub(crate) fn has_cached(&self) -> bool {
        self.cached_available() > 0
    }

    /// Takes the next item, which a [`look`](Self::look) or `try_ready` answer showed is
    /// there: from the lane's copy when the look made one, else from its slot.
    #[inline(always)]
    pub(crate) fn take(&mut self) -> T {
        self.take_from(lane::fits::<T>() && self.lane_pos == self.head)
    }

    /// Takes the next item, which [`has_cached`](Self::has_cached) showed before any look:
    /// from its slot. Only a look that finds one lone item copies the lane, and a pop takes
    /// that item right after it, so a cached item is never the lane's (and its slot holds it
    /// anyway). Not asking saves a load and a compare on each item of a batch: between two
    /// threads, u64 items to a consumer that backs off went from 0.92x rtrb's rate to 1.01x.
    #[inline(always)]
    pub(crate) fn take_cached(&mut self) -> T {
        self.take_from(false)
    }

    /// The one place a popped value is read: everything that decides whether there is one
    /// returns no `T`, so a large `T` is copied once, not once per layer.
    #[inline(always)]
    fn take_from(&mut self, from_lane: bool) -> T {
        debug_assert!(self.has_cached());
        let value = if from_lane {
            lane::value(&self.lane)
        } else {
            // SAFETY: head < tail (the caller's check): the producer published this slot and
            // will not write it again until we release it; it holds a valid T (T: Pod, memory
            // initialised).
            self.mem.slot(self.head).with(|p| unsafe { p.read() })
        };
        self.release(1);
        value
    }

    /// Pops one value if there is one, as the channel's pop looks for it (the lane
    /// included): `Ok(None)` when empty.
    #[cfg(test)]
    pub(crate) fn pop(&mut self) -> Result<Option<T>, Corruption> {
        if self.has_cached() {
            return Ok(Some(self.take_cached()));
        }
        if let Err(tail) = self.look() {
            return self.empty_or_corrupt(tail).map(|()| None);
        }
        Ok(Some(self.take()))
    }

    /// Pops as many values as are ready into the front of `out`, with one publication.
    /// Unlike a read chunk, no prefetch of the slots' lines: the copy out ran level with one
    /// (u64 slices of 256 between two threads, 0.98x-1.01x the rate, three runs).
    #[inline]
    pub(crate) fn pop_slice(&mut self, out: &mut [T]) -> Result<usize, Corruption> {
        let n = self.available(out.len())?.min(out.len());
        let (first, _) = self.mem.split(self.head, n);
        self.read_run(self.head, &mut out[..first]);
        self.read_run(self.head + first as u64, &mut out[first..n]);
        self.release(n);
        Ok(n)
    }

    /// Copies consecutive ready slots from `pos` into `out` (no wrap inside the run).
    #[inline(always)]
    fn read_run(&self, pos: u64, out: &mut [T]) {
        #[cfg(not(shmlane_loom))]
        // SAFETY: the caller passes a run of published slots that does not wrap, so
        // `out.len()` slots from `pos` are in the array and owned by the consumer.
        unsafe {
            core::ptr::copy_nonoverlapping(self.mem.slot_ptr(pos), out.as_mut_ptr(), out.len())
        };
        #[cfg(shmlane_loom)]
        for (i, slot) in out.iter_mut().enumerate() {
            // SAFETY: as above, slot by slot.
            *slot = self.mem.slot(pos + i as u64).with(|p| unsafe { p.read() });
        }
    }

    /// Hands the next `n` slots, which the caller has read, back to the producer, and wakes
    /// a parked producer.
    #[inline(always)]
    pub(crate) fn release(&mut self, n: usize) {
        debug_assert!(n <= self.cached_available());
        if n == 0 {
            return;
        }
        self.head += n as u64;
        // Pairs with the Acquire load in `Producer::refresh`: our reads of the slots happen
        // before the producer may overwrite them.
        publish(self.mem.consumer_line(), self.head);
    }

    /// Whether the producer is gone; see [`peer_gone`].
    #[inline]
    pub(crate) fn producer_gone(&self, probe: bool, died: &mut impl FnMut() -> bool) -> bool {
        peer_gone(&self.mem.header().producer_state, probe, died)
    }

    /// One look for an item: `Ok(())` when one is ready to [`take`](Self::take), an error
    /// for good, or `None` when the ring is empty and the producer still there.
    /// `Disconnected` only once the ring is drained.
    #[inline]
    pub(crate) fn try_ready(
        &mut self,
        probe: bool,
        died: &mut impl FnMut() -> bool,
    ) -> Option<Result<(), TryPopError>> {
        if self.has_cached() {
            return Some(Ok(()));
        }
        match self.look() {
            Ok(()) => Some(Ok(())),
            Err(tail) => self.after_miss(tail, probe, died),
        }
    }

    /// One pop attempt: done (a value, or failed for good), or `None` when the ring is empty
    /// and the producer still there.
    #[cfg(shmlane_loom)]
    pub(crate) fn try_pop(
        &mut self,
        probe: bool,
        died: &mut impl FnMut() -> bool,
    ) -> Option<Result<T, TryPopError>> {
        Some(self.try_ready(probe, died)?.map(|()| self.take()))
    }

    /// Pops, waiting for an item as `mode` says until `deadline`.
    pub(crate) fn pop_until(
        &mut self,
        mode: WaitMode,
        deadline: Option<Instant>,
        died: &mut impl FnMut() -> bool,
    ) -> Result<T, PopError> {
        // SAFETY: as in `Producer::wait_room`.
        let header = unsafe { self.mem.header_detached() };
        wait::block_on(&header.producer, mode, deadline, |probe| {
            self.try_ready(probe, died)
        })
        // `try_ready` reports an empty ring as None: at the end of the wait that is a timeout.
        .unwrap_or(Err(TryPopError::Empty))?;
        Ok(self.take())
    }

    /// Waits as `mode` says until `deadline` for `n` items; returns early (Ok) when the
    /// producer is gone, leaving the caller to take what is there.
    pub(crate) fn wait_available(
        &mut self,
        n: usize,
        mode: WaitMode,
        deadline: Option<Instant>,
        died: &mut impl FnMut() -> bool,
    ) -> Result<(), ChunkError> {
        // SAFETY: as in `Producer::wait_room`.
        let header = unsafe { self.mem.header_detached() };
        let ready = wait::block_on(&header.producer, mode, deadline, |probe| {
            match self.available(n) {
                Ok(ready) if ready >= n => Some(Ok(())),
                Ok(_) if self.producer_gone(probe, died) => Some(Ok(())),
                Ok(_) => None,
                Err(c) => Some(Err(ChunkError::Corrupt(c))),
            }
        });
        ready.unwrap_or(Err(ChunkError::Timeout))
    }

    /// The count of the next slot to read.
    #[inline(always)]
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn mem(&self) -> &RingMem<Slot<T>> {
        &self.mem
    }
}

/// A ring of `capacity` (a power of two) zeroed slots on the heap.
#[cfg(any(test, shmlane_loom))]
pub(crate) fn heap<T: bytemuck::Zeroable + Send + 'static>(capacity: u64) -> RingMem<Slot<T>> {
    let size = core::mem::size_of::<T>();
    let geometry = crate::layout::Geometry::new(
        crate::layout::Kind::Spsc,
        capacity,
        size,
        core::mem::align_of::<T>(),
        size,
        crate::layout::type_tag_of::<T>(),
        0,
    )
    .expect("heap rings are built with a power-of-two capacity");
    RingMem::heap(&geometry, |_| Slot::new(T::zeroed()))
}

#[cfg(all(test, not(shmlane_loom)))]
mod tests {
    use super::*;
    use crate::sync::Ordering::Relaxed;

    fn ring(capacity: u64) -> (Producer<u64>, Consumer<u64>) {
        let mem = heap::<u64>(capacity);
        (
            Producer::attach(mem.clone()).unwrap(),
            Consumer::attach(mem).unwrap(),
        )
    }

    #[test]
    fn holds_exactly_capacity_items() {
        let (mut tx, mut rx) = ring(4);
        for i in 0..4 {
            assert_eq!(tx.push(i), Ok(true));
        }
        assert_eq!(tx.push(99), Ok(false));
        for i in 0..4 {
            assert_eq!(rx.pop(), Ok(Some(i)));
        }
        assert_eq!(rx.pop(), Ok(None));
    }

    /// Writes `value` over the slot of `pos` behind the ring's back, so that a pop shows
    /// whether it read the slot or the lane.
    fn overwrite_slot(mem: &RingMem<Slot<u64>>, pos: u64, value: u64) {
        // SAFETY: the test's one thread: nobody else reads or writes the slot meanwhile.
        mem.slot(pos).with_mut(|p| unsafe { p.write(value) });
    }

    #[test]
    fn a_lone_express_push_is_read_from_the_lane_and_others_from_their_slots() {
        let (mut tx, mut rx) = ring(4);
        tx.set_express(true);
        assert_eq!(tx.push(10), Ok(true));
        overwrite_slot(rx.mem(), 0, 99);
        assert_eq!(rx.pop(), Ok(Some(10)), "one item found: the lane's copy");
        // Two found at once: the first from its slot, then the lane is not the head's.
        assert_eq!(tx.push(11), Ok(true));
        assert_eq!(tx.push(12), Ok(true));
        overwrite_slot(rx.mem(), 1, 98);
        assert_eq!(rx.pop(), Ok(Some(98)));
        overwrite_slot(rx.mem(), 2, 96);
        assert_eq!(rx.pop(), Ok(Some(96)), "cached by the look: its slot");
        // Express off: the slot, though the lane still holds the producer's last item.
        tx.set_express(false);
        assert_eq!(tx.push(13), Ok(true));
        overwrite_slot(rx.mem(), 3, 97);
        assert_eq!(rx.pop(), Ok(Some(97)));
        // A slice is never copied into the lane: a stale copy does not stand in for it.
        tx.set_express(true);
        assert_eq!(tx.push_slice(&[14]), Ok(1));
        assert_eq!(rx.pop(), Ok(Some(14)));
    }

    #[test]
    fn a_consumer_asks_for_the_lane_while_it_waits_for_each_item() {
        let (mut tx, mut rx) = ring(4);
        let asked = |rx: &Consumer<u64>| rx.mem().producer_line().lane_wanted.load(Relaxed);
        let misses = |rx: &mut Consumer<u64>, n: u32| {
            for _ in 0..n {
                assert_eq!(rx.pop(), Ok(None));
            }
        };
        misses(&mut rx, LANE_AFTER_MISSES - 1);
        assert_eq!(asked(&rx), 0, "a run as short as a chasing consumer's");
        // An item ends the run; the next one counts from zero.
        assert_eq!(tx.push(1), Ok(true));
        assert_eq!(rx.pop(), Ok(Some(1)));
        misses(&mut rx, LANE_AFTER_MISSES - 1);
        assert_eq!(asked(&rx), 0);
        misses(&mut rx, 1);
        assert_eq!(asked(&rx), 1);
        // Lone items waited for now come through the lane.
        for (pos, value) in [(1, 2), (2, 3)] {
            misses(&mut rx, LANE_AFTER_MISSES);
            assert_eq!(tx.push(value), Ok(true));
            overwrite_slot(rx.mem(), pos, 99);
            assert_eq!(rx.pop(), Ok(Some(value)));
            assert_eq!(asked(&rx), 1);
        }
        // Two found at once: the ask is withdrawn, and lone items use their slots again.
        misses(&mut rx, LANE_AFTER_MISSES);
        assert_eq!(tx.push(4), Ok(true));
        assert_eq!(tx.push(5), Ok(true));
        assert_eq!(rx.pop(), Ok(Some(4)));
        assert_eq!(asked(&rx), 0);
        assert_eq!(rx.pop(), Ok(Some(5)));
        assert_eq!(tx.push(6), Ok(true));
        overwrite_slot(rx.mem(), 5, 98);
        assert_eq!(rx.pop(), Ok(Some(98)));
        // A lone item found after a short wait withdraws it too.
        misses(&mut rx, LANE_AFTER_MISSES);
        assert_eq!(asked(&rx), 1);
        assert_eq!(tx.push(7), Ok(true));
        assert_eq!(rx.pop(), Ok(Some(7)));
        misses(&mut rx, LANE_AFTER_MISSES - 1);
        assert_eq!(tx.push(8), Ok(true));
        overwrite_slot(rx.mem(), 7, 97);
        assert_eq!(rx.pop(), Ok(Some(97)));
        assert_eq!(asked(&rx), 0);
        // A new consumer takes back the ask of one that went.
        misses(&mut rx, LANE_AFTER_MISSES);
        assert_eq!(asked(&rx), 1);
        let rx = Consumer::<u64>::attach(rx.mem().clone()).unwrap();
        assert_eq!(asked(&rx), 0);
    }

    #[test]
    fn a_new_producer_forgets_the_lane_a_dead_one_filled_before_publishing() {
        let (mut tx, mut rx) = ring(4);
        tx.set_express(true);
        // Died after copying item 0 into the lane, before publishing it.
        lane::put(&tx.mem().producer_line().lane, 0, &111u64);
        let mut tx = Producer::<u64>::attach(rx.mem().clone()).unwrap();
        tx.set_express(true);
        // The new producer writes item 0 by another path.
        assert_eq!(tx.push_slice(&[222]), Ok(1));
        assert_eq!(rx.pop(), Ok(Some(222)));
    }

    #[test]
    fn slices_wrap_around_in_order() {
        let (mut tx, mut rx) = ring(8);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        for round in 0..50 {
            let batch: Vec<u64> = (next_in..next_in + 5).collect();
            let pushed = tx.push_slice(&batch).unwrap();
            next_in += pushed as u64;
            let mut out = [0u64; 8];
            let popped = rx.pop_slice(&mut out[..(round % 7) + 1]).unwrap();
            for value in &out[..popped] {
                assert_eq!(*value, next_out);
                next_out += 1;
            }
        }
        let mut out = [0u64; 8];
        let popped = rx.pop_slice(&mut out).unwrap();
        for value in &out[..popped] {
            assert_eq!(*value, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, next_in);
    }

    #[test]
    fn impossible_counters_are_corruption() {
        let (mut tx, mut rx) = ring(4);
        tx.push(1).unwrap();
        rx.pop().unwrap();
        // A tail more than capacity ahead of the head.
        rx.mem().producer_line().pos.store(1 + 5, Relaxed);
        assert_eq!(
            rx.pop(),
            Err(Corruption {
                counter: "tail",
                found: 6,
                min: 1,
                max: 5
            })
        );
        // A head that moves backwards.
        let (mut tx, mut rx) = ring(4);
        tx.push_slice(&[0, 1, 2, 3]).unwrap();
        assert_eq!(rx.pop(), Ok(Some(0)));
        assert_eq!(tx.push(4), Ok(true)); // re-reads head = 1
        tx.mem().consumer_line().pos.store(0, Relaxed);
        assert_eq!(
            tx.push(5),
            Err(Corruption {
                counter: "head",
                found: 0,
                min: 1,
                max: 5
            })
        );
        // A head beyond the tail.
        tx.mem().consumer_line().pos.store(6, Relaxed);
        assert_eq!(
            tx.push(5),
            Err(Corruption {
                counter: "head",
                found: 6,
                min: 1,
                max: 5
            })
        );
        // Attaching to a ring whose counters are already impossible.
        rx.mem().producer_line().pos.store(100, Relaxed);
        assert!(Consumer::attach(rx.mem().clone()).is_err());
    }

    /// Items cross between threads in order through every way in and out: single items
    /// (blocking), slices, and chunks written and read in place. Small enough for miri, which
    /// checks the slot accesses for data races and stays within each pointer's provenance.
    #[test]
    fn threads_move_every_item_in_order_by_items_slices_and_chunks() {
        const N: u64 = if cfg!(miri) { 150 } else { 100_000 };
        let (mut tx, mut rx) = ring(8);
        let never_died = &mut || false;
        std::thread::scope(|s| {
            s.spawn(move || {
                let never_died = &mut || false;
                let (mut next, mut round) = (0u64, 0);
                while next < N {
                    let left = (N - next) as usize;
                    next += match round % 3 {
                        0 => {
                            tx.push_until(next, WaitMode::Adaptive, None, never_died)
                                .unwrap();
                            1
                        }
                        1 => {
                            let batch: Vec<u64> = (next..next + left.min(5) as u64).collect();
                            tx.push_slice(&batch).unwrap() as u64
                        }
                        _ => {
                            let n = tx.free(3).unwrap().min(3).min(left);
                            for i in 0..n as u64 {
                                // SAFETY: `free` said these n slots from the tail are ours.
                                unsafe { tx.mem().slot_ptr(tx.tail() + i).write(next + i) };
                            }
                            tx.commit(n);
                            n as u64
                        }
                    };
                    round += 1;
                }
            });
            let (mut next, mut round) = (0u64, 0);
            let expect = |v: u64, next: &mut u64| {
                assert_eq!(v, *next, "out of order");
                *next += 1;
            };
            while next < N {
                match round % 3 {
                    0 => expect(
                        rx.pop_until(WaitMode::Adaptive, None, never_died).unwrap(),
                        &mut next,
                    ),
                    1 => {
                        let mut out = [0u64; 4];
                        let n = rx.pop_slice(&mut out).unwrap();
                        out[..n].iter().for_each(|&v| expect(v, &mut next));
                    }
                    _ => {
                        let n = rx.available(3).unwrap().min(3);
                        for i in 0..n as u64 {
                            // SAFETY: `available` said these n slots from the head are ready.
                            expect(
                                unsafe { rx.mem().slot_ptr(rx.head() + i).read() },
                                &mut next,
                            );
                        }
                        rx.release(n);
                    }
                }
                round += 1;
            }
        });
        assert_eq!(rx.pop(), Ok(None));
    }
}
