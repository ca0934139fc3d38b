//! Blocking, disconnects, crashes and stale names, with real processes and SIGKILL.
#![cfg(not(shmlane_loom))]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::offsets::{CONSUMER_POS, CONSUMER_WAITERS, PRODUCER_POS, PRODUCER_WAITERS};
use common::{eventually, expect_exit, fork, unique, Raw, SKIP};
use shmlane::{spsc, Backing, Error, PeerState, PopError, PushError, TryPushError, WaitMode};

/// Blocks the calling process forever (until killed).
fn park_forever() -> i32 {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// A child process that opens the channel `name`, pushes `0..count` as its producer, and
/// then stays alive until killed.
fn fork_producer_then_park(name: &str, count: u64) -> common::Child {
    let name = name.to_owned();
    fork(move || {
        let chan = spsc::Channel::<u64>::open(Backing::shm(&name)).unwrap();
        let mut tx = chan.producer().unwrap();
        for i in 0..count {
            tx.push(i).unwrap();
        }
        park_forever()
    })
}

const ITEMS: u64 = 100_000;

#[test]
fn a_killed_producer_is_detected_after_the_drain() {
    let _serial = common::serial();
    let name = unique("kill-producer");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 1024).unwrap();
    let mut producer = fork_producer_then_park(&name, ITEMS);
    let mut rx = chan.consumer().unwrap();
    for i in 0..ITEMS {
        assert_eq!(rx.pop(), Ok(i));
    }
    // Kill the producer once this thread is parked in pop() on the empty ring.
    let watch = Raw::shm(&name, 384);
    let killed_at = std::thread::scope(|s| {
        let killer = s.spawn(|| {
            assert!(eventually(Duration::from_secs(10), || watch
                .u32(PRODUCER_WAITERS)
                .load(Relaxed)
                > 0));
            producer.kill();
            Instant::now()
        });
        assert_eq!(rx.pop(), Err(PopError::Disconnected));
        let returned_at = Instant::now();
        let killed_at = killer.join().unwrap();
        let detection = returned_at.duration_since(killed_at);
        assert!(
            detection < Duration::from_millis(200),
            "death noticed after {detection:?}"
        );
        killed_at
    });
    assert!(killed_at.elapsed() < Duration::from_secs(5));
    assert_eq!(rx.producer_state(), PeerState::Died);
    assert_eq!(rx.try_pop(), Err(shmlane::TryPopError::Disconnected));
}

#[test]
fn a_polling_consumer_notices_a_killed_producer_and_a_closed_one_at_once() {
    let _serial = common::serial();
    let name = unique("poll-killed");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 64).unwrap();
    let mut producer = fork_producer_then_park(&name, 10);
    let mut rx = chan.consumer().unwrap();
    let mut next = 0;
    let start = Instant::now();
    while next < 10 {
        match rx.try_pop() {
            Ok(v) => {
                assert_eq!(v, next);
                next += 1;
            }
            Err(e) => {
                assert_eq!(e, shmlane::TryPopError::Empty);
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "items never came"
                );
            }
        }
    }
    producer.kill();
    // Most of a poller's misses skip the liveness probe; the death is still noticed.
    let killed_at = Instant::now();
    let mut misses = 0u64;
    loop {
        match rx.try_pop() {
            Err(shmlane::TryPopError::Empty) => misses += 1,
            Err(shmlane::TryPopError::Disconnected) => break,
            other => panic!("expected Empty, then Disconnected; got {other:?}"),
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "death not noticed after {misses} misses"
        );
    }
    assert_eq!(rx.producer_state(), PeerState::Died);
    drop(rx);

    // A producer that closes is seen at the first miss after it.
    let mut rx = chan.consumer().unwrap();
    let tx = chan.producer().unwrap();
    for _ in 0..100 {
        assert_eq!(rx.try_pop(), Err(shmlane::TryPopError::Empty));
    }
    drop(tx);
    assert_eq!(rx.try_pop(), Err(shmlane::TryPopError::Disconnected));
}

