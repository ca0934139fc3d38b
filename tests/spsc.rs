//! SPSC channels across real processes, over every backing, and against bad input.
#![cfg(not(shmlane_loom))]

mod common;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use common::{
    expect_exit, fork, in_memory_cgroup, in_private_tmpfs, is_root, no_space, poke_u64, unique,
    ScratchDir, SKIP,
};
use shmlane::{
    spsc, Backing, ChunkError, Error, PeerState, PopError, PushError, TryPopError, TryPushError,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Item {
    seq: u64,
    payload: u64,
}

impl Item {
    fn new(seq: u64) -> Item {
        Item {
            seq,
            payload: seq.wrapping_mul(31) ^ 0xA5A5,
        }
    }
}

const MILLION: u64 = 1_000_000;

/// The child pushes `MILLION` items, mixing single pushes (express ones if `express`) and
/// chunks; the parent pops them all, checks each, then sees the clean close.
fn million_items(
    parent: spsc::Channel<Item>,
    express: bool,
    open_in_child: impl FnOnce() -> spsc::Channel<Item>,
) {
    let mut child = fork(move || {
        let chan = open_in_child();
        let mut tx = chan.producer().unwrap();
        tx.set_express(express);
        let mut seq = 0;
        while seq < MILLION {
            if seq % 3 == 0 {
                // Zero-copy: up to 100 items written in place.
                let want = (MILLION - seq).min(100) as usize;
                let chunk = tx.write_chunk_blocking(want, None).unwrap();
                seq += chunk.fill_from_iter((seq..).map(Item::new)) as u64;
            } else {
                tx.push(Item::new(seq)).unwrap();
                seq += 1;
            }
        }
        0
    });
    let mut rx = parent.consumer().unwrap();
    let mut next = 0;
    while next < MILLION {
        if next % 7 == 0 {
            let chunk = rx.read_chunk_blocking(1, None).unwrap();
            let (a, b) = chunk.as_slices();
            for item in a.iter().chain(b) {
                assert_eq!(*item, Item::new(next));
                next += 1;
            }
            let n = chunk.len();
            chunk.release(n);
        } else {
            assert_eq!(rx.pop().unwrap(), Item::new(next));
            next += 1;
        }
    }
    assert_eq!(rx.pop(), Err(PopError::Disconnected));
    assert_eq!(rx.producer_state(), PeerState::Closed);
    assert_eq!(child.wait(), 0);
}

#[test]
fn a_million_items_cross_processes_over_shm() {
    let _serial = common::serial();
    let name = unique("million-shm");
    let chan = spsc::Channel::<Item>::create(Backing::shm(&name), 1024).unwrap();
    million_items(chan, false, move || {
        spsc::Channel::open(Backing::shm(&name)).unwrap()
    });
}

#[test]
fn a_million_items_cross_processes_over_a_file() {
    let _serial = common::serial();
    let dir = ScratchDir::new("million-file");
    let path = dir.path("ring");
    let chan = spsc::Channel::<Item>::create(Backing::file(&path), 1024).unwrap();
    million_items(chan, false, move || {
        spsc::Channel::open(Backing::file(&path)).unwrap()
    });
}

#[test]
fn a_million_items_cross_processes_over_a_memfd_with_and_without_express_pushes() {
    let _serial = common::serial();
    for express in [false, true] {
        let chan = spsc::Channel::<Item>::create(Backing::memfd("million"), 1024).unwrap();
        let fd = chan.fd().try_clone_to_owned().unwrap();
        million_items(chan, express, move || spsc::Channel::from_fd(fd).unwrap());
    }
}

/// A child echoes every item back on a second channel; the parent sends items one at a time
/// and checks that each comes back exactly: with both producers pushing express, and without
/// (each consumer, waiting between items, then asks its producer for the lane).
#[test]
fn ping_pong_between_processes_returns_every_item_exactly_with_and_without_express() {
    let _serial = common::serial();
    const ROUND_TRIPS: u64 = 20_000;
    for express in [false, true] {
        let ping = spsc::Channel::<Item>::create(Backing::memfd("ping"), 64).unwrap();
        let pong = spsc::Channel::<Item>::create(Backing::memfd("pong"), 64).unwrap();
        let (ping_fd, pong_fd) = (
            ping.fd().try_clone_to_owned().unwrap(),
            pong.fd().try_clone_to_owned().unwrap(),
        );
        let mut child = fork(move || {
            let mut rx = spsc::Channel::<Item>::from_fd(ping_fd)
                .unwrap()
                .consumer()
                .unwrap();
            let mut tx = spsc::Channel::<Item>::from_fd(pong_fd)
                .unwrap()
                .producer()
                .unwrap();
            tx.set_express(express);
            loop {
                match rx.pop() {
                    Ok(item) => tx.push(item).unwrap(),
                    Err(PopError::Disconnected) => return 0,
                    Err(e) => panic!("echo: {e}"),
                }
            }
        });
        let mut tx = ping.producer().unwrap();
        let mut rx = pong.consumer().unwrap();
        tx.set_express(express);
        for seq in 0..ROUND_TRIPS {
            tx.push(Item::new(seq)).unwrap();
            assert_eq!(rx.pop(), Ok(Item::new(seq)));
        }
        drop(tx);
        assert_eq!(child.wait(), 0);
        assert_eq!(rx.pop(), Err(PopError::Disconnected));
    }
}

/// Items of `N` bytes, each byte set from its sequence number, sent one at a time to a
/// thread that echoes them back, both producers pushing express: every one comes back
/// exactly, whether it fits beside the tail (up to 48 bytes) or not.
fn express_items_of<const N: usize>() {
    let item =
        |seq: u32| -> [u8; N] { std::array::from_fn(|i| (seq as u8) ^ (i as u8).wrapping_mul(7)) };
    let ping = spsc::Channel::<[u8; N]>::create(Backing::memfd("express-ping"), 4).unwrap();
    let pong = spsc::Channel::<[u8; N]>::create(Backing::memfd("express-pong"), 4).unwrap();
    let (mut tx, mut rx) = (ping.producer().unwrap(), pong.consumer().unwrap());
    let (mut echo_rx, mut echo_tx) = (ping.consumer().unwrap(), pong.producer().unwrap());
    tx.set_express(true);
    echo_tx.set_express(true);
    std::thread::scope(|s| {
        s.spawn(move || {
            while let Ok(item) = echo_rx.pop() {
                echo_tx.push(item).unwrap();
            }
        });
        for seq in 0..5_000 {
            tx.push(item(seq)).unwrap();
            assert_eq!(rx.pop(), Ok(item(seq)), "item {seq} of {N} bytes");
        }
        drop(tx);
    });
}

#[test]
fn express_items_of_every_size_arrive_exactly() {
    express_items_of::<1>();
    express_items_of::<12>();
    express_items_of::<47>();
    express_items_of::<48>();
    express_items_of::<49>();
}

#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct OtherItem {
    seq: u64,
    payload: u64,
}

