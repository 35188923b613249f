//! The eviction policy: W-TinyLFU, as Caffeine does it, with lists per slab class.
//!
//! (Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", ACM ToS 2017, section 4 "W-TinyLFU"; Caffeine's `BoundedLocalCache`.)
//!
//! Every slab class has three LRU lists; an item is in exactly one:
//!
//! ```text
//!   new item --> [ window (LRU, 1%) ] --candidate--> duel --> [ probation (20%) ] <--> [ protected (80%) ]
//!                                                    |  loser evicted                hit: probation -> protected
//!                                                    |  victim = probation LRU        overflow (memory full): protected -> probation
//! ```
//!
//! - Every store enters the **window**, a small LRU that lets a burst of new keys
//!   build up frequency before they must compete (paper section 4.1).
//! - When the class must free a chunk and the window is full, the window's LRU
//!   item (the *candidate*) meets the probation LRU item (the *victim*): the
//!   candidate enters the main space only if the [`Sketch`] says it is seen more
//!   often; the loser is evicted (section 3, "TinyLFU admission").
//! - The main space is a segmented LRU: a hit in **probation** moves an item to
//!   **protected**; protected overflow goes back to probation's MRU end, once the
//!   shard's memory is full (before, nothing is evicted and protected keeps all it
//!   is given: [`Policy::set_pressure`]).
//! - A **hill climber** resizes the window, stepping the way that gains hits. Its
//!   gradient comes from two small sets of *ghosts*, keys evicted lately, one set
//!   per side that evicted them (ARC's B1 and B2): a new key the window dropped
//!   lately would have hit with a slightly larger window, one the main space
//!   dropped, with a slightly larger main space. Each such return moves the window
//!   one step towards the side that would have kept it, so the split settles
//!   where a few more entries are worth as much on either side (the shadow-queue
//!   hill climbing of Cliffhanger, Cidon et al., NSDI'16). Recency-friendly
//!   traces grow the window towards LRU; frequency-friendly ones keep it small.
//!   Caffeine's climber compares hit ratios of whole periods of 10 x capacity
//!   requests instead; that is too slow to follow popularity that shifts within
//!   a period, where this climber moves at the next returning key.
//!   Steps grow with the climber's **trend** (a moving average of the returns'
//!   sides): returns that keep coming from one side mean the best split is
//!   far off, so the window gets there in fewer returns, while returns from
//!   both sides, as near the best split, keep the steps small.
//!   The window share is one figure per shard applied to every class's capacity.
//!
//! The sketch is one per shard, so frequencies compare across classes; the shard
//! uses that to decide which class gives up a page (see `Shard::rebalance`).
//!
//! As in Caffeine, the sketch starts counting only once the cache is half full
//! ([`Policy::start_sketch`]; Caffeine sizes its `FrequencySketch` when the
//! weighted size reaches half the maximum, and increments do nothing before).
//! Until memory runs out nothing is evicted and no frequency is read, and a
//! cache larger than its working set never runs out: there the counters cost a
//! cache miss per request for nothing (user time per request at pipeline 16 on
//! the benchmark's `default` workload fell 233 -> 204 ns without them, 2-core
//! VM). The half of memory filled after the start leaves time to learn
//! frequencies before the first eviction.
//!
//! The policy knows entries only by `u32` id and reaches their links through the
//! [`Entries`] trait: the shard implements it on the arena (links in the item
//! header), the policy simulator (`storage::sim`) on a plain vector. Both run this
//! exact code.

use super::sketch::Sketch;

/// The "no entry" id that ends a list.
pub(crate) const NIL: u32 = u32::MAX;

