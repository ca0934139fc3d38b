//! Creates an anonymous, sealed memfd channel and serves its fd on a Unix socket to every
//! client of the same user; then sends a numbered message every millisecond. Start any
//! number of `memfd_client`s with the same socket path (each client consumes in turn: an
//! MPMC channel hands every message to exactly one of them).
//!
//! ```text
//! cargo run --release --example memfd_server -- /tmp/shmlane.sock [COUNT]
//! cargo run --release --example memfd_client -- /tmp/shmlane.sock
//! ```

mod common;

use std::time::Duration;

use common::{Msg, MSG_TAG};
use shmlane::handoff::{Listener, Outcome};
use shmlane::{mpmc, Backing};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: memfd_server SOCKET_PATH [COUNT]")?;
    let count: u64 = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let chan = mpmc::Channel::<Msg>::builder()
        .capacity(1024)
        .type_tag(MSG_TAG)
        .create(Backing::memfd("shmlane-example"))?;
    let listener = Listener::bind(&path)?;
    println!("memfd_server: serving on {path}; sending {count} messages");
    std::thread::scope(|s| {
        s.spawn(|| loop {
            match listener.accept(&chan) {
                Ok(Outcome::Served(peer)) => {
                    println!("memfd_server: handed the channel to pid {}", peer.pid)
                }
                Ok(Outcome::Refused(peer)) => println!("memfd_server: refused uid {}", peer.uid),
                Ok(Outcome::Vanished) => {}
                Err(e) => {
                    eprintln!("memfd_server: {e}");
                    return;
                }
            }
        });
        let mut tx = chan.producer()?;
        for seq in 0..count {
            tx.push(Msg::new(seq))?;
            std::thread::sleep(Duration::from_millis(1));
        }
        println!("memfd_server: sent {count} messages; stop with Ctrl-C");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}