fn incompatible_field<T: Pod>(backing: Backing) -> &'static str {
    match spsc::Channel::<T>::open(backing) {
        Err(Error::Incompatible(m)) => m.field,
        Err(e) => panic!("expected Incompatible, got {e}"),
        Ok(_) => panic!("expected Incompatible, got a channel"),
    }
}

#[test]
fn opening_with_another_type_is_incompatible() {
    let _serial = common::serial();
    let name = unique("types");
    let _chan = spsc::Channel::<Item>::create(Backing::shm(&name), 16).unwrap();
    assert_eq!(incompatible_field::<u64>(Backing::shm(&name)), "slot size");
    assert_eq!(
        incompatible_field::<[u8; 16]>(Backing::shm(&name)),
        "slot align"
    );
    assert_eq!(
        incompatible_field::<OtherItem>(Backing::shm(&name)),
        "type tag"
    );
    // An explicit tag on both sides lets two type names share a layout.
    let tagged = unique("tagged");
    let _a = spsc::Channel::<Item>::builder()
        .capacity(16)
        .type_tag(7)
        .create(Backing::shm(&tagged))
        .unwrap();
    assert!(spsc::Channel::<OtherItem>::builder()
        .type_tag(7)
        .open(Backing::shm(&tagged))
        .is_ok());
    assert!(matches!(
        spsc::Channel::<OtherItem>::builder().type_tag(8).open(Backing::shm(&tagged)),
        Err(Error::Incompatible(m)) if m.field == "type tag" && m.expected == "0x0000000000000008"
    ));
}

