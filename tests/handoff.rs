//! fd handoff over Unix sockets: real processes, other uids, hostile clients and servers.
#![cfg(not(shmlane_loom))]

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use common::{expect_exit, fork, is_root, under_signals, unique, ScratchDir, SKIP};
use shmlane::handoff::{self, Listener, Outcome, Policy};
use shmlane::{mpmc, spsc, Backing, Error, PopError};

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn a_client_process_receives_the_channel_and_100k_items_flow() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-flow");
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("flow"), 1024).unwrap();
    let listener = Listener::bind(&sock).unwrap();
    let client_sock = sock.clone();
    let mut client = fork(move || {
        let chan: spsc::Channel<u64> = handoff::connect(&client_sock, WAIT).unwrap();
        let mut rx = chan.consumer().unwrap();
        for i in 0..100_000 {
            assert_eq!(rx.pop(), Ok(i));
        }
        assert_eq!(rx.pop(), Err(PopError::Disconnected));
        0
    });
    assert!(
        matches!(listener.accept(&chan).unwrap(), Outcome::Served(peer) if peer.pid == client.pid)
    );
    let mut tx = chan.producer().unwrap();
    for i in 0..100_000 {
        tx.push(i).unwrap();
    }
    drop(tx);
    assert_eq!(client.wait(), 0);
}

#[test]
fn another_uid_is_refused_by_default_and_admitted_by_an_allow_list() {
    let _serial = common::serial();
    if !is_root() {
        eprintln!("skipped: switching to uid 65534 needs root");
        return;
    }
    let dir = ScratchDir::new("handoff-uid");
    // The socket file admits everyone, so the policy is what decides.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("uid"), 16).unwrap();
    let as_nobody = |sock: std::path::PathBuf, expect_ok: bool| {
        fork(move || {
            // SAFETY: dropping privileges in the child only.
            if unsafe { libc::setgid(65534) != 0 || libc::setuid(65534) != 0 } {
                eprintln!("setuid(65534) refused: {}", std::io::Error::last_os_error());
                return SKIP;
            }
            match handoff::connect::<spsc::Channel<u64>>(&sock, WAIT) {
                Err(Error::Refused { reason }) if !expect_ok && reason.contains("uid 65534") => 0,
                Ok(chan) if expect_ok => {
                    assert_eq!(chan.consumer().unwrap().pop(), Ok(42));
                    0
                }
                Err(e) => {
                    eprintln!("unexpected: {e}");
                    1
                }
                Ok(_) => 2,
            }
        })
    };
    let listener = Listener::bind_with_mode(&sock, 0o666).unwrap();
    let mut refused = as_nobody(sock.clone(), false);
    assert!(matches!(listener.accept(&chan).unwrap(), Outcome::Refused(peer) if peer.uid == 65534));
    if !expect_exit(&mut refused, 0, "refused as uid 65534") {
        return;
    }
    drop(listener);
    let listener = Listener::bind_with_mode(&sock, 0o666)
        .unwrap()
        .with_policy(Policy::Allow {
            uids: vec![65534],
            gids: vec![],
        });
    let mut admitted = as_nobody(sock.clone(), true);
    assert!(matches!(listener.accept(&chan).unwrap(), Outcome::Served(peer) if peer.uid == 65534));
    chan.producer().unwrap().push(42).unwrap();
    expect_exit(&mut admitted, 0, "admitted as uid 65534");
}

#[test]
fn garbage_silence_and_hang_ups_do_not_stop_the_server() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-hostile");
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("hostile"), 16).unwrap();
    let listener = Listener::bind(&sock).unwrap();
    // A client that sends garbage and never reads.
    let mut garbage = UnixStream::connect(&sock).unwrap();
    garbage.write_all(&[0xAB; 4096]).unwrap();
    assert!(matches!(
        listener.accept(&chan).unwrap(),
        Outcome::Served(_)
    ));
    // A client that says nothing.
    let _silent = UnixStream::connect(&sock).unwrap();
    assert!(matches!(
        listener.accept(&chan).unwrap(),
        Outcome::Served(_)
    ));
    // A client that hangs up before the server answers: no SIGPIPE, just Vanished.
    drop(UnixStream::connect(&sock).unwrap());
    assert_eq!(listener.accept(&chan).unwrap(), Outcome::Vanished);
    // Nothing pending: a non-blocking accept says so.
    assert_eq!(listener.try_accept(&chan).unwrap(), None);
    // A well-behaved client is still served, by the non-blocking accept too.
    std::thread::scope(|s| {
        let client = s.spawn(|| handoff::connect::<spsc::Channel<u64>>(&sock, WAIT));
        let outcome = loop {
            if let Some(outcome) = listener.try_accept(&chan).unwrap() {
                break outcome;
            }
            std::thread::yield_now();
        };
        assert!(matches!(outcome, Outcome::Served(_)));
        let received = client.join().unwrap().unwrap();
        chan.producer().unwrap().push(5).unwrap();
        assert_eq!(received.consumer().unwrap().pop(), Ok(5));
    });
}