#[test]
fn a_killed_consumer_fails_a_blocked_push_with_its_value() {
    let _serial = common::serial();
    let name = unique("kill-consumer");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 8).unwrap();
    let child_name = name.clone();
    let mut consumer = fork(move || {
        let chan = spsc::Channel::<u64>::open(Backing::shm(&child_name)).unwrap();
        let _rx = chan.consumer().unwrap();
        park_forever()
    });
    let mut tx = chan.producer().unwrap();
    assert!(eventually(Duration::from_secs(10), || tx.consumer_state()
        == PeerState::Alive));
    for i in 0..8 {
        tx.try_push(i).unwrap();
    }
    assert!(matches!(tx.try_push(8), Err(TryPushError::Full(8))));
    let watch = Raw::shm(&name, 384);
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(eventually(Duration::from_secs(10), || watch
                .u32(CONSUMER_WAITERS)
                .load(Relaxed)
                > 0));
            consumer.kill();
        });
        match tx.push(99) {
            Err(PushError::Disconnected(99)) => {}
            other => panic!("expected Disconnected(99), got {other:?}"),
        }
    });
    assert_eq!(tx.consumer_state(), PeerState::Died);
    assert!(matches!(
        tx.try_push(100),
        Err(TryPushError::Disconnected(100))
    ));
}

#[test]
fn a_cleanly_closed_producer_is_drained_then_disconnected() {
    let _serial = common::serial();
    let name = unique("close-producer");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 64).unwrap();
    let child_name = name.clone();
    let mut producer = fork(move || {
        let chan = spsc::Channel::<u64>::open(Backing::shm(&child_name)).unwrap();
        let mut tx = chan.producer().unwrap();
        for i in 0..1000 {
            tx.push(i).unwrap();
        }
        0 // tx drops here: a clean close
    });
    let mut rx = chan.consumer().unwrap();
    for i in 0..1000 {
        assert_eq!(rx.pop(), Ok(i));
    }
    assert_eq!(rx.pop(), Err(PopError::Disconnected));
    assert_eq!(rx.producer_state(), PeerState::Closed);
    assert_eq!(producer.wait(), 0);
}

#[test]
fn a_cleanly_closed_consumer_disconnects_the_producer() {
    let _serial = common::serial();
    let name = unique("close-consumer");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 4).unwrap();
    let child_name = name.clone();
    let mut consumer = fork(move || {
        let chan = spsc::Channel::<u64>::open(Backing::shm(&child_name)).unwrap();
        let mut rx = chan.consumer().unwrap();
        for i in 0..10 {
            assert_eq!(rx.pop(), Ok(i));
        }
        0 // rx drops here
    });
    let mut tx = chan.producer().unwrap();
    for i in 0..10 {
        tx.push(i).unwrap();
    }
    // Blocks on the full ring (or finds the consumer closed): either way, the value back.
    let mut value = 10;
    loop {
        match tx.push_timeout(value, Duration::from_secs(10)) {
            Ok(()) => value += 1,
            Err(PushError::Disconnected(v)) => {
                assert_eq!(v, value);
                break;
            }
            Err(e) => panic!("expected Disconnected, got {e}"),
        }
    }
    assert_eq!(consumer.wait(), 0);
    assert_eq!(tx.consumer_state(), PeerState::Closed);
}

#[test]
fn a_restarted_consumer_continues_where_the_last_stopped() {
    let _serial = common::serial();
    let chan = spsc::Channel::<u64>::create(Backing::memfd("restart"), 16).unwrap();
    let mut tx = chan.producer().unwrap();
    for i in 0..10 {
        tx.push(i).unwrap();
    }
    let mut rx = chan.consumer().unwrap();
    assert_eq!((rx.pop(), rx.pop()), (Ok(0), Ok(1)));
    drop(rx);
    assert!(matches!(
        tx.try_push(10),
        Err(TryPushError::Disconnected(10))
    ));
    let mut rx = chan.consumer().unwrap();
    assert_eq!(tx.consumer_state(), PeerState::Alive);
    tx.push(10).unwrap();
    for i in 2..=10 {
        assert_eq!(rx.pop(), Ok(i));
    }
}

/// Exit codes of a child that tries to claim the producer role.
fn try_claim_producer(name: &str) -> i32 {
    match spsc::Channel::<u64>::open(Backing::shm(name))
        .unwrap()
        .producer()
    {
        Ok(_) => 0,
        Err(Error::RoleTaken { role: "producer" }) => 3,
        Err(e) => {
            eprintln!("unexpected: {e}");
            1
        }
    }
}

