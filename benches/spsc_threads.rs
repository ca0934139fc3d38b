//! In-process SPSC throughput: a producer thread and a consumer thread move items through a
//! ring of capacity 4096: shmlane (memfd-backed) beside rtrb, crossbeam's ArrayQueue and
//! std's sync_channel. u64 items one at a time (in both regimes, see [`Regime`]) and in
//! chunks of 256 (chasing); 64-byte and 1 KiB structs one at a time.
//!
//! `cargo bench --bench spsc_threads`. Each sample moves `iters` items; the time is from the
//! moment both threads are released to the moment the consumer has seen the last item.
//! Every consumer checks that items arrive in order. Each thread is pinned to its own CPU
//! where two exist (`SHMLANE_PIN=0`: left to the scheduler).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;
#[path = "common/pair.rs"]
mod pair;
use common::Regime;
use criterion::measurement::WallTime;
use pair::{
    array_queue_items, per_item, rtrb_chunks, rtrb_items, shmlane_chunks, shmlane_items, Item,
    CAPACITY,
};

/// shmlane, rtrb, ArrayQueue and sync_channel, one `I` at a time.
fn per_item_cases<I: Item>(group: &mut BenchmarkGroup<'_, WallTime>, regime: Regime) {
    group.bench_function("shmlane", |b| {
        b.iter_custom(|iters| shmlane_items::<I>(regime, iters))
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| rtrb_items::<I>(regime, iters))
    });
    group.bench_function("crossbeam_array_queue", |b| {
        b.iter_custom(|iters| array_queue_items::<I>(regime, iters))
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
        b.iter_custom(|iters| shmlane_chunks(Regime::Chase, iters))
    });
    group.bench_function("rtrb", |b| {
        b.iter_custom(|iters| rtrb_chunks(Regime::Chase, iters))
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
