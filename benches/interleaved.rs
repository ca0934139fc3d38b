//! Interleaved A/B: shmlane and its baseline take turns, trial by trial, in rounds that
//! each run in a fresh process. The cases: SPSC between two threads (each pinned to its own
//! CPU where two exist) beside rtrb, with the item sizes of `spsc_threads` (u64, 64 bytes,
//! 1 KiB) and its u64 chunks of 256; MPMC with 1 and 2 producers and as many consumers,
//! threads and processes, beside crossbeam's ArrayQueue between threads (u64, the harness
//! of `mpmc`); each in both regimes ([`Regime`]). And the busy-polling round trip between
//! two processes (plain and express) beside the floor of `rtt`, each trial a fresh fork and
//! fresh mappings; there an item is a round trip. Prints, per case, each queue's median
//! rate and the median of the per-pair ratios (baseline time / shmlane time: above 1 means
//! shmlane is faster) with their quartiles, pooled over all rounds, and the quartiles of the
//! rounds' own medians.
//!
//! Why beside the criterion groups: criterion measures each function in one block of
//! seconds, and on a machine whose speed between CPUs changes within minutes a change
//! between two blocks skews their ratio. Here the two queues of a pair run back to back
//! (which one goes first alternates), so a change hits both, and a pair of a few
//! milliseconds rarely straddles one. Why rounds in fresh processes: a process draws its
//! memory once (where its heap, stacks and recycled pages lie), and that draw moves a whole
//! process's figures. On the 2-CPU machine of the README, one process of 101 pairs read 64 B
//! backing off at 1.31x, 0.79x and 0.86x rtrb in three runs in a row of the same build, and
//! rounds of 7 pairs had medians from 0.47x to 3.53x. Every case's rounds are spread over
//! the whole run (one round of each case, then the next), so a slow spell of the machine
//! hits every case alike.
//!
//! `cargo bench --bench interleaved [-- FILTER]`; `SHMLANE_AB_ROUNDS` rounds per case
//! (default 24), `SHMLANE_AB_TRIALS` pairs per round (default 7), `SHMLANE_AB_ITEMS` items
//! per trial (default 200,000).

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;
#[path = "common/forked.rs"]
mod forked;
#[path = "common/mpmc_harness.rs"]
mod mpmc_harness;
#[path = "common/pair.rs"]
mod pair;
#[path = "../examples/common/pingpong.rs"]
#[allow(dead_code)] // the transports through the kernel are the `rtt` bench's
mod pingpong;

use std::time::Duration;

use common::Regime;
use mpmc_harness::{run_processes, run_threads, ArrayQueue, Shmlane};
use pair::{rtrb_chunks, rtrb_items, shmlane_chunks, shmlane_items};
use pingpong::Transport;

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

/// A rate in M items/s: whole from 10 up (the queues), to two decimals below (round
/// trips, some 3-4 M/s).
fn format_rate(m_per_s: f64) -> String {
    if m_per_s >= 10.0 {
        format!("{m_per_s:.0}")
    } else {
        format!("{m_per_s:.2}")
    }
}

/// Names the case a child process runs (see [`main`]).
const CASE_VAR: &str = "SHMLANE_AB_CASE";