#[test]
fn a_client_of_another_type_gets_incompatible_before_any_item() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-types");
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("types"), 16).unwrap();
    let listener = Listener::bind(&sock).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..3 {
                listener.accept(&chan).unwrap();
            }
        });
        let field = |r: Result<(), Error>| match r {
            Err(Error::Incompatible(m)) => m.field,
            other => panic!("expected Incompatible, got {other:?}"),
        };
        assert_eq!(
            field(handoff::connect::<spsc::Channel<u32>>(&sock, WAIT).map(drop)),
            "slot size"
        );
        assert_eq!(
            field(handoff::connect::<spsc::Channel<[u8; 8]>>(&sock, WAIT).map(drop)),
            "slot align"
        );
        assert_eq!(
            field(handoff::connect::<mpmc::Channel<u64>>(&sock, WAIT).map(drop)),
            "kind"
        );
    });
}

#[test]
fn mpmc_channels_and_abstract_names_work_too() {
    let _serial = common::serial();
    let name = unique("handoff-abstract");
    let chan = mpmc::Channel::<u64>::create(Backing::memfd("abstract"), 16).unwrap();
    let listener = Listener::bind_abstract(&name).unwrap();
    assert!(matches!(
        Listener::bind_abstract(&name),
        Err(Error::AlreadyExists {
            live: Some(true),
            ..
        })
    ));
    std::thread::scope(|s| {
        s.spawn(|| listener.accept(&chan).unwrap());
        let received: mpmc::Channel<u64> = handoff::connect_abstract(&name, WAIT).unwrap();
        chan.producer().unwrap().push(9).unwrap();
        assert_eq!(received.consumer().unwrap().pop(), Ok(9));
    });
}

/// Serves a 16-slot memfd channel of u64 once on a fresh abstract socket, `delay` after the
/// client starts, has `connect(name)` receive it, and checks that an item crosses.
fn served_over_abstract(
    label: &str,
    delay: Duration,
    connect: impl FnOnce(&str) -> Result<spsc::Channel<u64>, Error>,
) {
    let name = unique(label);
    let chan = spsc::Channel::<u64>::create(Backing::memfd(label), 16).unwrap();
    let listener = Listener::bind_abstract(&name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(delay);
            listener.accept(&chan).unwrap();
        });
        let received = connect(&name).unwrap();
        chan.producer().unwrap().push(6).unwrap();
        assert_eq!(received.consumer().unwrap().pop(), Ok(6));
    });
}

#[test]
fn a_client_out_of_descriptors_is_told_so_not_that_no_descriptor_came() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-fds");
    let path = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::memfd("fds"), 16).unwrap();
    let listener = Listener::bind(&path).unwrap();
    let mut child = fork(|| {
        // Room for the socket and nothing more: fds below the limit are all taken but one.
        // SAFETY: F_GETFD only asks whether a descriptor is open.
        let free = (0..)
            .find(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0)
            .unwrap();
        let limit = libc::rlimit {
            rlim_cur: free as u64 + 1,
            rlim_max: free as u64 + 1,
        };
        // SAFETY: plain syscall on this process with a valid argument.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        match handoff::connect::<spsc::Channel<u64>>(&path, Duration::from_secs(5)) {
            Err(e @ Error::Io { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with("recvmsg on "), "{text}");
                assert!(
                    text.contains("MSG_CTRUNC") && text.contains("ulimit -n"),
                    "{text}"
                );
            }
            other => panic!("expected Io from recvmsg, got {:?}", other.err()),
        }
        0
    });
    // The server did its part.
    assert!(matches!(listener.accept(&chan), Ok(Outcome::Served(_))));
    expect_exit(&mut child, 0, "a client out of descriptors");
}

#[test]
fn a_timeout_of_duration_max_means_no_limit() {
    let _serial = common::serial();
    // Duration::MAX is past what an Instant can hold: it must mean "no deadline".
    served_over_abstract("handoff-forever", Duration::ZERO, |name| {
        handoff::connect_abstract(name, Duration::MAX)
    });
    let named = unique("forever-open");
    let created = spsc::Channel::<u64>::create(Backing::shm(&named), 16).unwrap();
    let opened = spsc::Channel::<u64>::builder()
        .open_timeout(Duration::MAX)
        .open(Backing::shm(&named))
        .unwrap();
    created.producer().unwrap().push(5).unwrap();
    let mut rx = opened.consumer().unwrap();
    assert_eq!(rx.pop_timeout(Duration::MAX), Ok(5));
}

