//! The ring algorithms, over a header's [`Line`]s and a slot array. They know nothing of files:
//! the memory is a mapping in normal use, and the heap under loom, miri and unit tests, through
//! the one [`RingMem`] type.

pub(crate) mod lane;
pub(crate) mod mpmc;
pub(crate) mod spsc;

use std::ptr::NonNull;
use std::sync::Arc;

use crate::layout::{role_state, Entry, Header, Line};
use crate::sync::{
    AtomicU32,
    Ordering::{Acquire, Release},
    UnsafeCell,
};
use crate::wait;

/// One slot of an SPSC ring. Always holds a valid `T` (`T: Pod`, and the memory starts
/// zeroed), so a copy out never reads uninitialised bytes.
pub(crate) type Slot<T> = UnsafeCell<T>;

/// Whether the role whose state word is `state` is gone (closed, or died). `died` (a lock
/// probe, a system call) is asked only when `probe` is set and the word says ACTIVE: a role
/// that was never claimed is not gone, the producer may simply not have started yet.
#[inline]
pub(crate) fn peer_gone(state: &AtomicU32, probe: bool, died: &mut impl FnMut() -> bool) -> bool {
    // Acquire: pairs with the Release stores in `close` and in a role claim, so a CLOSED seen
    // here comes after everything the peer published.
    match state.load(Acquire) {
        role_state::NONE => false,
        role_state::ACTIVE => probe && died(),
        // CLOSED, or a value no correct peer writes: either way nobody is there.
        _ => true,
    }
}

/// Writes `value` into the slot at `dst`; a value of whole 8-byte words from 16 to
/// [`WORD_COPY_MAX`] bytes, word by word. The caller's value may sit in a stack temporary
/// that was just written with 16-byte stores and starts 8 bytes past one (where a failed
/// push's error would carry it back); a 16-byte copy's loads then straddle those stores, the
/// processor cannot forward them, and each copy waits until every older store, the previous
/// slots' included, has reached the cache. 64-byte items between two threads, backing off:
/// 25 M items/s copied that way, 51 word by word (AMD EPYC). Volatile, so that the compiler
/// does not merge the words back.
///
/// # Safety
/// `dst` is valid for a write of a `T` that no one else reads or writes meanwhile.
#[inline(always)]
pub(crate) unsafe fn write_slot<T: Copy>(dst: *mut T, value: T) {
    let size = std::mem::size_of::<T>();
    if (16..=WORD_COPY_MAX).contains(&size) && size % 8 == 0 && std::mem::align_of::<T>() >= 8 {
        let (src, dst) = (&value as *const T as *const u64, dst as *mut u64);
        for i in 0..size / 8 {
            // SAFETY: `T` is `size / 8` aligned words (checked above), `src` points at
            // `value` and `dst` at a slot the caller may write (the function's contract).
            unsafe { dst.add(i).write_volatile(src.add(i).read()) };
        }
    } else {
        // SAFETY: the function's contract.
        unsafe { dst.write(value) };
    }
}

/// The largest value [`write_slot`] writes word by word. Larger ones are copied whole: one
/// store per word is twice the stores of a 16-byte copy, and past a few cache lines that
/// costs more than the stalls it avoids (between two threads, Intel Xeon, the values
/// built in place: 64 bytes word by word 1.6x-2.8x rtrb's rate against about 1.0x copied
/// whole, 256 bytes level either way, 1 KiB 0.8x-1.1x against 1.0x-1.25x).
const WORD_COPY_MAX: usize = 256;

/// Positions (counts of items ever pushed or popped) stay below this: 2^62 operations take
/// 146 years at a billion a second. A larger one read from shared memory is corruption, which
/// keeps every sum of a position and a capacity (and an MPMC tombstone's top bit) from
/// overflowing.
pub(crate) const POS_LIMIT: u64 = 1 << 62;

/// Publishes a line's new position and wakes whoever is parked on that line.
#[inline(always)]
pub(crate) fn publish(line: &Line, pos: u64) {
    // Release: pairs with the peer's Acquire load of this position; what this side did to
    // the slots before happens before the peer acts on the new position.
    line.pos.store(pos, Release);
    wait::notify(line);
}

