//! The checks behind the fuzz targets, one function per target. Each takes arbitrary bytes
//! and panics if shmlane misbehaves on them: a panic inside the library, a result that
//! differs from the model, or (caught by the fuzzer's timeout) a hang. The fuzz targets in
//! `fuzz_targets/` call these; `tests/fuzz_corpus.rs` in the crate replays the checked-in
//! corpus through them on the stable toolchain.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use shmlane::{
    handoff, mpmc, spsc, Backing, ChunkError, Error, PopError, PushError, TryPopError, TryPushError,
};

/// Bounded waits in the checks: long enough to be real, short enough for many runs.
const WAIT: Duration = Duration::from_millis(1);

/// Reads the input a little at a time; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.u8()))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A fresh path under /dev/shm, unique to this process and call (removed by [`Scratch`]).
fn scratch_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    PathBuf::from(format!(
        "/dev/shm/shmlane-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ))
}

/// Removes the file at `path` when dropped, however the check ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// open_region

/// Arbitrary bytes (and an arbitrary length) as a region file, opened as SPSC and MPMC of a
/// few types: an error, or a channel whose every call returns.
pub fn open_region(data: &[u8]) {
    let mut input = Input(data);
    let how = input.u8();
    let len = input.u16() as usize;
    let mut bytes = input.0.to_vec();
    match how >> 4 & 3 {
        0 => {}
        1 => bytes.resize(len, 0),
        2 => bytes.resize(bytes.len() + len * 64, 0),
        _ => bytes.truncate(len),
    }
    let file = Scratch(scratch_path());
    std::fs::write(&file.0, &bytes).expect("write the region file");
    let (path, now) = (file.0.as_path(), Duration::ZERO);
    match how & 7 {
        0 => exercise_spsc::<u64>(path, now),
        1 => exercise_spsc::<u8>(path, now),
        2 => exercise_spsc::<[u32; 5]>(path, now),
        3 => exercise_mpmc::<u64>(path, now),
        4 => exercise_mpmc::<u8>(path, now),
        5 => exercise_mpmc::<[u16; 3]>(path, now),
        // Opening with a wait: a region that never becomes ready must time out, not hang.
        6 => exercise_spsc::<u64>(path, WAIT),
        _ => exercise_mpmc::<u64>(path, WAIT),
    }
}

/// Opens the region at `path` as SPSC of `T`, waiting up to `wait` for it to be ready; if
/// it opens, every call on both ends must return.
fn exercise_spsc<T: bytemuck::Pod>(path: &Path, wait: Duration) {
    let opened = spsc::Channel::<T>::builder()
        .open_timeout(wait)
        .open(Backing::file(path));
    let Ok(chan) = opened else { return };
    let value = T::zeroed();
    if let Ok(mut tx) = chan.producer() {
        let _ = tx.try_push(value);
        let _ = tx.push_timeout(value, WAIT);
        let _ = tx.push_slice(&[value; 3]);
        if let Ok(chunk) = tx.write_chunk_upto(4) {
            assert!(chunk.len() <= chan.capacity());
            chunk.fill_from_iter(std::iter::repeat(value));
        }
        let _ = tx.slots();
    }
    if let Ok(mut rx) = chan.consumer() {
        let _ = rx.try_pop();
        let _ = rx.pop_timeout(WAIT);
        let _ = rx.pop_slice(&mut [value; 3]);
        if let Ok(chunk) = rx.read_chunk_upto(4) {
            assert!(chunk.len() <= chan.capacity());
            let n = chunk.as_slices().0.len();
            chunk.release(n);
        }
        let _ = rx.items();
    }
}

/// As [`exercise_spsc`], as MPMC.
fn exercise_mpmc<T: bytemuck::Pod>(path: &Path, wait: Duration) {
    let opened = mpmc::Channel::<T>::builder()
        .open_timeout(wait)
        .open(Backing::file(path));
    let Ok(chan) = opened else { return };
    let value = T::zeroed();
    if let Ok(mut tx) = chan.producer() {
        let _ = tx.try_push(value);
        let _ = tx.push_timeout(value, WAIT);
        let _ = tx.push_slice(&[value; 3]);
    }
    if let Ok(mut rx) = chan.consumer() {
        let _ = rx.try_pop();
        let _ = rx.pop_timeout(WAIT);
        let _ = rx.pop_slice(&mut [value; 3]);
    }
}

// ---------------------------------------------------------------------------------------
// spsc_ops

/// A model of an SPSC ring: what every call must return.
struct SpscModel {
    items: VecDeque<u32>,
    capacity: usize,
    next: u32,
}

impl SpscModel {
    fn free(&self) -> usize {
        self.capacity - self.items.len()
    }

    /// Values for the next `n` pushes.
    fn values(&self, n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| self.next.wrapping_add(i)).collect()
    }

    fn pushed(&mut self, n: usize) {
        for _ in 0..n {
            self.items.push_back(self.next);
            self.next = self.next.wrapping_add(1);
        }
    }

    fn popped(&mut self, got: &[u32]) {
        for &v in got {
            assert_eq!(
                Some(v),
                self.items.pop_front(),
                "an item out of order or invented"
            );
        }
    }
}

