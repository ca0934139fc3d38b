//! Mapped memory and the file descriptor that owns it. A region is bytes: it never knows
//! what a slot is.
//!
//! Create sizes the file with `ftruncate` and then `posix_fallocate`, so a tmpfs that is too
//! small fails here with [`Error::NoSpace`] rather than with a SIGBUS on first touch; on a
//! tmpfs (a memfd's too) a size beyond the memory there is fails before any of it is reserved
//! (`memory`). A create that fails at any step removes what it made.

pub(crate) mod file;
pub(crate) mod lock;
pub(crate) mod memfd;
mod memory;
pub(crate) mod shm;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Mismatch};
use crate::wait::{deadline, expired};

/// Where a channel's memory comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing(Source);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Shm(String),
    File(PathBuf),
    Memfd(String),
}

impl Backing {
    /// A POSIX shared-memory object: `name` appears as `/dev/shm/<name>`. Open by the same
    /// name from another process. Cannot be sealed: a peer with access could truncate it.
    pub fn shm(name: impl Into<String>) -> Backing {
        Backing(Source::Shm(name.into()))
    }

    /// A file at `path`, in any directory: a tmpfs, a hugetlbfs mount (the file then uses
    /// huge pages), or a Kubernetes `emptyDir` with `medium: Memory` shared by two containers.
    pub fn file(path: impl Into<PathBuf>) -> Backing {
        Backing(Source::File(path.into()))
    }

    /// An anonymous `memfd_create` region, sealed against resizing once sized. It has no name
    /// to open: other processes get it by inheriting the fd (fork) or receiving it over a Unix
    /// socket; open it there with `Channel::from_fd`. `name` only labels it in
    /// `/proc/<pid>/fd`.
    pub fn memfd(name: impl Into<String>) -> Backing {
        Backing(Source::Memfd(name.into()))
    }

    /// The path or label, for messages.
    fn describe(&self) -> String {
        match &self.0 {
            Source::Shm(name) => match shm::object_name(name) {
                Ok(object) => shm::display(&object),
                Err(_) => format!("shm object {name:?}"),
            },
            Source::File(path) => path.display().to_string(),
            Source::Memfd(name) => format!("memfd:{name}"),
        }
    }

    /// Opens the existing object read-write.
    fn open_existing(&self) -> Result<(OwnedFd, Name), Error> {
        let what = self.describe();
        match &self.0 {
            Source::Shm(name) => {
                let object = shm::object_name(name)?;
                let fd = shm::open(&object, libc::O_RDWR, 0)
                    .map_err(|e| os_error("shm_open", &what, e))?;
                Ok((fd, Name::Shm(object)))
            }
            Source::File(path) => {
                let fd = file::open(path, false, 0).map_err(|e| os_error("open", &what, e))?;
                Ok((fd, Name::File(path.clone())))
            }
            Source::Memfd(_) => Err(Error::InvalidArgument(
                "a memfd has no name to open: pass its fd (inherited or received over a Unix \
                 socket) to Channel::from_fd"
                    .into(),
            )),
        }
    }
}

/// How a region's file can be found again: to re-open it for a role lock and to unlink it.
#[derive(Debug)]
enum Name {
    Shm(CString),
    File(PathBuf),
    /// Only through the fd (memfd, or an fd received from elsewhere).
    Anonymous(String),
}

