//! Interleaved A/B: shmlane and its baseline take turns, trial by trial, moving items one
//! at a time between two threads (each pinned to its own CPU where two exist): SPSC beside
//! rtrb with the item sizes of `spsc_threads` (u64, 64 bytes, 1 KiB), MPMC with one
//! producer and one consumer beside crossbeam's ArrayQueue (u64), in both regimes
//! ([`Regime`]). Prints, per case, each queue's median rate and the median of
//! the per-pair ratios (baseline time / shmlane time: above 1 means shmlane is faster) with
//! their quartiles.
//!
//! Why beside the criterion groups: criterion measures each function in one block of
//! seconds, and on a machine whose speed between CPUs changes within minutes a change
//! between two blocks skews their ratio. Here the two queues of a pair run back to back
//! (which one goes first alternates), so a change hits both. Many short pairs rather than a
//! few long ones: a pair of a few milliseconds rarely straddles a change, and the median of
//! a hundred ratios is not moved by the few that do. On the 2-CPU machine of the README,
//! three runs of u64 chasing read 1.50x, 1.32x and 1.19x with 11 pairs of 1,000,000 items,
//! and 0.94x, 0.95x and 1.00x with 101 pairs of 200,000, taking turns with them.
//!
//! `cargo bench --bench interleaved [-- FILTER]`; `SHMLANE_AB_TRIALS` pairs per case
//! (default 101), `SHMLANE_AB_ITEMS` items per trial (default 200,000).

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;
#[path = "common/pair.rs"]
mod pair;

use std::time::Duration;

use common::Regime;
use pair::{array_queue_items, per_item, rtrb_items, shmlane_items, CAPACITY};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The first quartile, the median and the third quartile of `values`.
fn quartiles(mut values: Vec<f64>) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    [1, 2, 3].map(|q| values[(values.len() - 1) * q / 4])
}

/// Runs `trials` pairs of `shmlane(items)` and `baseline(items)`, alternating which goes
/// first, and prints the case's row.
fn case(
    name: &str,
    baseline_name: &str,
    (trials, items): (u64, u64),
    shmlane: impl Fn(u64) -> Duration,
    baseline: impl Fn(u64) -> Duration,
) {
    let (mut mine, mut theirs, mut ratios) = (vec![], vec![], vec![]);
    for trial in 0..trials {
        let (a, b) = if trial % 2 == 0 {
            let a = shmlane(items);
            (a, baseline(items))
        } else {
            let b = baseline(items);
            (shmlane(items), b)
        };
        let rate = |d: Duration| items as f64 / d.as_secs_f64() / 1e6;
        mine.push(rate(a));
        theirs.push(rate(b));
        ratios.push(b.as_secs_f64() / a.as_secs_f64());
    }
    let [q1, ratio, q3] = quartiles(ratios);
    println!(
        "| {name} | {:.0} | {baseline_name} | {:.0} | {ratio:.2}x ({q1:.2}-{q3:.2}) |",
        quartiles(mine)[1],
        quartiles(theirs)[1],
    );
}

/// shmlane's MPMC ring, one producer and one consumer, through [`per_item`].
fn mpmc_items(regime: Regime, iters: u64) -> Duration {
    let chan = common::mpmc_channel(CAPACITY);
    per_item(
        (chan.producer().unwrap(), chan.consumer().unwrap()),
        |tx, v| tx.try_push(v).is_ok(),
        |rx| rx.try_pop().ok(),
        regime,
        iters,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters the cases by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f));
    let run = (
        env_or("SHMLANE_AB_TRIALS", 101).max(1),
        env_or("SHMLANE_AB_ITEMS", 200_000).max(1),
    );
    println!("| case | shmlane M items/s | baseline | M items/s | ratio to baseline |");
    println!("|---|---:|---|---:|---|");
    // Each case: the group it repeats, the baseline's name, and the two runs.
    type Run = fn(Regime, u64) -> Duration;
    let cases: [(&str, &str, Run, Run); 4] = [
        (
            "spsc_threads/u64",
            "rtrb",
            shmlane_items::<u64>,
            rtrb_items::<u64>,
        ),
        (
            "spsc_threads/64B",
            "rtrb",
            shmlane_items::<[u64; 8]>,
            rtrb_items::<[u64; 8]>,
        ),
        (
            "spsc_threads/1KiB",
            "rtrb",
            shmlane_items::<[u64; 128]>,
            rtrb_items::<[u64; 128]>,
        ),
        (
            "mpmc/1p1c",
            "crossbeam_array_queue",
            mpmc_items,
            array_queue_items::<u64>,
        ),
    ];
    for (group, baseline_name, shmlane, baseline) in cases {
        for regime in Regime::ALL {
            let name = format!("{group}/{}", regime.name());
            if wanted(&name) {
                case(
                    &name,
                    baseline_name,
                    run,
                    |items| shmlane(regime, items),
                    |items| baseline(regime, items),
                );
            }
        }
    }
}
