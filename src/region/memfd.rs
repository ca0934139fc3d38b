//! Anonymous memory from `memfd_create`, sealed once sized.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::Error;

/// The seals a channel's memfd must carry: nobody can shrink it (SIGBUS), grow it, or change
/// the seals again.
pub(crate) const REQUIRED_SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

pub(crate) fn create(name: &str, huge_pages: bool) -> Result<OwnedFd, Error> {
    let cname = CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("memfd name {name:?} contains a NUL byte")))?;
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if huge_pages {
        flags |= libc::MFD_HUGETLB;
    }
    // SAFETY: `cname` is a valid C string for the call.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        return Err(match source.raw_os_error() {
            Some(libc::EINVAL) => Error::InvalidArgument(format!(
                "memfd name {name:?} is too long (249 bytes at most), or huge pages are not \
                 available: {source}"
            )),
            _ => Error::Io {
                op: "memfd_create",
                what: format!("memfd:{name}"),
                source,
            },
        });
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds the required seals (after sizing).
pub(crate) fn seal(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fd is open for the call; F_ADD_SEALS takes an int.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, REQUIRED_SEALS) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The seals on `fd`; an fd that cannot carry seals (not a memfd) has none.
pub(crate) fn seals(fd: BorrowedFd<'_>) -> libc::c_int {
    // SAFETY: fd is open for the call; F_GET_SEALS takes no argument.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    seals.max(0)
}

/// Names the required seals that `seals` lacks, or None.
pub(crate) fn missing(seals: libc::c_int) -> Option<&'static str> {
    let lacking = REQUIRED_SEALS & !seals;
    if lacking == 0 {
        return None;
    }
    Some(
        match (
            lacking & libc::F_SEAL_SHRINK != 0,
            lacking & libc::F_SEAL_GROW != 0,
            lacking & libc::F_SEAL_SEAL != 0,
        ) {
            (true, true, true) => "F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL",
            (true, true, false) => "F_SEAL_SHRINK | F_SEAL_GROW",
            (true, false, true) => "F_SEAL_SHRINK | F_SEAL_SEAL",
            (false, true, true) => "F_SEAL_GROW | F_SEAL_SEAL",
            (true, false, false) => "F_SEAL_SHRINK",
            (false, true, false) => "F_SEAL_GROW",
            _ => "F_SEAL_SEAL",
        },
    )
}
