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
