//! The loom facade: the only module that names atomic types, `UnsafeCell`, spin hints and
//! futex wait/wake.
//!
//! Normal builds get `core`'s atomics and the real futex syscalls. Builds with
//! `--cfg shmlane_loom` get loom's instrumented types instead, and a futex modelled as a loom
//! `Mutex` + `Condvar` that re-checks the word under the lock, so a lost wake-up shows up in
//! a model as a deadlock.

#[cfg(not(shmlane_loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(shmlane_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(shmlane_loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(shmlane_loom)]
pub(crate) use loom::hint::spin_loop;

#[cfg(shmlane_loom)]
pub(crate) use loom::thread::yield_now;
#[cfg(not(shmlane_loom))]
pub(crate) use std::thread::yield_now;

#[cfg(shmlane_loom)]
pub(crate) use loom::cell::UnsafeCell;

/// `core::cell::UnsafeCell` with loom's `with`/`with_mut` API, so the ring code is the same
/// code under loom and in shared memory. `repr(transparent)`: a slice of these has the layout
/// of a slice of `T`, which is what lets slots live in a mapping.
#[cfg(not(shmlane_loom))]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(shmlane_loom))]
impl<T> UnsafeCell<T> {
    #[cfg(test)]
    pub(crate) const fn new(value: T) -> Self {
        Self(core::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline(always)]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Asymmetric fences for the eventcount in `wait`: the side that publishes progress (every
/// push and pop) pays only a compiler fence, and the side about to sleep (rare) pays a
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs a full barrier on every CPU
/// that runs a thread of a registered process. Together they order a store before a load
/// as a SeqCst fence on each side would. A process that could not register (old kernel,
/// seccomp) uses real SeqCst fences on its light side, and a waiter whose heavy fence fails
/// cannot trust its peers' light fences, so it parks only briefly (see `wait`).
#[cfg(not(shmlane_loom))]
pub(crate) mod asymmetric {
    use core::sync::atomic::{
        compiler_fence, fence, AtomicU32,
        Ordering::{Relaxed, SeqCst},
    };

    const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    /// Zero: registered, so `light` alone is the light half. A u32 so that a publisher can OR
    /// it into its check of the waiter count with one instruction (see `light`).
    const REGISTERED: u32 = 0;
    const UNKNOWN: u32 = 1;
    const UNAVAILABLE: u32 = 2;

    /// Whether this process registered for expedited global membarriers. The kernel keeps the
    /// registration across fork (it lives in the mm, which fork copies) and drops it at exec,
    /// as this static does.
    static STATE: AtomicU32 = AtomicU32::new(UNKNOWN);

    #[cfg(not(miri))]
    fn membarrier(cmd: libc::c_int) -> bool {
        // SAFETY: membarrier takes two ints and touches no memory of ours.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
    }

    /// Miri does not run membarrier: the process stays unregistered and uses real fences on
    /// both sides, the fallback this module already has for kernels without it.
    #[cfg(miri)]
    fn membarrier(_cmd: libc::c_int) -> bool {
        false
    }

    /// Registers this process, once, so that its light fences may be compiler fences.
    pub(crate) fn register() {
        if STATE.load(Relaxed) == UNKNOWN {
            let ok = membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
            STATE.store(if ok { REGISTERED } else { UNAVAILABLE }, Relaxed);
        }
    }

    /// The publishing side's half: a compiler fence, which is the whole of it in a registered
    /// process, and a word that is non-zero when it is not. Then the caller must issue
    /// [`fallback`] before the load it orders (and repeat a load made before). Returning the
    /// word rather than branching on it lets a publisher fold it into the one branch it
    /// already takes on its waiter count: every push and pop pays one instruction for it.
    #[inline(always)]
    pub(crate) fn light() -> u32 {
        compiler_fence(SeqCst);
        STATE.load(Relaxed)
    }

    /// The light half in a process that could not register: a real fence.
    #[inline(always)]
    pub(crate) fn fallback() {
        fence(SeqCst);
    }

    /// The waiting side's half. False if the membarrier failed: then only peers that use
    /// real fences are ordered, and the caller must not sleep long on the strength of it.
    pub(crate) fn heavy() -> bool {
        fence(SeqCst);
        membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)
    }
}

/// Under loom both halves are SeqCst fences: the model checks the protocol that the
/// asymmetric pair implements.
#[cfg(shmlane_loom)]
pub(crate) mod asymmetric {
    use super::{fence, Ordering::SeqCst};

    pub(crate) fn register() {}

    pub(crate) fn light() -> u32 {
        fence(SeqCst);
        0
    }

    pub(crate) fn fallback() {
        fence(SeqCst);
    }

    pub(crate) fn heavy() -> bool {
        fence(SeqCst);
        true
    }
}

/// Outcome of a futex wait. Every variant means "re-check the condition"; none is a promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// Woken by a `futex_wake`, or spuriously.
    Woken,
    /// The word no longer held the expected value when we tried to sleep.
    Changed,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, at most `timeout`. Shared (not `FUTEX_PRIVATE_FLAG`),
/// so a waker in another process that maps the same page reaches us.
#[cfg(not(shmlane_loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: std::time::Duration) -> Wake {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 for the duration of the call and `ts` outlives it;
    // FUTEX_WAIT only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
    if rc == 0 {
        return Wake::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Wake::Changed,
        Some(libc::ETIMEDOUT) => Wake::TimedOut,
        // EINTR and anything unexpected: the caller re-checks its condition either way.
        _ => Wake::Woken,
    }
}

/// Wakes every waiter parked on `word`, in any process.
#[cfg(not(shmlane_loom))]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

#[cfg(shmlane_loom)]
loom::lazy_static! {
    // One lock and condvar stand in for every futex word: a wake notifies all, and each
    // waiter re-checks its own word under the lock, exactly the futex contract.
    static ref FUTEX: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

/// Loom model of FUTEX_WAIT: checks the word under the lock, so a wake that follows the
/// waker's store cannot slip between our check and our sleep. Timeouts are not modelled (a
/// model must not depend on time): the wait lasts until a wake.
#[cfg(shmlane_loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: std::time::Duration) -> Wake {
    let guard = FUTEX.0.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return Wake::Changed;
    }
    drop(FUTEX.1.wait(guard).unwrap());
    Wake::Woken
}

/// Loom model of FUTEX_WAKE: taking the lock orders this wake after any waiter's check.
#[cfg(shmlane_loom)]
pub(crate) fn futex_wake_all(_word: &AtomicU32) {
    let _guard = FUTEX.0.lock().unwrap();
    FUTEX.1.notify_all();
}
