//! Loom models of the SPSC ring, its blocking and its close, on heap memory, running the same
//! code as the shared-memory channels.
//!
//! `RUSTFLAGS="--cfg shmlane_loom -C debug-assertions" LOOM_MAX_PREEMPTIONS=2 \
//!  cargo test --release --test loom`
#![cfg(shmlane_loom)]

#[cfg(not(debug_assertions))]
compile_error!("the loom models need debug assertions: add -C debug-assertions to RUSTFLAGS");

use loom::thread;
use shmlane::model;
use shmlane::{PopError, PushError, TryPopError, TryPushError};

/// Pushes every value with `try_push`, yielding while full.
fn push_all(tx: &mut model::Producer<u32>, values: impl IntoIterator<Item = u32>) {
    for value in values {
        let mut value = value;
        loop {
            match tx.try_push(value) {
                Ok(()) => break,
                Err(TryPushError::Full(v)) => {
                    value = v;
                    thread::yield_now();
                }
                Err(e) => panic!("push: {e}"),
            }
        }
    }
}

/// Pops `n` values with `try_pop`, yielding while empty.
fn pop_n(rx: &mut model::Consumer<u32>, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.try_pop() {
            Ok(v) => out.push(v),
            Err(TryPopError::Empty) => thread::yield_now(),
            Err(e) => panic!("pop: {e}"),
        }
    }
    out
}

#[test]
fn push_pop_across_wrap_around_with_and_without_express_pushes() {
    for express in [false, true] {
        loom::model(move || {
            let (mut tx, mut rx) = model::spsc::<u32>(2);
            tx.set_express(express);
            let producer = thread::spawn(move || push_all(&mut tx, 1..=4));
            assert_eq!(pop_n(&mut rx, 4), [1, 2, 3, 4]);
            producer.join().unwrap();
            assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
        });
    }
}

#[test]
fn express_pushes_reach_a_blocked_pop() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(2);
        tx.set_express(true);
        let producer = thread::spawn(move || {
            tx.push(7).unwrap();
            tx.push(8).unwrap();
        });
        assert_eq!(rx.pop(), Ok(7));
        assert_eq!(rx.pop(), Ok(8));
        producer.join().unwrap();
    });
}

#[test]
fn chunk_commit_and_release() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(4);
        let producer = thread::spawn(move || {
            let values = [1, 2, 3, 4, 5, 6];
            let mut sent = 0;
            while sent < values.len() {
                match tx.push_slice(&values[sent..]).unwrap() {
                    0 => thread::yield_now(),
                    n => sent += n,
                }
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u32; 3];
        while got.len() < 6 {
            match rx.pop_slice(&mut buf).unwrap() {
                0 => thread::yield_now(),
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        producer.join().unwrap();
    });
}

#[test]
fn a_push_racing_a_consumer_going_to_sleep_is_never_lost() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(2);
        let producer = thread::spawn(move || {
            tx.push(7).unwrap();
            tx.push(8).unwrap();
            tx
        });
        // If a wake-up were lost, a pop would park forever and loom would report a deadlock.
        assert_eq!(rx.pop(), Ok(7));
        assert_eq!(rx.pop(), Ok(8));
        drop(producer.join().unwrap());
    });
}

#[test]
fn a_pop_racing_a_producer_blocked_on_full_wakes_it() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(1);
        let producer = thread::spawn(move || {
            tx.push(1).unwrap();
            tx.push(2).unwrap();
        });
        assert_eq!(rx.pop(), Ok(1));
        assert_eq!(rx.pop(), Ok(2));
        producer.join().unwrap();
    });
}

#[test]
fn close_racing_a_blocked_pop_wakes_it_after_the_drain() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(2);
        let producer = thread::spawn(move || {
            tx.push(5).unwrap();
            tx.close();
        });
        assert_eq!(rx.pop(), Ok(5));
        assert_eq!(rx.pop(), Err(PopError::Disconnected));
        producer.join().unwrap();
    });
}

#[test]
fn a_consumer_closing_wakes_a_producer_blocked_on_full() {
    loom::model(|| {
        let (mut tx, rx) = model::spsc::<u32>(1);
        tx.push(1).unwrap();
        let producer = thread::spawn(move || tx.push(2));
        rx.close();
        match producer.join().unwrap() {
            // Either the close came first, or the second push found the ring full and was
            // woken by the close: both hand the value back.
            Err(PushError::Disconnected(2)) => {}
            other => panic!("expected Disconnected(2), got {other:?}"),
        }
    });
}

/// Pushes every value (blocking, parking at once while full).
fn mpmc_push_all(tx: &mut model::Endpoint<u32>, values: impl IntoIterator<Item = u32>) {
    for value in values {
        tx.push(value).unwrap();
    }
}

/// Pops (blocking) until every producer closed and the ring is drained.
fn mpmc_drain(rx: &mut model::Endpoint<u32>) -> Vec<u32> {
    let mut got = Vec::new();
    loop {
        match rx.pop() {
            Ok(v) => got.push(v),
            Err(PopError::Disconnected) => return got,
            Err(e) => panic!("pop: {e}"),
        }
    }
}

/// Each producer's values in the order it pushed them.
fn in_order(got: &[u32], producer: impl Fn(u32) -> bool) -> bool {
    got.iter()
        .copied()
        .filter(|&v| producer(v))
        .collect::<Vec<_>>()
        .windows(2)
        .all(|w| w[0] < w[1])
}

#[test]
fn mpmc_two_producers_one_consumer() {
    loom::model(|| {
        let mut ring = model::mpmc::<u32>(2, 3);
        let mut rx = ring.consumer();
        let producers: Vec<_> = [[1, 2], [11, 12]]
            .into_iter()
            .map(|values| {
                let mut tx = ring.producer();
                thread::spawn(move || {
                    mpmc_push_all(&mut tx, values);
                    tx.close();
                })
            })
            .collect();
        let got = mpmc_drain(&mut rx);
        for p in producers {
            p.join().unwrap();
        }
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 11, 12], "every item exactly once");
        assert!(in_order(&got, |v| v < 10) && in_order(&got, |v| v > 10));
    });
}

#[test]
fn mpmc_one_producer_two_consumers() {
    loom::model(|| {
        let mut ring = model::mpmc::<u32>(2, 3);
        let mut tx = ring.producer();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let mut rx = ring.consumer();
                thread::spawn(move || mpmc_drain(&mut rx))
            })
            .collect();
        mpmc_push_all(&mut tx, [1, 2]);
        tx.close();
        let mut all = Vec::new();
        for c in consumers {
            let got = c.join().unwrap();
            assert!(
                in_order(&got, |_| true),
                "a consumer saw {got:?} out of order"
            );
            all.extend(got);
        }
        all.sort_unstable();
        assert_eq!(all, [1, 2], "every item exactly once");
    });
}

#[test]
fn mpmc_wrap_around_with_capacity_two() {
    loom::model(|| {
        let mut ring = model::mpmc::<u32>(2, 2);
        let mut tx = ring.producer();
        let mut rx = ring.consumer();
        let producer = thread::spawn(move || {
            for v in 1..=5 {
                tx.push(v).unwrap();
            }
            tx.close();
        });
        assert_eq!(mpmc_drain(&mut rx), [1, 2, 3, 4, 5]);
        producer.join().unwrap();
    });
}
