//! Two-process round trip of one u64: shmlane busy-polling (with and without express pushes)
//! and blocking (futex), beside a Unix socketpair, a pipe, and the floor (two cache-padded
//! atomics in a shared mapping bounced by hand). Each side pinned to its own CPU where two
//! exist.
//!
//! `cargo bench --bench rtt`; percentiles: `cargo run --release --example latency`.

#[path = "../examples/common/affinity.rs"]
mod affinity;
#[path = "../examples/common/pingpong.rs"]
mod pingpong;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pingpong::Transport;

fn rtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtt");
    for transport in Transport::ALL {
        let mut pinger = pingpong::start(transport);
        group.bench_function(transport.name(), |b| {
            b.iter_custom(|iters| pinger.time_round_trips(1..=iters))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = rtt
}
criterion_main!(benches);
