//! What SPSC and MPMC channels share: the options, creating and opening a region with its
//! header, and claiming a role with a liveness lock.

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::{addr_of, addr_of_mut, NonNull};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Mismatch};
use crate::layout::{
    role_state, Config, Entry, Expected, Geometry, Header, HEADER_LEN, LAYOUT_VERSION, MAGIC, READY,
};
use crate::region::{lock, Backing, CreateOptions, Region};
use crate::ring::RingMem;
use crate::sync::{
    AtomicU32,
    Ordering::{Acquire, Release},
};
use crate::wait::{deadline, expired};

/// How often a non-blocking call that finds the ring full (or empty) may probe its peers'
/// locks, a system call.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// Consecutive misses per look at the clock after the first, and successes before a run's
/// first miss looks again: a caller polling an empty ring asks on every miss, and even the
/// vDSO clock costs more than the miss itself.
const PROBE_EVERY: u32 = 16;

/// Misses that a poller finding nothing wrong answers inline, with no bookkeeping, per one
/// that goes through [`ProbeClock::due_at`]. A consumer chasing its producer misses once or
/// twice between items, and taking each of those out of line through the bookkeeping cost it
/// some 14% of its rate (`36d71c8`: 138 -> 161-163 M items/s chasing, interleaved bench).
const QUIET_MISSES: u32 = 32;

/// Misses in a run, with no progress at the side's position, after which the party that
/// would end the run (by making room, or publishing) is likely not running; then every
/// [`YIELD_EVERY`]th miss. Counts, not time: a caller that backs off between tries (some
/// microseconds each) reaches them late. At 32 and every 16th, MPMC with two producer and
/// two consumer processes on two CPUs, backing off, ran at 23-27 M items/s (0.82x-0.92x
/// ArrayQueue's threads, six runs); at 8 and every 4th, 28-36 (0.93x-1.14x, eight runs), with
/// the cases where every party has a CPU of its own unchanged (interleaved bench, rounds).
const STALLED_MISSES: u32 = 8;

/// How often a stalled run of misses yields again (see [`STALLED_MISSES`]).
const YIELD_EVERY: u32 = 4;

/// Rate limit for the lock probes of non-blocking calls: at most one per [`PROBE_INTERVAL`]
/// by the coarse monotonic clock (a few ns through the vDSO, tick resolution). A run of
/// misses reads the clock every [`PROBE_EVERY`]th time; its first miss reads it when the
/// endpoint's position moved at least [`PROBE_EVERY`] since the last read, or a blocking
/// call came ([`prime`](Self::prime)), or it is the endpoint's first. A consumer chasing
/// its producer misses once or twice between items: reading the clock on each of those cost
/// it 5-10% of its throughput. Successes are counted from the position, not by the push or
/// pop that made them: no store on their path.
pub(crate) struct ProbeClock {
    last_ns: u64,
    misses: u32,
    /// Progress since the clock was last read. Wrapping: once in 2^32 items a run's first
    /// miss may skip a look it would have had.
    since_look: u32,
    /// The endpoint's position at the last miss.
    pos: u64,
    /// Misses counted by [`quiet_miss`](Self::quiet_miss); wrapping.
    quiet: u32,
}

impl ProbeClock {
    pub(crate) fn new() -> ProbeClock {
        ProbeClock {
            last_ns: coarse_now_ns(),
            misses: 0,
            since_look: PROBE_EVERY,
            pos: 0,
            // The first miss goes through `due_at`.
            quiet: u32::MAX,
        }
    }

    /// Called on a miss that found nothing to report (an empty ring, the peer's state word
    /// saying it is there): whether the caller may answer at once. Every
    /// [`QUIET_MISSES`]th may not, and goes through [`due_at`](Self::due_at), which so sees
    /// one such miss in that many: a poller reads the clock every `PROBE_EVERY *
    /// QUIET_MISSES` misses (some 10-25 us here), far inside [`PROBE_INTERVAL`].
    #[inline(always)]
    pub(crate) fn quiet_miss(&mut self) -> bool {
        self.quiet = self.quiet.wrapping_add(1);
        self.quiet % QUIET_MISSES != 0
    }

