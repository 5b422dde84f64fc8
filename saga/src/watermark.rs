//! Contiguous commit watermarks: which offset of a partition may be committed when messages
//! finish out of order.
//!
//! Every received message is registered with [`Watermarks::begin`] in the order the partition
//! delivered it and gets a [`Ticket`]. When its handling finished, [`Watermarks::complete`]
//! answers the offset to commit, if any: the offset after the last message of an unbroken run of
//! finished messages at the front of the partition. So an offset is committed only when it and
//! every message the partition delivered before it were handled; a message that is still being
//! handled, or was abandoned, holds back the watermark of its partition and nothing else.
//!
//! Entries are kept in delivery order, not sorted by offset: after a partition was rewound (a
//! re-created partition read again from its beginning, or a rebalance that resumed from the
//! committed offset) lower offsets follow higher ones, and their commits follow in the same
//! order, as the consumer expects (the latest commit of a partition wins).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A registered message: its partition and its place in the partition's delivery order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket<P> {
    partition: P,
    seq: u64,
}

impl<P> Ticket<P> {
    /// The partition the message came from.
    pub fn partition(&self) -> &P {
        &self.partition
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    offset: i64,
    incarnation: i64,
    done: bool,
}

/// Where a partition's watermark moved to: the next offset to read, and the broker incarnation
/// of the message it follows (the last of the finished run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    pub next_offset: i64,
    pub incarnation: i64,
}

/// The messages of every partition that were received and not yet passed by its watermark.
#[derive(Debug)]
pub struct Watermarks<P> {
    partitions: HashMap<P, VecDeque<Entry>>,
    next_seq: u64,
    tracked: usize,
}

impl<P> Default for Watermarks<P> {
    fn default() -> Self {
        Self { partitions: HashMap::new(), next_seq: 0, tracked: 0 }
    }
}

impl<P: Eq + Hash + Clone> Watermarks<P> {
    /// Registers the message at `offset` of `partition`, received after every message registered
    /// before it.
    pub fn begin(&mut self, partition: P, offset: i64) -> Ticket<P> {
        self.begin_in(partition, offset, 0)
    }

