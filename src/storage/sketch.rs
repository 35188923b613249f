//! The frequency sketch of W-TinyLFU: how often was a key seen lately?
//!
//! This is Caffeine's `FrequencySketch` (Ben Manes, after Einziger, Friedman and
//! Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", ACM ToS 2017), plus
//! the paper's doorkeeper. Every number it returns is an estimate that can only be
//! too high (a count-min sketch never undercounts), capped at 15 + 1.
//!
//! # Layout (paper section 3.2; Caffeine's block layout)
//!
//! The table is `u64` words, each holding 16 counters of 4 bits. Words are grouped
//! in blocks of 8 (64 bytes, one cache line). A key picks one block from its hash,
//! then one counter in each of 4 word pairs of that block: depth 4, and one cache
//! miss per lookup instead of four.
//!
//! ```text
//!  block = 8 words = 64 bytes          counter i (i = 0..4) of a key:
//!  +------+------+------+------+--      word  = block*8 + 2*i + (bit 0 of byte i)
//!  | w0   | w1   | w2   | w3   | ..     nibble = bits 1..4 of byte i of the counter hash
//!  +------+------+------+------+--
//!   i=0 uses w0 or w1, i=1 uses w2 or w3, ...
//! ```
//!
//! # Size
//!
//! One word (16 counters) per [`ITEMS_PER_WORD`] items of capacity, rounded up to
//! a power of two: 4 bytes per item, half of Caffeine's sizing (a `long` per
//! entry). Four 4-bit counters suffice because the sketch only has to tell "seen
//! a few times lately" from "seen once": paper section 3.4.1 (small counters).
//! The half width costs little hit ratio on the shared traces (OLTP@1000 39.93
//! -> 39.72, gli@1000 51.09 -> 50.96, sprite@500 77.82 -> 77.88, the server
//! replays' key sequences unchanged) and saves 4 bytes per item, and a smaller
//! table misses the CPU caches less on every access.
//!
//! # Aging: reset (paper section 3.3)
//!
//! After [`SAMPLE_MULTIPLIER`] x capacity recorded events every counter is halved
//! and the doorkeeper cleared, so frequencies describe the recent past and a key
//! that was hot last hour does not stay unbeatable.
//!
//! # Doorkeeper (paper section 3.4.2)
//!
//! A Bloom filter in front of the counters: the first sighting of a key since the
//! last reset only sets its doorkeeper bits; only later sightings reach the counters.
//! Most keys of a large key space are seen once, so this keeps them out of the
//! counters (fewer collisions for the keys that matter). A key in the doorkeeper
//! counts one more than its counters say.
//!
//! Hits, and rewrites that keep their slab class, of items the cache holds skip
//! the doorkeeper ([`Sketch::increment_resident`]): their first sighting went
//! through it when they were stored, and after a reset the estimate is the same
//! either way. The doorkeeper is read by stores of keys not held, by frequency
//! estimates (admission duels, rebalancing samples), not by the hit path; this
//! left the shared traces' figures equal or slightly higher (OLTP@1000 39.66 ->
//! 39.85, sprite@500 77.69 -> 78.04).
//!
//! The doorkeeper is blocked: a key's bits all lie in one 64-byte line, so a
//! sighting costs one cache miss rather than one per bit. With 8 bits per item
//! the false positives hardly change for large caches; on the shared traces'
//! small capacities it cost up to 0.66 points (OLTP@1000 39.72 -> 39.66,
//! gli@500 27.83 -> 27.33, gli@1000 50.96 -> 50.86, sprite@200 47.97 -> 47.31,
//! sprite@500 77.88 -> 77.69, before hits skipped it); the server served a
//! median 8% more requests per CPU-second at pipeline 16 (four alternated runs
//! on the 2-core VM, whose run-to-run spread is wider than that).

use super::slab::MappedWords;