/// Runs `trials` pairs of `shmlane(items)` and `baseline(items)`, alternating which goes
/// first, and prints one line per pair: shmlane's rate, the baseline's (M items/s), and
/// the ratio (baseline time / shmlane time).
fn pairs(
    (trials, items): (u64, u64),
    shmlane: impl Fn(u64) -> Duration,
    baseline: impl Fn(u64) -> Duration,
) {
    for trial in 0..trials {
        let (a, b) = if trial % 2 == 0 {
            let a = shmlane(items);
            (a, baseline(items))
        } else {
            let b = baseline(items);
            (shmlane(items), b)
        };
        let rate = |d: Duration| items as f64 / d.as_secs_f64() / 1e6;
        println!(
            "{} {} {}",
            rate(a),
            rate(b),
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

/// Runs one round of case `name` in a fresh process and returns its pairs' lines.
fn round(name: &str) -> Vec<[f64; 3]> {
    let out = std::process::Command::new(std::env::current_exe().expect("own executable"))
        .env(CASE_VAR, name)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("start a round");
    assert!(
        out.status.success(),
        "round of {name} failed: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2]]
        })
        .collect()
}

/// shmlane's MPMC channel with `PAIRS` producer and `PAIRS` consumer threads, as the
/// `mpmc` bench runs it.
fn mpmc_shmlane<const PAIRS: usize>(regime: Regime, items: u64) -> Duration {
    run_threads(Shmlane::new(), (PAIRS, PAIRS), regime, items)
}

/// shmlane's MPMC channel with `PAIRS` producer and `PAIRS` consumer processes.
fn mpmc_processes<const PAIRS: usize>(regime: Regime, items: u64) -> Duration {
    run_processes(PAIRS, regime, items)
}

/// crossbeam's ArrayQueue in the threads' harness (it cannot cross processes).
fn mpmc_array_queue<const PAIRS: usize>(regime: Regime, items: u64) -> Duration {
    run_threads(ArrayQueue::new(), (PAIRS, PAIRS), regime, items)
}

/// Round trips over a ping-pong of `transport` just started: a fresh child, and fresh
/// memory for what it bounces. What a trip costs moves from one start to the next (the
/// floor took 223-285 ns in six criterion runs of one build, one start each), so each trial
/// makes its own start. Timed after as many trips again, which let both sides settle.
fn round_trips(transport: Transport, trips: u64) -> Duration {
    let mut pinger = pingpong::start(transport);
    pinger.time_round_trips(1..=trips);
    pinger.time_round_trips(trips + 1..=2 * trips)
}

/// A case: its name, the baseline's name, and the two runs, each given the item count.
type Case = (
    String,
    &'static str,
    Box<dyn Fn(u64) -> Duration>,
    Box<dyn Fn(u64) -> Duration>,
);

fn main() {
    // Each case, named by the group it repeats: the baseline's name, and the two runs.
    type Run = fn(Regime, u64) -> Duration;
    let groups: [(&str, &str, Run, Run); 8] = [
        (
            "spsc_threads/u64",
            "rtrb",
            shmlane_items::<u64>,
            rtrb_items::<u64>,
        ),
        (
            "spsc_threads/u64_chunks_256",
            "rtrb",
            shmlane_chunks,
            rtrb_chunks,
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
            mpmc_shmlane::<1>,
            mpmc_array_queue::<1>,
        ),
        (
            "mpmc/2p2c",
            "crossbeam_array_queue",
            mpmc_shmlane::<2>,
            mpmc_array_queue::<2>,
        ),
        (
            "mpmc_processes/1p1c",
            "crossbeam_array_queue",
            mpmc_processes::<1>,
            mpmc_array_queue::<1>,
        ),
        (
            "mpmc_processes/2p2c",
            "crossbeam_array_queue",
            mpmc_processes::<2>,
            mpmc_array_queue::<2>,
        ),
    ];
    let regimes = groups
        .iter()
        .flat_map(|&(group, baseline_name, shmlane, baseline)| {
            Regime::ALL.map(move |regime| -> Case {
                (
                    format!("{group}/{}", regime.name()),
                    baseline_name,
                    Box::new(move |items| shmlane(regime, items)),
                    Box::new(move |items| baseline(regime, items)),
                )
            })
        });
    let rtt = [Transport::ShmlaneBusyPoll, Transport::ShmlaneExpress].map(|t| -> Case {
        (
            format!("rtt/{}", t.name()),
            Transport::Floor.name(),
            Box::new(move |trips| round_trips(t, trips)),
            Box::new(|trips| round_trips(Transport::Floor, trips)),
        )
    });
    let cases = regimes.chain(rtt);
    let pairs_per_round = (
        env_or("SHMLANE_AB_TRIALS", 7).max(1),
        env_or("SHMLANE_AB_ITEMS", 200_000).max(1),
    );

    // A child: one round of one case.
    if let Ok(wanted) = std::env::var(CASE_VAR) {
        let (_, _, shmlane, baseline) = cases
            .into_iter()
            .find(|case| case.0 == wanted)
            .expect("a known case");
        pairs(pairs_per_round, shmlane, baseline);
        return;
    }

    // `cargo bench` passes `--bench`; any other argument filters the cases by name.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let cases: Vec<_> = cases
        .filter(|case| filter.is_empty() || filter.iter().any(|f| case.0.contains(f)))
        .collect();
    let mut pooled = vec![vec![]; cases.len()];
    let mut round_medians = vec![vec![]; cases.len()];
    for _ in 0..env_or("SHMLANE_AB_ROUNDS", 24).max(1) {
        for (case, (pooled, medians)) in cases.iter().zip(pooled.iter_mut().zip(&mut round_medians))
        {
            let lines = round(&case.0);
            medians.push(quartiles(lines.iter().map(|l| l[2]).collect())[1]);
            pooled.extend(lines);
        }
    }
    println!(
        "| case | shmlane M items/s | baseline | M items/s | ratio to baseline | round medians |"
    );
    println!("|---|---:|---|---:|---|---|");
    for ((name, baseline_name, ..), (lines, medians)) in
        cases.iter().zip(pooled.into_iter().zip(round_medians))
    {
        let column = |i: usize| quartiles(lines.iter().map(|l| l[i]).collect());
        let [q1, ratio, q3] = column(2);
        let [low, _, high] = quartiles(medians);
        println!(
            "| {name} | {} | {baseline_name} | {} | {ratio:.2}x ({q1:.2}-{q3:.2}) | {low:.2}-{high:.2} |",
            format_rate(column(0)[1]),
            format_rate(column(1)[1]),
        );
    }
}