    /// [`Watermarks::begin`] for a message published in broker incarnation `incarnation`.
    pub fn begin_in(&mut self, partition: P, offset: i64, incarnation: i64) -> Ticket<P> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = Entry { seq, offset, incarnation, done: false };
        self.partitions.entry(partition.clone()).or_default().push_back(entry);
        self.tracked += 1;
        Ticket { partition, seq }
    }

    /// Marks the ticket's message handled. Answers the next offset to read that may now be
    /// committed for its partition (one past the last message of the finished run at the front),
    /// or `None` when the watermark did not move. Completing a ticket twice changes nothing.
    pub fn complete(&mut self, ticket: &Ticket<P>) -> Option<i64> {
        self.reach(ticket).map(|r| r.next_offset)
    }

    /// [`Watermarks::complete`], answering also the incarnation of the message the watermark now
    /// follows.
    pub fn reach(&mut self, ticket: &Ticket<P>) -> Option<Reached> {
        let entries = self.partitions.get_mut(&ticket.partition)?;
        let at = entries.binary_search_by_key(&ticket.seq, |e| e.seq).ok()?;
        entries[at].done = true;
        let mut commit = None;
        while entries.front().is_some_and(|e| e.done) {
            if let Some(e) = entries.pop_front() {
                commit = Some(Reached { next_offset: e.offset + 1, incarnation: e.incarnation });
                self.tracked -= 1;
            }
        }
        if entries.is_empty() {
            self.partitions.remove(&ticket.partition);
        }
        commit
    }

    /// Messages registered and not yet passed by their partition's watermark (handled ones
    /// waiting behind an unfinished one included): what the saga holds in memory for them.
    pub fn tracked(&self) -> usize {
        self.tracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_finished_in_order_is_committed_at_once() {
        let mut w = Watermarks::default();
        let a = w.begin(0, 10);
        assert_eq!(w.complete(&a), Some(11));
        assert_eq!(w.tracked(), 0);
    }

    #[test]
    fn a_later_message_finished_first_waits_for_the_earlier_one() {
        let mut w = Watermarks::default();
        let (a, b, c) = (w.begin(0, 10), w.begin(0, 11), w.begin(0, 12));
        assert_eq!(w.complete(&c), None, "10 and 11 are not handled yet");
        assert_eq!(w.complete(&b), None, "10 is not handled yet");
        assert_eq!(w.tracked(), 3);
        assert_eq!(w.complete(&a), Some(13), "the whole run 10..=12 is handled");
        assert_eq!(w.tracked(), 0);
    }

    #[test]
    fn the_watermark_stops_at_the_first_unfinished_message() {
        let mut w = Watermarks::default();
        let (a, b, _c, d) = (w.begin(0, 0), w.begin(0, 1), w.begin(0, 2), w.begin(0, 3));
        assert_eq!(w.complete(&b), None);
        assert_eq!(w.complete(&d), None);
        assert_eq!(w.complete(&a), Some(2), "2 is still open, so 3 is not committed");
        assert_eq!(w.tracked(), 2);
    }

    #[test]
    fn partitions_have_independent_watermarks() {
        let mut w = Watermarks::default();
        let (a0, a1) = (w.begin(0, 5), w.begin(1, 7));
        let b0 = w.begin(0, 6);
        assert_eq!(w.complete(&b0), None, "partition 0 waits for offset 5");
        assert_eq!(w.complete(&a1), Some(8), "partition 1 does not wait for partition 0");
        assert_eq!(w.complete(&a0), Some(7));
    }

    #[test]
    fn gaps_in_offsets_do_not_hold_the_watermark() {
        // compacted topics and transaction markers leave offsets that are never delivered
        let mut w = Watermarks::default();
        let (a, b) = (w.begin(0, 3), w.begin(0, 9));
        assert_eq!(w.complete(&a), Some(4));
        assert_eq!(w.complete(&b), Some(10));
    }

    #[test]
    fn completing_a_ticket_twice_or_an_unknown_one_changes_nothing() {
        let mut w = Watermarks::default();
        let (a, b) = (w.begin(0, 0), w.begin(0, 1));
        assert_eq!(w.complete(&a), Some(1));
        assert_eq!(w.complete(&a), None);
        assert_eq!(w.complete(&Ticket { partition: 4, seq: 99 }), None);
        assert_eq!(w.tracked(), 1);
        assert_eq!(w.complete(&b), Some(2));
    }

    #[test]
    fn an_abandoned_message_is_never_passed() {
        let mut w = Watermarks::default();
        let (_abandoned, b, c) = (w.begin(0, 0), w.begin(0, 1), w.begin(0, 2));
        assert_eq!(w.complete(&b), None);
        assert_eq!(w.complete(&c), None);
        assert_eq!(w.tracked(), 3);
    }

    #[test]
    fn a_rewound_partition_commits_in_delivery_order() {
        // 10 and 11 delivered, then the partition is read again from 0 (a re-created partition):
        // the old run commits first, then the new one takes over with its lower offsets
        let mut w = Watermarks::default();
        let (a, b) = (w.begin(0, 10), w.begin(0, 11));
        let (r0, r1) = (w.begin(0, 0), w.begin(0, 1));
        assert_eq!(w.complete(&r0), None, "the earlier delivery is unfinished");
        assert_eq!(w.complete(&a), Some(11));
        assert_eq!(w.complete(&b), Some(1), "11 and the redelivered 0 are handled");
        assert_eq!(w.complete(&r1), Some(2));
    }

    #[test]
    fn a_redelivered_offset_is_tracked_apart_from_its_first_delivery() {
        let mut w = Watermarks::default();
        let first = w.begin(0, 4);
        let again = w.begin(0, 4);
        assert_eq!(w.complete(&again), None, "the first delivery still runs");
        assert_eq!(w.complete(&first), Some(5));
        assert_eq!(w.tracked(), 0);
    }

    #[test]
    fn the_watermark_carries_the_incarnation_of_the_message_it_follows() {
        // a partition read in incarnation 1, then again from its beginning in incarnation 2
        let mut w = Watermarks::default();
        let (a, b) = (w.begin_in(0, 7, 1), w.begin_in(0, 0, 2));
        assert_eq!(w.reach(&b), None, "the earlier delivery is unfinished");
        assert_eq!(w.reach(&a), Some(Reached { next_offset: 1, incarnation: 2 }));
        let c = w.begin_in(0, 1, 2);
        assert_eq!(w.reach(&c), Some(Reached { next_offset: 2, incarnation: 2 }));
    }

    #[test]
    fn partition_of_a_ticket_is_the_one_it_was_registered_with() {
        let mut w = Watermarks::default();
        let t = w.begin(("ordo.orders", 2), 0);
        assert_eq!(t.partition(), &("ordo.orders", 2));
    }
}
