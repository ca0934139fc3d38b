//! `Error`, for setting up channels, and the per-operation errors that hand a value back.

use std::fmt;
use std::io;
use std::time::Duration;

/// Why creating, opening or claiming a channel failed. Every message says what happened and
/// what to do about it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The name or file does not exist.
    NotFound {
        /// The path that was looked up.
        what: String,
    },
    /// `create` found the name taken.
    AlreadyExists {
        /// The path that exists.
        what: String,
        /// Whether a live process still holds it (`None`: could not be told).
        live: Option<bool>,
    },
    /// The OS refused access (file mode, owner, or handoff policy).
    PermissionDenied {
        /// The path or object refused.
        what: String,
    },
    /// The filesystem behind the region is too small for it, or (a tmpfs or a memfd) the
    /// memory that would back it is: more than MemAvailable + SwapFree, or than what a
    /// memory cgroup's limit leaves (the limit less the usage, plus reclaimable page cache).
    /// Checked before any of it is reserved.
    NoSpace {
        /// The directory (tmpfs mount) that ran out.
        dir: String,
        /// Bytes the region needs.
        needed: u64,
        /// Bytes that were free there (the lower of the filesystem's free space and the
        /// memory ceiling, on a tmpfs; the free huge pages, for huge pages), when that
        /// could be read.
        available: Option<u64>,
        /// The region's pages are huge pages (a file on hugetlbfs, or a memfd made with
        /// `huge_pages(true)`): they come from the kernel's pool of reserved huge pages,
        /// not from free memory.
        huge_pages: bool,
    },
    /// The region was made for another type, version or kind of channel, or its header does
    /// not describe it.
    Incompatible(Mismatch),
    /// The creator had not finished initialising the region within the wait.
    NotReady {
        /// The region.
        what: String,
        /// How long `open` waited.
        waited: Duration,
    },
    /// A memfd lacks the seals that stop a peer from resizing it under us.
    Unsealed {
        /// The seals that are missing.
        missing: &'static str,
    },
    /// A peer wrote an impossible value into the shared header.
    Corrupt(Corruption),
    /// A live endpoint already holds this role.
    RoleTaken {
        /// `"producer"` or `"consumer"`.
        role: &'static str,
    },
    /// Every MPMC registry entry is held by a live endpoint.
    RegistryFull {
        /// The registry's size, fixed at create.
        len: u32,
    },
    /// A handoff server refused this client (its policy), saying why.
    Refused {
        /// The server's reason.
        reason: String,
    },
    /// A handoff peer did not speak the handoff protocol (garbage, a truncated message, or
    /// no answer within the timeout).
    Handshake {
        /// What went wrong.
        reason: String,
    },
    /// An argument was out of range (capacity not a power of two, a name with a slash, ...).
    InvalidArgument(String),
    /// Any other OS error.
    Io {
        /// The operation that failed.
        op: &'static str,
        /// The path or object it was applied to.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

/// One header field that did not match what the opener expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The header field.
    pub field: &'static str,
    /// What this process expected there.
    pub expected: String,
    /// What the region holds.
    pub found: String,
}

