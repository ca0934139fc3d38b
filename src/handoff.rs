//! Hand a channel's descriptor to other processes over a Unix domain socket (`SCM_RIGHTS`).
//!
//! A memfd channel has no name anyone could guess, and its seals stop a peer from resizing
//! it: the safest backing. The process that created it serves it on a socket; others
//! connect and get a validated channel.
//!
//! ```no_run
//! use std::time::Duration;
//! use shmlane::{handoff, spsc, Backing};
//!
//! # fn main() -> Result<(), shmlane::Error> {
//! // Server: create, then serve to every client the policy admits (default: same uid).
//! let chan = spsc::Channel::<u64>::create(Backing::memfd("ticks"), 4096)?;
//! let listener = handoff::Listener::bind("/run/ticks.sock")?;
//! std::thread::spawn(move || listener.serve(&chan));
//!
//! // Client, in another process:
//! let chan: spsc::Channel<u64> = handoff::connect("/run/ticks.sock", Duration::from_secs(1))?;
//! # Ok(()) }
//! ```
//!
//! # Protocol
//! The server reads nothing from a client, so no client can stall it by sending garbage or
//! silence. On accept it reads the peer's credentials (`SO_PEERCRED`) and applies its
//! [`Policy`]; then it sends one 256-byte message: magic `SHMLHAND`, protocol version,
//! status, and, when admitted, the channel's kind, capacity, slot size and alignment and type
//! tag, with the fd attached; when refused, a reason and no fd. Sends use `MSG_NOSIGNAL` and
//! a timeout, so a client that vanished or never reads cannot kill or block the server. The
//! client checks the message against its `T` (a mismatch is `Error::Incompatible` before any
//! item is read), then opens the fd with `from_fd`'s full checks (seals, size, header).
//! Every descriptor received is close-on-exec (`MSG_CMSG_CLOEXEC`).

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::channel::{Builder, Flavor};
use crate::error::{Error, Mismatch};
use crate::region::os_error;
use crate::wait::{deadline, expired};

const MAGIC: [u8; 8] = *b"SHMLHAND";
/// Bumped on any change to the message below.
const PROTOCOL_VERSION: u32 = 1;
const MESSAGE_LEN: usize = 256;
const STATUS_OK: u32 = 0;
const STATUS_REFUSED: u32 = 1;
/// Longest refusal reason sent.
const REASON_MAX: usize = MESSAGE_LEN - 64;
/// How long the server lets one send take (an accepted socket blocks: std clears O_NONBLOCK).
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// The credentials of a connecting process, as the kernel reports them (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its pid, in the server's pid namespace (0 if it has none there).
    pub pid: i32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// Who may receive the channel.
pub enum Policy {
    /// Processes of the server's own effective uid (the default).
    SameUid,
    /// Processes whose uid or gid is in these lists.
    Allow {
        /// Admitted uids.
        uids: Vec<u32>,
        /// Admitted gids.
        gids: Vec<u32>,
    },
    /// Anyone who can connect to the socket (its file mode still applies).
    Any,
    /// A function of the peer's credentials.
    Custom(Box<dyn Fn(&PeerCred) -> bool + Send + Sync>),
}

impl Policy {
    fn admits(&self, peer: &PeerCred) -> bool {
        match self {
            // SAFETY: geteuid has no preconditions.
            Policy::SameUid => peer.uid == unsafe { libc::geteuid() },
            Policy::Allow { uids, gids } => uids.contains(&peer.uid) || gids.contains(&peer.gid),
            Policy::Any => true,
            Policy::Custom(admit) => admit(peer),
        }
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::SameUid => f.write_str("SameUid"),
            Policy::Allow { uids, gids } => f
                .debug_struct("Allow")
                .field("uids", uids)
                .field("gids", gids)
                .finish(),
            Policy::Any => f.write_str("Any"),
            Policy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// What happened to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer was admitted and sent the fd.
    Served(PeerCred),
    /// The policy refused the peer; it was told so and got no fd.
    Refused(PeerCred),
    /// The peer went away (or stopped reading) before the message was sent.
    Vanished,
}

/// A Unix socket that hands a channel's fd to the processes its [`Policy`] admits.
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    /// The socket file, removed on drop (if it is still ours); None for abstract names.
    path: Option<(PathBuf, u64)>,
    policy: Policy,
}

