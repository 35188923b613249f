//! The item header: the bytes at the start of every chunk that holds an item.
//!
//! An item is its header, then the key, then the value, inline in one chunk:
//!
//! ```text
//! byte  0         4         8        12                 20        24        28        32   33   34
//!       +---------+---------+---------+------------------+---------+---------+---------+----+----+-----+-------+
//!       | prev    | next    | expiry  | cas              | flags   | val_len | atime   |klen|stat| key | value |
//!       | u32 id  | u32 id  | u32 s   | u64              | u32     | u32     | u32 s   | u8 | u8 |     |       |
//!       +---------+---------+---------+------------------+---------+---------+---------+----+----+-----+-------+
//!
//! state (byte 33):  bit 0  LIVE      the chunk holds an item that is in the index
//!                   bit 1  FETCHED   the item was read (or touched) since it was
//!                                    stored (meta `h`)
//!                   bit 2  STALE     `md <key> I` (or `ms ... C<older cas> I`) marked
//!                                    it stale: readers get `X` and may serve it
//!                   bit 3  WIN_SENT  a win token (`W`) was handed out for it: later
//!                                    meta readers get `Z` until a store replaces it
//!                                    (incr/decr/ma keep FETCHED, STALE and WIN_SENT
//!                                    unless the number grows longer)
//!                   bits 4-5 SEGMENT the policy list the item is on: 0 none,
//!                                    1 window, 2 probation, 3 protected
//!                   bits 6-7         zero
//! ```
//!
//! All fields are little-endian and unaligned (read with `from_le_bytes`), so the
//! header is 34 bytes with no padding.
//!
//! - `prev`/`next` link the item into one of its slab class's three policy lists
//!   (`policy.rs`; chunk ids, [`NIL`] at the ends), so the lists cost no memory
//!   outside the arena.
//! - `expiry` is unix seconds, 0 = never.
//! - `cas` is the shard's store sequence number, given to every item even when
//!   CAS is off (`-C`, then it is reported as 0). It doubles as the item's age for
//!   `flush_all`: an item is flushed when its `cas` is at or below the sequence
//!   number the flush took effect at. That is exact even for items stored later in
//!   the same second, which a 32-bit "last stored" time could not tell apart, and it
//!   saves that field's 4 bytes.
//! - `val_len` is the value length; `klen` the key length (memcached keys are at most
//!   250 bytes).
//! - `atime` is the last access in unix seconds: set when the item is stored and
//!   bumped by reads (not by meta reads with `u`). The meta commands report it
//!   (`mg ... l`: seconds since the last access; `me`: `la=`), which is why the
//!   header grew from 30 to 34 bytes: memcached keeps the same field (`it->time`)
//!   and the protocol exposes it, so it cannot be derived from anything else
//!   stored. The two new state bits (STALE, WIN_SENT) fit in the state byte.

/// Size of the item header in bytes.
pub(crate) const HEADER: usize = 34;

/// The "no chunk" id that ends a recency list.
pub(crate) const NIL: u32 = u32::MAX;

pub(crate) const LIVE: u8 = 1;
pub(crate) const FETCHED: u8 = 2;
pub(crate) const STALE: u8 = 4;
pub(crate) const WIN_SENT: u8 = 8;
/// The policy segment: 2 bits at bit 4 of the state byte.
const SEGMENT_SHIFT: u8 = 4;
const SEGMENT_MASK: u8 = 0b11 << SEGMENT_SHIFT;

const PREV: usize = 0;
const NEXT: usize = 4;
const EXPIRY: usize = 8;
const CAS: usize = 12;
const FLAGS: usize = 20;
const VAL_LEN: usize = 24;
const ATIME: usize = 28;
const KEY_LEN: usize = 32;
const STATE: usize = 33;

/// Total bytes an item with these lengths occupies (header + key + value): the size
/// that picks its slab class and that `stats bytes` counts.
#[inline]
pub(crate) fn total_size(key_len: usize, value_len: usize) -> usize {
    HEADER + key_len + value_len
}

#[inline]
fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

