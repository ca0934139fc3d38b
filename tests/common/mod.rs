//! Helpers for tests that use real processes: fork a child that runs a closure, unique
//! names, a scratch directory on tmpfs, and raw access to a region's bytes (the hostile
//! peer's view).

#![allow(dead_code)] // each test binary uses some of these

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Exit status a child uses to say "skipped" (with the reason on stderr).
pub const SKIP: i32 = 77;

/// A forked child process. Killed and reaped on drop if still running.
pub struct Child {
    pub pid: libc::pid_t,
    reaped: bool,
}

/// Forks; the child runs `f` and exits with its return value (101 if it panics), running no
/// destructors of the parent's state. Only fork-safe work belongs in `f`: the child of a
/// multi-threaded test harness has one thread, and glibc's malloc stays usable.
pub fn fork(f: impl FnOnce() -> i32) -> Child {
    // SAFETY: plain fork(2); the child only runs `f` and then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leaving the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

impl Child {
    /// Waits for the child; its exit code, or 128 + signal.
    pub fn wait(&mut self) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(rc, self.pid, "waitpid: {}", std::io::Error::last_os_error());
        self.reaped = true;
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }

    /// SIGKILL: no destructor, no atexit, nothing of the child's runs.
    pub fn kill(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        assert_eq!(self.wait(), 128 + libc::SIGKILL);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Asserts a child's exit code, printing the skip reason for SKIP.
pub fn expect_exit(child: &mut Child, code: i32, what: &str) -> bool {
    let got = child.wait();
    if got == SKIP {
        eprintln!("skipped: {what} (the child printed why)");
        return false;
    }
    assert_eq!(got, code, "{what}: child exited with {got}");
    true
}

/// A name no other test (or test run) uses.
pub fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "shmlane-test-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory on tmpfs (/dev/shm), removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let dir = Path::new("/dev/shm").join(unique(tag));
        std::fs::create_dir(&dir).unwrap();
        ScratchDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `value` at byte `offset` of the file behind `path`, through a mapping of its own:
/// what a buggy or hostile peer can do.
pub fn poke_u64(path: &Path, offset: usize, value: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let map = memmap2::MmapOptions::new()
        .len(offset + 8)
        .map_raw(file.as_raw_fd())
        .unwrap();
    // SAFETY: offset + 8 is inside the mapping; an aligned u64 slot of the header.
    unsafe { (map.as_mut_ptr().add(offset) as *mut u64).write_volatile(value) };
}

/// Whether this process may do what root may (mount, setuid).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Polls `cond` every millisecond for up to `limit`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// A read-write mapping of a named region's first `len` bytes, with atomic access to its
/// words: what a test uses to watch a channel, or to act as a peer that breaks the protocol.
pub struct Raw {
    map: memmap2::MmapRaw,
}

impl Raw {
    pub fn shm(name: &str, len: usize) -> Raw {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/dev/shm").join(name))
            .unwrap();
        Raw {
            map: memmap2::MmapOptions::new().len(len).map_raw(&file).unwrap(),
        }
    }

    fn word<T>(&self, offset: usize) -> *mut T {
        assert!(
            offset + std::mem::size_of::<T>() <= self.map.len()
                && offset % std::mem::align_of::<T>() == 0
        );
        // SAFETY: in bounds and aligned, checked above.
        unsafe { self.map.as_mut_ptr().add(offset).cast() }
    }

    pub fn u64(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
        // SAFETY: an aligned, in-bounds u64 of a shared mapping that lives as long as self.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.word(offset)) }
    }

    pub fn u32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: an aligned, in-bounds u32 of a shared mapping that lives as long as self.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.word(offset)) }
    }
}

/// Header offsets the tests use (the layout is the ABI).
pub mod offsets {
    pub const PRODUCER_POS: usize = 128;
    pub const PRODUCER_WAITERS: usize = 128 + 68;
    pub const CONSUMER_POS: usize = 256;
    pub const CONSUMER_WAITERS: usize = 256 + 68;
    pub const REGISTRY: usize = 384;
    pub const ENTRY_LEN: usize = 128;
    pub const ENTRY_CLAIMING: usize = 8;
}

/// What a create that ran out of room reported: the fields of its `NoSpace` and its
/// message.
pub struct NoSpace {
    pub dir: String,
    pub needed: u64,
    pub available: Option<u64>,
    pub huge_pages: bool,
    pub message: String,
}

/// The `NoSpace` of a create; panics, saying what came instead, on anything else.
pub fn no_space<T>(created: Result<T, shmlane::Error>) -> NoSpace {
    match created {
        Err(e @ shmlane::Error::NoSpace { .. }) => {
            let message = e.to_string();
            let shmlane::Error::NoSpace {
                dir,
                needed,
                available,
                huge_pages,
            } = e
            else {
                unreachable!()
            };
            NoSpace {
                dir,
                needed,
                available,
                huge_pages,
                message,
            }
        }
        other => panic!("expected NoSpace, got {:?}", other.err()),
    }
}

