//! One shard: the cache state a single core owns.
//!
//! A [`Shard`] holds items in an arena of pages (`slab.rs`), finds them through a
//! hash index of chunk ids, expires them through a TTL heap and, when memory is
//! full, evicts through W-TinyLFU (`policy.rs`, `sketch.rs`): lists per slab class,
//! one frequency sketch per shard. It does no I/O (except opening, mapping and
//! flushing a memory file at open and close, below) and takes the time as an
//! argument, so every behaviour here is tested without a clock or a socket.
//!
//! # Memory
//!
//! Item bytes live only in the arena: `total_pages * page_size <= memory_limit`
//! at all times (`set_memory_limit` lowering the limit empties pages at once).
//! Outside the arena a shard also holds, per item: its index slot (a 4-byte chunk
//! id and a 1-byte tag in 64-byte buckets of 12, at most 90% full and growing by
//! a quarter: 5.9 to 7.4 bytes, `index.rs`), a TTL heap entry of 8 bytes for
//! items with an expiry (stale entries are swept out a few per push while it
//! holds over twice as many entries as items, `ttl.rs`), 4 bytes per free chunk on free lists, and 24 bytes per page (its
//! metadata and its start address); the
//! policy's frequency sketch takes 4 bytes per chunk of capacity rounded up to a
//! power of two, plus a 1-byte-per-chunk doorkeeper (both grow with the pages in
//! use, and do not shrink). Bound: at most 30 bytes per chunk the limit can hold
//! (`memory_limit / min_chunk_size`), a fixed share of the limit set by the
//! smallest chunk; for the 136-byte items of the memory figure about 13 bytes per item
//! (`Shard::heap_bytes` counts it; tested in `tests.rs`). The header
//! inside the chunk is 22 to `item::HEADER_MAX` (34) bytes, drawn in `item.rs`; the policy's
//! links and segment live in it.
//!
//! # Rebalancing
//!
//! Pages move between classes in four cases, each when a class must store an
//! item and has no free chunk:
//! - another class holds a whole page's worth of free chunks (idle memory): its
//!   emptiest page moves, and the page's items move to free chunks on the
//!   class's other pages, so nothing is evicted;
//! - a sparse class lends its only page (below);
//! - every `REBALANCE_CHECK_EVICTIONS` evictions, the class compares the
//!   sketch frequencies of the items it would evict next with every other
//!   class's, and takes a page from a class whose next victims are far colder
//!   (an eighth, `REBALANCE_MARGIN`), if a sample of that page's items is far
//!   colder too (the class as a whole, not only its tail) and the donor keeps
//!   a page (a class left with none takes a page back on its next store,
//!   evicting a page's worth of another class's items for one item); so when
//!   the mix of value sizes changes, memory follows it once the old items'
//!   counts have aged (the sketch halves every 10 x capacity events);
//! - the class has nothing at all to evict: it takes the page of another
//!   class's coldest item.
//!
//! **Sparse classes.** A class whose items would fill a small part of its one
//! page (at most a quarter of a page of the next class up, `SPARSE_SHARE`, and
//! all fitting in that class's free chunks) lends the page to a class that
//! needs one: its items move up a class and it stores new ones there, as
//! *guests*, while it has no page and memory is full. Once its guests would
//! fill a whole page of the class up they waste more than a page of its own
//! would leave unused, and the class takes one again the usual way. A shard
//! gets `-m / cores`, so a few dozen pages; with mixed sizes every small class
//! held a mostly empty page (the replay's `50-1500` rows: 2.4 MB of 32 in free
//! chunks of four classes). Moving up costs a guest up to a quarter of its
//! chunk (the growth factor).
//!
//! A page move costs the donor class its coldest items, not the page's own:
//! as many of its next victims as its other pages lack room for are evicted,
//! and the page's live items move to the chunks freed (memcached's "rescue").
//! The strict margin matters all the same: under a steady mix of sizes the
//! classes' items are alike in popularity, and moving pages back and forth
//! between them only loses items (the server replay in docs/benchmarks.md lost
//! 2-4 points of hit ratio on mixed sizes with a margin of one count per
//! sampled item, when a move still evicted the page's own items).
//!
//! Pages emptied by lowering the limit go to a pool for reuse but stay resident
//! (giving them back to the kernel needs `madvise(DONTNEED)`, an `unsafe` call not
//! made yet); the arena's address space is never unmapped.
//!
//! # Warm restart
//!
//! With a memory file ([`Shard::open`], `--memory-file`) the arena is a file mapping
//! and [`Shard::close`] saves what a restart needs; the next `open` rebuilds the
//! index and everything else from the items in the arena (`warm.rs`). Such a shard
//! cannot grow past its file: [`Shard::set_memory_limit`] refuses a larger limit.
//!
//! # Time and flush_all
//!
//! Every operation takes `now` (unix seconds). Expired items are invisible at once
//! and freed when touched, by [`Shard::reap_expired`], or when eviction finds them.
//! `flush_all` is lazy: it records the store sequence number at which it takes
//! effect and every item stored at or before it reads as a miss.

mod index;
mod item;
mod meta;
mod policy;
pub mod sim;
pub mod sketch;
mod slab;
mod ttl;
mod warm;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::io;

use crate::keyhash::key_hash;
use index::Index;
use item::{HEADER_MAX, NIL};
use policy::{ClassLists, Entries, Policy};
use slab::Slabs;
use ttl::TtlHeap;

pub use meta::{
    MetaArith, MetaArithResult, MetaDebug, MetaDelete, MetaDeleteResult, MetaGet, MetaHit, MetaSet,
    MetaSetMode, TtlStep, TtlSteps,
};
pub use policy::PolicyStats;
pub use warm::{MemoryFile, WarmStart};

/// memcached's longest key.
pub const KEY_MAX: usize = 250;

/// Candidates looked at from the LRU tail for an already dead item before
/// evicting a live one (memcached looks at 5 too).
const DEAD_SEARCH: usize = 5;

/// A class checks whether another class holds colder items (and gives it a page)
/// once per this many of its own evictions.
const REBALANCE_CHECK_EVICTIONS: u32 = 32;
/// Next victims compared per class when rebalancing.
const REBALANCE_SAMPLE: usize = 8;
/// A donor's sampled victims must be clearly colder than the starving class's:
/// at most an eighth of their summed frequency, and this much less (about one
/// count each). Classes whose items are alike in popularity, as under a steady
/// mix of sizes, then keep their pages: every move costs the donor a page of
/// items, and moving pages back and forth between such classes only loses
/// items. With a quarter, popularity shifting (the replay's `shift` with mixed
/// sizes) moved 8 pages on differences that did not last: 0.2-0.4 points of
/// hit ratio lost against none.
const REBALANCE_MARGIN: u32 = REBALANCE_SAMPLE as u32;

/// Chunks of a donor page sampled to judge what emptying it costs.
const PAGE_WORTH_SAMPLE: u32 = 32;

/// A class is sparse, and lends its last page ("Sparse classes" above), when
/// its items would fill at most 1/this of a page of the class above. With a
/// half, classes of a few thousand items lent too and their guests' larger
/// chunks cost more than the pages gained: the replay's mixed `shift` and
/// `scan` rows were 0.15 and 0.1 points lower (two runs each), `loop` the same.
const SPARSE_SHARE: u32 = 4;

/// Whether `sum` (frequencies of a sample) is clearly colder than `mine`.
fn clearly_colder(sum: u32, mine: u32) -> bool {
    8 * sum + REBALANCE_MARGIN <= mine
}

