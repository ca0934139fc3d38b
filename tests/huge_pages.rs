//! Regions of huge pages: a memfd made with `huge_pages(true)` and a file on hugetlbfs.
//! Their pages come from the kernel's pool of reserved huge pages, not from free memory.
#![cfg(not(shmlane_loom))]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{expect_exit, fork, in_private_mount, is_root, no_space};
use shmlane::{spsc, Backing};

const HUGE: u64 = 2 << 20;
const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

#[test]
fn a_hugetlbfs_mount_too_small_is_no_space_that_names_huge_pages() {
    let _serial = common::serial();
    // One 2 MiB page may be used in this mount, whatever the pool holds.
    in_private_mount(
        "hugetlbfs",
        "pagesize=2M,size=2M",
        "a full hugetlbfs",
        |mount_point| {
            let path = mount_point.join("ring");
            // 4 MiB of slots and the header: three huge pages.
            let refused = no_space(spsc::Channel::<u64>::create(Backing::file(&path), 1 << 19));
            assert_eq!(refused.dir, mount_point.to_str().unwrap());
            assert_eq!(refused.needed, 3 * HUGE);
            assert!(refused.huge_pages);
            assert!(
                refused.available.is_some_and(|free| free <= HUGE),
                "{:?}",
                refused.available
            );
            let text = &refused.message;
            assert!(
                text.contains("huge pages") && text.contains("nr_hugepages"),
                "{text}"
            );
            // Nothing left behind.
            assert_eq!(std::fs::read_dir(mount_point).unwrap().count(), 0);
            0
        },
    );
}

#[test]
fn huge_page_memfd_without_free_huge_pages_is_no_space() {
    let _serial = common::serial();
    let Some(free) = pool_free() else {
        eprintln!("skipped: no pool of 2 MiB huge pages ({POOL})");
        return;
    };
    let created = spsc::Channel::<u64>::builder()
        .capacity(1024)
        .huge_pages(true)
        .create(Backing::memfd("huge"));
    // Whether the machine has a page to spare is its administrator's choice: each case has
    // its one right answer.
    if free == 0 {
        let refused = no_space(created);
        assert_eq!(refused.dir, "a memfd (MFD_HUGETLB)");
        assert_eq!(
            (refused.needed, refused.available, refused.huge_pages),
            (HUGE, Some(0), true)
        );
    } else {
        let chan = created.unwrap();
        chan.producer().unwrap().try_push(9).unwrap();
        assert_eq!(chan.consumer().unwrap().try_pop(), Ok(9));
    }
}

#[test]
fn huge_page_rings_carry_items_between_processes() {
    let _serial = common::serial();
    let Some(_pool) = Reserved::pages(4) else {
        return;
    };
    // A memfd of huge pages, shared with a forked producer.
    let chan = spsc::Channel::<u64>::builder()
        .capacity(1 << 16)
        .huge_pages(true)
        .create(Backing::memfd("huge"))
        .unwrap();
    let meta = std::fs::File::from(chan.fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    // The header and 512 KiB of slots round up to one huge page, all of it backed.
    assert_eq!((meta.size(), meta.blocks() * 512), (HUGE, HUGE));
    carry(&chan, || chan.producer().unwrap());
    drop(chan);
    // A file on hugetlbfs, opened by path in the producer.
    in_private_mount(
        "hugetlbfs",
        "pagesize=2M",
        "a ring on hugetlbfs",
        |mount_point| {
            let path = mount_point.join("ring");
            let chan = spsc::Channel::<u64>::create(Backing::file(&path), 1 << 16).unwrap();
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!((meta.size(), meta.blocks() * 512), (HUGE, HUGE));
            carry(&chan, || {
                spsc::Channel::<u64>::open(Backing::file(&path))
                    .unwrap()
                    .producer()
                    .unwrap()
            });
            0
        },
    );
}

/// A forked child pushes 100,000 items through the producer `producer()` gives it; they
/// all arrive here, in order.
fn carry(chan: &spsc::Channel<u64>, producer: impl FnOnce() -> spsc::Producer<u64>) {
    const ITEMS: u64 = 100_000;
    let mut child = fork(|| {
        let mut tx = producer();
        for i in 0..ITEMS {
            tx.push(i).unwrap();
        }
        0
    });
    let mut rx = chan.consumer().unwrap();
    for i in 0..ITEMS {
        assert_eq!(rx.pop(), Ok(i));
    }
    assert_eq!(rx.pop(), Err(shmlane::PopError::Disconnected));
    expect_exit(&mut child, 0, "a huge page ring's producer");
}

/// Free 2 MiB pages in the kernel's pool: neither handed out nor promised.
fn pool_free() -> Option<u64> {
    let count = |file: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new(POOL).join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(count("free_hugepages")?.saturating_sub(count("resv_hugepages")?))
}

/// Huge pages added to the pool for a test, given back on drop.
struct Reserved {
    before: u64,
}

impl Reserved {
    /// Adds `n` pages to the pool; None (saying why) where that cannot be done.
    fn pages(n: u64) -> Option<Reserved> {
        let setting = Path::new(POOL).join("nr_hugepages");
        let Some(before) = std::fs::read_to_string(&setting)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
        else {
            eprintln!("skipped: no pool of 2 MiB huge pages ({POOL})");
            return None;
        };
        if !is_root() {
            eprintln!("skipped: reserving huge pages needs root");
            return None;
        }
        if let Err(e) = std::fs::write(&setting, (before + n).to_string()) {
            eprintln!("skipped: reserving huge pages: {e}");
            return None;
        }
        let reserved = Reserved { before };
        // The kernel adds what it can find contiguous memory for.
        if pool_free().unwrap_or(0) < n {
            eprintln!("skipped: the kernel could not find memory for {n} huge pages");
            return None;
        }
        Some(reserved)
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(POOL).join("nr_hugepages"),
            self.before.to_string(),
        );
    }
}
