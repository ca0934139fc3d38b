//! Parties (threads, or for shmlane also processes) moving u64 items through an MPMC queue,
//! each pinned to a CPU of its own where there are enough: the harness of `mpmc` and
//! `interleaved`. Each producer pushes its share of the items and then a sentinel;
//! consumers stop once every sentinel has been taken and the queue is empty.

use std::hint::spin_loop;
use std::sync::atomic::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Release},
};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use shmlane::mpmc;

use super::affinity;
use super::common::{self, Regime};
use super::forked::{now_ns, SharedPage};

/// Slots in every queue the MPMC cases build.
const CAPACITY: usize = 4096;
/// What a producer pushes after its share.
const STOP: u64 = u64::MAX;

/// Pins party `k` of `parties` to CPU `k` when each party can have a CPU of its own;
/// otherwise leaves them all to the scheduler.
fn pin_party(k: usize, parties: usize) {
    if affinity::cpus() >= parties {
        affinity::pin(k);
    }
}

/// The push and pop of one queue, as the harness needs them.
pub trait Queue: Sync {
    type Tx: Send;
    type Rx: Send;
    fn ends(&self, producers: usize, consumers: usize) -> (Vec<Self::Tx>, Vec<Self::Rx>);
    fn push(tx: &mut Self::Tx, v: u64) -> bool;
    fn pop(rx: &mut Self::Rx) -> Option<u64>;
}

/// Runs one producer's share: `items` values, then a sentinel.
fn produce<Q: Queue>(tx: &mut Q::Tx, items: u64, regime: Regime) {
    for v in (0..items).chain([STOP]) {
        while !Q::push(tx, v) {
            regime.miss();
        }
    }
}

/// Pops until `producers` sentinels have been taken (by anyone) and the queue is empty.
/// Returns the number of values popped.
fn consume<Q: Queue>(rx: &mut Q::Rx, stops: &AtomicU64, producers: u64, regime: Regime) -> u64 {
    let mut popped = 0;
    loop {
        match Q::pop(rx) {
            Some(STOP) => {
                stops.fetch_add(1, AcqRel);
            }
            Some(_) => popped += 1,
            None if stops.load(Acquire) == producers => return popped,
            None => regime.miss(),
        }
    }
}

/// `producers` and `consumers` threads on `queue`, timed from the first party's start to the
/// last consumer's end; the queue is kept alive for later runs ([`common::keep`]).
pub fn run_threads<Q: Queue + 'static>(
    queue: Q,
    (producers, consumers): (usize, usize),
    regime: Regime,
    iters: u64,
) -> Duration {
    let (txs, rxs) = queue.ends(producers, consumers);
    let parties = producers + consumers;
    let stops = AtomicU64::new(0);
    let barrier = Barrier::new(parties);
    let share = iters / producers as u64;
    // Each party times itself from the barrier: the spawning thread is not pinned and may
    // not get a CPU until the pinned parties are done.
    let (starts, ends): (Vec<Instant>, Vec<(Instant, u64)>) = thread::scope(|s| {
        let producing: Vec<_> = txs
            .into_iter()
            .enumerate()
            .map(|(k, mut tx)| {
                let barrier = &barrier;
                s.spawn(move || {
                    pin_party(k, parties);
                    barrier.wait();
                    let start = Instant::now();
                    common::on_shifted_stack(move || produce::<Q>(&mut tx, share, regime));
                    start
                })
            })
            .collect();
        let consuming: Vec<_> = rxs
            .into_iter()
            .enumerate()
            .map(|(k, mut rx)| {
                let (barrier, stops) = (&barrier, &stops);
                s.spawn(move || {
                    pin_party(producers + k, parties);
                    barrier.wait();
                    let popped = common::on_shifted_stack(move || {
                        consume::<Q>(&mut rx, stops, producers as u64, regime)
                    });
                    (Instant::now(), popped)
                })
            })
            .collect();
        (
            producing.into_iter().map(|p| p.join().unwrap()).collect(),
            consuming.into_iter().map(|c| c.join().unwrap()).collect(),
        )
    });
    let popped: u64 = ends.iter().map(|&(_, n)| n).sum();
    assert_eq!(popped, share * producers as u64);
    let start = starts.into_iter().min().unwrap();
    let end = ends.into_iter().map(|(end, _)| end).max().unwrap();
    common::keep(queue);
    end - start
}

