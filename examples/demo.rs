//! Two processes exchanging messages over shared memory: this process creates an SPSC
//! channel in /dev/shm, starts itself again as the consumer, sends N messages (default
//! 10 million) of a 16-byte struct, and both print what they measured. The consumer checks
//! every message: its sequence number and a checksum.
//!
//! `cargo run --release --example demo [-- --count N]`

mod common;

use std::process::{Command, ExitCode};
use std::time::Instant;

use common::{millions, Msg};
use shmlane::{spsc, Backing, PopError};

const CAPACITY: u64 = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--consumer") => consume(&args[2], args[3].parse().expect("count")),
        _ => {
            let count = match (args.get(1).map(String::as_str), args.get(2)) {
                (Some("--count"), Some(n)) => n.parse().expect("--count takes a number"),
                _ => 10_000_000,
            };
            produce(count)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn produce(count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("shmlane-demo-{}", std::process::id());
    let chan = spsc::Channel::<Msg>::builder()
        .capacity(CAPACITY)
        .populate(true)
        .create(Backing::shm(&name))?;
    let mut tx = chan.producer()?;
    println!(
        "shmlane demo: {count} messages of {} bytes through /dev/shm/{name} (capacity {CAPACITY})",
        std::mem::size_of::<Msg>()
    );
    let mut consumer = Command::new(std::env::current_exe()?)
        .args(["--consumer", &name, &count.to_string()])
        .spawn()?;

    let start = Instant::now();
    for seq in 0..count {
        tx.push(Msg::new(seq))
            .map_err(|e| format!("push {seq}: {e}"))?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "producer (pid {}): sent {count} in {elapsed:.3} s: {} msgs/s",
        std::process::id(),
        millions(count as f64 / elapsed)
    );
    drop(tx);
    let status = consumer.wait()?;
    if !status.success() {
        return Err(format!("the consumer failed: {status}").into());
    }
    println!("ok: every message arrived once, in order, intact");
    Ok(())
}

fn consume(name: &str, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let chan = spsc::Channel::<Msg>::open(Backing::shm(name))?;
    let mut rx = chan.consumer()?;
    // Time from the first message, so the figure does not include process start-up.
    let first = rx.pop()?;
    let start = Instant::now();
    if !first.is(0) {
        return Err(format!("message 0 arrived as {first:?}").into());
    }
    for seq in 1..count {
        match rx.pop() {
            Ok(msg) if msg.is(seq) => {}
            Ok(msg) => return Err(format!("expected message {seq}, got {msg:?}").into()),
            Err(e) => return Err(format!("after {seq} messages: {e}").into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    match rx.pop() {
        Err(PopError::Disconnected) => {}
        other => return Err(format!("expected the end of the stream, got {other:?}").into()),
    }
    println!(
        "consumer (pid {}): received and checked {count} in {elapsed:.3} s: {} msgs/s, {:.0} MB/s",
        std::process::id(),
        millions(count as f64 / elapsed),
        (count * std::mem::size_of::<Msg>() as u64) as f64 / elapsed / 1e6
    );
    Ok(())
}
