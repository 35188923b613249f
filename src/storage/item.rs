//! The item header: the bytes at the start of every chunk that holds an item.
//!
//! An item is its header, then the key, then the value, inline in one chunk. The
//! header is 22 bytes, followed by the fields an item needs only when they are
//! not zero or small (its *form*):
//!
//! ```text
//! byte  0         4         8              14        18     20   21   22
//!       +---------+---------+--------------+---------+------+----+----+--------------------+-----+-------+
//!       | prev    | next    | cas, low     | atime   | len  |klen|stat| extension          | key | value |
//!       | u32 id  | u32 id  | 48 bits      | u32 s   | u16  | u8 | u8 | 0-12 bytes         |     |       |
//!       +---------+---------+--------------+---------+------+----+----+--------------------+-----+-------+
//!
//! len (bytes 18-19): bits 0-13   the value length's low 14 bits
//!                    bit 14      LONG_VALUE  the value is 16 KiB or more: its length's
//!                                            high 16 bits are in the extension
//!                    bit 15      WIDE_CAS    the CAS is 2^48 or more: its high 16
//!                                            bits are in the extension
//!
//! state (byte 21):  bit 0  LIVE      the chunk holds an item that is in the index
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
//!                   bit 6  HAS_EXPIRY the extension holds the expiry
//!                   bit 7  HAS_FLAGS  the extension holds the client flags
//!
//! extension (from byte 22), each field present only when its bit is set, in
//! this order:  expiry u32 | flags u32 | cas high u16 | value length high u16
//! ```
//!
//! All fields are little-endian and unaligned (read with `from_le_bytes`).
//!
//! - `prev`/`next` link the item into one of its slab class's three policy lists
//!   (`policy.rs`; chunk ids, [`NIL`] at the ends), so the lists cost no memory
//!   outside the arena.
//! - `expiry` is unix seconds; an item without one never expires.
//! - `cas` is the shard's store sequence number, given to every item even when
//!   CAS is off (`-C`, then it is reported as 0). It doubles as the item's age for
//!   `flush_all`: an item is flushed when its `cas` is at or below the sequence
//!   number the flush took effect at. That is exact even for items stored later in
//!   the same second, which a 32-bit "last stored" time could not tell apart, and it
//!   saves that field's 4 bytes. A shard's sequence needs more than 48 bits only
//!   after 2.8 x 10^14 stores; a client's own CAS (`E`) may be any 64-bit number.
//! - `atime` is the last access in unix seconds: set when the item is stored and
//!   bumped by reads (not by meta reads with `u`). The meta commands report it
//!   (`mg ... l`: seconds since the last access; `me`: `la=`), and memcached keeps
//!   the same field (`it->time`), so it cannot be derived from anything else.
//! - `klen` is the key length (memcached keys are at most 250 bytes).
//!
//! Why the form: the header was 34 bytes with every field always present, and a
//! 14-byte key with a 100-byte value (148 bytes) took a 176-byte chunk. Most items
//! have flags 0, many have no expiry, CASes are below 2^48 and values below 16 KiB;
//! for those the header is 22 bytes (136 bytes, a 136-byte chunk). The price is
//! that a field can be missing when it must change in place: a touch that gives an
//! item its first expiry, or an `E` CAS of 2^48 or more on an item stored with a
//! smaller one. [`set_expiry`] and [`set_cas`] then return false and the shard
//! rewrites the item in its larger form (`Shard::regrow`). The `-I` limit counts
//! the largest form, [`HEADER_MAX`], so an item that was stored can always grow.

/// The header's fixed part: every item has it.
pub(crate) const HEADER_MIN: usize = 22;
/// The header with every optional field: what `-I` counts for every item.
pub(crate) const HEADER_MAX: usize = HEADER_MIN + 4 + 4 + 2 + 2;

/// The "no chunk" id that ends a recency list.
pub(crate) const NIL: u32 = u32::MAX;

