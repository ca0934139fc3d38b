//! In-process SPSC throughput: a producer thread and a consumer thread move items through a
//! ring of capacity 4096: shmlane (memfd-backed) beside rtrb, crossbeam's ArrayQueue and
//! std's sync_channel. u64 items one at a time (in both regimes, see [`Regime`]) and in
//! chunks of 256; 64-byte and 1 KiB structs one at a time.
//!
//! `cargo bench --bench spsc_threads`. Each sample moves `iters` items; the time is from the
//! moment both threads are released to the moment the consumer has seen the last item.
//! Every consumer checks that items arrive in order. Each thread is pinned to its own CPU
//! where two exist (`SHMLANE_PIN=0`: left to the scheduler).

use std::hint::spin_loop;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;
use common::Regime;
use criterion::measurement::WallTime;
use shmlane::{spsc, Backing};

const CAPACITY: usize = 4096;
const CHUNK: usize = 256;

/// An item: plain data whose first word carries its sequence number.
trait Item: bytemuck::Pod + Send {
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
/// thread reads the clock itself: the spawning thread may not get a CPU meanwhile).
fn two_threads(produce: impl FnOnce() + Send, consume: impl FnOnce() + Send) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            affinity::pin(1);
            barrier.wait();
            consume();
            Instant::now()
        });
        let producer = s.spawn(|| {
            affinity::pin(0);
            barrier.wait();
            let start = Instant::now();
            produce();
            start
        });
        let start = producer.join().unwrap();
        consumer.join().unwrap() - start
    })
}

/// One item at a time through a queue given as its non-blocking push and pop, waiting as
/// `regime` says after a miss.
fn per_item<I: Item, Tx: Send, Rx: Send>(
    (mut tx, mut rx): (Tx, Rx),
    push: fn(&mut Tx, I) -> bool,
    pop: fn(&mut Rx) -> Option<I>,
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
        },
    )
}

fn shmlane_pair<I: Item>() -> (spsc::Producer<I>, spsc::Consumer<I>) {
    let chan = spsc::Channel::<I>::builder()
        .capacity(CAPACITY as u64)
        .populate(true)
        .create(Backing::memfd("bench"))
        .unwrap();
    (chan.producer().unwrap(), chan.consumer().unwrap())
}

/// shmlane, rtrb, ArrayQueue and sync_channel, one `I` at a time.
fn per_item_cases<I: Item>(group: &mut BenchmarkGroup<'_, WallTime>, regime: Regime) {
    group.bench_function("shmlane", |b| {
        b.iter_custom(|iters| {
            per_item(
                shmlane_pair::<I>(),
                |tx, v| tx.try_push(v).is_ok(),
                |rx| rx.try_pop().ok(),
                regime,
                iters,
            )
        })
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            per_item(
                rtrb::RingBuffer::<I>::new(CAPACITY),
                |tx, v| tx.push(v).is_ok(),
                |rx| rx.pop().ok(),
                regime,
                iters,
            )
        })
    });
    group.bench_function("crossbeam_array_queue", |b| {
        b.iter_custom(|iters| {
            let queue = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<I>::new(CAPACITY));
            per_item(
                (queue.clone(), queue),
                |q, v| q.push(v).is_ok(),
                |q| q.pop(),
                regime,
                iters,
            )
        })
    });
    group.bench_function("std_sync_channel", |b| {
        b.iter_custom(|iters| {
            // Blocking calls: the channel waits its own way, whatever the regime.
            per_item(
                std::sync::mpsc::sync_channel::<I>(CAPACITY),
                |tx, v| tx.send(v).is_ok(),
                |rx| rx.recv().ok(),
                regime,
                iters,
            )
        })
    });
}

fn chunk_cases(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function("shmlane", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = shmlane_pair::<u64>();
            two_threads(
                move || {
                    let mut i = 0;
                    while i < iters {
                        let want = (iters - i).min(CHUNK as u64) as usize;
                        match tx.write_chunk_upto(want) {
                            Ok(chunk) => i += chunk.fill_from_iter(i..) as u64,
                            Err(_) => spin_loop(),
                        }
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        match rx.read_chunk_upto(CHUNK) {
                            Ok(chunk) => {
                                let (a, b) = chunk.as_slices();
                                for &v in a.iter().chain(b) {
                                    assert_eq!(v, next, "out of order");
                                    next += 1;
                                }
                                let n = chunk.len();
                                chunk.release(n);
                            }
                            Err(_) => spin_loop(),
                        }
                    }
                },
            )
        })
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
            two_threads(
                move || {
                    let mut i = 0;
                    while i < iters {
                        let want = (iters - i).min(CHUNK as u64) as usize;
                        let n = tx.slots().min(want);
                        if n == 0 {
                            spin_loop();
                            continue;
                        }
                        let chunk = tx.write_chunk_uninit(n).unwrap();
                        i += chunk.fill_from_iter(i..) as u64;
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        let n = rx.slots().min(CHUNK);
                        if n == 0 {
                            spin_loop();
                            continue;
                        }
                        let chunk = rx.read_chunk(n).unwrap();
                        let (a, b) = chunk.as_slices();
                        for &v in a.iter().chain(b) {
                            assert_eq!(v, next, "out of order");
                            next += 1;
                        }
                        chunk.commit_all();
                    }
                },
            )
        })
    });
}

fn spsc_threads(c: &mut Criterion) {
    for regime in Regime::ALL {
        let mut group = c.benchmark_group(format!("spsc_threads/u64/{}", regime.name()));
        group.throughput(Throughput::Elements(1));
        per_item_cases::<u64>(&mut group, regime);
        group.finish();
    }
    let mut group = c.benchmark_group("spsc_threads/u64_chunks_256");
    group.throughput(Throughput::Elements(1));
    chunk_cases(&mut group);
    group.finish();
    let mut group = c.benchmark_group("spsc_threads/64B/chase");
    group.throughput(Throughput::Bytes(64));
    per_item_cases::<[u64; 8]>(&mut group, Regime::Chase);
    group.finish();
    let mut group = c.benchmark_group("spsc_threads/1KiB/chase");
    group.throughput(Throughput::Bytes(1024));
    per_item_cases::<[u64; 128]>(&mut group, Regime::Chase);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = spsc_threads
}
criterion_main!(benches);
