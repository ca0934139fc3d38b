//! The shared header at the start of every region, and its validation.
//!
//! ```text
//! offset  size  field                    written by
//!      0   64   Config (plain, Pod)      creator, before READY; never again
//!     64    4   init                     creator: READY, last, with Release
//!     68    4   producer_state           SPSC: NONE/ACTIVE/CLOSED; MPMC: EVER | live count
//!     72    4   consumer_state           likewise for the consumer role(s)
//!     76    4   express                  SPSC: 1 while the producer fills its lane
//!    128  128   producer Line            SPSC tail and lane (the last item pushed alone),
//!                                        and the consumer's ask for the lane /
//!                                        MPMC enqueue position; consumers park on its event
//!                                        word
//!    256  128   consumer Line            SPSC head / MPMC dequeue position; producers park
//!                                        on its event word
//!    384  128*R registry (MPMC)          one Entry per endpoint: role and claimed position
//!   data_offset (128-aligned)            the slots (MPMC: a sequence word, then the value)
//! ```
//!
//! Each writer owns a 128-byte group (x86 prefetches cache lines in pairs), so a push touches
//! only the producer's line and a pop only the consumer's. The role-state words sit in the
//! first group, which is otherwise read-only, so checking them on every operation is an L1
//! hit.

use crate::error::{Error, Mismatch};
use crate::sync::{AtomicU32, AtomicU64};

/// First eight bytes of every shmlane region.
pub(crate) const MAGIC: [u8; 8] = *b"SHMLANE\0";
/// Bumped on any change to this file's layout or to a ring's protocol that a peer built
/// for the previous one would misread. Not for a hint added in what was padding, and
/// that such a peer never reads nor writes: `Line::lane_wanted` (an older producer ignores
/// the ask, an older consumer never makes it; the lane's sequence alone says what it holds).
pub(crate) const LAYOUT_VERSION: u32 = 2;
/// `init` once the creator has written everything else.
pub(crate) const READY: u32 = 0x5245_4459; // "REDY"
/// Alignment unit of every writer-owned group and of the slot array.
pub(crate) const GROUP: usize = 128;
/// Byte length of [`Header`], the fixed part before the registry.
pub(crate) const HEADER_LEN: usize = 3 * GROUP;

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Spsc = 1,
    Mpmc = 2,
}

impl Kind {
    /// The smallest capacity the kind's algorithm works with. MPMC needs two slots: with
    /// one, the sequence that says "published at position p" equals "free for position
    /// p + 1", and a push would overwrite an unread item.
    fn min_capacity(self) -> u64 {
        match self {
            Kind::Spsc => 1,
            Kind::Mpmc => 2,
        }
    }

    fn name(raw: u32) -> String {
        match raw {
            1 => "SPSC".into(),
            2 => "MPMC".into(),
            other => format!("unknown kind {other}"),
        }
    }
}

/// Role state words (`producer_state`, `consumer_state`, registry entries).
pub(crate) mod role_state {
    /// No endpoint has claimed the role yet.
    pub(crate) const NONE: u32 = 0;
    /// An endpoint claimed it and has not closed it. With no live lock: it died.
    pub(crate) const ACTIVE: u32 = 1;
    /// The last endpoint closed it cleanly.
    pub(crate) const CLOSED: u32 = 2;
}

/// MPMC role counts (`producer_state`, `consumer_state`): bit 31 is set once any endpoint
/// of the role has registered, the low bits count registered endpoints that have not closed
/// (a crashed one still counts until its registry entry is taken over).
pub(crate) mod role_count {
    pub(crate) const EVER: u32 = 1 << 31;
    pub(crate) const COUNT: u32 = EVER - 1;
}

/// Registry entry states (0: never used).
pub(crate) mod entry_state {
    /// Held by a producer (live if its lock is held, else dead).
    pub(crate) const PRODUCER: u32 = 1;
    /// Held by a consumer.
    pub(crate) const CONSUMER: u32 = 2;
    /// Its last endpoint closed cleanly.
    pub(crate) const CLOSED: u32 = 3;
}

/// `Entry::claiming` when the endpoint has no claim recorded.
pub(crate) const IDLE: u64 = u64::MAX;
/// Most MPMC registry entries a region may have (bounds every scan of the registry).
pub(crate) const MAX_REGISTRY: u32 = 1024;