/// Share of a class's capacity given to the window at start (Caffeine: 1%).
const WINDOW_INITIAL_SHARE: f64 = 0.01;
/// Share of the main space (capacity minus the initial window) for protected
/// items; probation keeps the rest (20%) whatever the window's size.
const MAIN_PROTECTED_SHARE: f64 = 0.80;
/// Share of capacity that probation never gives to the window.
const PROBATION_SHARE: f64 = (1.0 - MAIN_PROTECTED_SHARE) * (1.0 - WINDOW_INITIAL_SHARE);
/// Each ghost set remembers about this share of capacity's worth of evictions:
/// the "slightly larger" of the climber's question. Larger sets count returns
/// that only a much larger window would catch and overgrow it on looping traces
/// (gli, OLTP); this size was chosen on the shared traces and the server replays
/// (docs/benchmarks.md).
const GHOST_SHARE: f64 = 0.02;
/// Entries of window a returning ghost moves the split by (times the ghosts'
/// sampling weight).
const GHOST_STEP_ENTRIES: f64 = 16.0;
/// Weight of the latest return in the climber's trend, an exponential moving
/// average of the returns' sides (+1 window, -1 main): about the last 256
/// returns count.
const TREND_WEIGHT: f64 = 1.0 / 256.0;
/// A step is `1 + TREND_GAIN x |trend|` times [`GHOST_STEP_ENTRIES`]: up to 5
/// times as long while every return comes from one side. Chosen on the shared
/// traces and the server replays' key sequences (docs/benchmarks.md): shift
/// +0.6 points, loop and sprite@200 half a point to a point down, OLTP and gli
/// within 0.2.
const TREND_GAIN: f64 = 4.0;
/// Ghost slots per set at least before keys are sampled ...
const GHOST_MIN_SLOTS: usize = 256;
/// ... and at most 1 key in 2^this is sampled, so the sets stay a small fraction
/// of a byte per item of capacity.
const GHOST_MAX_SAMPLE_BITS: u32 = 4;
/// A losing candidate at least this frequent is still admitted with probability
/// 1/[`WARM_ADMIT_ODDS`]. Without this an attacker who makes the probation victim
/// look hot (hash flooding, or just a hot victim) keeps every new item out
/// (Caffeine's `ADMIT_HASHDOS_THRESHOLD`: counters halve from 15 to 7, so 6 is warm).
const WARM_CANDIDATE_FREQUENCY: u8 = 6;
const WARM_ADMIT_ODDS: u64 = 128;
/// Entries one [`Policy::fit`] moves at most. When a shard's memory fills up,
/// its protected lists can be far over their share (see
/// [`Policy::set_pressure`]); demoting all the excess at once would stall the
/// core for one list move (a cache miss or two) per excess entry, a fifth of
/// the shard's items. Every insert and promotion fits its class again, so the
/// excess goes a few entries at a time: a promotion adds one, a climber step
/// (below) some tens to a few hundred at once, and each fit takes up to eight.
const FIT_MOVES: usize = 8;

/// Which list an entry is on. Stored in 2 bits (`item.rs`: state bits 4-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    None = 0,
    Window = 1,
    Probation = 2,
    Protected = 3,
}

impl Segment {
    pub fn from_bits(b: u8) -> Segment {
        match b & 3 {
            1 => Segment::Window,
            2 => Segment::Probation,
            3 => Segment::Protected,
            _ => Segment::None,
        }
    }
}

/// Link storage of the entries the policy orders.
pub(crate) trait Entries {
    fn prev(&self, id: u32) -> u32;
    fn next(&self, id: u32) -> u32;
    fn set_prev(&mut self, id: u32, v: u32);
    fn set_next(&mut self, id: u32, v: u32);
    fn segment(&self, id: u32) -> Segment;
    fn set_segment(&mut self, id: u32, s: Segment);
    /// The entry's key hash, for the sketch.
    fn key_hash(&self, id: u32) -> u64;
}

/// One intrusive LRU list: `head` is the most recently used entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    pub len: u32,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }
}

/// A slab class's three lists and its capacity in entries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClassLists {
    pub window: List,
    pub probation: List,
    pub protected: List,
    pub capacity: u32,
    /// A list is over its maximum, left for later fits to move a few entries
    /// at a time (the last [`Policy::fit`] ran out of moves, or
    /// [`Policy::set_pressure`] found it so). Read by the invariant checks.
    pub catching_up: bool,
}

impl ClassLists {
    fn list(&mut self, s: Segment) -> &mut List {
        match s {
            Segment::Window => &mut self.window,
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
            Segment::None => unreachable!("entry on no list"),
        }
    }
}

/// Policy figures for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Window candidates that beat the probation victim and entered the main space.
    pub admitted: u64,
    /// Window candidates evicted because the victim was as frequent or more.
    pub rejected: u64,
    /// Of `admitted`, warm losers let in at random (hash flooding defence).
    pub admitted_random: u64,
    /// New keys the window had dropped lately (each grew the window).
    pub window_ghost_hits: u64,
    /// New keys the main space had dropped lately (each shrank the window).
    pub main_ghost_hits: u64,
    /// Sketch halvings.
    pub sketch_resets: u64,
}

/// At most this many entries get their store's sighting when the sketch starts
/// or grows ([`Policy::seed_sketch`]): a walk of a few milliseconds, once or a
/// few times in a shard's life, even with many millions of items.
const SKETCH_SEED_ENTRIES: usize = 1 << 16;

pub(crate) struct Policy {
    pub classes: Vec<ClassLists>,
    sketch: Sketch,
    /// The cache has been half full: the sketch counts (see the module notes).
    sketch_started: bool,
    /// The owner has no free memory left: entries are evicted, so the main
    /// space keeps its probation share. See [`set_pressure`](Self::set_pressure).
    pressure: bool,
    total_capacity: usize,
    /// Share of every class's capacity for its window (0 ..= 1 - PROBATION_SHARE).
    window_share: f64,
    ghosts: Ghosts,
    /// The climber's trend: see [`TREND_WEIGHT`].
    trend: f64,
    rng: u64,
    pub stats: PolicyStats,
}