/// `pairs` producer and `pairs` consumer processes on one shmlane channel, timed as the
/// threads are: from the start line to the last consumer's last item (the forks and the
/// exits are not part of moving items).
pub fn run_processes(pairs: usize, regime: Regime, iters: u64) -> Duration {
    let chan = Shmlane::new();
    // Set-up count, start line, sentinel count and each consumer's end time, each on a
    // cache line of its own.
    let page = SharedPage::new();
    let (ready, go, stops) = (page.word(0), page.word(16), page.word(32));
    let end = |consumer: usize| page.word(48 + 16 * consumer);
    // A party with its endpoint says it is ready, then waits for the start.
    let to_start_line = || {
        ready.fetch_add(1, Release);
        while go.load(Acquire) == 0 {
            spin_loop();
        }
    };
    let share = iters / pairs as u64;
    let mut children = Vec::new();
    for role in 0..2 * pairs {
        // SAFETY: the child only runs its share and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            pin_party(role, 2 * pairs);
            let code = if role < pairs {
                let mut tx = chan.0.producer().unwrap();
                to_start_line();
                produce::<Shmlane>(&mut tx, share, regime);
                0
            } else {
                let mut rx = chan.0.consumer().unwrap();
                to_start_line();
                let popped = consume::<Shmlane>(&mut rx, stops, pairs as u64, regime);
                end(role - pairs).store(now_ns(), Release);
                // Each consumer's count goes back through the exit status, modulo 256.
                (popped % 256) as i32
            };
            // SAFETY: leave without the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        children.push(pid);
    }
    while ready.load(Acquire) != 2 * pairs as u64 {
        spin_loop();
    }
    let start = now_ns();
    go.store(1, Release);
    let mut popped_mod = 0;
    for (i, pid) in children.into_iter().enumerate() {
        let mut status = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        if i >= pairs {
            popped_mod += libc::WEXITSTATUS(status) as u64;
        }
    }
    assert_eq!(
        popped_mod % 256,
        (share * pairs as u64) % 256,
        "items lost or duplicated"
    );
    let last = (0..pairs).map(|c| end(c).load(Acquire)).max().unwrap();
    common::keep(chan);
    Duration::from_nanos(last - start)
}

pub struct Shmlane(pub mpmc::Channel<u64>);

impl Queue for Shmlane {
    type Tx = mpmc::Producer<u64>;
    type Rx = mpmc::Consumer<u64>;
    fn ends(&self, producers: usize, consumers: usize) -> (Vec<Self::Tx>, Vec<Self::Rx>) {
        (
            (0..producers).map(|_| self.0.producer().unwrap()).collect(),
            (0..consumers).map(|_| self.0.consumer().unwrap()).collect(),
        )
    }
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_push(v).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_pop().ok()
    }
}

impl Shmlane {
    pub fn new() -> Shmlane {
        Shmlane(
            mpmc::Channel::builder()
                .capacity(CAPACITY as u64)
                .populate(true)
                .create(shmlane::Backing::memfd("bench"))
                .unwrap(),
        )
    }
}

pub struct ArrayQueue(Arc<crossbeam_queue::ArrayQueue<u64>>);

impl ArrayQueue {
    pub fn new() -> ArrayQueue {
        ArrayQueue(Arc::new(crossbeam_queue::ArrayQueue::new(CAPACITY)))
    }
}

impl Queue for ArrayQueue {
    type Tx = Arc<crossbeam_queue::ArrayQueue<u64>>;
    type Rx = Arc<crossbeam_queue::ArrayQueue<u64>>;
    fn ends(&self, producers: usize, consumers: usize) -> (Vec<Self::Tx>, Vec<Self::Rx>) {
        (
            vec![self.0.clone(); producers],
            vec![self.0.clone(); consumers],
        )
    }
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.push(v).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.pop()
    }
}

#[allow(dead_code)] // interleaved compares shmlane with ArrayQueue only
pub struct Channel(
    crossbeam_channel::Sender<u64>,
    crossbeam_channel::Receiver<u64>,
);

impl Channel {
    #[allow(dead_code)] // as above
    pub fn new() -> Channel {
        let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
        Channel(tx, rx)
    }
}

impl Queue for Channel {
    type Tx = crossbeam_channel::Sender<u64>;
    type Rx = crossbeam_channel::Receiver<u64>;
    fn ends(&self, producers: usize, consumers: usize) -> (Vec<Self::Tx>, Vec<Self::Rx>) {
        (
            vec![self.0.clone(); producers],
            vec![self.1.clone(); consumers],
        )
    }
    fn push(tx: &mut Self::Tx, v: u64) -> bool {
        tx.try_send(v).is_ok()
    }
    fn pop(rx: &mut Self::Rx) -> Option<u64> {
        rx.try_recv().ok()
    }
}