/// Runs `body` in a forked child that has a private filesystem of type `fstype` ("tmpfs",
/// "hugetlbfs") with `options` (e.g. "size=1m") mounted at the directory `body` is given,
/// gone when the child exits; `body` returns the child's exit code, which must be 0.
/// Skipped, saying why, without root or where the mount is refused.
pub fn in_private_mount(fstype: &str, options: &str, what: &str, body: impl FnOnce(&Path) -> i32) {
    if !is_root() {
        eprintln!("skipped: {what}: mounting a {fstype} needs root");
        return;
    }
    let dir = ScratchDir::new(fstype);
    let mount_point = dir.0.clone();
    let mut child = fork(move || {
        if let Err(why) = mount_private(&mount_point, fstype, options) {
            eprintln!("{why}");
            return SKIP;
        }
        body(&mount_point)
    });
    expect_exit(&mut child, 0, what);
}

/// [`in_private_mount`] of a tmpfs.
pub fn in_private_tmpfs(options: &str, what: &str, body: impl FnOnce(&Path) -> i32) {
    in_private_mount("tmpfs", options, what, body)
}

/// In a forked child: a private mount namespace with a filesystem of type `fstype` and
/// `options` mounted at `mount_point`. Err says why it could not be had.
fn mount_private(mount_point: &Path, fstype: &str, options: &str) -> Result<(), String> {
    let target = std::ffi::CString::new(mount_point.to_str().unwrap()).unwrap();
    let c_fstype = std::ffi::CString::new(fstype).unwrap();
    let options = std::ffi::CString::new(options).unwrap();
    // SAFETY: plain syscalls with valid C strings.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNS) refused: {}",
                std::io::Error::last_os_error()
            ));
        }
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        );
        if libc::mount(
            c_fstype.as_ptr(),
            target.as_ptr(),
            c_fstype.as_ptr(),
            0,
            options.as_ptr().cast(),
        ) != 0
        {
            return Err(format!(
                "mount -t {fstype} refused: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Runs `body` in a forked child that is alone in a new memory cgroup limited to `limit`
/// bytes (cgroup v1, or v2 where the memory controller can be delegated to a child);
/// `body` returns the child's exit code, which must be 0. The cgroup is removed afterwards.
/// Skipped, saying why, without root or where no such cgroup can be made.
pub fn in_memory_cgroup(limit: u64, what: &str, body: impl FnOnce() -> i32) {
    if !is_root() {
        eprintln!("skipped: {what}: making a memory cgroup needs root");
        return;
    }
    let cgroup = match make_memory_cgroup(limit) {
        Ok(dir) => Cgroup(dir),
        Err(why) => {
            eprintln!("skipped: {what}: {why}");
            return;
        }
    };
    let procs = cgroup.0.join("cgroup.procs");
    let mut child = fork(move || {
        // "0": the writing process itself.
        if let Err(e) = std::fs::write(&procs, "0") {
            eprintln!("joining {}: {e}", procs.display());
            return SKIP;
        }
        body()
    });
    expect_exit(&mut child, 0, what);
}

/// A cgroup directory, removed on drop (also when a test fails): once its processes have
/// exited, the charges of pages they left move to the parent.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A new memory cgroup under this process's own, with a limit of `limit` bytes. Err says
/// why none could be made.
fn make_memory_cgroup(limit: u64) -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let own = |wanted: &dyn Fn(&str, &str) -> bool| {
        cgroups.lines().find_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            wanted(id, controllers).then(|| path.trim_start_matches('/').to_string())
        })
    };
    let name = unique("memcg");
    // v1 where the memory controller is mounted on its own (a hybrid host), else v2.
    let (dir, limit_file) =
        if let Some(path) = own(&|_, controllers| controllers.split(',').any(|c| c == "memory")) {
            let parent = Path::new("/sys/fs/cgroup/memory").join(path);
            (parent.join(&name), "memory.limit_in_bytes")
        } else if let Some(path) = own(&|id, controllers| id == "0" && controllers.is_empty()) {
            let parent = Path::new("/sys/fs/cgroup").join(path);
            let delegated =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            if !delegated.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "the cgroup v2 memory controller is not enabled for children of {}",
                    parent.display()
                ));
            }
            (parent.join(&name), "memory.max")
        } else {
            return Err("no memory cgroup controller in /proc/self/cgroup".to_string());
        };
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    std::fs::write(dir.join(limit_file), limit.to_string()).map_err(|e| {
        let _ = std::fs::remove_dir(&dir);
        format!("setting {}: {e}", dir.join(limit_file).display())
    })?;
    Ok(dir)
}

/// Runs `f` while another thread sends SIGUSR1 to the calling thread every `every`, with a
/// handler that does nothing, installed with SA_RESTART as most are: whatever blocking
/// system call `f` makes and the kernel does not restart (a socket call with a timeout,
/// a long fallocate) is interrupted.
pub fn under_signals<R>(every: Duration, f: impl FnOnce() -> R) -> R {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: sigaction is plain data; the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0
        );
    }
    // SAFETY: pthread_self has no preconditions.
    let target = unsafe { libc::pthread_self() };
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: `target` is this scope's caller, alive until `stop` is set.
                unsafe { libc::pthread_kill(target, libc::SIGUSR1) };
                std::thread::sleep(every);
            }
        });
        let result = f();
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Runs the tests of one binary one at a time. A test that forks while another test's
/// thread holds a role lock, a listener or a pipe would hand its child a copy of that
/// descriptor, and the copy keeps the lock (or socket) alive until the child exits: the
/// other test would then see a live peer where it expects none.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