/// One MPMC endpoint's registry entry, a group of its own (it writes `claiming` on every
/// operation). `claiming` holds the position the endpoint is claiming or last claimed,
/// written *before* its claim, so that when it dies mid-operation the others can find what
/// it left unfinished ([`IDLE`] before its first claim and after a lost one).
#[repr(C, align(128))]
pub(crate) struct Entry {
    pub state: AtomicU32,
    pub claiming: AtomicU64,
}

/// An MPMC slot: the sequence word, then the value, so one Release store publishes it.
#[repr(C)]
pub(crate) struct MpmcSlot<T> {
    pub seq: AtomicU64,
    pub value: crate::sync::UnsafeCell<T>,
}

/// The static part of the header: written once by the creator before READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub(crate) struct Config {
    pub magic: [u8; 8],
    pub version: u32,
    pub kind: u32,
    pub capacity: u64,
    pub slot_size: u32,
    pub slot_align: u32,
    pub type_tag: u64,
    pub data_offset: u64,
    pub total_len: u64,
    pub registry_len: u32,
    pub _reserved: u32,
}

/// One writer's group: a position counter, and, on the group's second cache line, the event
/// word its peers park on and how many are parked there. Apart, because every push or pop
/// reads `waiters` while MPMC peers fight over `pos`: the read stays an L1 hit.
#[repr(C, align(128))]
pub(crate) struct Line {
    /// SPSC: tail (producer line) or head (consumer line); MPMC: the enqueue or dequeue
    /// position. Never wraps in practice (u64).
    pub pos: AtomicU64,
    /// SPSC producer line only: the last item pushed on its own, beside the tail.
    pub lane: Lane,
    /// Futex word: bumped by this line's owner after it makes progress, when `waiters` > 0.
    pub event: AtomicU32,
    /// Peers parked on `event`.
    pub waiters: AtomicU32,
    /// SPSC producer line only: 1 while the consumer waits for items one by one, asking the
    /// producer to copy each item it pushes on its own into the [`Lane`]. Written by the
    /// consumer when that changes, read by the producer on every push (beside `waiters`). A
    /// hint: the lane's sequence decides what the lane holds.
    pub lane_wanted: AtomicU32,
}

/// Words in a [`Lane`]: what fits in a cache line beside a position and the lane's sequence.
pub(crate) const LANE_WORDS: usize = 6;

/// A copy of the last item an SPSC producer pushed on its own, on the tail's cache line: a
/// consumer that finds exactly that one item reads it with the tail, so one cache line
/// crosses between the cores per message instead of two (the slot's and the tail's). A
/// sequence lock: `seq` is `2p + 1` while item `p` is copied in and `2p + 2` once it is
/// whole; anything else (0 when unused) matches no item.
#[repr(C)]
pub(crate) struct Lane {
    pub seq: AtomicU64,
    pub words: [AtomicU64; LANE_WORDS],
}

/// The fixed header. Lives at offset 0 of a mapping, or on the heap under loom and miri.
#[repr(C, align(128))]
pub(crate) struct Header {
    pub config: Config,
    pub init: AtomicU32,
    pub producer_state: AtomicU32,
    pub consumer_state: AtomicU32,
    /// SPSC: 1 while the producer copies each item it pushes on its own into its line's
    /// [`Lane`] (express pushes), so that a consumer looks there then, or when it asked for
    /// the copies itself (`Line::lane_wanted`). A hint: the lane's sequence decides what the
    /// lane holds.
    pub express: AtomicU32,
    pub producer: Line,
    pub consumer: Line,
}

#[cfg(not(shmlane_loom))]
mod pinned {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use static_assertions::const_assert_eq;