impl Policy {
    /// A policy for `classes` lists, whose sketch waits for
    /// [`start_sketch`](Self::start_sketch).
    pub fn new(classes: usize, seed: u64) -> Policy {
        Policy {
            classes: vec![ClassLists::default(); classes],
            sketch: Sketch::new(0),
            sketch_started: false,
            pressure: false,
            total_capacity: 0,
            window_share: WINDOW_INITIAL_SHARE,
            ghosts: Ghosts::default(),
            trend: 0.0,
            rng: seed | 1,
            stats: PolicyStats::default(),
        }
    }

    /// The class now holds `capacity` entries at most (its pages x chunks per page).
    /// The sketch, once started, grows with the total; lists shrink towards the
    /// new maxima ([`fit`](Self::fit)).
    pub fn set_capacity<E: Entries>(&mut self, e: &mut E, class: usize, capacity: u32) {
        let c = &mut self.classes[class];
        self.total_capacity = self.total_capacity - c.capacity as usize + capacity as usize;
        c.capacity = capacity;
        if self.sketch_started && self.sketch.ensure_capacity(self.total_capacity) {
            self.seed_sketch(e);
        }
        self.ghosts.ensure_capacity(self.total_capacity);
        self.fit(e, class);
    }

    /// Entries the classes can hold now.
    pub fn total_capacity(&self) -> usize {
        self.total_capacity
    }

    /// The owner is half full: the sketch is sized for `expected_capacity`
    /// entries (what the owner will hold when full; as Caffeine sizes its
    /// sketch for the maximum, so that filling the rest does not grow and
    /// clear it) and counts from now on. Later calls do nothing.
    pub fn start_sketch<E: Entries>(&mut self, e: &E, expected_capacity: usize) {
        if self.sketch_started {
            return;
        }
        self.sketch_started = true;
        self.sketch
            .ensure_capacity(expected_capacity.max(self.total_capacity));
        self.seed_sketch(e);
    }

    /// Gives the entries held the sighting of their store, which a new (or
    /// newly grown, so cleared) sketch lacks. Without it the first new keys,
    /// whose store the sketch saw, would beat every older victim in the
    /// admission duel: on the gli trace, W-TinyLFU at 1000 entries fell from
    /// 50.86% to 44.21%. At most [`SKETCH_SEED_ENTRIES`], shared among the
    /// classes by their entries, each class's nearest eviction first (its
    /// lists walked from their LRU ends).
    fn seed_sketch<E: Entries>(&mut self, e: &E) {
        let entries = |l: &ClassLists| (l.window.len + l.probation.len + l.protected.len) as usize;
        let held: usize = self.classes.iter().map(entries).sum();
        for lists in &self.classes {
            let n = entries(lists);
            let mut budget = if held <= SKETCH_SEED_ENTRIES {
                n
            } else {
                (SKETCH_SEED_ENTRIES * n).div_ceil(held)
            };
            for list in [lists.probation, lists.window, lists.protected] {
                let mut id = list.tail;
                while id != NIL && budget > 0 {
                    self.sketch.increment(e.key_hash(id));
                    budget -= 1;
                    id = e.prev(id);
                }
            }
        }
    }

    /// Whether the owner is out of free memory, so that new entries displace
    /// old ones. Until then nothing is evicted and the protected/probation split
    /// decides nothing, so protected keeps every entry promoted into it instead
    /// of demoting its LRU end to probation on each promotion: with memory to
    /// spare, a read of a probation entry would otherwise move two entries and
    /// touch four neighbours (12% of the CPU time per request of the `default`
    /// benchmark workload, whose 13.6 MB of items sit in a 256 MB cache).
    pub fn set_pressure(&mut self, pressure: bool) {
        if pressure == self.pressure {
            return;
        }
        self.pressure = pressure;
        for class in 0..self.classes.len() {
            let over = self.over_maximum(class, self.maxima(class)).is_some();
            self.classes[class].catching_up = over;
        }
    }

    pub fn window_share(&self) -> f64 {
        self.window_share
    }

    /// Starts loading the sketch counters of a key (see `Shard::prefetch`).
    pub fn prefetch(&self, key_hash: u64) {
        self.sketch.prefetch(key_hash);
    }

    pub fn sketch_bytes(&self) -> usize {
        self.sketch.heap_bytes()
    }

    pub fn stats(&self) -> PolicyStats {
        PolicyStats {
            sketch_resets: self.sketch.resets(),
            ..self.stats
        }
    }

    /// Estimated recent frequency of a key.
    pub fn frequency(&self, key_hash: u64) -> u8 {
        self.sketch.frequency(key_hash)
    }

    /// (window, protected) maxima of a class; probation gets the rest.
    pub fn maxima(&self, class: usize) -> (u32, u32) {
        let cap = self.classes[class].capacity;
        if cap == 0 {
            return (0, 0);
        }
        let window = ((self.window_share * cap as f64).round() as u32).clamp(1, cap);
        let probation = (PROBATION_SHARE * cap as f64).round() as u32;
        (window, cap.saturating_sub(window + probation))
    }