#[test]
fn signals_during_a_handshake_neither_fail_it_nor_stretch_its_timeout() {
    let _serial = common::serial();
    // The server answers late: the client waits in a read with a timeout, which the kernel
    // never restarts after a signal handler, SA_RESTART or not (signal(7)).
    served_over_abstract("handoff-signals", Duration::from_millis(200), |name| {
        under_signals(Duration::from_millis(1), || {
            handoff::connect_abstract(name, WAIT)
        })
    });
    // A server that never answers: signals that keep coming do not stretch the timeout.
    let dir = ScratchDir::new("handoff-silent");
    let sock = dir.path("sock");
    let _silent = UnixListener::bind(&sock).unwrap();
    let started = std::time::Instant::now();
    let outcome = under_signals(Duration::from_millis(1), || {
        handoff::connect::<spsc::Channel<u64>>(&sock, Duration::from_millis(100))
    });
    assert!(
        matches!(&outcome, Err(Error::Handshake { reason }) if reason.contains("within the timeout")),
        "{:?}",
        outcome.err()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A server that is not shmlane's, or speaks another version: `reply` is all it sends.
fn fake_server(reply: Vec<u8>) -> (ScratchDir, std::path::PathBuf, std::thread::JoinHandle<()>) {
    let dir = ScratchDir::new("handoff-fake");
    let sock = dir.path("sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.write_all(&reply).unwrap();
    });
    (dir, sock, server)
}

#[test]
fn a_socket_that_is_not_a_shmlane_server_is_a_clear_error() {
    let _serial = common::serial();
    let (_dir, sock, server) = fake_server(b"220 smtp.example ESMTP ready\r\n".to_vec());
    match handoff::connect::<spsc::Channel<u64>>(&sock, WAIT) {
        Err(e @ Error::Handshake { .. }) => assert!(
            e.to_string().contains("not a shmlane handoff server"),
            "{e}"
        ),
        other => panic!("expected Handshake, got {:?}", other.err()),
    }
    server.join().unwrap();

    let mut future = vec![0u8; 256];
    future[..8].copy_from_slice(b"SHMLHAND");
    future[8..12].copy_from_slice(&7u32.to_ne_bytes());
    let (_dir, sock, server) = fake_server(future);
    assert!(matches!(
        handoff::connect::<spsc::Channel<u64>>(&sock, WAIT),
        Err(Error::Incompatible(m)) if m.field == "handoff protocol version" && m.found == "7"
    ));
    server.join().unwrap();

    // A server that accepts and says nothing: the timeout, not a hang.
    let dir = ScratchDir::new("handoff-mute");
    let sock = dir.path("sock");
    let _mute = UnixListener::bind(&sock).unwrap();
    let start = std::time::Instant::now();
    assert!(matches!(
        handoff::connect::<spsc::Channel<u64>>(&sock, Duration::from_millis(100)),
        Err(Error::Handshake { .. })
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
    // Nobody listening at all: a socket file whose server exited. (Bound in a child, so no
    // fork by a test running beside this one can inherit the listener and keep it open.)
    let stale = dir.path("stale");
    let bind_path = stale.clone();
    assert_eq!(
        fork(move || i32::from(UnixListener::bind(&bind_path).is_err())).wait(),
        0
    );
    match handoff::connect::<spsc::Channel<u64>>(&stale, WAIT) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not_stolen() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-stale");
    let sock = dir.path("sock");
    let child_sock = sock.clone();
    let mut server = fork(move || {
        let _listener = Listener::bind(&child_sock).unwrap();
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    });
    assert!(common::eventually(WAIT, || UnixStream::connect(&sock).is_ok()));
    assert!(matches!(
        Listener::bind(&sock),
        Err(Error::AlreadyExists {
            live: Some(true),
            ..
        })
    ));
    server.kill();
    assert!(sock.exists(), "a SIGKILLed server leaves its socket file");
    let listener = Listener::bind(&sock).unwrap();
    drop(listener);
    assert!(!sock.exists(), "a dropped listener removes its socket file");
    // A path that is not a socket is never removed.
    std::fs::write(&sock, b"data").unwrap();
    assert!(matches!(
        Listener::bind(&sock),
        Err(Error::AlreadyExists { live: None, .. })
    ));
    assert_eq!(std::fs::read(&sock).unwrap(), b"data");
}

#[test]
fn a_named_backing_can_be_served_too_if_the_client_accepts_it_unsealed() {
    let _serial = common::serial();
    let dir = ScratchDir::new("handoff-shm");
    let sock = dir.path("sock");
    let chan = spsc::Channel::<u64>::create(Backing::shm(unique("handoff-shm")), 16).unwrap();
    let listener = Listener::bind(&sock).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..2 {
                listener.accept(&chan).unwrap();
            }
        });
        // A shm_open object cannot be sealed: refused by default...
        assert!(matches!(
            handoff::connect::<spsc::Channel<u64>>(&sock, WAIT),
            Err(Error::Unsealed { .. })
        ));
        // ...and accepted by a client that opts in.
        let options = spsc::Channel::<u64>::builder().allow_unsealed(true);
        let received: spsc::Channel<u64> = handoff::connect_with(&sock, WAIT, options).unwrap();
        chan.producer().unwrap().push(3).unwrap();
        assert_eq!(received.consumer().unwrap().pop(), Ok(3));
    });
}