/// A counter read from shared memory that no correct peer could have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corruption {
    /// The shared counter.
    pub counter: &'static str,
    /// The value read.
    pub found: u64,
    /// The lowest value that would have been possible.
    pub min: u64,
    /// The highest value that would have been possible.
    pub max: u64,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shared {} is {}, outside the possible range {}..={}: a peer process wrote an impossible \
             value (a bug or a hostile peer); stop using this channel and recreate it",
            self.counter, self.found, self.min, self.max
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { what } => write!(
                f,
                "{what} does not exist: create it first, or check the name"
            ),
            Error::AlreadyExists { what, live } => {
                write!(f, "{what} already exists")?;
                match live {
                    Some(true) => write!(f, " and a live process holds it: pick another name"),
                    Some(false) => write!(
                        f,
                        " but no live process holds it (left by a crash): create with \
                         reclaim_stale(true), or remove it with Channel::remove"
                    ),
                    None => write!(f, ": pick another name, or remove it if it is stale"),
                }
            }
            Error::PermissionDenied { what } => write!(
                f,
                "permission denied on {what}: it belongs to another user or its mode excludes you; \
                 create it with a mode that admits your user, or run as its owner"
            ),
            Error::NoSpace {
                dir,
                needed,
                available,
                huge_pages,
            } => {
                if *huge_pages {
                    write!(
                        f,
                        "not enough huge pages for a {needed}-byte region in {dir}"
                    )?;
                } else {
                    write!(f, "not enough space in {dir} for a {needed}-byte region")?;
                }
                if let Some(free) = available {
                    write!(f, " ({free} bytes free)")?;
                }
                if *huge_pages {
                    return write!(
                        f,
                        ": reserve more huge pages of that size (as root: \
                         /proc/sys/vm/nr_hugepages or \
                         /sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages; a hugetlbfs \
                         mount's size= limits them too), make the channel smaller, or create it \
                         without huge pages"
                    );
                }
                write!(
                    f,
                    ": make the channel smaller, or the tmpfs larger (docker run --shm-size=..., \
                     Kubernetes emptyDir.sizeLimit, mount -o remount,size=...); a tmpfs or \
                     memfd region is memory, so it also needs that much free memory under the \
                     memory cgroup's limit"
                )
            }
            Error::Incompatible(m) => {
                write!(
                    f,
                    "incompatible region: {} expected {}, found {}",
                    m.field, m.expected, m.found
                )?;
                if m.field == "type tag" {
                    write!(
                        f,
                        "; the default tag hashes the type's path, which differs between crates \
                         and binaries: give both sides the same Builder::type_tag"
                    )
                } else {
                    write!(
                        f,
                        "; both sides must use the same shmlane layout, channel kind and element type"
                    )
                }
            }
            Error::NotReady { what, waited } => write!(
                f,
                "{what} was not initialised within {waited:?}: its creator may still be starting \
                 (open again later) or died during create (remove the name)"
            ),
            Error::Unsealed { missing } => write!(
                f,
                "the memfd lacks seals {missing}, so a peer could resize it under us; seal it, or \
                 opt in with allow_unsealed(true) if you trust every holder of the fd"
            ),
            Error::Corrupt(c) => c.fmt(f),
            Error::RoleTaken { role } => write!(
                f,
                "the {role} role is held by a live endpoint: a channel has one {role}; drop the \
                 other one first"
            ),
            Error::RegistryFull { len } => write!(
                f,
                "all {len} endpoint entries of this MPMC channel are held by live endpoints: drop \
                 some, or create the channel with a larger Builder::registry_len"
            ),
            Error::Refused { reason } => write!(
                f,
                "the handoff server refused this process: {reason}; ask its operator to admit your \
                 uid or gid"
            ),
            Error::Handshake { reason } => write!(
                f,
                "handoff handshake failed: {reason}; check that the socket belongs to a shmlane \
                 server of the same protocol version"
            ),
            Error::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            Error::Io { op, what, source } => {
                write!(f, "{op} on {what} failed: {source}")?;
                match io_advice(op, source) {
                    Some(advice) => write!(f, ": {advice}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// What to do about an OS error that no other variant covers, where there is something to
/// do: these come from limits of the process or the system, not from shmlane.
fn io_advice(op: &str, source: &io::Error) -> Option<&'static str> {
    Some(match source.raw_os_error()? {
        libc::EMFILE => {
            "this process has as many descriptors open as its limit allows (each channel \
             and endpoint holds one): close some, or raise the limit (ulimit -n, \
             RLIMIT_NOFILE)"
        }
        libc::ENFILE => "the system's table of open files is full: raise fs.file-max",
        libc::ENOMEM if op == "mmap" => {
            "no room for the mapping in this process's address space: its limit (ulimit -v, \
             RLIMIT_AS) or vm.max_map_count is reached; make the channel smaller, or raise \
             the limit"
        }
        libc::EROFS => {
            "the filesystem is mounted read-only: put the region in a writable directory, \
             or use a memfd"
        }
        _ => return None,
    })
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Error {
        Error::Corrupt(c)
    }
}

/// `try_push` failed; the value comes back.
#[derive(PartialEq, Eq)]
pub enum TryPushError<T> {
    /// The ring is full.
    Full(T),
    /// The consumer is gone (closed or died); nothing will ever read the value.
    Disconnected(T),
    /// The shared header holds an impossible value.
    Corrupt(T, Corruption),
}

/// A blocking push failed; the value comes back.
#[derive(PartialEq, Eq)]
pub enum PushError<T> {
    /// The ring stayed full for the whole timeout.
    Timeout(T),
    /// The consumer is gone (closed or died).
    Disconnected(T),
    /// The shared header holds an impossible value.
    Corrupt(T, Corruption),
}

/// `try_pop` found nothing to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryPopError {
    /// The ring is empty and the producer is still there.
    Empty,
    /// The ring is empty and the producer is gone: nothing more will come.
    Disconnected,
    /// MPMC only: a producer died after claiming the slot at `position` and before
    /// publishing it. The slot was skipped; nothing that was published is lost, and the next
    /// pop continues with the following items.
    ProducerDied {
        /// The skipped position.
        position: u64,
    },
    /// The shared header holds an impossible value.
    Corrupt(Corruption),
}

/// A blocking pop returned without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopError {
    /// The ring stayed empty for the whole timeout.
    Timeout,
    /// The ring is empty and the producer is gone: nothing more will come.
    Disconnected,
    /// MPMC only: see [`TryPopError::ProducerDied`].
    ProducerDied {
        /// The skipped position.
        position: u64,
    },
    /// The shared header holds an impossible value.
    Corrupt(Corruption),
}

