//! MPMC throughput, 1 producer x 1 consumer and 2 x 2, capacity 4096, u64 items: shmlane
//! with threads in one process and with separate processes, beside crossbeam's ArrayQueue
//! and crossbeam_channel::bounded (threads; they cannot cross processes).
//!
//! `cargo bench --bench mpmc`. Each producer pushes its share of the items and then a
//! sentinel; consumers stop once every sentinel has been taken and the queue is empty
//! (`common/mpmc_harness.rs`). The time runs from the moment all parties are released to
//! the moment the last one is done. Every party is pinned to a CPU of its own where there
//! are enough (`SHMLANE_PIN=0`: none). Each case runs in two regimes ([`Regime`]): parties
//! that retry at once after a miss, and parties that back off.
//!
//! `SHMLANE_BENCH_GRID=8 cargo bench --bench mpmc -- grid` adds 1..8 producers x 1..8
//! consumers (threads, backing off), for a machine with 16 CPUs or more.

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;
#[path = "common/forked.rs"]
mod forked;
#[path = "common/mpmc_harness.rs"]
mod mpmc_harness;

use std::time::Duration;

use common::Regime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mpmc_harness::{run_processes, run_threads, ArrayQueue, Channel, Shmlane};

fn mpmc(c: &mut Criterion) {
    for pairs in [1, 2] {
        for regime in Regime::ALL {
            let mut group = c.benchmark_group(format!("mpmc/{pairs}p{pairs}c/{}", regime.name()));
            group.throughput(Throughput::Elements(1));
            let n = |iters: u64| iters.max(pairs as u64);
            group.bench_function(BenchmarkId::new("shmlane", "threads"), |b| {
                b.iter_custom(|iters| run_threads(Shmlane::new(), (pairs, pairs), regime, n(iters)))
            });
            group.bench_function(BenchmarkId::new("shmlane", "processes"), |b| {
                b.iter_custom(|iters| run_processes(pairs, regime, n(iters)))
            });
            group.bench_function(BenchmarkId::new("crossbeam_array_queue", "threads"), |b| {
                b.iter_custom(|iters| {
                    run_threads(ArrayQueue::new(), (pairs, pairs), regime, n(iters))
                })
            });
            group.bench_function(
                BenchmarkId::new("crossbeam_channel_bounded", "threads"),
                |b| {
                    b.iter_custom(|iters| {
                        run_threads(Channel::new(), (pairs, pairs), regime, n(iters))
                    })
                },
            );
            group.finish();
        }
    }
}

/// With `SHMLANE_BENCH_GRID=n`: 1..=n producers x 1..=n consumers, threads, backing off
/// after a miss, shmlane beside ArrayQueue: the scaling table, for a machine with at least
/// 2n CPUs (`scripts/bench-report.sh` prints it as a grid). Off by default: on fewer CPUs
/// it measures the scheduler.
fn mpmc_grid(c: &mut Criterion) {
    let Some(n) = std::env::var("SHMLANE_BENCH_GRID")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    for producers in 1..=n {
        for consumers in 1..=n {
            let shape = (producers, consumers);
            let mut group = c.benchmark_group(format!("mpmc_grid/{producers}p{consumers}c"));
            group.throughput(Throughput::Elements(1));
            let n = |iters: u64| iters.max(producers as u64);
            group.bench_function(BenchmarkId::new("shmlane", "threads"), |b| {
                b.iter_custom(|iters| run_threads(Shmlane::new(), shape, Regime::Backoff, n(iters)))
            });
            group.bench_function(BenchmarkId::new("crossbeam_array_queue", "threads"), |b| {
                b.iter_custom(|iters| {
                    run_threads(ArrayQueue::new(), shape, Regime::Backoff, n(iters))
                })
            });
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = mpmc, mpmc_grid
}
criterion_main!(benches);
