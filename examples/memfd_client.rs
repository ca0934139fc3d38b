//! Connects to `memfd_server`'s socket, receives the channel's fd (checked against the
//! message type), and consumes until the server's producer is gone. See `memfd_server`.
//!
//! `cargo run --release --example memfd_client -- /tmp/shmlane.sock`

mod common;

use std::time::Duration;

use common::{Msg, MSG_TAG};
use shmlane::{handoff, mpmc, PopError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: memfd_client SOCKET_PATH")?;
    let options = mpmc::Channel::<Msg>::builder().type_tag(MSG_TAG);
    let chan: mpmc::Channel<Msg> = handoff::connect_with(&path, Duration::from_secs(5), options)?;
    let mut rx = chan.consumer()?;
    println!(
        "memfd_client (pid {}): connected to {path}",
        std::process::id()
    );
    let mut received = 0u64;
    loop {
        match rx.pop() {
            Ok(msg) if msg.is(msg.seq) => received += 1,
            Ok(msg) => return Err(format!("damaged message {msg:?}").into()),
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("memfd_client: received {received} intact messages; the producer is gone");
    Ok(())
}