    // ----- the four calls the shard makes -------------------------------------

    /// A new entry: counted in the sketch and put at the window's MRU end.
    /// `key_hash` is the entry's key's (the caller has it from the request, and
    /// hashing the key again from the item would cost a hash and an item read).
    pub fn insert<E: Entries>(&mut self, e: &mut E, class: usize, id: u32, key_hash: u64) {
        self.sketch.increment(key_hash);
        if let Some(side) = self.ghosts.take(key_hash) {
            self.climb(e, side);
        }
        self.push_head(e, class, Segment::Window, id);
        self.fit(e, class);
    }

    /// A read (or other use) of an entry: counted, moved to its list's MRU end, and
    /// promoted from probation to protected.
    pub fn access<E: Entries>(&mut self, e: &mut E, class: usize, id: u32, key_hash: u64) {
        self.sketch.increment_resident(key_hash);
        let seg = self.unlink(e, class, id);
        let to = match seg {
            Segment::Probation | Segment::Protected => Segment::Protected,
            s => s,
        };
        self.push_head(e, class, to, id);
        if seg == Segment::Probation {
            self.fit(e, class);
        }
    }

    /// An entry's bytes (links included) were copied to chunk `new` (a page move
    /// that keeps its items): `new` takes the old chunk's place in its list.
    pub fn relocate<E: Entries>(&mut self, e: &mut E, class: usize, new: u32) {
        let seg = e.segment(new);
        let (prev, next) = (e.prev(new), e.next(new));
        let list = self.classes[class].list(seg);
        if prev != NIL {
            e.set_next(prev, new);
        } else {
            list.head = new;
        }
        if next != NIL {
            e.set_prev(next, new);
        } else {
            list.tail = new;
        }
    }

    /// An entry moved in from another class (its item was copied to chunk
    /// `id` of `class`): it joins `seg` of this class, uncounted, since moving
    /// it is not a use of its key.
    pub fn adopt<E: Entries>(&mut self, e: &mut E, class: usize, id: u32, seg: Segment) {
        let seg = if seg == Segment::None {
            Segment::Window
        } else {
            seg
        };
        self.push_head(e, class, seg, id);
        self.fit(e, class);
    }

    /// A read of an entry already used this second, outside probation: counted in
    /// the sketch but left where it is. It is near its list's MRU end
    /// already, and moving it again would touch its neighbours' memory, a cache
    /// miss each, for nothing (memcached bumps an item at most once a minute for
    /// the same reason). Probation hits always move: they promote the entry.
    pub fn access_in_place(&mut self, key_hash: u64) {
        self.sketch.increment_resident(key_hash);
    }

    /// Takes an entry off its list; returns the list it was on.
    pub fn remove<E: Entries>(&mut self, e: &mut E, class: usize, id: u32) -> Segment {
        self.unlink(e, class, id)
    }

    /// Puts an entry whose item was rewritten in place back on `seg` (its list
    /// before the rewrite), as an access.
    pub fn reinsert<E: Entries>(
        &mut self,
        e: &mut E,
        class: usize,
        id: u32,
        seg: Segment,
        key_hash: u64,
    ) {
        self.sketch.increment_resident(key_hash);
        let to = match seg {
            Segment::None => Segment::Window,
            Segment::Probation => Segment::Protected,
            s => s,
        };
        self.push_head(e, class, to, id);
        self.fit(e, class);
    }

    /// The entry to evict so that the class can take one more entry (which will
    /// enter the window); never `protect`. If the window is full, its LRU entry
    /// duels probation's LRU entry and the winner stays (moved to probation);
    /// otherwise (the climber grew the window) the main space gives up its LRU
    /// entry. The entry returned is still on its list: the caller removes it.
    pub fn victim<E: Entries>(&mut self, e: &mut E, class: usize, protect: u32) -> Option<u32> {
        let (window_max, _) = self.maxima(class);
        let lists = self.classes[class];
        let tail = |l: &List| {
            let t = if l.tail == protect && l.tail != NIL {
                e.prev(l.tail)
            } else {
                l.tail
            };
            (t != NIL).then_some(t)
        };
        let main_victim = tail(&lists.probation).or_else(|| tail(&lists.protected));
        let candidate = tail(&lists.window);
        let (id, side) = match (candidate, main_victim) {
            (Some(c), Some(v)) if lists.window.len >= window_max => {
                if self.admit(e.key_hash(c), e.key_hash(v)) {
                    self.unlink(e, class, c);
                    self.push_head(e, class, Segment::Probation, c);
                    (v, Segment::Probation)
                } else {
                    self.stats.rejected += 1;
                    (c, Segment::Window)
                }
            }
            (_, Some(v)) => (v, Segment::Probation),
            (Some(c), None) => (c, Segment::Window),
            (None, None) => return None,
        };
        self.ghosts.record(e.key_hash(id), side);
        Some(id)
    }

