//! What the cross-process benches share: a page of atomic words that forked children see,
//! and a clock that reads the same in every process. A run is timed from the moment every
//! child is set up to the moment the last receiver took its last message, as the two-thread
//! harness times its threads: creating and reaping the processes is not moving messages
//! (an exit and a reap alone cost some 130 us here, a fifth of a run of 100,000 u64 items).

use std::sync::atomic::AtomicU64;

/// Atomic words in one anonymous shared mapping, inherited by the children forked after it
/// is made. Words 16 apart are on different cache lines.
pub struct SharedPage(*mut AtomicU64);

impl SharedPage {
    const LEN: usize = 4096;

    pub fn new() -> SharedPage {
        // SAFETY: a fresh anonymous mapping; checked below.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        SharedPage(page.cast())
    }

    /// Word `i` of the page (zero until someone stores to it).
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < Self::LEN / 8);
        // SAFETY: in bounds (above) of a zeroed, aligned mapping that lives as long as self.
        unsafe { &*self.0.add(i) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the children that shared it are reaped by now.
        unsafe { libc::munmap(self.0.cast(), Self::LEN) };
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for all processes, so a child's reading and
/// its parent's subtract.
pub fn now_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
