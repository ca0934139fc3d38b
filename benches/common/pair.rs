//! Two threads moving items one at a time, each pinned to its own CPU where two exist: the
//! harness of `spsc_threads` and `interleaved`.

use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use shmlane::{spsc, Backing};

use super::affinity;
use super::common::{keep, on_shifted_stack, Regime};

/// Slots in every ring the two-thread benches build.
pub const CAPACITY: usize = 4096;

/// Items per chunk in the chunked runs.
pub const CHUNK: usize = 256;

/// An item: plain data whose first word carries its sequence number.
pub trait Item: bytemuck::Pod + Send {
    fn numbered(seq: u64) -> Self;
    fn seq(&self) -> u64;
}

impl Item for u64 {
    fn numbered(seq: u64) -> Self {
        seq
    }
    fn seq(&self) -> u64 {
        *self
    }
}

impl<const WORDS: usize> Item for [u64; WORDS]
where
    [u64; WORDS]: bytemuck::Pod,
{
    fn numbered(seq: u64) -> Self {
        let mut item = [0; WORDS];
        item[0] = seq;
        item
    }
    fn seq(&self) -> u64 {
        self[0]
    }
}

/// Runs `produce` and `consume` on two threads released together, each pinned to its own
/// CPU where two exist; the time from the producer's start to the consumer's end (each
/// thread reads the clock itself: the spawning thread may not get a CPU meanwhile). Each
/// returns its endpoint, which is dropped only after both are done: closing a queue (for
/// shmlane an unmap and two file closes, some 40 us here) is not part of moving items; and
/// only some runs later ([`keep`]).
pub fn two_threads<P: Send + 'static, C: Send + 'static>(
    produce: impl FnOnce() -> P + Send,
    consume: impl FnOnce() -> C + Send,
) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            affinity::pin(1);
            barrier.wait();
            let endpoint = on_shifted_stack(consume);
            (Instant::now(), endpoint)
        });
        let producer = s.spawn(|| {
            affinity::pin(0);
            barrier.wait();
            let start = Instant::now();
            (start, on_shifted_stack(produce))
        });
        let (start, producer) = producer.join().unwrap();
        let (end, consumer) = consumer.join().unwrap();
        keep((producer, consumer));
        end - start
    })
}

/// One item at a time through a queue given as its non-blocking push and pop, waiting as
/// `regime` says after a miss. The two are closures, each its own type, so the queue's calls
/// are inlined into the loops as in a user's code: as function pointers (until `13ea3c2`)
/// every call was an indirect one, which slowed rtrb's chasing more than shmlane's.
pub fn per_item<I: Item, Tx: Send + 'static, Rx: Send + 'static>(
    (mut tx, mut rx): (Tx, Rx),
    mut push: impl FnMut(&mut Tx, I) -> bool + Send,
    mut pop: impl FnMut(&mut Rx) -> Option<I> + Send,
    regime: Regime,
    iters: u64,
) -> Duration {
    two_threads(
        move || {
            for seq in 0..iters {
                let item = I::numbered(seq);
                while !push(&mut tx, item) {
                    regime.miss();
                }
            }
            tx
        },
        move || {
            let mut next = 0;
            while next < iters {
                match pop(&mut rx) {
                    Some(item) => {
                        // The whole item is received, as a real consumer's is: without
                        // black_box the compiler may read only the word checked (it did, in
                        // rtrb's inlined pop: 1 KiB items at 36 ns each, 58 ns with it).
                        let item = std::hint::black_box(item);
                        assert_eq!(item.seq(), next, "out of order");
                        next += 1;
                    }
                    None => regime.miss(),
                }
            }
            rx
        },
    )
}

pub fn shmlane_pair<I: Item>() -> (spsc::Producer<I>, spsc::Consumer<I>) {
    let chan = spsc::Channel::<I>::builder()
        .capacity(CAPACITY as u64)
        .populate(true)
        .create(Backing::memfd("bench"))
        .unwrap();
    (chan.producer().unwrap(), chan.consumer().unwrap())
}

/// shmlane's SPSC ring through [`per_item`], with `try_push` and `try_pop`.
pub fn shmlane_items<I: Item>(regime: Regime, iters: u64) -> Duration {
    per_item(
        shmlane_pair::<I>(),
        |tx, v| tx.try_push(v).is_ok(),
        |rx| rx.try_pop().ok(),
        regime,
        iters,
    )
}

/// rtrb through [`per_item`].
pub fn rtrb_items<I: Item>(regime: Regime, iters: u64) -> Duration {
    per_item(
        rtrb::RingBuffer::<I>::new(CAPACITY),
        |tx, v| tx.push(v).is_ok(),
        |rx| rx.pop().ok(),
        regime,
        iters,
    )
}

/// u64 items through shmlane's ring in chunks of up to [`CHUNK`], written and read in place
/// (`write_chunk_upto`, `read_chunk_upto`), waiting as `regime` says after a miss.
pub fn shmlane_chunks(regime: Regime, iters: u64) -> Duration {
    let (mut tx, mut rx) = shmlane_pair::<u64>();
    two_threads(
        move || {
            let mut i = 0;
            while i < iters {
                let want = (iters - i).min(CHUNK as u64) as usize;
                match tx.write_chunk_upto(want) {
                    Ok(chunk) => i += chunk.fill_from_iter(i..) as u64,
                    Err(_) => regime.miss(),
                }
            }
            tx
        },
        move || {
            let mut next = 0;
            while next < iters {
                match rx.read_chunk_upto(CHUNK) {
                    Ok(chunk) => {
                        let (a, b) = chunk.as_slices();
                        next = check_run(next, a.iter().chain(b));
                        let n = chunk.len();
                        chunk.release(n);
                    }
                    Err(_) => regime.miss(),
                }
            }
            rx
        },
    )
}

/// rtrb through the same loops as [`shmlane_chunks`]: its `slots` then a chunk of that many
/// (at most [`CHUNK`]).
pub fn rtrb_chunks(regime: Regime, iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
    two_threads(
        move || {
            let mut i = 0;
            while i < iters {
                let want = (iters - i).min(CHUNK as u64) as usize;
                match tx.slots().min(want) {
                    0 => regime.miss(),
                    n => i += tx.write_chunk_uninit(n).unwrap().fill_from_iter(i..) as u64,
                }
            }
            tx
        },
        move || {
            let mut next = 0;
            while next < iters {
                match rx.slots().min(CHUNK) {
                    0 => regime.miss(),
                    n => {
                        let chunk = rx.read_chunk(n).unwrap();
                        let (a, b) = chunk.as_slices();
                        next = check_run(next, a.iter().chain(b));
                        chunk.commit_all();
                    }
                }
            }
            rx
        },
    )
}

/// Checks that `run` holds the items numbered from `next` on, in order; the number after.
#[inline(always)]
fn check_run<'a>(mut next: u64, run: impl Iterator<Item = &'a u64>) -> u64 {
    for &v in run {
        assert_eq!(v, next, "out of order");
        next += 1;
    }
    next
}

/// crossbeam's ArrayQueue through [`per_item`].
#[allow(dead_code)] // interleaved compares ArrayQueue with shmlane's MPMC channel only
pub fn array_queue_items<I: Item>(regime: Regime, iters: u64) -> Duration {
    let queue = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<I>::new(CAPACITY));
    per_item(
        (queue.clone(), queue),
        |q, v| q.push(v).is_ok(),
        |q| q.pop(),
        regime,
        iters,
    )
}