impl Listener {
    /// Binds a socket file at `path` with mode 0600. A stale socket file (no server answers
    /// on it) is replaced; a path where a live server listens is refused with
    /// `Error::AlreadyExists`, as is one that is not a socket.
    pub fn bind(path: impl AsRef<Path>) -> Result<Listener, Error> {
        Self::bind_with_mode(path, 0o600)
    }

    /// [`bind`](Self::bind) with another file mode (e.g. 0o660 for a group).
    pub fn bind_with_mode(path: impl AsRef<Path>, mode: u32) -> Result<Listener, Error> {
        let path = path.as_ref();
        let what = path.display().to_string();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(Error::AlreadyExists {
                    what: format!("{what} (not a socket)"),
                    live: None,
                });
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(Error::AlreadyExists {
                        what,
                        live: Some(true),
                    })
                }
                // Nobody listens: left by a crashed server.
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    std::fs::remove_file(path).map_err(|e| os_error("unlink", &what, e))?;
                }
                Err(e) => return Err(os_error("connect", &what, e)),
            }
        }
        let socket = UnixListener::bind(path).map_err(|e| os_error("bind", &what, e))?;
        let cleanup = |e: io::Error, op| {
            let _ = std::fs::remove_file(path);
            os_error(op, &what, e)
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| cleanup(e, "chmod"))?;
        let ino = std::fs::symlink_metadata(path)
            .map_err(|e| cleanup(e, "stat"))?
            .ino();
        Ok(Listener {
            socket,
            path: Some((path.to_path_buf(), ino)),
            policy: Policy::SameUid,
        })
    }

    /// Binds a Linux abstract-namespace socket (no file; reachable by name from the same
    /// network namespace, so the policy is the only gate).
    pub fn bind_abstract(name: &str) -> Result<Listener, Error> {
        let what = format!("abstract socket @{name}");
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| os_error("bind", &what, e))?;
        let socket = UnixListener::bind_addr(&addr).map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRINUSE) => Error::AlreadyExists {
                what: what.clone(),
                live: Some(true),
            },
            _ => os_error("bind", &what, e),
        })?;
        Ok(Listener {
            socket,
            path: None,
            policy: Policy::SameUid,
        })
    }

    /// Sets who may receive the channel (default [`Policy::SameUid`]).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Accepts one connection (waiting for it) and serves `channel` to it, or refuses it.
    /// Errors are the listener's own; a client's misbehaviour is an [`Outcome`].
    #[allow(private_bounds)]
    pub fn accept<C: Flavor>(&self, channel: &C) -> Result<Outcome, Error> {
        let (stream, _) = self
            .socket
            .accept()
            .map_err(|e| os_error("accept", "handoff socket", e))?;
        Ok(self.answer(stream, channel))
    }

    /// Like [`accept`](Self::accept) without waiting: `Ok(None)` when no client is pending.
    /// For callers with their own event loop: poll [`as_fd`](AsFd::as_fd) for readability.
    #[allow(private_bounds)]
    pub fn try_accept<C: Flavor>(&self, channel: &C) -> Result<Option<Outcome>, Error> {
        self.socket
            .set_nonblocking(true)
            .map_err(|e| os_error("fcntl", "handoff socket", e))?;
        let accepted = self.socket.accept();
        self.socket
            .set_nonblocking(false)
            .map_err(|e| os_error("fcntl", "handoff socket", e))?;
        match accepted {
            Ok((stream, _)) => Ok(Some(self.answer(stream, channel))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(os_error("accept", "handoff socket", e)),
        }
    }

    /// Serves `channel` to every client that connects, until the listener fails.
    #[allow(private_bounds)]
    pub fn serve<C: Flavor>(&self, channel: &C) -> Result<std::convert::Infallible, Error> {
        loop {
            self.accept(channel)?;
        }
    }

    fn answer<C: Flavor>(&self, stream: UnixStream, channel: &C) -> Outcome {
        let Some(peer) = peer_cred(stream.as_fd()) else {
            return Outcome::Vanished;
        };
        let mut message = [0u8; MESSAGE_LEN];
        message[..8].copy_from_slice(&MAGIC);
        put_u32(&mut message, 8, PROTOCOL_VERSION);
        if !self.policy.admits(&peer) {
            put_u32(&mut message, 12, STATUS_REFUSED);
            let reason = format!(
                "uid {} gid {} is not admitted by the server's policy",
                peer.uid, peer.gid
            );
            let reason = &reason.as_bytes()[..reason.len().min(REASON_MAX)];
            put_u32(&mut message, 48, reason.len() as u32);
            message[64..64 + reason.len()].copy_from_slice(reason);
            return match send(&stream, &message, None) {
                Ok(()) => Outcome::Refused(peer),
                Err(_) => Outcome::Vanished,
            };
        }
        let geometry = channel.shared().geometry();
        put_u32(&mut message, 12, STATUS_OK);
        put_u32(&mut message, 16, geometry.kind as u32);
        put_u32(&mut message, 20, geometry.slot_size);
        put_u32(&mut message, 24, geometry.slot_align);
        put_u64(&mut message, 32, geometry.capacity);
        put_u64(&mut message, 40, geometry.type_tag);
        match send(&stream, &message, Some(channel.shared().region().fd())) {
            Ok(()) => Outcome::Served(peer),
            Err(_) => Outcome::Vanished,
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Remove the socket file only if it is still ours (not a successor's).
        if let Some((path, ino)) = &self.path {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Connects to a handoff server's socket file and returns its channel, checked against `C`
/// (`spsc::Channel<T>` or `mpmc::Channel<T>`). `timeout` bounds the whole exchange.
#[allow(private_bounds)]
pub fn connect<C: Flavor>(path: impl AsRef<Path>, timeout: Duration) -> Result<C, Error> {
    connect_with(path, timeout, Builder::new())
}

/// [`connect`] with options for the received channel (a `type_tag`, `allow_unsealed`).
#[allow(private_bounds)]
pub fn connect_with<C: Flavor>(
    path: impl AsRef<Path>,
    timeout: Duration,
    options: Builder<C>,
) -> Result<C, Error> {
    let path = path.as_ref();
    let what = path.display().to_string();
    let stream = UnixStream::connect(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::NotFound {
            what: format!("{what} (no server listens there)"),
        },
        _ => os_error("connect", &what, e),
    })?;
    receive(stream, timeout, options, &what)
}

/// [`connect`] to an abstract-namespace socket.
#[allow(private_bounds)]
pub fn connect_abstract<C: Flavor>(name: &str, timeout: Duration) -> Result<C, Error> {
    let what = format!("abstract socket @{name}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| os_error("connect", &what, e))?;
    let stream = UnixStream::connect_addr(&addr).map_err(|e| match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::NotFound { what: what.clone() },
        _ => os_error("connect", &what, e),
    })?;
    receive(stream, timeout, Builder::new(), &what)
}

/// The client's half of the handshake on a stream already connected: what [`connect`] runs
/// once connected. Hidden, not part of the API: the fuzz targets feed it arbitrary server
/// bytes through a socketpair.
#[doc(hidden)]
#[allow(private_bounds)]
pub fn receive_from<C: Flavor>(stream: UnixStream, timeout: Duration) -> Result<C, Error> {
    receive(stream, timeout, Builder::new(), "the fuzzed server")
}

fn receive<C: Flavor>(
    stream: UnixStream,
    timeout: Duration,
    options: Builder<C>,
    what: &str,
) -> Result<C, Error> {
    let deadline = deadline(timeout);
    let mut message = [0u8; MESSAGE_LEN];
    let (mut got, fd) = within(&stream, UnixStream::set_read_timeout, deadline, || {
        recv_with_fd(stream.as_fd(), &mut message)
    })
    .map_err(|e| handshake_io(e, what))?;
    // A stream may deliver the message in pieces; the fd comes with the first.
    while got < MESSAGE_LEN && got > 0 {
        match within(&stream, UnixStream::set_read_timeout, deadline, || {
            (&stream).read(&mut message[got..])
        })
        .map_err(|e| handshake_io(e, what))?
        {
            0 => break,
            n => got += n,
        }
    }
    let message = Handshake::parse(&message[..got])?;
    let fd = match message {
        Handshake::Refused(reason) => return Err(Error::Refused { reason }),
        Handshake::Offer(offer) => {
            offer.check(&options)?;
            fd.ok_or_else(|| Error::Handshake {
                reason: "the server sent no file descriptor".into(),
            })?
        }
    };
    options.from_fd(fd)
}

/// Runs a socket call with the timeout `set_timeout` sets on `stream` (its read or write
/// timeout) at what is left until `deadline` (at least 1 ms; none without a deadline), and
/// runs it again when a signal handler interrupted it (EINTR): the kernel never restarts a
/// socket call that has a timeout, whatever the handler's SA_RESTART (signal(7)). Past the
/// deadline an interruption is a timeout, so signals that keep coming cannot stretch the
/// wait.
fn within<T>(
    stream: &UnixStream,
    set_timeout: fn(&UnixStream, Option<Duration>) -> io::Result<()>,
    deadline: Option<Instant>,
    mut call: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    loop {
        let left = deadline.map(|d| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        set_timeout(stream, left)?;
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if expired(deadline) {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            done => return done,
        }
    }
}

fn handshake_io(e: io::Error, what: &str) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Handshake {
            reason: format!("{what} sent nothing within the timeout"),
        },
        _ => os_error("recvmsg", what, e),
    }
}

/// What a server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    kind: u32,
    slot_size: u32,
    slot_align: u32,
    capacity: u64,
    type_tag: u64,
}

impl Offer {
    /// Checks the offer against what the client's `C` expects.
    fn check<C: Flavor>(&self, options: &Builder<C>) -> Result<(), Error> {
        options
            .expected()
            .check_identity(self.kind, self.slot_size, self.slot_align, self.type_tag)
    }
}

/// A parsed server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handshake {
    Offer(Offer),
    Refused(String),
}

impl Handshake {
    /// Parses bytes from a peer: a valid message, or an error saying what is wrong. Any
    /// bytes at all are safe to pass.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Handshake, Error> {
        let bad = |reason: String| Error::Handshake { reason };
        if bytes.len() < 8 || bytes[..8] != MAGIC {
            return Err(bad(format!(
                "not a shmlane handoff server (its first {} bytes are not the magic)",
                bytes.len().min(8)
            )));
        }
        if bytes.len() < MESSAGE_LEN {
            return Err(bad(format!(
                "the message was cut short at {} of {MESSAGE_LEN} bytes",
                bytes.len()
            )));
        }
        let version = get_u32(bytes, 8);
        if version != PROTOCOL_VERSION {
            return Err(Error::Incompatible(Mismatch {
                field: "handoff protocol version",
                expected: PROTOCOL_VERSION.to_string(),
                found: version.to_string(),
            }));
        }
        match get_u32(bytes, 12) {
            STATUS_OK => Ok(Handshake::Offer(Offer {
                kind: get_u32(bytes, 16),
                slot_size: get_u32(bytes, 20),
                slot_align: get_u32(bytes, 24),
                capacity: get_u64(bytes, 32),
                type_tag: get_u64(bytes, 40),
            })),
            STATUS_REFUSED => {
                let len = (get_u32(bytes, 48) as usize).min(REASON_MAX);
                Ok(Handshake::Refused(
                    String::from_utf8_lossy(&bytes[64..64 + len]).into_owned(),
                ))
            }
            other => Err(bad(format!("unknown status {other}"))),
        }
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The peer's credentials, or None if the socket is already unusable.
fn peer_cred(socket: BorrowedFd<'_>) -> Option<PeerCred> {
    // SAFETY: ucred is plain data; all-zero is valid.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket, and an out-buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Space for one fd's control message, aligned for cmsghdr.
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends `bytes` with `fd` attached (if any); `MSG_NOSIGNAL`, so a vanished peer is an
/// error here, not a SIGPIPE. Written here rather than with the `sendfd` crate, which sends
/// without `MSG_NOSIGNAL` and receives without `MSG_CMSG_CLOEXEC`.
fn send(stream: &UnixStream, bytes: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(space <= control.0.len());
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` aligned bytes, enough for one header and
        // one fd, so CMSG_FIRSTHDR is non-null and its data has room for the fd.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            libc::CMSG_DATA(cmsg)
                .cast::<RawFd>()
                .write_unaligned(fd.as_raw_fd());
        }
    }
    let set_timeout = UnixStream::set_write_timeout;
    let sent = within(stream, set_timeout, deadline(SEND_TIMEOUT), || {
        // SAFETY: msg points to live buffers (iov, control) for the duration of the call.
        let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent)
    })?;
    if (sent as usize) < bytes.len() {
        // The fd went with the first part; a unix stream takes 256 bytes at once in practice.
        std::io::Write::write_all(&mut &*stream, &bytes[sent as usize..])?;
    }
    Ok(())
}

/// Receives into `buf`, and at most one fd, close-on-exec. Extra fds a hostile peer sends
/// are closed by the kernel (they do not fit the control buffer); a non-SCM_RIGHTS control
/// message is ignored.
fn recv_with_fd(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = CmsgBuf([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: msg points to live buffers for the duration of the call.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fd = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk
    // within them, and an SCM_RIGHTS message's data holds (cmsg_len - CMSG_LEN(0)) / 4 fds,
    // each a new descriptor that we now own.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    let received = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    // Keep the first; any other closes here.
                    if fd.is_none() {
                        fd = Some(received);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if fd.is_none() && msg.msg_flags & libc::MSG_CTRUNC != 0 {
        // The kernel drops a descriptor it cannot install here, and says only this.
        return Err(io::Error::other(
            "the kernel dropped the descriptor the server sent (MSG_CTRUNC), most often \
             because this process is at its limit of open files: close some, or raise it \
             (ulimit -n, RLIMIT_NOFILE)",
        ));
    }
    Ok((got as usize, fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_bytes() -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        m[..8].copy_from_slice(&MAGIC);
        put_u32(&mut m, 8, PROTOCOL_VERSION);
        put_u32(&mut m, 12, STATUS_OK);
        put_u32(&mut m, 16, 1);
        put_u32(&mut m, 20, 8);
        put_u32(&mut m, 24, 8);
        put_u64(&mut m, 32, 64);
        put_u64(&mut m, 40, 7);
        m
    }

    #[test]
    fn parses_an_offer_and_a_refusal() {
        assert_eq!(
            Handshake::parse(&offer_bytes()).unwrap(),
            Handshake::Offer(Offer {
                kind: 1,
                slot_size: 8,
                slot_align: 8,
                capacity: 64,
                type_tag: 7
            })
        );
        let mut refusal = offer_bytes();
        put_u32(&mut refusal, 12, STATUS_REFUSED);
        put_u32(&mut refusal, 48, 2);
        refusal[64..66].copy_from_slice(b"no");
        assert_eq!(
            Handshake::parse(&refusal).unwrap(),
            Handshake::Refused("no".into())
        );
        // A reason length beyond the message is cut to what fits.
        put_u32(&mut refusal, 48, u32::MAX);
        assert!(
            matches!(Handshake::parse(&refusal), Ok(Handshake::Refused(r)) if r.len() == REASON_MAX)
        );
    }

    #[test]
    fn rejects_what_is_not_a_message() {
        assert!(matches!(
            Handshake::parse(b""),
            Err(Error::Handshake { .. })
        ));
        assert!(matches!(
            Handshake::parse(b"HTTP/1.1 200 OK\r\n"),
            Err(Error::Handshake { .. })
        ));
        assert!(matches!(
            Handshake::parse(&offer_bytes()[..100]),
            Err(Error::Handshake { .. })
        ));
        let mut future = offer_bytes();
        put_u32(&mut future, 8, 2);
        assert!(
            matches!(Handshake::parse(&future), Err(Error::Incompatible(m)) if m.field == "handoff protocol version")
        );
        let mut odd = offer_bytes();
        put_u32(&mut odd, 12, 9);
        assert!(matches!(
            Handshake::parse(&odd),
            Err(Error::Handshake { .. })
        ));
    }
}