#[inline]
fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn prev(b: &[u8]) -> u32 {
    rd32(b, PREV)
}
#[inline]
pub(crate) fn set_prev(b: &mut [u8], v: u32) {
    wr32(b, PREV, v)
}
#[inline]
pub(crate) fn next(b: &[u8]) -> u32 {
    rd32(b, NEXT)
}
#[inline]
pub(crate) fn set_next(b: &mut [u8], v: u32) {
    wr32(b, NEXT, v)
}
#[inline]
pub(crate) fn expiry(b: &[u8]) -> u32 {
    rd32(b, EXPIRY)
}
#[inline]
pub(crate) fn set_expiry(b: &mut [u8], v: u32) {
    wr32(b, EXPIRY, v)
}
#[inline]
pub(crate) fn cas(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[CAS..CAS + 8].try_into().expect("8 bytes"))
}
#[inline]
pub(crate) fn set_cas(b: &mut [u8], v: u64) {
    b[CAS..CAS + 8].copy_from_slice(&v.to_le_bytes());
}
#[inline]
pub(crate) fn flags(b: &[u8]) -> u32 {
    rd32(b, FLAGS)
}
#[inline]
pub(crate) fn atime(b: &[u8]) -> u32 {
    rd32(b, ATIME)
}
#[inline]
pub(crate) fn set_atime(b: &mut [u8], v: u32) {
    wr32(b, ATIME, v)
}
#[inline]
pub(crate) fn value_len(b: &[u8]) -> usize {
    rd32(b, VAL_LEN) as usize
}
#[inline]
pub(crate) fn key_len(b: &[u8]) -> usize {
    b[KEY_LEN] as usize
}
#[inline]
pub(crate) fn state(b: &[u8]) -> u8 {
    b[STATE]
}
#[inline]
pub(crate) fn set_state(b: &mut [u8], v: u8) {
    b[STATE] = v;
}
/// The policy list the item is on (`policy::Segment` as 2 bits).
#[inline]
pub(crate) fn segment(b: &[u8]) -> u8 {
    (b[STATE] & SEGMENT_MASK) >> SEGMENT_SHIFT
}
/// Sets the segment bits, keeping the other state bits.
#[inline]
pub(crate) fn set_segment(b: &mut [u8], seg: u8) {
    b[STATE] = (b[STATE] & !SEGMENT_MASK) | ((seg << SEGMENT_SHIFT) & SEGMENT_MASK);
}
#[inline]
pub(crate) fn is_live(b: &[u8]) -> bool {
    state(b) & LIVE != 0
}
#[inline]
pub(crate) fn key(b: &[u8]) -> &[u8] {
    &b[HEADER..HEADER + key_len(b)]
}
#[inline]
pub(crate) fn value(b: &[u8]) -> &[u8] {
    let start = HEADER + key_len(b);
    &b[start..start + value_len(b)]
}
/// Whether the item's key is `key`. Keys are short (memcached's are at most 250
/// bytes, typically 10-40), and a call into libc's memcmp for them cost more than
/// the compare: this compares eight bytes at a time inline, the last eight
/// overlapping the ones before.
#[inline]
pub(crate) fn has_key(b: &[u8], key: &[u8]) -> bool {
    let stored = self::key(b);
    let n = key.len();
    if stored.len() != n {
        return false;
    }
    if n < 8 {
        return stored == key;
    }
    let word = |s: &[u8], at: usize| u64::from_ne_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let mut at = 0;
    while at + 8 < n {
        if word(stored, at) != word(key, at) {
            return false;
        }
        at += 8;
    }
    word(stored, n - 8) == word(key, n - 8)
}

/// The item's size as `stats bytes` counts it.
#[inline]
pub(crate) fn size(b: &[u8]) -> usize {
    total_size(key_len(b), value_len(b))
}

/// Writes every header field except the links, and the key; the value's bytes are
/// left for the caller (they may be assembled from two parts).
pub(crate) fn init(
    b: &mut [u8],
    key: &[u8],
    flags: u32,
    expiry: u32,
    cas: u64,
    value_len: usize,
    atime: u32,
) {
    debug_assert!(key.len() <= u8::MAX as usize);
    debug_assert!(value_len <= u32::MAX as usize);
    set_prev(b, NIL);
    set_next(b, NIL);
    wr32(b, EXPIRY, expiry);
    set_cas(b, cas);
    wr32(b, FLAGS, flags);
    wr32(b, VAL_LEN, value_len as u32);
    wr32(b, ATIME, atime);
    b[KEY_LEN] = key.len() as u8;
    b[STATE] = LIVE;
    b[HEADER..HEADER + key.len()].copy_from_slice(key);
}

/// The value bytes for writing, for an item whose header is already written.
#[inline]
pub(crate) fn value_mut(b: &mut [u8]) -> &mut [u8] {
    let start = HEADER + key_len(b);
    let len = value_len(b);
    &mut b[start..start + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `has_key` agrees with slice equality for keys of every length up to
        /// the protocol's 250, equal or differing in any one byte.
        #[test]
        fn has_key_is_key_equality(
            key in proptest::collection::vec(proptest::num::u8::ANY, 1..=250),
            other_len in 1usize..=250,
            flip in proptest::num::usize::ANY,
            same_len in proptest::bool::ANY,
        ) {
            let mut b = vec![0u8; HEADER + 250];
            init(&mut b, &key, 0, 0, 1, 0, 0);
            proptest::prop_assert!(has_key(&b, &key));
            let mut other = key.clone();
            if same_len {
                let i = flip % other.len();
                other[i] ^= 1 << (flip % 8);
            } else {
                other.resize(other_len, 0xAB);
            }
            proptest::prop_assert_eq!(has_key(&b, &other), other == key);
        }
    }

    #[test]
    fn header_round_trips_and_fields_do_not_overlap() {
        let mut b = vec![0xAAu8; 64];
        init(&mut b, b"key", 0xDEAD_BEEF, 1234, u64::MAX - 1, 5, 4321);
        value_mut(&mut b).copy_from_slice(b"hello");
        set_prev(&mut b, 7);
        set_next(&mut b, 9);
        assert_eq!(prev(&b), 7);
        assert_eq!(next(&b), 9);
        assert_eq!(expiry(&b), 1234);
        assert_eq!(cas(&b), u64::MAX - 1);
        assert_eq!(flags(&b), 0xDEAD_BEEF);
        assert_eq!(key(&b), b"key");
        assert_eq!(value(&b), b"hello");
        assert_eq!(state(&b), LIVE);
        assert_eq!(atime(&b), 4321);
        assert_eq!(size(&b), HEADER + 3 + 5);
        assert!(has_key(&b, b"key"));
        assert!(!has_key(&b, b"kez") && !has_key(&b, b"ke") && !has_key(&b, b"keys"));
        assert_eq!(STATE + 1, HEADER);
        assert_eq!(HEADER, 34);
        set_segment(&mut b, 3);
        assert_eq!(segment(&b), 3);
        assert_eq!(
            state(&b),
            LIVE | 3 << 4,
            "segment bits leave the others alone"
        );
        set_segment(&mut b, 1);
        assert_eq!((segment(&b), state(&b) & 0b1100_1111), (1, LIVE));
    }
}