pub(crate) const LIVE: u8 = 1;
pub(crate) const FETCHED: u8 = 2;
pub(crate) const STALE: u8 = 4;
pub(crate) const WIN_SENT: u8 = 8;
/// The state bits an item keeps when it is rewritten as the same item in a
/// new chunk or form (an incr that does not grow, `Shard::regrow`): what a
/// client was told about it. LIVE and the segment belong to the new chunk.
pub(crate) const CARRIED_STATE: u8 = FETCHED | STALE | WIN_SENT;
/// The policy segment: 2 bits at bit 4 of the state byte.
const SEGMENT_SHIFT: u8 = 4;
const SEGMENT_MASK: u8 = 0b11 << SEGMENT_SHIFT;
/// Form bits of the state byte: which optional fields the extension holds. They
/// describe the layout, so [`set_state`] leaves them alone.
const HAS_EXPIRY: u8 = 1 << 6;
const HAS_FLAGS: u8 = 1 << 7;
const FORM_BITS: u8 = HAS_EXPIRY | HAS_FLAGS;

/// Form bits of the `len` field.
const LEN_LOW_BITS: u32 = 14;
const LEN_LOW_MASK: u16 = (1 << LEN_LOW_BITS) - 1;
const LONG_VALUE: u16 = 1 << 14;
const WIDE_CAS: u16 = 1 << 15;
/// CASes below this fit the fixed part's 48 bits.
const NARROW_CAS_LIMIT: u64 = 1 << 48;
/// Values at least this long keep their length's high bits in the extension.
const LONG_VALUE_MIN: usize = 1 << LEN_LOW_BITS;
/// The longest value a header can describe (30 bits: memcached's `-I` stops at
/// 1 GiB, header included).
pub(crate) const VALUE_LEN_MAX: usize = (1 << (LEN_LOW_BITS + 16)) - 1;

const PREV: usize = 0;
const NEXT: usize = 4;
const CAS: usize = 8;
const ATIME: usize = 14;
const LEN: usize = 18;
pub(crate) const KEY_LEN: usize = 20;
const STATE: usize = 21;
const EXTENSION: usize = HEADER_MIN;

/// The header's length for an item with these fields.
#[inline]
fn header_len(flags: u32, expiry: u32, cas: u64, value_len: usize) -> usize {
    HEADER_MIN
        + if expiry != 0 { 4 } else { 0 }
        + if flags != 0 { 4 } else { 0 }
        + if cas >= NARROW_CAS_LIMIT { 2 } else { 0 }
        + if value_len >= LONG_VALUE_MIN { 2 } else { 0 }
}

/// Total bytes an item with these fields occupies (header + key + value): the
/// size that picks its slab class and that `stats bytes` counts.
#[inline]
pub(crate) fn total_size(
    key_len: usize,
    value_len: usize,
    flags: u32,
    expiry: u32,
    cas: u64,
) -> usize {
    header_len(flags, expiry, cas, value_len) + key_len + value_len
}

/// The size `-I` bounds: key and value behind the largest header, so that an
/// item under the limit stays under it whatever fields it is given later.
#[inline]
pub(crate) fn bounded_size(key_len: usize, value_len: usize) -> usize {
    HEADER_MAX + key_len + value_len
}

/// The header's bytes as an array. Every chunk holds at least [`HEADER_MAX`]
/// bytes (the smallest chunk is larger, `Shard::check_config`), so this one
/// check always passes; after it, reads at offsets computed from the form bits
/// need no bounds checks of their own (the offsets' ranges are known).
#[inline]
fn header(b: &[u8]) -> &[u8; HEADER_MAX] {
    b[..HEADER_MAX]
        .try_into()
        .expect("a chunk holds a whole header")
}

#[inline]
fn header_mut(b: &mut [u8]) -> &mut [u8; HEADER_MAX] {
    (&mut b[..HEADER_MAX])
        .try_into()
        .expect("a chunk holds a whole header")
}

#[inline]
fn rd16(h: &[u8; HEADER_MAX], off: usize) -> u16 {
    u16::from_le_bytes([h[off], h[off + 1]])
}

#[inline]
fn wr16(b: &mut [u8], off: usize, v: u16) {
    header_mut(b)[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn rd32(h: &[u8; HEADER_MAX], off: usize) -> u32 {
    u32::from_le_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]])
}