    /// Called on a miss, with the position of the endpoint (SPSC) or of its side (MPMC: the
    /// enqueue or dequeue position), which moves with each success: whether a probe is due
    /// now (and if so, the interval restarts). A position that moved since the last miss
    /// starts a new run of misses and counts as that many successes.
    #[inline]
    pub(crate) fn due_at(&mut self, pos: u64) -> bool {
        if pos != self.pos {
            let done = pos.wrapping_sub(self.pos).min(u64::from(PROBE_EVERY)) as u32;
            self.since_look = self.since_look.wrapping_add(done);
            self.pos = pos;
            self.misses = 0;
        }
        let run = self.misses;
        self.misses = run.wrapping_add(1);
        let look = if run == 0 {
            self.since_look >= PROBE_EVERY
        } else {
            run % PROBE_EVERY == 0
        };
        if !look {
            return false;
        }
        self.since_look = 0;
        self.interval_passed()
    }

    /// Whether the current run of misses is long enough to give the CPU away: at its
    /// [`STALLED_MISSES`]th miss, and then at every [`YIELD_EVERY`]th.
    #[inline]
    pub(crate) fn stalled(&self) -> bool {
        self.misses >= STALLED_MISSES && self.misses % YIELD_EVERY == 0
    }

    /// Whether [`PROBE_INTERVAL`] passed since the last probe (if so, it restarts). Out of
    /// line: a clock read is the rare part of a miss.
    #[cold]
    #[inline(never)]
    fn interval_passed(&mut self) -> bool {
        let now = coarse_now_ns();
        if now.saturating_sub(self.last_ns) >= PROBE_INTERVAL.as_nanos() as u64 {
            self.last_ns = now;
            return true;
        }
        false
    }

    /// Called by a blocking call: the next miss reads the clock (so a `try_` call after a
    /// blocking one that saw a peer die probes it at once).
    #[inline(always)]
    pub(crate) fn prime(&mut self) {
        self.misses = 0;
        self.since_look = PROBE_EVERY;
        self.quiet = u32::MAX;
    }
}

fn coarse_now_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Options for creating or opening a channel; see the setters on [`Builder`].
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub capacity: Option<u64>,
    pub create: CreateOptions,
    pub reclaim_stale: bool,
    pub type_tag: Option<u64>,
    pub open_timeout: Duration,
    pub allow_unsealed: bool,
    pub registry_len: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: None,
            create: CreateOptions {
                mode: 0o600,
                persist: false,
                populate: false,
                huge_pages: false,
            },
            reclaim_stale: false,
            type_tag: None,
            open_timeout: Duration::from_secs(1),
            allow_unsealed: false,
            registry_len: 64,
        }
    }
}

/// A channel type the [`Builder`] can make (`spsc::Channel<T>` or `mpmc::Channel<T>`).
pub(crate) trait Flavor: Sized {
    fn expected(options: &Options) -> Expected;
    fn geometry(options: &Options, capacity: u64) -> Result<Geometry, Error>;
    fn from_shared(shared: Arc<Shared>) -> Self;
    /// Writes the initial state of the slots, before the region is published READY.
    fn init(shared: &Arc<Shared>);
    /// The channel's region.
    fn shared(&self) -> &Arc<Shared>;
}

/// Options for creating or opening a channel. Get one from `Channel::builder()`.
#[derive(Debug, Clone)]
pub struct Builder<C> {
    options: Options,
    _channel: PhantomData<fn() -> C>,
}

// `Flavor` is sealed on purpose: only this crate's channel types can be built.
#[allow(private_bounds)]
impl<C: Flavor> Builder<C> {
    pub(crate) fn new() -> Self {
        Builder {
            options: Options::default(),
            _channel: PhantomData,
        }
    }

