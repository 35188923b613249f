//! Cross-core routing: requests for keys another core owns travel there in
//! batches, and their replies travel back the same way.
//!
//! Between every ordered pair of cores there is one queue with exactly one
//! producer and one consumer. A core gathers, per loop turn, one batch per
//! destination (not one message per request), pushes it, and wakes the
//! destination through its ring (`IORING_OP_MSG_RING`) unless a wake-up is
//! already pending. The receiving core clears its pending flag *before* it
//! drains its queues, so a batch pushed during the drain either is seen by that
//! drain or triggers a new wake-up: no message waits for an unrelated event.

use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a forwarded item asks of the owning core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A whole request; its reply goes back.
    Request,
    /// A request whose reply the client does not want (`noreply`).
    NoReply,
    /// One key of a multi-key retrieval: its `VALUE` block goes back, no `END`.
    GetFragment,
    /// `flush_all` made on the sending core: the bytes are the flush moment
    /// (unix seconds, u32 little-endian); nothing goes back. It travels with
    /// the requests so that every core applies it after the ones the sender
    /// forwarded before it and before the ones after.
    Flush,
}

/// One request or reply inside a batch; its bytes are `bytes[start..end]`.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub conn: u64,
    pub seq: u64,
    /// Byte range in the batch. Not u32: one multi-get can carry more than
    /// 4 GiB of replies (the same large value asked for thousands of times).
    pub start: usize,
    pub end: usize,
    pub kind: ItemKind,
    /// The key's hash, for a forwarded request about one key: the owner
    /// prefetches a batch's keys with it before serving them.
    pub key_hash: Option<u64>,
}

/// Requests (or replies) from one core to another, gathered in one loop turn.
#[derive(Debug, Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub items: Vec<Item>,
}

impl Batch {
    /// Appends one item, whose bytes `write` appends.
    pub fn push(
        &mut self,
        conn: u64,
        seq: u64,
        kind: ItemKind,
        key_hash: Option<u64>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.add(conn, seq, start, kind, key_hash);
    }

    /// Records the bytes appended since `start` as one item (a reply).
    pub fn seal(&mut self, conn: u64, seq: u64, start: usize, kind: ItemKind) {
        self.add(conn, seq, start, kind, None);
    }

    fn add(&mut self, conn: u64, seq: u64, start: usize, kind: ItemKind, key_hash: Option<u64>) {
        self.items.push(Item {
            conn,
            seq,
            start,
            end: self.bytes.len(),
            kind,
            key_hash,
        });
    }

    pub fn item_bytes(&self, item: &Item) -> &[u8] {
        &self.bytes[item.start..item.end]
    }
}

pub enum Message {
    Forward(Batch),
    Reply(Batch),
}

/// A core's incoming queues, one per sending core.
pub struct Mailbox {
    from: Vec<SegQueue<Message>>,
    wake_pending: AtomicBool,
}

impl Mailbox {
    pub fn new(cores: usize) -> Mailbox {
        Mailbox {
            from: (0..cores).map(|_| SegQueue::new()).collect(),
            wake_pending: AtomicBool::new(false),
        }
    }

    /// Queues a message from core `from`; returns true if the caller must wake
    /// the owner of this mailbox.
    pub fn post(&self, from: usize, message: Message) -> bool {
        self.from[from].push(message);
        !self.wake_pending.swap(true, Ordering::SeqCst)
    }

    /// Takes every queued message, in order per sender.
    pub fn drain(&self, mut handle: impl FnMut(usize, Message)) {
        self.wake_pending.store(false, Ordering::SeqCst);
        for (from, queue) in self.from.iter().enumerate() {
            while let Some(message) = queue.pop() {
                handle(from, message);
            }
        }
    }
}

/// Spare batches a core keeps for reuse: enough for one per destination and
/// direction.
fn spare_batch_limit(cores: usize) -> usize {
    2 * cores
}

/// A spare batch keeps its buffers (bytes and item list) only up to this many
/// bytes, so one burst of large values or of many small replies does not stay
/// resident.
const SPARE_BATCH_BYTES: usize = 1 << 20;

/// The batches a core is building this turn, one per destination and direction.
///
/// Batches circulate: a core keeps the batches it received, emptied, and
/// builds its next ones in them. A fresh batch each turn would grow its
/// buffers from empty (a reallocation at every doubling) and be freed by the
/// core that received it, into another thread's allocator arena.
pub struct Outbox {
    pub forwards: Vec<Batch>,
    pub replies: Vec<Batch>,
    spare: Vec<Batch>,
}

