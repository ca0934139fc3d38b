//! Typed, lock-free queues between processes on one host, through shared memory.
//!
//! shmlane lays SPSC rings of `T: bytemuck::Pod` values out in a `shm_open` object, a
//! `memfd`, or a file in any tmpfs or hugetlbfs directory, with zero-copy chunk reservation on
//! both sides, blocking operations that park on a futex only when they must, and failure
//! behaviour you can rely on: a crashed peer is detected, a full /dev/shm is an error at
//! create time (never a SIGBUS), a corrupt or hostile header is an error (never undefined
//! behaviour), and a region made for another type is refused at open.
//!
//! Start with [`spsc::Channel`] (one producer, one consumer) or [`mpmc::Channel`] (any number
//! of each), and [`Backing`].
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
// A loom build compiles only the file-free core; what the endpoints alone use is unused there.
#![cfg_attr(shmlane_loom, allow(dead_code))]

#[cfg(not(target_os = "linux"))]
compile_error!("shmlane supports Linux only (futex, memfd, OFD locks)");

mod error;
mod layout;
mod ring;
mod sync;
mod wait;

#[cfg(not(shmlane_loom))]
mod channel;
#[cfg(not(shmlane_loom))]
pub mod handoff;
#[cfg(shmlane_loom)]
#[doc(hidden)]
pub mod model;
#[cfg(not(shmlane_loom))]
pub mod mpmc;
#[cfg(not(shmlane_loom))]
mod region;
#[cfg(not(shmlane_loom))]
pub mod spsc;

#[cfg(not(shmlane_loom))]
pub use channel::{Builder, PeerState};
pub use error::{
    ChunkError, Corruption, Error, Mismatch, PopError, PushError, TryPopError, TryPushError,
};
#[cfg(not(shmlane_loom))]
pub use region::Backing;
pub use wait::WaitMode;
