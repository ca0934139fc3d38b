//! Bounded multi-producer multi-consumer queue: Dmitry Vyukov's bounded MPMC queue
//! (<https://www.1024cores.net/home/lock-free-algorithms/queues/bounded-mpmc-queue>, the
//! algorithm of crossbeam's `ArrayQueue`), with u64 positions and a u64 sequence per slot.
//!
//! Slot `i` holds sequence `p` when it is free for the producer of position `p`, and `p + 1`
//! once that producer published its value; the consumer of position `p` frees it for the next
//! lap with `p + capacity`. Producers claim positions with a CAS on the enqueue position,
//! consumers on the dequeue position. A slot is published by one Release store of its
//! sequence, which sits in front of the value.
//!
//! # Dead endpoints
//! Processes die between claiming a position and finishing with its slot. So that the others
//! do not wait forever, every endpoint writes the position it is about to claim into its
//! registry entry *before* the CAS, withdraws it if the CAS is lost (the winner holds that
//! position), and otherwise leaves it there: once the slot is published (or freed) its
//! sequence has moved past the one a repair's CAS expects, so a finished claim is never
//! taken for an unfinished one, and the fast path saves a store. Whoever gets stuck (and
//! probes) scans the registry for dead endpoints (their liveness locks are gone) with a
//! claim left:
//! - a producer's claimed, unpublished slot becomes a tombstone (`TOMB`): the consumer that
//!   reaches it skips it and reports [`Dequeued::Skipped`]; nothing published is lost;
//! - a consumer's dequeued, unreleased slot is freed for producers; the value it was taking
//!   is lost with it.
//!
//! Every sequence and position read from shared memory is checked: a sequence that does not
//! belong to its slot, one more than a lap behind, a slot ahead of a position that does not
//! move, or a position that moves backwards is [`Corruption`]; a loop only goes round again
//! when a shared position has moved forward, so a hostile value cannot make it spin forever.

use crossbeam_utils::Backoff;

use super::{write_slot, RingMem, POS_LIMIT};
use crate::error::{Corruption, PopError, PushError, TryPopError, TryPushError};
use crate::layout::{entry_state, role_count, Entry, Line, MpmcSlot, IDLE};
use crate::sync::{
    AtomicU32,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use crate::wait::{self, WaitMode};
use std::time::Instant;

/// Where an MPMC ring lives.
pub(crate) type Mem<T> = RingMem<MpmcSlot<T>>;

/// Marks a slot sequence as a tombstone: its producer died before publishing.
pub(crate) const TOMB: u64 = 1 << 63;

/// What a dequeue attempt found.
pub(crate) enum Dequeued {
    /// This consumer claimed the published value at this position: [`Endpoint::take`] it.
    Claimed(u64),
    /// The tombstone of a dead producer's slot at this position, now skipped.
    Skipped(u64),
    /// The slot at this position, still the dequeue position, holds no value: nothing was
    /// claimed there (empty), or a producer claimed it and has not published it (yet, or
    /// ever); [`Endpoint::pending`] tells which.
    Short(u64),
}

/// A position this endpoint claimed, with its slot: what the fast paths hand from the claim
/// to [`Endpoint::put_at`] and [`Endpoint::take_at`], so that the slot's address is worked out
/// once (across the claim's CAS the compiler would load the ring's base and mask again).
pub(crate) struct Claimed<'a, T> {
    pos: u64,
    slot: &'a MpmcSlot<T>,
}

impl<T> Claimed<'_, T> {
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }
}

/// What a side's full claim loop (`Endpoint::claim_loop`) found.
enum Found {
    /// The CAS won `pos`, whose slot held sequence `raw` (for a consumer, possibly a
    /// tombstone).
    Won { pos: u64, raw: u64 },
    /// The slot at `pos`, still the side's position, is a step short of what the side waits
    /// for: a producer's ring is full; a consumer's is empty, or a claim is unpublished.
    Short(u64),
}

/// The count word of a role (`entry_state::PRODUCER` or `CONSUMER`).
fn count_word(mem: &Mem<impl Sized>, role: u32) -> &AtomicU32 {
    if role == entry_state::PRODUCER {
        &mem.header().producer_state
    } else {
        &mem.header().consumer_state
    }
}

/// One endpoint (producer or consumer) of an MPMC ring, holding registry entry `entry`.
pub(crate) struct Endpoint<T> {
    mem: Mem<T>,
    entry: usize,
    role: u32,
}

