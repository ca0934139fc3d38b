//! The message the examples exchange, and how both sides check it.

#[allow(dead_code)] // only some examples use them
pub mod affinity;
#[allow(dead_code)] // only the latency example uses it
pub mod pingpong;

/// 16 bytes: a sequence number and a value derived from it, so the consumer can tell a
/// torn, duplicated or reordered message from a good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Msg {
    pub seq: u64,
    pub check: u64,
}

/// Both sides set this tag: the default tag hashes the type's path, which differs between
/// two binaries (`producer::common::Msg` vs `consumer::common::Msg`).
#[allow(dead_code)] // each example uses only some items
pub const MSG_TAG: u64 = 0x6d73_675f_7631; // "msg_v1"

#[allow(dead_code)] // each example uses only some items
impl Msg {
    pub fn new(seq: u64) -> Msg {
        Msg {
            seq,
            check: check_of(seq),
        }
    }

    /// Whether this is message `seq`, intact.
    pub fn is(&self, seq: u64) -> bool {
        self.seq == seq && self.check == check_of(seq)
    }
}

fn check_of(seq: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03
}

/// "12.3 M" for a rate.
#[allow(dead_code)] // each example uses only some helpers
pub fn millions(per_second: f64) -> String {
    format!("{:.1} M", per_second / 1e6)
}