#[inline]
fn wr32(b: &mut [u8], off: usize, v: u32) {
    header_mut(b)[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn len_field(h: &[u8; HEADER_MAX]) -> u16 {
    rd16(h, LEN)
}

/// Offsets of the extension's fields, from the form bits: where each field is,
/// or would be, if present. Arithmetic on the bits rather than branches: the
/// get path computes them several times per item.
#[inline]
fn flags_at(h: &[u8; HEADER_MAX]) -> usize {
    EXTENSION + 4 * ((h[STATE] & HAS_EXPIRY) >> 6) as usize
}
#[inline]
fn cas_high_at(h: &[u8; HEADER_MAX]) -> usize {
    flags_at(h) + 4 * ((h[STATE] & HAS_FLAGS) >> 7) as usize
}
#[inline]
fn len_high_at(h: &[u8; HEADER_MAX]) -> usize {
    cas_high_at(h) + 2 * ((len_field(h) & WIDE_CAS) >> 15) as usize
}
/// Where the key starts: the header's length.
#[inline]
fn key_at(h: &[u8; HEADER_MAX]) -> usize {
    len_high_at(h) + 2 * ((len_field(h) & LONG_VALUE) >> 14) as usize
}

#[inline]
pub(crate) fn prev(b: &[u8]) -> u32 {
    rd32(header(b), PREV)
}
#[inline]
pub(crate) fn set_prev(b: &mut [u8], v: u32) {
    wr32(b, PREV, v)
}
#[inline]
pub(crate) fn next(b: &[u8]) -> u32 {
    rd32(header(b), NEXT)
}
#[inline]
pub(crate) fn set_next(b: &mut [u8], v: u32) {
    wr32(b, NEXT, v)
}
/// Unix seconds; 0 = never.
#[inline]
pub(crate) fn expiry(b: &[u8]) -> u32 {
    let h = header(b);
    if h[STATE] & HAS_EXPIRY != 0 {
        rd32(h, EXTENSION)
    } else {
        0
    }
}
/// Sets the expiry in place; false (and nothing changed) if the item has no
/// expiry field and `v` is not 0.
#[inline]
#[must_use]
pub(crate) fn set_expiry(b: &mut [u8], v: u32) -> bool {
    if header(b)[STATE] & HAS_EXPIRY != 0 {
        wr32(b, EXTENSION, v);
        true
    } else {
        v == 0
    }
}
#[inline]
pub(crate) fn cas(b: &[u8]) -> u64 {
    let h = header(b);
    // Eight bytes from the CAS's low 48 bits on; the top two belong to `atime`.
    let word: [u8; 8] = h[CAS..CAS + 8].try_into().expect("8 bytes");
    let low = u64::from_le_bytes(word) & (NARROW_CAS_LIMIT - 1);
    if len_field(h) & WIDE_CAS != 0 {
        low | (rd16(h, cas_high_at(h)) as u64) << 48
    } else {
        low
    }
}
/// Sets the CAS in place; false (and nothing changed) if it needs more bits than
/// the item's form holds.
#[inline]
#[must_use]
pub(crate) fn set_cas(b: &mut [u8], v: u64) -> bool {
    let h = header_mut(b);
    let wide = len_field(h) & WIDE_CAS != 0;
    if v >= NARROW_CAS_LIMIT && !wide {
        return false;
    }
    h[CAS..CAS + 6].copy_from_slice(&v.to_le_bytes()[..6]);
    if wide {
        let at = cas_high_at(h);
        h[at..at + 2].copy_from_slice(&((v >> 48) as u16).to_le_bytes());
    }
    true
}
#[inline]
pub(crate) fn flags(b: &[u8]) -> u32 {
    let h = header(b);
    if h[STATE] & HAS_FLAGS != 0 {
        rd32(h, flags_at(h))
    } else {
        0
    }
}
#[inline]
pub(crate) fn atime(b: &[u8]) -> u32 {
    rd32(header(b), ATIME)
}
#[inline]
pub(crate) fn set_atime(b: &mut [u8], v: u32) {
    wr32(b, ATIME, v)
}
#[inline]
pub(crate) fn value_len(b: &[u8]) -> usize {
    let h = header(b);
    let len = len_field(h);
    let low = (len & LEN_LOW_MASK) as usize;
    if len & LONG_VALUE != 0 {
        low | (rd16(h, len_high_at(h)) as usize) << LEN_LOW_BITS
    } else {
        low
    }
}
#[inline]
pub(crate) fn key_len(b: &[u8]) -> usize {
    header(b)[KEY_LEN] as usize
}
/// The state bits (LIVE, FETCHED, STALE, WIN_SENT and the segment), without the
/// form bits.
#[inline]
pub(crate) fn state(b: &[u8]) -> u8 {
    header(b)[STATE] & !FORM_BITS
}
/// Sets the state bits; the form bits stay as [`init`] wrote them.
#[inline]
pub(crate) fn set_state(b: &mut [u8], v: u8) {
    let h = header_mut(b);
    h[STATE] = (h[STATE] & FORM_BITS) | (v & !FORM_BITS);
}
/// The policy list the item is on (`policy::Segment` as 2 bits).
#[inline]
pub(crate) fn segment(b: &[u8]) -> u8 {
    (header(b)[STATE] & SEGMENT_MASK) >> SEGMENT_SHIFT
}
/// Sets the segment bits, keeping the other state bits.
#[inline]
pub(crate) fn set_segment(b: &mut [u8], seg: u8) {
    let h = header_mut(b);
    h[STATE] = (h[STATE] & !SEGMENT_MASK) | ((seg << SEGMENT_SHIFT) & SEGMENT_MASK);
}
#[inline]
pub(crate) fn is_live(b: &[u8]) -> bool {
    header(b)[STATE] & LIVE != 0
}
#[inline]
pub(crate) fn key(b: &[u8]) -> &[u8] {
    let h = header(b);
    let start = key_at(h);
    &b[start..start + h[KEY_LEN] as usize]
}
#[inline]
pub(crate) fn value(b: &[u8]) -> &[u8] {
    let h = header(b);
    let start = key_at(h) + h[KEY_LEN] as usize;
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

/// The item's size as `stats bytes` counts it: its header, key and value.
#[inline]
pub(crate) fn size(b: &[u8]) -> usize {
    key_at(header(b)) + key_len(b) + value_len(b)
}

/// Writes every header field except the links, and the key, in the smallest form
/// that holds them; the value's bytes are left for the caller (they may be
/// assembled from two parts). `b` must hold [`total_size`] bytes.
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
    assert!(
        value_len <= VALUE_LEN_MAX,
        "value length {value_len} needs more than 30 bits"
    );
    set_prev(b, NIL);
    set_next(b, NIL);
    set_atime(b, atime);
    b[KEY_LEN] = key.len() as u8;
    let mut state = LIVE;
    let mut len = (value_len as u16) & LEN_LOW_MASK;
    let mut at = EXTENSION;
    if expiry != 0 {
        state |= HAS_EXPIRY;
        wr32(b, at, expiry);
        at += 4;
    }
    if flags != 0 {
        state |= HAS_FLAGS;
        wr32(b, at, flags);
        at += 4;
    }
    if cas >= NARROW_CAS_LIMIT {
        len |= WIDE_CAS;
        wr16(b, at, (cas >> 48) as u16);
        at += 2;
    }
    if value_len >= LONG_VALUE_MIN {
        len |= LONG_VALUE;
        wr16(b, at, (value_len >> LEN_LOW_BITS) as u16);
        at += 2;
    }
    b[CAS..CAS + 6].copy_from_slice(&cas.to_le_bytes()[..6]);
    wr16(b, LEN, len);
    b[STATE] = state;
    b[at..at + key.len()].copy_from_slice(key);
    debug_assert_eq!(at, key_at(header(b)));
}

/// The value bytes for writing, for an item whose header is already written.
#[inline]
pub(crate) fn value_mut(b: &mut [u8]) -> &mut [u8] {
    let start = key_at(header(b)) + key_len(b);
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
            let mut b = vec![0u8; HEADER_MAX + 250];
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

    proptest::proptest! {
        /// Every form round-trips: each field reads back what `init` wrote, the
        /// size is `total_size`, and an in-place change succeeds exactly when the
        /// form has room for it, leaving every other field as it was.
        #[test]
        fn every_form_round_trips(
            key in proptest::collection::vec(proptest::num::u8::ANY, 1..=250),
            flags0 in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            expiry0 in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            cas0 in proptest::prop_oneof![0u64..NARROW_CAS_LIMIT, proptest::num::u64::ANY],
            len0 in proptest::prop_oneof![0usize..LONG_VALUE_MIN, 0usize..=VALUE_LEN_MAX],
            new_expiry in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::num::u32::ANY],
            new_cas in proptest::prop_oneof![0u64..NARROW_CAS_LIMIT, proptest::num::u64::ANY],
            state_bits in 0u8..0x40,
        ) {
            let size = total_size(key.len(), len0, flags0, expiry0, cas0);
            proptest::prop_assert!(size <= bounded_size(key.len(), len0));
            // Only the header and key are written; the value is left as it is.
            let header_and_key = size - len0;
            // The buffer ends 8 bytes past the key: a value of up to 1 GiB is not
            // allocated, and reading the value length needs none of its bytes.
            let mut buf = vec![0xA5u8; (header_and_key + 8).max(HEADER_MAX)];
            init(&mut buf, &key, flags0, expiry0, cas0, len0, 77);
            let b = &mut buf;
            set_prev(b, 5);
            set_next(b, 6);
            set_state(b, state_bits);
            let fields = |b: &[u8]| (flags(b), expiry(b), cas(b), value_len(b), atime(b), prev(b), next(b), state(b), key_of(b));
            proptest::prop_assert_eq!(
                fields(b),
                (flags0, expiry0, cas0, len0, 77, 5, 6, state_bits, key.clone())
            );
            proptest::prop_assert_eq!(key_at(header(b)) + key.len() + len0, size);
            proptest::prop_assert!(b[header_and_key..].iter().all(|&x| x == 0xA5), "nothing written past the key");

            let before = fields(b);
            let fits = set_expiry(b, new_expiry);
            proptest::prop_assert_eq!(fits, expiry0 != 0 || new_expiry == 0);
            let want_expiry = if fits { new_expiry } else { expiry0 };
            proptest::prop_assert_eq!(fields(b), (before.0, want_expiry, before.2, before.3, before.4, before.5, before.6, before.7, before.8.clone()));

            let before = fields(b);
            let fits = set_cas(b, new_cas);
            proptest::prop_assert_eq!(fits, cas0 >= NARROW_CAS_LIMIT || new_cas < NARROW_CAS_LIMIT);
            let want_cas = if fits { new_cas } else { cas0 };
            proptest::prop_assert_eq!(fields(b), (before.0, before.1, want_cas, before.3, before.4, before.5, before.6, before.7, before.8));
        }
    }

    // The key as an owned value, for the property test's tuple of fields.
    fn key_of(b: &[u8]) -> Vec<u8> {
        key(b).to_vec()
    }

    #[test]
    fn the_common_item_has_the_fixed_header_only() {
        // The memory figure's item: 14-byte key, 100-byte value, flags 0, no
        // expiry, a shard-sized CAS.
        assert_eq!(total_size(14, 100, 0, 0, 1 << 40), 136);
        assert_eq!(HEADER_MAX, 34, "-I counts what the header was before forms");
        assert_eq!(
            total_size(14, 100, 1, 1, u64::MAX),
            14 + 100 + HEADER_MAX - 2
        );
        assert_eq!(
            total_size(14, 1 << 14, 1, 1, u64::MAX),
            bounded_size(14, 1 << 14)
        );
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
        assert_eq!(size(&b), HEADER_MIN + 4 + 4 + 2 + 3 + 5);
        assert!(has_key(&b, b"key"));
        assert!(!has_key(&b, b"kez") && !has_key(&b, b"ke") && !has_key(&b, b"keys"));
        assert_eq!(STATE + 1, HEADER_MIN);
        set_segment(&mut b, 3);
        assert_eq!(segment(&b), 3);
        assert_eq!(
            state(&b),
            LIVE | 3 << 4,
            "segment bits leave the others alone"
        );
        set_segment(&mut b, 1);
        assert_eq!((segment(&b), state(&b) & 0b1100_1111), (1, LIVE));
        // Clearing the state (a freed chunk) leaves the form, so the fields still
        // read where they are.
        set_state(&mut b, 0);
        assert_eq!(
            (expiry(&b), flags(&b), key(&b)),
            (1234, 0xDEAD_BEEF, &b"key"[..])
        );
    }
}