/// Arbitrary sequences of SPSC calls on one process's channel, each result checked against
/// a `VecDeque` model.
pub fn spsc_ops(data: &[u8]) {
    let mut input = Input(data);
    let capacity = 1usize << (input.u8() % 5);
    let chan = spsc::Channel::<u32>::builder()
        .capacity(capacity as u64)
        .create(Backing::memfd("fuzz-spsc"))
        .expect("create a memfd channel");
    let mut tx = Some(chan.producer().expect("the first producer"));
    let mut rx = Some(chan.consumer().expect("the first consumer"));
    let mut model = SpscModel {
        items: VecDeque::new(),
        capacity,
        next: 0,
    };
    while !input.is_empty() {
        let op = input.u8();
        let k = (op >> 4) as usize;
        match (op % 12, tx.as_mut(), rx.as_mut()) {
            (0, Some(tx), _) => {
                let v = model.next;
                match tx.try_push(v) {
                    Ok(()) => {
                        assert!(rx_alive(&rx) && model.free() > 0);
                        model.pushed(1);
                    }
                    Err(TryPushError::Full(x)) => {
                        assert!(x == v && rx_alive(&rx) && model.free() == 0)
                    }
                    Err(TryPushError::Disconnected(x)) => assert!(x == v && !rx_alive(&rx)),
                    Err(e) => panic!("try_push: {e:?}"),
                }
            }
            (1, _, Some(rx)) => match rx.try_pop() {
                Ok(v) => model.popped(&[v]),
                Err(TryPopError::Empty) => assert!(tx.is_some() && model.items.is_empty()),
                Err(TryPopError::Disconnected) => assert!(tx.is_none() && model.items.is_empty()),
                Err(e) => panic!("try_pop: {e:?}"),
            },
            (2, Some(tx), _) => {
                let values = model.values(k);
                match tx.push_slice(&values) {
                    Ok(n) => {
                        assert!(rx_alive(&rx));
                        assert_eq!(n, k.min(model.free()));
                        model.pushed(n);
                    }
                    Err(ChunkError::Disconnected) => assert!(!rx_alive(&rx)),
                    Err(e) => panic!("push_slice: {e:?}"),
                }
            }
            (3, _, Some(rx)) => {
                let mut out = vec![0; k];
                match rx.pop_slice(&mut out) {
                    Ok(n) => {
                        assert_eq!(n, k.min(model.items.len()));
                        assert!(n > 0 || k == 0 || tx.is_some());
                        model.popped(&out[..n]);
                    }
                    Err(ChunkError::Disconnected) => {
                        assert!(tx.is_none() && model.items.is_empty() && k > 0)
                    }
                    Err(e) => panic!("pop_slice: {e:?}"),
                }
            }
            (4 | 5, Some(tx), _) => {
                let exact = op % 12 == 4;
                let consumer = rx_alive(&rx);
                let (free, values, fill) = (model.free(), model.values(k), input.u8() as usize);
                let chunk = if exact {
                    tx.write_chunk(k)
                } else {
                    tx.write_chunk_upto(k)
                };
                match chunk {
                    Ok(chunk) => {
                        assert!(consumer);
                        let expected = if exact { k } else { k.min(free) };
                        assert_eq!(chunk.len(), expected);
                        assert!(exact || free > 0 && k > 0);
                        let n = chunk.fill_from_iter(values.into_iter().take(fill));
                        assert_eq!(n, fill.min(expected));
                        model.pushed(n);
                    }
                    Err(ChunkError::TooFew(n)) => {
                        assert!(consumer);
                        if exact || k > 0 {
                            assert_eq!(n, free);
                            assert!(if exact { free < k } else { free == 0 });
                        } else {
                            // Nothing asked for: the count may be the cached one.
                            assert!(n <= free);
                        }
                    }
                    Err(ChunkError::Disconnected) => assert!(!consumer),
                    Err(e) => panic!("write_chunk: {e:?}"),
                }
            }
            (6 | 7, _, Some(rx)) => {
                let exact = op % 12 == 6;
                let producer = tx.is_some();
                let (ready, release) = (model.items.len(), input.u8() as usize);
                let chunk = if exact {
                    rx.read_chunk(k)
                } else {
                    rx.read_chunk_upto(k)
                };
                match chunk {
                    Ok(chunk) => {
                        let expected = if exact { k } else { k.min(ready) };
                        assert_eq!(chunk.len(), expected);
                        let (a, b) = chunk.as_slices();
                        let seen: Vec<u32> = a.iter().chain(b).copied().collect();
                        assert!(seen.iter().eq(model.items.iter().take(expected)));
                        let n = release.min(expected);
                        chunk.release(release);
                        model.popped(&seen[..n]);
                    }
                    Err(ChunkError::TooFew(n)) => {
                        assert!(producer || ready > 0);
                        if exact || k > 0 {
                            assert_eq!(n, ready);
                            assert!(if exact { ready < k } else { ready == 0 });
                        } else {
                            // Nothing asked for: the count may be the cached one.
                            assert!(n <= ready);
                        }
                    }
                    Err(ChunkError::Disconnected) => assert!(!producer && ready == 0),
                    Err(e) => panic!("read_chunk: {e:?}"),
                }
            }
            (8, Some(tx), _) => {
                let v = model.next;
                match tx.push_timeout(v, Duration::ZERO) {
                    Ok(()) => {
                        assert!(rx_alive(&rx) && model.free() > 0);
                        model.pushed(1);
                    }
                    Err(PushError::Timeout(x)) => {
                        assert!(x == v && rx_alive(&rx) && model.free() == 0)
                    }
                    Err(PushError::Disconnected(x)) => assert!(x == v && !rx_alive(&rx)),
                    Err(e) => panic!("push_timeout: {e:?}"),
                }
            }
            (9, _, Some(rx)) => match rx.pop_timeout(Duration::ZERO) {
                Ok(v) => model.popped(&[v]),
                Err(PopError::Timeout) => assert!(tx.is_some() && model.items.is_empty()),
                Err(PopError::Disconnected) => assert!(tx.is_none() && model.items.is_empty()),
                Err(e) => panic!("pop_timeout: {e:?}"),
            },
            (10, _, _) => tx = None,
            (11, _, _) => rx = None,
            _ => {}
        }
    }
}