#[test]
fn one_live_producer_at_a_time() {
    let _serial = common::serial();
    let name = unique("role");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 8).unwrap();
    let tx = chan.producer().unwrap();
    let n = name.clone();
    assert_eq!(fork(move || try_claim_producer(&n)).wait(), 3);
    assert!(matches!(
        chan.producer(),
        Err(Error::RoleTaken { role: "producer" })
    ));
    // After a clean exit the role is free again.
    drop(tx);
    let n = name.clone();
    assert_eq!(fork(move || try_claim_producer(&n)).wait(), 0);

    // A holder that is killed frees it too.
    let n = name.clone();
    let mut holder = fork(move || {
        let chan = spsc::Channel::<u64>::open(Backing::shm(&n)).unwrap();
        let _tx = chan.producer().unwrap();
        park_forever()
    });
    let consumer = chan.consumer().unwrap();
    assert!(eventually(Duration::from_secs(10), || consumer
        .producer_state()
        == PeerState::Alive));
    let n = name.clone();
    assert_eq!(fork(move || try_claim_producer(&n)).wait(), 3);
    holder.kill();
    assert_eq!(consumer.producer_state(), PeerState::Died);
    assert!(chan.producer().is_ok());
}

#[test]
fn a_consumer_in_another_pid_namespace_detects_the_producer_crash() {
    let _serial = common::serial();
    let name = unique("pidns");
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 64).unwrap();
    let mut producer = fork_producer_then_park(&name, 100);
    let n = name.clone();
    let mut namespaced = fork(move || {
        // SAFETY: unshare then fork: the grandchild is pid 1 of a new pid namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            eprintln!(
                "unshare(CLONE_NEWPID) refused: {}",
                std::io::Error::last_os_error()
            );
            return SKIP;
        }
        let mut consumer = fork(move || {
            // SAFETY: getpid has no preconditions.
            assert_eq!(unsafe { libc::getpid() }, 1, "not in a new pid namespace");
            let chan = spsc::Channel::<u64>::open(Backing::shm(&n)).unwrap();
            let mut rx = chan.consumer().unwrap();
            for i in 0..100 {
                assert_eq!(rx.pop(), Ok(i));
            }
            assert_eq!(rx.pop(), Err(PopError::Disconnected));
            assert_eq!(rx.producer_state(), PeerState::Died);
            0
        });
        consumer.wait()
    });
    // Kill the producer once the namespaced consumer took all 100 and parked for more.
    let watch = Raw::shm(&name, 384);
    assert!(eventually(Duration::from_secs(10), || {
        watch.u64(CONSUMER_POS).load(Relaxed) == 100
            && watch.u64(PRODUCER_POS).load(Relaxed) == 100
            && watch.u32(PRODUCER_WAITERS).load(Relaxed) > 0
    }));
    producer.kill();
    expect_exit(&mut namespaced, 0, "consumer in a new pid namespace");
    drop(chan);
}

