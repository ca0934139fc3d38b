//! Blocking: spin, then yield, then park on a futex word, with an eventcount so that the side
//! making progress calls FUTEX_WAKE only when someone is parked.
//!
//! Each header [`Line`] carries an `event` futex word and a `waiters` count, owned by the
//! line's writer. A waiter for the condition that line's writer can make true (items for a
//! consumer, slots for a producer):
//!
//! 1. reads `event`, registers in `waiters`, and issues the heavy half of an asymmetric
//!    fence ([`asymmetric`]);
//! 2. re-checks its condition, and parks on `event` only if it still fails.
//!
//! The writer, after publishing progress, issues the light half (a compiler fence) and reads
//! `waiters`; only if it is non-zero does it bump `event` and call FUTEX_WAKE. The fence pair
//! forbids the outcome where the waiter misses the progress *and* the writer misses the
//! waiter (store buffering), and FUTEX_WAIT's own check of `event` covers a bump between
//! steps 1 and 2: no wake-up is lost, and under steady load the writer makes no system call
//! and no fence instruction.
//!
//! Parks last at most [`PARK_SLICE`], so a peer that dies (and so never wakes us) is noticed
//! by the liveness probe that runs after each slice.

use std::time::{Duration, Instant};

use crate::layout::Line;
use crate::sync::{
    asymmetric, futex_wait, futex_wake_all, spin_loop, yield_now,
    Ordering::{Acquire, Relaxed, Release},
    Wake,
};

/// How a blocking call waits when it cannot proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaitMode {
    /// Spin briefly, yield a few times, then park on a futex (the default): low latency
    /// while traffic flows, no CPU while idle.
    #[default]
    Adaptive,
    /// Never sleep: poll the ring in a loop (lowest latency, one core kept busy).
    BusyPoll,
    /// Park on the futex straight away (lowest CPU; every wait costs a system call).
    Park,
}

/// Spin iterations before yielding (Adaptive).
const SPINS: u32 = 256;
/// Yields before parking (Adaptive).
const YIELDS: u32 = 16;
/// Longest single park: bounds how long a dead peer goes unnoticed.
pub(crate) const PARK_SLICE: Duration = Duration::from_millis(50);
/// Longest park when this process cannot issue the heavy fence (a wake-up may be missed).
const UNFENCED_SLICE: Duration = Duration::from_millis(1);

/// Prepares this process for notifying: call before an endpoint's first push or pop.
pub(crate) fn prepare() {
    asymmetric::register();
}

/// Called by a line's writer after it published progress (a Release store of its counter or
/// state): wakes parked peers, if any.
#[inline(always)]
pub(crate) fn notify(line: &Line) {
    // Light half of the asymmetric fence: pairs with the heavy half in `park`, so that either
    // this load sees the waiter's registration or the waiter's re-check sees our progress.
    // One branch for both rare cases: a waiter, or a light half that is not enough here.
    let unfenced = asymmetric::light();
    if line.waiters.load(Relaxed) | unfenced != 0 {
        notify_slow(line);
    }
}

// Out of line: keeps the fence and the system call's set-up out of every push and pop.
#[cold]
#[inline(never)]
fn notify_slow(line: &Line) {
    // In a process that could not register, the load in `notify` may have run before our
    // store was visible: fence, and look again. (Registered, this fence comes just before a
    // system call, and costs nothing that matters.)
    asymmetric::fallback();
    if line.waiters.load(Relaxed) != 0 {
        // Release: a waiter whose futex_wait fails with EAGAIN (word changed) re-checks with
        // Acquire and sees our progress.
        line.event.fetch_add(1, Release);
        futex_wake_all(&line.event);
    }
}

/// The deadline `timeout` from now; a timeout too large for `Instant` (`Duration::MAX`, say)
/// is no deadline.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Whether `deadline` (if any) has passed.
pub(crate) fn expired(deadline: Option<Instant>) -> bool {
    passed(deadline, Instant::now())
}

/// Whether `deadline` (if any) had passed at `now`.
fn passed(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

/// Tries `attempt` until it yields a result or `deadline` passes (then `None`), waiting on
/// `line` in between as `mode` says. `attempt(probe)` gets `probe = true` after a park slice
/// passes without a wake-up (and on a BusyPoll every slice): the moment to check, at some
/// cost, whether the peer died. The first try is inlined into the caller: a blocking call
/// that need not wait costs that try and nothing more.
#[inline(always)]
pub(crate) fn block_on<R>(
    line: &Line,
    mode: WaitMode,
    deadline: Option<Instant>,
    mut attempt: impl FnMut(bool) -> Option<R>,
) -> Option<R> {
    match attempt(false) {
        Some(done) => Some(done),
        None => wait_on(line, mode, deadline, attempt),
    }
}

/// `block_on` after its first try.
fn wait_on<R>(
    line: &Line,
    mode: WaitMode,
    deadline: Option<Instant>,
    mut attempt: impl FnMut(bool) -> Option<R>,
) -> Option<R> {
    if mode != WaitMode::Park {
        // Before any clock read: most waits under load end within these spins, and a clock
        // read (some 25 ns on a VM) is a third of a round trip between two cores.
        for _ in 0..SPINS {
            if let Some(done) = attempt(false) {
                return Some(done);
            }
            spin_loop();
        }
    }
    if mode == WaitMode::Adaptive {
        for _ in 0..YIELDS {
            if let Some(done) = attempt(false) {
                return Some(done);
            }
            yield_now();
        }
    }
    let mut last_probe = Instant::now();
    // The first park probes: the peer may have died before we started waiting.
    let mut probe_next = true;
    loop {
        let now = Instant::now();
        if passed(deadline, now) {
            // One last look: a result that arrived exactly at the deadline still counts.
            return attempt(true);
        }
        if mode == WaitMode::BusyPoll {
            let mut probe = now.duration_since(last_probe) >= PARK_SLICE;
            if probe {
                last_probe = now;
            }
            for _ in 0..SPINS {
                if let Some(done) = attempt(probe) {
                    return Some(done);
                }
                probe = false;
                spin_loop();
            }
            continue;
        }
        let slice = deadline.map_or(PARK_SLICE, |d| {
            d.saturating_duration_since(now).min(PARK_SLICE)
        });
        match park(line, slice, probe_next, &mut attempt) {
            Ok(done) => return Some(done),
            // A full slice with no wake-up: time to check whether the peer is still there.
            Err(wake) => probe_next = wake == Wake::TimedOut,
        }
    }
}

/// One park of at most `slice` on `line.event`, after one more `attempt(probe)`; returns its
/// result, or how the park ended.
fn park<R>(
    line: &Line,
    slice: Duration,
    probe: bool,
    attempt: &mut impl FnMut(bool) -> Option<R>,
) -> Result<R, Wake> {
    // Acquire: pairs with the Release bump in `wake`.
    let seen = line.event.load(Acquire);
    line.waiters.fetch_add(1, Relaxed);
    // Heavy half: pairs with the light half in `notify` (see the module docs). If it failed,
    // a peer's compiler fence orders nothing: sleep briefly and look again.
    let slice = if asymmetric::heavy() {
        slice
    } else {
        slice.min(UNFENCED_SLICE)
    };
    let result = match attempt(probe) {
        Some(done) => Ok(done),
        None => Err(futex_wait(&line.event, seen, slice)),
    };
    line.waiters.fetch_sub(1, Relaxed);
    result
}