    const_assert_eq!(size_of::<Config>(), 64);
    const_assert_eq!(offset_of!(Config, version), 8);
    const_assert_eq!(offset_of!(Config, kind), 12);
    const_assert_eq!(offset_of!(Config, capacity), 16);
    const_assert_eq!(offset_of!(Config, slot_size), 24);
    const_assert_eq!(offset_of!(Config, slot_align), 28);
    const_assert_eq!(offset_of!(Config, type_tag), 32);
    const_assert_eq!(offset_of!(Config, data_offset), 40);
    const_assert_eq!(offset_of!(Config, total_len), 48);
    const_assert_eq!(offset_of!(Config, registry_len), 56);
    const_assert_eq!(offset_of!(Header, init), 64);
    const_assert_eq!(offset_of!(Header, producer_state), 68);
    const_assert_eq!(offset_of!(Header, consumer_state), 72);
    const_assert_eq!(offset_of!(Header, express), 76);
    const_assert_eq!(offset_of!(Header, producer), 128);
    const_assert_eq!(offset_of!(Header, consumer), 256);
    const_assert_eq!(offset_of!(Line, pos), 0);
    const_assert_eq!(offset_of!(Line, lane), 8);
    const_assert_eq!(size_of::<Lane>(), 8 + 8 * LANE_WORDS);
    const_assert_eq!(offset_of!(Line, event), 64);
    const_assert_eq!(offset_of!(Line, waiters), 68);
    const_assert_eq!(offset_of!(Line, lane_wanted), 72);
    const_assert_eq!(size_of::<Line>(), GROUP);
    const_assert_eq!(size_of::<Header>(), HEADER_LEN);
    const_assert_eq!(offset_of!(Entry, state), 0);
    const_assert_eq!(offset_of!(Entry, claiming), 8);
    const_assert_eq!(size_of::<Entry>(), GROUP);
    const_assert_eq!(offset_of!(MpmcSlot<u64>, value), 8);
    const_assert_eq!(size_of::<MpmcSlot<u64>>(), 16);
    const_assert_eq!(size_of::<MpmcSlot<[u8; 3]>>(), 16);
    const_assert_eq!(align_of::<Header>(), GROUP);
}

/// A stable 64-bit FNV-1a hash: the default type tag hashes `type_name::<T>()`.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The default type tag of `T`.
pub(crate) fn type_tag_of<T>() -> u64 {
    fnv1a(core::any::type_name::<T>().as_bytes())
}

/// Everything a process needs to know about a region, computed from its own `T` and
/// arguments and then checked against the header: after `open`, nothing is read back from
/// shared memory to decide where anything is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kind: Kind,
    pub capacity: u64,
    pub slot_size: u32,
    pub slot_align: u32,
    /// Bytes from one slot to the next (MPMC slots carry a sequence word).
    pub stride: u64,
    pub type_tag: u64,
    pub registry_len: u32,
    pub data_offset: u64,
    pub total_len: u64,
}

fn round_up(value: u64, to: u64) -> Option<u64> {
    Some(value.checked_add(to - 1)? & !(to - 1))
}