impl<T: Copy> Endpoint<T> {
    /// Takes over registry entry `entry` for `role`. The caller holds the entry's liveness
    /// lock, so any previous holder is gone: what it left unfinished is repaired first.
    /// `alive(i)` tells whether entry `i`'s holder lives (for this entry: false).
    pub(crate) fn register(
        mem: Mem<T>,
        entry: usize,
        role: u32,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Self {
        debug_assert!(role == entry_state::PRODUCER || role == entry_state::CONSUMER);
        // Checked here, once: `my_entry` relies on it (callers pass a claimed entry).
        assert!(entry < mem.registry().len(), "registry entry out of range");
        let endpoint = Endpoint { mem, entry, role };
        let mine = endpoint.my_entry();
        // Acquire: pairs with the Release store of the state by the previous holder.
        let previous = mine.state.load(Acquire);
        if previous == entry_state::PRODUCER || previous == entry_state::CONSUMER {
            // Died holding it: finish its claim, and stop counting it.
            endpoint.repair(&mut |i| i != entry && alive(i));
            count_word(&endpoint.mem, previous).fetch_sub(1, AcqRel);
        }
        mine.claiming.store(IDLE, Relaxed);
        // Release: pairs with the Acquire loads of the state in `repair` and `role_gone`.
        mine.state.store(role, Release);
        let count = count_word(&endpoint.mem, role);
        count.fetch_add(1, AcqRel);
        count.fetch_or(role_count::EVER, AcqRel);
        endpoint
    }

    /// Closes this endpoint's registration and wakes everyone parked, so they re-check.
    pub(crate) fn unregister(&self) {
        // Release: pairs with the Acquire loads in `role_gone`: everything this endpoint
        // published happens before a peer sees it gone.
        self.my_entry().state.store(entry_state::CLOSED, Release);
        count_word(&self.mem, self.role).fetch_sub(1, AcqRel);
        wait::notify(self.mem.producer_line());
        wait::notify(self.mem.consumer_line());
    }

    #[inline(always)]
    fn my_entry(&self) -> &Entry {
        // SAFETY: `register` checked `entry` against the registry's length, which is a
        // process-local copy that never changes.
        unsafe { self.mem.registry().get_unchecked(self.entry) }
    }

    /// This endpoint's side's position (enqueue for a producer, dequeue for a consumer), as
    /// a sign of progress for the probe clock: unchecked, Relaxed.
    pub(crate) fn side_pos(&self) -> u64 {
        let line = if self.role == entry_state::PRODUCER {
            self.mem.producer_line()
        } else {
            self.mem.consumer_line()
        };
        line.pos.load(Relaxed)
    }

    pub(crate) fn mem(&self) -> &Mem<T> {
        &self.mem
    }

    /// Checks a sequence read from the slot of `pos`: it must belong to that slot (free or
    /// published, possibly a tombstone) and be no more than a lap behind `pos`.
    fn check_seq(&self, pos: u64, raw: u64) -> Result<u64, Corruption> {
        let seq = raw & !TOMB;
        let mask = self.mem.capacity() - 1;
        let free_here = seq & mask == pos & mask;
        let published_here = seq & mask == (pos + 1) & mask;
        let belongs = if raw & TOMB != 0 {
            published_here
        } else {
            free_here || published_here
        };
        let min = pos.saturating_sub(self.mem.capacity());
        if !belongs || seq < min {
            return Err(Corruption {
                counter: "slot sequence",
                found: raw,
                min,
                max: u64::MAX,
            });
        }
        Ok(seq)
    }

    /// Checks the shared positions before an endpoint joins, so that a corrupt ring is
    /// refused at the door as SPSC's is: both below [`POS_LIMIT`], and no value dequeued
    /// that was never enqueued.
    pub(crate) fn check_positions(mem: &Mem<T>) -> Result<(), Corruption> {
        // Dequeue position first: it never passes the enqueue position, which can only have
        // grown by the time it is read (Acquire on both: pairs with the claim CASes).
        let dequeued = Self::position("dequeue position", mem.consumer_line().pos.load(Acquire))?;
        let enqueued = mem.producer_line().pos.load(Acquire);
        Self::moved("enqueue position", dequeued, enqueued).map(drop)
    }

    /// A position read from shared memory: below [`POS_LIMIT`].
    fn position(counter: &'static str, raw: u64) -> Result<u64, Corruption> {
        Self::moved(counter, 0, raw)
    }

    /// A shared position re-read after `old`: it may only have moved forward, and stays
    /// below [`POS_LIMIT`].
    fn moved(counter: &'static str, old: u64, now: u64) -> Result<u64, Corruption> {
        if now < old || now >= POS_LIMIT {
            return Err(Corruption {
                counter,
                found: now,
                min: old,
                max: POS_LIMIT - 1,
            });
        }
        Ok(now)
    }

    /// Pushes `value` if a slot is free: `Ok(false)` when full.
    #[cfg(test)]
    pub(crate) fn enqueue(&self, value: T) -> Result<bool, Corruption> {
        let pos = self.claim_slot()?;
        if let Some(pos) = pos {
            self.put(pos, value);
        }
        Ok(pos.is_some())
    }

    /// `claim_slot`'s common case, small enough to inline in `try_push`: the slot at the
    /// enqueue position is free and the first CAS wins. `None` if not; then nothing was
    /// claimed, no claim is left recorded, and `claim_slot` (the full loop) decides.
    #[inline(always)]
    fn claim_slot_at_once(&self) -> Option<Claimed<'_, T>> {
        // A free slot holds its position's own number.
        self.claim_at_once(self.mem.producer_line(), 0)
    }