impl Outbox {
    pub fn new(cores: usize) -> Outbox {
        Outbox {
            forwards: (0..cores).map(|_| Batch::default()).collect(),
            replies: (0..cores).map(|_| Batch::default()).collect(),
            spare: Vec::new(),
        }
    }

    /// Hands every non-empty batch to `post(destination, message)`, putting
    /// a spare one in its place.
    pub fn flush(&mut self, mut post: impl FnMut(usize, Message)) {
        let spare = &mut self.spare;
        let mut take =
            |batch: &mut Batch| std::mem::replace(batch, spare.pop().unwrap_or_default());
        for (to, batch) in self.forwards.iter_mut().enumerate() {
            if !batch.items.is_empty() {
                post(to, Message::Forward(take(batch)));
            }
        }
        for (to, batch) in self.replies.iter_mut().enumerate() {
            if !batch.items.is_empty() {
                post(to, Message::Reply(take(batch)));
            }
        }
    }

    /// Keeps a batch another core sent, once served, for this core's next ones.
    pub fn recycle(&mut self, mut batch: Batch) {
        let kept_bytes = batch.bytes.capacity() + batch.items.capacity() * size_of::<Item>();
        if self.spare.len() < spare_batch_limit(self.forwards.len())
            && kept_bytes <= SPARE_BATCH_BYTES
        {
            batch.bytes.clear();
            batch.items.clear();
            self.spare.push(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wake_per_drain() {
        let mailbox = Mailbox::new(2);
        assert!(mailbox.post(1, Message::Reply(Batch::default())));
        assert!(!mailbox.post(1, Message::Reply(Batch::default())));
        let mut seen = 0;
        mailbox.drain(|from, _| {
            assert_eq!(from, 1);
            seen += 1;
        });
        assert_eq!(seen, 2);
        // After a drain the next post must wake again.
        assert!(mailbox.post(0, Message::Reply(Batch::default())));
    }

    #[test]
    fn batches_keep_item_boundaries_and_order() {
        let mut outbox = Outbox::new(2);
        let batch = &mut outbox.forwards[1];
        batch.push(7, 1, ItemKind::GetFragment, Some(1), |b| {
            b.extend_from_slice(b"get a\r\n")
        });
        batch.push(7, 2, ItemKind::Request, Some(2), |b| {
            b.extend_from_slice(b"delete b\r\n")
        });
        let mut posted = Vec::new();
        outbox.flush(|to, m| posted.push((to, m)));
        assert_eq!(posted.len(), 1);
        let (to, Message::Forward(batch)) = &posted[0] else {
            panic!("expected a forward batch");
        };
        assert_eq!(*to, 1);
        let items: Vec<_> = batch.items.iter().map(|i| batch.item_bytes(i)).collect();
        assert_eq!(items, [&b"get a\r\n"[..], b"delete b\r\n"]);
        let hashes: Vec<_> = batch.items.iter().map(|i| i.key_hash).collect();
        assert_eq!(hashes, [Some(1), Some(2)]);
    }

    #[test]
    fn served_batches_are_reused_empty_and_kept_within_bounds() {
        let mut outbox = Outbox::new(2);
        let mut received = Batch::default();
        received.push(3, 4, ItemKind::Request, None, |b| {
            b.extend_from_slice(b"get k\r\n")
        });
        let capacity = received.bytes.capacity();
        outbox.recycle(received);
        outbox.forwards[1].push(5, 6, ItemKind::Request, None, |b| b.push(b'x'));
        outbox.flush(|_, _| {});
        // The spare took the posted batch's place, emptied.
        assert!(outbox.forwards[1].items.is_empty() && outbox.forwards[1].bytes.is_empty());
        assert_eq!(outbox.forwards[1].bytes.capacity(), capacity);

        let mut huge = Batch::default();
        huge.bytes.reserve(SPARE_BATCH_BYTES + 1);
        outbox.recycle(huge);
        let mut many = Batch::default();
        many.items
            .reserve(SPARE_BATCH_BYTES / size_of::<Item>() + 1);
        outbox.recycle(many);
        for _ in 0..10 {
            outbox.recycle(Batch::default());
        }
        assert_eq!(outbox.spare.len(), spare_batch_limit(2));
        assert!(outbox
            .spare
            .iter()
            .all(|b| b.bytes.capacity() <= SPARE_BATCH_BYTES));
        assert!(outbox
            .spare
            .iter()
            .all(|b| b.items.capacity() * size_of::<Item>() <= SPARE_BATCH_BYTES));
    }
}
