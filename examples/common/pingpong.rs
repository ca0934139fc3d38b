//! Two-process ping-pong of one u64 over several transports, for the `rtt` bench and the
//! `latency` example: the parent sends, a forked child echoes, the parent waits for the echo.

use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmlane::{spsc, Backing, PopError, WaitMode};

use super::affinity::{pin, unpin};

/// What carries the ping and the pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Two shmlane SPSC channels, both ends busy-polling.
    ShmlaneBusyPoll,
    /// As `ShmlaneBusyPoll`, both producers pushing express (`Producer::set_express`).
    ShmlaneExpress,
    /// Two shmlane SPSC channels, both ends parking on the futex at once.
    ShmlaneBlocking,
    /// A Unix SOCK_STREAM socketpair, blocking reads.
    SocketPair,
    /// Two pipes, blocking reads.
    Pipe,
    /// The floor: two cache-line-padded atomics in a shared mapping, bounced by hand.
    Floor,
}

impl Transport {
    pub const ALL: [Transport; 6] = [
        Transport::Floor,
        Transport::ShmlaneBusyPoll,
        Transport::ShmlaneExpress,
        Transport::ShmlaneBlocking,
        Transport::SocketPair,
        Transport::Pipe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::ShmlaneBusyPoll => "shmlane_busy_poll",
            Transport::ShmlaneExpress => "shmlane_busy_poll_express",
            Transport::ShmlaneBlocking => "shmlane_blocking",
            Transport::SocketPair => "socketpair",
            Transport::Pipe => "pipe",
            Transport::Floor => "floor_atomics",
        }
    }
}

enum Link {
    Shmlane {
        tx: Box<spsc::Producer<u64>>,
        rx: Box<spsc::Consumer<u64>>,
    },
    Fds {
        tx: OwnedFd,
        rx: OwnedFd,
    },
    Floor {
        map: *mut u8,
    },
}