/// Whether a use of item `b` at `now` leaves it where it is in its list
/// ([`Policy::access_in_place`] says why): it was used this second already,
/// outside probation.
fn keeps_its_place(b: &[u8], now: u32) -> bool {
    item::atime(b) == now && item::segment(b) != policy::Segment::Probation as u8
}

/// Why [`Shard::add_delta`] changed nothing.
enum DeltaError {
    NonNumeric,
    /// No chunk for the new digits; the item was dropped.
    NoRoom,
}

/// How `put` rewrites an item in its own chunk.
enum Rewrite {
    /// Used this second outside probation: it keeps its links and list.
    InPlace { prev: u32, next: u32, segment: u8 },
    /// Taken off its list (the one given) and put back at the MRU end.
    Moved(policy::Segment),
}

/// The TTL heap is not swept below this many entries.
const HEAP_SWEEP_MIN: usize = 1024;
/// Entries a push into a TTL heap of more than twice its shard's item count
/// checks for staleness. Over that size at least half the entries are stale,
/// so a sweep of 4 removes about 2 while the push adds at most one stale entry:
/// the heap shrinks back under the bound, a few item reads per push, instead of
/// a rebuild that reads every item at once.
const HEAP_SWEEP_PER_PUSH: usize = 4;

/// Sizing of one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// Bytes this shard may use for item pages.
    pub memory_limit: usize,
    /// Page size; every class's chunk fits in one page, so it must hold the largest
    /// item (`max_item_size`).
    pub page_size: usize,
    /// Largest item in bytes, header, key and value together (memcached `-I`,
    /// which also bounds the whole item).
    pub max_item_size: usize,
    /// Slab chunk growth factor (memcached `-f`), > 1.
    pub growth_factor: f64,
    /// Smallest chunk (memcached `-n` plus header); raised to fit a header and a
    /// one-byte key if smaller.
    pub min_chunk_size: usize,
    /// False with `-C`: items still get sequence numbers internally, but report
    /// CAS 0.
    pub use_cas: bool,
    /// `-L`: ask the kernel for transparent huge pages for the arena.
    pub huge_pages: bool,
}

impl ShardConfig {
    /// A config with memcached's defaults: 1 MiB pages (larger if an item of
    /// `max_item_size` needs it), growth factor 1.25, 48-byte smallest chunk, CAS on.
    /// At the default `-I 1m` pages are exactly 1 MiB, so a shard of N MiB holds N
    /// pages (when `-I` bounded the value alone, pages were 1 MiB + 288 bytes and
    /// a 32 MiB shard held 31).
    pub fn new(memory_limit: usize, max_item_size: usize) -> Self {
        ShardConfig {
            memory_limit,
            page_size: slab::round8(max_item_size).max(1 << 20),
            max_item_size,
            growth_factor: 1.25,
            min_chunk_size: 48,
            use_cas: true,
            huge_pages: false,
        }
    }
}

/// A stored item, borrowed from the arena until the next call on the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub flags: u32,
    pub cas: u64,
    /// Unix seconds, 0 = never.
    pub expiry: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
    Cas(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreResult {
    Stored,
    NotStored,
    Exists,
    NotFound,
    TooLarge,
    OutOfMemory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithResult {
    Value(u64),
    NotFound,
    NonNumeric,
}

/// Counters with memcached's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub curr_items: u64,
    pub total_items: u64,
    /// Sum of live item sizes: header + key + value.
    pub bytes: u64,
    pub evictions: u64,
    /// Items that expired before anyone read them (freed by a read, the reaper or
    /// eviction).
    pub expired_unfetched: u64,
    /// Items evicted before anyone read them.
    pub evicted_unfetched: u64,
    /// Chunks of dead (expired or flushed) items reused by eviction instead of
    /// evicting a live item.
    pub reclaimed: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    /// Reads that found an expired item (also counted as misses).
    pub get_expired: u64,
    /// Reads that found a flushed item (also counted as misses).
    pub get_flushed: u64,
    /// Pages owned by slab classes now.
    pub total_pages: u64,
    pub memory_limit: u64,
    /// Address space mapped for the arena (only touched pages are resident).
    pub bytes_mapped: u64,
    /// Pages moved from one class to another (rebalancing).
    pub page_moves: u64,
    /// Items a page move carried to another page of their class instead of
    /// evicting them.
    pub pages_rescued_items: u64,
    /// Window share of capacity, in per mille (the hill climber moves it).
    pub window_permille: u64,
    /// Items in windows, probation and protected lists, over all classes.
    pub window_items: u64,
    pub probation_items: u64,
    pub protected_items: u64,
    /// Window candidates admitted to the main space / evicted in the duel.
    pub admissions: u64,
    pub rejections: u64,
    /// New keys the window / the main space had evicted lately: the hill
    /// climber's steps towards a larger window / a larger main space.
    pub window_ghost_hits: u64,
    pub main_ghost_hits: u64,
    /// Bytes of the frequency sketch and doorkeeper.
    pub sketch_bytes: u64,
}

/// One slab class, as `stats slabs` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabClassStats {
    /// Class id, counted from 1 as memcached does.
    pub id: usize,
    pub chunk_size: u64,
    pub chunks_per_page: u64,
    pub total_pages: u64,
    pub total_chunks: u64,
    pub used_chunks: u64,
    pub free_chunks: u64,
    pub evicted: u64,
    /// Live items.
    pub number: u64,
    /// Pages taken from other classes / given to them.
    pub pages_moved_in: u64,
    pub pages_moved_out: u64,
    /// Items of this class's size held in chunks of a larger class (the class
    /// lent its last page: see "Sparse classes" above).
    pub guests: u64,
    /// Items per policy list.
    pub window: u64,
    pub probation: u64,
    pub protected: u64,
}

impl SlabClassStats {
    /// Adds another shard's figures for the same class (the counts sum; the
    /// class geometry is the same in every shard).
    pub fn add(&mut self, other: &SlabClassStats) {
        debug_assert_eq!((self.id, self.chunk_size), (other.id, other.chunk_size));
        self.total_pages += other.total_pages;
        self.total_chunks += other.total_chunks;
        self.used_chunks += other.used_chunks;
        self.free_chunks += other.free_chunks;
        self.evicted += other.evicted;
        self.number += other.number;
        self.pages_moved_in += other.pages_moved_in;
        self.pages_moved_out += other.pages_moved_out;
        self.guests += other.guests;
        self.window += other.window;
        self.probation += other.probation;
        self.protected += other.protected;
    }
}

/// Why an item found in the index is not visible.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dead {
    Expired,
    Flushed,
}

/// One core's cache: see the module docs.
pub struct Shard {
    config: ShardConfig,
    slabs: Slabs,
    /// Chunk ids, hashed by `key_hash(key)`; keys compared in the arena.
    index: Index,
    /// (expiry, chunk id) of items stored with an expiry; entries are checked
    /// against the chunk when popped (lazy deletion).
    ttl: TtlHeap,
    /// The last sequence number given out; the next store gets one more.
    cas_last: u64,
    /// Items with a sequence number at or below this are flushed.
    flush_seq: u64,
    /// A delayed flush_all: takes effect at the first operation with `now` at or
    /// past this time.
    flush_at: Option<u32>,
    /// `now` of the current operation.
    now: u32,
    stats: ShardStats,
    /// W-TinyLFU: per-class lists (links in the item headers) and the sketch.
    policy: Policy,
    /// Evictions per class since its last rebalancing check.
    since_check: Vec<u32>,
    /// Reused buffer for append/prepend.
    scratch: Vec<u8>,
}

impl Shard {
    /// Maps the arena (address space only: pages are touched as they are used).
    pub fn new(config: ShardConfig) -> io::Result<Shard> {
        let min_chunk = Self::check_config(&config)?;
        let slabs = Slabs::new(
            config.memory_limit,
            config.page_size,
            min_chunk,
            config.growth_factor,
            config.huge_pages,
        )?;
        Shard::from_slabs(config, slabs)
    }

