//! What one call costs when it need not wait: one thread pushes a batch of u64 items into a
//! ring of capacity 4096 and pops them back, with the non-blocking calls (`try_push`,
//! `try_pop`) and with the blocking ones (`push`, `pop`), SPSC and MPMC. Nothing crosses
//! between CPUs: this is the instructions of each call, the part that the ring's cache lines
//! do not hide. A blocking call that finds room (or an item) should cost what the
//! non-blocking one does. rtrb and crossbeam's ArrayQueue go through the same loop, as the
//! baselines of SPSC and MPMC.
//!
//! `cargo bench --bench calls`. The time is per item: one push and one pop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use shmlane::{mpmc, spsc, Backing};

const CAPACITY: u64 = 4096;

/// Pushes and pops `iters` items in batches of a ring's capacity, each call checked.
fn batches<Tx, Rx>(
    (tx, rx): &mut (Tx, Rx),
    mut push: impl FnMut(&mut Tx, u64) -> bool,
    mut pop: impl FnMut(&mut Rx) -> Option<u64>,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CAPACITY);
        for i in 0..n {
            assert!(push(tx, black_box(i)));
        }
        for i in 0..n {
            assert_eq!(pop(rx), Some(i));
        }
        done += n;
    }
    start.elapsed()
}

/// One case of `group`: `batches` through `ends` with `push` and `pop`.
fn case<Tx, Rx>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    ends: &mut (Tx, Rx),
    push: impl Fn(&mut Tx, u64) -> bool + Copy,
    pop: impl Fn(&mut Rx) -> Option<u64> + Copy,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| batches(ends, push, pop, iters))
    });
}

/// The non-blocking and the blocking pair of channel module `$kind` (`spsc` or `mpmc`),
/// each as a case of `$group`.
macro_rules! cases {
    ($group:expr, $kind:ident) => {{
        let chan = $kind::Channel::<u64>::builder()
            .capacity(CAPACITY)
            .populate(true)
            .create(Backing::memfd("bench"))
            .unwrap();
        let mut ends = (chan.producer().unwrap(), chan.consumer().unwrap());
        let try_name = concat!(stringify!($kind), "/try");
        case(
            &mut $group,
            try_name,
            &mut ends,
            |tx, v| tx.try_push(v).is_ok(),
            |rx| rx.try_pop().ok(),
        );
        let blocking_name = concat!(stringify!($kind), "/blocking");
        case(
            &mut $group,
            blocking_name,
            &mut ends,
            |tx, v| tx.push(v).is_ok(),
            |rx| rx.pop().ok(),
        );
    }};
}

fn calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("calls/u64");
    group.throughput(Throughput::Elements(1));
    cases!(group, spsc);
    cases!(group, mpmc);
    // The queues the throughput groups hold shmlane beside, through the same loop.
    let mut ends = rtrb::RingBuffer::<u64>::new(CAPACITY as usize);
    case(
        &mut group,
        "rtrb",
        &mut ends,
        |tx, v| tx.push(v).is_ok(),
        |rx| rx.pop().ok(),
    );
    let queue = crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY as usize);
    case(
        &mut group,
        "crossbeam_array_queue",
        &mut (&queue, &queue),
        |q, v| q.push(v).is_ok(),
        |q| q.pop(),
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = calls
}
criterion_main!(benches);
