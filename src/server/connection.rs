//! One client connection: its socket, the bytes read but not yet parsed, and its
//! replies, kept in request order even when some come back from other cores.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::protocol::{GetKind, Keys};

/// A connection stops serving input while more reply bytes than this wait to
/// be sent, and resumes below [`OUTPUT_LOW_WATER`].
pub const OUTPUT_HIGH_WATER: usize = 4 << 20;
pub const OUTPUT_LOW_WATER: usize = 1 << 20;
/// An input buffer emptied with more room than this is given back: a large
/// value would otherwise keep its size for the life of the connection (100
/// idle clients that each once stored 1 MB held 100 MB).
pub const INPUT_KEEP_BYTES: usize = 64 << 10;

/// A connection also stops serving input while more replies are owed by other
/// cores than [`held_reply_limit`] allows (local replies queued behind one of
/// them counted too), and resumes at half: their sizes are
/// unknown until they come back, up to an item each, so the limit is what
/// [`HELD_REPLY_BYTES`] of the largest items come to, within
/// [`MIN_HELD_REPLIES`]..=[`MAX_HELD_REPLIES`].
pub const HELD_REPLY_BYTES: usize = 64 << 20;
pub const MIN_HELD_REPLIES: usize = 16;
pub const MAX_HELD_REPLIES: usize = 256;

/// Replies owed by other cores a connection may wait on (see [`HELD_REPLY_BYTES`])
/// when no item is larger than `max_item_size`: 64 at the default `-I 1m`.
pub fn held_reply_limit(max_item_size: usize) -> usize {
    (HELD_REPLY_BYTES / max_item_size.max(1)).clamp(MIN_HELD_REPLIES, MAX_HELD_REPLIES)
}

/// A multi-get paused part-way because its replies outgrew the limits above:
/// its kind and its keys, of which those from `next` on are still to serve.
/// memcached streams a multi-get's values by reference; corecache copies them,
/// so a line naming a large value thousands of times is served in parts.
pub struct PendingGet {
    pub kind: GetKind,
    keys: Vec<u8>,
    next: usize,
}

impl PendingGet {
    pub fn new(kind: GetKind, rest: Keys<'_>) -> PendingGet {
        PendingGet {
            kind,
            keys: rest.as_bytes().to_vec(),
            next: 0,
        }
    }

    /// The keys still to serve.
    pub fn rest(&self) -> Keys<'_> {
        Keys(&self.keys[self.next..])
    }

    /// Only the last `left` bytes of the keys are still to serve.
    pub fn advance_to(&mut self, left: usize) {
        self.next = self.keys.len() - left;
    }
}

/// A reply position behind one that another core still computes. Filled
/// positions keep their bytes in the connection's `held` buffer rather than a
/// buffer each: with half the keys on another core, most replies of a pipelined
/// receive queue behind a forwarded one, and an allocation per reply cost more
/// than computing it.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Still being computed on another core.
    Waiting,
    /// Done: the reply is `held[start..end]`.
    Ready { start: usize, end: usize },
    /// Being written here: the reply is `held[start..]`. Only the last slot is
    /// open; it closes when anything else is appended to `held`.
    Open { start: usize },
}

impl Slot {
    /// Where the slot's reply lies in `held`, whose length is `held_len`.
    fn range(self, held_len: usize) -> Option<std::ops::Range<usize>> {
        match self {
            Slot::Waiting => None,
            Slot::Ready { start, end } => Some(start..end),
            Slot::Open { start } => Some(start..held_len),
        }
    }
}

/// `held` is compacted when its drained bytes exceed both this and its live
/// ones, so a connection that always has a reply in flight elsewhere does not
/// grow it without bound.
const HELD_COMPACT_BYTES: usize = 16 << 10;

/// How a connection is ending, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Open,
    /// Send every reply owed, then close (`quit`, end of stream, shutdown).
    AfterReplies,
    /// Close now, dropping unsent replies (protocol violation, socket error).
    Now,
}

