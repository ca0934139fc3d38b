//! `shm_open` objects: a name in /dev/shm.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::Error;

/// Where the kernel keeps shm_open names; used in messages and for space checks.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// `name` as shm_open wants it: one leading slash, no other, not empty, not too long.
pub(crate) fn object_name(name: &str) -> Result<CString, Error> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() || bare.len() > 250 || bare.contains('/') || bare == "." || bare == ".." {
        return Err(Error::InvalidArgument(format!(
            "shm name {name:?} must be 1 to 250 characters with no '/' after an optional leading one"
        )));
    }
    CString::new(format!("/{bare}"))
        .map_err(|_| Error::InvalidArgument(format!("shm name {name:?} contains a NUL byte")))
}

/// The path under /dev/shm, for messages.
pub(crate) fn display(object: &CString) -> String {
    format!("{SHM_DIR}{}", object.to_string_lossy())
}

/// shm_open with the given flags; the fd is close-on-exec (shm_open always sets it).
pub(crate) fn open(object: &CString, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `object` is a valid C string for the call.
    let fd = unsafe { libc::shm_open(object.as_ptr(), flags, mode as libc::mode_t) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: shm_open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes the name; the object lives on while anything maps it.
pub(crate) fn unlink(object: &CString) -> io::Result<()> {
    // SAFETY: `object` is a valid C string for the call.
    if unsafe { libc::shm_unlink(object.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
