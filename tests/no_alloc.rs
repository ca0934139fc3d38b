//! The hot path allocates nothing: a counting global allocator sees no allocation from
//! push, pop, slices or chunks at steady state, SPSC or MPMC, non-blocking or blocking.
//! Alone in its binary, so no other test's allocations are counted.
#![cfg(not(shmlane_loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use shmlane::{mpmc, spsc, Backing};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's contract for `realloc`, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Relaxed);
    f();
    ALLOCATIONS.load(Relaxed) - before
}

/// One test only: the counter is process-wide, and a test running beside it would allocate.
#[test]
fn the_hot_path_allocates_nothing() {
    spsc_push_pop_slices_and_chunks();
    mpmc_push_pop_and_slices();
}

/// One round of what both flavours share: single pushes and pops (non-blocking and blocking)
/// through a full ring and back to empty, then a slice each way.
macro_rules! shared_round {
    ($tx:expr, $rx:expr, $out:expr) => {{
        for i in 0..32 {
            $tx.try_push(i).unwrap();
            $tx.push(i).unwrap();
        }
        assert!($tx.try_push(99).is_err(), "full");
        for _ in 0..32 {
            $rx.try_pop().unwrap();
            $rx.pop().unwrap();
        }
        assert!($rx.try_pop().is_err(), "empty");
        $tx.push_slice(&[1; 16]).unwrap();
        assert_eq!($rx.pop_slice($out).unwrap(), 16);
    }};
}

fn spsc_push_pop_slices_and_chunks() {
    let chan = spsc::Channel::<u64>::create(Backing::memfd("no-alloc"), 64).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut out = [0u64; 16];
    let mut round = |tx: &mut spsc::Producer<u64>, rx: &mut spsc::Consumer<u64>| {
        shared_round!(tx, rx, &mut out);
        let chunk = tx.write_chunk(8).unwrap();
        assert_eq!(chunk.fill_from_iter(0..8), 8);
        let chunk = rx.read_chunk_upto(8).unwrap();
        let n = chunk.len();
        chunk.release(n);
    };
    round(&mut tx, &mut rx); // warm-up
    assert_eq!(
        allocations_in(|| (0..1000).for_each(|_| round(&mut tx, &mut rx))),
        0
    );
}

fn mpmc_push_pop_and_slices() {
    let chan = mpmc::Channel::<u64>::create(Backing::memfd("no-alloc-mpmc"), 64).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut out = [0u64; 16];
    let mut round = |tx: &mut mpmc::Producer<u64>, rx: &mut mpmc::Consumer<u64>| {
        shared_round!(tx, rx, &mut out)
    };
    round(&mut tx, &mut rx); // warm-up
    assert_eq!(
        allocations_in(|| (0..1000).for_each(|_| round(&mut tx, &mut rx))),
        0
    );
}