/// Marks a role closed, then wakes whoever is parked on either line so they see it now.
pub(crate) fn close(header: &Header, state: &AtomicU32) {
    // Release: pairs with the Acquire load in `peer_gone`: everything this endpoint published
    // happens before a peer sees CLOSED.
    state.store(role_state::CLOSED, Release);
    wait::notify(&header.producer);
    wait::notify(&header.consumer);
}

/// Where a ring lives: the header, the MPMC registry (empty for SPSC), and `capacity` slots
/// of type `S`, plus an owner that keeps that memory alive as long as any endpoint uses it.
pub(crate) struct RingMem<S> {
    header: NonNull<Header>,
    registry: NonNull<Entry>,
    /// Process-local copy, like `mask`.
    registry_len: usize,
    slots: NonNull<S>,
    /// Capacity - 1 (the capacity is a power of two), what indexing needs. A process-local
    /// copy, never re-read from shared memory.
    mask: u64,
    _owner: Arc<dyn Send + Sync>,
}

impl<S> Clone for RingMem<S> {
    fn clone(&self) -> Self {
        RingMem {
            _owner: self._owner.clone(),
            ..*self
        }
    }
}

// SAFETY: RingMem is pointers into memory kept alive by `_owner` (which is Send + Sync); the
// ring protocol decides who touches which slot, and a slot's value moves between threads
// only if it may (`S: Send`).
unsafe impl<S: Send> Send for RingMem<S> {}

impl<S> RingMem<S> {
    /// # Safety
    /// `header` must point to a valid, initialised [`Header`], `registry` to `registry_len`
    /// consecutive entries (any non-null, aligned pointer when 0), and `slots` to `capacity`
    /// consecutive slots, all kept alive (and not unmapped) by `owner`; `capacity` must be a
    /// power of two.
    pub(crate) unsafe fn from_raw(
        header: NonNull<Header>,
        registry: NonNull<Entry>,
        registry_len: usize,
        slots: NonNull<S>,
        capacity: u64,
        owner: Arc<dyn Send + Sync>,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two());
        RingMem {
            header,
            registry,
            registry_len,
            slots,
            mask: capacity - 1,
            _owner: owner,
        }
    }

    #[inline(always)]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: from_raw's contract: valid and kept alive by `_owner`, which we hold.
        unsafe { self.header.as_ref() }
    }

    /// The header, not tied to a borrow of this handle: for a wait that watches one of its
    /// lines while its attempts borrow the endpoint holding this handle mutably. (Cloning
    /// the handle instead costs two atomic operations on the owner's count per wait.)
    ///
    /// # Safety
    /// The reference must not outlive this handle.
    #[inline(always)]
    pub(crate) unsafe fn header_detached<'a>(&self) -> &'a Header {
        // SAFETY: from_raw's contract: valid while `_owner` lives, which this handle keeps
        // for as long as the caller lets the reference live.
        unsafe { self.header.as_ref() }
    }

    #[inline(always)]
    pub(crate) fn producer_line(&self) -> &Line {
        &self.header().producer
    }

    #[inline(always)]
    pub(crate) fn consumer_line(&self) -> &Line {
        &self.header().consumer
    }

    #[inline(always)]
    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The registry's entries (MPMC; empty for SPSC).
    #[inline(always)]
    pub(crate) fn registry(&self) -> &[Entry] {
        // SAFETY: from_raw's contract: `registry_len` live entries (atomics only, so shared
        // references are sound whatever peers do).
        unsafe { std::slice::from_raw_parts(self.registry.as_ptr(), self.registry_len) }
    }

    /// The slot a position maps to. Always in bounds: the index is masked with the local
    /// capacity, whatever the position.
    #[inline(always)]
    pub(crate) fn slot(&self, pos: u64) -> &S {
        let index = (pos & self.mask) as usize;
        // SAFETY: index < capacity, and from_raw guarantees `capacity` live slots.
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// Splits `len` slots from `pos` into the run up to the end of the array and the run that
    /// wraps around to its start: `(first len, second len)`.
    #[inline(always)]
    pub(crate) fn split(&self, pos: u64, len: usize) -> (usize, usize) {
        let index = pos & self.mask;
        let first = len.min((self.capacity() - index) as usize);
        (first, len - first)
    }
}

