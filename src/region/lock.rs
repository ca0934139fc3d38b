//! Liveness locks: open-file-description byte-range locks (`F_OFD_SETLK`).
//!
//! The kernel drops an OFD lock when the last descriptor of its open file description closes,
//! which includes the death of the process, in whatever pid namespace it lives. Each lock is
//! taken on its own description (see `Region::reopen`): a dup would share it.
//!
//! Byte map: byte 0 is read-locked by every channel handle (presence); byte 1 is the SPSC
//! producer role, byte 2 the consumer role; MPMC registry entry `i` is byte `REGISTRY + i`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Read-locked by every live channel handle.
pub(crate) const PRESENCE: u64 = 0;
/// SPSC producer role.
pub(crate) const PRODUCER: u64 = 1;
/// SPSC consumer role.
pub(crate) const CONSUMER: u64 = 2;
/// MPMC registry entry `i` is this byte plus `i`.
pub(crate) const REGISTRY: u64 = 16;

fn flock(kind: libc::c_short, start: u64, len: u64) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value (and l_pid must be 0 for
    // OFD locks).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start as libc::off_t;
    lock.l_len = len as libc::off_t;
    lock
}

/// Takes a lock on `len` bytes from `start` without waiting: `Ok(false)` if another open
/// file description holds a conflicting one.
pub(crate) fn try_lock(
    fd: BorrowedFd<'_>,
    start: u64,
    len: u64,
    exclusive: bool,
) -> io::Result<bool> {
    let kind = if exclusive {
        libc::F_WRLCK
    } else {
        libc::F_RDLCK
    };
    let lock = flock(kind as libc::c_short, start, len);
    // SAFETY: fd is open for the call; F_OFD_SETLK reads the flock we pass.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Whether any other open file description holds a lock on `len` bytes from `start`
/// (`len` 0: to the end of all files).
pub(crate) fn is_locked(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let mut lock = flock(libc::F_WRLCK as libc::c_short, start, len);
    // SAFETY: fd is open for the call; F_OFD_GETLK reads and writes the flock we pass.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}
