//! The SPSC producer's lane ([`Lane`]): the last item pushed on its own, copied beside the
//! tail so that a consumer that finds exactly that item reads it from the line it already
//! has. The producer fills it with express pushes on, or while the consumer asks for it (a
//! consumer that waits for each item: `Line::lane_wanted`). A sequence lock over atomic
//! words: the consumer checks the sequence before and after reading the words, and falls back
//! to the slot (which holds the same value) on any doubt.

use bytemuck::Pod;

use crate::layout::{Lane, LANE_WORDS};
use crate::sync::{
    fence,
    Ordering::{Acquire, Relaxed, Release},
};

/// A lane's words, as a consumer keeps them between finding an item and taking it.
pub(crate) type Words = [u64; LANE_WORDS];

/// Whether items of `T` travel in the lane: 1 to `8 * LANE_WORDS` bytes.
#[inline(always)]
pub(crate) const fn fits<T>() -> bool {
    let size = core::mem::size_of::<T>();
    size > 0 && size <= 8 * LANE_WORDS
}

/// Words that hold a `T`.
const fn words_of<T>() -> usize {
    core::mem::size_of::<T>().div_ceil(8)
}

/// The sequence of a lane that holds item `pos` whole.
#[inline(always)]
fn whole(pos: u64) -> u64 {
    2 * pos + 2
}

/// Copies `value`, item `pos`, into the lane. Only for `T` that [`fits`].
#[inline(always)]
pub(crate) fn put<T: Pod>(lane: &Lane, pos: u64, value: &T) {
    debug_assert!(fits::<T>());
    let mut words: Words = [0; LANE_WORDS];
    bytemuck::bytes_of_mut(&mut words)[..core::mem::size_of::<T>()]
        .copy_from_slice(bytemuck::bytes_of(value));
    // Odd: item `pos` is being copied in. Relaxed, then the Release fence: pairs with the
    // consumer's Acquire fence in `get`, so a consumer that reads any of the words below
    // also sees this store, or a later one, on its second look at the sequence.
    lane.seq.store(whole(pos) - 1, Relaxed);
    fence(Release);
    for (word, value) in lane.words.iter().zip(words).take(words_of::<T>()) {
        word.store(value, Relaxed);
    }
    // Release: pairs with the Acquire load in `get`: the words are whole before it says so.
    lane.seq.store(whole(pos), Release);
}

/// The words of item `pos`, if the lane holds that item whole. Only for `T` that [`fits`].
#[inline(always)]
pub(crate) fn get<T>(lane: &Lane, pos: u64) -> Option<Words> {
    debug_assert!(fits::<T>());
    // Acquire: pairs with the Release store in `put` that made the lane whole.
    if lane.seq.load(Acquire) != whole(pos) {
        return None;
    }
    let mut words: Words = [0; LANE_WORDS];
    for (word, lane_word) in words.iter_mut().zip(&lane.words).take(words_of::<T>()) {
        *word = lane_word.load(Relaxed);
    }
    // Acquire fence: pairs with the Release fence in `put`: had a later item's copy begun
    // writing any word read above, the load below sees its odd sequence (or a later one).
    fence(Acquire);
    (lane.seq.load(Relaxed) == whole(pos)).then_some(words)
}

/// Forgets whatever item the lane holds: a new producer calls it before its first push,
/// since one that died between copying item `p` in and publishing it left the lane saying
/// it holds `p`, and the new producer may write `p` by another path.
pub(crate) fn clear(lane: &Lane) {
    // Relaxed: the next tail this producer publishes (a Release store) carries it to the
    // consumer.
    lane.seq.store(0, Relaxed);
}

/// The `T` in `words`, which [`get`] returned. Only for `T` that [`fits`].
#[inline(always)]
pub(crate) fn value<T: Pod>(words: &Words) -> T {
    bytemuck::pod_read_unaligned(&bytemuck::bytes_of(words)[..core::mem::size_of::<T>()])
}

#[cfg(all(test, not(shmlane_loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU64;

    fn empty() -> Lane {
        Lane {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// `value` put as item `pos` and got back as that item.
    fn round_trip<T: Pod>(value: T, pos: u64) -> Option<T> {
        let lane = empty();
        put(&lane, pos, &value);
        get::<T>(&lane, pos).map(|words| super::value(&words))
    }

    #[test]
    fn items_of_1_to_48_bytes_fit() {
        assert!(!fits::<()>());
        assert!(fits::<u8>());
        assert!(fits::<[u64; LANE_WORDS]>());
        assert!(!fits::<[u8; 8 * LANE_WORDS + 1]>());
        assert!(!fits::<[u64; 8]>());
    }

    #[test]
    fn every_byte_comes_back() {
        assert_eq!(round_trip(0xabu8, 0), Some(0xab));
        assert_eq!(round_trip(7u32, 5), Some(7));
        assert_eq!(round_trip(u64::MAX - 1, 1 << 40), Some(u64::MAX - 1));
        let odd: [u8; 13] = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(round_trip(odd, 3), Some(odd));
        let full: [u64; LANE_WORDS] = std::array::from_fn(|i| !(i as u64));
        assert_eq!(round_trip(full, 9), Some(full));
    }

    #[test]
    fn only_the_item_it_holds_whole_comes_out() {
        let lane = empty();
        assert_eq!(get::<u64>(&lane, 0), None, "unused");
        put(&lane, 4, &40u64);
        assert_eq!(get::<u64>(&lane, 3), None);
        assert_eq!(get::<u64>(&lane, 5), None);
        assert_eq!(get::<u64>(&lane, 4).map(|w| value::<u64>(&w)), Some(40));
        put(&lane, 5, &50u64);
        assert_eq!(get::<u64>(&lane, 4), None, "overwritten by the next item");
        // Item 6 being copied in: nothing whole.
        lane.seq.store(whole(6) - 1, Relaxed);
        assert_eq!(get::<u64>(&lane, 5), None);
        assert_eq!(get::<u64>(&lane, 6), None);
        put(&lane, 6, &60u64);
        clear(&lane);
        assert_eq!(get::<u64>(&lane, 6), None, "cleared");
    }
}