impl Geometry {
    /// The layout for `capacity` slots of `stride` bytes each. Errors name the argument that
    /// made it impossible.
    pub(crate) fn new(
        kind: Kind,
        capacity: u64,
        slot_size: usize,
        slot_align: usize,
        stride: usize,
        type_tag: u64,
        registry_len: u32,
    ) -> Result<Geometry, Error> {
        if capacity < kind.min_capacity() || !capacity.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "capacity must be a power of two and at least {}, got {capacity}",
                kind.min_capacity()
            )));
        }
        if slot_align > 4096 {
            return Err(Error::InvalidArgument(format!(
                "slot alignment {slot_align} exceeds the page size (4096)"
            )));
        }
        if registry_len > MAX_REGISTRY {
            return Err(Error::InvalidArgument(format!(
                "registry length {registry_len} exceeds {MAX_REGISTRY}"
            )));
        }
        let registry_bytes = u64::from(registry_len) * GROUP as u64;
        let data_offset = round_up(
            HEADER_LEN as u64 + registry_bytes,
            GROUP.max(slot_align) as u64,
        )
        .expect("small constants cannot overflow");
        let total_len = (stride as u64)
            .checked_mul(capacity)
            .and_then(|bytes| bytes.checked_add(data_offset))
            .filter(|&len| len <= isize::MAX as u64)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "capacity {capacity} x {stride}-byte slots does not fit in memory"
                ))
            })?;
        Ok(Geometry {
            kind,
            capacity,
            slot_size: slot_size as u32,
            slot_align: slot_align as u32,
            stride: stride as u64,
            type_tag,
            registry_len,
            data_offset,
            total_len,
        })
    }

    /// The header a creator writes for this geometry (`init` is published separately).
    pub(crate) fn config(&self) -> Config {
        Config {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: self.kind as u32,
            capacity: self.capacity,
            slot_size: self.slot_size,
            slot_align: self.slot_align,
            type_tag: self.type_tag,
            data_offset: self.data_offset,
            total_len: self.total_len,
            registry_len: self.registry_len,
            _reserved: 0,
        }
    }

    /// Checks a header read from a region against what this process expects, field by field,
    /// then returns the geometry with the region's capacity and registry size.
    /// `expected.capacity`/`registry_len` are ignored: they are the creator's choice.
    pub(crate) fn accept(
        expected: Expected,
        found: &Config,
        file_len: u64,
    ) -> Result<Geometry, Error> {
        let mismatch = |field: &'static str, expected: String, found: String| {
            Error::Incompatible(Mismatch {
                field,
                expected,
                found,
            })
        };
        if found.magic != MAGIC {
            return Err(mismatch(
                "magic",
                format!("{MAGIC:?}"),
                format!("{:?}", found.magic),
            ));
        }
        if found.version != LAYOUT_VERSION {
            return Err(mismatch(
                "layout version",
                LAYOUT_VERSION.to_string(),
                found.version.to_string(),
            ));
        }
        expected.check_identity(
            found.kind,
            found.slot_size,
            found.slot_align,
            found.type_tag,
        )?;
        if found.capacity < expected.kind.min_capacity() || !found.capacity.is_power_of_two() {
            return Err(mismatch(
                "capacity",
                format!("a power of two, at least {}", expected.kind.min_capacity()),
                found.capacity.to_string(),
            ));
        }
        let registry_ok = match expected.kind {
            Kind::Spsc => found.registry_len == 0,
            Kind::Mpmc => (1..=MAX_REGISTRY).contains(&found.registry_len),
        };
        if !registry_ok {
            let want = match expected.kind {
                Kind::Spsc => "0".to_string(),
                Kind::Mpmc => format!("1 to {MAX_REGISTRY}"),
            };
            return Err(mismatch(
                "registry length",
                want,
                found.registry_len.to_string(),
            ));
        }
        let geometry = Geometry::new(
            expected.kind,
            found.capacity,
            expected.slot_size,
            expected.slot_align,
            expected.stride,
            expected.type_tag,
            found.registry_len,
        )
        .map_err(|_| {
            mismatch(
                "capacity",
                "a size that fits in memory".into(),
                found.capacity.to_string(),
            )
        })?;
        if found.data_offset != geometry.data_offset {
            return Err(mismatch(
                "data offset",
                geometry.data_offset.to_string(),
                found.data_offset.to_string(),
            ));
        }
        if found.total_len != geometry.total_len {
            return Err(mismatch(
                "total length",
                geometry.total_len.to_string(),
                found.total_len.to_string(),
            ));
        }
        if file_len < geometry.total_len {
            return Err(mismatch(
                "file size",
                format!("at least {} bytes (as the header says)", geometry.total_len),
                format!("{file_len} bytes"),
            ));
        }
        Ok(geometry)
    }
}

/// What an opener knows about the region it wants, from its own `T`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected {
    pub kind: Kind,
    pub slot_size: usize,
    pub slot_align: usize,
    pub stride: usize,
    pub type_tag: u64,
}

impl Expected {
    /// Checks what a region (or a handoff server) says it holds against this process's `T`:
    /// the kind of channel, the slot size and alignment, and the type tag.
    pub(crate) fn check_identity(
        &self,
        kind: u32,
        slot_size: u32,
        slot_align: u32,
        type_tag: u64,
    ) -> Result<(), Error> {
        let mismatch = |field, expected: String, found: String| {
            Error::Incompatible(Mismatch {
                field,
                expected,
                found,
            })
        };
        if kind != self.kind as u32 {
            return Err(mismatch(
                "kind",
                Kind::name(self.kind as u32),
                Kind::name(kind),
            ));
        }
        if slot_size as usize != self.slot_size {
            return Err(mismatch(
                "slot size",
                self.slot_size.to_string(),
                slot_size.to_string(),
            ));
        }
        if slot_align as usize != self.slot_align {
            return Err(mismatch(
                "slot align",
                self.slot_align.to_string(),
                slot_align.to_string(),
            ));
        }
        if type_tag != self.type_tag {
            return Err(mismatch(
                "type tag",
                format!("{:#018x}", self.type_tag),
                format!("{type_tag:#018x}"),
            ));
        }
        Ok(())
    }
}