/// Counters per 64-bit word.
const COUNTERS_PER_WORD: usize = 16;
/// Words per block: 8 x 8 bytes = one 64-byte cache line.
const BLOCK_WORDS: usize = 8;
/// Items of capacity per word of counters (Caffeine: one `long` per entry).
const ITEMS_PER_WORD: usize = 2;
/// Counters are halved after this many events per item of capacity (paper 3.3,
/// Caffeine's `sampleSize = 10 * maximum`).
const SAMPLE_MULTIPLIER: u64 = 10;
/// Doorkeeper bits per item of capacity. It sees up to `SAMPLE_MULTIPLIER` x
/// capacity events per period, most of them repeats of fewer distinct keys.
const DOORKEEPER_BITS_PER_ITEM: usize = 8;
/// Bits in a doorkeeper line: one 64-byte cache line.
const DOOR_LINE_BITS: u64 = 512;
/// Bits a key sets in the doorkeeper.
const DOORKEEPER_HASHES: u32 = 3;
/// The lowest bit of every 4-bit counter, to count odd counters on reset.
const ONE_MASK: u64 = 0x1111_1111_1111_1111;
/// After shifting a word right by one, clears the bit that crossed into the next
/// counter down: halves all 16 counters at once.
const RESET_MASK: u64 = 0x7777_7777_7777_7777;
/// A counter's largest value.
const COUNTER_MAX: u64 = 15;

pub struct Sketch {
    table: MappedWords,
    /// `table.len() / BLOCK_WORDS - 1` (block count is a power of two).
    block_mask: usize,
    doorkeeper: MappedWords,
    /// Doorkeeper lines - 1 (a power of two).
    door_line_mask: u64,
    /// Events since the last reset, as Caffeine counts them (see `reset`).
    size: u64,
    /// Events between resets.
    sample_size: u64,
    /// The capacity the table was sized for.
    capacity: usize,
    resets: u64,
}

// The key hash also picks the shard, so its bits may be alike for all keys of a
// shard: the sketch slices `mix(key_hash)` instead.
use crate::keyhash::mix;

impl Sketch {
    /// A sketch for a cache of `capacity` items; with 0, an empty one that
    /// counts nothing until [`ensure_capacity`](Self::ensure_capacity).
    pub fn new(capacity: usize) -> Sketch {
        let mut s = Sketch {
            table: MappedWords::empty(),
            block_mask: 0,
            doorkeeper: MappedWords::empty(),
            door_line_mask: 0,
            size: 0,
            sample_size: 0,
            capacity: 0,
            resets: 0,
        };
        if capacity > 0 {
            s.ensure_capacity(capacity);
        }
        s
    }

    /// Grows the sketch for a cache of `capacity` items (Caffeine's
    /// `ensureCapacity`): counts are forgotten, as after a resize there is no way
    /// to place the old ones. Never shrinks; growing only past a power of two
    /// reallocates. Returns whether the table was replaced (counts forgotten).
    pub fn ensure_capacity(&mut self, capacity: usize) -> bool {
        let capacity = capacity.max(1);
        if capacity <= self.capacity {
            return false;
        }
        let words = capacity
            .div_ceil(ITEMS_PER_WORD)
            .next_power_of_two()
            .max(BLOCK_WORDS);
        let replaced = words > self.table.len();
        if replaced {
            let bits = (capacity * DOORKEEPER_BITS_PER_ITEM)
                .next_power_of_two()
                .max(DOOR_LINE_BITS as usize);
            // Out of memory for a larger table: the smaller one keeps counting
            // (less precisely), which is better than failing the store that grew
            // the cache; a later growth tries again.
            let (Ok(table), Ok(doorkeeper)) =
                (MappedWords::zeroed(words), MappedWords::zeroed(bits / 64))
            else {
                return false;
            };
            self.table = table;
            self.block_mask = words / BLOCK_WORDS - 1;
            self.doorkeeper = doorkeeper;
            self.door_line_mask = (bits as u64 / DOOR_LINE_BITS) - 1;
            self.size = 0;
        }
        self.capacity = capacity;
        self.sample_size = SAMPLE_MULTIPLIER * capacity as u64;
        replaced
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Bytes held by the table and the doorkeeper.
    pub fn heap_bytes(&self) -> usize {
        (self.table.len() + self.doorkeeper.len()) * 8
    }

    /// The word index and nibble shift of counter `i` of a key.
    #[inline]
    fn slot(&self, h: u64, i: usize) -> (usize, u32) {
        let block = ((h >> 32) as usize & self.block_mask) * BLOCK_WORDS;
        let byte = (h >> (i * 8)) as usize;
        let word = block + 2 * i + (byte & 1);
        let nibble = (byte >> 1) % COUNTERS_PER_WORD;
        (word, (nibble * 4) as u32)
    }

    /// The doorkeeper bits of a key: `DOORKEEPER_HASHES` positions inside one
    /// 512-bit line picked by the hash (a blocked Bloom filter, Putze, Sanders and
    /// Singler 2007), so a sighting costs one cache miss instead of one per bit.
    #[inline]
    fn door_bits(&self, h: u64) -> impl Iterator<Item = u64> + '_ {
        let g = mix(h);
        let line = ((g >> 32) & self.door_line_mask) * DOOR_LINE_BITS;
        (0..DOORKEEPER_HASHES as u64).map(move |k| line + ((g >> (9 * k)) & (DOOR_LINE_BITS - 1)))
    }

