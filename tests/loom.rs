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
fn push_pop_across_wrap_around() {
    loom::model(|| {
        let (mut tx, mut rx) = model::spsc::<u32>(2);
        let producer = thread::spawn(move || push_all(&mut tx, 1..=4));
        assert_eq!(pop_n(&mut rx, 4), [1, 2, 3, 4]);
        producer.join().unwrap();
        assert_eq!(rx.try_pop(), Err(TryPopError::Empty));
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