    /// TinyLFU's admission test (paper section 3) with Caffeine's defence against
    /// hash flooding.
    fn admit(&mut self, candidate: u64, victim: u64) -> bool {
        let c = self.sketch.frequency(candidate);
        let v = self.sketch.frequency(victim);
        if c > v {
            self.stats.admitted += 1;
            return true;
        }
        if c >= WARM_CANDIDATE_FREQUENCY && self.random() % WARM_ADMIT_ODDS == 0 {
            self.stats.admitted += 1;
            self.stats.admitted_random += 1;
            return true;
        }
        false
    }

    /// xorshift64*: cheap, and a fixed seed makes simulator runs repeatable.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    // ----- hill climber --------------------------------------------------------

    /// A new key was evicted lately by `side`: one step towards keeping it. Every
    /// class's lists are fitted towards the new split ([`fit`](Self::fit): a
    /// smaller main space may leave protected over its share for a few more
    /// fits); a larger window fills as entries come in.
    fn climb<E: Entries>(&mut self, e: &mut E, side: Segment) {
        let toward_window = if side == Segment::Window {
            self.stats.window_ghost_hits += 1;
            1.0
        } else {
            self.stats.main_ghost_hits += 1;
            -1.0
        };
        self.trend += TREND_WEIGHT * (toward_window - self.trend);
        let step = toward_window
            * (1.0 + TREND_GAIN * self.trend.abs())
            * GHOST_STEP_ENTRIES
            * self.ghosts.weight() as f64
            / self.total_capacity.max(1) as f64;
        // The window never goes below its starting share: a window of nothing
        // cannot notice that recency started to matter again.
        self.window_share =
            (self.window_share + step).clamp(WINDOW_INITIAL_SHARE, 1.0 - PROBATION_SHARE);
        for class in 0..self.classes.len() {
            self.fit(e, class);
        }
    }

    /// Moves entries between lists until each is within its maximum, at most
    /// [`FIT_MOVES`] of them: protected overflow to probation (under pressure
    /// only), window overflow to probation (no duel: the class had room). A
    /// window below its maximum grows as new entries come in, since
    /// [`victim`](Self::victim) then takes from the main space.
    fn fit<E: Entries>(&mut self, e: &mut E, class: usize) {
        let maxima = self.maxima(class);
        for _ in 0..FIT_MOVES {
            let Some(from) = self.over_maximum(class, maxima) else {
                self.classes[class].catching_up = false;
                return;
            };
            self.unlink(e, class, from);
            self.push_head(e, class, Segment::Probation, from);
        }
        self.classes[class].catching_up = self.over_maximum(class, maxima).is_some();
    }

    /// The entry [`fit`](Self::fit) would move next, if a list of the class is
    /// over its maximum (`maxima` as [`maxima`](Self::maxima) gives them).
    fn over_maximum(&self, class: usize, (window_max, protected_max): (u32, u32)) -> Option<u32> {
        let l = &self.classes[class];
        if self.pressure && l.protected.len > protected_max {
            Some(l.protected.tail)
        } else if l.window.len > window_max {
            Some(l.window.tail)
        } else {
            None
        }
    }

    // ----- list operations -----------------------------------------------------

    fn push_head<E: Entries>(&mut self, e: &mut E, class: usize, seg: Segment, id: u32) {
        let list = self.classes[class].list(seg);
        let head = list.head;
        e.set_prev(id, NIL);
        e.set_next(id, head);
        e.set_segment(id, seg);
        if head != NIL {
            e.set_prev(head, id);
        } else {
            list.tail = id;
        }
        list.head = id;
        list.len += 1;
    }

    fn unlink<E: Entries>(&mut self, e: &mut E, class: usize, id: u32) -> Segment {
        let seg = e.segment(id);
        let (prev, next) = (e.prev(id), e.next(id));
        let list = self.classes[class].list(seg);
        if prev != NIL {
            e.set_next(prev, next);
        } else {
            list.head = next;
        }
        if next != NIL {
            e.set_prev(next, prev);
        } else {
            list.tail = prev;
        }
        list.len -= 1;
        e.set_prev(id, NIL);
        e.set_next(id, NIL);
        e.set_segment(id, Segment::None);
        seg
    }
}

/// Keys the policy evicted lately, by the side that evicted them: the climber's
/// ghosts. Each set is direct-mapped (a ghost lives until a later one takes its
/// slot, about as many evictions as the set has slots) and, once capacity is
/// large, holds a 1-in-`weight` sample of keys: a few KB per shard at most
/// (2 x 2 bytes x 2% of capacity / weight).
#[derive(Default)]
struct Ghosts {
    /// Fingerprints of sampled keys the window evicted (mostly rejected candidates).
    window: Vec<u16>,
    /// Fingerprints of sampled keys the main space evicted.
    main: Vec<u16>,
    /// Keys whose hash has any of these bits set are not sampled.
    sample_mask: u64,
    capacity: usize,
}

