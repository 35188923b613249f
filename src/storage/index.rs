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
//!   and shift over any bucket count, so the table grows by half, not by doubling),
//!   its **tag** from the top 8 bits (0 marks an empty slot). A lookup compares
//!   the twelve tags of one cache line and reads an item only on a tag match
//!   (about 1 in 20 non-matching slots match by chance at full load).
//! - An entry whose home bucket is full goes to the next bucket with room, and
//!   every full bucket it passed counts one more **overflow**: a lookup goes on
//!   past a bucket only while its overflow is not zero, and removing the entry
//!   takes the counts back. Nearly every lookup reads one cache line.
//! - Since the bucket is known from the hash alone, [`Index::prefetch`] can
//!   start loading it before the lookup; a batch of pipelined requests loads all
//!   its buckets at once, then all its items (`Shard::prefetch`).
//!
//! Memory: 64 bytes per 12 slots, at most [`MAX_LOAD`] full and growing by
//! [`GROWTH`]: 5.9 to 7.4 bytes per entry (hashbrown, which this replaced: 5.7 to
//! 11.4, since it doubles). The price of growing by a quarter is rehashing more
//! often: each entry is moved about five times over the table's growth, against
//! about twice when doubling.

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

/// The buckets live in an anonymous mapping of their own, not on the heap: a
/// table the index has grown out of goes back to the kernel when it is dropped,
/// where malloc would keep it resident for reuse (measured: 4 bytes per item at
/// 1M items, the sum of the earlier tables).
pub(crate) struct Index {
    table: MmapMut,
    buckets: usize,
    len: usize,
}

#[inline]
fn tag(hash: u64) -> u8 {
    ((hash >> 56) as u8).max(1)
}