/// The parent's side of a running ping-pong. Dropping it stops and reaps the child.
pub struct Pinger {
    link: Option<Link>,
    child: libc::pid_t,
    pinned: bool,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: fresh descriptors nobody else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn write_u64(fd: &OwnedFd, v: u64) -> bool {
    // SAFETY: writing 8 bytes from a live u64.
    unsafe { libc::write(fd.as_raw_fd(), (&v as *const u64).cast(), 8) == 8 }
}

fn read_u64(fd: &OwnedFd) -> Option<u64> {
    let mut v = 0u64;
    // SAFETY: reading at most 8 bytes into a live u64 (8-byte messages arrive whole here).
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    (n == 8).then_some(v)
}

fn floor_cells(map: *mut u8) -> (&'static AtomicU64, &'static AtomicU64) {
    // SAFETY: the mapping is 256 bytes, page-aligned, shared, and outlives every use (it is
    // unmapped only in Drop, after the child is gone); two cells 128 bytes apart.
    unsafe {
        (
            &*(map as *const AtomicU64),
            &*(map.add(128) as *const AtomicU64),
        )
    }
}

const STOP: u64 = u64::MAX;

type FdPair = (OwnedFd, OwnedFd);

/// The child's loop: echo until the parent goes away, then exit.
fn echo(
    chans: Option<(spsc::Channel<u64>, spsc::Channel<u64>)>,
    fds: Option<(FdPair, FdPair)>,
    map: Option<*mut u8>,
    transport: Transport,
) -> ! {
    pin(1);
    match (chans, fds, map) {
        (Some((ping, pong)), _, _) => {
            let mut rx = ping.consumer().unwrap();
            let mut tx = pong.producer().unwrap();
            configure(transport, &mut tx, &mut rx);
            loop {
                match rx.pop() {
                    Ok(v) => tx.push(v).unwrap(),
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("echo: {e}"),
                }
            }
        }
        (_, Some((parent_ends, (rx, tx))), _) => {
            // Without the parent's ends, our read sees EOF when the parent closes them.
            drop(parent_ends);
            while let Some(v) = read_u64(&rx) {
                if !write_u64(&tx, v) {
                    break;
                }
            }
        }
        (_, _, Some(map)) => {
            let (ping, pong) = floor_cells(map);
            let mut last = 0;
            loop {
                let v = ping.load(Ordering::Acquire);
                if v == STOP {
                    break;
                }
                if v != last {
                    pong.store(v, Ordering::Release);
                    last = v;
                }
                std::hint::spin_loop();
            }
        }
        _ => unreachable!(),
    }
    // SAFETY: leave without running the parent's destructors.
    unsafe { libc::_exit(0) }
}

/// Sets one side's shmlane ends up as `transport` says.
fn configure(transport: Transport, tx: &mut spsc::Producer<u64>, rx: &mut spsc::Consumer<u64>) {
    let mode = if transport == Transport::ShmlaneBlocking {
        WaitMode::Park
    } else {
        WaitMode::BusyPoll
    };
    tx.set_wait_mode(mode);
    rx.set_wait_mode(mode);
    tx.set_express(transport == Transport::ShmlaneExpress);
}

/// Forks an echo child for `transport` and returns the parent's side.
pub fn start(transport: Transport) -> Pinger {
    // Everything the child needs is made before the fork; each side claims its roles after.
    let (chans, fds, map) = match transport {
        Transport::ShmlaneBusyPoll | Transport::ShmlaneExpress | Transport::ShmlaneBlocking => {
            let ping = spsc::Channel::<u64>::create(Backing::memfd("ping"), 64).unwrap();
            let pong = spsc::Channel::<u64>::create(Backing::memfd("pong"), 64).unwrap();
            (Some((ping, pong)), None, None)
        }
        Transport::SocketPair => {
            let (a, b) = socketpair();
            let (c, d) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            (None, Some(((a, c), (b, d))), None)
        }
        Transport::Pipe => {
            let (ping_rx, ping_tx) = pipe();
            let (pong_rx, pong_tx) = pipe();
            (None, Some(((ping_tx, pong_rx), (ping_rx, pong_tx))), None)
        }
        Transport::Floor => {
            // SAFETY: an anonymous shared mapping of 256 bytes, checked below.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    256,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(map, libc::MAP_FAILED);
            (None, None, Some(map.cast::<u8>()))
        }
    };
    // SAFETY: fork; the child runs only the echo loop below and then _exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        echo(chans, fds, map, transport);
    }
    let pinned = pin(0);
    let link = match (chans, fds, map) {
        (Some((ping, pong)), _, _) => {
            let mut tx = ping.producer().unwrap();
            let mut rx = pong.consumer().unwrap();
            configure(transport, &mut tx, &mut rx);
            Link::Shmlane {
                tx: Box::new(tx),
                rx: Box::new(rx),
            }
        }
        (_, Some(((tx, rx), _child_ends)), _) => Link::Fds { tx, rx },
        (_, _, Some(map)) => Link::Floor { map },
        _ => unreachable!(),
    };
    Pinger {
        link: Some(link),
        child,
        pinned,
    }
}

impl Pinger {
    /// Sends each of `values` in turn and waits for its echo; how long they all took.
    pub fn time_round_trips(&mut self, values: RangeInclusive<u64>) -> Duration {
        let start = Instant::now();
        for v in values {
            self.round_trip(v);
        }
        start.elapsed()
    }

    /// Sends `v` (non-zero, not u64::MAX) and waits for it to come back.
    #[inline]
    pub fn round_trip(&mut self, v: u64) {
        match self.link.as_mut().unwrap() {
            Link::Shmlane { tx, rx } => {
                tx.push(v).unwrap();
                assert_eq!(rx.pop(), Ok(v));
            }
            Link::Fds { tx, rx } => {
                assert!(write_u64(tx, v));
                assert_eq!(read_u64(rx), Some(v));
            }
            Link::Floor { map } => {
                let (ping, pong) = floor_cells(*map);
                ping.store(v, Ordering::Release);
                while pong.load(Ordering::Acquire) != v {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let map = match self.link.take() {
            Some(Link::Floor { map }) => {
                floor_cells(map).0.store(STOP, Ordering::Release);
                Some(map)
            }
            // Dropping the other links closes them; the child sees the end and exits.
            _ => None,
        };
        // SAFETY: reaping our own child, then unmapping what only we still map.
        unsafe {
            libc::waitpid(self.child, std::ptr::null_mut(), 0);
            if let Some(map) = map {
                libc::munmap(map.cast(), 256);
            }
        }
        if self.pinned {
            unpin();
        }
    }
}