    fn door_contains(&self, h: u64) -> bool {
        self.door_bits(h)
            .all(|bit| self.doorkeeper[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Sets the key's doorkeeper bits; true if they were all set already.
    fn door_insert(&mut self, h: u64) -> bool {
        let mut present = true;
        let bits: [u64; DOORKEEPER_HASHES as usize] = {
            let mut it = self.door_bits(h);
            std::array::from_fn(|_| it.next().expect("DOORKEEPER_HASHES bits"))
        };
        for bit in bits {
            let w = &mut self.doorkeeper[(bit / 64) as usize];
            let m = 1u64 << (bit % 64);
            present &= *w & m != 0;
            *w |= m;
        }
        present
    }

    /// Starts loading the cache line that holds the key's counters (a hint,
    /// like the index's: a batch of requests loads all its lines at once). Not
    /// the doorkeeper's: hits do not read it, and a batch is mostly hits.
    #[inline]
    pub fn prefetch(&self, key_hash: u64) {
        if !self.table.is_empty() {
            let (word, _) = self.slot(mix(key_hash), 0);
            super::slab::prefetch_read(&self.table[word]);
        }
    }

    /// Estimated number of times the key was seen since counts were last halved
    /// (0..=16).
    pub fn frequency(&self, key_hash: u64) -> u8 {
        if self.table.is_empty() {
            return 0;
        }
        let h = mix(key_hash);
        let counters = (0..4)
            .map(|i| {
                let (word, shift) = self.slot(h, i);
                (self.table[word] >> shift) & COUNTER_MAX
            })
            .min()
            .expect("depth 4") as u8;
        counters + self.door_contains(h) as u8
    }

    /// Records one sighting of the key.
    pub fn increment(&mut self, key_hash: u64) {
        self.record(key_hash, true);
    }

    /// Records a sighting of a key held in the cache (a hit, a rewrite): straight
    /// to the counters. Its first sighting, when it was stored, went through
    /// the doorkeeper; after a reset the estimate comes out the same either way
    /// (the doorkeeper bit or one more count), and the doorkeeper's line is
    /// not touched on the common path.
    pub fn increment_resident(&mut self, key_hash: u64) {
        self.record(key_hash, false);
    }

    fn record(&mut self, key_hash: u64, through_doorkeeper: bool) {
        if self.table.is_empty() {
            return;
        }
        let h = mix(key_hash);
        // The first sighting since the last reset only goes to the doorkeeper.
        if !through_doorkeeper || self.door_insert(h) {
            // Conservative update would be more precise; Caffeine increments all four
            // (simpler, and the halving bounds the error).
            for i in 0..4 {
                let (word, shift) = self.slot(h, i);
                if (self.table[word] >> shift) & COUNTER_MAX != COUNTER_MAX {
                    self.table[word] += 1 << shift;
                }
            }
        }
        self.size += 1;
        if self.size >= self.sample_size {
            self.reset();
        }
    }

    /// Halves every counter and clears the doorkeeper (paper section 3.3). Caffeine
    /// subtracts the truncation error (odd counters lose half a count) from the
    /// event count and halves it, so the next reset comes after about half a period.
    fn reset(&mut self) {
        let mut odd = 0u64;
        for w in self.table.iter_mut() {
            odd += (*w & ONE_MASK).count_ones() as u64;
            *w = (*w >> 1) & RESET_MASK;
        }
        self.doorkeeper.fill(0);
        self.size = (self.size - (odd / 4).min(self.size)) / 2;
        self.resets += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resident_sighting_counts_as_much_as_any_other() {
        let (mut a, mut b) = (Sketch::new(1024), Sketch::new(1024));
        a.increment(7);
        b.increment(7);
        for _ in 0..5 {
            a.increment(7);
            b.increment_resident(7);
        }
        assert_eq!((a.frequency(7), b.frequency(7)), (6, 6));
        // After a reset the doorkeeper is empty: the next sighting adds one
        // whichever way it is recorded.
        a.reset();
        b.reset();
        assert_eq!(a.frequency(7), b.frequency(7));
        a.increment(7);
        b.increment_resident(7);
        assert_eq!(a.frequency(7), b.frequency(7));
        assert_eq!(a.frequency(7), 3, "5 counted, halved to 2, plus one");
    }

    #[test]
    fn a_keys_doorkeeper_bits_share_one_cache_line() {
        let s = Sketch::new(1 << 20);
        assert!(s.door_line_mask > 0, "many lines to choose from");
        let mut lines = std::collections::HashSet::new();
        for key in 0..1000u64 {
            let bits: Vec<u64> = s.door_bits(mix(key)).collect();
            assert_eq!(bits.len(), DOORKEEPER_HASHES as usize);
            let line = bits[0] / DOOR_LINE_BITS;
            assert!(bits.iter().all(|b| b / DOOR_LINE_BITS == line), "{bits:?}");
            lines.insert(line);
        }
        assert!(lines.len() > 900, "keys spread over lines: {}", lines.len());
    }

    #[test]
    fn counts_up_to_the_cap_and_never_undercounts() {
        let mut s = Sketch::new(1024);
        assert_eq!(s.frequency(42), 0);
        s.increment(42);
        assert_eq!(s.frequency(42), 1, "doorkeeper only");
        for _ in 0..5 {
            s.increment(42);
        }
        assert_eq!(s.frequency(42), 6);
        for _ in 0..100 {
            s.increment(42);
        }
        assert_eq!(s.frequency(42), COUNTER_MAX as u8 + 1);
        for k in 1000..1500u64 {
            s.increment(k);
            s.increment(k);
            assert!(s.frequency(k) >= 2);
        }
    }

    #[test]
    fn reset_halves_counts_and_clears_the_doorkeeper() {
        let mut s = Sketch::new(64);
        for _ in 0..9 {
            s.increment(7);
        }
        assert_eq!(s.frequency(7), 9);
        // Fill the period with other keys until a reset happens.
        let mut k = 10_000u64;
        while s.resets() == 0 {
            s.increment(k);
            k += 1;
        }
        let f = s.frequency(7);
        assert!(
            (4..=5).contains(&f),
            "halved 8 counted + doorkeeper cleared: {f}"
        );
    }

    #[test]
    fn a_key_lives_in_one_cache_line() {
        let s = Sketch::new(1 << 16);
        for key in 0..1000u64 {
            let h = mix(key);
            let words: Vec<usize> = (0..4).map(|i| s.slot(h, i).0).collect();
            let block = words[0] / BLOCK_WORDS;
            assert!(words.iter().all(|w| w / BLOCK_WORDS == block));
            // One counter in each word pair: depth 4.
            for (i, w) in words.iter().enumerate() {
                assert_eq!(w % BLOCK_WORDS / 2, i);
            }
        }
    }

    #[test]
    fn half_a_word_per_item_of_capacity_in_powers_of_two() {
        let s = Sketch::new(1000);
        assert_eq!(s.table.len(), 512);
        assert_eq!(s.heap_bytes(), 512 * 8 + 8192 / 8);
        assert_eq!(s.sample_size, 10_000);
        let mut s = Sketch::new(1);
        assert_eq!(s.table.len(), BLOCK_WORDS);
        s.ensure_capacity(5000);
        assert_eq!(s.table.len(), 4096);
        assert_eq!(s.capacity(), 5000);
    }
}