#[test]
fn a_stale_name_is_reported_and_reclaimed_but_a_live_one_never() {
    let _serial = common::serial();
    let name = unique("stale");
    let n = name.clone();
    let mut creator = fork(move || {
        let chan = spsc::Channel::<u64>::create(Backing::shm(&n), 8).unwrap();
        chan.producer().unwrap().push(41).unwrap();
        let _tx = chan.producer(); // RoleTaken: the first was dropped, so this one holds it
        park_forever()
    });
    assert!(eventually(Duration::from_secs(10), || Path::new(
        "/dev/shm"
    )
    .join(&name)
    .exists()));
    // Live: create refuses, reclaim refuses, remove refuses; the channel is untouched.
    let live =
        || spsc::Channel::<u64>::open(Backing::shm(&name)).and_then(|c| c.consumer().map(|_| c));
    assert!(eventually(Duration::from_secs(10), || live().is_ok()));
    match spsc::Channel::<u64>::create(Backing::shm(&name), 8) {
        Err(
            e @ Error::AlreadyExists {
                live: Some(true), ..
            },
        ) => assert!(e.to_string().contains("live process holds it")),
        other => panic!("expected AlreadyExists (live), got {:?}", other.err()),
    }
    assert!(matches!(
        spsc::Channel::<u64>::builder()
            .capacity(8)
            .reclaim_stale(true)
            .create(Backing::shm(&name)),
        Err(Error::AlreadyExists {
            live: Some(true),
            ..
        })
    ));
    assert!(matches!(
        spsc::Channel::<u64>::remove(Backing::shm(&name)),
        Err(Error::AlreadyExists {
            live: Some(true),
            ..
        })
    ));
    let chan = spsc::Channel::<u64>::open(Backing::shm(&name)).unwrap();
    assert_eq!(
        chan.consumer().unwrap().pop_timeout(Duration::from_secs(5)),
        Ok(41)
    );
    drop(chan);

    // Killed: the name stays, and is stale.
    creator.kill();
    assert!(Path::new("/dev/shm").join(&name).exists());
    match spsc::Channel::<u64>::create(Backing::shm(&name), 8) {
        Err(
            e @ Error::AlreadyExists {
                live: Some(false), ..
            },
        ) => {
            assert!(e.to_string().contains("no live process holds it"), "{e}");
        }
        other => panic!("expected AlreadyExists (stale), got {:?}", other.err()),
    }
    let fresh = spsc::Channel::<u64>::builder()
        .capacity(8)
        .reclaim_stale(true)
        .create(Backing::shm(&name))
        .unwrap();
    let mut rx = fresh.consumer().unwrap();
    assert_eq!(
        rx.try_pop(),
        Err(shmlane::TryPopError::Empty),
        "a fresh ring, not the old one"
    );
    drop((rx, fresh));
    assert!(!Path::new("/dev/shm").join(&name).exists());

    // An operator's remove of a stale name.
    let n = name.clone();
    let mut creator = fork(move || {
        let _chan = spsc::Channel::<u64>::create(Backing::shm(&n), 8).unwrap();
        park_forever()
    });
    assert!(eventually(Duration::from_secs(10), || Path::new(
        "/dev/shm"
    )
    .join(&name)
    .exists()));
    creator.kill();
    spsc::Channel::<u64>::remove(Backing::shm(&name)).unwrap();
    assert!(!Path::new("/dev/shm").join(&name).exists());
}

#[test]
fn timeouts_return_the_value_after_about_the_time_asked() {
    let _serial = common::serial();
    let chan = spsc::Channel::<u64>::create(Backing::memfd("timeouts"), 2).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    for mode in [WaitMode::Adaptive, WaitMode::BusyPoll, WaitMode::Park] {
        rx.set_wait_mode(mode);
        tx.set_wait_mode(mode);
        let start = Instant::now();
        assert_eq!(
            rx.pop_timeout(Duration::from_millis(80)),
            Err(PopError::Timeout)
        );
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(80) && waited < Duration::from_secs(2),
            "{mode:?}: {waited:?}"
        );

        tx.push(1).unwrap();
        tx.push(2).unwrap();
        let start = Instant::now();
        match tx.push_timeout(3, Duration::from_millis(80)) {
            Err(PushError::Timeout(3)) => {}
            other => panic!("{mode:?}: expected Timeout(3), got {other:?}"),
        }
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(80) && waited < Duration::from_secs(2),
            "{mode:?}: {waited:?}"
        );
        assert_eq!((rx.pop(), rx.pop()), (Ok(1), Ok(2)));
    }
}

#[test]
fn every_wait_mode_moves_items_across_processes() {
    let _serial = common::serial();
    for mode in [WaitMode::Adaptive, WaitMode::BusyPoll, WaitMode::Park] {
        let name = unique("modes");
        let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 16).unwrap();
        let n = name.clone();
        let mut producer = fork(move || {
            let chan = spsc::Channel::<u64>::open(Backing::shm(&n)).unwrap();
            let mut tx = chan.producer().unwrap();
            tx.set_wait_mode(mode);
            for i in 0..20_000 {
                tx.push(i).unwrap();
            }
            0
        });
        let mut rx = chan.consumer().unwrap();
        rx.set_wait_mode(mode);
        let mut received = 0;
        loop {
            match rx.pop() {
                Ok(v) => assert_eq!(v, received, "{mode:?}"),
                Err(PopError::Disconnected) => break,
                Err(e) => panic!("{mode:?}: {e}"),
            }
            received += 1;
        }
        assert_eq!(received, 20_000, "{mode:?}");
        assert_eq!(producer.wait(), 0);
    }
}
