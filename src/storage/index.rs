//! The index: a key's hash to the chunk id of its item.
//!
//! A table of buckets of one cache line each, twelve slots per bucket:
//!
//! ```text
//! byte  0                12        14        16                                      64
//!       +----------------+---------+---------+---------------------------------------+
//!       | tags: 12 x u8  | overflow| (pad)   | ids: 12 x u32 chunk ids               |
//!       +----------------+---------+---------+---------------------------------------+
//! ```
//!
//! - A key's **home** bucket comes from the low 32 bits of its hash (a multiply
//!   and shift over any bucket count, so the table can grow by a quarter instead
//!   of doubling), its **tag** from the top 8 bits (0 marks an empty slot). A
//!   lookup compares the twelve tags of one cache line and reads an item only on
//!   a tag match (a tag matches by chance in about 1 lookup in 20 at full load).
//! - An entry whose home bucket is full goes to the next bucket with room, and
//!   every full bucket it passed counts one more **overflow**: a lookup goes on
//!   past a bucket only while its overflow is not zero, and removing the entry
//!   takes the counts back. Nearly every lookup reads one cache line.
//! - Homes and tags come from the key hash mixed with a **secret seed** per
//!   shard (`mix(hash ^ seed)`): the key hash itself is public (clients compute
//!   it to pick a core), so without the seed anyone who chooses keys could aim
//!   them all at one bucket and make every lookup walk the table.
//! - Since the bucket is known from the hash alone, [`Index::prefetch`] can
//!   start loading it before the lookup; a batch of pipelined requests loads all
//!   its buckets at once, then all its items (`Shard::prefetch`).
//! - **Growing never stalls the core.** Moving an entry needs its hash, and the
//!   hash needs the item's key: a cache miss per entry, 0.7 s for a table of 4M
//!   entries moved at once (measured). So when the table is full a larger one
//!   is mapped and the entries move over a few buckets per insert
//!   ([`MIGRATE_BUCKETS`]), as memcached's hash expansion does in the
//!   background; meanwhile lookups try the new table, then the old.
//!
//! Memory: 64 bytes per 12 slots, at most [`MAX_LOAD`] full and growing by
//! [`GROWTH`]: 5.9 to 7.4 bytes per entry (hashbrown, which this replaced: 5.7 to
//! 11.4, since it doubles), plus the old table while entries move (for about
//! 1 insert in 60 after each growth).

use std::io;

use memmap2::MmapMut;

/// Slots per bucket: 12 tags and 12 ids fill one 64-byte cache line.
const SLOTS: usize = 12;
/// Bytes per bucket: one cache line.
const BUCKET: usize = 64;
/// Byte offsets inside a bucket (the table in the module doc).
const OVERFLOW: usize = 12;
const IDS: usize = 16;
/// Entries per slot at most before the table grows.
const MAX_LOAD: f64 = 0.9;
/// Each growth multiplies the bucket count by this.
const GROWTH: f64 = 1.25;
/// Buckets of the first table.
const MIN_BUCKETS: usize = 4;
/// Old buckets whose entries move to the new table on each insert while the
/// table grows. The new table has room for a quarter more entries, so even
/// inserts alone finish the move long before it fills: after about
/// 1/(MAX_LOAD x SLOTS x MIGRATE_BUCKETS) = 1/43 of the entries again.
const MIGRATE_BUCKETS: usize = 4;

/// The hash the tables see for a key hash (see the module doc).
#[inline]
fn scramble(seed: u64, hash: u64) -> u64 {
    if seed == 0 {
        hash
    } else {
        crate::keyhash::mix(hash ^ seed)
    }
}

#[inline]
fn tag(hash: u64) -> u8 {
    ((hash >> 56) as u8).max(1)
}

/// One table of buckets, in an anonymous mapping of its own: a table the index
/// has grown out of goes back to the kernel when it is dropped, where malloc
/// would keep it resident for reuse (measured: 4 bytes per item at 1M items,
/// the sum of the earlier tables).
struct Table {
    map: MmapMut,
    buckets: usize,
}

impl Table {
    fn new(buckets: usize) -> io::Result<Table> {
        Ok(Table {
            map: MmapMut::map_anon(buckets * BUCKET)?,
            buckets,
        })
    }

