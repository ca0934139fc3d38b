//! MPMC channels across real processes: exactly-once delivery, endpoints joining and
//! leaving, producers and consumers killed mid-stream, and the registry's limits.
#![cfg(not(shmlane_loom))]

#[path = "../examples/common/affinity.rs"]
mod affinity;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering::{AcqRel, Relaxed};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::thread;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::offsets::{CONSUMER_POS, ENTRY_CLAIMING, ENTRY_LEN, PRODUCER_POS, REGISTRY};
use common::{eventually, fork, unique, Child, Raw, ScratchDir};
use shmlane::{
    mpmc, Backing, ChunkError, Corruption, Error, PopError, PushError, TryPopError, TryPushError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Job {
    producer: u64,
    seq: u64,
}

fn open(name: &str) -> mpmc::Channel<Job> {
    mpmc::Channel::open(Backing::shm(name)).unwrap()
}

/// A producer process: pushes `count` jobs numbered from 0, then closes.
fn spawn_producer(name: &str, id: u64, count: u64) -> Child {
    let name = name.to_string();
    fork(move || {
        let mut tx = open(&name).producer().unwrap();
        for seq in 0..count {
            tx.push(Job { producer: id, seq }).unwrap();
        }
        0
    })
}

/// A consumer process: pops until `limit` jobs, the end, or (with `quiet`) that long without
/// a job; checks that each producer's jobs arrive in order, and writes what it got to `out`
/// (and the positions of holes left by dead producers, if any, to `out.holes`). Exit 0 at
/// the end of the stream, 3 when it stopped at `limit`, 4 when it stopped for quiet.
fn spawn_consumer(name: &str, out: &Path, limit: u64, quiet: Option<Duration>) -> Child {
    let (name, out) = (name.to_string(), out.to_path_buf());
    fork(move || {
        let mut rx = open(&name).consumer().unwrap();
        let mut got: Vec<Job> = Vec::new();
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        let mut holes: Vec<u64> = Vec::new();
        let code = loop {
            if got.len() as u64 == limit {
                break 3;
            }
            let popped = match quiet {
                Some(quiet) => rx.pop_timeout(quiet),
                None => rx.pop(),
            };
            match popped {
                Ok(job) => {
                    if let Some(&prev) = last.get(&job.producer) {
                        assert!(
                            job.seq > prev,
                            "producer {} out of order: {} after {prev}",
                            job.producer,
                            job.seq
                        );
                    }
                    last.insert(job.producer, job.seq);
                    got.push(job);
                }
                Err(PopError::Disconnected) => break 0,
                Err(PopError::Timeout) => break 4,
                Err(PopError::ProducerDied { position }) => holes.push(position),
                Err(e) => panic!("consumer: {e}"),
            }
        };
        std::fs::write(&out, bytemuck::cast_slice::<Job, u8>(&got)).unwrap();
        if !holes.is_empty() {
            std::fs::write(
                out.with_extension("holes"),
                bytemuck::cast_slice::<u64, u8>(&holes),
            )
            .unwrap();
        }
        code
    })
}

/// Every job each consumer wrote, checked to be received exactly once across all of them.
fn collect(dir: &ScratchDir) -> BTreeMap<u64, Vec<u64>> {
    let mut by_producer: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for name in dir.entries().into_iter().filter(|n| !n.ends_with(".holes")) {
        let bytes = std::fs::read(dir.path(&name)).unwrap();
        for job in bytes
            .chunks_exact(std::mem::size_of::<Job>())
            .map(bytemuck::pod_read_unaligned::<Job>)
        {
            by_producer.entry(job.producer).or_default().push(job.seq);
        }
    }
    for seqs in by_producer.values_mut() {
        seqs.sort_unstable();
        let len = seqs.len();
        seqs.dedup();
        assert_eq!(seqs.len(), len, "a job was delivered twice");
    }
    by_producer
}

#[test]
fn four_by_four_processes_deliver_a_million_jobs_exactly_once() {
    let _serial = common::serial();
    const PER_PRODUCER: u64 = 250_000;
    let name = unique("mpmc-4x4");
    let dir = ScratchDir::new("mpmc-4x4-out");
    let _chan = mpmc::Channel::<Job>::create(Backing::shm(&name), 1024).unwrap();
    let mut consumers: Vec<Child> = (0..4)
        .map(|k| spawn_consumer(&name, &dir.path(&format!("c{k}")), u64::MAX, None))
        .collect();
    let mut producers: Vec<Child> = (0..4)
        .map(|id| spawn_producer(&name, id, PER_PRODUCER))
        .collect();
    for p in &mut producers {
        assert_eq!(p.wait(), 0);
    }
    for c in &mut consumers {
        assert_eq!(c.wait(), 0);
    }
    let got = collect(&dir);
    assert_eq!(got.len(), 4);
    for (id, seqs) in got {
        assert_eq!(seqs, (0..PER_PRODUCER).collect::<Vec<_>>(), "producer {id}");
    }
}

#[test]
fn endpoints_join_and_leave_while_traffic_flows() {
    let _serial = common::serial();
    let name = unique("mpmc-churn");
    let dir = ScratchDir::new("mpmc-churn-out");
    let chan = mpmc::Channel::<Job>::builder()
        .capacity(64)
        .registry_len(8)
        .create(Backing::shm(&name))
        .unwrap();
    // A producer that stays registered until the end, pushing nothing: however fast the
    // others are done, consumers do not see every producer gone before the last ones join.
    let keeper = chan.producer().unwrap();
    // One consumer stays for the whole run, so producers never see every consumer gone.
    let mut steady = spawn_consumer(&name, &dir.path("steady"), u64::MAX, None);
    let mut producers = vec![
        spawn_producer(&name, 0, 60_000),
        spawn_producer(&name, 1, 60_000),
    ];
    // Consumers that take a few thousand jobs and leave, one after another, each taking a
    // registry entry a previous one released. One that starts after the traffic is over
    // leaves after a quiet second.
    for round in 0..6 {
        let out = dir.path(&format!("round{round}"));
        let mut c = spawn_consumer(&name, &out, 3_000, Some(Duration::from_secs(1)));
        assert!([3, 4].contains(&c.wait()));
        if round == 2 {
            // A producer that joins mid-stream and leaves.
            producers.push(spawn_producer(&name, 2, 20_000));
        }
    }
    // Producers in this process too, joining and leaving.
    for id in 3..5 {
        let mut tx = chan.producer().unwrap();
        for seq in 0..5_000 {
            tx.push(Job { producer: id, seq }).unwrap();
        }
    }
    for p in &mut producers {
        assert_eq!(p.wait(), 0);
    }
    // The last producer leaves: the steady consumer drains the ring and sees the end.
    drop(keeper);
    assert_eq!(steady.wait(), 0);
    let got = collect(&dir);
    let expected = [
        (0, 60_000),
        (1, 60_000),
        (2, 20_000),
        (3, 5_000),
        (4, 5_000),
    ];
    assert_eq!(got.len(), expected.len());
    for (id, count) in expected {
        assert_eq!(got[&id], (0..count).collect::<Vec<_>>(), "producer {id}");
    }
}

/// Byte offset of registry entry `i`'s claiming word.
fn claiming(i: usize) -> usize {
    REGISTRY + i * ENTRY_LEN + ENTRY_CLAIMING
}

/// Which registry entries are held right now, by state word.
fn entry_states(raw: &Raw, len: usize) -> Vec<u32> {
    (0..len)
        .map(|i| raw.u32(REGISTRY + i * ENTRY_LEN).load(Relaxed))
        .collect()
}

/// Job `seq` of producer 0, the producer of the hole scenario below.
fn job(seq: u64) -> Job {
    Job { producer: 0, seq }
}

/// A channel whose position 1 is a hole: job 0 at position 0, then a producer process that
/// claimed position 1 as the protocol says (record first, then CAS) and never publishes, then
/// jobs 1..4 at positions 2..5. The holder is still alive (it waits in `pause`).
fn channel_with_a_hole_at_1(
    name: &str,
) -> (
    mpmc::Channel<Job>,
    mpmc::Consumer<Job>,
    mpmc::Producer<Job>,
    Child,
) {
    let chan = mpmc::Channel::<Job>::builder()
        .capacity(16)
        .registry_len(4)
        .create(Backing::shm(name))
        .unwrap();
    let rx = chan.consumer().unwrap(); // entry 0
    let mut tx = chan.producer().unwrap(); // entry 1
    tx.push(job(0)).unwrap();
    let n = name.to_string();
    let holder = fork(move || {
        let _tx = open(&n).producer().unwrap(); // entry 2
        let raw = Raw::shm(&n, 4096);
        raw.u64(claiming(2)).store(1, Relaxed);
        assert_eq!(
            raw.u64(PRODUCER_POS)
                .compare_exchange(1, 2, AcqRel, Relaxed),
            Ok(1)
        );
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    let raw = Raw::shm(name, 4096);
    assert!(eventually(Duration::from_secs(10), || raw
        .u64(PRODUCER_POS)
        .load(Relaxed)
        == 2));
    for seq in 1..4 {
        tx.push(job(seq)).unwrap();
    }
    (chan, rx, tx, holder)
}

#[test]
fn a_producer_killed_between_claim_and_publish_leaves_a_reported_hole() {
    let _serial = common::serial();
    let name = unique("mpmc-hole");
    let (_chan, mut rx, tx, mut dying) = channel_with_a_hole_at_1(&name);
    assert_eq!(rx.pop(), Ok(job(0)));
    // The hole at position 1 holds everything behind it while its producer lives.
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(100)),
        Err(PopError::Timeout)
    );
    dying.kill();
    assert_eq!(
        rx.pop_timeout(Duration::from_secs(5)),
        Err(PopError::ProducerDied { position: 1 })
    );
    for seq in 1..4 {
        assert_eq!(rx.pop(), Ok(job(seq)));
    }
    drop(tx);
    assert_eq!(rx.pop(), Err(PopError::Disconnected));
}

/// A `pop_slice` that takes job 0 and then meets the hole at position 1 that a killed
/// producer left (`channel_with_a_hole_at_1`): it ends there, and the job is not lost to the
/// error. Returns the consumer (and what keeps the channel open), the hole not yet reported.
fn popped_up_to_a_hole(
    name: &str,
) -> (mpmc::Channel<Job>, mpmc::Consumer<Job>, mpmc::Producer<Job>) {
    let (chan, mut rx, tx, mut dying) = channel_with_a_hole_at_1(name);
    dying.kill();
    // Past the probe interval, so the first pop that meets the hole checks its producer.
    std::thread::sleep(Duration::from_millis(20));
    let mut out = [Job::zeroed(); 8];
    assert_eq!(rx.pop_slice(&mut out), Ok(1));
    assert_eq!(out[0], job(0));
    (chan, rx, tx)
}

#[test]
fn pop_slice_keeps_what_it_popped_before_a_hole_and_the_next_pops_report_it_once() {
    let _serial = common::serial();
    let (_chan, mut rx, _tx) = popped_up_to_a_hole(&unique("mpmc-slice-hole"));
    // The next pop reports the hole, once.
    assert_eq!(rx.try_pop(), Err(TryPopError::ProducerDied { position: 1 }));
    let mut out = [Job::zeroed(); 8];
    assert_eq!(rx.pop_slice(&mut out), Ok(3));
    assert_eq!(out[..3], [job(1), job(2), job(3)]);
    assert_eq!(rx.pop_slice(&mut out), Ok(0));
}

#[test]
fn a_blocking_pop_reports_the_hole_pop_slice_left_once_and_then_the_values_behind_it() {
    let _serial = common::serial();
    let (_chan, mut rx, _tx) = popped_up_to_a_hole(&unique("mpmc-slice-hole-pop"));
    assert_eq!(rx.pop(), Err(PopError::ProducerDied { position: 1 }));
    for seq in 1..4 {
        assert_eq!(rx.pop(), Ok(job(seq)));
    }
    assert_eq!(
        rx.pop_timeout(Duration::from_millis(10)),
        Err(PopError::Timeout)
    );
}

#[test]
fn pop_slice_that_meets_a_hole_first_reports_it() {
    let _serial = common::serial();
    let name = unique("mpmc-slice-hole-first");
    let (_chan, mut rx, _tx, mut dying) = channel_with_a_hole_at_1(&name);
    assert_eq!(rx.pop(), Ok(job(0)));
    dying.kill();
    let mut out = [Job::zeroed(); 8];
    // The first looks may come before the probe interval is over: nothing then.
    let mut result = Ok(0);
    assert!(eventually(Duration::from_secs(5), || {
        result = rx.pop_slice(&mut out);
        result != Ok(0)
    }));
    assert_eq!(result, Err(ChunkError::ProducerDied { position: 1 }));
    assert_eq!(rx.pop_slice(&mut out), Ok(3));
    assert_eq!(out[..3], [job(1), job(2), job(3)]);
}

/// Byte offset of slot `i`'s sequence word in an MPMC channel of u64 with a registry of 4.
fn u64_slot_seq(i: usize) -> usize {
    REGISTRY + 4 * ENTRY_LEN + 16 * i
}

/// An 8-slot u64 channel in /dev/shm with a producer and a consumer, and its bytes as a
/// hostile peer sees them.
fn u64_channel_seen_raw(
    label: &str,
) -> (
    mpmc::Channel<u64>,
    mpmc::Producer<u64>,
    mpmc::Consumer<u64>,
    Raw,
) {
    let name = unique(label);
    let chan = mpmc::Channel::<u64>::builder()
        .capacity(8)
        .registry_len(4)
        .create(Backing::shm(&name))
        .unwrap();
    let tx = chan.producer().unwrap();
    let rx = chan.consumer().unwrap();
    let raw = Raw::shm(&name, 4096);
    (chan, tx, rx, raw)
}

#[test]
fn slices_that_meet_corruption_midway_keep_the_count_of_what_moved() {
    let _serial = common::serial();
    let (_chan, mut tx, mut rx, raw) = u64_channel_seen_raw("mpmc-slice-corrupt");
    // Slot 2 claims to belong to position 5: impossible for the producer at position 2.
    raw.u64(u64_slot_seq(2)).store(5, Relaxed);
    assert_eq!(tx.push_slice(&[10, 11, 12, 13]), Ok(2));
    assert!(matches!(
        tx.push_slice(&[12, 13]),
        Err(ChunkError::Corrupt(c)) if c.found == 5
    ));
    // Repaired by hand: the producer goes on; then the consumer meets the same lie.
    raw.u64(u64_slot_seq(2)).store(2, Relaxed);
    assert_eq!(tx.push_slice(&[12, 13]), Ok(2));
    raw.u64(u64_slot_seq(2)).store(5, Relaxed);
    let mut out = [0u64; 8];
    assert_eq!(rx.pop_slice(&mut out), Ok(2));
    assert_eq!(out[..2], [10, 11]);
    assert!(matches!(
        rx.pop_slice(&mut out),
        Err(ChunkError::Corrupt(c)) if c.found == 5
    ));
}

#[test]
fn positions_past_the_limit_are_corruption_not_overflow() {
    let _serial = common::serial();
    let (chan, mut tx, mut rx, raw) = u64_channel_seen_raw("mpmc-huge-position");
    tx.try_push(10).unwrap();
    let wait = Duration::from_millis(10);
    // A position at the end of u64: the next claim would move it past the end (a panic in
    // debug builds, a wrap to 0 in release ones).
    let huge = |c: &Corruption, counter: &str| c.counter == counter && c.found == u64::MAX;
    raw.u64(PRODUCER_POS).store(u64::MAX, Relaxed);
    let enqueue = "enqueue position";
    assert!(matches!(tx.try_push(11), Err(TryPushError::Corrupt(11, c)) if huge(&c, enqueue)));
    assert!(matches!(
        tx.push_timeout(11, wait),
        Err(PushError::Corrupt(11, c)) if huge(&c, enqueue)
    ));
    assert!(matches!(tx.push_slice(&[11]), Err(ChunkError::Corrupt(c)) if huge(&c, enqueue)));
    assert!(matches!(chan.consumer(), Err(Error::Corrupt(c)) if huge(&c, enqueue)));
    // What was published before the lie is still delivered.
    assert_eq!(rx.try_pop(), Ok(10));
    raw.u64(PRODUCER_POS).store(1, Relaxed);
    raw.u64(CONSUMER_POS).store(u64::MAX, Relaxed);
    let dequeue = "dequeue position";
    assert!(matches!(rx.try_pop(), Err(TryPopError::Corrupt(c)) if huge(&c, dequeue)));
    assert!(matches!(rx.pop_timeout(wait), Err(PopError::Corrupt(c)) if huge(&c, dequeue)));
    let mut out = [0u64; 2];
    assert!(matches!(rx.pop_slice(&mut out), Err(ChunkError::Corrupt(c)) if huge(&c, dequeue)));
    assert!(matches!(chan.producer(), Err(Error::Corrupt(c)) if huge(&c, dequeue)));
    // Put right, both sides go on from where they were.
    raw.u64(CONSUMER_POS).store(1, Relaxed);
    assert_eq!(tx.try_push(11), Ok(()));
    assert_eq!(rx.try_pop(), Ok(11));
}

#[test]
fn a_producer_killed_mid_stream_loses_no_published_job() {
    let _serial = common::serial();
    for attempt in 0..3 {
        let name = unique("mpmc-kill");
        let dir = ScratchDir::new("mpmc-kill-out");
        let _chan = mpmc::Channel::<Job>::create(Backing::shm(&name), 256).unwrap();
        let mut consumers: Vec<Child> = (0..2)
            .map(|k| spawn_consumer(&name, &dir.path(&format!("c{k}")), u64::MAX, None))
            .collect();
        let mut victim = spawn_producer(&name, 7, u64::MAX);
        let raw = Raw::shm(&name, 4096);
        // Kill it mid-stream, at a point that differs from attempt to attempt, while another
        // producer's jobs flow too.
        let at = 20_000 + attempt * 7_777;
        assert!(eventually(Duration::from_secs(30), || raw
            .u64(CONSUMER_POS)
            .load(Relaxed)
            >= at));
        let mut survivor = spawn_producer(&name, 8, 50_000);
        assert!(eventually(Duration::from_secs(30), || raw
            .u64(CONSUMER_POS)
            .load(Relaxed)
            >= at + 10_000));
        victim.kill();
        assert_eq!(survivor.wait(), 0);
        // No consumer hangs: each sees the end of the stream.
        for c in &mut consumers {
            assert_eq!(c.wait(), 0);
        }
        let got = collect(&dir);
        assert_eq!(got[&8], (0..50_000).collect::<Vec<_>>());
        // The victim's jobs: a prefix 0..n, every one exactly once (`collect` checked that).
        // If it died between claiming a slot and publishing it (its job n, never published),
        // exactly one consumer reported that hole.
        let holes = dir
            .entries()
            .iter()
            .filter(|n| n.ends_with(".holes"))
            .map(|n| std::fs::read(dir.path(n)).unwrap().len() / 8)
            .sum::<usize>();
        assert!(
            holes <= 1,
            "attempt {attempt}: {holes} holes from one producer"
        );
        let victim_jobs = &got[&7];
        assert!(victim_jobs.len() as u64 >= at, "attempt {attempt}");
        assert_eq!(
            *victim_jobs,
            (0..victim_jobs.len() as u64).collect::<Vec<_>>(),
            "attempt {attempt}"
        );
    }
}

#[test]
fn a_consumer_killed_mid_pop_does_not_block_producers() {
    let _serial = common::serial();
    let name = unique("mpmc-dead-consumer");
    let chan = mpmc::Channel::<Job>::builder()
        .capacity(4)
        .registry_len(4)
        .create(Backing::shm(&name))
        .unwrap();
    let mut tx = chan.producer().unwrap(); // entry 0
    let mut rx = chan.consumer().unwrap(); // entry 1
    for seq in 0..4 {
        tx.push(Job { producer: 1, seq }).unwrap();
    }
    // A consumer process (entry 2) that takes position 0, record then CAS, and is killed
    // before it releases the slot: job 0 goes with it.
    let n = name.clone();
    let mut dying = fork(move || {
        let _rx = open(&n).consumer().unwrap();
        let raw = Raw::shm(&n, 4096);
        raw.u64(claiming(2)).store(0, Relaxed);
        assert_eq!(
            raw.u64(CONSUMER_POS)
                .compare_exchange(0, 1, AcqRel, Relaxed),
            Ok(0)
        );
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    let raw = Raw::shm(&name, 4096);
    assert!(eventually(Duration::from_secs(10), || raw
        .u64(CONSUMER_POS)
        .load(Relaxed)
        == 1));
    for seq in 1..4 {
        assert_eq!(rx.pop(), Ok(Job { producer: 1, seq }));
    }
    // Slot 0 is still held by the (live) consumer: the ring stays full for position 4.
    match tx.push_timeout(
        Job {
            producer: 1,
            seq: 4,
        },
        Duration::from_millis(100),
    ) {
        Err(PushError::Timeout(_)) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    dying.kill();
    for seq in 4..8 {
        tx.push_timeout(Job { producer: 1, seq }, Duration::from_secs(5))
            .unwrap();
    }
    for seq in 4..8 {
        assert_eq!(rx.pop(), Ok(Job { producer: 1, seq }));
    }
}

#[test]
fn a_full_registry_is_a_clear_error_and_dead_entries_are_reused() {
    let _serial = common::serial();
    let name = unique("mpmc-registry");
    let chan = mpmc::Channel::<Job>::builder()
        .capacity(8)
        .registry_len(3)
        .create(Backing::shm(&name))
        .unwrap();
    let raw = Raw::shm(&name, 4096);
    let tx = chan.producer().unwrap();
    let n = name.clone();
    let mut holder = fork(move || {
        let _rx = open(&n).consumer().unwrap();
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    assert!(eventually(Duration::from_secs(10), || entry_states(
        &raw, 3
    )
    .iter()
    .filter(|&&s| s != 0)
    .count()
        == 2));
    let third = chan.consumer().unwrap();
    match chan.producer() {
        Err(e @ Error::RegistryFull { len: 3 }) => {
            assert!(e.to_string().contains("registry_len"), "{e}")
        }
        Err(e) => panic!("expected RegistryFull, got {e}"),
        Ok(_) => panic!("expected RegistryFull, got a producer"),
    }
    // A dead holder's entry is taken over; a closed one's too.
    holder.kill();
    let fourth = chan.producer().unwrap();
    assert!(matches!(chan.consumer(), Err(Error::RegistryFull { .. })));
    drop(third);
    let mut rx = chan.consumer().unwrap();
    drop((tx, fourth));
    assert_eq!(rx.pop(), Err(PopError::Disconnected));
}

#[test]
fn opening_an_mpmc_channel_as_spsc_is_incompatible() {
    let _serial = common::serial();
    let name = unique("mpmc-kind");
    let _chan = mpmc::Channel::<u64>::create(Backing::shm(&name), 8).unwrap();
    match shmlane::spsc::Channel::<u64>::open(Backing::shm(&name)) {
        Err(Error::Incompatible(m)) => assert_eq!(
            (m.field, m.expected.as_str(), m.found.as_str()),
            ("kind", "SPSC", "MPMC")
        ),
        other => panic!("expected Incompatible, got {:?}", other.err()),
    }
}

/// A consumer polling an empty ring with `try_pop` gives its CPU away within a long run of
/// misses: a thread waiting for that CPU (here a spinner pinned beside it; in real use, the
/// producer that would publish) runs long before the poller's time slice is over. Without
/// the yield, 2 producers and 2 consumers on 2 CPUs stalled for 8 ms at a time.
#[test]
fn a_long_run_of_misses_gives_the_cpu_to_a_thread_waiting_for_it() {
    let chan = mpmc::Channel::<u64>::create(Backing::memfd("yield"), 64).unwrap();
    let _tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let (ran, stop) = (AtomicU64::new(0), AtomicBool::new(false));
    affinity::pin(0);
    thread::scope(|s| {
        s.spawn(|| {
            affinity::pin(0);
            while !stop.load(Relaxed) {
                ran.fetch_add(1, Relaxed);
            }
        });
        // The spinner needs this CPU to start.
        while ran.load(Relaxed) == 0 {
            thread::yield_now();
        }
        let before = ran.load(Relaxed);
        // The 8th miss yields, and every 4th after it (a few, in case the scheduler picks
        // the poller again): a few microseconds, where a time slice is milliseconds.
        let mut misses = 0;
        while ran.load(Relaxed) == before && misses < 8 + 4 * 8 {
            assert!(matches!(rx.try_pop(), Err(TryPopError::Empty)));
            misses += 1;
        }
        stop.store(true, Relaxed);
        assert_ne!(
            ran.load(Relaxed),
            before,
            "{misses} misses in a row and the thread waiting for the CPU never ran"
        );
    });
}