fn rx_alive(rx: &Option<spsc::Consumer<u32>>) -> bool {
    rx.is_some()
}

// ---------------------------------------------------------------------------------------
// mpmc_ops

/// Arbitrary sequences of MPMC calls by up to four producers and four consumers in one
/// process, joining and leaving, each result checked against a `VecDeque` model (one
/// thread: the order is global).
pub fn mpmc_ops(data: &[u8]) {
    let mut input = Input(data);
    let capacity = 1usize << (input.u8() % 5);
    let built = mpmc::Channel::<u32>::builder()
        .capacity(capacity as u64)
        .create(Backing::memfd("fuzz-mpmc"));
    if capacity < 2 {
        // One slot cannot work for Vyukov's sequences: refused at create.
        assert!(matches!(built, Err(Error::InvalidArgument(_))));
        return;
    }
    drop(built);
    let chan = mpmc::Channel::<u32>::builder()
        .capacity(capacity as u64)
        .registry_len(REGISTRY as u32)
        .create(Backing::memfd("fuzz-mpmc"))
        .expect("create a memfd channel");
    let mut producers: Vec<Option<mpmc::Producer<u32>>> = (0..4).map(|_| None).collect();
    let mut consumers: Vec<Option<mpmc::Consumer<u32>>> = (0..4).map(|_| None).collect();
    let (mut ever_produced, mut ever_consumed) = (false, false);
    let mut model = SpscModel {
        items: VecDeque::new(),
        capacity,
        next: 0,
    };
    while !input.is_empty() {
        let op = input.u8();
        let (i, k) = ((op >> 3 & 3) as usize, (op >> 5) as usize);
        let p_live = producers.iter().flatten().count();
        let c_live = consumers.iter().flatten().count();
        // Consumers that never came are waited for; gone means came and left.
        let no_consumers = ever_consumed && c_live == 0;
        let no_producers = ever_produced && p_live == 0;
        match op % 8 {
            0 | 1 => {
                let Some(tx) = producers[i].as_mut() else {
                    continue;
                };
                let v = model.next;
                let result = if op % 8 == 0 {
                    tx.try_push(v)
                } else {
                    tx.push_timeout(v, Duration::ZERO).map_err(|e| match e {
                        PushError::Timeout(x) => TryPushError::Full(x),
                        PushError::Disconnected(x) => TryPushError::Disconnected(x),
                        e => panic!("push_timeout: {e:?}"),
                    })
                };
                match result {
                    Ok(()) => {
                        assert!(!no_consumers && model.free() > 0);
                        model.pushed(1);
                    }
                    Err(TryPushError::Full(x)) => {
                        assert!(x == v && !no_consumers && model.free() == 0)
                    }
                    Err(TryPushError::Disconnected(x)) => assert!(x == v && no_consumers),
                    Err(e) => panic!("push: {e:?}"),
                }
            }
            2 | 3 => {
                let Some(rx) = consumers[i].as_mut() else {
                    continue;
                };
                let result = if op % 8 == 2 {
                    rx.try_pop().map_err(PopError::from)
                } else {
                    rx.pop_timeout(Duration::ZERO)
                };
                match result {
                    Ok(v) => model.popped(&[v]),
                    // An empty try_pop maps to Timeout as well.
                    Err(PopError::Timeout) => assert!(!no_producers && model.items.is_empty()),
                    Err(PopError::Disconnected) => assert!(no_producers && model.items.is_empty()),
                    Err(e) => panic!("pop: {e:?}"),
                }
            }
            4 => {
                let Some(tx) = producers[i].as_mut() else {
                    continue;
                };
                let values = model.values(k);
                match tx.push_slice(&values) {
                    Ok(n) => {
                        assert!(!no_consumers || k == 0);
                        assert_eq!(n, k.min(model.free()));
                        model.pushed(n);
                    }
                    Err(ChunkError::Disconnected) => assert!(no_consumers && k > 0),
                    Err(e) => panic!("push_slice: {e:?}"),
                }
            }
            5 => {
                let Some(rx) = consumers[i].as_mut() else {
                    continue;
                };
                let mut out = vec![0; k];
                match rx.pop_slice(&mut out) {
                    Ok(n) => {
                        assert_eq!(n, k.min(model.items.len()));
                        assert!(n > 0 || k == 0 || !no_producers);
                        model.popped(&out[..n]);
                    }
                    Err(ChunkError::Disconnected) => {
                        assert!(no_producers && model.items.is_empty() && k > 0)
                    }
                    Err(e) => panic!("pop_slice: {e:?}"),
                }
            }
            // Join or leave: a slot with an endpoint drops it, an empty one registers one.
            6 => {
                if producers[i].take().is_none() {
                    producers[i] = registered(chan.producer(), p_live + c_live);
                    ever_produced |= producers[i].is_some();
                }
            }
            _ => {
                if consumers[i].take().is_none() {
                    consumers[i] = registered(chan.consumer(), p_live + c_live);
                    ever_consumed |= consumers[i].is_some();
                }
            }
        }
    }
}

