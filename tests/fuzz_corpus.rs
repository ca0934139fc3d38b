//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) and the regression inputs
//! (`fuzz/regressions/<target>/`) through the fuzz targets' checks, on the stable toolchain:
//! every input the fuzzer kept, and every one that once found a bug, still passes.
#![cfg(not(shmlane_loom))]

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;

/// Runs `check` on every file under `fuzz/{corpus,regressions}/<target>`; returns how many.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("read the corpus directory").path();
            let input = std::fs::read(&path).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn open_region_corpus() {
    assert!(
        replay("open_region", checks::open_region) > 0,
        "no corpus checked in"
    );
}

#[test]
fn spsc_ops_corpus() {
    assert!(
        replay("spsc_ops", checks::spsc_ops) > 0,
        "no corpus checked in"
    );
}

#[test]
fn mpmc_ops_corpus() {
    assert!(
        replay("mpmc_ops", checks::mpmc_ops) > 0,
        "no corpus checked in"
    );
}

#[test]
fn hostile_peer_corpus() {
    assert!(
        replay("hostile_peer", checks::hostile_peer) > 0,
        "no corpus checked in"
    );
}

#[test]
fn handshake_corpus() {
    assert!(
        replay("handshake", checks::handshake) > 0,
        "no corpus checked in"
    );
}

/// The seed corpus, made fresh from the current format (real region files, a real server
/// message, short op sequences): every seed passes its target's check. With
/// `SHMLANE_WRITE_SEEDS=1` the seeds are also written to `fuzz/corpus/` (after a format
/// change: `SHMLANE_WRITE_SEEDS=1 cargo test --test fuzz_corpus seeds`).
#[test]
fn seeds_made_from_the_current_format_pass_their_checks() {
    use shmlane::{handoff, mpmc, spsc, Backing};
    use std::io::Read;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var("SHMLANE_WRITE_SEEDS").is_ok_and(|v| v == "1");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let check: fn(&[u8]) = match target {
            "open_region" => checks::open_region,
            "spsc_ops" => checks::spsc_ops,
            "mpmc_ops" => checks::mpmc_ops,
            "hostile_peer" => checks::hostile_peer,
            _ => checks::handshake,
        };
        check(bytes);
        if write {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    let dir = std::env::temp_dir().join(format!("shmlane-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let region = |name: &str| {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        // `how` 0: the bytes as they are; the selector picks the type in the low bits.
        let mut seed = vec![0, 0, 0];
        seed.extend_from_slice(&bytes);
        seed
    };
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let spsc64 = spsc::Channel::<u64>::create(Backing::file(&a), 4).unwrap();
    let mut tx = spsc64.producer().unwrap();
    tx.push_slice(&[1, 2, 3]).unwrap();
    let _u8s = spsc::Channel::<u8>::create(Backing::file(&b), 8).unwrap();
    let mpmc64 = mpmc::Channel::<u64>::builder()
        .capacity(4)
        .registry_len(2)
        .create(Backing::file(&c))
        .unwrap();
    mpmc64.producer().unwrap().push(7).unwrap();
    let mut seed = region("a");
    put("open_region", "spsc-u64", &seed);
    seed[0] = 6; // the same, opened with a wait
    put("open_region", "spsc-u64-wait", &seed);
    let mut seed = region("b");
    seed[0] = 1;
    put("open_region", "spsc-u8", &seed);
    let mut seed = region("c");
    seed[0] = 3;
    put("open_region", "mpmc-u64", &seed);
    seed[0] = 0x33; // truncated to `len` = 0x0200 bytes
    seed[1..3].copy_from_slice(&512u16.to_le_bytes());
    put("open_region", "mpmc-u64-truncated", &seed);
    drop((tx, spsc64, mpmc64));
    std::fs::remove_dir_all(&dir).unwrap();

    put("spsc_ops", "push-pop", &[2, 0, 0, 1, 1, 1]);
    put(
        "spsc_ops",
        "slices-chunks",
        &[3, 0x42, 0x33, 0x35, 3, 0x37, 2, 0x0a, 0x13],
    );
    put("spsc_ops", "close", &[1, 0, 0x0b, 0, 0x0a, 1]);
    put(
        "mpmc_ops",
        "join-push-pop",
        &[2, 6, 7, 0, 0, 2, 3, 0x44, 0x45],
    );
    put("mpmc_ops", "leave", &[1, 6, 14, 7, 0, 8, 2, 6, 2, 7, 0]);
    put(
        "hostile_peer",
        "spsc",
        &[0, 0, 1, 0x80, 3, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0x87],
    );
    put(
        "hostile_peer",
        "mpmc",
        &[1, 0, 0x80, 0x1c, 5, 0, 0, 0, 0, 0, 0, 0, 1, 3],
    );

    // A real offer, read off a listener.
    let socket = std::env::temp_dir().join(format!("shmlane-seed-{}.sock", std::process::id()));
    let chan = spsc::Channel::<u64>::create(Backing::memfd("seed"), 8).unwrap();
    let listener = handoff::Listener::bind(&socket).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| listener.accept(&chan).unwrap());
        let mut message = Vec::new();
        std::os::unix::net::UnixStream::connect(&socket)
            .unwrap()
            .read_to_end(&mut message)
            .unwrap();
        let mut seed = vec![1, 0, 1];
        seed.extend_from_slice(&message);
        put("handshake", "offer-with-fd", &seed);
        seed[0] = 0;
        put("handshake", "offer-without-fd", &seed);
        seed[0] = 3; // in two pieces, split at 100
        seed[1] = 100;
        put("handshake", "offer-in-two-pieces", &seed);
    });
    std::fs::remove_file(&socket).unwrap();
}

/// Found by `mpmc_ops` (fuzz/regressions/mpmc_ops/crash-c796...): an MPMC ring of one slot
/// took a second push over an unread item. One slot is now refused at create, and a region
/// that claims one is refused at open.
#[test]
fn a_one_slot_mpmc_is_refused_at_create_and_at_open() {
    use shmlane::{mpmc, Backing, Error};
    let path = std::env::temp_dir().join(format!("shmlane-one-slot-{}", std::process::id()));
    assert!(matches!(
        mpmc::Channel::<u32>::create(Backing::file(&path), 1),
        Err(Error::InvalidArgument(m)) if m.contains("at least 2")
    ));
    assert!(!path.exists(), "a refused create leaves no file");
    let chan = mpmc::Channel::<u32>::builder()
        .capacity(2)
        .persist(true)
        .create(Backing::file(&path))
        .unwrap();
    drop(chan);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[16..24].copy_from_slice(&1u64.to_ne_bytes()); // the header's capacity
    std::fs::write(&path, &bytes).unwrap();
    let opened = mpmc::Channel::<u32>::open(Backing::file(&path));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        opened,
        Err(Error::Incompatible(m)) if m.field == "capacity" && m.found == "1"
    ));
    // The fuzzer's input itself, replayed.
    checks::mpmc_ops(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/regressions/mpmc_ops/crash-c7961481a5b5584ff0d8d63c8a5bcfe8e6aff08c"),
        )
        .unwrap(),
    );
}
