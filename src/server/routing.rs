//! Cross-core routing: requests for keys another core owns travel there in
//! batches, and their replies travel back the same way.
//!
//! Between every ordered pair of cores there is one queue with exactly one
//! producer and one consumer. A core gathers, per loop turn, one batch per
//! destination (not one message per request), and pushes it. It wakes the
//! destination through its ring (`IORING_OP_MSG_RING`) only if that core may
//! be blocked waiting for completions and no wake-up is pending already: a
//! core in the middle of a turn drains its queues at the start of its next
//! one anyway, and a wake-up costs both cores a trip through the kernel.
//!
//! No message waits for an unrelated event. A core about to block first says
//! so ([`Mailbox::prepare_to_wait`]) and then looks at its queues; a sender
//! first pushes and then looks at that flag. With a full fence between each
//! one's write and read, either the sender sees the flag (and wakes the
//! core) or the core sees the batch (and does not block). The receiving core
//! clears its pending flag *before* it drains, so a batch pushed during the
//! drain is seen by it or by the next look before blocking.

use crate::protocol::GetKind;
use crossbeam_queue::SegQueue;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// What a forwarded item asks of the owning core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// A whole request; its reply goes back.
    Request,
    /// A request whose reply the client does not want (`noreply`).
    NoReply,
    /// One key of a retrieval (`get`, `gets`, `gat`, `gats`): its `VALUE`
    /// block goes back, no `END`. The bytes are the key, after the new
    /// exptime for a touch ([`encode_get_fragment`]): the owner serves it
    /// without parsing a request line.
    GetFragment { with_cas: bool, touch: bool },
    /// The old value of a key whose `set` was refused as too large: the bytes
    /// are the key; nothing goes back, and no `delete` is counted (memcached
    /// unlinks it without one).
    Unlink,
    /// `flush_all` made on the sending core: the bytes are the flush moment
    /// (unix seconds, u32 little-endian); nothing goes back. It travels with
    /// the requests so that every core applies it after the ones the sender
    /// forwarded before it and before the ones after.
    Flush,
}

impl ItemKind {
    /// Whether the owner sends a reply back for an item of this kind.
    pub fn answered(self) -> bool {
        !matches!(self, ItemKind::NoReply | ItemKind::Flush | ItemKind::Unlink)
    }

    /// The kind of the item that carries one key of this retrieval.
    pub fn get_fragment(kind: GetKind) -> ItemKind {
        ItemKind::GetFragment {
            with_cas: kind.with_cas,
            touch: kind.touch.is_some(),
        }
    }
}

/// Writes one key of a retrieval as a [`ItemKind::GetFragment`] item's bytes:
/// the new exptime first for a touch (8 bytes, little-endian), then the key.
pub fn encode_get_fragment(out: &mut Vec<u8>, kind: GetKind, key: &[u8]) {
    if let Some(exptime) = kind.touch {
        out.extend_from_slice(&exptime.to_le_bytes());
    }
    out.extend_from_slice(key);
}

/// The retrieval and the key of a [`ItemKind::GetFragment`] item's bytes.
pub fn decode_get_fragment(with_cas: bool, touch: bool, bytes: &[u8]) -> (GetKind, &[u8]) {
    let (touch, key) = if touch {
        let (exptime, key) = bytes.split_at(EXPTIME_BYTES);
        let exptime = exptime.try_into().map(i64::from_le_bytes);
        (Some(exptime.expect("8 bytes")), key)
    } else {
        (None, bytes)
    };
    (GetKind { with_cas, touch }, key)
}

const EXPTIME_BYTES: usize = std::mem::size_of::<i64>();

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

    /// Gives this empty batch the room `other` uses, up to what a spare batch
    /// may keep ([`SPARE_BATCH_BYTES`]: one burst must not stay resident). A
    /// buffer too small is replaced, not grown: growing would copy its whole
    /// capacity.
    fn make_room_like(&mut self, other: &Batch) {
        debug_assert!(self.items.is_empty() && self.bytes.is_empty());
        let bytes = other.bytes.len().min(SPARE_BATCH_BYTES / 2);
        let items = other
            .items
            .len()
            .min(SPARE_BATCH_BYTES / 2 / size_of::<Item>());
        if self.bytes.capacity() < bytes {
            self.bytes = Vec::with_capacity(bytes);
        }
        if self.items.capacity() < items {
            self.items = Vec::with_capacity(items);
        }
    }

    pub fn item_bytes(&self, item: &Item) -> &[u8] {
        &self.bytes[item.start..item.end]
    }
}