pub struct Connection {
    socket: OwnedFd,
    /// Bytes received that do not yet form a whole request.
    pub input: Vec<u8>,
    /// `input` is the start of a command line, with no newline yet: bytes
    /// without a newline cannot complete it, so they are appended unparsed
    /// (parsing scans the whole line, and a long `get` line arriving in small
    /// reads would be scanned again on each).
    pub partial_line: bool,
    /// Bytes still to discard: the rest of a value refused as too large.
    pub swallow: usize,
    /// A multi-get to finish before the rest of `input` is served.
    pub pending_get: Option<PendingGet>,
    /// Replies ready to go out, in order.
    out: Vec<u8>,
    /// The buffer the last send returned, reused for the next one.
    spare: Vec<u8>,
    /// Replies behind one that another core is still computing.
    slots: VecDeque<Slot>,
    /// The bytes of the `Ready` and `Open` slots.
    held: Vec<u8>,
    /// Bytes of `held` already moved to `out` (garbage until compaction).
    held_drained: usize,
    /// The sequence number of `slots[0]`.
    first_seq: u64,
    pub sending: bool,
    pub receiving: bool,
    /// Input is not being served because too many replies wait to be sent
    /// ([`must_pause`](Self::must_pause)).
    pub paused: bool,
    pub cancel_sent: bool,
    pub closing: Closing,
    /// [`held_reply_limit`] for this server's item size limit.
    held_limit: usize,
    /// Queued for a send: at the end of this loop turn, or of a later one
    /// while its ready replies are held back.
    pub dirty: bool,
    /// Since when the ready replies have been held back for those other
    /// cores still owe (`CoreState::send_replies`).
    pub held_since: Option<Instant>,
}

impl Connection {
    pub fn new(socket: OwnedFd, held_limit: usize) -> Connection {
        Connection {
            socket,
            input: Vec::new(),
            partial_line: false,
            swallow: 0,
            pending_get: None,
            out: Vec::with_capacity(4096),
            spare: Vec::new(),
            slots: VecDeque::new(),
            held: Vec::new(),
            held_drained: 0,
            first_seq: 0,
            sending: false,
            receiving: false,
            paused: false,
            cancel_sent: false,
            closing: Closing::Open,
            held_limit,
            dirty: false,
            held_since: None,
        }
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// `data` less the bytes still to discard at its front ([`skip`](Self::skip)).
    pub fn swallow<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let n = self.swallow.min(data.len());
        self.swallow -= n;
        &data[n..]
    }

    /// Skips a bad request of `consumed` bytes when `available` are buffered;
    /// true when it reaches past them (the rest is swallowed as it arrives).
    pub fn skip(&mut self, available: usize, consumed: usize) -> bool {
        if consumed > available {
            self.swallow = consumed - available;
            return true;
        }
        false
    }

    /// Where the next reply goes: straight to the output unless an earlier
    /// reply is still outstanding.
    pub fn reply_buffer(&mut self) -> &mut Vec<u8> {
        match self.slots.back() {
            None => return &mut self.out,
            Some(Slot::Open { .. }) => {}
            Some(_) => self.slots.push_back(Slot::Open {
                start: self.held.len(),
            }),
        }
        &mut self.held
    }

    /// Reserves the next reply position for an answer from another core.
    pub fn hold_reply(&mut self) -> u64 {
        self.close_open_slot();
        self.slots.push_back(Slot::Waiting);
        self.first_seq + self.slots.len() as u64 - 1
    }

    /// Fills a reserved position; replies now complete in order move to output.
    pub fn fill_reply(&mut self, seq: u64, reply: &[u8]) {
        let Some(index) = seq
            .checked_sub(self.first_seq)
            .map(|i| i as usize)
            .filter(|&i| i < self.slots.len())
        else {
            return;
        };
        if index > 0 {
            self.close_open_slot();
            let start = self.held.len();
            self.held.extend_from_slice(reply);
            self.slots[index] = Slot::Ready {
                start,
                end: self.held.len(),
            };
            return;
        }
        self.out.extend_from_slice(reply);
        self.slots.pop_front();
        self.first_seq += 1;
        while let Some(range) = self.slots.front().and_then(|s| s.range(self.held.len())) {
            self.held_drained += range.len();
            self.out.extend_from_slice(&self.held[range]);
            self.slots.pop_front();
            self.first_seq += 1;
        }
        if self.slots.is_empty() {
            self.clear_held();
        } else if self.held_drained > HELD_COMPACT_BYTES && self.held_drained * 2 > self.held.len()
        {
            self.compact_held();
        }
    }

    /// Ends the open slot where `held` ends now, before other bytes follow.
    fn close_open_slot(&mut self) {
        if let Some(slot) = self.slots.back_mut() {
            if let Slot::Open { start } = *slot {
                *slot = Slot::Ready {
                    start,
                    end: self.held.len(),
                };
            }
        }
    }

