//! No fd leaks across 1,000 handoff connections. Alone in its binary: the count of
//! /proc/self/fd is process-wide, and other tests running beside it would open and close fds.
#![cfg(not(shmlane_loom))]

mod common;

use std::time::Duration;

use common::ScratchDir;
use shmlane::handoff::{self, Listener, Outcome};
use shmlane::{spsc, Backing};

const WAIT: Duration = Duration::from_secs(5);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_thousand_connections_leak_no_fd() {
    let dir = ScratchDir::new("handoff-leak");
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("leak"), 16).unwrap();
    let listener = Listener::bind(&sock).unwrap();
    // Warm up once (lazy statics, the first connection's allocations).
    std::thread::scope(|s| {
        s.spawn(|| listener.accept(&chan).unwrap());
        drop(handoff::connect::<spsc::Channel<u64>>(&sock, WAIT).unwrap());
    });
    let before = open_fds();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..1000 {
                assert!(matches!(
                    listener.accept(&chan).unwrap(),
                    Outcome::Served(_)
                ));
            }
        });
        for _ in 0..1000 {
            let received: spsc::Channel<u64> = handoff::connect(&sock, WAIT).unwrap();
            // Every received fd is close-on-exec.
            // SAFETY: F_GETFD on a descriptor the channel holds.
            let flags = unsafe {
                libc::fcntl(
                    std::os::fd::AsRawFd::as_raw_fd(&received.fd()),
                    libc::F_GETFD,
                )
            };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    });
    assert_eq!(open_fds(), before);
}
