//! In-process SPSC throughput: a producer thread and a consumer thread move u64 items
//! through a ring of capacity 4096. shmlane (memfd-backed) beside rtrb, crossbeam's
//! ArrayQueue and std's sync_channel, one item at a time and in chunks of 256.
//!
//! `cargo bench --bench spsc`. Each sample moves `iters` items; the time is from the moment
//! both threads are released to the moment the consumer has seen the last item. Every
//! consumer checks that items arrive in order.

use std::hint::{black_box, spin_loop};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "../examples/common/affinity.rs"]
mod affinity;
use shmlane::{spsc, Backing};

const CAPACITY: usize = 4096;
const CHUNK: usize = 256;

/// Runs `produce` and `consume` on two threads released together, each pinned to its own
/// CPU where two exist (SHMLANE_PIN=0 to leave placement to the scheduler); the elapsed
/// time until both are done.
fn two_threads(produce: impl FnOnce() + Send, consume: impl FnOnce() + Send) -> Duration {
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let consumer = s.spawn(|| {
            affinity::pin(1);
            barrier.wait();
            consume();
        });
        let producer = s.spawn(|| {
            affinity::pin(0);
            barrier.wait();
            let start = Instant::now();
            produce();
            start
        });
        let start = producer.join().unwrap();
        consumer.join().unwrap();
        start.elapsed()
    })
}

fn expect(value: u64, next: &mut u64) {
    assert_eq!(value, *next, "out of order");
    *next += 1;
}

fn shmlane_pair() -> (spsc::Producer<u64>, spsc::Consumer<u64>) {
    let chan = spsc::Channel::<u64>::builder()
        .capacity(CAPACITY as u64)
        .populate(true)
        .create(Backing::memfd("bench"))
        .unwrap();
    (chan.producer().unwrap(), chan.consumer().unwrap())
}

fn per_item(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_threads/u64");
    group.throughput(Throughput::Elements(1));

    group.bench_function("shmlane/per_item", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = shmlane_pair();
            two_threads(
                move || {
                    for i in 0..iters {
                        while tx.try_push(i).is_err() {
                            spin_loop();
                        }
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        match rx.try_pop() {
                            Ok(v) => expect(v, &mut next),
                            Err(_) => spin_loop(),
                        }
                    }
                },
            )
        })
    });

    group.bench_function("rtrb/per_item", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
            two_threads(
                move || {
                    for i in 0..iters {
                        while tx.push(i).is_err() {
                            spin_loop();
                        }
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        match rx.pop() {
                            Ok(v) => expect(v, &mut next),
                            Err(_) => spin_loop(),
                        }
                    }
                },
            )
        })
    });

    group.bench_function("crossbeam_array_queue/per_item", |b| {
        b.iter_custom(|iters| {
            let queue = crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY);
            let queue = &queue;
            two_threads(
                move || {
                    for i in 0..iters {
                        while queue.push(i).is_err() {
                            spin_loop();
                        }
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        match queue.pop() {
                            Some(v) => expect(v, &mut next),
                            None => spin_loop(),
                        }
                    }
                },
            )
        })
    });

    group.bench_function("std_sync_channel/per_item", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<u64>(CAPACITY);
            two_threads(
                move || {
                    for i in 0..iters {
                        tx.send(i).unwrap();
                    }
                },
                move || {
                    let mut next = 0;
                    while next < iters {
                        expect(rx.recv().unwrap(), &mut next);
                    }
                },
            )
        })
    });

    group.bench_function("shmlane/chunks_256", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = shmlane_pair();
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
                                    expect(v, &mut next);
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

    group.bench_function("rtrb/chunks_256", |b| {
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
                            expect(v, &mut next);
                        }
                        chunk.commit_all();
                    }
                },
            )
        })
    });

    group.finish();
    black_box(());
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = per_item
}
criterion_main!(benches);