    fn clear_held(&mut self) {
        if self.held.capacity() > OUTPUT_LOW_WATER {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
        self.held_drained = 0;
    }

    /// Moves the live replies of `held` to a fresh buffer, dropping the drained.
    fn compact_held(&mut self) {
        let mut live = Vec::with_capacity(self.held.len() - self.held_drained);
        for slot in self.slots.iter_mut() {
            let Some(range) = slot.range(self.held.len()) else {
                continue;
            };
            let start = live.len();
            live.extend_from_slice(&self.held[range]);
            *slot = match *slot {
                Slot::Open { .. } => Slot::Open { start },
                _ => Slot::Ready {
                    start,
                    end: live.len(),
                },
            };
        }
        self.held = live;
        self.held_drained = 0;
    }

    /// Whether replies are still owed by other cores.
    pub fn awaiting_replies(&self) -> bool {
        !self.slots.is_empty()
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes of replies ready to send.
    pub fn ready_bytes(&self) -> usize {
        self.out.len()
    }

    /// Bytes of replies computed here and not yet sent: ready ones, and those
    /// waiting behind a reply another core still owes.
    fn owed_bytes(&self) -> usize {
        self.out.len() + self.held.len() - self.held_drained
    }

    /// Whether serving more input now would buffer past the limits: a client
    /// that writes without reading cannot make the server buffer without bound.
    pub fn must_pause(&self) -> bool {
        self.slots.len() > self.held_limit || self.owed_bytes() > OUTPUT_HIGH_WATER
    }

    /// Whether a paused connection has drained enough to serve input again.
    pub fn may_resume(&self) -> bool {
        self.slots.len() <= self.held_limit / 2 && self.owed_bytes() < OUTPUT_LOW_WATER
    }

    /// Whether the receive should be armed.
    pub fn wants_input(&self) -> bool {
        self.closing == Closing::Open && !self.paused
    }

    /// Takes the output to send, leaving the spare buffer in its place.
    pub fn take_output(&mut self) -> Vec<u8> {
        let spare = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.out, spare)
    }

    /// Gives back a buffer from a finished send for reuse.
    pub fn return_buffer(&mut self, buffer: Vec<u8>) {
        if buffer.capacity() <= 1 << 20 {
            self.spare = buffer;
        }
    }

    /// Whether everything owed has been sent.
    pub fn idle(&self) -> bool {
        !self.sending && self.out.is_empty() && self.slots.is_empty() && self.pending_get.is_none()
    }

    /// Whether the socket can be closed now.
    pub fn finished(&self) -> bool {
        match self.closing {
            Closing::Open => false,
            Closing::AfterReplies => self.idle() && !self.receiving,
            Closing::Now => !self.sending && !self.receiving,
        }
    }

    /// Gives back the input buffer's room once it is empty and larger than
    /// [`INPUT_KEEP_BYTES`].
    pub fn release_spent_input(&mut self) {
        if self.input.is_empty() && self.input.capacity() > INPUT_KEEP_BYTES {
            self.input = Vec::new();
        }
    }

    pub fn close(&mut self, how: Closing) {
        if how == Closing::Now || self.closing == Closing::Open {
            self.closing = how;
        }
        if how == Closing::Now {
            self.out.clear();
            self.slots.clear();
            self.clear_held();
            self.pending_get = None;
            // A send in flight holds the socket open until it completes, and
            // one to a client that stopped reading never would: shut the
            // socket down so that it fails now and the connection closes.
            if self.sending {
                let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> Connection {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        Connection::new(OwnedFd::from(a), MAX_HELD_REPLIES)
    }

    #[test]
    fn the_held_reply_limit_follows_the_item_size_limit() {
        assert_eq!(held_reply_limit(1 << 20), 64);
        assert_eq!(held_reply_limit(1 << 10), MAX_HELD_REPLIES);
        assert_eq!(held_reply_limit(1 << 30), MIN_HELD_REPLIES);
    }

    #[test]
    fn a_connection_pauses_on_replies_owed_by_other_cores() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut c = Connection::new(OwnedFd::from(a), 4);
        let seqs: Vec<u64> = (0..5).map(|_| c.hold_reply()).collect();
        assert!(c.must_pause(), "5 owed, limit 4");
        c.fill_reply(seqs[0], b"x");
        c.fill_reply(seqs[1], b"x");
        assert!(!c.must_pause(), "3 owed");
        assert!(!c.may_resume(), "resumes at half the limit");
        c.fill_reply(seqs[2], b"x");
        assert!(c.may_resume(), "2 owed");
        assert_eq!(c.take_output(), b"xxx");
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut c = connection();
        c.reply_buffer().extend_from_slice(b"1 ");
        let second = c.hold_reply();
        c.reply_buffer().extend_from_slice(b"3 ");
        let fourth = c.hold_reply();
        c.reply_buffer().extend_from_slice(b"5 ");
        assert_eq!(c.take_output(), b"1 ");
        c.fill_reply(fourth, b"4 ");
        assert!(!c.has_output(), "reply 4 must wait for reply 2");
        c.fill_reply(second, b"2 ");
        assert_eq!(c.take_output(), b"2 3 4 5 ");
        assert!(!c.awaiting_replies());
        c.reply_buffer().extend_from_slice(b"6");
        assert_eq!(c.take_output(), b"6");
    }

    #[test]
    fn drained_held_replies_are_compacted_away() {
        let mut c = connection();
        let big = vec![b'v'; HELD_COMPACT_BYTES];
        let mut sent = 0;
        // A reply always in flight elsewhere, so `held` never empties by itself.
        let mut waiting = c.hold_reply();
        for _ in 0..64 {
            c.reply_buffer().extend_from_slice(&big);
            let next = c.hold_reply();
            c.fill_reply(waiting, b"r");
            waiting = next;
            sent += c.take_output().len();
            assert!(
                c.held.len() <= 3 * HELD_COMPACT_BYTES,
                "held grew to {}",
                c.held.len()
            );
        }
        assert_eq!(sent, 64 * (HELD_COMPACT_BYTES + 1));
        assert_eq!(c.owed_bytes(), 0);
    }

    #[test]
    fn closing_now_drops_what_is_owed() {
        let mut c = connection();
        c.hold_reply();
        c.reply_buffer().extend_from_slice(b"x");
        c.close(Closing::AfterReplies);
        assert!(!c.finished());
        c.close(Closing::Now);
        assert!(c.finished());
        // A reply from another core for a dropped slot is ignored.
        c.fill_reply(0, b"late");
        assert!(!c.has_output());
    }

    /// What a connection is asked to do with its replies.
    #[derive(Debug, Clone)]
    enum Step {
        /// A reply computed here.
        Local(Vec<u8>),
        /// A reply owed by another core.
        Hold,
        /// Another core answers the `n`th (modulo) reply still owed.
        Fill(usize),
        /// A send takes what is ready.
        Send,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Step::Local),
            // Large enough that `held` is compacted now and then.
            any::<u8>().prop_map(|b| Step::Local(vec![b; HELD_COMPACT_BYTES / 3])),
            Just(Step::Hold),
            any::<usize>().prop_map(Step::Fill),
            Just(Step::Send),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            ..proptest::prelude::ProptestConfig::default()
        })]
        /// Against a model that keeps every reply whole in a list: the bytes
        /// sent are always the replies in request order, up to the first one
        /// still owed, and nothing is left once all are answered.
        #[test]
        fn replies_match_a_list_of_whole_replies(
            steps in proptest::collection::vec(step(), 0..200),
        ) {
            let mut c = connection();
            let mut model: Vec<Option<Vec<u8>>> = Vec::new();
            let mut owed: Vec<(u64, usize)> = Vec::new();
            let mut sent = Vec::new();
            let mut counter = 0u8;
            for step in steps {
                match step {
                    Step::Local(bytes) => {
                        c.reply_buffer().extend_from_slice(&bytes);
                        model.push(Some(bytes));
                    }
                    Step::Hold => {
                        owed.push((c.hold_reply(), model.len()));
                        model.push(None);
                    }
                    Step::Fill(n) if !owed.is_empty() => {
                        let (seq, at) = owed.remove(n % owed.len());
                        counter = counter.wrapping_add(1);
                        let reply = vec![counter; 1 + n % 7];
                        c.fill_reply(seq, &reply);
                        model[at] = Some(reply);
                    }
                    Step::Fill(_) => {}
                    Step::Send => {
                        sent.extend(c.take_output());
                        let ready: Vec<u8> = model
                            .iter()
                            .map_while(|r| r.as_deref())
                            .flatten()
                            .copied()
                            .collect();
                        proptest::prop_assert_eq!(&sent, &ready);
                    }
                }
            }
            for (seq, at) in owed.drain(..) {
                c.fill_reply(seq, b"last");
                model[at] = Some(b"last".to_vec());
            }
            sent.extend(c.take_output());
            let everything: Vec<u8> = model.into_iter().flatten().flatten().collect();
            proptest::prop_assert_eq!(sent, everything);
            proptest::prop_assert!(!c.awaiting_replies());
            proptest::prop_assert_eq!(c.owed_bytes(), 0);
        }
    }
}