impl<T> RingMem<Slot<T>> {
    /// Raw pointer to the `T` in the slot of `pos`, for building chunk slices.
    #[cfg(not(shmlane_loom))]
    #[inline(always)]
    pub(crate) fn slot_ptr(&self, pos: u64) -> *mut T {
        let index = (pos & self.mask) as usize;
        // Derived from the array's base pointer, not from a reference to one slot, so that
        // runs of slots read or written through it stay within its provenance. The cast is
        // sound: `Slot<T>` is a `repr(transparent)` cell around `T`.
        // SAFETY: index < capacity, and from_raw guarantees `capacity` live slots.
        unsafe { self.slots.as_ptr().add(index).cast::<T>() }
    }

    /// Starts loading the cache lines of a chunk's slots ([`lines_of`](Self::lines_of)) into
    /// this core's cache, all at once. A consumer calls it on a chunk it is about to read in
    /// place: the lines then cross from the producer's core side by side, not one after the
    /// other as the reads reach them. u64 items read in chunks of 256 between two threads
    /// moved 1.3x-1.4x as fast with it.
    #[cfg(not(shmlane_loom))]
    #[inline(always)]
    pub(crate) fn prefetch(&self, pos: u64, runs: (usize, usize)) {
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for line in self.lines_of(pos, runs) {
                // SAFETY: the instruction needs SSE, which every x86_64 CPU has; a prefetch is
                // a hint that never faults and changes no memory.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.cast()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (pos, runs);
    }

    /// The cache lines, in order, holding the first [`PREFETCH_BYTES`] of the slots from
    /// `pos` in `runs` (the two runs [`split`](Self::split) gives: to the end of the array,
    /// then from its start). None for an empty run, nor for one past the budget: the slot an
    /// empty run starts at may be one the producer is writing.
    #[cfg(all(not(shmlane_loom), any(test, target_arch = "x86_64")))]
    #[inline(always)]
    fn lines_of(
        &self,
        pos: u64,
        (first, second): (usize, usize),
    ) -> impl Iterator<Item = *const u8> + '_ {
        const LINE: usize = 64;
        let mut budget = PREFETCH_BYTES;
        [(pos, first), (pos + first as u64, second)]
            .into_iter()
            .map(move |(start, len)| {
                let bytes = (len * size_of::<T>()).min(budget);
                budget -= bytes;
                (start, bytes)
            })
            .filter(|&(_, bytes)| bytes > 0)
            .flat_map(move |(start, bytes)| {
                let run = self.slot_ptr(start).cast::<u8>().cast_const();
                let end = run.wrapping_add(bytes);
                let first_line = run.wrapping_sub(run.addr() % LINE);
                (0..)
                    .map(move |i| first_line.wrapping_add(i * LINE))
                    .take_while(move |&line| line < end)
            })
    }
}

/// The most bytes of a chunk [`RingMem::prefetch`] asks for: a page, twice a chunk of 256
/// u64s. Not tuned further: 4 KiB chunks between processes ran level with and without it.
#[cfg(not(shmlane_loom))]
const PREFETCH_BYTES: usize = 4096;

/// Heap storage for a ring: what loom, miri and unit tests run the real ring code on.
/// Holds raw pointers from `Box::into_raw`, not boxes: moving a `Box` asserts unique access
/// to its contents, which would invalidate the pointers the endpoints share (miri's
/// Stacked Borrows finds exactly that).
#[cfg(any(test, shmlane_loom))]
pub(crate) struct HeapRing<S> {
    header: NonNull<Header>,
    registry: NonNull<[Entry]>,
    slots: NonNull<[S]>,
}

#[cfg(any(test, shmlane_loom))]
impl<S> Drop for HeapRing<S> {
    fn drop(&mut self) {
        // SAFETY: the three pointers came from `Box::into_raw` in `RingMem::heap`, and this
        // owner is dropped once, after every RingMem (which hold an Arc of it) is gone.
        unsafe {
            drop(Box::from_raw(self.header.as_ptr()));
            drop(Box::from_raw(self.registry.as_ptr()));
            drop(Box::from_raw(self.slots.as_ptr()));
        }
    }
}

// SAFETY: the header and registry hold only atomics and plain data; slots are reached only
// through the ring protocol, which hands each slot to one side at a time.
#[cfg(any(test, shmlane_loom))]
unsafe impl<S: Send> Sync for HeapRing<S> {}
// SAFETY: as above; moving the owner moves no slot.
#[cfg(any(test, shmlane_loom))]
unsafe impl<S: Send> Send for HeapRing<S> {}