impl Ghosts {
    fn ensure_capacity(&mut self, capacity: usize) {
        if capacity <= self.capacity {
            return;
        }
        self.capacity = capacity;
        let remembered = ((capacity as f64 * GHOST_SHARE) as usize).max(1);
        let mut bits = 0;
        while bits < GHOST_MAX_SAMPLE_BITS && remembered >> (bits + 1) >= GHOST_MIN_SLOTS {
            bits += 1;
        }
        let slots = (remembered >> bits).max(1).next_power_of_two();
        if slots != self.window.len() {
            self.window = vec![0; slots];
            self.main = vec![0; slots];
        }
        // The top bits: the slot and fingerprint come from the low ones.
        self.sample_mask = !(u64::MAX >> bits);
    }

    /// Keys each ghost stands for.
    fn weight(&self) -> u64 {
        1 << self.sample_mask.count_ones()
    }

    /// A key's slot and (non-zero) fingerprint, if it is sampled.
    fn slot(&self, key_hash: u64) -> Option<(usize, u16)> {
        if self.window.is_empty() || key_hash & self.sample_mask != 0 {
            return None;
        }
        let slot = (key_hash >> 16) as usize & (self.window.len() - 1);
        Some((slot, key_hash as u16 | 1))
    }

    fn record(&mut self, key_hash: u64, side: Segment) {
        if let Some((slot, fingerprint)) = self.slot(key_hash) {
            match side {
                Segment::Window => self.window[slot] = fingerprint,
                _ => self.main[slot] = fingerprint,
            }
        }
    }

    /// The side that evicted this key lately, if any; the ghost is used up.
    fn take(&mut self, key_hash: u64) -> Option<Segment> {
        let (slot, fingerprint) = self.slot(key_hash)?;
        if self.window[slot] == fingerprint {
            self.window[slot] = 0;
            Some(Segment::Window)
        } else if self.main[slot] == fingerprint {
            self.main[slot] = 0;
            Some(Segment::Probation)
        } else {
            None
        }
    }
}

/// The entries of one list from `head` (most recent) on.
pub(crate) fn iter<E: Entries>(e: &E, head: u32) -> impl Iterator<Item = u32> + '_ {
    let mut id = head;
    std::iter::from_fn(move || {
        if id == NIL {
            return None;
        }
        let cur = id;
        id = e.next(cur);
        Some(cur)
    })
}