    fn slots(&self) -> usize {
        self.buckets * SLOTS
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((hash as u32 as u64 * self.buckets as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets {
            0
        } else {
            b + 1
        }
    }

    #[inline]
    fn bucket(&self, b: usize) -> &[u8] {
        &self.map[b * BUCKET..(b + 1) * BUCKET]
    }

    #[inline]
    fn id(bucket: &[u8], slot: usize) -> u32 {
        let at = IDS + 4 * slot;
        u32::from_le_bytes(bucket[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The slots of `bucket` whose tag is `t`, lowest first: the twelve tags are
    /// compared at once, a byte per lane of one 128-bit word (a scalar loop
    /// was a compare and branch per slot on every lookup).
    #[inline]
    fn slots_tagged(bucket: &[u8], t: u8) -> impl Iterator<Item = usize> {
        const ONES: u128 = u128::MAX / 0xFF;
        const LOW7: u128 = ONES * 0x7F;
        const TAG_LANES: u128 = (1 << (8 * SLOTS)) - 1;
        let word = u128::from_le_bytes(bucket[..16].try_into().expect("16 bytes"));
        let x = word ^ (ONES * t as u128);
        // Bit 7 of each byte set exactly where that byte of x is zero: the
        // addition cannot carry between bytes since their top bits are masked.
        let mut zero = !(((x & LOW7) + LOW7) | x | LOW7) & TAG_LANES;
        std::iter::from_fn(move || {
            if zero == 0 {
                return None;
            }
            let slot = zero.trailing_zeros() as usize / 8;
            zero &= zero - 1;
            Some(slot)
        })
    }

    #[inline]
    fn overflow(bucket: &[u8]) -> u16 {
        u16::from_le_bytes([bucket[OVERFLOW], bucket[OVERFLOW + 1]])
    }

    /// Adds `delta` to bucket `b`'s overflow count, which saturates: a bucket at
    /// `u16::MAX` is always probed past, which is slower, never wrong.
    fn add_overflow(&mut self, b: usize, delta: i32) {
        let at = b * BUCKET + OVERFLOW;
        let o = u16::from_le_bytes([self.map[at], self.map[at + 1]]);
        if o != u16::MAX {
            let o = (o as i32 + delta).clamp(0, u16::MAX as i32) as u16;
            self.map[at..at + 2].copy_from_slice(&o.to_le_bytes());
        }
    }

    fn set_slot(&mut self, b: usize, slot: usize, tag: u8, id: u32) {
        let base = b * BUCKET;
        self.map[base + slot] = tag;
        let at = base + IDS + 4 * slot;
        self.map[at..at + 4].copy_from_slice(&id.to_le_bytes());
    }

    /// (bucket, slot) of the entry for `hash` that `eq` accepts.
    #[inline]
    fn position(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        let t = tag(hash);
        let mut b = self.home(hash);
        // At most once round the table: overflow counts can all be non-zero (a
        // count outlives its bucket's own entries while the entry that passed
        // it lives), and a miss must still end.
        for _ in 0..self.buckets {
            let bucket = self.bucket(b);
            for s in Self::slots_tagged(bucket, t) {
                if eq(Self::id(bucket, s)) {
                    return Some((b, s));
                }
            }
            if Self::overflow(bucket) == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// Empties slot `s` of bucket `found`, which holds an entry for `hash`, and
    /// takes back the overflow counts its placement added.
    fn clear(&mut self, hash: u64, found: usize, s: usize) {
        self.map[found * BUCKET + s] = 0;
        let mut b = self.home(hash);
        while b != found {
            self.add_overflow(b, -1);
            b = self.next(b);
        }
    }

    /// Stores `id` in the first bucket with room from `hash`'s home on (the
    /// caller makes sure there is room).
    fn place(&mut self, hash: u64, id: u32) {
        let t = tag(hash);
        let mut b = self.home(hash);
        loop {
            if let Some(s) = Self::slots_tagged(self.bucket(b), 0).next() {
                self.set_slot(b, s, t, id);
                return;
            }
            self.add_overflow(b, 1);
            b = self.next(b);
        }
    }

    #[cfg(test)]
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.buckets).flat_map(move |b| {
            let bucket = self.bucket(b);
            (0..SLOTS)
                .filter(move |&s| bucket[s] != 0)
                .map(move |s| Self::id(bucket, s))
        })
    }
}

/// The table being grown out of, and the next of its buckets to move.
struct Migration {
    table: Table,
    next_bucket: usize,
}

pub(crate) struct Index {
    /// Mixed into every hash (see the module doc); 0 leaves hashes as they are,
    /// which tests use to choose buckets.
    seed: u64,
    table: Table,
    /// Set while entries move to `table` from a smaller table.
    old: Option<Migration>,
    len: usize,
}

impl Index {
    pub fn new(seed: u64) -> io::Result<Index> {
        Ok(Index {
            seed,
            table: Table::new(MIN_BUCKETS)?,
            old: None,
            len: 0,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the bucket tables.
    pub fn heap_bytes(&self) -> usize {
        (self.table.buckets + self.old.as_ref().map_or(0, |m| m.table.buckets)) * BUCKET
    }

    #[inline]
    fn scramble(&self, hash: u64) -> u64 {
        scramble(self.seed, hash)
    }

    /// Starts loading the home bucket of `hash` (a hint: see the module doc).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let hash = self.scramble(hash);
        super::slab::prefetch_read(&self.table.map[self.table.home(hash) * BUCKET]);
    }

    /// The first id along `hash`'s probe sequence with `hash`'s tag for which
    /// `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let hash = self.scramble(hash);
        if let Some((b, s)) = self.table.position(hash, &mut eq) {
            return Some(Table::id(self.table.bucket(b), s));
        }
        let old = &self.old.as_ref()?.table;
        old.position(hash, eq)
            .map(|(b, s)| Table::id(old.bucket(b), s))
    }

    /// The first id whose tag matches `hash`'s, without comparing keys: the item
    /// a lookup of `hash` will most likely read (for prefetching).
    #[inline]
    pub fn first_candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// The table holding the entry `id` for `hash`, and where.
    /// `hash` is scrambled already.
    fn locate(&mut self, hash: u64, id: u32) -> Option<(&mut Table, usize, usize)> {
        if let Some((b, s)) = self.table.position(hash, |x| x == id) {
            return Some((&mut self.table, b, s));
        }
        let old = &mut self.old.as_mut()?.table;
        let (b, s) = old.position(hash, |x| x == id)?;
        Some((old, b, s))
    }

    /// Replaces the entry `old` stored under `hash` with `new`. Panics if `old`
    /// is not there: the caller's bookkeeping is broken.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) {
        let hash = self.scramble(hash);
        let (table, b, s) = self.locate(hash, old).expect("replaced entry is indexed");
        table.set_slot(b, s, tag(hash), new);
    }

    /// Removes the entry `id` stored under `hash`. Panics if it is not there.
    pub fn remove(&mut self, hash: u64, id: u32) {
        let hash = self.scramble(hash);
        let (table, b, s) = self.locate(hash, id).expect("removed entry is indexed");
        table.clear(hash, b, s);
        self.len -= 1;
    }

    /// Makes room for one more entry: moves a few buckets of a growth in
    /// progress, or starts one if the table is full. `rehash` gives the hash of
    /// an indexed id, to move its entry. Fails (changing nothing) only if a
    /// larger table cannot be mapped.
    pub fn reserve(&mut self, rehash: impl Fn(u32) -> u64) -> io::Result<()> {
        let full = |slots: usize, len: usize| (len + 1) as f64 > MAX_LOAD * slots as f64;
        if self.old.is_some() {
            // The new table filling before the move is done cannot happen with
            // inserts alone (see MIGRATE_BUCKETS); finishing the move covers it.
            let steps = if full(self.table.slots(), self.len) {
                usize::MAX
            } else {
                MIGRATE_BUCKETS
            };
            self.migrate(steps, &rehash);
        }
        if self.old.is_none() && full(self.table.slots(), self.len) {
            let buckets = (self.table.buckets as f64 * GROWTH).ceil() as usize;
            let old = std::mem::replace(&mut self.table, Table::new(buckets)?);
            self.old = Some(Migration {
                table: old,
                next_bucket: 0,
            });
            self.migrate(MIGRATE_BUCKETS, &rehash);
        }
        Ok(())
    }

    /// Moves the entries of up to `buckets` old buckets to the new table; drops
    /// the old table once it is empty.
    fn migrate(&mut self, buckets: usize, rehash: &impl Fn(u32) -> u64) {
        let seed = self.seed;
        let Some(m) = self.old.as_mut() else {
            return;
        };
        let end = m.next_bucket.saturating_add(buckets).min(m.table.buckets);
        for b in m.next_bucket..end {
            for s in 0..SLOTS {
                let bucket = m.table.bucket(b);
                if bucket[s] != 0 {
                    let id = Table::id(bucket, s);
                    let hash = scramble(seed, rehash(id));
                    m.table.clear(hash, b, s);
                    self.table.place(hash, id);
                }
            }
        }
        m.next_bucket = end;
        if end == m.table.buckets {
            self.old = None;
        }
    }

    /// Adds `id` under `hash`, after [`reserve`](Self::reserve) (the caller
    /// knows the key is not indexed yet).
    pub fn insert(&mut self, hash: u64, id: u32) {
        let hash = self.scramble(hash);
        assert!(self.len < self.table.slots(), "insert without reserve");
        self.table.place(hash, id);
        self.len += 1;
    }

    /// Every indexed id.
    #[cfg(test)]
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.table
            .ids()
            .chain(self.old.iter().flat_map(|m| m.table.ids()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Test hashes: the id spread by a multiplier, so homes and tags vary.
    fn h(key: u32) -> u64 {
        (key as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn finds_what_was_inserted_through_growth() {
        let mut ix = Index::new(0).unwrap();
        // Ids stand for keys here: id k is stored under h(k). Insert until a
        // growth has finished moving, past 10,000.
        let mut n = 0;
        while n < 10_000 || ix.old.is_some() {
            ix.reserve(h).unwrap();
            ix.insert(h(n), n);
            n += 1;
        }
        assert_eq!(ix.len(), n as usize);
        for k in 0..n {
            assert_eq!(ix.find(h(k), |id| id == k), Some(k));
        }
        assert_eq!(ix.find(h(n + 1), |id| id == n + 1), None);
        let load = ix.len() as f64 / ix.table.slots() as f64;
        assert!(
            load > MAX_LOAD / GROWTH - 0.01 && load <= MAX_LOAD,
            "load {load}"
        );
        let per_entry = ix.heap_bytes() as f64 / ix.len() as f64;
        assert!(per_entry < 7.5, "{per_entry} bytes per entry");
    }

    #[test]
    fn growth_moves_entries_a_few_buckets_per_insert() {
        let mut ix = Index::new(0).unwrap();
        let mut n = 0;
        while ix.old.is_none() {
            ix.reserve(h).unwrap();
            ix.insert(h(n), n);
            n += 1;
        }
        // The growth started on the last insert and moved MIGRATE_BUCKETS old
        // buckets; everything is still found, in one table or the other.
        let old_buckets = ix.old.as_ref().unwrap().table.buckets;
        assert_eq!(
            ix.old.as_ref().unwrap().next_bucket,
            MIGRATE_BUCKETS.min(old_buckets)
        );
        for k in 0..n {
            assert_eq!(ix.find(h(k), |id| id == k), Some(k));
        }
        // Removals and replacements reach entries not moved yet.
        ix.remove(h(0), 0);
        ix.replace(h(1), 1, 1_000_001);
        assert_eq!(ix.find(h(0), |id| id == 0), None);
        assert_eq!(ix.find(h(1), |id| id == 1_000_001), Some(1_000_001));
        let mut inserts = 0;
        while ix.old.is_some() {
            ix.reserve(h).unwrap();
            ix.insert(h(n), n);
            n += 1;
            inserts += 1;
        }
        assert!(
            inserts <= old_buckets.div_ceil(MIGRATE_BUCKETS),
            "{inserts} inserts"
        );
        assert_eq!(ix.ids().count(), ix.len());
        for k in 2..n {
            assert_eq!(ix.find(h(k), |id| id == k), Some(k));
        }
    }

    #[test]
    fn overflow_chains_are_followed_and_taken_back() {
        // Every key hashes to bucket 0 (low 32 bits 0) with the same tag.
        let same = |k: u32| ((k as u64) << 32) & 0x00ff_ffff_0000_0000 | (7 << 56);
        let mut ix = Index::new(0).unwrap();
        let n = 3 * SLOTS as u32;
        for k in 0..n {
            ix.reserve(same).unwrap();
            ix.insert(same(k), k);
        }
        for k in 0..n {
            assert_eq!(ix.find(same(k), |id| id == k), Some(k));
        }
        assert!(Table::overflow(ix.table.bucket(0)) > 0);
        for k in 0..n {
            ix.remove(same(k), k);
        }
        assert_eq!(ix.len(), 0);
        assert!((0..ix.table.buckets)
            .all(|b| ix.table.bucket(b)[..OVERFLOW + 2].iter().all(|&x| x == 0)));
    }

    #[test]
    fn a_miss_ends_when_every_bucket_counts_overflow() {
        // Key k of home h: the top 2 bits of the low 32 select one of the 4
        // buckets of a new table; the id is the key.
        let hash = |k: u32| (((k / 100) as u64) << 30) | ((k % 100) as u64) << 40 | (9 << 56);
        let mut ix = Index::new(0).unwrap();
        assert_eq!(ix.table.buckets, 4);
        // For every home, 13 keys (one overflows into the next bucket, the last
        // home's wraps to bucket 0), then the 12 in the home bucket deleted:
        // every bucket counts one overflow, and the table holds 4 entries.
        for h in 0..4u32 {
            let keys: Vec<u32> = (0..13).map(|i| h * 100 + i).collect();
            for &k in &keys {
                ix.reserve(hash).unwrap();
                ix.insert(hash(k), k);
            }
            for &k in &keys[..12] {
                ix.remove(hash(k), k);
            }
        }
        assert_eq!(ix.len(), 4);
        assert!((0..4).all(|b| Table::overflow(ix.table.bucket(b)) > 0));
        assert_eq!(ix.find(hash(50), |id| id == 50), None);
        for h in 0..4u32 {
            assert_eq!(
                ix.find(hash(h * 100 + 12), |id| id == h * 100 + 12),
                Some(h * 100 + 12)
            );
        }
    }

    #[test]
    fn a_secret_seed_spreads_keys_aimed_at_one_bucket() {
        // 1000 key hashes that agree in their low 32 bits: unseeded, they all
        // share a home bucket and pile up in one overflow chain.
        let aimed = |k: u32| (k as u64 + 1) << 32;
        let longest_chain = |seed: u64| {
            let mut ix = Index::new(seed).unwrap();
            for k in 0..1000 {
                ix.reserve(aimed).unwrap();
                ix.insert(aimed(k), k);
            }
            for k in 0..1000 {
                assert_eq!(ix.find(aimed(k), |id| id == k), Some(k));
            }
            (0..ix.table.buckets)
                .map(|b| Table::overflow(ix.table.bucket(b)))
                .max()
                .unwrap()
        };
        assert!(longest_chain(0) > 500, "unseeded: one long chain");
        assert!(
            longest_chain(0x5eed_1234_abcd_0001) < 24,
            "seeded: spread out"
        );
    }

    #[test]
    fn replace_swaps_the_id_in_place() {
        let mut ix = Index::new(0).unwrap();
        ix.reserve(h).unwrap();
        ix.insert(h(1), 1);
        ix.replace(h(1), 1, 99);
        assert_eq!(ix.find(h(1), |id| id == 99), Some(99));
        assert_eq!(ix.find(h(1), |id| id == 1), None);
        assert_eq!(ix.ids().collect::<Vec<_>>(), vec![99]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16),
        Remove(u16),
        Replace(u16),
    }

    proptest! {
        /// The word-at-a-time tag compare finds exactly the slots a byte loop
        /// finds, whatever the other bytes of the bucket hold (tags that differ
        /// from `t` by one bit or by borrow patterns, overflow bytes equal to `t`).
        #[test]
        fn slots_tagged_matches_a_byte_loop(
            bucket in prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0x80), Just(0xFF), any::<u8>()], BUCKET),
            t in prop_oneof![Just(0u8), Just(1), Just(0x80), Just(0xFF), any::<u8>()],
        ) {
            let found: Vec<usize> = Table::slots_tagged(&bucket, t).collect();
            let model: Vec<usize> = (0..SLOTS).filter(|&s| bucket[s] == t).collect();
            prop_assert_eq!(found, model);
        }

        /// Any sequence of inserts, removals and replacements leaves the index
        /// holding exactly what a HashMap model holds. Keys come from a small
        /// space with a hash of few distinct values, so buckets overflow and
        /// tags collide.
        #[test]
        fn index_matches_a_model(ops in prop::collection::vec(
            prop_oneof![
                (0u16..400).prop_map(Op::Insert),
                (0u16..400).prop_map(Op::Remove),
                (0u16..400).prop_map(Op::Replace),
            ],
            1..2000,
        )) {
            // key -> id; the hash of an id is the hash of its key (id = key or
            // key + 1000 after a replacement).
            let hash = |id: u32| {
                let key = (id % 1000) as u64;
                ((key % 37) << 27) | ((key % 5) << 56)
            };
            let mut ix = Index::new(0).unwrap();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let k = k as u32;
                        if let std::collections::hash_map::Entry::Vacant(e) = model.entry(k) {
                            ix.reserve(hash).unwrap();
                            ix.insert(hash(k), k);
                            e.insert(k);
                        }
                    }
                    Op::Remove(k) => {
                        let k = k as u32;
                        if let Some(id) = model.remove(&k) {
                            ix.remove(hash(id), id);
                        }
                    }
                    Op::Replace(k) => {
                        let k = k as u32;
                        if let Some(id) = model.get_mut(&k) {
                            let new = if *id == k { k + 1000 } else { k };
                            ix.replace(hash(*id), *id, new);
                            *id = new;
                        }
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
            }
            for (&k, &id) in &model {
                prop_assert_eq!(ix.find(hash(id), |x| x % 1000 == k), Some(id));
            }
            let mut ids: Vec<u32> = ix.ids().collect();
            let mut want: Vec<u32> = model.values().copied().collect();
            ids.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(ids, want);
        }
    }
}
