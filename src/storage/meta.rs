//! The meta commands' operations on a shard, with memcached 1.6's stampede
//! protection: win tokens (`W`), stale items (`X`) and "a win was already
//! handed out" (`Z`), kept in the item's state byte (see `item.rs`).
//!
//! A key lives on exactly one core and that core runs every request for it one
//! at a time, so "exactly one caller wins" needs no more than a state bit.

use super::item::{self, FETCHED, STALE, WIN_SENT};
use super::{DeltaError, Shard, StoreResult};

/// One of the flags of `mg` and `ma` that set or read an item's TTL. memcached
/// applies them one after another in the order sent, so a flag sees what the
/// ones before it set: `mg k R30 T10` checks `R` against the old TTL and `mg k
/// T10 R30` against the new one, `t` reports the TTL at its place, and of `T`
/// and `N` on a created item the later one wins. Expiries are absolute (0 =
/// never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlStep {
    /// `T`: the item's new expiry.
    Touch(u32),
    /// `N`: on a miss, create the item; then its expiry (only when created).
    Vivify(u32),
    /// `R` (mg): win if the item expires within this many seconds.
    Recache(u32),
    /// `t`: the TTL as of here is reported.
    Report,
}

/// A request's TTL flags in the order sent (each at most once: meta flags are
/// never repeated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TtlSteps([Option<TtlStep>; 4]);

/// What a request's TTL flags come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TtlOutcome {
    /// The item's expiry after the last flag.
    expiry: u32,
    /// The expiry when `t` was reached (the final one without a `t`).
    reported: u32,
    /// `R` found the item close enough to its expiry.
    recache: bool,
}

impl TtlSteps {
    /// Appends a step; steps past the fourth are ignored (there are four kinds
    /// and none repeats).
    pub fn push(&mut self, step: TtlStep) {
        if let Some(slot) = self.0.iter_mut().find(|s| s.is_none()) {
            *slot = Some(step);
        }
    }

    fn iter(&self) -> impl Iterator<Item = TtlStep> + '_ {
        self.0.iter().flatten().copied()
    }

    /// `N`'s expiry, if the request vivifies on a miss.
    pub fn vivify(&self) -> Option<u32> {
        self.iter().find_map(|s| match s {
            TtlStep::Vivify(e) => Some(e),
            _ => None,
        })
    }

    /// Runs the steps over an item whose expiry is `expiry` (an item created
    /// by this request starts with none, as in memcached).
    fn apply(&self, mut expiry: u32, created: bool, now: u32) -> TtlOutcome {
        let mut reported = None;
        let mut recache = false;
        for step in self.iter() {
            match step {
                TtlStep::Touch(e) => expiry = e,
                TtlStep::Vivify(e) if created => expiry = e,
                TtlStep::Vivify(_) => {}
                TtlStep::Recache(secs) => {
                    recache |=
                        !created && expiry != 0 && (expiry as u64) < now as u64 + secs as u64;
                }
                TtlStep::Report => reported = Some(expiry),
            }
        }
        TtlOutcome {
            expiry,
            reported: reported.unwrap_or(expiry),
            recache,
        }
    }
}

/// Options of `mg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaGet {
    /// `T`, `N`, `R` and `t`, in the order sent.
    pub ttl: TtlSteps,
    /// `u`: no LRU bump, not marked fetched, last access unchanged.
    pub no_bump: bool,
    /// `E`: CAS value of an item created by `N`.
    pub new_cas: Option<u64>,
}

/// What `mg` found (or created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaHit<'a> {
    pub value: &'a [u8],
    pub flags: u32,
    pub cas: u64,
    /// The expiry as of the `t` flag (unix seconds, 0 = never).
    pub reported_expiry: u32,
    /// Whether the item had been read before this request (`h`).
    pub fetched_before: bool,
    /// Seconds since the previous access (`l`).
    pub idle: u32,
    pub stale: bool,
    /// This caller got the win token (`W`).
    pub win: bool,
    /// A win token had already been handed out (`Z`).
    pub already_won: bool,
}