/// The entries of one list from `tail` (least recent) back.
pub(crate) fn iter_back<E: Entries>(e: &E, tail: u32) -> impl Iterator<Item = u32> + '_ {
    let mut id = tail;
    std::iter::from_fn(move || {
        if id == NIL {
            return None;
        }
        let cur = id;
        id = e.prev(cur);
        Some(cur)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vecs {
        links: Vec<(u32, u32, Segment)>,
    }

    impl Entries for Vecs {
        fn prev(&self, id: u32) -> u32 {
            self.links[id as usize].0
        }
        fn next(&self, id: u32) -> u32 {
            self.links[id as usize].1
        }
        fn set_prev(&mut self, id: u32, v: u32) {
            self.links[id as usize].0 = v
        }
        fn set_next(&mut self, id: u32, v: u32) {
            self.links[id as usize].1 = v
        }
        fn segment(&self, id: u32) -> Segment {
            self.links[id as usize].2
        }
        fn set_segment(&mut self, id: u32, s: Segment) {
            self.links[id as usize].2 = s
        }
        fn key_hash(&self, id: u32) -> u64 {
            (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
    }

    /// `Policy::insert` / `access` with the entry's hash, as the shard calls them.
    fn insert(p: &mut Policy, e: &mut Vecs, id: u32) {
        let h = e.key_hash(id);
        p.insert(e, 0, id, h);
    }
    fn access(p: &mut Policy, e: &mut Vecs, id: u32) {
        let h = e.key_hash(id);
        p.access(e, 0, id, h);
    }

    fn setup(cap: u32) -> (Policy, Vecs) {
        let mut p = Policy::new(1, 1);
        let mut e = Vecs {
            links: vec![(NIL, NIL, Segment::None); 1000],
        };
        p.set_capacity(&mut e, 0, cap);
        p.start_sketch(&e, cap as usize);
        p.set_pressure(true);
        (p, e)
    }

    #[test]
    fn the_sketch_counts_from_its_start_and_learns_the_entries_held() {
        let mut p = Policy::new(1, 1);
        let mut e = Vecs {
            links: vec![(NIL, NIL, Segment::None); 1000],
        };
        p.set_capacity(&mut e, 0, 100);
        for id in 0..40 {
            insert(&mut p, &mut e, id);
        }
        access(&mut p, &mut e, 3);
        assert_eq!(p.sketch_bytes(), 0);
        assert_eq!(
            p.frequency(e.key_hash(3)),
            0,
            "nothing counted before the start"
        );
        p.start_sketch(&e, 100);
        assert!(p.sketch_bytes() > 0);
        for id in 0..40 {
            assert_eq!(p.frequency(e.key_hash(id)), 1, "entry {id}: its store");
        }
        access(&mut p, &mut e, 3);
        assert_eq!(
            p.frequency(e.key_hash(3)),
            2,
            "hits count from the start on"
        );
        // A second start does not count the entries again.
        p.start_sketch(&e, 100);
        assert_eq!(p.frequency(e.key_hash(5)), 1);
        // A growth past the size it started with clears the counts, and
        // gives the entries held their sighting again.
        p.set_capacity(&mut e, 0, 500);
        assert!(p.sketch_bytes() > 0);
        for id in 0..40 {
            assert_eq!(p.frequency(e.key_hash(id)), 1, "entry {id} after growing");
        }
    }

    #[test]
    fn a_large_cache_seeds_a_share_of_every_class() {
        let classes = 2;
        let mut p = Policy::new(classes, 1);
        let mut e = Vecs {
            links: vec![(NIL, NIL, Segment::None); 3 * SKETCH_SEED_ENTRIES],
        };
        p.set_capacity(&mut e, 0, 2 * SKETCH_SEED_ENTRIES as u32);
        p.set_capacity(&mut e, 1, SKETCH_SEED_ENTRIES as u32);
        let (small, large) = (
            0..2 * SKETCH_SEED_ENTRIES as u32,
            2 * SKETCH_SEED_ENTRIES as u32..3 * SKETCH_SEED_ENTRIES as u32,
        );
        for id in small.clone() {
            let h = e.key_hash(id);
            p.insert(&mut e, 0, id, h);
        }
        for id in large.clone() {
            let h = e.key_hash(id);
            p.insert(&mut e, 1, id, h);
        }
        p.start_sketch(&e, 3 * SKETCH_SEED_ENTRIES);
        let seeded =
            |ids: std::ops::Range<u32>| ids.filter(|&id| p.frequency(e.key_hash(id)) >= 1).count();
        // Twice the budget is held: each class gets about half of its
        // entries (false positives of the count-min sketch add a few).
        let (in_small, in_large) = (seeded(small), seeded(large));
        assert!(in_small >= SKETCH_SEED_ENTRIES * 2 / 3, "{in_small}");
        assert!(in_large >= SKETCH_SEED_ENTRIES / 3, "{in_large}");
        assert!(
            in_small + in_large < SKETCH_SEED_ENTRIES * 2,
            "{in_small} + {in_large}"
        );
    }

    #[test]
    fn maxima_follow_caffeine() {
        let (p, _) = setup(1000);
        assert_eq!(p.maxima(0), (10, 792));
        let (p, _) = setup(500);
        assert_eq!(p.maxima(0), (5, 396));
        let (p, _) = setup(1);
        assert_eq!(p.maxima(0), (1, 0));
    }

    #[test]
    fn window_overflow_goes_to_probation_and_hits_promote() {
        let (mut p, mut e) = setup(100);
        for id in 0..3 {
            insert(&mut p, &mut e, id);
        }
        let l = p.classes[0];
        assert_eq!((l.window.len, l.probation.len), (1, 2));
        assert_eq!(e.segment(2), Segment::Window);
        access(&mut p, &mut e, 0);
        assert_eq!(e.segment(0), Segment::Protected);
        assert_eq!(p.classes[0].protected.len, 1);
    }

    #[test]
    fn without_pressure_protected_keeps_what_it_promotes_and_then_sheds_it_gradually() {
        let (mut p, mut e) = setup(100);
        p.set_pressure(false);
        let (window_max, protected_max) = p.maxima(0);
        for id in 0..100 {
            insert(&mut p, &mut e, id);
        }
        for id in 0..100 {
            if e.segment(id) == Segment::Probation {
                access(&mut p, &mut e, id);
            }
        }
        let l = p.classes[0];
        assert_eq!(l.window.len, window_max, "the window is held to its share");
        assert_eq!(l.protected.len, 100 - window_max, "nothing was demoted");
        assert!(l.protected.len > protected_max);
        assert_eq!(l.probation.len, 0);

        // Memory ran out. That alone moves nothing ...
        p.set_pressure(true);
        assert_eq!(p.classes[0].protected.len, l.protected.len);
        assert!(p.classes[0].catching_up);
        // ... but each store from now on evicts one entry and fits its class,
        // demoting up to FIT_MOVES of protected's excess, least recent first.
        let excess = l.protected.len - protected_max;
        let stores = excess.div_ceil(FIT_MOVES as u32);
        for (n, id) in (100..100 + stores).enumerate() {
            let before = p.classes[0].protected.len;
            let victim = p.victim(&mut e, 0, NIL).expect("a full class has a victim");
            p.remove(&mut e, 0, victim);
            insert(&mut p, &mut e, id);
            let after = p.classes[0].protected.len;
            assert!(after < before && before - after <= FIT_MOVES as u32);
            assert_eq!(p.classes[0].catching_up, n + 1 < stores as usize);
        }
        let l = p.classes[0];
        assert_eq!(l.protected.len, protected_max);
        // The demoted are protected's least recent, the first promoted (0 up),
        // less those evicted as probation's victims since.
        assert_eq!(e.segment(98), Segment::Protected);
        assert_eq!(e.segment(excess - 1), Segment::Probation);
    }

    #[test]
    fn a_frequent_candidate_beats_the_victim_and_a_new_one_loses() {
        let (mut p, mut e) = setup(10);
        for id in 0..10 {
            insert(&mut p, &mut e, id);
        }
        // Window holds 9 (the newest); 0 is in probation (the victim), 9 in the window.
        let l = p.classes[0];
        assert_eq!((l.window.len, l.window.head), (1, 9));
        // A candidate seen once more than the victim wins.
        access(&mut p, &mut e, 9);
        let v = p.victim(&mut e, 0, NIL).unwrap();
        assert_ne!(v, 9);
        assert_eq!(e.segment(9), Segment::Probation);
        assert_eq!(p.stats.admitted, 1);
        p.remove(&mut e, 0, v);
        insert(&mut p, &mut e, 10);
        // A fresh candidate (seen once) does not beat a victim seen once.
        let v = p.victim(&mut e, 0, NIL).unwrap();
        assert_eq!(v, 10);
        assert_eq!(p.stats.rejected, 1);
    }

    #[test]
    fn returning_ghosts_step_the_window_towards_the_side_that_evicted_them() {
        let cap = 1000;
        let (mut p, mut e) = setup(cap);
        for id in 0..cap {
            insert(&mut p, &mut e, id);
        }
        let step = GHOST_STEP_ENTRIES / cap as f64;
        let start = p.window_share();
        // A fresh candidate loses its duel; when its key comes back the window
        // grows by one step.
        let rejected = p.victim(&mut e, 0, NIL).unwrap();
        assert_eq!(e.segment(rejected), Segment::Window);
        p.remove(&mut e, 0, rejected);
        insert(&mut p, &mut e, rejected);
        assert_eq!(p.stats.window_ghost_hits, 1);
        // One return is hardly a trend: the step is barely longer than the base.
        let first = step * (1.0 + TREND_GAIN * TREND_WEIGHT);
        assert!((p.window_share() - (start + first)).abs() < 1e-9);
        // The ghost is used up: the same key again changes nothing.
        let share = p.window_share();
        p.remove(&mut e, 0, rejected);
        insert(&mut p, &mut e, rejected);
        assert_eq!(p.stats.window_ghost_hits, 1);
        assert_eq!(p.window_share(), share);
        // The window is now below its maximum, so the next victim comes from the
        // main space; its return shrinks the window by one step.
        let evicted = p.victim(&mut e, 0, NIL).unwrap();
        assert_eq!(e.segment(evicted), Segment::Probation);
        p.remove(&mut e, 0, evicted);
        insert(&mut p, &mut e, evicted);
        assert_eq!(p.stats.main_ghost_hits, 1);
        let second = step * (1.0 + TREND_GAIN * TREND_WEIGHT * TREND_WEIGHT);
        assert!((p.window_share() - (start + first - second)).abs() < 1e-9);
    }

    #[test]
    fn steps_lengthen_while_returns_keep_coming_from_one_side() {
        let (mut p, mut e) = setup(1000);
        let base = GHOST_STEP_ENTRIES / 1000.0;
        let mut steps = Vec::new();
        for _ in 0..20 {
            let before = p.window_share();
            p.climb(&mut e, Segment::Window);
            steps.push(p.window_share() - before);
        }
        assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
        assert!(steps[19] > base * (1.0 + TREND_GAIN * 0.07), "{steps:?}");
        // Returns from both sides in turn: the trend fades and the steps
        // shorten towards the base step.
        let mut last = 0.0;
        for i in 0..2000 {
            let before = p.window_share();
            p.climb(&mut e, [Segment::Probation, Segment::Window][i % 2]);
            last = (p.window_share() - before).abs();
        }
        assert!(last < base * 1.05, "{last} vs base {base}");
        assert!(p.trend.abs() < 0.01, "{}", p.trend);
    }

    #[test]
    fn ghosts_sample_keys_once_capacity_is_large() {
        let mut g = Ghosts::default();
        g.ensure_capacity(1000);
        assert_eq!((g.weight(), g.window.len()), (1, 32));
        g.ensure_capacity(10_000_000);
        assert_eq!(g.weight(), 1 << GHOST_MAX_SAMPLE_BITS);
        // 2% of 10M remembered through a 1-in-16 sample.
        assert_eq!(
            g.window.len(),
            (200_000usize >> GHOST_MAX_SAMPLE_BITS).next_power_of_two()
        );
        let sampled = (0..10_000u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .filter(|&h| g.slot(h).is_some())
            .count();
        assert!((400..850).contains(&sampled), "{sampled} of 10000 sampled");
    }
}