#[cfg(any(test, shmlane_loom))]
impl<S: Send + 'static> RingMem<S> {
    /// A ring on the heap for `geometry`, its slots made by `slot(index)`.
    pub(crate) fn heap(
        geometry: &crate::layout::Geometry,
        slot: impl FnMut(u64) -> S,
    ) -> RingMem<S> {
        let header = Box::new(Header::new_heap(geometry.config()));
        let registry: Box<[Entry]> = (0..geometry.registry_len).map(|_| Entry::new()).collect();
        let slots: Box<[S]> = (0..geometry.capacity).map(slot).collect();
        let (registry_len, capacity) = (registry.len(), geometry.capacity);
        let owner = HeapRing {
            header: NonNull::from(Box::leak(header)),
            registry: NonNull::from(Box::leak(registry)),
            slots: NonNull::from(Box::leak(slots)),
        };
        let (header_ptr, registry_ptr, slots_ptr) =
            (owner.header, owner.registry.cast(), owner.slots.cast());
        let owner = Arc::new(owner);
        // SAFETY: every pointer points into an allocation that `owner` frees only when the
        // last RingMem is gone; the lengths are the allocations' lengths.
        unsafe {
            RingMem::from_raw(
                header_ptr,
                registry_ptr,
                registry_len,
                slots_ptr,
                capacity,
                owner,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{write_slot, WORD_COPY_MAX};

    /// Writes `value` over a slot full of 0xff bytes and returns what the slot holds.
    fn written<T: Copy + bytemuck::Pod>(value: T) -> T {
        let mut slot = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the slot is ours; every byte is set before it is read as a T (Pod).
        unsafe {
            std::ptr::write_bytes(slot.as_mut_ptr(), 0xff, 1);
            write_slot(slot.as_mut_ptr(), value);
            slot.assume_init()
        }
    }

    /// The lines a read chunk prefetches: its slots' lines, in order, across the wrap, up to
    /// PREFETCH_BYTES, and none past its end.
    #[cfg(not(shmlane_loom))]
    #[test]
    fn a_chunk_prefetches_the_lines_of_its_first_4_kib_of_slots_and_no_others() {
        use super::{spsc, PREFETCH_BYTES};
        let mem = spsc::heap::<u64>(1024);
        // From the slots themselves: the line of each slot that starts within the chunk's
        // first PREFETCH_BYTES, each line once.
        let expected = |pos: u64, n: usize| {
            let mut lines: Vec<*const u8> = (0..n.min(PREFETCH_BYTES / 8))
                .map(|i| {
                    let slot = mem.slot_ptr(pos + i as u64).cast::<u8>().cast_const();
                    slot.wrapping_sub(slot.addr() % 64)
                })
                .collect();
            lines.dedup();
            lines
        };
        // One slot; a run inside the array; wrapping around (also at a later lap); over the
        // budget, with and without a wrap (the wrapped run lies past it).
        for (pos, n) in [
            (0, 1),
            (3, 20),
            (1020, 8),
            (2040, 16),
            (1000, 600),
            (5, 1024),
        ] {
            let lines: Vec<_> = mem.lines_of(pos, mem.split(pos, n)).collect();
            assert_eq!(lines, expected(pos, n), "{n} slots from {pos}");
        }
    }

    #[test]
    fn write_slot_writes_every_byte_word_by_word_or_whole() {
        // Word by word: whole 8-byte words, 16 bytes or more.
        assert_eq!(written([1u64, 2]), [1, 2]);
        let words: [u64; 8] = std::array::from_fn(|i| i as u64 * 0x0101_0101 + 7);
        assert_eq!(written(words), words);
        let most: [u64; WORD_COPY_MAX / 8] = std::array::from_fn(|i| !(i as u64));
        assert_eq!(written(most), most);
        // Whole: too small, too large, not whole words, or not 8-byte aligned.
        let large: [u64; WORD_COPY_MAX / 8 + 1] = std::array::from_fn(|i| i as u64 + 1);
        assert_eq!(written(large), large);
        assert_eq!(written(5u64), 5);
        let bytes: [u8; 24] = std::array::from_fn(|i| i as u8);
        assert_eq!(written(bytes), bytes);
        let halves: [u32; 6] = [1, 2, 3, 4, 5, 6];
        assert_eq!(written(halves), halves);
    }
}
