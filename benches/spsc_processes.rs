//! Cross-process SPSC throughput: a parent sends messages of 8 B, 64 B, 1 KiB and 4 KiB to
//! a forked child, through shmlane (memfd, per-message push/pop), a pipe, and Unix
//! socketpairs (SOCK_STREAM and SOCK_SEQPACKET). Each side pinned to its own CPU where two
//! exist. Criterion reports messages/s; bytes/s is that times the message size.
//!
//! `cargo bench --bench spsc_processes`. Each sample forks a child that receives `iters`
//! messages, checking the sequence number in the first word of each, and exits; the time
//! runs from the moment the child is set up (its end of the channel open, its CPU pinned)
//! to the moment it took the last message, as the two-thread benches time their threads:
//! the fork and the exit are not messages.
//!
//! 4 KiB messages also go through shmlane's chunks (written and read in place, one
//! publication per chunk) beside a minimal hand-written ring in a shared mapping (two
//! cache-padded counters, one publication per message): the bar for moving bytes between
//! the cores' caches. Both receivers copy every message out, so every byte crosses.

#[path = "../examples/common/affinity.rs"]
mod affinity;
#[path = "common/forked.rs"]
mod forked;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use forked::{now_ns, SharedPage};
use shmlane::{spsc, Backing};

/// A forked receiver, and the page where it says when it is set up and when it is done.
struct Receiver {
    pid: libc::pid_t,
    page: SharedPage,
}

/// Words of [`Receiver`]'s page: non-zero once set up; the clock at its last message.
const READY: usize = 0;
const DONE: usize = 16;

/// Forks a child that runs `setup`, says it is ready, passes what `setup` made to `receive`,
/// notes the time, and exits with 0 if `receive` returned true.
fn spawn<S>(setup: impl FnOnce() -> S, receive: impl FnOnce(S) -> bool) -> Receiver {
    let page = SharedPage::new();
    // SAFETY: the child only runs `setup` and `receive` and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        affinity::pin(1);
        let state = setup();
        page.word(READY).store(1, Release);
        let ok = receive(state);
        page.word(DONE).store(now_ns(), Release);
        // SAFETY: leave without the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    Receiver { pid, page }
}

impl Receiver {
    /// Waits until the child is set up: the clock reading a run starts at.
    fn ready(&self) -> u64 {
        while self.page.word(READY).load(Acquire) == 0 {
            std::thread::yield_now();
        }
        now_ns()
    }

    /// Reaps the child, asserting it checked every message: the time from `start` to its
    /// last message.
    fn finish(self, start: u64) -> Duration {
        let mut status = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(self.pid, &mut status, 0) }, self.pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the receiver failed"
        );
        Duration::from_nanos(self.page.word(DONE).load(Acquire) - start)
    }
}

/// Slots in the per-message rings: the two-thread benches' 4096, as many as fit in 1 MiB
/// for messages too large for that.
fn capacity(message_bytes: u64) -> u64 {
    ((1 << 20) / message_bytes).clamp(64, 4096)
}

fn shmlane_run<const WORDS: usize>(iters: u64) -> Duration {
    let capacity = capacity(8 * WORDS as u64);
    let chan = spsc::Channel::<[u64; WORDS]>::builder()
        .capacity(capacity)
        .populate(true)
        .create(Backing::memfd("bench"))
        .unwrap();
    let child = spawn(
        || chan.consumer().unwrap(),
        |mut rx| {
            // black_box: the whole message is received, as a read from a socket would be,
            // not only the word checked.
            (0..iters).all(|seq| rx.pop().is_ok_and(|m| std::hint::black_box(m)[0] == seq))
        },
    );
    let mut tx = chan.producer().unwrap();
    let start = child.ready();
    let mut message = [0u64; WORDS];
    for seq in 0..iters {
        message[0] = seq;
        tx.push(message).unwrap();
    }
    child.finish(start)
}

/// 4 KiB messages: the words of one.
const BIG: usize = 512;
/// Slots of 4 KiB in the rings of the 4 KiB chunk cases (256 KiB: fits in L2).
const BIG_SLOTS: u64 = 64;
/// Messages per chunk, at most.
const BIG_CHUNK: usize = 16;

/// Copies a received 4 KiB message out (so all of it crosses between caches) and checks its
/// sequence number. black_box: otherwise the compiler may copy only the word it checks.
fn take(message: &[u64; BIG], into: &mut [u64; BIG], seq: u64) -> bool {
    *into = *message;
    std::hint::black_box(&*into)[0] == seq
}

fn shmlane_chunks_4k(iters: u64) -> Duration {
    let chan = spsc::Channel::<[u64; BIG]>::builder()
        .capacity(BIG_SLOTS)
        .populate(true)
        .create(Backing::memfd("bench"))
        .unwrap();
    let child = spawn(
        || chan.consumer().unwrap(),
        |mut rx| {
            let mut out = [0u64; BIG];
            let mut seq = 0;
            while seq < iters {
                let Ok(chunk) = rx.read_chunk_upto(BIG_CHUNK) else {
                    std::hint::spin_loop();
                    continue;
                };
                let (a, b) = chunk.as_slices();
                for message in a.iter().chain(b) {
                    if !take(message, &mut out, seq) {
                        return false;
                    }
                    seq += 1;
                }
                let n = chunk.len();
                chunk.release(n);
            }
            true
        },
    );
    let mut tx = chan.producer().unwrap();
    let source = [7u64; BIG];
    let start = child.ready();
    let mut seq = 0;
    while seq < iters {
        let want = (iters - seq).min(BIG_CHUNK as u64) as usize;
        let Ok(mut chunk) = tx.write_chunk_upto(want) else {
            std::hint::spin_loop();
            continue;
        };
        let (a, b) = chunk.as_mut_slices();
        let n = a.len() + b.len();
        for slot in a.iter_mut().chain(b.iter_mut()) {
            // In place: the message is built in the slot, word 0 last.
            let message = slot.write(source);
            message[0] = seq;
            seq += 1;
        }
        // SAFETY: every reserved slot was just written.
        unsafe { chunk.commit(n) };
    }
    child.finish(start)
}