/// Registry entries of the `mpmc_ops` channel.
const REGISTRY: usize = 6;

/// A new endpoint, given `live` registered ones: refused exactly when the registry is full.
fn registered<E>(endpoint: Result<E, Error>, live: usize) -> Option<E> {
    match endpoint {
        Ok(e) => {
            assert!(live < REGISTRY);
            Some(e)
        }
        Err(Error::RegistryFull { .. }) => {
            assert_eq!(live, REGISTRY);
            None
        }
        Err(e) => panic!("register: {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// hostile_peer

/// Where a hostile peer writes, and how wide: the header's counters, state and futex words,
/// the registry, and (by index) slot sequences or values.
fn hostile_target(chan_is_mpmc: bool, selector: u8, data_offset: u64, stride: u64) -> (u64, bool) {
    const FIELDS: [(u64, bool); 12] = [
        (64, false),  // init
        (68, false),  // producer state / count
        (72, false),  // consumer state / count
        (128, true),  // producer position
        (192, false), // producer event
        (196, false), // producer waiters
        (256, true),  // consumer position
        (320, false), // consumer event
        (324, false), // consumer waiters
        (384, false), // registry entry 0 state
        (392, true),  // registry entry 0 claim
        (512, false), // registry entry 1 state
    ];
    let field = selector as usize % 16;
    if field < FIELDS.len() && (chan_is_mpmc || FIELDS[field].0 < 384) {
        return FIELDS[field];
    }
    // A slot: its first word (the sequence in MPMC, the value in SPSC).
    (data_offset + (selector as u64 >> 4) * stride, true)
}

/// Normal calls on both ends interleaved with arbitrary writes to the shared counters and
/// sequence numbers: every call returns a value or an error.
pub fn hostile_peer(data: &[u8]) {
    let mut input = Input(data);
    let is_mpmc = input.u8() & 1 == 1;
    let file = Scratch(scratch_path());
    let backing = Backing::file(&file.0);
    let mut spsc_ends = None;
    let mut mpmc_ends = None;
    let (stride, capacity) = (if is_mpmc { 16 } else { 8 }, 8u64);
    if is_mpmc {
        let chan = mpmc::Channel::<u64>::builder()
            .capacity(capacity)
            .registry_len(2)
            .create(backing)
            .expect("create the channel");
        let tx = chan.producer().expect("producer");
        let rx = chan.consumer().expect("consumer");
        mpmc_ends = Some((chan, tx, rx));
    } else {
        let chan = spsc::Channel::<u64>::builder()
            .capacity(capacity)
            .create(backing)
            .expect("create the channel");
        let tx = chan.producer().expect("producer");
        let rx = chan.consumer().expect("consumer");
        spsc_ends = Some((chan, tx, rx));
    }
    // The peer's own view of the same file.
    let raw_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file.0)
        .expect("open the region file");
    let map = memmap2::MmapRaw::map_raw(&raw_file).expect("map the region file");
    let len = map.len() as u64;
    // SAFETY: offset 40 (data_offset) is inside the header, aligned, and read as an atomic.
    let data_offset = unsafe { &*(map.as_mut_ptr().add(40) as *const AtomicU64) }.load(Relaxed);
    let mut next = 0u64;
    while !input.is_empty() {
        let op = input.u8();
        if op & 0x80 != 0 {
            let (offset, wide) = hostile_target(is_mpmc, input.u8(), data_offset, stride);
            let value = input.u64();
            if offset + 8 > len {
                continue;
            }
            // SAFETY: offset + 8 <= the mapping's length; the fields are aligned to their
            // width (the header layout, slots of 8-byte-aligned words); atomics, as the
            // library uses on this memory.
            unsafe {
                let at = map.as_mut_ptr().add(offset as usize);
                if wide {
                    (*(at as *const AtomicU64)).store(value, Relaxed);
                } else {
                    (*(at as *const AtomicU32)).store(value as u32, Relaxed);
                }
            }
            continue;
        }
        next += 1;
        let k = (op >> 3 & 7) as usize;
        if let Some((chan, tx, rx)) = spsc_ends.as_mut() {
            match op % 8 {
                0 => drop(tx.try_push(next)),
                1 => drop(rx.try_pop()),
                2 => drop(tx.push_timeout(next, WAIT)),
                3 => drop(rx.pop_timeout(WAIT)),
                4 => drop(tx.push_slice(&[next; 7][..k])),
                5 => drop(rx.pop_slice(&mut [0; 7][..k])),
                6 => {
                    if let Ok(chunk) = tx.write_chunk_upto(k) {
                        assert!(chunk.len() <= chan.capacity());
                        chunk.fill_from_iter(std::iter::repeat(next));
                    }
                }
                _ => {
                    if let Ok(chunk) = rx.read_chunk_upto(k) {
                        let (a, b) = chunk.as_slices();
                        assert!(a.len() + b.len() <= chan.capacity());
                        chunk.release(k);
                    }
                }
            }
        } else if let Some((_, tx, rx)) = mpmc_ends.as_mut() {
            match op % 6 {
                0 => drop(tx.try_push(next)),
                1 => drop(rx.try_pop()),
                2 => drop(tx.push_timeout(next, WAIT)),
                3 => drop(rx.pop_timeout(WAIT)),
                4 => drop(tx.push_slice(&[next; 7][..k])),
                _ => drop(rx.pop_slice(&mut [0; 7][..k])),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// handshake

/// A channel whose fd a fuzzed server may attach: a valid, sealed memfd SPSC of u64.
fn offered_fd() -> OwnedFd {
    static CHAN: OnceLock<spsc::Channel<u64>> = OnceLock::new();
    CHAN.get_or_init(|| {
        spsc::Channel::create(Backing::memfd("fuzz-offer"), 8).expect("create the offered channel")
    })
    .fd()
    .try_clone_to_owned()
    .expect("dup the offered fd")
}

/// Sends `bytes` on `sock`, with `fd` attached when given.
fn send_with_fd(sock: &UnixStream, bytes: &[u8], fd: Option<&OwnedFd>) {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: the control buffer holds one cmsg with room for one int (CMSG_SPACE).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::c_int, fd.as_raw_fd());
        }
    }
    // SAFETY: a valid socket and a message built above. A failure (peer gone) is fine.
    unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
}

/// Arbitrary bytes (in one or two pieces, with or without an fd) from a "server" to the
/// client's handshake: an error, or a channel that checks out.
pub fn handshake(data: &[u8]) {
    let mut input = Input(data);
    let how = input.u8();
    let split = input.u16() as usize;
    let bytes = input.0;
    let (server, client) = UnixStream::pair().expect("socketpair");
    let fd = (how & 1 == 1).then(offered_fd);
    let (first, second) = bytes.split_at(split.min(bytes.len()));
    send_with_fd(&server, first, fd.as_ref());
    if how & 2 == 2 {
        send_with_fd(&server, second, None);
    }
    drop(server);
    let result = if how & 4 == 0 {
        handoff::receive_from::<spsc::Channel<u64>>(client, WAIT).map(|c| c.capacity())
    } else {
        handoff::receive_from::<mpmc::Channel<u64>>(client, WAIT).map(|c| c.capacity())
    };
    if let Ok(capacity) = result {
        // Only the real offered channel can pass every check.
        assert!(
            fd.is_some() && how & 4 == 0 && capacity == 8,
            "accepted {capacity}"
        );
    }
}