/// `ms` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetaSetMode {
    #[default]
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// Options of `ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaSet {
    pub mode: MetaSetMode,
    pub flags: u32,
    pub expiry: u32,
    /// `C`: store only if the item's CAS is this (or, for set and replace with
    /// `invalidate`, older); add ignores it.
    pub compare_cas: Option<u64>,
    /// `E`: the stored item's CAS value.
    pub new_cas: Option<u64>,
    /// `I`: a CAS older than the item's stores the item as stale instead of failing.
    pub invalidate: bool,
    /// `N`: append/prepend on a miss creates the item with this expiry.
    pub vivify: Option<u32>,
}

/// Options of `md`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetaDelete {
    pub compare_cas: Option<u64>,
    pub new_cas: Option<u64>,
    /// `I`: keep the item, mark it stale, give it a new CAS.
    pub invalidate: bool,
    /// `T` (with `I`): its new expiry.
    pub touch: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaDeleteResult {
    Deleted,
    NotFound,
    Exists,
}

/// Options of `ma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaArith {
    pub incr: bool,
    pub delta: u64,
    pub compare_cas: Option<u64>,
    pub new_cas: Option<u64>,
    /// `J`: the value of an item `N` creates.
    pub initial: u64,
    /// `T`, `N` and `t`, in the order sent.
    pub ttl: TtlSteps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaArithResult {
    /// `reported_expiry`: the expiry as of the `t` flag; `created`: `N` made
    /// the item.
    Value {
        value: u64,
        cas: u64,
        reported_expiry: u32,
        created: bool,
    },
    NotFound,
    NotStored,
    Exists,
    NonNumeric,
}

/// What `me` shows about an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaDebug {
    pub expiry: u32,
    pub atime: u32,
    pub cas: u64,
    pub fetched: bool,
    /// Slab class id, from 1.
    pub class: usize,
    /// Header + key + value bytes.
    pub size: usize,
}