    /// Rejects a config no arena can be built for; else the smallest chunk size.
    fn check_config(config: &ShardConfig) -> io::Result<usize> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if config.growth_factor.is_nan() || config.growth_factor <= 1.0 {
            return Err(invalid(format!(
                "growth factor {} must be greater than 1",
                config.growth_factor
            )));
        }
        if config.page_size < config.max_item_size {
            return Err(invalid(format!(
                "page size {} cannot hold an item of {} bytes (the max item size)",
                config.page_size, config.max_item_size
            )));
        }
        // An item header holds value lengths of up to 30 bits (`item.rs`);
        // memcached's -I stops at 1 GiB too.
        if config.max_item_size > item::VALUE_LEN_MAX + 1 {
            return Err(invalid("max item size must be at most 1 GiB".into()));
        }
        Ok(config
            .min_chunk_size
            .max(slab::round8(HEADER_MAX + 1 + 1))
            .min(config.page_size))
    }

    /// An empty shard over `slabs`.
    fn from_slabs(config: ShardConfig, slabs: Slabs) -> io::Result<Shard> {
        let stats = ShardStats {
            memory_limit: config.memory_limit as u64,
            ..ShardStats::default()
        };
        let classes = slabs.classes.len();
        // Random per shard: the warm-candidate coin of the hash flooding defence must
        // not be predictable.
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        Ok(Shard {
            config,
            policy: Policy::new(classes, seed),
            since_check: vec![0; classes],
            slabs,
            // Its own secret, derived from the policy's (a bijection of it).
            index: Index::new(crate::keyhash::mix(seed) | 1)?,
            ttl: TtlHeap::default(),
            cas_last: 0,
            flush_seq: 0,
            flush_at: None,
            now: 0,
            stats,
            scratch: Vec::new(),
        })
    }

    // ----- reads -------------------------------------------------------------

    /// Starts loading the index buckets and sketch counters, then the items,
    /// that lookups of these key hashes will touch. A hint only: serving a batch of requests, call this
    /// with all their keys first, then serve them, so their cache misses overlap
    /// instead of coming one after another.
    pub fn prefetch(&self, hashes: impl Iterator<Item = u64> + Clone) {
        self.prefetch_buckets(hashes.clone());
        self.prefetch_items(hashes);
    }

    /// The first half of [`prefetch`](Self::prefetch): the index buckets and
    /// sketch counters, whose addresses come from the hash alone.
    pub fn prefetch_buckets(&self, hashes: impl Iterator<Item = u64>) {
        for hash in hashes {
            self.index.prefetch(hash);
            self.policy.prefetch(hash);
        }
    }

    /// The second half of [`prefetch`](Self::prefetch): the items, whose
    /// addresses are read from the buckets (best started a while after
    /// [`prefetch_buckets`](Self::prefetch_buckets)).
    pub fn prefetch_items(&self, hashes: impl Iterator<Item = u64>) {
        for hash in hashes {
            if let Some(id) = self.index.first_candidate(hash) {
                self.slabs.prefetch(id);
            }
        }
    }

    /// Looks a key up and marks it recently used.
    pub fn get(&mut self, key: &[u8], hash: u64, now: u32) -> Option<ItemView<'_>> {
        self.tick(now);
        match self.find_for_read(key, hash) {
            Some(id) => {
                self.stats.get_hits += 1;
                Some(self.hit(id, hash))
            }
            None => {
                self.stats.get_misses += 1;
                None
            }
        }
    }

    /// `gat`: sets a new expiry on a hit, then returns the item.
    pub fn get_and_touch(
        &mut self,
        key: &[u8],
        hash: u64,
        expiry: u32,
        now: u32,
    ) -> Option<ItemView<'_>> {
        self.tick(now);
        match self.find_for_read(key, hash) {
            Some(id) => {
                // Giving the item its first expiry may move it (`regrow`); with
                // no memory for that it is gone, and the read misses.
                let Some(id) = self.set_expiry(key, hash, id, expiry) else {
                    self.stats.get_misses += 1;
                    return None;
                };
                self.stats.get_hits += 1;
                Some(self.hit(id, hash))
            }
            None => {
                self.stats.get_misses += 1;
                None
            }
        }
    }

    /// `touch`: sets a new expiry; false if the key is absent. The CAS value is
    /// unchanged.
    pub fn touch(&mut self, key: &[u8], hash: u64, expiry: u32, now: u32) -> bool {
        self.tick(now);
        match self.find_live(key, hash) {
            Some(id) => {
                let Some(id) = self.set_expiry(key, hash, id, expiry) else {
                    return false;
                };
                // memcached's touch is a read of the item: fetched, accessed now.
                let b = self.slabs.item_mut(id);
                item::set_state(b, item::state(b) | item::FETCHED);
                item::set_atime(b, now);
                self.access(id, hash);
                true
            }
            None => false,
        }
    }

    // ----- writes ------------------------------------------------------------

    /// set / add / replace / append / prepend / cas, with memcached's semantics.
    #[allow(clippy::too_many_arguments)]
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        hash: u64,
        flags: u32,
        expiry: u32,
        value: &[u8],
        now: u32,
    ) -> StoreResult {
        self.tick(now);
        if self.too_large(key.len(), value.len()) {
            // memcached drops the old value when a set fails, so a reader never sees
            // the value the client just tried to replace.
            if mode == StoreMode::Set {
                self.remove_key(key, hash);
            }
            return StoreResult::TooLarge;
        }
        let old = self.find_live(key, hash);
        match (mode, old) {
            (StoreMode::Add, Some(id)) => {
                self.access(id, hash);
                return StoreResult::NotStored;
            }
            (StoreMode::Replace | StoreMode::Append | StoreMode::Prepend, None) => {
                return StoreResult::NotStored
            }
            (StoreMode::Cas(_), None) => return StoreResult::NotFound,
            (StoreMode::Cas(c), Some(id)) if self.reported_cas(id) != c => {
                return StoreResult::Exists
            }
            _ => {}
        }
        match mode {
            StoreMode::Append | StoreMode::Prepend => {
                let id = old.expect("checked above");
                match self.join(key, hash, id, value, mode == StoreMode::Append, None) {
                    Some(_) => StoreResult::Stored,
                    None => StoreResult::NotStored,
                }
            }
            _ => {
                if self
                    .put(key, hash, old, flags, expiry, value, None)
                    .is_some()
                {
                    StoreResult::Stored
                } else {
                    if mode == StoreMode::Set {
                        self.remove_key(key, hash);
                    }
                    StoreResult::OutOfMemory
                }
            }
        }
    }

    /// Appends (or prepends) `value` to item `id`'s value, keeping its flags and
    /// expiry, with CAS `cas` (None: the next in sequence); the joined item's
    /// chunk, or None if it would be too large or no chunk could be had.
    fn join(
        &mut self,
        key: &[u8],
        hash: u64,
        id: u32,
        value: &[u8],
        append: bool,
        cas: Option<u64>,
    ) -> Option<u32> {
        let b = self.slabs.item(id);
        let (old_flags, old_expiry) = (item::flags(b), item::expiry(b));
        let old_value = item::value(b);
        if self.too_large(key.len(), old_value.len() + value.len()) {
            return None;
        }
        let mut joined = std::mem::take(&mut self.scratch);
        joined.clear();
        if append {
            joined.extend_from_slice(old_value);
            joined.extend_from_slice(value);
        } else {
            joined.extend_from_slice(value);
            joined.extend_from_slice(old_value);
        }
        let new = self.put(key, hash, Some(id), old_flags, old_expiry, &joined, cas);
        self.scratch = joined;
        new
    }

    /// Removes a key; false if it was absent.
    pub fn delete(&mut self, key: &[u8], hash: u64, now: u32) -> bool {
        self.tick(now);
        match self.find_live(key, hash) {
            Some(id) => {
                self.unlink(id, hash);
                true
            }
            None => false,
        }
    }

    /// incr/decr. The value must be a decimal number that fits in 64 bits (after
    /// optional leading whitespace, ending at the end or at whitespace, as
    /// memcached's `strtoull` check reads it). incr wraps at 2^64, decr stops at 0;
    /// the result is stored as decimal with a new CAS, flags and expiry kept.
    pub fn arith(
        &mut self,
        key: &[u8],
        hash: u64,
        incr: bool,
        delta: u64,
        now: u32,
    ) -> ArithResult {
        self.tick(now);
        let Some(id) = self.find_live(key, hash) else {
            return ArithResult::NotFound;
        };
        let expiry = item::expiry(self.slabs.item(id));
        match self.add_delta(key, hash, id, incr, delta, expiry, None) {
            Ok((value, _)) => ArithResult::Value(value),
            Err(DeltaError::NonNumeric) => ArithResult::NonNumeric,
            Err(DeltaError::NoRoom) => ArithResult::NotFound,
        }
    }

    /// Adds `delta` to (or takes it from) the number item `id` of `key` holds,
    /// giving it `expiry`; returns the new number and the item's chunk. The
    /// client flags stay. As in memcached, which rewrites digits that fit in
    /// place and makes a new item for longer ones, the fetched, stale and
    /// win-token bits stay unless the number grew longer. Increments wrap at
    /// 2^64, decrements stop at 0. The new item's CAS is `cas` (None: the next in
    /// sequence).
    #[allow(clippy::too_many_arguments)]
    fn add_delta(
        &mut self,
        key: &[u8],
        hash: u64,
        id: u32,
        incr: bool,
        delta: u64,
        expiry: u32,
        cas: Option<u64>,
    ) -> Result<(u64, u32), DeltaError> {
        let b = self.slabs.item(id);
        let current = parse_u64(item::value(b)).ok_or(DeltaError::NonNumeric)?;
        let (flags, old_len) = (item::flags(b), item::value_len(b));
        let state = item::state(b) & item::CARRIED_STATE;
        let result = if incr {
            current.wrapping_add(delta)
        } else {
            current.saturating_sub(delta)
        };
        let mut digits = [0u8; 20];
        let text = format_u64(result, &mut digits);
        let put = if self.too_large(key.len(), text.len()) {
            None
        } else {
            self.put(key, hash, Some(id), flags, expiry, text, cas)
        };
        let Some(id) = put else {
            // The new digits do not fit anywhere (a shard with almost no memory,
            // or an -I too small for a long key and 20 digits): drop the item
            // rather than keep a stale count.
            self.remove_key(key, hash);
            return Err(DeltaError::NoRoom);
        };
        if text.len() <= old_len {
            let b = self.slabs.item_mut(id);
            item::set_state(b, item::state(b) | state);
        }
        Ok((result, id))
    }

    /// `flush_all`: items stored before `oldest_live` become invalid once `now`
    /// reaches it; `oldest_live <= now` flushes at once. Nothing is freed here:
    /// flushed items read as misses and their chunks are reused lazily.
    pub fn flush_all(&mut self, oldest_live: u32, now: u32) {
        self.flush_at = None;
        if oldest_live <= now {
            self.flush_seq = self.cas_last;
        } else {
            self.flush_at = Some(oldest_live);
        }
        self.tick(now);
    }

    /// Pops up to `budget` due entries from the TTL heap and frees the items that
    /// have expired; returns how many were freed.
    pub fn reap_expired(&mut self, now: u32, budget: usize) -> usize {
        self.tick(now);
        let mut freed = 0;
        for _ in 0..budget {
            match self.ttl.peek() {
                Some((exp, _)) if exp <= now => {}
                _ => break,
            }
            let (_, id) = self.ttl.pop().expect("peeked");
            if !self.slabs.is_valid(id) {
                continue;
            }
            let b = self.slabs.item(id);
            let exp = item::expiry(b);
            if item::is_live(b) && exp != 0 && exp <= now {
                self.drop_dead(id, Dead::Expired);
                freed += 1;
            }
        }
        freed
    }

    /// `cache_memlimit`: a lower limit empties pages (evicting their items) until the
    /// shard is within it; a higher one maps more address space if needed.
    ///
    /// A shard in a memory file (`--memory-file`) cannot grow past the file: a
    /// limit needing more pages than it holds is refused and the old limit kept
    /// (returns false).
    pub fn set_memory_limit(&mut self, bytes: usize) -> bool {
        // A failed mmap keeps the pages mapped so far as the limit; a file-backed
        // arena refuses before changing anything.
        if self.slabs.set_limit(bytes).is_err() && self.slabs.is_file_backed() {
            return false;
        }
        self.config.memory_limit = bytes;
        self.stats.memory_limit = bytes as u64;
        while self.slabs.pages_in_use > self.slabs.max_pages {
            let Some(page) = self.victim_page(None, None) else {
                break;
            };
            let class = self.slabs.pages[page as usize].class as usize;
            self.empty_page(page, NIL);
            self.slabs.release(page);
            let cap = self.slabs.capacity(class);
            self.policy.set_capacity(&mut self.slabs, class, cap);
        }
        self.note_fill();
        true
    }

    /// Tells the policy how full memory is: once half the pages are in use its
    /// sketch counts (`Policy::start_sketch`), and once all are, storing a new
    /// item means evicting one (`Policy::set_pressure`).
    pub(crate) fn note_fill(&mut self) {
        let (used, max) = (self.slabs.pages_in_use, self.slabs.max_pages);
        if used * 2 >= max {
            // What the classes will hold when every page is in use, if the
            // rest is shared as the pages in use are.
            let expected = self.policy.total_capacity() * max / used.max(1);
            self.policy.start_sketch(&self.slabs, expected);
        }
        self.policy.set_pressure(used >= max);
    }

    // ----- introspection -----------------------------------------------------

    pub fn stats(&self) -> ShardStats {
        let p = self.policy.stats();
        let lists = &self.policy.classes;
        let sum = |f: fn(&policy::ClassLists) -> u32| lists.iter().map(|l| f(l) as u64).sum();
        ShardStats {
            total_pages: self.slabs.pages_in_use as u64,
            bytes_mapped: self.slabs.bytes_mapped() as u64,
            window_permille: (self.policy.window_share() * 1000.0).round() as u64,
            window_items: sum(|l| l.window.len),
            probation_items: sum(|l| l.probation.len),
            protected_items: sum(|l| l.protected.len),
            admissions: p.admitted,
            rejections: p.rejected,
            window_ghost_hits: p.window_ghost_hits,
            main_ghost_hits: p.main_ghost_hits,
            sketch_bytes: self.policy.sketch_bytes() as u64,
            ..self.stats
        }
    }

    /// Every slab class (ids from 1), including those without pages.
    pub fn slab_class_stats(&self) -> Vec<SlabClassStats> {
        self.slabs
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let total = c.pages as u64 * c.per_page as u64;
                let l = &self.policy.classes[i];
                SlabClassStats {
                    id: i + 1,
                    chunk_size: c.size as u64,
                    chunks_per_page: c.per_page as u64,
                    total_pages: c.pages as u64,
                    total_chunks: total,
                    used_chunks: c.items,
                    free_chunks: total - c.items,
                    evicted: c.evicted,
                    number: c.items,
                    pages_moved_in: c.pages_moved_in,
                    pages_moved_out: c.pages_moved_out,
                    guests: c.guests as u64,
                    window: l.window.len as u64,
                    probation: l.probation.len as u64,
                    protected: l.protected.len as u64,
                }
            })
            .collect()
    }

    /// `stats cachedump <class> <limit>`: (key, value length, expiry) of the items
    /// of class `class_id` (from 1), most recently used first, at most `limit`
    /// (0 = all). Flushed items are left out; expired ones not yet freed are listed
    /// (this call has no clock), as memcached does.
    pub fn cachedump(
        &self,
        class_id: usize,
        limit: usize,
    ) -> impl Iterator<Item = (&[u8], usize, u32)> + '_ {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let lists = if (1..=self.slabs.classes.len()).contains(&class_id) {
            self.policy.classes[class_id - 1]
        } else {
            ClassLists::default()
        };
        policy::iter(&self.slabs, lists.window.head)
            .chain(policy::iter(&self.slabs, lists.protected.head))
            .chain(policy::iter(&self.slabs, lists.probation.head))
            .map(|id| self.slabs.item(id))
            .filter(|b| !self.flushed(b))
            .take(limit)
            .map(|b| (item::key(b), item::value_len(b), item::expiry(b)))
    }

    /// Policy figures: admissions, rejections, ghost hits, sketch resets.
    pub fn policy_stats(&self) -> PolicyStats {
        self.policy.stats()
    }

    /// Bytes this shard holds outside the arena for its items: the index table,
    /// the TTL heap, free lists, page metadata and the policy's sketch (allocated
    /// capacity, not counting the allocator's own overhead).
    pub fn heap_bytes(&self) -> usize {
        let index_bytes = self.index.heap_bytes();
        let free: usize = self
            .slabs
            .classes
            .iter()
            .map(|c| c.free.capacity() * 4)
            .sum();
        index_bytes
            + self.ttl.heap_bytes()
            + free
            + self.slabs.page_table_bytes()
            + self.policy.sketch_bytes()
    }

    /// The class id (from 1) an item with these lengths is stored in, or None if
    /// it is larger than any chunk: with flags 0 and no expiry (each adds 4
    /// bytes, `item.rs`).
    pub fn class_for_item(&self, key_len: usize, value_len: usize) -> Option<usize> {
        self.slabs
            .class_for(item::total_size(key_len, value_len, 0, 0, 0))
            .map(|c| c + 1)
    }

    // ----- internals ---------------------------------------------------------

    /// Starts an operation at time `now`: a delayed flush_all that is due takes
    /// effect, covering everything stored before this operation.
    fn tick(&mut self, now: u32) {
        self.now = now;
        if let Some(at) = self.flush_at {
            if now >= at {
                self.flush_seq = self.cas_last;
                self.flush_at = None;
            }
        }
    }

    /// Whether an item of this key and value is over the limits: a key over
    /// [`KEY_MAX`], or header, key and value over `max_item_size` (`-I`). The
    /// header counted is the largest form, as memcached's is the same for every
    /// item: the longest value does not depend on the flags or expiry, and an
    /// item can always be rewritten in a larger form.
    fn too_large(&self, key_len: usize, value_len: usize) -> bool {
        key_len > KEY_MAX || item::bounded_size(key_len, value_len) > self.config.max_item_size
    }

    fn next_cas(&mut self) -> u64 {
        self.cas_last += 1;
        self.cas_last
    }

    fn reported_cas(&self, id: u32) -> u64 {
        if self.config.use_cas {
            item::cas(self.slabs.item(id))
        } else {
            0
        }
    }

    /// Stored before the last `flush_all` took effect. The store sequence number
    /// orders items exactly; 0 means nothing was flushed (an item a client gave
    /// CAS 0 with `E` is not flushed by no flush). An item given a CAS at or
    /// below the flush's by `E` after it counts as flushed, as in memcached
    /// (`oldest_cas`).
    fn flushed(&self, b: &[u8]) -> bool {
        self.flush_seq != 0 && item::cas(b) <= self.flush_seq
    }

    fn dead(&self, b: &[u8]) -> Option<Dead> {
        if self.flushed(b) {
            return Some(Dead::Flushed);
        }
        let exp = item::expiry(b);
        (exp != 0 && exp <= self.now).then_some(Dead::Expired)
    }

    /// The chunk holding `key`, dead or alive.
    fn find(&self, key: &[u8], hash: u64) -> Option<u32> {
        let slabs = &self.slabs;
        self.index
            .find(hash, |id| item::has_key(slabs.item(id), key))
    }

    /// The chunk holding a visible `key`; a dead one is freed on the way.
    fn find_live(&mut self, key: &[u8], hash: u64) -> Option<u32> {
        let id = self.find(key, hash)?;
        match self.dead(self.slabs.item(id)) {
            None => Some(id),
            Some(why) => {
                self.drop_dead(id, why);
                None
            }
        }
    }

    /// [`find_live`](Self::find_live) for get/gat, which count why they missed.
    fn find_for_read(&mut self, key: &[u8], hash: u64) -> Option<u32> {
        let id = self.find(key, hash)?;
        match self.dead(self.slabs.item(id)) {
            None => Some(id),
            Some(why) => {
                match why {
                    Dead::Expired => self.stats.get_expired += 1,
                    Dead::Flushed => self.stats.get_flushed += 1,
                }
                self.drop_dead(id, why);
                None
            }
        }
    }

    /// Marks a read item fetched and recently used, and views it.
    fn hit(&mut self, id: u32, hash: u64) -> ItemView<'_> {
        let used_this_second = {
            let b = self.slabs.item_mut(id);
            let recent = keeps_its_place(b, self.now);
            item::set_state(b, item::state(b) | item::FETCHED);
            item::set_atime(b, self.now);
            recent
        };
        if used_this_second {
            self.policy.access_in_place(hash);
        } else {
            self.access(id, hash);
        }
        let cas = self.reported_cas(id);
        let b = self.slabs.item(id);
        ItemView {
            key: item::key(b),
            value: item::value(b),
            flags: item::flags(b),
            cas,
            expiry: item::expiry(b),
        }
    }

    /// Tells the policy the item `id`, of key hash `hash`, was used.
    fn access(&mut self, id: u32, hash: u64) {
        let class = self.slabs.class_of(id);
        self.policy.access(&mut self.slabs, class, id, hash);
    }

    /// Gives item `id` of `key` a new expiry; returns the item's chunk, which
    /// changes when the item had no expiry field (`regrow`), or None if it had to
    /// go for want of memory.
    fn set_expiry(&mut self, key: &[u8], hash: u64, id: u32, expiry: u32) -> Option<u32> {
        let b = self.slabs.item_mut(id);
        // Unchanged: the heap already holds (expiry, id), and another copy could
        // never be swept out (every copy is current).
        if item::expiry(b) == expiry {
            return Some(id);
        }
        if !item::set_expiry(b, expiry) {
            let cas = item::cas(b);
            return self.regrow(key, hash, id, expiry, cas);
        }
        self.ttl_push(expiry, id);
        Some(id)
    }

    /// Gives item `id` of `key` CAS `cas` (`E`, or a stale mark's new CAS), as
    /// [`set_expiry`](Self::set_expiry) does the expiry.
    ///
    /// As in memcached the shard's own sequence does not move to a client's CAS:
    /// raising it to a client's value could exhaust it
    /// (`E18446744073709551615`). So an item given a CAS above the sequence
    /// survives a later `flush_all` (memcached flushes it by time), and one given
    /// a CAS at or below a past flush's counts as flushed.
    fn set_cas(&mut self, key: &[u8], hash: u64, id: u32, cas: u64) -> Option<u32> {
        let b = self.slabs.item_mut(id);
        if item::set_cas(b, cas) {
            return Some(id);
        }
        let expiry = item::expiry(b);
        self.regrow(key, hash, id, expiry, cas)
    }

    /// Rewrites item `id` of `key` with this expiry and CAS in the larger header
    /// form they need (`item.rs`), keeping its value, flags, state bits and last
    /// access; the item's new chunk, or None if no chunk could be had (then the
    /// item is dropped, as an eviction would have). `-I` counts the largest
    /// form, so the item is never too large for it.
    fn regrow(&mut self, key: &[u8], hash: u64, id: u32, expiry: u32, cas: u64) -> Option<u32> {
        let b = self.slabs.item(id);
        let (flags, state, atime) = (item::flags(b), item::state(b), item::atime(b));
        let mut value = std::mem::take(&mut self.scratch);
        value.clear();
        value.extend_from_slice(item::value(b));
        let new = self.put(key, hash, Some(id), flags, expiry, &value, Some(cas));
        self.scratch = value;
        let Some(new) = new else {
            self.remove_key(key, hash);
            return None;
        };
        let b = self.slabs.item_mut(new);
        item::set_state(b, item::state(b) | (state & item::CARRIED_STATE));
        item::set_atime(b, atime);
        // The same item in another form: not a store (memcached counts none
        // for touch).
        self.stats.total_items -= 1;
        Some(new)
    }

    fn ttl_push(&mut self, expiry: u32, id: u32) {
        if expiry == 0 {
            return;
        }
        self.ttl.push((expiry, id));
        if self.ttl.len() > HEAP_SWEEP_MIN && self.ttl.len() > 2 * self.stats.curr_items as usize {
            // An entry is current while its chunk holds a live item with that
            // expiry; others were left by deletes, rewrites and evictions.
            let slabs = &self.slabs;
            self.ttl.sweep(HEAP_SWEEP_PER_PUSH, |(exp, id)| {
                slabs.is_valid(id) && {
                    let b = slabs.item(id);
                    item::is_live(b) && item::expiry(b) == exp
                }
            });
        }
    }

    /// Writes an item for `key` with `value`, replacing `old` (the key's current
    /// chunk, if any): in place when the new size falls in the same class, else in
    /// a new chunk (evicting if needed, never `old`). The item's CAS is `cas`, or
    /// with None the next in the shard's sequence. Returns the item's chunk, or
    /// None if no chunk could be had; then nothing has changed but the sequence
    /// (a CAS number left unused).
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        key: &[u8],
        hash: u64,
        old: Option<u32>,
        flags: u32,
        expiry: u32,
        value: &[u8],
        cas: Option<u64>,
    ) -> Option<u32> {
        let cas = cas.unwrap_or_else(|| self.next_cas());
        let size = item::total_size(key.len(), value.len(), flags, expiry, cas);
        let class = self.slabs.class_for(size)?;
        if old.is_none() {
            let slabs = &self.slabs;
            self.index
                .reserve(|x| key_hash(item::key(slabs.item(x))))
                .ok()?;
        }
        let mut rewrite = None;
        // The expiry the chunk's heap entry already has, for a rewrite in place.
        let mut queued_expiry = None;
        let id = match old {
            // In its own chunk when the new item needs a chunk of that class, at
            // home or as a guest (`host_for`): a new chunk could cost an eviction.
            Some(o)
                if self.slabs.class_of(o) == class
                    || self.host_for(class) == Some(self.slabs.class_of(o)) =>
            {
                let class = self.slabs.class_of(o);
                // A guest rewritten to its chunk's size is at home now.
                if let Some(own) = self.guest_of(o) {
                    self.slabs.classes[own].guests -= 1;
                }
                let b = self.slabs.item(o);
                self.stats.bytes -= item::size(b) as u64;
                queued_expiry = Some(item::expiry(b));
                // A rewrite is a use of the key, and keeps its place as a read
                // (`hit`) does.
                let in_place = keeps_its_place(b, self.now).then(|| Rewrite::InPlace {
                    prev: item::prev(b),
                    next: item::next(b),
                    segment: item::segment(b),
                });
                rewrite = Some(in_place.unwrap_or_else(|| {
                    Rewrite::Moved(self.policy.remove(&mut self.slabs, class, o))
                }));
                self.stats.curr_items -= 1;
                o
            }
            _ => {
                let id = self.alloc(class, old.unwrap_or(NIL))?;
                // A key whose new size is of another class keeps its list too:
                // it is the same key, used now.
                if let Some(o) = old {
                    let old_class = self.slabs.class_of(o);
                    let seg = self.policy.remove(&mut self.slabs, old_class, o);
                    rewrite = Some(Rewrite::Moved(seg));
                }
                id
            }
        };
        let b = self.slabs.item_mut(id);
        item::init(b, key, flags, expiry, cas, value.len(), self.now);
        item::value_mut(b).copy_from_slice(value);
        // A class lending its last page stores its items one class up (`alloc`).
        let class = self.slabs.class_of(id);
        if let Some(own) = self.guest_of(id) {
            self.slabs.classes[own].guests += 1;
        }
        let b = self.slabs.item_mut(id);
        match rewrite {
            Some(Rewrite::InPlace {
                prev,
                next,
                segment,
            }) => {
                item::set_prev(b, prev);
                item::set_next(b, next);
                item::set_segment(b, segment);
                self.policy.access_in_place(hash);
            }
            // It keeps its list (probation moves on to protected, as on a hit).
            Some(Rewrite::Moved(seg)) => {
                self.policy.reinsert(&mut self.slabs, class, id, seg, hash)
            }
            None => self.policy.insert(&mut self.slabs, class, id, hash),
        }
        self.stats.curr_items += 1;
        self.stats.total_items += 1;
        self.stats.bytes += size as u64;
        match old {
            Some(o) if o == id => {}
            Some(o) => {
                self.stats.curr_items -= 1;
                self.stats.bytes -= item::size(self.slabs.item(o)) as u64;
                self.index.replace(hash, o, id);
                // Off its list already (above).
                self.free_chunk(o);
            }
            None => self.index.insert(hash, id),
        }
        // A rewrite in place with the same expiry (incr, append, a set with the
        // same absolute exptime) keeps its heap entry: a second, identical one
        // would count as current and never be swept.
        if queued_expiry != Some(expiry) {
            self.ttl_push(expiry, id);
        }
        Some(id)
    }

    /// A chunk of `class`, evicting from it or taking a page from another class if
    /// needed. `protect` (or NIL) is never evicted.
    fn alloc(&mut self, class: usize, protect: u32) -> Option<u32> {
        loop {
            if let Some(id) = self.slabs.alloc(class) {
                // A fresh page raises the class's capacity.
                let cap = self.slabs.capacity(class);
                if cap != self.policy.classes[class].capacity {
                    self.policy.set_capacity(&mut self.slabs, class, cap);
                    self.note_fill();
                }
                return Some(id);
            }
            if let Some(host) = self.host_for(class) {
                return self.alloc(host, protect);
            }
            let protect_page = (protect != NIL).then(|| self.slabs.page_of(protect));
            if let Some(page) = self.rebalance(class, protect_page) {
                self.move_page(page, class, protect);
                continue;
            }
            if self.evict_from(class, protect) {
                continue;
            }
            let page = self.victim_page(Some(class), protect_page)?;
            self.move_page(page, class, protect);
        }
    }

    /// The entries a class would evict next, best first: probation's LRU end, then
    /// the window's, then protected's.
    fn next_victims(&self, class: usize) -> impl Iterator<Item = u32> + '_ {
        let l = &self.policy.classes[class];
        policy::iter_back(&self.slabs, l.probation.tail)
            .chain(policy::iter_back(&self.slabs, l.window.tail))
            .chain(policy::iter_back(&self.slabs, l.protected.tail))
    }

    /// Sum of the sketch frequencies of a class's next [`REBALANCE_SAMPLE`]
    /// victims, and the page of the first one; None if the class is empty.
    fn coldness(&self, class: usize, protect_page: Option<u32>) -> Option<(u32, u32)> {
        let mut sum = 0;
        let mut page = None;
        for id in self.next_victims(class).take(REBALANCE_SAMPLE) {
            sum += self.policy.frequency(self.slabs.key_hash(id)) as u32;
            let p = self.slabs.page_of(id);
            if page.is_none() && Some(p) != protect_page {
                page = Some(p);
            }
        }
        page.map(|p| (sum, p))
    }

    /// What emptying `page` would cost, in the units of [`coldness`](Self::coldness):
    /// the sketch frequencies of [`PAGE_WORTH_SAMPLE`] evenly spaced chunks (free
    /// ones count 0), scaled to [`REBALANCE_SAMPLE`] items.
    fn page_worth(&self, page: u32) -> u32 {
        let carved = self.slabs.pages[page as usize].carved;
        let samples = PAGE_WORTH_SAMPLE.min(carved);
        let mut sum = 0;
        for i in 0..samples {
            let slot = (i as u64 * carved as u64 / samples as u64) as u32;
            let b = self.slabs.item(self.slabs.make_id(page, slot));
            if item::is_live(b) {
                sum += self.policy.frequency(key_hash(item::key(b))) as u32;
            }
        }
        sum * REBALANCE_SAMPLE as u32 / samples.max(1)
    }

    /// Proactive rebalancing: every [`REBALANCE_CHECK_EVICTIONS`] evictions of
    /// `class`, the page of another class whose next victims are clearly colder
    /// (by the shared sketch) than this class's, if any, and only if that page's
    /// items are clearly colder too: a class whose tail is cold but whose items
    /// at large are not will want the page back. Before page moves evicted the
    /// donor's coldest items instead of the page's own, the looping replay with
    /// mixed sizes lost 11 points of hit ratio without this check; since, it
    /// still loses 4 (and shift 0.2) to the extra moves. Never a
    /// class's last page: the class would take one back on its next store, from
    /// whichever class has the most pages, and the two rules would pass pages
    /// to and fro (the shifting replay with mixed sizes did so 19 times, ending
    /// with 15% fewer items than memcached).
    fn rebalance(&mut self, class: usize, protect_page: Option<u32>) -> Option<u32> {
        // Memory lying idle comes first: a class with a whole page's worth of
        // free chunks gives up its emptiest page, whose items all fit in its
        // other pages, so the move costs no item.
        let idle = (0..self.slabs.classes.len())
            .filter(|&c| c != class && self.slabs.classes[c].pages > 1)
            .filter(|&c| self.slabs.free_chunks(c) >= self.slabs.classes[c].per_page)
            .filter_map(|c| self.slabs.emptiest_page(c))
            .find(|&p| Some(p) != protect_page);
        if idle.is_some() {
            return idle;
        }
        if let Some(page) = self.sparse_class_page(class, protect_page) {
            return Some(page);
        }
        self.since_check[class] += 1;
        if self.since_check[class] < REBALANCE_CHECK_EVICTIONS {
            return None;
        }
        self.since_check[class] = 0;
        let (mine, _) = self.coldness(class, None)?;
        (0..self.slabs.classes.len())
            .filter(|&c| c != class && self.slabs.classes[c].pages > 1)
            .filter_map(|c| self.coldness(c, protect_page))
            .filter(|&(sum, page)| {
                clearly_colder(sum, mine) && clearly_colder(self.page_worth(page), mine)
            })
            .min_by_key(|&(sum, _)| sum)
            .map(|(_, page)| page)
    }

    /// Empties `page` and gives it to `class`.
    fn move_page(&mut self, page: u32, class: usize, protect: u32) {
        let from = self.slabs.pages[page as usize].class as usize;
        self.empty_page(page, protect);
        self.slabs.reassign(page, class);
        self.stats.page_moves += 1;
        for c in [from, class] {
            let cap = self.slabs.capacity(c);
            self.policy.set_capacity(&mut self.slabs, c, cap);
        }
    }

    /// Frees one chunk of `class`: a dead item among the next victims if there is
    /// one, else the policy's victim. False if the class has nothing to give.
    fn evict_from(&mut self, class: usize, protect: u32) -> bool {
        let mut candidates = [NIL; DEAD_SEARCH];
        for (slot, id) in candidates
            .iter_mut()
            .zip(self.next_victims(class).filter(|&id| id != protect))
        {
            *slot = id;
        }
        for &id in candidates.iter().take_while(|&&id| id != NIL) {
            if let Some(why) = self.dead(self.slabs.item(id)) {
                self.drop_dead(id, why);
                self.stats.reclaimed += 1;
                return true;
            }
        }
        match self.policy.victim(&mut self.slabs, class, protect) {
            Some(id) => {
                self.evict(id);
                true
            }
            None => false,
        }
    }

    /// A page to take from a class other than `exclude`, never `protect_page`: an
    /// empty one if any, else the page of the next victim of the class with the
    /// most pages.
    fn victim_page(&self, exclude: Option<usize>, protect_page: Option<u32>) -> Option<u32> {
        let owned = |p: usize, m: &slab::PageMeta| {
            m.class != slab::NO_CLASS
                && Some(m.class as usize) != exclude
                && Some(p as u32) != protect_page
        };
        let pages = &self.slabs.pages;
        if let Some(p) = pages
            .iter()
            .enumerate()
            .position(|(p, m)| owned(p, m) && m.live == 0)
        {
            return Some(p as u32);
        }
        let mut order: Vec<usize> = (0..self.slabs.classes.len())
            .filter(|&c| Some(c) != exclude && self.slabs.classes[c].pages > 0)
            .collect();
        order.sort_by_key(|&c| Reverse(self.slabs.classes[c].pages));
        for c in order {
            if let Some(tail) = self.next_victims(c).next() {
                let p = self.slabs.page_of(tail);
                if Some(p) != protect_page {
                    return Some(p);
                }
            }
            if let Some(p) = pages
                .iter()
                .enumerate()
                .position(|(p, m)| owned(p, m) && m.class as usize == c)
            {
                return Some(p as u32);
            }
        }
        None
    }

    /// Frees every chunk of `page` at the cost of its class's coldest items:
    /// as many of the class's next victims as its other pages lack room for
    /// are evicted, wherever they lie, and the page's items still live move
    /// to free chunks on the other pages (as memcached's page mover rescues
    /// items). Evicting the page's own items instead would throw out a random
    /// sample of the class, hot items with the cold (the replays lost up to
    /// a point of hit ratio on mixed sizes that way). `protect` (or NIL) is
    /// never evicted. Costs a chunk copy per item moved: about a millisecond
    /// for a page of the smallest chunks, once per page move. A class's last
    /// page has no other pages to take its items: they move up a class, to
    /// free chunks there, and are evicted where there are none.
    fn empty_page(&mut self, page: u32, protect: u32) {
        for id in self.slabs.live_in_page(page) {
            if let Some(why) = self.dead(self.slabs.item(id)) {
                self.drop_dead(id, why);
            }
        }
        let class = self.slabs.pages[page as usize].class as usize;
        // A class's last page: its items go up a class where there is room.
        if self.slabs.classes[class].pages == 1 {
            for id in self.slabs.live_in_page(page) {
                if !self.move_up(id) {
                    self.evict(id);
                }
            }
            return;
        }
        let meta = &self.slabs.pages[page as usize];
        let free_here = (meta.carved - meta.live)
            + match self.slabs.classes[class].carving {
                Some(p) if p == page => self.slabs.classes[class].per_page - meta.carved,
                _ => 0,
            };
        let room_elsewhere = self.slabs.free_chunks(class) - free_here;
        // Each eviction, on this page or another, leaves one item fewer to move.
        let excess = meta.live.saturating_sub(room_elsewhere) as usize;
        let victims: Vec<u32> = self
            .next_victims(class)
            .filter(|&id| id != protect)
            .take(excess)
            .collect();
        for id in victims {
            match self.dead(self.slabs.item(id)) {
                Some(why) => self.drop_dead(id, why),
                None => self.evict(id),
            }
        }
        for id in self.slabs.live_in_page(page) {
            if !self.relocate(id, page) {
                self.evict(id);
            }
        }
    }

    /// Moves live item `id` to a free chunk of its class outside `page`; false
    /// if the class has none.
    fn relocate(&mut self, id: u32, page: u32) -> bool {
        let class = self.slabs.class_of(id);
        let Some(to) = self.slabs.alloc_outside(class, page) else {
            return false;
        };
        self.slabs.copy_chunk(id, to);
        self.policy.relocate(&mut self.slabs, class, to);
        self.rescued(id, to);
        true
    }

    /// The item of chunk `from`, copied to chunk `to` and on its list there, is
    /// found at `to` from now on (index, TTL heap), and `from` is free.
    fn rescued(&mut self, from: u32, to: u32) {
        let b = self.slabs.item(to);
        let (hash, expiry) = (key_hash(item::key(b)), item::expiry(b));
        self.index.replace(hash, from, to);
        self.ttl_push(expiry, to);
        self.slabs.free(from);
        self.stats.pages_rescued_items += 1;
    }

    /// Evicts a live item.
    fn evict(&mut self, id: u32) {
        let b = self.slabs.item(id);
        if item::state(b) & item::FETCHED == 0 {
            self.stats.evicted_unfetched += 1;
        }
        self.stats.evictions += 1;
        let class = self.slabs.class_of(id);
        self.slabs.classes[class].evicted += 1;
        self.unlink_by_id(id);
    }

    /// Frees an expired or flushed item.
    fn drop_dead(&mut self, id: u32, why: Dead) {
        if why == Dead::Expired && item::state(self.slabs.item(id)) & item::FETCHED == 0 {
            self.stats.expired_unfetched += 1;
        }
        self.unlink_by_id(id);
    }

    /// Removes `key` if present, dead or alive.
    fn remove_key(&mut self, key: &[u8], hash: u64) {
        if let Some(id) = self.find(key, hash) {
            self.unlink(id, hash);
        }
    }

    fn unlink_by_id(&mut self, id: u32) {
        let hash = key_hash(item::key(self.slabs.item(id)));
        self.unlink(id, hash);
    }

    /// Takes item `id` (with key hash `hash`) out of the index and frees its chunk.
    fn unlink(&mut self, id: u32, hash: u64) {
        self.index.remove(hash, id);
        self.stats.curr_items -= 1;
        self.stats.bytes -= item::size(self.slabs.item(id)) as u64;
        self.release_chunk(id);
    }

    /// Unlinks a chunk from the policy and frees it (not the index, not stats).
    fn release_chunk(&mut self, id: u32) {
        let class = self.slabs.class_of(id);
        self.policy.remove(&mut self.slabs, class, id);
        self.free_chunk(id);
    }

    /// Frees the chunk of an item that is gone (not moved elsewhere): a guest
    /// leaves its class's count.
    fn free_chunk(&mut self, id: u32) {
        if let Some(own) = self.guest_of(id) {
            self.slabs.classes[own].guests -= 1;
        }
        self.slabs.free(id);
    }

    /// The class of the item in chunk `id` by its size, if that is smaller than
    /// the chunk's: the item is a guest there.
    fn guest_of(&self, id: u32) -> Option<usize> {
        let chunk_class = self.slabs.class_of(id);
        let size = item::size(self.slabs.item(id));
        // Cheap for the many items at home: they do not fit the class below.
        if chunk_class == 0 || size > self.slabs.classes[chunk_class - 1].size as usize {
            return None;
        }
        self.slabs.class_for(size)
    }

    /// Where `class`, which has no page and cannot get one without taking it
    /// from another class, stores an item: the next class up, if that has
    /// pages and the guests there fill less than a page of its chunks. Past
    /// that the class is worth a page of its own again: its guests waste
    /// more than the unused part of such a page would.
    fn host_for(&self, class: usize) -> Option<usize> {
        let classes = &self.slabs.classes;
        let host = classes.get(class + 1)?;
        (classes[class].pages == 0 && host.pages > 0 && classes[class].guests < host.per_page)
            .then_some(class + 1)
    }

    /// A class that can lend its last page to `class`: one whose items, with
    /// its guests there, all fit in the free chunks of the next class up, and
    /// fill no more than 1/[`SPARSE_SHARE`] of a page there (a class takes a
    /// page back once its guests fill a whole one, [`host_for`](Self::host_for)).
    /// Its page, if not `protect_page`.
    fn sparse_class_page(&self, class: usize, protect_page: Option<u32>) -> Option<u32> {
        let classes = &self.slabs.classes;
        (0..classes.len().saturating_sub(1))
            .filter(|&c| c != class && classes[c].pages == 1 && classes[c + 1].pages > 0)
            .filter(|&c| {
                // Its guests up there already count: a class that took a page
                // back for them is not sparse the moment a few chunks free up.
                let room = self
                    .slabs
                    .free_chunks(c + 1)
                    .min(classes[c + 1].per_page / SPARSE_SHARE);
                classes[c].items + classes[c].guests as u64 <= room as u64
            })
            .filter_map(|c| self.slabs.emptiest_page(c))
            .find(|&p| Some(p) != protect_page)
    }

    /// Moves live item `id` to a free chunk of the next class up; false if
    /// that class has none (or no page).
    fn move_up(&mut self, id: u32) -> bool {
        let class = self.slabs.class_of(id);
        if self
            .slabs
            .classes
            .get(class + 1)
            .is_none_or(|c| c.pages == 0)
        {
            return false;
        }
        let Some(to) = self.slabs.alloc(class + 1) else {
            return false;
        };
        let was_home = self.guest_of(id).is_none();
        let seg = self.policy.remove(&mut self.slabs, class, id);
        self.slabs.copy_chunk(id, to);
        self.policy.adopt(&mut self.slabs, class + 1, to, seg);
        if was_home {
            self.slabs.classes[class].guests += 1;
        }
        self.rescued(id, to);
        true
    }
}

/// memcached's `safe_strtoull` on an item's data: optional leading whitespace, an
/// optional sign, decimal digits that fit in 64 bits, then the end or whitespace.
/// A negative number other than zero is rejected.
fn parse_u64(v: &[u8]) -> Option<u64> {
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let mut i = v.iter().position(|&c| !is_space(c))?;
    let negative = match v[i] {
        b'-' => {
            i += 1;
            true
        }
        b'+' => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut n: u64 = 0;
    while i < v.len() && v[i].is_ascii_digit() {
        n = n.checked_mul(10)?.checked_add((v[i] - b'0') as u64)?;
        i += 1;
    }
    if i == start || (i < v.len() && !is_space(v[i])) || (negative && n != 0) {
        return None;
    }
    Some(n)
}

/// `n` in decimal, written into `buf`.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}
