//! Run by hand beside `consumer`, in two terminals:
//!
//! ```text
//! cargo run --release --example producer -- NAME [COUNT]
//! cargo run --release --example consumer -- NAME
//! ```
//!
//! Creates the channel /dev/shm/NAME, sends COUNT messages (default 1,000,000), waits until
//! a consumer has connected, and exits; the consumer then drains what is left and sees the
//! end of the stream.

mod common;

use std::time::{Duration, Instant};

use common::{millions, Msg, MSG_TAG};
use shmlane::{spsc, Backing, PeerState};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().ok_or("usage: producer NAME [COUNT]")?;
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let chan = spsc::Channel::<Msg>::builder()
        .capacity(4096)
        .type_tag(MSG_TAG)
        .reclaim_stale(true)
        .create(Backing::shm(&name))?;
    let mut tx = chan.producer()?;
    println!(
        "producer: sending {count} messages on /dev/shm/{name}; start the consumer with that name"
    );
    let start = Instant::now();
    for seq in 0..count {
        tx.push(Msg::new(seq))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "producer: sent {count} in {elapsed:.3} s ({} msgs/s)",
        millions(count as f64 / elapsed)
    );
    // Keep the name alive until a consumer has it open.
    while tx.consumer_state() == PeerState::NotConnected {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