    /// The uncontended claim of either side: the slot at `line`'s position holds that
    /// position plus `seq_ahead` (0: free, for a producer; 1: published, for a consumer),
    /// the claim is recorded and one CAS moves the position. `None` otherwise, with no
    /// claim left recorded: then the side's full loop decides.
    #[inline(always)]
    fn claim_at_once(&self, line: &Line, seq_ahead: u64) -> Option<Claimed<'_, T>> {
        // Acquire: as in the full loops (`claim_slot`, `dequeue`).
        let pos = line.pos.load(Acquire);
        // An impossible position is the full loop's to report.
        if pos >= POS_LIMIT {
            return None;
        }
        let slot = self.mem.slot(pos);
        // Acquire: as in the full loops.
        if slot.seq.load(Acquire) != pos + seq_ahead {
            return None;
        }
        let mine = self.my_entry();
        mine.claiming.store(pos, Relaxed);
        // Orderings: as in the full loops.
        if line
            .pos
            .compare_exchange(pos, pos + 1, AcqRel, Acquire)
            .is_err()
        {
            // Lost the position: withdraw the claim before the full loop records its own.
            // Relaxed: nothing was written under it.
            mine.claiming.store(IDLE, Relaxed);
            return None;
        }
        Some(Claimed { pos, slot })
    }

    /// Puts `value` in the slot of `pos`, which this producer claimed (`claim_slot`),
    /// publishes it and wakes a parked consumer.
    #[inline(always)]
    pub(crate) fn put(&self, pos: u64, value: T) {
        let slot = self.mem.slot(pos);
        self.put_at(Claimed { pos, slot }, value);
    }

    /// [`put`](Self::put) into a slot claimed at once. The claim stays recorded (module
    /// docs). The one place a pushed value is written: what comes before returns positions,
    /// so a large `T` is not copied once per layer.
    #[inline(always)]
    pub(crate) fn put_at(&self, Claimed { pos, slot }: Claimed<'_, T>, value: T) {
        // SAFETY: our CAS gave us position `pos`; its slot is free (sequence `pos`) and no
        // one else writes or reads it until we publish.
        slot.value.with_mut(|p| unsafe { write_slot(p, value) });
        // Release: pairs with the Acquire load in `dequeue`: the value is visible before the
        // sequence that says it is there.
        slot.seq.store(pos + 1, Release);
        wait::notify(self.mem.producer_line());
    }

    /// Runs a full claim loop, `run(&mut claimed)`, which sets `claimed` once it records a
    /// claim, and then withdraws that claim unless `keep` says the result still holds it.
    /// A closure, so that no early return (the `?` of a corruption) skips the withdrawal.
    fn withdrawing_claim<R>(
        &self,
        keep: impl FnOnce(&R) -> bool,
        run: impl FnOnce(&mut bool) -> R,
    ) -> R {
        let mut claimed = false;
        let result = run(&mut claimed);
        if claimed && !keep(&result) {
            // Relaxed: nothing was written under it.
            self.my_entry().claiming.store(IDLE, Relaxed);
        }
        result
    }

    /// Claims a free slot: its position, to [`put`](Self::put) a value in; `None` when full.
    /// The full loop (`claim_loop`).
    #[inline(never)]
    pub(crate) fn claim_slot(&self) -> Result<Option<u64>, Corruption> {
        // A claimed slot keeps its claim until `put`.
        let keep = |result: &Result<Option<u64>, Corruption>| matches!(result, Ok(Some(_)));
        self.withdrawing_claim(keep, |claimed| {
            let line = self.mem.producer_line();
            Ok(
                match self.claim_loop(line, "enqueue position", 0, claimed)? {
                    Found::Won { pos, .. } => Some(pos),
                    // The slot still holds the previous lap's value: full.
                    Found::Short(_) => None,
                },
            )
        })
    }

    /// The full claim loop of either side, `seq_ahead` as in `claim_at_once` (a consumer
    /// also claims a dead producer's tombstone): follows a stale position, spins a little
    /// longer after each lost CAS, checks any unexpected sequence. `Won` once its CAS moved
    /// the position past the slot, the claim recorded (`*claimed`); `Short` when the slot
    /// at the side's current position is a step short of what the side waits for: the
    /// previous lap's value for a producer, a free slot for a consumer.
    #[inline(always)]
    fn claim_loop(
        &self,
        line: &Line,
        counter: &'static str,
        seq_ahead: u64,
        claimed: &mut bool,
    ) -> Result<Found, Corruption> {
        let mine = self.my_entry();
        // A consumer looks through a tombstone's mark: the sequence under it is its own.
        let mark = if seq_ahead == 0 { 0 } else { TOMB };
        // Acquire (here, on every re-read and on a failed CAS): pairs with the CASes that
        // moved the position, so the slot's sequence read next is no older than the one they
        // saw; the lap check below relies on it (found by miri's weak memory).
        let mut pos = Self::position(counter, line.pos.load(Acquire))?;
        // Spins a little longer after each lost CAS, so contenders spread out (as crossbeam).
        let backoff = Backoff::new();
        loop {
            let expected = pos + seq_ahead;
            // Acquire: pairs with the Release store that made the slot what this side waits
            // for: `put` (or `bury`'s tombstone) for a consumer, so the value is visible;
            // `release` (or `free`) for a producer, so the old value's read happens before
            // our write.
            let raw = self.mem.slot(pos).seq.load(Acquire);
            // The expected sequence needs no checking; any other does (below).
            if raw & !mark == expected {
                // Record the claim before making it: if we die after the CAS, others find it.
                mine.claiming.store(pos, Relaxed);
                *claimed = true;
                // Release (of AcqRel): makes the claim record visible to whoever acquires the
                // new position (`repair`).
                match line
                    .pos
                    .compare_exchange_weak(pos, pos + 1, AcqRel, Acquire)
                {
                    Ok(_) => return Ok(Found::Won { pos, raw }),
                    Err(now) => {
                        pos = Self::moved(counter, pos, now)?;
                        backoff.spin();
                    }
                }
                continue;
            }
            // A step short: the previous lap's value (producer) or a free slot (consumer).
            let short = if seq_ahead == 0 {
                (pos + 1).wrapping_sub(self.mem.capacity())
            } else {
                pos
            };
            let behind = raw == short || self.check_seq(pos, raw)? < expected;
            let now = line.pos.load(Acquire);
            if now != pos {
                // Our position is stale: catch up.
                pos = Self::moved(counter, pos, now)?;
            } else if behind {
                return Ok(Found::Short(pos));
            } else {
                // A slot cannot be ahead of a position that has not moved.
                return Err(Corruption {
                    counter: "slot sequence",
                    found: raw,
                    min: expected,
                    max: expected,
                });
            }
        }
    }

    /// `dequeue`'s common case, small enough to inline in `try_pop`: the slot at the dequeue
    /// position holds a published value (no tombstone) and the first CAS wins; returns the
    /// claimed position, to [`take`](Self::take). `None` if not; then nothing was claimed,
    /// no claim is left recorded, and `dequeue` (the full loop) decides.
    #[inline(always)]
    pub(crate) fn dequeue_at_once(&self) -> Option<Claimed<'_, T>> {
        // A published slot holds its position's number plus one.
        self.claim_at_once(self.mem.consumer_line(), 1)
    }

    /// Takes the value at `pos`, which this consumer claimed (`Dequeued::Claimed`): reads it,
    /// then frees the slot.
    #[inline(always)]
    pub(crate) fn take(&self, pos: u64) -> T {
        let slot = self.mem.slot(pos);
        self.take_at(Claimed { pos, slot })
    }

    /// [`take`](Self::take) from a slot claimed at once. The one place a popped value is
    /// read: what comes before returns positions, so a large `T` is copied once, not once
    /// per layer.
    #[inline(always)]
    pub(crate) fn take_at(&self, Claimed { pos, slot }: Claimed<'_, T>) -> T {
        // SAFETY: our CAS gave us position `pos`, whose value was published (sequence
        // `pos + 1`); no producer writes it until we free the slot below.
        let value = slot.value.with(|p| unsafe { p.read() });
        self.release(slot, pos);
        value
    }

    /// Frees the slot of `pos`, which this consumer claimed and is done with, for the next
    /// lap, and wakes a parked producer. The claim stays recorded (module docs).
    #[inline(always)]
    fn release(&self, slot: &MpmcSlot<T>, pos: u64) {
        // Release: pairs with the Acquire load in `claim_slot`: our read happens before the
        // producer of the next lap overwrites the value.
        slot.seq.store(pos + self.mem.capacity(), Release);
        wait::notify(self.mem.consumer_line());
    }

    /// Claims the next value, if any. The full loop (`claim_loop`), then tombstones, empty
    /// and pending slots.
    #[inline(never)]
    pub(crate) fn dequeue(&self) -> Result<Dequeued, Corruption> {
        // A claimed value keeps its claim until `take`; a skipped tombstone's went with it.
        let keep = |result: &Result<Dequeued, Corruption>| {
            matches!(result, Ok(Dequeued::Claimed(_) | Dequeued::Skipped(_)))
        };
        self.withdrawing_claim(keep, |claimed| {
            let line = self.mem.consumer_line();
            Ok(
                match self.claim_loop(line, "dequeue position", 1, claimed)? {
                    Found::Won { pos, raw } if raw & TOMB == 0 => Dequeued::Claimed(pos),
                    Found::Won { pos, .. } => {
                        // A dead producer's tombstone: nothing to read.
                        self.release(self.mem.slot(pos), pos);
                        Dequeued::Skipped(pos)
                    }
                    Found::Short(pos) => Dequeued::Short(pos),
                },
            )
        })
    }

    /// Whether the slot at the dequeue position holds no value and was not buried (its
    /// sequence is the position's own: empty there, or claimed and not yet published)
    /// while producers are there. An impossible position is the full loop's to report.
    #[inline(always)]
    fn nothing_at_head(&self) -> bool {
        // Acquire: as in the claim loops.
        let pos = self.mem.consumer_line().pos.load(Acquire);
        pos < POS_LIMIT
            && self.mem.slot(pos).seq.load(Acquire) == pos
            && !self.role_gone(entry_state::PRODUCER, false, &mut |_| true)
    }

    /// Whether a producer claimed position `pos` (its slot is pending) rather than nobody
    /// (the ring is empty there). Reads the enqueue position, a line every push writes, so
    /// only where the answer matters.
    fn pending(&self, pos: u64) -> bool {
        // Acquire: pairs with the claim CAS in `claim_slot`.
        self.mem.producer_line().pos.load(Acquire) > pos
    }

    /// Finishes what dead endpoints left (see the module docs); `alive(i)` tells whether
    /// entry `i`'s holder lives (a lock probe). Returns whether anything was repaired.
    pub(crate) fn repair(&self, alive: &mut impl FnMut(usize) -> bool) -> bool {
        // Acquire, before reading any claim: pairs with the claim CASes, so every claim that
        // moved a position below these snapshots is visible in the registry.
        let enqueued = self.mem.producer_line().pos.load(Acquire);
        let dequeued = self.mem.consumer_line().pos.load(Acquire);
        // Claims are trusted below these; impossible ones are the claim loops' to report.
        if enqueued >= POS_LIMIT || dequeued >= POS_LIMIT {
            return false;
        }
        let registry = self.mem.registry();
        let mut repaired = false;
        for (i, entry) in registry.iter().enumerate() {
            // Acquire: pairs with the Release store of the state in `register`.
            let role = entry.state.load(Acquire);
            // Relaxed: the Acquire loads of the positions above made every claim below them
            // visible.
            let claimed = entry.claiming.load(Relaxed);
            // A claim made (below the position; IDLE never is) whose slot is still what the
            // claim found: a producer's not yet published, a consumer's not yet freed. Checked
            // before the lock probe, a system call: every endpoint's last claim stays recorded.
            let (made, unfinished_seq) = match role {
                entry_state::PRODUCER => (claimed < enqueued, claimed),
                entry_state::CONSUMER => (claimed < dequeued, claimed.wrapping_add(1)),
                _ => (false, 0),
            };
            // Acquire: pairs with the Release stores that publish or free a slot.
            if !made || self.mem.slot(claimed).seq.load(Acquire) != unfinished_seq || alive(i) {
                continue;
            }
            // A live endpoint of the same role recording the same position is the one whose
            // claim succeeded: the dead one's record is stale. Leave it.
            let contested = registry.iter().enumerate().any(|(j, other)| {
                j != i
                    && other.state.load(Acquire) == role
                    && other.claiming.load(Relaxed) == claimed
                    && alive(j)
            });
            if !contested {
                repaired |= if role == entry_state::PRODUCER {
                    self.bury(claimed)
                } else {
                    self.free(claimed)
                };
            }
        }
        repaired
    }

    /// Turns slot `pos`, claimed by a dead producer and never published, into a tombstone.
    fn bury(&self, pos: u64) -> bool {
        // AcqRel: the Release half pairs with the Acquire load of the sequence in `dequeue`.
        let buried = self
            .mem
            .slot(pos)
            .seq
            .compare_exchange(pos, (pos + 1) | TOMB, AcqRel, Relaxed)
            .is_ok();
        if buried {
            wait::notify(self.mem.producer_line());
        }
        buried
    }

    /// Frees slot `pos`, dequeued by a dead consumer and never released (its value is lost).
    fn free(&self, pos: u64) -> bool {
        let next_lap = pos + self.mem.capacity();
        // AcqRel: the Release half pairs with the Acquire load of the sequence in `claim_slot`.
        let freed = self
            .mem
            .slot(pos)
            .seq
            .compare_exchange(pos + 1, next_lap, AcqRel, Relaxed)
            .is_ok();
        if freed {
            wait::notify(self.mem.consumer_line());
        }
        freed
    }

    /// Whether every endpoint of `role` is gone: false if none ever registered; true if none
    /// is registered now; with `probe`, also true if every registered one is dead.
    pub(crate) fn role_gone(
        &self,
        role: u32,
        probe: bool,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> bool {
        // Acquire: pairs with the AcqRel decrement in `unregister`: a zero count comes after
        // everything those endpoints published.
        let word = count_word(&self.mem, role).load(Acquire);
        if word & role_count::EVER == 0 {
            return false;
        }
        if word & role_count::COUNT == 0 {
            return true;
        }
        probe
            && !self
                .mem
                .registry()
                .iter()
                .enumerate()
                .any(|(i, entry)| entry.state.load(Acquire) == role && alive(i))
    }

    /// `try_claim_slot`'s common case, small enough to inline: consumers are there and a
    /// slot is claimed at once. `None` if not (nothing was claimed): then `try_claim_slot`
    /// decides.
    #[inline(always)]
    pub(crate) fn claim_slot_if_easy(&self) -> Option<Claimed<'_, T>> {
        if self.role_gone(entry_state::CONSUMER, false, &mut |_| true) {
            return None;
        }
        self.claim_slot_at_once()
    }

    /// One push attempt: a claimed position to [`put`](Self::put) the value in, an error for
    /// good (the value to be added by the caller), or `None` when full with consumers still
    /// there.
    pub(crate) fn try_claim_slot(
        &self,
        probe: bool,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Option<Result<u64, TryPushError<()>>> {
        for _ in 0..2 {
            if self.role_gone(entry_state::CONSUMER, false, alive) {
                return Some(Err(TryPushError::Disconnected(())));
            }
            match self.claim_slot() {
                Ok(Some(pos)) => return Some(Ok(pos)),
                Err(c) => return Some(Err(TryPushError::Corrupt((), c))),
                Ok(None) if !probe => return None,
                Ok(None) => {
                    if self.role_gone(entry_state::CONSUMER, true, alive) {
                        return Some(Err(TryPushError::Disconnected(())));
                    }
                    // A dead consumer's slot may be what keeps the ring full.
                    if !self.repair(alive) {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// Claims a slot for a push, waiting for room as `mode` says until `deadline`.
    pub(crate) fn claim_slot_until(
        &self,
        mode: WaitMode,
        deadline: Option<Instant>,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Result<u64, PushError<()>> {
        wait::block_on(self.mem.consumer_line(), mode, deadline, |probe| {
            self.try_claim_slot(probe, alive)
        })
        // A full ring is None: at the end of the wait that is a timeout.
        .unwrap_or(Err(TryPushError::Full(())))
        .map_err(PushError::from)
    }

    /// One pop attempt: a claimed position to [`take`](Self::take), an error for good, or
    /// `None` when empty with producers still there. `Disconnected` only once the ring is
    /// drained.
    pub(crate) fn try_claim(
        &self,
        probe: bool,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Option<Result<u64, TryPopError>> {
        // The common miss, without the full loop: nothing published at the dequeue position
        // (its slot holds the position's own number), producers there, no probe asked for.
        if !probe && self.nothing_at_head() {
            return None;
        }
        // Each round either returns or made progress (a repair); three cover "gone, recheck,
        // repair, recheck".
        for _ in 0..3 {
            let pos = match self.dequeue() {
                Err(c) => return Some(Err(TryPopError::Corrupt(c))),
                Ok(Dequeued::Claimed(pos)) => return Some(Ok(pos)),
                Ok(Dequeued::Skipped(position)) => {
                    return Some(Err(TryPopError::ProducerDied { position }))
                }
                Ok(Dequeued::Short(pos)) => pos,
            };
            // Empty and pending alike are None while producers are there and no probe is
            // asked for: a consumer polling an empty ring then leaves the enqueue position's
            // line to the producers.
            if !probe && !self.role_gone(entry_state::PRODUCER, false, alive) {
                return None;
            }
            if !self.pending(pos) {
                if !self.role_gone(entry_state::PRODUCER, probe, alive) {
                    return None;
                }
                // Gone: what they published before going is visible now; one more look.
                match self.dequeue() {
                    Err(c) => return Some(Err(TryPopError::Corrupt(c))),
                    Ok(Dequeued::Claimed(pos)) => return Some(Ok(pos)),
                    Ok(Dequeued::Skipped(position)) => {
                        return Some(Err(TryPopError::ProducerDied { position }))
                    }
                    Ok(Dequeued::Short(pos)) if !self.pending(pos) => {
                        return Some(Err(TryPopError::Disconnected))
                    }
                    Ok(Dequeued::Short(_)) => {}
                }
            }
            // Pending: a producer is slow, or died holding the slot.
            if !(probe && self.repair(alive)) {
                return None;
            }
        }
        None
    }

    /// Pushes, waiting for room as `mode` says until `deadline`: the model's and the tests'
    /// blocking push, made of the pieces the public one uses after its fast path.
    #[cfg(any(test, shmlane_loom))]
    pub(crate) fn push_until(
        &self,
        value: T,
        mode: WaitMode,
        deadline: Option<Instant>,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Result<(), PushError<T>> {
        match self.claim_slot_until(mode, deadline, alive) {
            Ok(pos) => {
                self.put(pos, value);
                Ok(())
            }
            Err(e) => Err(e.with(value)),
        }
    }

    /// Pops, waiting for a value as `mode` says until `deadline`: the model's and the tests'
    /// blocking pop, made of the pieces the public one uses after its fast path.
    #[cfg(any(test, shmlane_loom))]
    pub(crate) fn pop_until(
        &self,
        mode: WaitMode,
        deadline: Option<Instant>,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Result<T, PopError> {
        let pos = self.claim_until(mode, deadline, alive)?;
        Ok(self.take(pos))
    }

    /// Claims a value for a pop, waiting as `mode` says until `deadline`: its position, to
    /// [`take`](Self::take).
    pub(crate) fn claim_until(
        &self,
        mode: WaitMode,
        deadline: Option<Instant>,
        alive: &mut impl FnMut(usize) -> bool,
    ) -> Result<u64, PopError> {
        wait::block_on(self.mem.producer_line(), mode, deadline, |probe| {
            self.try_claim(probe, alive)
        })
        // `try_claim` reports an empty ring as None: at the end of the wait that is a timeout.
        .unwrap_or(Err(TryPopError::Empty))
        .map_err(PopError::from)
    }
}

/// Makes every slot free for the first lap (slot `i` holds sequence `i`): the creator's
/// job, before it publishes the region.
pub(crate) fn init<T>(mem: &Mem<T>) {
    for i in 0..mem.capacity() {
        // Relaxed: the creator's Release store of READY publishes these.
        mem.slot(i).seq.store(i, Relaxed);
    }
}

/// A ring of `capacity` (a power of two) free slots and `registry_len` entries on the heap.
#[cfg(any(test, shmlane_loom))]
pub(crate) fn heap<T: bytemuck::Zeroable + Send + 'static>(
    capacity: u64,
    registry_len: u32,
) -> Mem<T> {
    let geometry = crate::layout::Geometry::new(
        crate::layout::Kind::Mpmc,
        capacity,
        core::mem::size_of::<T>(),
        core::mem::align_of::<T>(),
        core::mem::size_of::<MpmcSlot<T>>(),
        crate::layout::type_tag_of::<T>(),
        registry_len,
    )
    .expect("heap rings are built with a power-of-two capacity");
    RingMem::heap(&geometry, |i| MpmcSlot {
        seq: crate::sync::AtomicU64::new(i),
        value: crate::sync::UnsafeCell::new(T::zeroed()),
    })
}

#[cfg(all(test, not(shmlane_loom)))]
mod tests {
    use super::*;

    fn endpoints(capacity: u64) -> (Endpoint<u64>, Endpoint<u64>) {
        let mem = heap::<u64>(capacity, 4);
        let p = Endpoint::register(mem.clone(), 0, entry_state::PRODUCER, &mut |_| true);
        let c = Endpoint::register(mem, 1, entry_state::CONSUMER, &mut |_| true);
        (p, c)
    }

    /// What `c` dequeues: the value, if it claimed one.
    fn value(c: &Endpoint<u64>) -> Option<u64> {
        match c.dequeue().unwrap() {
            Dequeued::Claimed(pos) => Some(c.take(pos)),
            _ => None,
        }
    }

    #[test]
    fn fifo_across_laps() {
        let (p, c) = endpoints(4);
        for lap in 0..5u64 {
            for i in 0..4 {
                assert_eq!(p.enqueue(lap * 10 + i), Ok(true));
            }
            assert_eq!(p.enqueue(99), Ok(false));
            for i in 0..4 {
                assert_eq!(value(&c), Some(lap * 10 + i));
            }
            assert!(matches!(c.dequeue(), Ok(Dequeued::Short(pos)) if pos == lap * 4 + 4));
            assert!(!c.pending(lap * 4 + 4), "nothing claimed there: empty");
        }
    }

    #[test]
    fn a_dead_producers_claim_becomes_a_skipped_tombstone() {
        let (p, c) = endpoints(4);
        let mem = p.mem().clone();
        // A second producer that claims position 1 and dies before publishing.
        let dead = Endpoint::<u64>::register(mem.clone(), 2, entry_state::PRODUCER, &mut |_| true);
        p.enqueue(10).unwrap();
        dead.my_entry().claiming.store(1, Relaxed);
        mem.producer_line().pos.store(2, Relaxed);
        p.enqueue(12).unwrap();
        assert_eq!(value(&c), Some(10));
        assert!(matches!(c.dequeue(), Ok(Dequeued::Short(1))));
        assert!(c.pending(1), "claimed by the dead producer");
        // While it lives, nothing is repaired.
        assert!(!c.repair(&mut |_| true));
        assert!(c.repair(&mut |i| i != 2));
        assert!(matches!(c.dequeue(), Ok(Dequeued::Skipped(1))));
        assert_eq!(value(&c), Some(12));
    }

    #[test]
    fn finished_claims_stay_recorded_and_are_never_repaired() {
        let (p, c) = endpoints(4);
        p.enqueue(1).unwrap();
        p.enqueue(2).unwrap();
        assert_eq!(value(&c), Some(1));
        // The last claims stay recorded: the producer's position 1, the consumer's 0.
        assert_eq!(p.my_entry().claiming.load(Relaxed), 1);
        assert_eq!(c.my_entry().claiming.load(Relaxed), 0);
        // Were both dead, neither left anything to finish, and no lock is probed to see.
        let mut probes = 0;
        let mut dead = |_| {
            probes += 1;
            false
        };
        assert!(!p.repair(&mut dead));
        assert_eq!(probes, 0);
        // The published item is delivered, not buried.
        assert_eq!(value(&c), Some(2));
    }

    /// `try_claim` without a probe, as a polling consumer calls it: the short way for an
    /// empty or pending head gives what the full loop gives, and everything else still
    /// reaches the full loop.
    #[test]
    fn a_miss_without_a_probe_answers_as_the_full_loop_does() {
        let (p, c) = endpoints(4);
        let live = &mut |_| true;
        assert!(c.try_claim(false, live).is_none(), "empty");
        // A claim not yet published: pending, nothing to take yet.
        let pos = p.claim_slot().unwrap().unwrap();
        assert!(c.try_claim(false, live).is_none(), "pending");
        p.put(pos, 7);
        assert!(matches!(c.try_claim(false, live), Some(Ok(0))));
        assert_eq!(c.take(0), 7);
        // A tombstone at the head is reported, not taken for an empty slot.
        c.mem().slot(1).seq.store(2 | TOMB, Relaxed);
        c.mem().producer_line().pos.store(2, Relaxed);
        assert!(matches!(
            c.try_claim(false, live),
            Some(Err(TryPopError::ProducerDied { position: 1 }))
        ));
        // Producers gone and the ring drained.
        p.unregister();
        assert!(matches!(
            c.try_claim(false, live),
            Some(Err(TryPopError::Disconnected))
        ));
    }

    #[test]
    fn a_dead_consumers_slot_is_freed_for_producers() {
        let (p, c) = endpoints(2);
        let mem = p.mem().clone();
        let dead = Endpoint::<u64>::register(mem.clone(), 3, entry_state::CONSUMER, &mut |_| true);
        p.enqueue(1).unwrap();
        p.enqueue(2).unwrap();
        // The dead consumer took position 0 and never released the slot.
        dead.my_entry().claiming.store(0, Relaxed);
        mem.consumer_line().pos.store(1, Relaxed);
        assert_eq!(value(&c), Some(2));
        assert_eq!(p.enqueue(3), Ok(false), "slot 0 is still held");
        assert!(p.repair(&mut |i| i != 3));
        assert_eq!(p.enqueue(3), Ok(true));
        assert_eq!(value(&c), Some(3));
    }

    #[test]
    fn impossible_sequences_are_corruption_not_spins() {
        let (p, c) = endpoints(4);
        // A sequence that belongs to another slot.
        p.mem().slot(0).seq.store(7, Relaxed);
        assert!(matches!(
            p.enqueue(1),
            Err(Corruption {
                counter: "slot sequence",
                found: 7,
                ..
            })
        ));
        // A slot ahead of a position that does not move.
        p.mem().slot(0).seq.store(4, Relaxed);
        assert!(matches!(
            p.enqueue(1),
            Err(Corruption {
                counter: "slot sequence",
                found: 4,
                ..
            })
        ));
        assert!(matches!(
            c.dequeue(),
            Err(Corruption {
                counter: "slot sequence",
                found: 4,
                ..
            })
        ));
        // More than a lap behind.
        p.mem().producer_line().pos.store(16, Relaxed);
        p.mem().slot(0).seq.store(8, Relaxed);
        assert!(matches!(
            p.enqueue(1),
            Err(Corruption {
                counter: "slot sequence",
                found: 8,
                ..
            })
        ));
    }

    /// Two producer and two consumer threads: every item taken exactly once, each producer's
    /// items in order as each consumer sees them, `Disconnected` once the producers closed
    /// and the ring is drained. Small enough for miri.
    #[test]
    fn threads_take_every_item_exactly_once_and_in_order_per_producer() {
        const PER_PRODUCER: u64 = if cfg!(miri) { 60 } else { 50_000 };
        let mem = heap::<u64>(4, 4);
        let endpoint = |entry, role| Endpoint::register(mem.clone(), entry, role, &mut |_| true);
        let producers = [0, 1].map(|i| endpoint(i, entry_state::PRODUCER));
        let consumers = [2, 3].map(|i| endpoint(i, entry_state::CONSUMER));
        let taken: Vec<Vec<u64>> = std::thread::scope(|s| {
            for (id, p) in producers.into_iter().enumerate() {
                s.spawn(move || {
                    for seq in 0..PER_PRODUCER {
                        let item = (id as u64) << 32 | seq;
                        p.push_until(item, WaitMode::Adaptive, None, &mut |_| true)
                            .unwrap();
                    }
                    p.unregister();
                });
            }
            let handles: Vec<_> = consumers
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut got = Vec::new();
                        loop {
                            match c.pop_until(WaitMode::Adaptive, None, &mut |_| true) {
                                Ok(item) => got.push(item),
                                Err(PopError::Disconnected) => return got,
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for got in &taken {
            for id in 0..2u64 {
                let seqs: Vec<u64> = got
                    .iter()
                    .filter(|&&v| v >> 32 == id)
                    .map(|&v| v & 0xffff_ffff)
                    .collect();
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "producer {id} out of order"
                );
            }
        }
        let mut all: Vec<u64> = taken.concat();
        all.sort_unstable();
        let expected: Vec<u64> = (0..2u64)
            .flat_map(|id| (0..PER_PRODUCER).map(move |seq| id << 32 | seq))
            .collect();
        assert_eq!(all, expected, "an item lost or taken twice");
    }
}