impl Index {
    pub fn new() -> io::Result<Index> {
        Ok(Index {
            table: MmapMut::map_anon(MIN_BUCKETS * BUCKET)?,
            buckets: MIN_BUCKETS,
            len: 0,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes of the bucket table.
    pub fn heap_bytes(&self) -> usize {
        self.buckets * BUCKET
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
        &self.table[b * BUCKET..(b + 1) * BUCKET]
    }

    #[inline]
    fn id(bucket: &[u8], slot: usize) -> u32 {
        let at = IDS + 4 * slot;
        u32::from_le_bytes(bucket[at..at + 4].try_into().expect("4 bytes"))
    }

    #[inline]
    fn overflow(bucket: &[u8]) -> u16 {
        u16::from_le_bytes([bucket[OVERFLOW], bucket[OVERFLOW + 1]])
    }

    /// Adds `delta` to bucket `b`'s overflow count, which saturates: a bucket at
    /// `u16::MAX` is always probed past, which is slower, never wrong.
    fn add_overflow(&mut self, b: usize, delta: i32) {
        let at = b * BUCKET + OVERFLOW;
        let o = u16::from_le_bytes([self.table[at], self.table[at + 1]]);
        if o != u16::MAX {
            let o = (o as i32 + delta).clamp(0, u16::MAX as i32) as u16;
            self.table[at..at + 2].copy_from_slice(&o.to_le_bytes());
        }
    }

    fn set_slot(&mut self, b: usize, slot: usize, tag: u8, id: u32) {
        let base = b * BUCKET;
        self.table[base + slot] = tag;
        let at = base + IDS + 4 * slot;
        self.table[at..at + 4].copy_from_slice(&id.to_le_bytes());
    }

    /// Starts loading the home bucket of `hash` (a hint: see the module doc).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        super::slab::prefetch_read(&self.table[self.home(hash) * BUCKET]);
    }

    /// The first id along `hash`'s probe sequence with `hash`'s tag for which
    /// `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.position(hash, eq)
            .map(|(b, s)| Self::id(self.bucket(b), s))
    }

    /// The first id whose tag matches `hash`'s, without comparing keys: the item
    /// a lookup of `hash` will most likely read (for prefetching).
    #[inline]
    pub fn first_candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// (bucket, slot) of the entry for `hash` that `eq` accepts.
    #[inline]
    fn position(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<(usize, usize)> {
        let t = tag(hash);
        let mut b = self.home(hash);
        loop {
            let bucket = self.bucket(b);
            for s in 0..SLOTS {
                if bucket[s] == t && eq(Self::id(bucket, s)) {
                    return Some((b, s));
                }
            }
            if Self::overflow(bucket) == 0 {
                return None;
            }
            b = self.next(b);
        }
    }

    /// Replaces the entry `old` stored under `hash` with `new`. Panics if `old`
    /// is not there: the caller's bookkeeping is broken.
    pub fn replace(&mut self, hash: u64, old: u32, new: u32) {
        let (b, s) = self
            .position(hash, |id| id == old)
            .expect("replaced entry is indexed");
        self.set_slot(b, s, tag(hash), new);
    }

    /// Removes the entry `id` stored under `hash`. Panics if it is not there.
    pub fn remove(&mut self, hash: u64, id: u32) {
        let (found, s) = self
            .position(hash, |x| x == id)
            .expect("removed entry is indexed");
        self.table[found * BUCKET + s] = 0;
        let mut b = self.home(hash);
        while b != found {
            self.add_overflow(b, -1);
            b = self.next(b);
        }
        self.len -= 1;
    }

    /// Makes room for one more entry, growing the table if it is full.
    /// `rehash` gives the hash of an indexed id, to move the entries. Fails
    /// (changing nothing) only if a larger table cannot be mapped.
    pub fn reserve(&mut self, rehash: impl Fn(u32) -> u64) -> io::Result<()> {
        if (self.len + 1) as f64 > MAX_LOAD * (self.buckets * SLOTS) as f64 {
            self.grow(rehash)?;
        }
        Ok(())
    }

    /// Adds `id` under `hash`, after [`reserve`](Self::reserve) (the caller
    /// knows the key is not indexed yet).
    pub fn insert(&mut self, hash: u64, id: u32) {
        assert!(self.len < self.buckets * SLOTS, "insert without reserve");
        self.place(hash, id);
        self.len += 1;
    }

    fn place(&mut self, hash: u64, id: u32) {
        let t = tag(hash);
        let mut b = self.home(hash);
        loop {
            if let Some(s) = self.bucket(b)[..SLOTS].iter().position(|&x| x == 0) {
                self.set_slot(b, s, t, id);
                return;
            }
            self.add_overflow(b, 1);
            b = self.next(b);
        }
    }

    fn grow(&mut self, rehash: impl Fn(u32) -> u64) -> io::Result<()> {
        let buckets = ((self.buckets as f64 * GROWTH).ceil() as usize).max(MIN_BUCKETS);
        let old = std::mem::replace(&mut self.table, MmapMut::map_anon(buckets * BUCKET)?);
        let old_buckets = std::mem::replace(&mut self.buckets, buckets);
        for b in 0..old_buckets {
            let bucket = &old[b * BUCKET..(b + 1) * BUCKET];
            for s in 0..SLOTS {
                if bucket[s] != 0 {
                    let id = Self::id(bucket, s);
                    self.place(rehash(id), id);
                }
            }
        }
        Ok(())
    }

    /// Every indexed id, in table order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.buckets).flat_map(move |b| {
            let bucket = self.bucket(b);
            (0..SLOTS)
                .filter(move |&s| bucket[s] != 0)
                .map(move |s| Self::id(bucket, s))
        })
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
        let mut ix = Index::new().unwrap();
        // Ids stand for keys here: id k is stored under h(k).
        for k in 0..10_000 {
            ix.reserve(h).unwrap();
            ix.insert(h(k), k);
        }
        assert_eq!(ix.len(), 10_000);
        for k in 0..10_000 {
            assert_eq!(ix.find(h(k), |id| id == k), Some(k));
        }
        assert_eq!(ix.find(h(20_000), |id| id == 20_000), None);
        let load = ix.len() as f64 / (ix.buckets * SLOTS) as f64;
        assert!(
            load > MAX_LOAD / GROWTH - 0.01 && load <= MAX_LOAD,
            "load {load}"
        );
        let per_entry = ix.heap_bytes() as f64 / ix.len() as f64;
        assert!(per_entry < 7.5, "{per_entry} bytes per entry");
    }

    #[test]
    fn overflow_chains_are_followed_and_taken_back() {
        // Every key hashes to bucket 0 (low 32 bits 0) with the same tag.
        let same = |k: u32| ((k as u64) << 32) & 0x00ff_ffff_0000_0000 | (7 << 56);
        let mut ix = Index::new().unwrap();
        let n = 3 * SLOTS as u32;
        for k in 0..n {
            ix.reserve(same).unwrap();
            ix.insert(same(k), k);
        }
        for k in 0..n {
            assert_eq!(ix.find(same(k), |id| id == k), Some(k));
        }
        assert!(Index::overflow(ix.bucket(0)) > 0);
        for k in 0..n {
            ix.remove(same(k), k);
        }
        assert_eq!(ix.len(), 0);
        assert!((0..ix.buckets).all(|b| ix.bucket(b)[..OVERFLOW + 2].iter().all(|&x| x == 0)));
    }

    #[test]
    fn replace_swaps_the_id_in_place() {
        let mut ix = Index::new().unwrap();
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
            let mut ix = Index::new().unwrap();
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