impl Header {
    /// A header on the heap (loom models, miri, unit tests): all counters zero, SPSC roles
    /// active, no MPMC endpoint registered yet.
    #[cfg(any(test, shmlane_loom))]
    pub(crate) fn new_heap(config: Config) -> Header {
        let state = if config.kind == Kind::Spsc as u32 {
            role_state::ACTIVE
        } else {
            0
        };
        Header {
            config,
            init: AtomicU32::new(READY),
            producer_state: AtomicU32::new(state),
            consumer_state: AtomicU32::new(state),
            express: AtomicU32::new(0),
            producer: Line::new(),
            consumer: Line::new(),
        }
    }
}

impl Entry {
    #[cfg(any(test, shmlane_loom))]
    pub(crate) fn new() -> Entry {
        // State 0: never used.
        Entry {
            state: AtomicU32::new(0),
            claiming: AtomicU64::new(IDLE),
        }
    }
}

impl Line {
    #[cfg(any(test, shmlane_loom))]
    fn new() -> Line {
        Line {
            pos: AtomicU64::new(0),
            lane: Lane {
                seq: AtomicU64::new(0),
                words: std::array::from_fn(|_| AtomicU64::new(0)),
            },
            event: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            lane_wanted: AtomicU32::new(0),
        }
    }
}

#[cfg(all(test, not(shmlane_loom)))]
mod tests {
    use super::*;

    fn expected_u64() -> Expected {
        Expected {
            kind: Kind::Spsc,
            slot_size: 8,
            slot_align: 8,
            stride: 8,
            type_tag: 7,
        }
    }

    fn geometry_u64(capacity: u64) -> Geometry {
        Geometry::new(Kind::Spsc, capacity, 8, 8, 8, 7, 0).unwrap()
    }

    #[test]
    fn geometry_places_slots_after_the_header() {
        let g = geometry_u64(1024);
        assert_eq!(g.data_offset, HEADER_LEN as u64);
        assert_eq!(g.total_len, HEADER_LEN as u64 + 8 * 1024);
    }

    #[test]
    fn capacity_must_be_a_power_of_two() {
        for bad in [0, 3, 1000] {
            assert!(matches!(
                Geometry::new(Kind::Spsc, bad, 8, 8, 8, 7, 0),
                Err(Error::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            Geometry::new(Kind::Spsc, 1 << 62, 8, 8, 8, 7, 0),
            Err(Error::InvalidArgument(_))
        ));
        // One slot works for SPSC, not for MPMC (found by the mpmc_ops fuzz target).
        assert!(Geometry::new(Kind::Spsc, 1, 8, 8, 8, 7, 0).is_ok());
        assert!(matches!(
            Geometry::new(Kind::Mpmc, 1, 8, 8, 16, 7, 1),
            Err(Error::InvalidArgument(m)) if m.contains("at least 2")
        ));
    }

    #[test]
    fn accept_names_the_mismatching_field() {
        let good = geometry_u64(16).config();
        let len = geometry_u64(16).total_len;
        assert_eq!(
            Geometry::accept(expected_u64(), &good, len).unwrap(),
            geometry_u64(16)
        );
        type Corrupt = fn(&mut Config);
        let cases: [(&str, Corrupt); 9] = [
            ("magic", |c| c.magic[0] = b'X'),
            ("layout version", |c| c.version = 99),
            ("kind", |c| c.kind = 2),
            ("slot size", |c| c.slot_size = 16),
            ("slot align", |c| c.slot_align = 4),
            ("type tag", |c| c.type_tag = 8),
            ("capacity", |c| c.capacity = 12),
            ("data offset", |c| c.data_offset = 0),
            ("total length", |c| c.total_len = 1 << 40),
        ];
        for (field, corrupt) in cases {
            let mut config = good;
            corrupt(&mut config);
            match Geometry::accept(expected_u64(), &config, len) {
                Err(Error::Incompatible(m)) => assert_eq!(m.field, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        match Geometry::accept(expected_u64(), &good, len - 1) {
            Err(Error::Incompatible(m)) => assert_eq!(m.field, "file size"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