/// A chunk could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Fewer slots (or items) than asked for; this many are there now.
    TooFew(usize),
    /// The peer is gone (and, for a read, the ring is drained).
    Disconnected,
    /// A blocking reservation waited its whole timeout.
    Timeout,
    /// MPMC `pop_slice` only: see [`TryPopError::ProducerDied`].
    ProducerDied {
        /// The skipped position.
        position: u64,
    },
    /// The shared header holds an impossible value.
    Corrupt(Corruption),
}

macro_rules! value_error {
    ($name:ident { $($variant:ident($($extra:ident)?) => $text:literal),* }) => {
        impl<T> $name<T> {
            /// The value that was not pushed.
            pub fn into_inner(self) -> T {
                match self {
                    $($name::$variant(value $(, $extra)?) => { $(let _ = $extra;)? value })*
                }
            }
        }

        impl $name<()> {
            /// The same failure, carrying `value` back.
            pub(crate) fn with<T>(self, value: T) -> $name<T> {
                match self {
                    $($name::$variant((), $($extra)?) => $name::$variant(value, $($extra)?),)*
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_ $(, $extra)?) => {
                        write!(f, concat!(stringify!($variant), "(..)"))?;
                        $(write!(f, " {:?}", $extra)?;)?
                        Ok(())
                    })*
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $($name::$variant(_ $(, $extra)?) => {
                        f.write_str($text)?;
                        $(write!(f, ": {}", $extra)?;)?
                        Ok(())
                    })*
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error!(TryPushError {
    Full() => "the ring is full",
    Disconnected() => "the consumer is gone",
    Corrupt(c) => "the shared header is corrupt"
});
value_error!(PushError {
    Timeout() => "the ring stayed full until the timeout",
    Disconnected() => "the consumer is gone",
    Corrupt(c) => "the shared header is corrupt"
});

const DRAINED: &str = "the producer is gone and the ring is drained";

fn producer_died(f: &mut fmt::Formatter<'_>, position: u64) -> fmt::Result {
    write!(
        f,
        "a producer died after claiming position {position} and before publishing it; that slot \
         was skipped (nothing published is lost) and the next pop continues"
    )
}

impl fmt::Display for TryPopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryPopError::Empty => f.write_str("the ring is empty"),
            TryPopError::Disconnected => f.write_str(DRAINED),
            TryPopError::ProducerDied { position } => producer_died(f, *position),
            TryPopError::Corrupt(c) => write!(f, "the shared header is corrupt: {c}"),
        }
    }
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PopError::Timeout => f.write_str("the ring stayed empty until the timeout"),
            other => TryPopError::from_pop(*other).fmt(f),
        }
    }
}

impl TryPopError {
    /// The same failure, for a non-timeout `PopError`.
    fn from_pop(e: PopError) -> TryPopError {
        match e {
            PopError::Disconnected => TryPopError::Disconnected,
            PopError::ProducerDied { position } => TryPopError::ProducerDied { position },
            PopError::Corrupt(c) => TryPopError::Corrupt(c),
            PopError::Timeout => TryPopError::Empty,
        }
    }
}

/// What a blocking pop reports for what a non-blocking attempt found: an empty ring at the
/// end of the wait is a timeout.
impl From<TryPopError> for PopError {
    fn from(e: TryPopError) -> PopError {
        match e {
            TryPopError::Empty => PopError::Timeout,
            TryPopError::Disconnected => PopError::Disconnected,
            TryPopError::ProducerDied { position } => PopError::ProducerDied { position },
            TryPopError::Corrupt(c) => PopError::Corrupt(c),
        }
    }
}

/// What a blocking push reports for what a non-blocking attempt found: a full ring at the
/// end of the wait is a timeout.
impl<T> From<TryPushError<T>> for PushError<T> {
    fn from(e: TryPushError<T>) -> PushError<T> {
        match e {
            TryPushError::Full(value) => PushError::Timeout(value),
            TryPushError::Disconnected(value) => PushError::Disconnected(value),
            TryPushError::Corrupt(value, c) => PushError::Corrupt(value, c),
        }
    }
}

impl std::error::Error for TryPopError {}
impl std::error::Error for PopError {}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::TooFew(n) => {
                write!(f, "fewer slots or items than asked for; available now: {n}")
            }
            ChunkError::Disconnected => f.write_str("the peer is gone"),
            ChunkError::Timeout => f.write_str("the wait timed out"),
            ChunkError::ProducerDied { position } => producer_died(f, *position),
            ChunkError::Corrupt(c) => write!(f, "the shared header is corrupt: {c}"),
        }
    }
}

impl std::error::Error for ChunkError {}