    /// Slots in the ring, a power of two. Required for `create`.
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.options.capacity = Some(capacity);
        self
    }

    /// File mode of a named region (default `0o600`: the creating user only). Set exactly,
    /// whatever the umask.
    pub fn mode(mut self, mode: u32) -> Self {
        self.options.create.mode = mode;
        self
    }

    /// Keep the name after the creator drops the channel (default: unlink it).
    pub fn persist(mut self, persist: bool) -> Self {
        self.options.create.persist = persist;
        self
    }

    /// If the name exists but no live process holds it (left by a crash), remove it and
    /// create anew. A name that a live endpoint or channel holds is never touched.
    pub fn reclaim_stale(mut self, reclaim: bool) -> Self {
        self.options.reclaim_stale = reclaim;
        self
    }

    /// Prefault the whole mapping at create or open (MAP_POPULATE), so the first pass over
    /// the ring takes no page faults.
    pub fn populate(mut self, populate: bool) -> Self {
        self.options.create.populate = populate;
        self
    }

    /// Back a memfd with huge pages (MFD_HUGETLB; needs huge pages reserved in
    /// /proc/sys/vm/nr_hugepages). For a file backing, put the file on a hugetlbfs mount.
    pub fn huge_pages(mut self, huge: bool) -> Self {
        self.options.create.huge_pages = huge;
        self
    }

    /// Override the type tag (default: a hash of `type_name::<T>()`), e.g. to let two builds
    /// that name the type differently share a channel. Size and alignment are still checked.
    pub fn type_tag(mut self, tag: u64) -> Self {
        self.options.type_tag = Some(tag);
        self
    }

    /// How long `open` waits for a creator that is still initialising (default 1 s).
    pub fn open_timeout(mut self, wait: Duration) -> Self {
        self.options.open_timeout = wait;
        self
    }

    /// Accept an fd in `from_fd` that lacks the memfd seals (trust every holder of the fd not
    /// to truncate it).
    pub fn allow_unsealed(mut self, allow: bool) -> Self {
        self.options.allow_unsealed = allow;
        self
    }

    /// MPMC only: how many endpoints (producers and consumers together) may be registered at
    /// once, fixed at create (default 64, at most 1024).
    pub fn registry_len(mut self, len: u32) -> Self {
        self.options.registry_len = len;
        self
    }

    /// Creates the channel's region and header.
    pub fn create(self, backing: Backing) -> Result<C, Error> {
        let capacity = self.options.capacity.ok_or_else(|| {
            Error::InvalidArgument(
                "create needs a capacity: call .capacity(n) on the builder".into(),
            )
        })?;
        let geometry = C::geometry(&self.options, capacity)?;
        Shared::create(&backing, geometry, &self.options, C::init).map(C::from_shared)
    }

    /// Opens an existing named channel, checking its header against `T`.
    pub fn open(self, backing: Backing) -> Result<C, Error> {
        let region = Region::open(&backing, HEADER_LEN as u64, self.options.open_timeout)?;
        Shared::open(
            region,
            C::expected(&self.options),
            self.options.open_timeout,
        )
        .map(C::from_shared)
    }

    /// What `open` and `from_fd` will check the region's header against.
    pub(crate) fn expected(&self) -> Expected {
        C::expected(&self.options)
    }

    /// Opens a channel from a descriptor received from elsewhere (a memfd), checking its
    /// seals, size and header.
    pub fn from_fd(self, fd: OwnedFd) -> Result<C, Error> {
        let region = Region::from_fd(
            fd,
            HEADER_LEN as u64,
            self.options.open_timeout,
            self.options.allow_unsealed,
        )?;
        Shared::open(
            region,
            C::expected(&self.options),
            self.options.open_timeout,
        )
        .map(C::from_shared)
    }
}

/// The methods every channel flavour has, the same for each (written once here).
macro_rules! channel_methods {
    () => {
        /// Creates a channel of `capacity` slots (a power of two) with default options.
        pub fn create(backing: Backing, capacity: u64) -> Result<Self, Error> {
            Self::builder().capacity(capacity).create(backing)
        }

        /// Opens an existing named channel (`Backing::shm` or `Backing::file`), checking
        /// that it is a channel of this kind and of `T`.
        pub fn open(backing: Backing) -> Result<Self, Error> {
            Self::builder().open(backing)
        }

        /// Opens a channel from a memfd received from elsewhere; refuses one without the
        /// seals against resizing (see [`Builder::allow_unsealed`]).
        pub fn from_fd(fd: OwnedFd) -> Result<Self, Error> {
            Self::builder().from_fd(fd)
        }

        /// Options for create, open and from_fd.
        pub fn builder() -> Builder<Self> {
            Builder::new()
        }

        /// Removes a named channel left behind by a crash. Refuses (with
        /// `Error::AlreadyExists { live: Some(true), .. }`) while any live process holds it.
        pub fn remove(backing: Backing) -> Result<(), Error> {
            crate::region::remove_stale(&backing)
        }

        /// Slots in the ring.
        pub fn capacity(&self) -> usize {
            self.shared.geometry().capacity as usize
        }

        /// The region's descriptor: pass it to a child (fork) or over a Unix socket (see
        /// `handoff`), and open it there with `from_fd` (after `try_clone_to_owned`).
        pub fn fd(&self) -> BorrowedFd<'_> {
            self.shared.region().fd()
        }
    };
}
pub(crate) use channel_methods;

