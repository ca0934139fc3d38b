//! A file in any directory: a tmpfs, a hugetlbfs, a pod's `emptyDir` with `medium: Memory`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (or with `create`, exclusively creates) the file, close-on-exec.
pub(crate) fn open(path: &Path, create: bool, mode: u32) -> io::Result<OwnedFd> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if create {
        options.create_new(true).mode(mode);
    }
    Ok(options.open(path)?.into())
}

/// The directory that holds `path`, for messages and space checks.
pub(crate) fn dir_of(path: &Path) -> String {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.display().to_string(),
        _ => ".".to_string(),
    }
}