impl Shard {
    /// `mg`: a read with meta's extras (see [`MetaGet`] and [`MetaHit`]).
    pub fn meta_get(
        &mut self,
        key: &[u8],
        hash: u64,
        opts: MetaGet,
        now: u32,
    ) -> Option<MetaHit<'_>> {
        self.tick(now);
        let (id, created) = match self.find_for_read(key, hash) {
            // Counted below: giving it an expiry may still lose it.
            Some(id) => (id, false),
            None => {
                self.stats.get_misses += 1;
                opts.ttl.vivify()?;
                let expiry = opts.ttl.apply(0, true, now).expiry;
                let id = self.put(key, hash, None, 0, expiry, b"", opts.new_cas)?;
                (id, true)
            }
        };
        let b = self.slabs.item(id);
        let state = item::state(b);
        let idle = now.saturating_sub(item::atime(b));
        let start = if created { 0 } else { item::expiry(b) };
        let ttl = opts.ttl.apply(start, created, now);
        // A first expiry may move the item (`regrow`), or with no memory for
        // that, drop it: then the read misses.
        let Some(id) = self.set_expiry(key, hash, id, ttl.expiry) else {
            if !created {
                self.stats.get_misses += 1;
            }
            return None;
        };
        if !created {
            self.stats.get_hits += 1;
        }
        let already_won = state & WIN_SENT != 0;
        let stale = state & STALE != 0;
        let win = !already_won && (created || stale || ttl.recache);
        // From the item's chunk as it is now: a move changed its list.
        let mut new_state = item::state(self.slabs.item(id));
        if win {
            new_state |= WIN_SENT;
        }
        if !opts.no_bump {
            new_state |= FETCHED;
        }
        {
            let b = self.slabs.item_mut(id);
            item::set_state(b, new_state);
            if !opts.no_bump {
                item::set_atime(b, now);
            }
        }
        if !opts.no_bump {
            self.access(id, hash);
        }
        let cas = self.reported_cas(id);
        let b = self.slabs.item(id);
        Some(MetaHit {
            value: item::value(b),
            flags: item::flags(b),
            cas,
            reported_expiry: ttl.reported,
            fetched_before: state & FETCHED != 0,
            idle,
            stale,
            win,
            already_won,
        })
    }

    /// `ms`: returns the result and the stored item's CAS (0 unless stored).
    pub fn meta_store(
        &mut self,
        key: &[u8],
        hash: u64,
        value: &[u8],
        opts: MetaSet,
        now: u32,
    ) -> (StoreResult, u64) {
        self.tick(now);
        // memcached's ms drops the key's old value when it cannot take the new
        // one, in every mode (a classic command only in set).
        if self.too_large(key.len(), value.len()) {
            self.remove_key(key, hash);
            return (StoreResult::TooLarge, 0);
        }
        let old = self.find_live(key, hash);
        // A stale store keeps the old item's expiry and its win token (memcached's
        // CAS_STALE): the refill it stands for is still owed by whoever won it.
        let mut stale: Option<(u32, u8)> = None;
        // How memcached's store treats C, by mode: set and replace are a
        // compare-and-swap (a miss is NF; with I an older CAS stores the item as
        // stale); append and prepend compare against an item that is there (a
        // miss is NS, as without C; the caller drops a C0, which means no C for
        // them); add ignores C.
        let compare = match opts.mode {
            MetaSetMode::Add => None,
            _ => opts.compare_cas,
        };
        let swap = matches!(opts.mode, MetaSetMode::Set | MetaSetMode::Replace);
        match (compare, old) {
            (Some(_), None) if swap => return (StoreResult::NotFound, 0),
            (Some(want), Some(id)) => {
                let have = self.reported_cas(id);
                if have != want {
                    // C0 is never older: it matches nothing.
                    if swap && opts.invalidate && want != 0 && want < have {
                        let b = self.slabs.item(id);
                        stale = Some((item::expiry(b), item::state(b) & WIN_SENT));
                    } else {
                        return (StoreResult::Exists, 0);
                    }
                }
            }
            // No C, or an append or prepend of a missing key: the mode decides.
            _ => {}
        }
        let stored = match (opts.mode, old) {
            (MetaSetMode::Add, Some(id)) => {
                self.access(id, hash);
                return (StoreResult::NotStored, 0);
            }
            (MetaSetMode::Replace, None) => return (StoreResult::NotStored, 0),
            (MetaSetMode::Append | MetaSetMode::Prepend, None) => match opts.vivify {
                Some(expiry) => self.put(key, hash, None, opts.flags, expiry, value, opts.new_cas),
                None => return (StoreResult::NotStored, 0),
            },
            (MetaSetMode::Append | MetaSetMode::Prepend, Some(id)) => {
                let append = opts.mode == MetaSetMode::Append;
                match self.join(key, hash, id, value, append, opts.new_cas) {
                    Some(id) => Some(id),
                    None => return (StoreResult::NotStored, 0),
                }
            }
            _ => {
                let expiry = stale.map_or(opts.expiry, |(expiry, _)| expiry);
                self.put(key, hash, old, opts.flags, expiry, value, opts.new_cas)
            }
        };
        let Some(id) = stored else {
            self.remove_key(key, hash);
            return (StoreResult::OutOfMemory, 0);
        };
        if let Some((_, win_sent)) = stale {
            let b = self.slabs.item_mut(id);
            item::set_state(b, item::state(b) | STALE | win_sent);
        }
        (StoreResult::Stored, self.reported_cas(id))
    }

    /// `md`: delete, or with `invalidate` mark stale so that one reader wins the
    /// refill while the others may serve the old value.
    pub fn meta_delete(
        &mut self,
        key: &[u8],
        hash: u64,
        opts: MetaDelete,
        now: u32,
    ) -> MetaDeleteResult {
        self.tick(now);
        let Some(id) = self.find_live(key, hash) else {
            return MetaDeleteResult::NotFound;
        };
        if opts.compare_cas.is_some_and(|c| c != self.reported_cas(id)) {
            return MetaDeleteResult::Exists;
        }
        if !opts.invalidate {
            self.unlink(id, hash);
            return MetaDeleteResult::Deleted;
        }
        let cas = match opts.new_cas {
            Some(c) => c,
            None => self.next_cas(),
        };
        // Either change may move the item (`regrow`); with no memory for that it
        // is gone, which a reader cannot tell from a delete.
        let Some(id) = self.set_cas(key, hash, id, cas) else {
            return MetaDeleteResult::Deleted;
        };
        let b = self.slabs.item_mut(id);
        item::set_state(b, (item::state(b) | STALE) & !WIN_SENT);
        if let Some(expiry) = opts.touch {
            self.set_expiry(key, hash, id, expiry);
        }
        MetaDeleteResult::Deleted
    }

    /// `ma`: incr/decr with CAS, vivify and touch.
    pub fn meta_arith(
        &mut self,
        key: &[u8],
        hash: u64,
        opts: MetaArith,
        now: u32,
    ) -> MetaArithResult {
        self.tick(now);
        let Some(id) = self.find_live(key, hash) else {
            if opts.ttl.vivify().is_none() {
                return MetaArithResult::NotFound;
            }
            let ttl = opts.ttl.apply(0, true, now);
            let mut digits = [0u8; 20];
            let text = super::format_u64(opts.initial, &mut digits);
            let Some(id) = self.put(key, hash, None, 0, ttl.expiry, text, opts.new_cas) else {
                return MetaArithResult::NotStored;
            };
            return MetaArithResult::Value {
                value: opts.initial,
                cas: self.reported_cas(id),
                reported_expiry: ttl.reported,
                created: true,
            };
        };
        // memcached refuses an empty value before it compares the CAS (any
        // other non-number after).
        if item::value_len(self.slabs.item(id)) == 0 {
            return MetaArithResult::NonNumeric;
        }
        if opts.compare_cas.is_some_and(|c| c != self.reported_cas(id)) {
            return MetaArithResult::Exists;
        }
        let ttl = opts
            .ttl
            .apply(item::expiry(self.slabs.item(id)), false, now);
        let delta = self.add_delta(
            key,
            hash,
            id,
            opts.incr,
            opts.delta,
            ttl.expiry,
            opts.new_cas,
        );
        let (value, id) = match delta {
            Ok(done) => done,
            Err(DeltaError::NonNumeric) => return MetaArithResult::NonNumeric,
            Err(DeltaError::NoRoom) => return MetaArithResult::NotFound,
        };
        MetaArithResult::Value {
            value,
            cas: self.reported_cas(id),
            reported_expiry: ttl.reported,
            created: false,
        }
    }

    /// `me`: an item's metadata, without bumping it.
    pub fn meta_debug(&mut self, key: &[u8], hash: u64, now: u32) -> Option<MetaDebug> {
        self.tick(now);
        let id = self.find_live(key, hash)?;
        let cas = self.reported_cas(id);
        let b = self.slabs.item(id);
        Some(MetaDebug {
            expiry: item::expiry(b),
            atime: item::atime(b),
            cas,
            fetched: item::state(b) & FETCHED != 0,
            class: self.slabs.class_of(id) + 1,
            size: item::size(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyhash::key_hash;
    use crate::storage::{ShardConfig, StoreMode};

    const NOW: u32 = 1_700_000_000;

    fn shard() -> Shard {
        Shard::new(ShardConfig::new(4 << 20, 1024)).unwrap()
    }

    fn steps(list: &[TtlStep]) -> TtlSteps {
        let mut s = TtlSteps::default();
        for &step in list {
            s.push(step);
        }
        s
    }

    #[test]
    fn ttl_flags_apply_in_the_order_sent() {
        use TtlStep::*;
        let at = |list: &[TtlStep], expiry, created| steps(list).apply(expiry, created, NOW);
        // R sees the TTL the flags before it left.
        assert!(!at(&[Recache(30), Touch(NOW + 10)], NOW + 100, false).recache);
        assert!(at(&[Touch(NOW + 10), Recache(30)], NOW + 100, false).recache);
        // t reports the TTL at its place; the item keeps the last one set.
        let o = at(&[Report, Touch(NOW + 10)], NOW + 100, false);
        assert_eq!((o.reported, o.expiry), (NOW + 100, NOW + 10));
        // A created item starts with no TTL; of T and N the later one wins, and N
        // does nothing to an item that was there.
        let o = at(&[Report, Vivify(NOW + 30)], 0, true);
        assert_eq!((o.reported, o.expiry), (0, NOW + 30));
        assert_eq!(
            at(&[Touch(NOW + 60), Vivify(NOW + 30)], 0, true).expiry,
            NOW + 30
        );
        assert_eq!(
            at(&[Vivify(NOW + 30), Touch(NOW + 60)], 0, true).expiry,
            NOW + 60
        );
        assert_eq!(at(&[Vivify(NOW + 30)], NOW + 5, false).expiry, NOW + 5);
        // R never wins for a created item or one without a TTL.
        assert!(!at(&[Vivify(NOW + 1), Recache(30)], 0, true).recache);
        assert!(!at(&[Recache(30)], 0, false).recache);
    }

    fn get(s: &mut Shard, key: &[u8], opts: MetaGet) -> Option<(bool, bool, bool, Vec<u8>)> {
        s.meta_get(key, key_hash(key), opts, NOW)
            .map(|h| (h.win, h.stale, h.already_won, h.value.to_vec()))
    }

    #[test]
    fn vivify_hands_out_one_win_until_a_store() {
        let mut s = shard();
        let viv = MetaGet {
            ttl: steps(&[TtlStep::Vivify(NOW + 30)]),
            ..MetaGet::default()
        };
        assert_eq!(get(&mut s, b"k", viv), Some((true, false, false, vec![])));
        for _ in 0..3 {
            assert_eq!(get(&mut s, b"k", viv), Some((false, false, true, vec![])));
        }
        let h = key_hash(b"k");
        s.store(StoreMode::Set, b"k", h, 0, 0, b"v", NOW);
        assert_eq!(
            get(&mut s, b"k", viv),
            Some((false, false, false, b"v".to_vec()))
        );
    }

    #[test]
    fn invalidate_serves_stale_with_one_win() {
        let mut s = shard();
        let h = key_hash(b"k");
        s.store(StoreMode::Set, b"k", h, 0, 0, b"old", NOW);
        let before = s.meta_get(b"k", h, MetaGet::default(), NOW).unwrap().cas;
        let inv = MetaDelete {
            invalidate: true,
            ..MetaDelete::default()
        };
        assert_eq!(s.meta_delete(b"k", h, inv, NOW), MetaDeleteResult::Deleted);
        let hit = s.meta_get(b"k", h, MetaGet::default(), NOW).unwrap();
        assert!(hit.win && hit.stale && !hit.already_won && hit.cas > before);
        let hit = s.meta_get(b"k", h, MetaGet::default(), NOW).unwrap();
        assert!(!hit.win && hit.stale && hit.already_won);
        assert_eq!(hit.value, b"old");
        // A store clears both bits.
        let (r, _) = s.meta_store(b"k", h, b"new", MetaSet::default(), NOW);
        assert_eq!(r, StoreResult::Stored);
        assert_eq!(
            get(&mut s, b"k", MetaGet::default()),
            Some((false, false, false, b"new".to_vec()))
        );
    }

    #[test]
    fn recache_wins_once_before_expiry() {
        let mut s = shard();
        let h = key_hash(b"k");
        s.store(StoreMode::Set, b"k", h, 0, NOW + 10, b"v", NOW);
        let r = |secs| MetaGet {
            ttl: steps(&[TtlStep::Recache(secs)]),
            ..MetaGet::default()
        };
        assert!(!get(&mut s, b"k", r(5)).unwrap().0);
        assert!(get(&mut s, b"k", r(30)).unwrap().0);
        assert!(get(&mut s, b"k", r(30)).unwrap().2);
    }

    #[test]
    fn older_cas_with_invalidate_stores_stale() {
        let mut s = shard();
        let h = key_hash(b"k");
        let (_, c1) = s.meta_store(b"k", h, b"a", MetaSet::default(), NOW);
        let (_, c2) = s.meta_store(b"k", h, b"b", MetaSet::default(), NOW);
        let cas_older = MetaSet {
            compare_cas: Some(c1),
            ..MetaSet::default()
        };
        assert_eq!(
            s.meta_store(b"k", h, b"c", cas_older, NOW).0,
            StoreResult::Exists
        );
        let stale_ok = MetaSet {
            invalidate: true,
            ..cas_older
        };
        let (r, c3) = s.meta_store(b"k", h, b"c", stale_ok, NOW);
        assert_eq!(r, StoreResult::Stored);
        assert!(c3 > c2);
        assert_eq!(
            get(&mut s, b"k", MetaGet::default()),
            Some((true, true, false, b"c".to_vec()))
        );
        let newer = MetaSet {
            compare_cas: Some(c3 + 10),
            invalidate: true,
            ..MetaSet::default()
        };
        assert_eq!(
            s.meta_store(b"k", h, b"d", newer, NOW).0,
            StoreResult::Exists
        );
    }

    #[test]
    fn explicit_cas_is_the_items_alone() {
        let mut s = shard();
        let h = key_hash(b"k");
        let e = |cas| MetaSet {
            new_cas: Some(cas),
            ..MetaSet::default()
        };
        assert_eq!(
            s.meta_store(b"k", h, b"a", e(1_000_000), NOW),
            (StoreResult::Stored, 1_000_000)
        );
        // The shard's own sequence goes on where it was.
        let (_, next) = s.meta_store(b"j", key_hash(b"j"), b"a", MetaSet::default(), NOW);
        assert!(next < 1_000_000);
        // CAS 0 with no flush made is not flushed; once a flush is made, a CAS
        // at or below its mark is (memcached's oldest_cas), a later one is not.
        s.meta_store(b"z", key_hash(b"z"), b"a", e(0), NOW);
        assert!(s
            .meta_get(b"z", key_hash(b"z"), MetaGet::default(), NOW)
            .is_some());
        s.flush_all(NOW, NOW);
        assert!(s
            .meta_get(b"j", key_hash(b"j"), MetaGet::default(), NOW)
            .is_none());
        s.meta_store(b"z", key_hash(b"z"), b"a", e(0), NOW);
        assert!(s
            .meta_get(b"z", key_hash(b"z"), MetaGet::default(), NOW)
            .is_none());
        // An extreme CAS neither wraps the sequence nor poisons later stores.
        s.meta_store(b"m", key_hash(b"m"), b"a", e(u64::MAX), NOW);
        s.flush_all(NOW, NOW);
        s.store(
            StoreMode::Set,
            b"after",
            key_hash(b"after"),
            0,
            0,
            b"v",
            NOW,
        );
        assert!(s.get(b"after", key_hash(b"after"), NOW).is_some());
    }

    #[test]
    fn no_bump_leaves_fetched_and_access_time() {
        let mut s = shard();
        let h = key_hash(b"k");
        s.store(StoreMode::Set, b"k", h, 0, 0, b"v", NOW);
        let u = MetaGet {
            no_bump: true,
            ..MetaGet::default()
        };
        let hit = s.meta_get(b"k", h, u, NOW + 5).unwrap();
        assert!(!hit.fetched_before);
        assert_eq!(hit.idle, 5);
        let hit = s.meta_get(b"k", h, MetaGet::default(), NOW + 7).unwrap();
        assert!(!hit.fetched_before);
        assert_eq!(hit.idle, 7);
        let hit = s.meta_get(b"k", h, MetaGet::default(), NOW + 8).unwrap();
        assert!(hit.fetched_before);
        assert_eq!(hit.idle, 1);
    }

    #[test]
    fn arith_vivifies_with_the_initial_value() {
        let mut s = shard();
        let h = key_hash(b"n");
        let a = MetaArith {
            incr: true,
            delta: 1,
            compare_cas: None,
            new_cas: None,
            initial: 10,
            ttl: steps(&[TtlStep::Vivify(0)]),
        };
        assert!(matches!(
            s.meta_arith(b"n", h, a, NOW),
            MetaArithResult::Value { value: 10, .. }
        ));
        assert!(matches!(
            s.meta_arith(b"n", h, a, NOW),
            MetaArithResult::Value { value: 11, .. }
        ));
        let dec = MetaArith {
            incr: false,
            delta: 50,
            ..a
        };
        assert!(matches!(
            s.meta_arith(b"n", h, dec, NOW),
            MetaArithResult::Value { value: 0, .. }
        ));
        let cas = MetaArith {
            compare_cas: Some(1),
            ..a
        };
        assert_eq!(s.meta_arith(b"n", h, cas, NOW), MetaArithResult::Exists);
    }
}