/// The `Flavor` methods that only move the shared region in and out of a channel handle.
macro_rules! flavor_plumbing {
    () => {
        fn shared(&self) -> &Arc<Shared> {
            &self.shared
        }

        fn from_shared(shared: Arc<Shared>) -> Self {
            Channel {
                shared,
                _type: PhantomData,
            }
        }
    };
}
pub(crate) use flavor_plumbing;

/// A mapped, validated channel region. Shared by the channel handle and its endpoints.
pub struct Shared {
    region: Region,
    geometry: Geometry,
}

impl Shared {
    fn create(
        backing: &Backing,
        geometry: Geometry,
        options: &Options,
        init: fn(&Arc<Shared>),
    ) -> Result<Arc<Shared>, Error> {
        let region = match Region::create(backing, geometry.total_len, &options.create) {
            Err(Error::AlreadyExists {
                live: Some(false), ..
            }) if options.reclaim_stale => {
                crate::region::remove_stale(backing)?;
                Region::create(backing, geometry.total_len, &options.create)?
            }
            other => other?,
        };
        let header = region.base().cast::<Header>();
        // SAFETY: the region is at least total_len >= HEADER_LEN bytes, page-aligned, and
        // nobody else can see it as READY yet; the fresh file is zero-filled, so every atomic
        // is 0 and every role state NONE.
        unsafe { addr_of_mut!((*header.as_ptr()).config).write_volatile(geometry.config()) };
        region.seal()?;
        let shared = Arc::new(Shared { region, geometry });
        init(&shared);
        // Release: pairs with the Acquire load in `wait_ready`: an opener that sees READY sees
        // the whole header, the initialised slots and the seals.
        shared.header().init.store(READY, Release);
        Ok(shared)
    }