impl Name {
    /// The directory whose space the region uses, for NoSpace messages; `store` tells what
    /// backs an anonymous one.
    fn space_dir(&self, store: Store) -> String {
        match (self, store) {
            (Name::Shm(_), _) => shm::SHM_DIR.to_string(),
            (Name::File(path), _) => file::dir_of(path),
            (Name::Anonymous(_), Store::HugePages) => "a memfd (MFD_HUGETLB)".into(),
            (Name::Anonymous(_), _) => {
                "anonymous shared memory (memfd; limited by RAM and the memory cgroup)".into()
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Name::Shm(object) => shm::display(object),
            Name::File(path) => path.display().to_string(),
            Name::Anonymous(label) => label.clone(),
        }
    }

    /// The inode the name points to now, if it points anywhere.
    fn current_id(&self) -> Option<FileId> {
        let meta = match self {
            Name::Shm(object) => std::fs::metadata(shm::display(object)).ok()?,
            Name::File(path) => std::fs::metadata(path).ok()?,
            Name::Anonymous(_) => return None,
        };
        Some(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn unlink(&self) -> io::Result<()> {
        match self {
            Name::Shm(object) => shm::unlink(object),
            Name::File(path) => std::fs::remove_file(path),
            Name::Anonymous(_) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: stat is a plain C struct, all-zero valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the call and `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn file_id(fd: BorrowedFd<'_>) -> io::Result<FileId> {
    let st = fstat(fd)?;
    Ok(FileId {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Maps an OS error on `what` to the error a user can act on.
pub(crate) fn os_error(op: &'static str, what: &str, source: io::Error) -> Error {
    let what = what.to_string();
    match source.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound { what },
        Some(libc::EEXIST) => Error::AlreadyExists { what, live: None },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied { what },
        Some(libc::EINVAL) | Some(libc::ENAMETOOLONG) => {
            Error::InvalidArgument(format!("{op} on {what}: {source}"))
        }
        _ => Error::Io { op, what, source },
    }
}

/// Free bytes in the filesystem holding `dir`, if statvfs can tell.
fn free_bytes(dir: &str) -> Option<u64> {
    let path = CString::new(dir).ok()?;
    // SAFETY: statvfs is a plain C struct, all-zero valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// What a region's pages come from, as far as room for them goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// A tmpfs (a memfd's too): memory, limited by the mount's size, RAM and memory cgroups.
    Memory,
    /// A hugetlbfs (a memfd made with MFD_HUGETLB's too): the kernel's pool of reserved huge
    /// pages, and the mount's size= limit.
    HugePages,
    /// Any other filesystem: its free space.
    Disk,
}

fn fstatfs(fd: BorrowedFd<'_>) -> Option<libc::statfs> {
    // SAFETY: statfs is a plain C struct, all-zero valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open for the call and `st` a valid out-pointer.
    (unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } == 0).then_some(st)
}

/// The filesystem's allocation unit for `fd` (the huge page size on hugetlbfs), so sizes
/// can be rounded to what ftruncate and mmap accept there; and what its pages come from.
fn filesystem(fd: BorrowedFd<'_>) -> (u64, Store) {
    match fstatfs(fd) {
        Some(st) if st.f_bsize > 0 => {
            let store = match st.f_type {
                libc::TMPFS_MAGIC => Store::Memory,
                libc::HUGETLBFS_MAGIC => Store::HugePages,
                _ => Store::Disk,
            };
            ((st.f_bsize as u64).max(4096), store)
        }
        _ => (4096, Store::Disk),
    }
}

/// Free bytes of huge pages of `page` bytes for a region on hugetlbfs (`fd`): what the
/// kernel's pool has neither handed out nor promised, and no more than the mount's size=
/// limit (a mount without one reports no blocks).
fn huge_pages_free(fd: BorrowedFd<'_>, page: u64) -> Option<u64> {
    let pool = Path::new("/sys/kernel/mm/hugepages").join(format!("hugepages-{}kB", page >> 10));
    let count = |file: &str| memory::read_number(&pool.join(file));
    let pool_free = count("free_hugepages")?.saturating_sub(count("resv_hugepages")?);
    let mount_free = fstatfs(fd)
        .filter(|st| st.f_blocks > 0)
        .map(|st| st.f_bavail);
    Some(
        pool_free
            .min(mount_free.unwrap_or(u64::MAX))
            .saturating_mul(page),
    )
}

/// Options for [`Region::create`].
#[derive(Debug, Clone)]
pub(crate) struct CreateOptions {
    /// File mode of a named region (shm or file).
    pub mode: u32,
    /// Keep the name after the last handle of this process drops.
    pub persist: bool,
    /// Prefault the mapping (MAP_POPULATE).
    pub populate: bool,
    /// Back a memfd with huge pages (MFD_HUGETLB).
    pub huge_pages: bool,
}

/// The fd side of a region: owns the descriptor, holds the presence lock on it, and unlinks
/// the name on drop when it is the creator's and not persisted.
struct RegionFile {
    fd: OwnedFd,
    name: Name,
    id: FileId,
    unlink_on_drop: bool,
    /// The filesystem's allocation unit (see [`filesystem`]).
    block: u64,
    store: Store,
}

impl RegionFile {
    fn new(fd: OwnedFd, name: Name, unlink_on_drop: bool) -> Result<RegionFile, Error> {
        let io = |op, e| os_error(op, &name.describe(), e);
        let id = match file_id(fd.as_fd()) {
            Ok(id) => id,
            Err(e) => {
                let err = io("fstat", e);
                if unlink_on_drop {
                    let _ = name.unlink();
                }
                return Err(err);
            }
        };
        let (block, store) = filesystem(fd.as_fd());
        let file = RegionFile {
            fd,
            name,
            id,
            unlink_on_drop,
            block,
            store,
        };
        // A shared lock on the presence byte says "a live process holds this region" to
        // stale-name checks; it cannot conflict with another presence lock.
        match lock::try_lock(file.fd.as_fd(), lock::PRESENCE, 1, false) {
            Ok(true) => Ok(file),
            Ok(false) => Err(Error::Io {
                op: "fcntl(F_OFD_SETLK)",
                what: file.name.describe(),
                source: io::Error::other("presence byte write-locked by another process"),
            }),
            Err(e) => Err(os_error("fcntl(F_OFD_SETLK)", &file.name.describe(), e)),
        }
    }

    fn describe(&self) -> String {
        self.name.describe()
    }

    /// Bytes free for the region's pages, when that can be read: the filesystem's free
    /// space, or on hugetlbfs the free huge pages.
    fn free_space(&self) -> Option<u64> {
        match self.store {
            Store::HugePages => huge_pages_free(self.fd.as_fd(), self.block),
            Store::Memory | Store::Disk => free_bytes(&self.name.space_dir(self.store)),
        }
    }

    /// NoSpace for a region of `needed` bytes here, `available` of them free.
    fn no_space(&self, needed: u64, available: Option<u64>) -> Error {
        Error::NoSpace {
            dir: self.name.space_dir(self.store),
            needed,
            available,
            huge_pages: self.store == Store::HugePages,
        }
    }

    /// Refuses a region of `len` bytes, `missing` of them without backing store yet, that
    /// cannot have it, before any of it is reserved: on a tmpfs, whose pages are memory (a
    /// memfd's too), more than the free space or the memory ceiling (a memfd has no size
    /// limit, and reserving more than the machine has wakes the OOM killer instead of
    /// failing); on hugetlbfs, more than the free huge pages (a failed fallocate there keeps
    /// what it got).
    fn check_room(&self, len: u64, missing: u64) -> Result<(), Error> {
        let room = match self.store {
            Store::Memory => self.free_space().into_iter().chain(memory::ceiling()).min(),
            Store::HugePages => self.free_space(),
            Store::Disk => None,
        };
        match room {
            Some(room) if missing > room => Err(self.no_space(len, Some(room))),
            _ => Ok(()),
        }
    }

    /// Gives the first `len` bytes real backing store, so that no page of the mapping faults
    /// for want of space later (a SIGBUS): NoSpace if there is not enough.
    fn allocate(&self, len: u64) -> Result<(), Error> {
        // SAFETY: fd is open for the call.
        match unsafe { libc::posix_fallocate(self.fd.as_raw_fd(), 0, len as libc::off_t) } {
            0 => Ok(()),
            libc::ENOSPC | libc::ENOMEM | libc::EFBIG => Err(self.no_space(len, self.free_space())),
            // A filesystem without fallocate: nothing to reserve up front; mapping still works.
            libc::EOPNOTSUPP | libc::ENODEV => Ok(()),
            errno => Err(os_error(
                "posix_fallocate",
                &self.describe(),
                io::Error::from_raw_os_error(errno),
            )),
        }
    }

    /// Waits until the file is at least `min_len` bytes (a creator may still be sizing it).
    fn wait_for_len(&self, min_len: u64, wait: Duration) -> Result<u64, Error> {
        let deadline = deadline(wait);
        loop {
            let st = fstat(self.fd.as_fd()).map_err(|e| os_error("fstat", &self.describe(), e))?;
            let len = st.st_size.max(0) as u64;
            if len >= min_len {
                return Ok(len);
            }
            if expired(deadline) {
                return Err(Error::Incompatible(Mismatch {
                    field: "file size",
                    expected: format!("at least {min_len} bytes (a shmlane header)"),
                    found: format!("{len} bytes after waiting {wait:?}"),
                }));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for RegionFile {
    fn drop(&mut self) {
        // Only unlink the name if it still names our file: after a reclaim it may name a new
        // region that is not ours to remove.
        if self.unlink_on_drop && self.name.current_id() == Some(self.id) {
            let _ = self.name.unlink();
        }
    }
}

/// A mapped region.
pub(crate) struct Region {
    map: MmapRaw,
    file: RegionFile,
}

impl Region {
    /// Creates the object exclusively, sizes it to (at least) `len` bytes with real backing
    /// store, and maps it. On any error nothing is left behind.
    pub(crate) fn create(
        backing: &Backing,
        len: u64,
        options: &CreateOptions,
    ) -> Result<Region, Error> {
        let what = backing.describe();
        let (fd, name) = match &backing.0 {
            Source::Shm(name) => {
                let object = shm::object_name(name)?;
                let fd = shm::open(
                    &object,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                    options.mode,
                )
                .map_err(|e| exists_error(backing, os_error("shm_open", &what, e)))?;
                (fd, Name::Shm(object))
            }
            Source::File(path) => {
                let fd = file::open(path, true, options.mode).map_err(|e| {
                    // Creating, only the directory can be missing.
                    let what = match e.raw_os_error() {
                        Some(libc::ENOENT) => format!("the directory {}", file::dir_of(path)),
                        _ => what.clone(),
                    };
                    exists_error(backing, os_error("open", &what, e))
                })?;
                (fd, Name::File(path.clone()))
            }
            Source::Memfd(name) => (
                memfd::create(name, options.huge_pages)?,
                Name::Anonymous(what.clone()),
            ),
        };
        // From here on, dropping `file` unlinks the name: every early return cleans up.
        let mut file = RegionFile::new(fd, name, true)?;
        let io = |op, e| os_error(op, &what, e);
        if !matches!(backing.0, Source::Memfd(_)) {
            // The mode exactly as asked, whatever the umask.
            // SAFETY: fd is open for the call.
            if unsafe { libc::fchmod(file.fd.as_raw_fd(), options.mode as libc::mode_t) } != 0 {
                return Err(io("fchmod", io::Error::last_os_error()));
            }
        }
        let size = len.div_ceil(file.block) * file.block;
        file.check_room(size, size)?;
        // SAFETY: fd is open for the call.
        if unsafe { libc::ftruncate(file.fd.as_raw_fd(), size as libc::off_t) } != 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::ENOMEM) => {
                    file.no_space(size, file.free_space())
                }
                _ => io("ftruncate", e),
            });
        }
        file.allocate(size)?;
        let map = map(&file, size, options.populate)?;
        file.unlink_on_drop = !options.persist && !matches!(file.name, Name::Anonymous(_));
        Ok(Region { map, file })
    }

    /// Opens an existing named region, waiting up to `wait` for it to reach `min_len` bytes.
    pub(crate) fn open(backing: &Backing, min_len: u64, wait: Duration) -> Result<Region, Error> {
        let (fd, name) = backing.open_existing()?;
        Self::attach(RegionFile::new(fd, name, false)?, min_len, wait)
    }

    /// Opens a region from a descriptor (a memfd received from elsewhere). Without
    /// `allow_unsealed`, the fd must carry [`memfd::REQUIRED_SEALS`].
    pub(crate) fn from_fd(
        fd: OwnedFd,
        min_len: u64,
        wait: Duration,
        allow_unsealed: bool,
    ) -> Result<Region, Error> {
        if !allow_unsealed {
            if let Some(missing) = memfd::missing(memfd::seals(fd.as_fd())) {
                return Err(Error::Unsealed { missing });
            }
        }
        let label = format!("fd {}", fd.as_raw_fd());
        Self::attach(
            RegionFile::new(fd, Name::Anonymous(label), false)?,
            min_len,
            wait,
        )
    }

    fn attach(file: RegionFile, min_len: u64, wait: Duration) -> Result<Region, Error> {
        let len = file.wait_for_len(min_len, wait)?;
        // A creator that was not shmlane (or a hostile one) may have left holes: a page
        // faulted into a hole on a full filesystem is a SIGBUS. Backed now, or NoSpace.
        let st = fstat(file.fd.as_fd()).map_err(|e| os_error("fstat", &file.describe(), e))?;
        let holes = len.saturating_sub((st.st_blocks.max(0) as u64).saturating_mul(512));
        if holes > 0 {
            file.check_room(len, holes)?;
            file.allocate(len)?;
        }
        let map = map(&file, len, false)?;
        Ok(Region { map, file })
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn base(&self) -> NonNull<u8> {
        NonNull::new(self.map.as_mut_ptr()).expect("a mapping is never at address 0")
    }

    /// Bytes mapped: the file's size when it was mapped.
    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// The region's descriptor (its own open file description).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.fd.as_fd()
    }

    /// The path or label, for messages.
    pub(crate) fn describe(&self) -> String {
        self.file.describe()
    }

    /// Seals a memfd against resizing; other backings cannot be sealed.
    pub(crate) fn seal(&self) -> Result<(), Error> {
        if matches!(self.file.name, Name::Anonymous(_)) {
            memfd::seal(self.fd())
                .map_err(|e| os_error("fcntl(F_ADD_SEALS)", &self.describe(), e))?;
        }
        Ok(())
    }

    /// A new open file description of the same file, for a lock of its own (a dup would share
    /// this one's locks). Named regions are re-opened by name, others via /proc/self/fd.
    pub(crate) fn reopen(&self) -> Result<OwnedFd, Error> {
        let what = self.describe();
        let fd = match &self.file.name {
            Name::Shm(object) => {
                shm::open(object, libc::O_RDWR, 0).map_err(|e| os_error("shm_open", &what, e))?
            }
            Name::File(path) => {
                file::open(path, false, 0).map_err(|e| os_error("open", &what, e))?
            }
            Name::Anonymous(_) => {
                let proc_path = format!("/proc/self/fd/{}", self.file.fd.as_raw_fd());
                file::open(Path::new(&proc_path), false, 0)
                    .map_err(|e| os_error("open", &format!("{what} (as {proc_path})"), e))?
            }
        };
        let id = file_id(fd.as_fd()).map_err(|e| os_error("fstat", &what, e))?;
        if id != self.file.id {
            return Err(Error::NotFound {
                what: format!(
                    "{what} (the name now refers to another region; this one was removed)"
                ),
            });
        }
        Ok(fd)
    }
}

fn map(file: &RegionFile, len: u64, populate: bool) -> Result<MmapRaw, Error> {
    let len = usize::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!("a {len}-byte region does not fit in memory"))
    })?;
    let mut options = MmapOptions::new();
    options.len(len);
    if populate {
        options.populate();
    }
    options
        .map_raw(file.fd.as_raw_fd())
        .map_err(|e| os_error("mmap", &file.describe(), e))
}

/// Refines an EEXIST from create with whether a live process holds the existing object.
fn exists_error(backing: &Backing, err: Error) -> Error {
    match err {
        Error::AlreadyExists { what, .. } => Error::AlreadyExists {
            what,
            live: probe_live(backing).ok(),
        },
        other => other,
    }
}

/// Whether any live process holds a lock on the named region (a channel handle or an
/// endpoint). Opens a description of its own, which holds no locks.
pub(crate) fn probe_live(backing: &Backing) -> Result<bool, Error> {
    let (fd, name) = backing.open_existing()?;
    lock::is_locked(fd.as_fd(), 0, 0)
        .map_err(|e| os_error("fcntl(F_OFD_GETLK)", &name.describe(), e))
}

/// Unlinks a named region that no live process holds; refuses a live one.
pub(crate) fn remove_stale(backing: &Backing) -> Result<(), Error> {
    let what = backing.describe();
    if probe_live(backing)? {
        return Err(Error::AlreadyExists {
            what,
            live: Some(true),
        });
    }
    let (_, name) = backing.open_existing()?;
    name.unlink().map_err(|e| os_error("unlink", &what, e))
}
