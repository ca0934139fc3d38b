//! Round-trip latency percentiles between two processes (each pinned to its own CPU where
//! two exist): shmlane busy-polling (with and without express pushes) and blocking, a
//! socketpair, a pipe, and the floor of two atomics bounced by hand. One-way latency is half
//! the round trip.
//!
//! `cargo run --release --example latency [-- ROUND_TRIPS]` (default 200,000 per transport)

mod common;

use std::time::Instant;

use common::pingpong::{self, Transport};
use hdrhistogram::Histogram;

fn main() {
    let rounds: u64 = std::env::args()
        .nth(1)
        .map_or(200_000, |n| n.parse().expect("ROUND_TRIPS"));
    println!(
        "{rounds} round trips of one u64 per transport; figures in ns (one-way = round trip / 2)\n"
    );
    println!("| transport | RTT p50 | RTT p99 | RTT p99.9 | RTT max | one-way p50 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for transport in Transport::ALL {
        let mut pinger = pingpong::start(transport);
        // Warm-up, its time dropped: both sides settle before the histogram starts.
        pinger.time_round_trips(1..=rounds / 10);
        // 1 ns to 60 s, 3 significant digits.
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        for i in 1..=rounds {
            let start = Instant::now();
            pinger.round_trip(i);
            hist.saturating_record(start.elapsed().as_nanos() as u64);
        }
        drop(pinger);
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            transport.name(),
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
            hist.value_at_quantile(0.5) / 2
        );
    }
}