    fn open(region: Region, expected: Expected, wait: Duration) -> Result<Arc<Shared>, Error> {
        let config = wait_ready(&region, wait)?;
        let geometry = Geometry::accept(expected, &config, region.len())?;
        Ok(Arc::new(Shared { region, geometry }))
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned, lives as long as
        // `self`, and the header's shared-mutable fields are atomics. The plain config is
        // read once at open (volatile) and never through this reference.
        unsafe { self.region.base().cast::<Header>().as_ref() }
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// The ring's memory: the header, the registry after it, and `capacity` slots of `S` at
    /// the data offset. `S` must be the slot type the geometry's stride was computed for.
    pub(crate) fn ring_mem<S>(self: &Arc<Self>) -> RingMem<S> {
        debug_assert_eq!(self.geometry.stride as usize, core::mem::size_of::<S>());
        let base = self.region.base().as_ptr();
        // SAFETY: `accept` (or create) checked HEADER_LEN + registry <= data_offset and
        // data_offset + capacity * stride <= mapped length; the data offset is aligned to
        // max(128, align_of::<T>()) and the registry to 128, in a page-aligned mapping.
        let (registry, slots) = unsafe {
            (
                base.add(HEADER_LEN),
                base.add(self.geometry.data_offset as usize),
            )
        };
        let registry = NonNull::new(registry.cast::<Entry>()).expect("inside a mapping");
        let slots = NonNull::new(slots.cast::<S>()).expect("inside a mapping");
        // SAFETY: header, registry and slots are in the mapping, which the Arc<Shared> owner
        // keeps mapped; capacity and registry length are the validated local copies.
        unsafe {
            RingMem::from_raw(
                self.region.base().cast(),
                registry,
                self.geometry.registry_len as usize,
                slots,
                self.geometry.capacity,
                self.clone(),
            )
        }
    }

    /// Claims the SPSC role on `byte`: a fresh open file description with an exclusive lock
    /// on the byte, then the role's state word set ACTIVE.
    pub(crate) fn claim(
        self: &Arc<Self>,
        byte: u64,
        role: &'static str,
        state: &AtomicU32,
    ) -> Result<RoleLock, Error> {
        let lock = self
            .lock_first(byte..byte + 1)?
            .ok_or(Error::RoleTaken { role })?;
        // Release: pairs with the Acquire loads in `peer_state`; the lock is already held, so
        // ACTIVE never describes a dead claimant.
        state.store(role_state::ACTIVE, Release);
        Ok(lock.0)
    }

    /// Claims a free MPMC registry entry: its index, with the lock that holds it.
    pub(crate) fn claim_entry(self: &Arc<Self>) -> Result<(RoleLock, usize), Error> {
        let len = u64::from(self.geometry.registry_len);
        let (lock, byte) = self
            .lock_first(lock::REGISTRY..lock::REGISTRY + len)?
            .ok_or(Error::RegistryFull {
                len: self.geometry.registry_len,
            })?;
        Ok((lock, (byte - lock::REGISTRY) as usize))
    }

    /// Locks the first free byte of `bytes` on a fresh open file description of its own.
    fn lock_first(
        self: &Arc<Self>,
        bytes: std::ops::Range<u64>,
    ) -> Result<Option<(RoleLock, u64)>, Error> {
        crate::wait::prepare();
        let fd = self.region.reopen()?;
        for byte in bytes {
            match lock::try_lock(fd.as_fd(), byte, 1, true) {
                Ok(true) => {
                    return Ok(Some((
                        RoleLock {
                            shared: self.clone(),
                            fd,
                        },
                        byte,
                    )))
                }
                Ok(false) => {}
                Err(e) => {
                    return Err(crate::region::os_error(
                        "fcntl(F_OFD_SETLK)",
                        &self.region.describe(),
                        e,
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// Reads the header once the creator has published READY, waiting up to `wait`.
fn wait_ready(region: &Region, wait: Duration) -> Result<Config, Error> {
    let header = region.base().cast::<Header>();
    let deadline = deadline(wait);
    loop {
        // SAFETY: the mapping holds at least HEADER_LEN bytes (checked by Region::attach);
        // a volatile copy forms no reference to bytes a peer may be writing.
        let config = unsafe { addr_of!((*header.as_ptr()).config).read_volatile() };
        if config.magic != MAGIC && config.magic != [0; 8] {
            return Err(Error::Incompatible(Mismatch {
                field: "magic",
                expected: format!("{MAGIC:?}"),
                found: format!("{:?}", config.magic),
            }));
        }
        if config.magic == MAGIC && config.version != LAYOUT_VERSION {
            // Another layout may publish READY elsewhere: do not wait for it.
            return Err(Error::Incompatible(Mismatch {
                field: "layout version",
                expected: LAYOUT_VERSION.to_string(),
                found: config.version.to_string(),
            }));
        }
        // SAFETY: as above; `init` is an atomic, so a shared reference to it is sound.
        let init = unsafe { &*addr_of!((*header.as_ptr()).init) };
        // Acquire: pairs with the Release store of READY in `Shared::create`.
        if init.load(Acquire) == READY {
            // Re-read after the Acquire: the first read may predate it.
            // SAFETY: as above.
            return Ok(unsafe { addr_of!((*header.as_ptr()).config).read_volatile() });
        }
        if expired(deadline) {
            return Err(Error::NotReady {
                what: region.describe(),
                waited: wait,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A claimed role's liveness lock, on an open file description of its own; the kernel
/// releases it when this drops or the process dies. Endpoints mark their role closed in
/// their own `Drop`, which runs before this field drops: a clean close is never taken for a
/// death.
pub(crate) struct RoleLock {
    shared: Arc<Shared>,
    fd: OwnedFd,
}

impl RoleLock {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether another process's endpoint holds the lock on `byte` (a system call). Our own
    /// locks never count: F_OFD_GETLK reports only other descriptions' locks.
    pub(crate) fn held_elsewhere(&self, byte: u64) -> bool {
        // Cannot probe (should not happen on a descriptor we hold): assume alive rather than
        // cut a healthy channel.
        lock::is_locked(self.fd.as_fd(), byte, 1).unwrap_or(true)
    }
}

/// What became of a peer role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No endpoint has claimed the role yet.
    NotConnected,
    /// A live endpoint holds the role.
    Alive,
    /// The last endpoint dropped it cleanly.
    Closed,
    /// The last endpoint's process died without closing it (killed, crashed).
    Died,
}

impl PeerState {
    /// Closed or died: nothing more will come from (or go to) that role until a new endpoint
    /// claims it.
    pub fn is_gone(self) -> bool {
        matches!(self, PeerState::Closed | PeerState::Died)
    }
}

/// Reads an SPSC role's state, probing its lock to tell a live endpoint from a dead one.
pub(crate) fn peer_state(lock: &RoleLock, byte: u64, state: &AtomicU32) -> PeerState {
    // Acquire: pairs with the Release stores in `claim` and in `ring::close`.
    match state.load(Acquire) {
        role_state::NONE => PeerState::NotConnected,
        role_state::ACTIVE if lock.held_elsewhere(byte) => PeerState::Alive,
        // No lock: died, unless it closed between our two reads.
        role_state::ACTIVE => match state.load(Acquire) {
            role_state::CLOSED => PeerState::Closed,
            _ => PeerState::Died,
        },
        // CLOSED, or a value no correct peer writes: either way nobody is there.
        _ => PeerState::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe clock whose every look at the clock finds a probe overdue (`last_ns` = 0),
    /// fresh: its first miss looks.
    fn overdue_clock(pos: u64) -> ProbeClock {
        ProbeClock {
            last_ns: 0,
            misses: 0,
            since_look: PROBE_EVERY,
            pos,
            quiet: u32::MAX,
        }
    }

    #[test]
    fn probe_clock_sends_the_first_quiet_miss_and_every_32nd_to_the_bookkeeping() {
        let mut clock = overdue_clock(0);
        let mut slow = Vec::new();
        for miss in 0..=96 {
            if !clock.quiet_miss() {
                slow.push(miss);
            }
        }
        assert_eq!(slow, [0, 32, 64, 96]);
        // A blocking call primes it: its next miss goes through `due_at` again.
        clock.quiet_miss();
        clock.prime();
        assert!(!clock.quiet_miss());
        assert!(clock.quiet_miss());
    }

    /// Misses 1..PROBE_EVERY of a run skip the clock, and the sixteenth looks (finding the
    /// probe overdue again).
    fn rest_of_run(clock: &mut ProbeClock, mut miss: impl FnMut(&mut ProbeClock) -> bool) {
        clock.last_ns = 0;
        for n in 1..PROBE_EVERY {
            assert!(!miss(clock), "miss {n} of the run skips the clock");
        }
        assert!(miss(clock), "the run's sixteenth miss looks");
    }

    #[test]
    fn probe_clock_looks_at_a_runs_first_miss_only_after_sixteen_successes() {
        let mut clock = overdue_clock(0);
        assert!(clock.due_at(0), "a fresh clock's first miss looks");
        rest_of_run(&mut clock, |c| c.due_at(0));
        // A consumer chasing its producer: a success between misses. The clock is read once
        // per sixteen successes, not once per run.
        clock.last_ns = 0;
        for pos in 1..u64::from(PROBE_EVERY) {
            assert!(!clock.due_at(pos), "too few successes since the last look");
        }
        assert!(
            clock.due_at(u64::from(PROBE_EVERY)),
            "the first miss after the sixteenth success looks"
        );
        // Looking, with the interval not yet over: no probe.
        clock.prime();
        assert!(
            !clock.due_at(u64::from(PROBE_EVERY)),
            "the clock says the last probe was just now"
        );
    }

    #[test]
    fn probe_clock_after_a_blocking_call_looks_at_the_first_miss() {
        let mut clock = overdue_clock(0);
        assert!(clock.due_at(0));
        clock.last_ns = 0;
        assert!(!clock.due_at(1), "one success is not enough");
        // A blocking call (which may have seen a peer die) primes it.
        clock.prime();
        assert!(
            clock.due_at(1),
            "the first miss after a blocking call looks"
        );
    }

    #[test]
    fn probe_clock_calls_a_run_stalled_at_its_8th_miss_and_every_4th_after() {
        let mut clock = overdue_clock(5);
        let mut stalled = Vec::new();
        for miss in 1..=20 {
            clock.due_at(5);
            if clock.stalled() {
                stalled.push(miss);
            }
        }
        assert_eq!(stalled, [8, 12, 16, 20]);
        // Progress ends the run.
        clock.due_at(6);
        assert!(!clock.stalled());
    }

    #[test]
    fn probe_clock_counts_progress_by_position() {
        let mut clock = overdue_clock(7);
        assert!(clock.due_at(7), "a fresh clock's first miss looks");
        rest_of_run(&mut clock, |c| c.due_at(7));
        // Three items taken since: a new run, but too little progress to look at once.
        clock.last_ns = 0;
        assert!(!clock.due_at(10));
        // Sixteen more: the next run's first miss looks.
        assert!(clock.due_at(26));
        rest_of_run(&mut clock, |c| c.due_at(26));
    }
}