#[test]
fn names_that_do_not_exist_or_already_exist() {
    let _serial = common::serial();
    let name = unique("exists");
    assert!(matches!(
        spsc::Channel::<u64>::open(Backing::shm(&name)),
        Err(Error::NotFound { .. })
    ));
    let chan = spsc::Channel::<u64>::create(Backing::shm(&name), 8).unwrap();
    match spsc::Channel::<u64>::create(Backing::shm(&name), 8) {
        Err(
            e @ Error::AlreadyExists {
                live: Some(true), ..
            },
        ) => {
            assert!(e.to_string().contains("a live process holds it"), "{e}");
        }
        other => panic!("expected AlreadyExists (live), got {:?}", other.err()),
    }
    drop(chan);
    // The creator unlinked its name on drop.
    assert!(matches!(
        spsc::Channel::<u64>::open(Backing::shm(&name)),
        Err(Error::NotFound { .. })
    ));
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
}

#[test]
fn persisted_names_outlive_their_creator() {
    let _serial = common::serial();
    let name = unique("persist");
    drop(
        spsc::Channel::<u64>::builder()
            .capacity(8)
            .persist(true)
            .create(Backing::shm(&name))
            .unwrap(),
    );
    assert!(spsc::Channel::<u64>::open(Backing::shm(&name)).is_ok());
    spsc::Channel::<u64>::remove(Backing::shm(&name)).unwrap();
    assert!(matches!(
        spsc::Channel::<u64>::open(Backing::shm(&name)),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn bad_arguments_are_refused() {
    let _serial = common::serial();
    for capacity in [0, 3, 100] {
        assert!(matches!(
            spsc::Channel::<u64>::create(Backing::shm(unique("cap")), capacity),
            Err(Error::InvalidArgument(_))
        ));
    }
    for name in ["", "a/b", ".."] {
        assert!(matches!(
            spsc::Channel::<u64>::create(Backing::shm(name), 8),
            Err(Error::InvalidArgument(_))
        ));
    }
    assert!(matches!(
        spsc::Channel::<u64>::open(Backing::memfd("x")),
        Err(Error::InvalidArgument(_))
    ));
}

/// A valid region's bytes, to damage.
fn valid_region_bytes(dir: &ScratchDir) -> Vec<u8> {
    let path = dir.path("template");
    drop(
        spsc::Channel::<u64>::builder()
            .capacity(16)
            .persist(true)
            .create(Backing::file(&path))
            .unwrap(),
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

fn open_bytes(dir: &ScratchDir, name: &str, bytes: &[u8]) -> Result<spsc::Channel<u64>, Error> {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    spsc::Channel::<u64>::builder()
        .open_timeout(Duration::from_millis(30))
        .open(Backing::file(&path))
}

fn set_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

#[test]
fn damaged_files_are_errors_not_crashes() {
    let _serial = common::serial();
    let dir = ScratchDir::new("damaged");
    let good = valid_region_bytes(&dir);
    assert!(open_bytes(&dir, "good", &good).is_ok());

    let field = |name: &str, bytes: &[u8]| match open_bytes(&dir, name, bytes) {
        Err(Error::Incompatible(m)) => m.field,
        Err(e) => panic!("{name}: expected Incompatible, got {e}"),
        Ok(_) => panic!("{name}: expected an error, got a channel"),
    };
    assert_eq!(field("empty", &[]), "file size");
    assert_eq!(field("truncated", &good[..100]), "file size");
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_eq!(field("random", &random), "magic");

    let version = u32::from_ne_bytes(good[8..12].try_into().unwrap());
    for other in [version - 1, version + 1] {
        let mut bytes = good.clone();
        bytes[8..12].copy_from_slice(&other.to_ne_bytes());
        assert_eq!(field("other version", &bytes), "layout version");
    }

    let mut zero_capacity = good.clone();
    set_u64(&mut zero_capacity, 16, 0);
    assert_eq!(field("capacity-0", &zero_capacity), "capacity");

    let mut odd_capacity = good.clone();
    set_u64(&mut odd_capacity, 16, 12);
    assert_eq!(field("capacity-12", &odd_capacity), "capacity");

    // A header that is consistent with itself but describes a file larger than this one.
    let mut larger = good.clone();
    set_u64(&mut larger, 16, 1 << 30);
    set_u64(&mut larger, 48, 384 + 8 * (1 << 30));
    assert_eq!(field("larger", &larger), "file size");

    let mut wrong_total = good.clone();
    set_u64(&mut wrong_total, 48, 1 << 40);
    assert_eq!(field("total", &wrong_total), "total length");

    // A header that never became READY: the creator died mid-create.
    let mut unready = good.clone();
    unready[64..68].copy_from_slice(&0u32.to_ne_bytes());
    assert!(matches!(
        open_bytes(&dir, "unready", &unready),
        Err(Error::NotReady { .. })
    ));

    // All zeros: nothing was ever written.
    assert!(matches!(
        open_bytes(&dir, "zeros", &vec![0; good.len()]),
        Err(Error::NotReady { .. })
    ));
}

#[test]
fn impossible_counters_from_a_peer_are_corruption() {
    let _serial = common::serial();
    let dir = ScratchDir::new("corrupt");
    let path = dir.path("ring");
    let chan = spsc::Channel::<u64>::create(Backing::file(&path), 8).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.push_slice(&[1, 2, 3]).unwrap();
    let mut out = [0; 3];
    assert_eq!(rx.pop_slice(&mut out), Ok(3));
    // A tail that went backwards, and one more than capacity ahead of the head (offset 128:
    // the producer's line).
    for tail in [2, 3 + 9] {
        poke_u64(&path, 128, tail);
        match rx.try_pop() {
            Err(TryPopError::Corrupt(c)) => {
                assert_eq!((c.counter, c.found, c.min, c.max), ("tail", tail, 3, 11));
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    assert!(matches!(rx.read_chunk(1), Err(ChunkError::Corrupt(_))));
    // A head beyond the tail (offset 256: the consumer's line).
    assert_eq!(tx.push_slice(&[4, 5, 6, 7, 8, 9, 10, 11]), Ok(8));
    poke_u64(&path, 256, 1000);
    match tx.try_push(12) {
        Err(shmlane::TryPushError::Corrupt(12, c)) => {
            assert_eq!((c.counter, c.found), ("head", 1000))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A new endpoint refuses to attach to impossible counters.
    drop(rx);
    assert!(matches!(chan.consumer(), Err(Error::Corrupt(_))));
}

#[test]
fn counters_at_the_end_of_u64_are_refused_at_attach() {
    let _serial = common::serial();
    let dir = ScratchDir::new("corrupt-end");
    let path = dir.path("ring");
    let chan = spsc::Channel::<u64>::create(Backing::file(&path), 8).unwrap();
    // Two items in the ring by these counters, but the next push would carry the tail past
    // the end of u64 (a panic in debug builds, a wrap to 0 in release ones).
    poke_u64(&path, 128, u64::MAX);
    poke_u64(&path, 256, u64::MAX - 2);
    for attached in [chan.producer().map(drop), chan.consumer().map(drop)] {
        match attached {
            Err(Error::Corrupt(c)) => assert_eq!((c.counter, c.found), ("tail", u64::MAX)),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_memfd_larger_than_memory_is_no_space_not_an_oom_kill() {
    let _serial = common::serial();
    let mut child = fork(|| {
        // A guard for this test itself: should the check ever go, ftruncate or fallocate
        // past 1 GiB fails (EFBIG) instead of filling the machine's memory. The library's
        // own refusal comes first and says how much memory there is.
        let limit = libc::rlimit {
            rlim_cur: 1 << 30,
            rlim_max: 1 << 30,
        };
        // SAFETY: plain syscalls on this process with valid arguments.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        // 4 PiB of 4 KiB slots: a memfd has no size limit of its own.
        let refused = no_space(spsc::Channel::<[u8; 4096]>::create(
            Backing::memfd("huge"),
            1 << 40,
        ));
        assert!(refused.needed > 1 << 52, "needed {}", refused.needed);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib = |key: &str| -> u64 {
            let line = meminfo.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let machine = (kib("MemTotal:") + kib("SwapTotal:")) * 1024;
        assert!(
            refused
                .available
                .is_some_and(|room| room > 0 && room <= machine),
            "{:?} of {machine}",
            refused.available
        );
        assert!(
            refused.message.contains("memory cgroup"),
            "{}",
            refused.message
        );
        // One that fits is still made.
        let chan = spsc::Channel::<[u8; 4096]>::create(Backing::memfd("fits"), 16).unwrap();
        chan.producer().unwrap().try_push([7; 4096]).unwrap();
        assert_eq!(chan.consumer().unwrap().try_pop(), Ok([7; 4096]));
        0
    });
    expect_exit(&mut child, 0, "a memfd larger than memory");
}

#[test]
fn a_memfd_larger_than_the_memory_cgroup_has_left_is_no_space_not_an_oom_kill() {
    let _serial = common::serial();
    // A container with a 64 MiB limit whose process already uses 40 MiB: a memfd's pages
    // are charged to it, and a cgroup that runs out kills a process of its own.
    in_memory_cgroup(
        64 << 20,
        "a memfd larger than the cgroup's headroom",
        || {
            let mut used = vec![1u8; 40 << 20];
            for page in used.chunks_mut(4096) {
                page[0] = 2;
            }
            // 32 MiB of slots: under the limit, over what is left of it.
            let refused = no_space(spsc::Channel::<[u8; 4096]>::create(
                Backing::memfd("over"),
                8192,
            ));
            assert!(refused.needed > 32 << 20, "needed {}", refused.needed);
            assert!(
                refused.available.is_some_and(|room| room < 24 << 20),
                "{:?} of 64 MiB with 40 MiB used",
                refused.available
            );
            // One that fits what is left is still made, and works.
            let chan = spsc::Channel::<[u8; 4096]>::create(Backing::memfd("fits"), 2048).unwrap();
            chan.producer().unwrap().try_push([7; 4096]).unwrap();
            assert_eq!(chan.consumer().unwrap().try_pop(), Ok([7; 4096]));
            std::hint::black_box(&used);
            0
        },
    );
}

#[test]
fn a_region_with_holes_on_a_full_tmpfs_is_no_space_at_open_not_sigbus() {
    let _serial = common::serial();
    in_private_tmpfs("size=1m", "holes on a full tmpfs", |mount_point| {
        let path = mount_point.join("ring");
        // 512 KiB of slots, all backed: a full filesystem does not stop an open.
        let created = spsc::Channel::<[u64; 8]>::create(Backing::file(&path), 1 << 13).unwrap();
        let filler = mount_point.join("filler");
        let mut fill = std::fs::File::create(&filler).unwrap();
        while std::io::Write::write_all(&mut fill, &[1u8; 4096]).is_ok() {}
        drop(spsc::Channel::<[u64; 8]>::open(Backing::file(&path)).unwrap());
        // What a creator that is not shmlane (or a hostile one) may leave: holes in the
        // slots. A page faulted into one on a full tmpfs would be a SIGBUS.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        // SAFETY: plain syscall on an open file.
        let punched = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                64 << 10,
                256 << 10,
            )
        };
        assert_eq!(punched, 0, "{}", std::io::Error::last_os_error());
        // The space the holes gave back goes to the filler.
        while std::io::Write::write_all(&mut fill, &[1u8; 4096]).is_ok() {}
        let refused = no_space(spsc::Channel::<[u64; 8]>::open(Backing::file(&path)));
        assert_eq!(refused.dir, mount_point.to_str().unwrap());
        assert!(refused.needed > 512 << 10, "needed {}", refused.needed);
        // With room again, the open fills the holes and every slot works.
        drop(fill);
        std::fs::remove_file(&filler).unwrap();
        let opened = spsc::Channel::<[u64; 8]>::open(Backing::file(&path)).unwrap();
        let (mut tx, mut rx) = (created.producer().unwrap(), opened.consumer().unwrap());
        for i in 0..(1u64 << 14) {
            tx.try_push([i; 8]).unwrap();
            assert_eq!(rx.try_pop(), Ok([i; 8]));
        }
        0
    });
}

#[test]
fn a_file_in_a_missing_directory_is_not_found_naming_the_directory() {
    let _serial = common::serial();
    let dir = ScratchDir::new("nodir");
    let path = dir.path("absent").join("ring");
    match spsc::Channel::<u64>::create(Backing::file(&path), 64) {
        Err(e @ Error::NotFound { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "the directory {} does not exist: create it first, or check the name",
                dir.path("absent").display()
            )
        ),
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
}

#[test]
fn running_out_of_descriptors_is_an_error_that_names_the_channel_and_the_limit() {
    let _serial = common::serial();
    let mut child = fork(|| {
        let limit = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        // SAFETY: plain syscall on this process with a valid argument.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        let chan = spsc::Channel::<u64>::create(Backing::memfd("fds"), 64).unwrap();
        // Every descriptor this process may have, taken.
        let mut taken = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            taken.push(file);
        }
        match chan.producer() {
            Err(e @ Error::Io { .. }) => {
                let text = e.to_string();
                let Error::Io { op, what, source } = e else {
                    unreachable!()
                };
                assert_eq!((op, source.raw_os_error()), ("open", Some(libc::EMFILE)));
                assert!(what.starts_with("memfd:fds"), "{what}");
                assert!(text.contains("ulimit -n"), "{text}");
            }
            other => panic!("expected Io(EMFILE), got {:?}", other.err()),
        }
        // Given back, they are enough again.
        drop(taken);
        chan.producer().unwrap().try_push(3).unwrap();
        assert_eq!(chan.consumer().unwrap().try_pop(), Ok(3));
        0
    });
    expect_exit(&mut child, 0, "out of descriptors");
}

#[test]
fn a_read_only_filesystem_is_an_error_that_says_so() {
    let _serial = common::serial();
    in_private_tmpfs("ro,size=1m", "a read-only tmpfs", |mount_point| {
        match spsc::Channel::<u64>::create(Backing::file(mount_point.join("ring")), 64) {
            Err(e @ Error::Io { .. }) => {
                let text = e.to_string();
                let Error::Io { op, source, .. } = e else {
                    unreachable!()
                };
                assert_eq!((op, source.raw_os_error()), ("open", Some(libc::EROFS)));
                assert!(
                    text.contains("read-only") && text.contains("memfd"),
                    "{text}"
                );
            }
            other => panic!("expected Io(EROFS), got {:?}", other.err()),
        }
        0
    });
}

#[test]
fn no_room_in_the_address_space_is_an_error_that_says_so_and_leaves_no_name() {
    let _serial = common::serial();
    let name = unique("as");
    let mut child = fork(|| {
        // 64 MiB more than this process has mapped now, for a 256 MiB channel.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap();
        let limit = (kib << 10) + (64 << 20);
        let rlimit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: plain syscall on this process with a valid argument.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
        match spsc::Channel::<[u8; 4096]>::create(Backing::shm(&name), 1 << 16) {
            Err(e @ Error::Io { .. }) => {
                let text = e.to_string();
                let Error::Io { op, source, .. } = e else {
                    unreachable!()
                };
                assert_eq!((op, source.raw_os_error()), ("mmap", Some(libc::ENOMEM)));
                assert!(text.contains("ulimit -v"), "{text}");
            }
            other => panic!("expected Io(ENOMEM) from mmap, got {:?}", other.err()),
        }
        assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
        0
    });
    expect_exit(&mut child, 0, "no room in the address space");
}

#[test]
fn a_full_tmpfs_is_no_space_not_sigbus() {
    let _serial = common::serial();
    in_private_tmpfs("size=1m", "NoSpace on a 1 MiB tmpfs", |mount_point| {
        let path = mount_point.join("big");
        // 4 MiB of slots in a 1 MiB tmpfs.
        let refused = no_space(spsc::Channel::<[u64; 8]>::create(
            Backing::file(&path),
            1 << 16,
        ));
        assert_eq!(refused.dir, mount_point.to_str().unwrap());
        assert!(!refused.huge_pages);
        assert!(refused.needed >= 4 << 20, "needed {}", refused.needed);
        assert!(
            refused.available.is_some_and(|free| free <= 1 << 20),
            "{:?}",
            refused.available
        );
        let text = &refused.message;
        assert!(
            text.contains("--shm-size") && text.contains("emptyDir.sizeLimit"),
            "{text}"
        );
        // Nothing left behind, and a channel that fits still works.
        assert_eq!(std::fs::read_dir(mount_point).unwrap().count(), 0);
        let chan = spsc::Channel::<u64>::create(Backing::file(&path), 1024).unwrap();
        chan.producer().unwrap().try_push(5).unwrap();
        assert_eq!(chan.consumer().unwrap().try_pop(), Ok(5));
        0
    });
}

#[test]
fn a_region_larger_than_dev_shm_is_no_space_and_leaves_no_name() {
    let _serial = common::serial();
    // SAFETY: statvfs is a plain C struct; the path is a valid C string.
    let total = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c"/dev/shm".as_ptr(), &mut st), 0);
        st.f_blocks as u64 * st.f_frsize as u64
    };
    let capacity = (total / 64 + 1).next_power_of_two();
    let name = unique("too-big");
    let refused = no_space(spsc::Channel::<[u64; 8]>::create(
        Backing::shm(&name),
        capacity,
    ));
    assert_eq!(refused.dir, "/dev/shm");
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
}

fn raw_memfd() -> OwnedFd {
    // SAFETY: a valid C string; memfd_create returns a new descriptor or -1.
    let fd =
        unsafe { libc::memfd_create(c"raw".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0);
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn from_fd_refuses_an_unsealed_memfd() {
    let _serial = common::serial();
    let dir = ScratchDir::new("unsealed");
    let bytes = valid_region_bytes(&dir);
    let fd = raw_memfd();
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    std::io::Write::write_all(&mut file, &bytes).unwrap();

    match spsc::Channel::<u64>::from_fd(fd.try_clone().unwrap()) {
        Err(e @ Error::Unsealed { missing }) => {
            assert_eq!(missing, "F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL");
            assert!(e.to_string().contains("allow_unsealed"));
        }
        other => panic!("expected Unsealed, got {:?}", other.err()),
    }
    // Opting in accepts it as it is.
    assert!(spsc::Channel::<u64>::builder()
        .allow_unsealed(true)
        .from_fd(fd.try_clone().unwrap())
        .is_ok());
    // Sealed, it is accepted, and works.
    // SAFETY: fcntl on a descriptor we own.
    let rc = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    assert_eq!(rc, 0);
    let chan = spsc::Channel::<u64>::from_fd(fd).unwrap();
    chan.producer().unwrap().push(9).unwrap();
    assert_eq!(chan.consumer().unwrap().pop(), Ok(9));
}

#[test]
fn a_memfd_channel_is_sealed_against_resizing() {
    let _serial = common::serial();
    let chan = spsc::Channel::<u64>::create(Backing::memfd("sealed"), 8).unwrap();
    // SAFETY: ftruncate on a descriptor the channel keeps open.
    let rc = unsafe { libc::ftruncate(chan.fd().as_fd().as_raw_fd(), 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
}

#[test]
fn another_user_cannot_open_a_0600_segment() {
    let _serial = common::serial();
    if !is_root() {
        eprintln!("skipped: switching to uid 65534 needs root");
        return;
    }
    let name = unique("perm");
    let _chan = spsc::Channel::<u64>::create(Backing::shm(&name), 8).unwrap();
    let mut child = fork(move || {
        // SAFETY: dropping privileges in the child only.
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                eprintln!("setuid(65534) refused: {}", std::io::Error::last_os_error());
                return SKIP;
            }
        }
        match spsc::Channel::<u64>::open(Backing::shm(&name)) {
            Err(Error::PermissionDenied { what }) if what.ends_with(&name) => 0,
            Err(e) => {
                eprintln!("expected PermissionDenied, got {e}");
                1
            }
            Ok(_) => 2,
        }
    });
    expect_exit(&mut child, 0, "open as uid 65534");
}

#[test]
fn the_file_mode_is_exactly_as_asked() {
    let _serial = common::serial();
    use std::os::unix::fs::PermissionsExt;
    let dir = ScratchDir::new("mode");
    let path = dir.path("ring");
    let _default = spsc::Channel::<u64>::create(Backing::file(&path), 8).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let shared = dir.path("group");
    let _group = spsc::Channel::<u64>::builder()
        .capacity(8)
        .mode(0o660)
        .create(Backing::file(&shared))
        .unwrap();
    assert_eq!(
        std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777,
        0o660
    );
}

/// `WORDS`-word values through a ring of 4, twice around: each arrives whole, and a push
/// into the full ring gives its value back whole (`try_push` and `push_timeout`).
fn whole_values_round_trip<const WORDS: usize>()
where
    [u64; WORDS]: Pod,
{
    let value = |n: u64| -> [u64; WORDS] { std::array::from_fn(|i| (n << 32) | (i as u64 + 1)) };
    let chan = spsc::Channel::<[u64; WORDS]>::create(Backing::memfd("whole"), 4).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    for lap in 0..2 {
        for n in 0..4 {
            let n = lap * 4 + n;
            if n % 2 == 0 {
                tx.try_push(value(n)).unwrap();
            } else {
                tx.push(value(n)).unwrap();
            }
        }
        match tx.try_push(value(99)) {
            Err(TryPushError::Full(back)) => assert_eq!(back, value(99)),
            other => panic!("a push into a full ring: {other:?}"),
        }
        match tx.push_timeout(value(98), Duration::from_millis(1)) {
            Err(PushError::Timeout(back)) => assert_eq!(back, value(98)),
            other => panic!("a blocking push into a full ring: {other:?}"),
        }
        for n in 0..4 {
            assert_eq!(rx.try_pop().unwrap(), value(lap * 4 + n));
        }
    }
    assert!(matches!(rx.try_pop(), Err(TryPopError::Empty)));
}

#[test]
fn values_written_word_by_word_or_whole_arrive_whole_and_come_back_whole_when_full() {
    whole_values_round_trip::<1>();
    whole_values_round_trip::<8>();
    whole_values_round_trip::<32>();
    whole_values_round_trip::<40>();
}

/// Found while writing the `spsc_ops` fuzz model: chunk calls answered from a stale cached
/// count gave a short `_upto` chunk, or `Disconnected` while committed items waited.
#[test]
fn chunks_count_what_is_there_not_what_was_cached() {
    let chan = spsc::Channel::<u64>::create(Backing::memfd("stale-counts"), 8).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    assert_eq!(tx.push_slice(&[0, 1, 2, 3, 4, 5]).unwrap(), 6);
    let mut out = [0; 6];
    assert_eq!(rx.pop_slice(&mut out).unwrap(), 6);
    // The producer's cache says 2 free; all 8 are.
    let chunk = tx.write_chunk_upto(8).unwrap();
    assert_eq!(chunk.len(), 8, "as many as are free");
    assert_eq!(chunk.fill_from_iter([6, 7]), 2);
    let chunk = rx.read_chunk_upto(1).unwrap();
    assert_eq!(chunk.as_slices().0, &[6]);
    chunk.release(1);
    // The consumer's cache says 1 ready; 3 are.
    assert_eq!(tx.push_slice(&[8, 9]).unwrap(), 2);
    let chunk = rx.read_chunk_upto(8).unwrap();
    assert_eq!(chunk.len(), 3, "as many as are ready");
    chunk.release(3);
    // Cache empty, producer gone after committing more: not Disconnected while they wait.
    assert_eq!(tx.push_slice(&[10, 11]).unwrap(), 2);
    drop(tx);
    assert!(matches!(rx.read_chunk(0), Ok(c) if c.is_empty()));
    assert!(matches!(rx.read_chunk_upto(0), Err(ChunkError::TooFew(2))));
    let chunk = rx.read_chunk(2).unwrap();
    assert_eq!(chunk.as_slices(), (&[10, 11][..], &[][..]));
    chunk.release(2);
    assert!(matches!(rx.read_chunk(0), Err(ChunkError::Disconnected)));
}

#[test]
fn fill_from_iter_fills_both_runs_of_a_wrapped_chunk_and_stops_with_the_iterator() {
    let chan = spsc::Channel::<u64>::create(Backing::memfd("fill-wrap"), 8).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    // Move both counters to 6, so a chunk of 8 is 2 slots to the end and 6 from the start.
    assert_eq!(tx.push_slice(&[0; 6]).unwrap(), 6);
    assert_eq!(rx.pop_slice(&mut [0; 6]).unwrap(), 6);
    let mut chunk = tx.write_chunk(8).unwrap();
    assert_eq!(
        (chunk.as_mut_slices().0.len(), chunk.as_mut_slices().1.len()),
        (2, 6)
    );
    // An iterator shorter than the chunk: both runs get their part, the rest stays free.
    assert_eq!(chunk.fill_from_iter(10..15), 5);
    let mut out = [0; 8];
    assert_eq!(rx.pop_slice(&mut out).unwrap(), 5);
    assert_eq!(out[..5], [10, 11, 12, 13, 14]);
    // A longer one: the chunk takes what fits.
    assert_eq!(tx.write_chunk(8).unwrap().fill_from_iter(20..), 8);
    assert_eq!(rx.pop_slice(&mut out).unwrap(), 8);
    assert_eq!(out, [20, 21, 22, 23, 24, 25, 26, 27]);
}
