//! What the benches share: how a party waits when it misses (ring full or empty), and how
//! each run's queue gets memory of its own.

use std::hint::spin_loop;

/// Pause hints a backing-off party spends on a miss: a few microseconds on current x86, so
/// the other side gets ahead and items move in batches.
const BACKOFF_PAUSES: u32 = 64;

/// How a producer that finds the ring full, or a consumer that finds it empty, waits before
/// trying again. Throughput swings several times between the two, on every queue: a consumer
/// that chases the producer takes each item's cache line as it is written; one that backs off
/// finds many items at once.
#[derive(Clone, Copy, Debug)]
pub enum Regime {
    /// One pause hint, then try again.
    Chase,
    /// [`BACKOFF_PAUSES`] pause hints, then try again.
    Backoff,
}

impl Regime {
    pub const ALL: [Regime; 2] = [Regime::Chase, Regime::Backoff];

    pub fn name(self) -> &'static str {
        match self {
            Regime::Chase => "chase",
            Regime::Backoff => "backoff",
        }
    }

    /// Waits after a miss, as this regime does.
    #[inline]
    pub fn miss(self) {
        let pauses = match self {
            Regime::Chase => 1,
            Regime::Backoff => BACKOFF_PAUSES,
        };
        for _ in 0..pauses {
            spin_loop();
        }
    }
}

/// How many of the last runs' queues [`keep`] keeps alive.
const PLACEMENTS: usize = 16;

thread_local! {
    /// The queues of the last [`PLACEMENTS`] runs, so that each run's queue lands on
    /// memory of its own rather than on the pages (and cache lines) its predecessor freed.
    /// Where a queue's memory lies decides what moving its lines between two CPUs costs, and
    /// a queue that gets the same memory back draws one lot for a whole process: on the
    /// Intel host of the README, filling rtrb's ring from the other CPU took 7.5-12.5 ns per
    /// item in three processes out of six and 3.0-3.3 ns in the others, each steady over its
    /// six runs, while shmlane's took 2.9-3.7 ns in all. Rotating through many placements
    /// puts that lottery inside each case's spread instead of between two cases' medians.
    static PLACED: std::cell::RefCell<std::collections::VecDeque<Box<dyn std::any::Any>>> =
        Default::default();
}

/// Keeps a run's queue (or what keeps its memory alive) until [`PLACEMENTS`] runs later.
pub fn keep<Q: 'static>(queue: Q) {
    PLACED.with_borrow_mut(|placed| {
        placed.push_back(Box::new(queue));
        if placed.len() > PLACEMENTS {
            placed.pop_front();
        }
    });
}

/// Where the next [`on_shifted_stack`] call puts its stack: a Weyl sequence, so that
/// successive calls spread over the page and the same run reproduces the same offsets.
static SHIFTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs `f` with its stack moved down by 0-4080 bytes, a different amount on each call: the
/// stack's counterpart of [`keep`]. Where a thread's locals (a queue's cached indices, the
/// item just read) sit on the stack is fixed by the binary, and that placement moves whole
/// runs: two builds of `interleaved` whose hot loops were the same instructions, differing
/// only in the frame of a line before them, read shmlane against rtrb per u64, chasing, at
/// 1.28x-1.61x and at 0.77x-0.99x, three runs of each taking turns. A shift per run puts
/// that lottery inside each case's spread too.
pub fn on_shifted_stack<R>(f: impl FnOnce() -> R) -> R {
    let draw = SHIFTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The golden-ratio step; its top 8 bits pick one of 256 offsets, 16 bytes apart.
    let bytes = (draw.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize * 16;
    let (mut f, mut out) = (Some(f), None);
    shift_by(bytes, &mut || out = f.take().map(|f| f()));
    out.expect("the shifted call ran")
}

/// Calls `f` below frames that hold `bytes` (a multiple of 16) of padding in all.
fn shift_by(bytes: usize, f: &mut dyn FnMut()) {
    match bytes {
        2048.. => below::<2048>(bytes - 2048, f),
        1024.. => below::<1024>(bytes - 1024, f),
        512.. => below::<512>(bytes - 512, f),
        256.. => below::<256>(bytes - 256, f),
        128.. => below::<128>(bytes - 128, f),
        64.. => below::<64>(bytes - 64, f),
        32.. => below::<32>(bytes - 32, f),
        16.. => below::<16>(bytes - 16, f),
        _ => f(),
    }
}

/// One frame of [`shift_by`] that holds `PAD` bytes; out of line, or it would add nothing.
#[inline(never)]
fn below<const PAD: usize>(rest: usize, f: &mut dyn FnMut()) {
    let pad = [0u8; PAD];
    std::hint::black_box(&pad);
    shift_by(rest, f)
}