pub enum Message {
    Forward(Batch),
    Reply(Batch),
}

/// A core's incoming queues, one per sending core. Aligned to its own cache
/// lines (two, for the adjacent-line prefetcher): its owner writes `waiting`
/// twice a turn, and a neighbour's mailbox in the same line would be
/// invalidated each time.
#[repr(align(128))]
pub struct Mailbox {
    from: Vec<SegQueue<Message>>,
    wake_pending: AtomicBool,
    /// Set while the owner may be blocked waiting for completions: only then
    /// does a post wake it.
    waiting: AtomicBool,
}

impl Mailbox {
    pub fn new(cores: usize) -> Mailbox {
        Mailbox {
            from: (0..cores).map(|_| SegQueue::new()).collect(),
            wake_pending: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        }
    }

    /// Queues a message from core `from`; returns true if the caller must wake
    /// the owner of this mailbox.
    pub fn post(&self, from: usize, message: Message) -> bool {
        self.from[from].push(message);
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) && !self.wake_pending.swap(true, Ordering::SeqCst)
    }

    /// The owner is about to wait for completions: true if it may block, false
    /// if messages are queued already (it should serve them instead).
    pub fn prepare_to_wait(&self) -> bool {
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        // Sound because `SegQueue::push` advances the tail index with a SeqCst
        // read-modify-write before the sender's fence, and `is_empty` reads
        // it (crossbeam-queue 0.3); a queue that hid a push from `is_empty`
        // would need a count of our own here.
        if self.has_mail() {
            self.waiting.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Whether any message is queued (a look, without taking it).
    pub fn has_mail(&self) -> bool {
        !self.from.iter().all(|queue| queue.is_empty())
    }

    /// The owner is running a turn: posts need not wake it.
    pub fn stop_waiting(&self) {
        self.waiting.store(false, Ordering::Relaxed);
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
    /// a spare one in its place, with room for as much as the batch it
    /// replaces: the next turn's batch to that core is likely as large, and
    /// a spare from the other direction (a batch of keys reused for values)
    /// grew by a reallocation at every doubling.
    pub fn flush(&mut self, mut post: impl FnMut(usize, Message)) {
        let spare = &mut self.spare;
        let mut take = |batch: &mut Batch| {
            let mut next = spare.pop().unwrap_or_default();
            next.make_room_like(batch);
            std::mem::replace(batch, next)
        };
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
    fn the_batch_after_a_posted_one_has_room_for_as_much() {
        let mut outbox = Outbox::new(2);
        // A small spare, as a batch of keys sent back empty would be.
        let mut small = Batch::default();
        small.push(0, 0, ItemKind::Request, None, |b| b.extend_from_slice(b"k"));
        outbox.recycle(small);
        for seq in 0..100 {
            outbox.replies[1].push(7, seq, ItemKind::Request, None, |b| {
                b.extend_from_slice(&[b'v'; 100])
            });
        }
        let mut posted = Vec::new();
        outbox.flush(|to, message| posted.push((to, message)));
        assert!(matches!(posted[..], [(1, Message::Reply(ref b))] if b.items.len() == 100));
        let next = &outbox.replies[1];
        assert!(next.items.is_empty() && next.bytes.is_empty());
        assert!(next.items.capacity() >= 100, "{}", next.items.capacity());
        assert!(
            next.bytes.capacity() >= 100 * 100,
            "{}",
            next.bytes.capacity()
        );
        // Nothing posted to core 0: its batch is left as it was.
        assert_eq!(outbox.replies[0].bytes.capacity(), 0);
    }

    #[test]
    fn a_burst_does_not_leave_its_size_resident() {
        let mut outbox = Outbox::new(2);
        outbox.forwards[1].push(7, 0, ItemKind::Request, None, |b| {
            b.resize(4 * SPARE_BATCH_BYTES, b'v')
        });
        outbox.flush(|_, _| {});
        let next = &outbox.forwards[1];
        let kept = next.bytes.capacity() + next.items.capacity() * size_of::<Item>();
        assert!(kept <= SPARE_BATCH_BYTES, "{kept}");
    }

    #[test]
    fn a_waiting_owner_is_woken_once_per_drain() {
        let mailbox = Mailbox::new(2);
        assert!(mailbox.prepare_to_wait());
        assert!(mailbox.post(1, Message::Reply(Batch::default())));
        assert!(!mailbox.post(1, Message::Reply(Batch::default())));
        mailbox.stop_waiting();
        let mut seen = 0;
        mailbox.drain(|from, _| {
            assert_eq!(from, 1);
            seen += 1;
        });
        assert_eq!(seen, 2);
        // After a drain the next post to a waiting owner must wake it again.
        assert!(mailbox.prepare_to_wait());
        assert!(mailbox.post(0, Message::Reply(Batch::default())));
    }

    #[test]
    fn a_busy_owner_is_not_woken_and_does_not_block_on_queued_batches() {
        let mailbox = Mailbox::new(2);
        assert!(!mailbox.post(1, Message::Reply(Batch::default())));
        // The batch posted while it was busy keeps it from blocking.
        assert!(!mailbox.prepare_to_wait());
        assert!(!mailbox.post(1, Message::Reply(Batch::default())));
        let mut seen = 0;
        mailbox.drain(|_, _| seen += 1);
        assert_eq!(seen, 2);
        assert!(mailbox.prepare_to_wait());
    }

    /// An owner that blocks (parks) whenever `prepare_to_wait` allows, against
    /// a sender that wakes it only when `post` says so: every batch must be
    /// served without the owner sleeping out its long timeout, which is what a
    /// lost wake-up would cost.
    #[test]
    fn no_batch_waits_for_a_wake_up_that_never_comes() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        const BATCHES: usize = 4_000;
        const SLEEP_LIMIT: Duration = Duration::from_secs(10);
        let mailbox = Arc::new(Mailbox::new(2));
        let served = Arc::new(AtomicUsize::new(0));
        let owner = {
            let (mailbox, served) = (Arc::clone(&mailbox), Arc::clone(&served));
            std::thread::spawn(move || {
                let mut longest = Duration::ZERO;
                while served.load(Ordering::Relaxed) < BATCHES {
                    if mailbox.prepare_to_wait() {
                        let slept = Instant::now();
                        std::thread::park_timeout(SLEEP_LIMIT);
                        longest = longest.max(slept.elapsed());
                    }
                    mailbox.stop_waiting();
                    mailbox.drain(|_, _| {
                        served.fetch_add(1, Ordering::Relaxed);
                    });
                }
                longest
            })
        };
        for sent in 1..=BATCHES {
            if mailbox.post(1, Message::Reply(Batch::default())) {
                owner.thread().unpark();
            }
            // Every few batches, let the owner catch up and go to sleep, so
            // that posts meet it both busy and waiting.
            if sent % 4 == 0 {
                let asked = Instant::now();
                while served.load(Ordering::Relaxed) < sent {
                    assert!(
                        asked.elapsed() < SLEEP_LIMIT / 2,
                        "batch {sent} was not served: a wake-up was lost"
                    );
                    std::thread::yield_now();
                }
            }
        }
        let longest = owner.join().unwrap();
        assert_eq!(served.load(Ordering::Relaxed), BATCHES);
        assert!(
            longest < SLEEP_LIMIT / 2,
            "the owner slept {longest:?}: a wake-up was lost"
        );
    }

    #[test]
    fn get_fragments_carry_their_retrieval_and_key() {
        let kinds = [
            (false, None),
            (true, None),
            (false, Some(-1)),
            (true, Some(1 << 40)),
        ];
        for (with_cas, touch) in kinds {
            let kind = GetKind { with_cas, touch };
            let mut bytes = b"earlier".to_vec();
            let start = bytes.len();
            encode_get_fragment(&mut bytes, kind, b"user:42");
            let item = ItemKind::get_fragment(kind);
            let ItemKind::GetFragment { with_cas, touch } = item else {
                panic!("{item:?}");
            };
            assert_eq!(
                decode_get_fragment(with_cas, touch, &bytes[start..]),
                (kind, &b"user:42"[..])
            );
        }
    }

    #[test]
    fn batches_keep_item_boundaries_and_order() {
        let mut outbox = Outbox::new(2);
        let batch = &mut outbox.forwards[1];
        let fragment = ItemKind::GetFragment {
            with_cas: false,
            touch: false,
        };
        batch.push(7, 1, fragment, Some(1), |b| b.extend_from_slice(b"a"));
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
        assert_eq!(items, [&b"a"[..], b"delete b\r\n"]);
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