/// The hand-written ring's shared memory: two counters, each on its own cache lines, then
/// the slots.
#[repr(C)]
struct HandRing {
    tail: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>,
    head: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>,
    slots: [std::cell::UnsafeCell<[u64; BIG]>; BIG_SLOTS as usize],
}

fn hand_ring_4k(iters: u64) -> Duration {
    let len = std::mem::size_of::<HandRing>();
    // SAFETY: a fresh shared anonymous mapping (zeroed: counters 0), unmapped at the end.
    let ring = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        &*(p as *const HandRing)
    };
    let child = spawn(
        || (),
        |()| {
            let mut out = [0u64; BIG];
            for seq in 0..iters {
                while ring.tail.load(Acquire) == seq {
                    std::hint::spin_loop();
                }
                // SAFETY: the producer published this slot (tail > seq) and leaves it alone until
                // head passes it.
                let message = unsafe { &*ring.slots[(seq % BIG_SLOTS) as usize].get() };
                if !take(message, &mut out, seq) {
                    return false;
                }
                ring.head.store(seq + 1, Release);
            }
            true
        },
    );
    let source = [7u64; BIG];
    let start = child.ready();
    for seq in 0..iters {
        while seq - ring.head.load(Acquire) == BIG_SLOTS {
            std::hint::spin_loop();
        }
        // SAFETY: the slot is free (head > seq - BIG_SLOTS); the consumer reads it only after
        // the tail below covers it.
        let slot = unsafe { &mut *ring.slots[(seq % BIG_SLOTS) as usize].get() };
        *slot = source;
        slot[0] = seq;
        ring.tail.store(seq + 1, Release);
    }
    let elapsed = child.finish(start);
    // SAFETY: the child is gone; nothing else maps it.
    unsafe { libc::munmap(ring as *const HandRing as *mut libc::c_void, len) };
    elapsed
}

fn pair(kind: Option<libc::c_int>) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    let rc = unsafe {
        match kind {
            Some(kind) => libc::socketpair(
                libc::AF_UNIX,
                kind | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            ),
            None => libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC),
        }
    };
    assert_eq!(rc, 0);
    // SAFETY: fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Reads exactly `buf.len()` bytes (a stream may split a message).
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

fn write_all(fd: &OwnedFd, buf: &[u8]) {
    let mut sent = 0;
    while sent < buf.len() {
        // SAFETY: writing from the unsent tail of `buf`.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                buf[sent..].as_ptr().cast(),
                buf.len() - sent,
            )
        };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        sent += n as usize;
    }
}

/// A pipe (`None`) or a socketpair of `kind`, `size`-byte messages.
fn fd_run(kind: Option<libc::c_int>, size: usize, iters: u64) -> Duration {
    let (a, b) = pair(kind);
    // For a pipe, a reads and b writes; a socketpair works both ways.
    let (reader, writer) = (a, b);
    let child = spawn(
        || vec![0u8; size],
        |mut buf| {
            (0..iters).all(|seq| read_exact(&reader, &mut buf) && buf[..8] == seq.to_ne_bytes())
        },
    );
    drop(reader);
    let mut buf = vec![0u8; size];
    let start = child.ready();
    for seq in 0..iters {
        buf[..8].copy_from_slice(&seq.to_ne_bytes());
        write_all(&writer, &buf);
    }
    child.finish(start)
}

fn spsc_processes(c: &mut Criterion) {
    let pinned = affinity::pin(0);
    let mut group = c.benchmark_group("spsc_processes");
    group.throughput(Throughput::Elements(1));
    macro_rules! sizes {
        ($($words:literal),*) => {$(
            let size = $words * 8;
            group.bench_function(BenchmarkId::new("shmlane", size), |b| b.iter_custom(shmlane_run::<$words>));
            group.bench_function(BenchmarkId::new("pipe", size), |b| b.iter_custom(|n| fd_run(None, size, n)));
            group.bench_function(BenchmarkId::new("socketpair_stream", size), |b| {
                b.iter_custom(|n| fd_run(Some(libc::SOCK_STREAM), size, n))
            });
            group.bench_function(BenchmarkId::new("socketpair_seqpacket", size), |b| {
                b.iter_custom(|n| fd_run(Some(libc::SOCK_SEQPACKET), size, n))
            });
        )*};
    }
    sizes!(1, 8, 128, 512);
    group.bench_function(BenchmarkId::new("shmlane_chunks", BIG * 8), |b| {
        b.iter_custom(shmlane_chunks_4k)
    });
    group.bench_function(BenchmarkId::new("hand_ring", BIG * 8), |b| {
        b.iter_custom(hand_ring_4k)
    });
    group.finish();
    if pinned {
        affinity::unpin();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = spsc_processes
}
criterion_main!(benches);
