//! The other half of `producer` (see there): opens /dev/shm/NAME, waiting up to 30 s for
//! it to appear, and receives until the producer is gone, checking every message.
//!
//! `cargo run --release --example consumer -- NAME`

mod common;

use std::time::{Duration, Instant};

use common::{millions, Msg, MSG_TAG};
use shmlane::{spsc, Backing, Error, PopError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).ok_or("usage: consumer NAME")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let chan = loop {
        match spsc::Channel::<Msg>::builder()
            .type_tag(MSG_TAG)
            .open(Backing::shm(&name))
        {
            Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => break other?,
        }
    };
    let mut rx = chan.consumer()?;
    let start = Instant::now();
    let mut received = 0u64;
    let mut expected: Option<u64> = None;
    loop {
        match rx.pop() {
            Ok(msg) => {
                // A consumer that joins late starts wherever the stream is; from then on
                // every message must follow the one before.
                let seq = expected.unwrap_or(msg.seq);
                if !msg.is(seq) {
                    return Err(format!("expected message {seq}, got {msg:?}").into());
                }
                expected = Some(seq + 1);
                received += 1;
            }
            Err(PopError::Disconnected) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "consumer: received {received} messages in order in {elapsed:.3} s ({} msgs/s); producer {:?}",
        millions(received as f64 / elapsed),
        rx.producer_state()
    );
    Ok(())
}
