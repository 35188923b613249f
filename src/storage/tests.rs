//! Unit tests of the shard's memcached semantics, and an invariant checker the
//! property tests share.

use super::*;
use crate::keyhash::key_hash;

const MIB: usize = 1 << 20;
const T0: u32 = 1_700_000_000;

/// Checks the arena's bookkeeping against itself; panics with the first mismatch.
pub(super) fn check_invariants(s: &Shard) {
    let slabs = &s.slabs;
    let mut items = 0u64;
    let mut bytes = 0u64;
    for (c, class) in slabs.classes.iter().enumerate() {
        let mut n = 0u64;
        let lists = s.policy.classes[c];
        assert_eq!(
            lists.capacity,
            slabs.capacity(c),
            "class {c}: policy capacity"
        );
        for (list, seg) in [
            (lists.window, policy::Segment::Window),
            (lists.probation, policy::Segment::Probation),
            (lists.protected, policy::Segment::Protected),
        ] {
            let mut prev = NIL;
            let mut len = 0;
            for id in policy::iter(slabs, list.head) {
                let b = slabs.item(id);
                assert!(
                    item::is_live(b),
                    "class {c}: chunk {id} in a list is not live"
                );
                assert_eq!(slabs.segment(id), seg, "chunk {id}: segment bits");
                assert_eq!(
                    slabs.class_of(id),
                    c,
                    "chunk {id} linked in the wrong class"
                );
                assert_eq!(item::prev(b), prev, "broken back link at {id}");
                let found = s.find(item::key(b), key_hash(item::key(b)));
                assert_eq!(
                    found,
                    Some(id),
                    "chunk {id} not reachable through the index"
                );
                bytes += item::size(b) as u64;
                prev = id;
                len += 1;
            }
            assert_eq!(list.tail, prev, "class {c} {seg:?}: tail");
            assert_eq!(list.len, len, "class {c} {seg:?}: len");
            n += len as u64;
        }
        let (window_max, protected_max) = s.policy.maxima(c);
        assert!(
            lists.window.len <= window_max.max(1) || lists.catching_up,
            "class {c}: window over"
        );
        assert!(
            lists.protected.len <= protected_max
                || lists.catching_up
                || s.slabs.pages_in_use < s.slabs.max_pages,
            "class {c}: protected over with memory full and fit not catching up"
        );
        assert_eq!(n, class.items, "class {c}: item count");
        let pages = slabs.pages.iter().filter(|m| m.class as usize == c).count();
        assert_eq!(pages as u32, class.pages, "class {c}: page count");
        for &id in &class.free {
            assert!(slabs.is_valid(id), "free chunk {id} is not carved");
            assert_eq!(slabs.class_of(id), c);
            assert!(!item::is_live(slabs.item(id)), "free chunk {id} is live");
        }
        items += n;
    }
    let mut guests = vec![0u32; slabs.classes.len()];
    for id in s.index.ids() {
        if let Some(own) = s.guest_of(id) {
            guests[own] += 1;
        }
    }
    let counted: Vec<u32> = slabs.classes.iter().map(|c| c.guests).collect();
    assert_eq!(counted, guests, "guests per class");
    let live: u64 = slabs.pages.iter().map(|m| m.live as u64).sum();
    assert_eq!(live, items, "page live counts");
    assert_eq!(s.index.len() as u64, items, "index size");
    assert_eq!(s.stats.curr_items, items, "curr_items");
    assert_eq!(s.stats.bytes, bytes, "bytes");
    let owned = slabs
        .pages
        .iter()
        .filter(|m| m.class != slab::NO_CLASS)
        .count();
    assert_eq!(owned, slabs.pages_in_use);
    assert!(slabs.pages_in_use * slabs.page_size() <= s.config.memory_limit);
}

/// Items (header, key and value) up to just under 1 MiB; pages are 1 MiB.
const MAX_ITEM: usize = MIB - 1024;

fn shard(mem: usize) -> Shard {
    let s = Shard::new(ShardConfig::new(mem, MAX_ITEM)).unwrap();
    assert_eq!(s.slabs.page_size(), MIB);
    s
}

fn set(s: &mut Shard, key: &[u8], value: &[u8]) -> StoreResult {
    s.store(StoreMode::Set, key, key_hash(key), 0, 0, value, T0)
}

fn store_at(s: &mut Shard, mode: StoreMode, key: &[u8], value: &[u8], now: u32) -> StoreResult {
    s.store(mode, key, key_hash(key), 7, 0, value, now)
}

fn get(s: &mut Shard, key: &[u8]) -> Option<Vec<u8>> {
    get_at(s, key, T0)
}

fn get_at(s: &mut Shard, key: &[u8], now: u32) -> Option<Vec<u8>> {
    s.get(key, key_hash(key), now).map(|v| v.value.to_vec())
}

fn cas_of(s: &mut Shard, key: &[u8]) -> u64 {
    s.get(key, key_hash(key), T0).unwrap().cas
}

fn arith(s: &mut Shard, key: &[u8], incr: bool, delta: u64) -> ArithResult {
    s.arith(key, key_hash(key), incr, delta, T0)
}

#[test]
fn config_defaults_follow_memcached() {
    let c = ShardConfig::new(64 * MIB, MIB);
    assert_eq!(c.growth_factor, 1.25);
    assert_eq!(c.min_chunk_size, 48);
    // -I bounds the whole item, so at -I 1m pages are exactly 1 MiB and a
    // shard of N MiB holds N of them.
    assert_eq!(c.page_size, MIB);
    assert_eq!(
        Shard::new(ShardConfig::new(32 * MIB, MIB))
            .unwrap()
            .slabs
            .max_pages,
        32
    );
    assert!(c.use_cas);
    assert_eq!(ShardConfig::new(64 * MIB, 4 * MIB).page_size, 4 * MIB);
    assert_eq!(ShardConfig::new(64 * MIB, 1000).page_size, MIB);
}

#[test]
fn new_rejects_pages_too_small_for_the_largest_item() {
    let mut c = ShardConfig::new(64 * MIB, MIB);
    c.page_size = MIB - 8;
    assert!(Shard::new(c.clone()).is_err());
    c.page_size = 2 * MIB;
    c.growth_factor = 1.0;
    assert!(Shard::new(c).is_err());
}

#[test]
fn set_then_get_returns_value_flags_cas_and_expiry() {
    let mut s = shard(8 * MIB);
    let r = s.store(
        StoreMode::Set,
        b"k",
        key_hash(b"k"),
        42,
        T0 + 100,
        b"hello",
        T0,
    );
    assert_eq!(r, StoreResult::Stored);
    let v = s.get(b"k", key_hash(b"k"), T0).unwrap();
    assert_eq!(v.key, b"k");
    assert_eq!(v.value, b"hello");
    assert_eq!(v.flags, 42);
    assert_eq!(v.expiry, T0 + 100);
    assert!(v.cas > 0);
    let st = s.stats();
    assert_eq!(st.get_hits, 1);
    assert_eq!(st.curr_items, 1);
    assert_eq!(st.total_items, 1);
    // The fixed header, the expiry and flags behind it, the key and value.
    assert_eq!(st.bytes, (item::HEADER_MIN + 4 + 4 + 1 + 5) as u64);
    check_invariants(&s);
}

#[test]
fn get_miss_is_counted() {
    let mut s = shard(8 * MIB);
    assert_eq!(get(&mut s, b"nope"), None);
    assert_eq!(s.stats().get_misses, 1);
    assert_eq!(s.stats().get_hits, 0);
}

#[test]
fn set_overwrites_in_place_and_across_classes() {
    let mut s = shard(8 * MIB);
    set(&mut s, b"k", b"a");
    set(&mut s, b"k", b"b");
    assert_eq!(get(&mut s, b"k").unwrap(), b"b");
    let big = vec![b'x'; 5000];
    set(&mut s, b"k", &big);
    assert_eq!(get(&mut s, b"k").unwrap(), big);
    set(&mut s, b"k", b"small");
    assert_eq!(get(&mut s, b"k").unwrap(), b"small");
    assert_eq!(s.stats().curr_items, 1);
    assert_eq!(s.stats().total_items, 4);
    check_invariants(&s);
}

#[test]
fn add_stores_only_when_absent_and_expired_counts_as_absent() {
    let mut s = shard(8 * MIB);
    assert_eq!(
        store_at(&mut s, StoreMode::Add, b"k", b"1", T0),
        StoreResult::Stored
    );
    assert_eq!(
        store_at(&mut s, StoreMode::Add, b"k", b"2", T0),
        StoreResult::NotStored
    );
    assert_eq!(get(&mut s, b"k").unwrap(), b"1");
    s.store(StoreMode::Set, b"e", key_hash(b"e"), 0, T0 + 5, b"old", T0);
    assert_eq!(
        store_at(&mut s, StoreMode::Add, b"e", b"new", T0 + 5),
        StoreResult::Stored
    );
    assert_eq!(get_at(&mut s, b"e", T0 + 5).unwrap(), b"new");
    check_invariants(&s);
}

#[test]
fn replace_stores_only_when_present() {
    let mut s = shard(8 * MIB);
    assert_eq!(
        store_at(&mut s, StoreMode::Replace, b"k", b"1", T0),
        StoreResult::NotStored
    );
    assert_eq!(get(&mut s, b"k"), None);
    set(&mut s, b"k", b"0");
    assert_eq!(
        store_at(&mut s, StoreMode::Replace, b"k", b"1", T0),
        StoreResult::Stored
    );
    let v = s.get(b"k", key_hash(b"k"), T0).unwrap();
    assert_eq!((v.value, v.flags), (&b"1"[..], 7));
}

#[test]
fn append_and_prepend_keep_flags_and_expiry() {
    let mut s = shard(8 * MIB);
    assert_eq!(
        store_at(&mut s, StoreMode::Append, b"k", b"x", T0),
        StoreResult::NotStored
    );
    assert_eq!(
        store_at(&mut s, StoreMode::Prepend, b"k", b"x", T0),
        StoreResult::NotStored
    );
    s.store(
        StoreMode::Set,
        b"k",
        key_hash(b"k"),
        5,
        T0 + 100,
        b"mid",
        T0,
    );
    let cas0 = cas_of(&mut s, b"k");
    let r = s.store(
        StoreMode::Append,
        b"k",
        key_hash(b"k"),
        9,
        T0 + 1,
        b">>",
        T0,
    );
    assert_eq!(r, StoreResult::Stored);
    let r = s.store(
        StoreMode::Prepend,
        b"k",
        key_hash(b"k"),
        9,
        T0 + 1,
        b"<<",
        T0,
    );
    assert_eq!(r, StoreResult::Stored);
    let v = s.get(b"k", key_hash(b"k"), T0).unwrap();
    assert_eq!(v.value, b"<<mid>>");
    assert_eq!(v.flags, 5);
    assert_eq!(v.expiry, T0 + 100);
    assert!(v.cas > cas0);
    // Growing into a larger class moves the item.
    let long = vec![b'y'; 3000];
    assert_eq!(
        store_at(&mut s, StoreMode::Append, b"k", &long, T0),
        StoreResult::Stored
    );
    let v = get(&mut s, b"k").unwrap();
    assert_eq!(&v[..7], b"<<mid>>");
    assert_eq!(v.len(), 3007);
    check_invariants(&s);
}

#[test]
fn append_past_max_item_size_is_not_stored() {
    // The limit is on header + key + value: 100 bytes leave 65 for a value of "k".
    let mut s = Shard::new(ShardConfig::new(8 * MIB, 100)).unwrap();
    let most = 100 - HEADER_MAX - 1;
    set(&mut s, b"k", &[b'a'; 60]);
    assert_eq!(
        store_at(&mut s, StoreMode::Append, b"k", &vec![b'b'; most - 59], T0),
        StoreResult::NotStored
    );
    assert_eq!(get(&mut s, b"k").unwrap(), vec![b'a'; 60]);
    assert_eq!(
        store_at(&mut s, StoreMode::Append, b"k", &vec![b'b'; most - 60], T0),
        StoreResult::Stored
    );
    assert_eq!(get(&mut s, b"k").unwrap().len(), most);
}

#[test]
fn cas_checks_presence_then_the_unique_value() {
    let mut s = shard(8 * MIB);
    assert_eq!(
        store_at(&mut s, StoreMode::Cas(1), b"k", b"v", T0),
        StoreResult::NotFound
    );
    set(&mut s, b"k", b"v0");
    let c = cas_of(&mut s, b"k");
    assert_eq!(
        store_at(&mut s, StoreMode::Cas(c + 1), b"k", b"v1", T0),
        StoreResult::Exists
    );
    assert_eq!(get(&mut s, b"k").unwrap(), b"v0");
    assert_eq!(
        store_at(&mut s, StoreMode::Cas(c), b"k", b"v2", T0),
        StoreResult::Stored
    );
    assert_eq!(get(&mut s, b"k").unwrap(), b"v2");
    // The old unique value is spent.
    assert_eq!(
        store_at(&mut s, StoreMode::Cas(c), b"k", b"v3", T0),
        StoreResult::Exists
    );
    assert_ne!(cas_of(&mut s, b"k"), c);
}

#[test]
fn cas_values_are_unique_per_mutation_and_zero_without_cas() {
    let mut s = shard(8 * MIB);
    set(&mut s, b"a", b"1");
    set(&mut s, b"b", b"1");
    let (a, b) = (cas_of(&mut s, b"a"), cas_of(&mut s, b"b"));
    assert_ne!(a, b);
    assert!(s.touch(b"a", key_hash(b"a"), T0 + 100, T0));
    assert_eq!(cas_of(&mut s, b"a"), a, "touch keeps the cas value");
    arith(&mut s, b"a", true, 1);
    assert!(cas_of(&mut s, b"a") > b);

    let mut c = ShardConfig::new(8 * MIB, MIB);
    c.use_cas = false;
    let mut s = Shard::new(c).unwrap();
    set(&mut s, b"a", b"1");
    assert_eq!(cas_of(&mut s, b"a"), 0);
    assert_eq!(
        store_at(&mut s, StoreMode::Cas(0), b"a", b"2", T0),
        StoreResult::Stored
    );
}

#[test]
fn incr_wraps_decr_clamps_and_results_are_stored_as_decimal() {
    let mut s = shard(8 * MIB);
    assert_eq!(arith(&mut s, b"n", true, 1), ArithResult::NotFound);
    s.store(StoreMode::Set, b"n", key_hash(b"n"), 3, T0 + 50, b"9", T0);
    assert_eq!(arith(&mut s, b"n", true, 1), ArithResult::Value(10));
    let v = s.get(b"n", key_hash(b"n"), T0).unwrap();
    assert_eq!((v.value, v.flags, v.expiry), (&b"10"[..], 3, T0 + 50));
    assert_eq!(arith(&mut s, b"n", false, 3), ArithResult::Value(7));
    assert_eq!(get(&mut s, b"n").unwrap(), b"7");
    assert_eq!(arith(&mut s, b"n", false, 100), ArithResult::Value(0));
    assert_eq!(get(&mut s, b"n").unwrap(), b"0");
    set(&mut s, b"n", u64::MAX.to_string().as_bytes());
    assert_eq!(arith(&mut s, b"n", true, 2), ArithResult::Value(1));
    assert_eq!(get(&mut s, b"n").unwrap(), b"1");
    assert_eq!(
        arith(&mut s, b"n", true, u64::MAX - 1),
        ArithResult::Value(u64::MAX)
    );
    assert_eq!(get(&mut s, b"n").unwrap(), u64::MAX.to_string().as_bytes());
    check_invariants(&s);
}

#[test]
fn arith_on_non_numbers_is_refused() {
    let mut s = shard(8 * MIB);
    for bad in [
        &b""[..],
        b"abc",
        b"12a",
        b"-5",
        b"18446744073709551616",
        b" ",
    ] {
        set(&mut s, b"n", bad);
        assert_eq!(
            arith(&mut s, b"n", true, 1),
            ArithResult::NonNumeric,
            "{bad:?}"
        );
        assert_eq!(get(&mut s, b"n").unwrap(), bad);
    }
}

#[test]
fn parse_follows_strtoull_as_memcached_checks_it() {
    assert_eq!(parse_u64(b"0"), Some(0));
    assert_eq!(parse_u64(b"  42"), Some(42));
    assert_eq!(parse_u64(b"42 "), Some(42));
    assert_eq!(parse_u64(b"42\r\n"), Some(42));
    assert_eq!(parse_u64(b"+7"), Some(7));
    assert_eq!(parse_u64(b"-0"), Some(0));
    assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
    assert_eq!(parse_u64(b"18446744073709551616"), None);
    assert_eq!(parse_u64(b"-1"), None);
    assert_eq!(parse_u64(b"1x"), None);
    assert_eq!(parse_u64(b""), None);
    let mut buf = [0u8; 20];
    assert_eq!(format_u64(0, &mut buf), b"0");
    assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
}

#[test]
fn expired_items_miss_are_freed_and_counted() {
    let mut s = shard(8 * MIB);
    s.store(StoreMode::Set, b"k", key_hash(b"k"), 0, T0 + 10, b"v", T0);
    assert_eq!(get_at(&mut s, b"k", T0 + 9).unwrap(), b"v");
    assert_eq!(get_at(&mut s, b"k", T0 + 10), None);
    let st = s.stats();
    assert_eq!(st.get_expired, 1);
    assert_eq!(st.get_misses, 1);
    assert_eq!(st.curr_items, 0);
    assert_eq!(st.expired_unfetched, 0, "it was fetched once");
    // An expiry in the past hides the item at once.
    s.store(StoreMode::Set, b"p", key_hash(b"p"), 0, T0 - 1, b"v", T0);
    assert_eq!(get_at(&mut s, b"p", T0), None);
    assert_eq!(s.stats().expired_unfetched, 1);
    check_invariants(&s);
}

#[test]
fn touch_and_gat_set_a_new_expiry() {
    let mut s = shard(8 * MIB);
    assert!(!s.touch(b"k", key_hash(b"k"), T0 + 5, T0));
    s.store(StoreMode::Set, b"k", key_hash(b"k"), 0, T0 + 5, b"v", T0);
    assert!(s.touch(b"k", key_hash(b"k"), T0 + 20, T0));
    assert_eq!(get_at(&mut s, b"k", T0 + 10).unwrap(), b"v");
    let v = s.get_and_touch(b"k", key_hash(b"k"), 0, T0 + 10).unwrap();
    assert_eq!((v.value, v.expiry), (&b"v"[..], 0));
    assert_eq!(get_at(&mut s, b"k", T0 + 1000).unwrap(), b"v");
    let v = s
        .get_and_touch(b"k", key_hash(b"k"), T0 + 1001, T0 + 1000)
        .unwrap();
    assert_eq!(v.expiry, T0 + 1001);
    assert_eq!(get_at(&mut s, b"k", T0 + 1001), None);
    assert!(s
        .get_and_touch(b"k", key_hash(b"k"), 0, T0 + 1001)
        .is_none());
    let st = s.stats();
    assert_eq!((st.get_hits, st.get_misses), (4, 2));
    check_invariants(&s);
}

#[test]
fn flush_all_now_hides_everything_stored_before() {
    let mut s = shard(8 * MIB);
    set(&mut s, b"a", b"1");
    set(&mut s, b"b", b"2");
    s.flush_all(T0, T0);
    assert_eq!(get(&mut s, b"a"), None);
    assert_eq!(s.stats().get_flushed, 1);
    assert!(!s.delete(b"b", key_hash(b"b"), T0));
    // Stored in the same second, after the flush: visible.
    set(&mut s, b"a", b"3");
    assert_eq!(get(&mut s, b"a").unwrap(), b"3");
    assert_eq!(s.stats().curr_items, 1);
    check_invariants(&s);
}

#[test]
fn delayed_flush_all_takes_effect_at_its_time() {
    let mut s = shard(8 * MIB);
    set(&mut s, b"a", b"1");
    s.flush_all(T0 + 10, T0);
    set(&mut s, b"b", b"2");
    assert_eq!(get_at(&mut s, b"a", T0 + 9).unwrap(), b"1");
    assert_eq!(get_at(&mut s, b"b", T0 + 9).unwrap(), b"2");
    assert_eq!(get_at(&mut s, b"a", T0 + 10), None);
    assert_eq!(get_at(&mut s, b"b", T0 + 10), None);
    s.store(StoreMode::Set, b"c", key_hash(b"c"), 0, 0, b"3", T0 + 10);
    assert_eq!(get_at(&mut s, b"c", T0 + 11).unwrap(), b"3");
    // A later flush_all replaces a pending one.
    s.flush_all(T0 + 100, T0 + 11);
    s.flush_all(T0 + 200, T0 + 11);
    assert_eq!(get_at(&mut s, b"c", T0 + 150).unwrap(), b"3");
    assert_eq!(get_at(&mut s, b"c", T0 + 200), None);
}

#[test]
fn an_increment_past_the_item_limit_drops_the_item() {
    // 34-byte header + 57-byte key + 9 digits is exactly the 100-byte limit;
    // a tenth digit cannot be stored, and a stale count is not kept.
    let mut s = Shard::new(ShardConfig::new(8 * MIB, 100)).unwrap();
    let key = [b'n'; 100 - HEADER_MAX - 9];
    assert_eq!(set(&mut s, &key, b"999999998"), StoreResult::Stored);
    assert_eq!(
        arith(&mut s, &key, true, 1),
        ArithResult::Value(999_999_999)
    );
    assert_eq!(arith(&mut s, &key, true, 1), ArithResult::NotFound);
    assert_eq!(get(&mut s, &key), None);
    check_invariants(&s);
}

#[test]
fn too_large_set_removes_the_old_value_other_modes_keep_it() {
    let max = 1000;
    let mut s = Shard::new(ShardConfig::new(8 * MIB, max)).unwrap();
    set(&mut s, b"k", b"old");
    assert_eq!(
        store_at(&mut s, StoreMode::Replace, b"k", &vec![0; max + 1], T0),
        StoreResult::TooLarge
    );
    assert_eq!(get(&mut s, b"k").unwrap(), b"old");
    assert_eq!(set(&mut s, b"k", &vec![0; max + 1]), StoreResult::TooLarge);
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(
        set(&mut s, &[b'k'; KEY_MAX + 1], b"v"),
        StoreResult::TooLarge
    );
    check_invariants(&s);
}

#[test]
fn empty_and_maximum_values_are_stored() {
    let mut s = Shard::new(ShardConfig::new(8 * MIB, MIB)).unwrap();
    assert_eq!(set(&mut s, b"e", b""), StoreResult::Stored);
    assert_eq!(get(&mut s, b"e").unwrap(), b"");
    // The largest item is exactly -I: header, the longest key and the value.
    let most = MIB - HEADER_MAX - KEY_MAX;
    let max = vec![b'm'; most];
    let key = [b'K'; KEY_MAX];
    assert_eq!(
        set(&mut s, &key, &vec![b'm'; most + 1]),
        StoreResult::TooLarge
    );
    assert_eq!(set(&mut s, &key, &max), StoreResult::Stored);
    assert_eq!(get(&mut s, &key).unwrap(), max);
    assert_eq!(
        s.class_for_item(KEY_MAX, most),
        Some(s.slab_class_stats().len())
    );
    assert_eq!(s.class_for_item(KEY_MAX, s.slabs.page_size()), None);
    check_invariants(&s);
}

#[test]
fn delete_removes_the_item() {
    let mut s = shard(8 * MIB);
    assert!(!s.delete(b"k", key_hash(b"k"), T0));
    set(&mut s, b"k", b"v");
    assert!(s.delete(b"k", key_hash(b"k"), T0));
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(s.stats().curr_items, 0);
    assert_eq!(s.stats().bytes, 0);
    check_invariants(&s);
}

#[test]
fn reap_expired_frees_due_items_within_the_budget() {
    let mut s = shard(8 * MIB);
    for i in 0..10u32 {
        let k = format!("k{i}");
        s.store(
            StoreMode::Set,
            k.as_bytes(),
            key_hash(k.as_bytes()),
            0,
            T0 + i,
            b"v",
            T0,
        );
    }
    s.store(
        StoreMode::Set,
        b"forever",
        key_hash(b"forever"),
        0,
        0,
        b"v",
        T0,
    );
    assert_eq!(s.reap_expired(T0, 100), 1); // k0 expires at T0
    assert_eq!(s.reap_expired(T0 + 5, 2), 2);
    assert_eq!(s.reap_expired(T0 + 5, 100), 3);
    // A touched item's stale heap entry frees nothing.
    assert!(s.touch(b"k6", key_hash(b"k6"), 0, T0));
    assert_eq!(s.reap_expired(T0 + 100, 100), 3);
    assert_eq!(s.stats().curr_items, 2);
    assert_eq!(s.stats().expired_unfetched, 9);
    check_invariants(&s);
}

#[test]
fn ttl_heap_sheds_stale_entries_as_it_grows() {
    let mut s = shard(8 * MIB);
    set(&mut s, b"k", b"v");
    for i in 0..10_000 {
        assert!(s.touch(b"k", key_hash(b"k"), T0 + 100 + i, T0));
    }
    assert!(
        s.ttl.len() <= HEAP_SWEEP_MIN + 1,
        "heap holds {}",
        s.ttl.len()
    );
    assert_eq!(get_at(&mut s, b"k", T0 + 100 + 9_999), None);
}

#[test]
fn rewrites_that_keep_the_expiry_add_no_heap_entries() {
    let mut s = shard(8 * MIB);
    let exp = T0 + 3600;
    s.store(StoreMode::Set, b"ctr", key_hash(b"ctr"), 0, exp, b"1", T0);
    for _ in 0..10_000 {
        assert!(matches!(
            arith(&mut s, b"ctr", true, 1),
            ArithResult::Value(_)
        ));
        assert!(s.touch(b"ctr", key_hash(b"ctr"), exp, T0));
    }
    assert_eq!(s.ttl.len(), 1, "one entry for one item");
    // A new expiry is a new entry; the old one is stale and freed nothing.
    assert!(s.touch(b"ctr", key_hash(b"ctr"), exp + 1, T0));
    assert_eq!(s.ttl.len(), 2);
    assert_eq!(s.reap_expired(exp, 10), 0);
    assert_eq!(s.reap_expired(exp + 1, 10), 1);
    check_invariants(&s);
}

fn key(i: usize) -> Vec<u8> {
    format!("key:{i:08}").into_bytes()
}

#[test]
fn full_class_evicts_least_recently_used_first() {
    // Two pages: one for this class, one left for another.
    let mut s = shard(2 * MIB);
    let value = [b'v'; 100];
    let class = s.class_for_item(key(0).len(), value.len()).unwrap();
    let per_page = s.slab_class_stats()[class - 1].chunks_per_page as usize;
    for i in 0..2 * per_page {
        assert_eq!(set(&mut s, &key(i), &value), StoreResult::Stored);
    }
    assert_eq!(s.stats().total_pages, 2);
    assert_eq!(s.stats().evictions, 0);
    // Read key 0 so it is the most recent, then push one more in.
    assert!(get(&mut s, &key(0)).is_some());
    let newcomer = 2 * per_page;
    assert_eq!(set(&mut s, &key(newcomer), &value), StoreResult::Stored);
    let st = s.stats();
    assert_eq!(st.evictions, 1);
    assert_eq!(st.evicted_unfetched, 1);
    assert!(
        get(&mut s, &key(0)).is_some(),
        "recently read item survives"
    );
    // Every key was seen once (its store): W-TinyLFU keeps the incumbent on
    // a tie, so the window's oldest entry lost its duel with the least
    // recently used item, which stays.
    // (Looked up without a read, which would count.)
    let held = |s: &Shard, i: usize| s.find(&key(i), key_hash(&key(i))).is_some();
    assert!(held(&s, 1), "a tie keeps the victim");
    let gone: Vec<usize> = (0..=newcomer).filter(|&i| !held(&s, i)).collect();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(gone[0] > per_page, "a window entry went: {gone:?}");
    // Read every key but key 1: the next duel's candidate was then seen
    // more often than key 1, the least recently used, which goes.
    for i in (0..=newcomer).filter(|&i| i != 1 && i != gone[0]) {
        assert!(get(&mut s, &key(i)).is_some(), "{i}");
    }
    assert_eq!(set(&mut s, &key(newcomer + 1), &value), StoreResult::Stored);
    assert_eq!(s.stats().evictions, 2);
    assert!(
        get(&mut s, &key(1)).is_none(),
        "least recently used is evicted"
    );
    assert_eq!(s.slab_class_stats()[class - 1].evicted, 2);
    check_invariants(&s);
}

#[test]
fn eviction_prefers_expired_items_near_the_tail() {
    let mut s = shard(MIB);
    let value = [b'v'; 100];
    // Every item has an expiry (4 header bytes), so all are in one class; only
    // the third is due.
    let class = s.class_for_item(key(0).len(), value.len() + 4).unwrap();
    let per_page = s.slab_class_stats()[class - 1].chunks_per_page as usize;
    for i in 0..per_page {
        let exp = if i == 2 { T0 + 1 } else { T0 + 1000 };
        s.store(
            StoreMode::Set,
            &key(i),
            key_hash(&key(i)),
            0,
            exp,
            &value,
            T0,
        );
    }
    let new = key(per_page);
    let r = s.store(
        StoreMode::Set,
        &new,
        key_hash(&new),
        0,
        T0 + 1000,
        &value,
        T0 + 1,
    );
    assert_eq!(r, StoreResult::Stored);
    let st = s.stats();
    assert_eq!((st.evictions, st.reclaimed), (0, 1));
    assert!(get_at(&mut s, &key(0), T0 + 1).is_some());
    check_invariants(&s);
}

#[test]
fn a_starved_class_takes_a_page_from_another() {
    let mut s = shard(4 * MIB);
    let mut i = 0;
    while s.stats().total_pages < 4 {
        assert_eq!(set(&mut s, &key(i), b"small"), StoreResult::Stored);
        i += 1;
    }
    let before = s.stats().curr_items;
    let big = vec![b'B'; 600_000];
    assert_eq!(set(&mut s, b"big", &big), StoreResult::Stored);
    assert_eq!(get(&mut s, b"big").unwrap(), big);
    let st = s.stats();
    assert!(st.evictions > 0);
    assert_eq!(st.curr_items + st.evictions, before + 1);
    assert_eq!(st.total_pages, 4);
    // The page came from the small class's LRU end: the newest keys are still
    // there. Its items went to the room left on the page the class was cutting
    // chunks from, as far as it reached; the rest were evicted.
    assert!(get(&mut s, &key(i - 1)).is_some());
    assert!(st.pages_rescued_items > 0, "{st:?}");
    check_invariants(&s);
}

#[test]
fn a_moved_page_costs_its_class_its_coldest_items() {
    // One class fills all 4 pages and evicts.
    let mut s = shard(4 * MIB);
    let value = [b'v'; 100];
    let mut n = 0;
    while s.stats().evictions == 0 {
        assert_eq!(set(&mut s, &key(n), &value), StoreResult::Stored);
        n += 1;
    }
    let page_of = |s: &Shard, i: usize| {
        let k = key(i);
        s.find(&k, key_hash(&k)).map(|id| s.slabs.page_of(id))
    };
    // The items on one page are read a second later: the hot ones.
    let page = page_of(&s, n - 1).unwrap();
    let hot: Vec<usize> = (0..n).filter(|&i| page_of(&s, i) == Some(page)).collect();
    assert!(hot.len() > 1000);
    for &i in &hot {
        assert!(get_at(&mut s, &key(i), T0 + 1).is_some());
    }
    let before = s.stats();
    let big_class = s.class_for_item(8, 3000).unwrap() - 1;
    s.move_page(page, big_class, NIL);
    let after = s.stats();
    // The page went, and the class lost as many items as it held, but the
    // unread ones: every hot item moved to a chunk the evictions freed.
    assert_eq!(s.slab_class_stats()[big_class].total_pages, 1);
    assert_eq!(after.evictions - before.evictions, hot.len() as u64);
    assert_eq!(
        after.pages_rescued_items - before.pages_rescued_items,
        hot.len() as u64
    );
    for &i in &hot {
        assert!(
            get_at(&mut s, &key(i), T0 + 1).is_some(),
            "hot key {i} kept"
        );
    }
    check_invariants(&s);
}

/// Fills a 4 MiB shard so that a sparse class lends its last page: 200 items
/// of one class, 300 of the next class up (a page each, mostly free), then
/// large items until they take the sparse class's page. Returns the sparse
/// class (0-based) and its keys, each with a 100-byte value of `s`.
pub(super) fn lend_a_sparse_page(s: &mut Shard, now: u32) -> (usize, Vec<Vec<u8>>) {
    let key_of = |kind: &str, i: usize| format!("{kind}:{i:06}").into_bytes();
    let key_len = key_of("s", 0).len();
    let sparse = s.class_for_item(key_len, 100).unwrap() - 1;
    let host_len = (100..)
        .find(|&v| s.class_for_item(key_len, v) == Some(sparse + 2))
        .unwrap();
    let put = |s: &mut Shard, key: &[u8], value: &[u8]| {
        let r = s.store(StoreMode::Set, key, key_hash(key), 0, 0, value, now);
        assert_eq!(r, StoreResult::Stored);
    };
    let keys: Vec<Vec<u8>> = (0..200).map(|i| key_of("s", i)).collect();
    for k in &keys {
        put(s, k, &[b's'; 100]);
    }
    for i in 0..300 {
        put(s, &key_of("h", i), &vec![b'h'; host_len]);
    }
    let big = vec![b'b'; 3000];
    let mut i = 0;
    while s.slab_class_stats()[sparse].total_pages == 1 && i < 10_000 {
        put(s, &key_of("b", i), &big);
        i += 1;
    }
    assert_eq!(
        s.slab_class_stats()[sparse].total_pages,
        0,
        "after {i} large items"
    );
    (sparse, keys)
}

#[test]
fn a_sparse_class_lends_its_last_page_and_takes_one_back_when_its_guests_fill_one() {
    let mut s = shard(4 * MIB);
    let (sparse, keys) = lend_a_sparse_page(&mut s, T0);
    // Its items live one class up now, none lost; the large items' class
    // has the page.
    let classes = s.slab_class_stats();
    let big_class = s.class_for_item(keys[0].len(), 3000).unwrap() - 1;
    assert_eq!(classes[big_class].pages_moved_in, 1);
    assert_eq!(classes[sparse + 1].used_chunks, 500);
    assert_eq!(classes[sparse].guests, 200, "`stats slabs` shows them");
    for k in &keys {
        assert_eq!(get(&mut s, k).unwrap(), vec![b's'; 100]);
    }
    check_invariants(&s);
    // New items of its size go there too, taking no page back ...
    set(&mut s, b"s:000200", &[b's'; 100]);
    assert_eq!(s.slab_class_stats()[sparse].total_pages, 0);
    assert_eq!(s.slabs.classes[sparse].guests, 201);
    // ... until its guests would fill a page of that class: then a page of
    // its own wastes less.
    let host_per_page = s.slabs.classes[sparse + 1].per_page;
    s.slabs.classes[sparse].guests = host_per_page;
    set(&mut s, b"s:000201", &[b's'; 100]);
    assert_eq!(s.slab_class_stats()[sparse].total_pages, 1);
    s.slabs.classes[sparse].guests = 201;
    check_invariants(&s);
}

#[test]
fn rewriting_a_guest_in_a_full_class_uses_its_own_chunk() {
    let mut s = shard(4 * MIB);
    let (sparse, keys) = lend_a_sparse_page(&mut s, T0);
    // The class up, the guests' host, fills up.
    let host = sparse + 1;
    let host_len = (100..)
        .find(|&v| s.class_for_item(keys[0].len(), v) == Some(host + 1))
        .unwrap();
    let mut i = 300;
    while s.slabs.free_chunks(host) > 0 {
        set(
            &mut s,
            format!("h:{i:06}").as_bytes(),
            &vec![b'h'; host_len],
        );
        i += 1;
    }
    let before = s.stats();
    // Same size, then one byte less: the guest's chunk does, nothing is evicted.
    assert_eq!(set(&mut s, &keys[0], &[b't'; 100]), StoreResult::Stored);
    assert_eq!(set(&mut s, &keys[1], &[b't'; 99]), StoreResult::Stored);
    assert_eq!(s.stats().evictions, before.evictions);
    assert_eq!(get(&mut s, &keys[0]).unwrap(), vec![b't'; 100]);
    assert_eq!(s.slabs.classes[sparse].guests, 200);
    check_invariants(&s);
}

#[test]
fn a_page_move_frees_expired_victims_without_counting_evictions() {
    let mut s = shard(4 * MIB);
    // Three pages of one class, most items expiring at T0 + 5; the rest, with
    // no expiry field, 4 bytes more value to stay in the class.
    let value = [b'v'; 100];
    let class = s
        .slabs
        .class_for(item::total_size(key(0).len(), 100, 0, T0 + 5, 1))
        .unwrap();
    let lasting = [b'w'; 104];
    assert_eq!(s.class_for_item(key(0).len(), 104), Some(class + 1));
    let mut n = 0;
    while s.slabs.classes[class].pages < 3 || s.slabs.free_chunks(class) > 1000 {
        let k = key(n);
        s.store(StoreMode::Set, &k, key_hash(&k), 0, T0 + 5, &value, T0);
        n += 1;
    }
    while s.slabs.free_chunks(class) > 0 {
        assert_eq!(set(&mut s, &key(n), &lasting), StoreResult::Stored);
        n += 1;
    }
    let last = key(n - 1);
    let page = s.slabs.page_of(s.find(&last, key_hash(&last)).unwrap());
    // Later the first items are dead; moving a page frees them as expired.
    assert!(get_at(&mut s, &last, T0 + 10).is_some());
    let before = s.stats();
    let big_class = s.class_for_item(8, 3000).unwrap() - 1;
    s.move_page(page, big_class, NIL);
    let after = s.stats();
    assert_eq!(
        after.evictions, before.evictions,
        "expired items are not evictions"
    );
    assert!(after.expired_unfetched > before.expired_unfetched);
    assert!(get_at(&mut s, &last, T0 + 10).is_some());
    check_invariants(&s);
}

#[test]
fn a_class_that_took_a_page_back_for_its_guests_does_not_lend_it_again_at_once() {
    // 16 KiB pages: a few items fill one.
    let mut config = ShardConfig::new(4 * 16 * 1024, 8 * 1024);
    config.page_size = 16 * 1024;
    let mut s = Shard::new(config).unwrap();
    let put = |s: &mut Shard, k: &str, len: usize| {
        let key = k.as_bytes();
        let r = s.store(
            StoreMode::Set,
            key,
            key_hash(key),
            0,
            0,
            &vec![b'x'; len],
            T0,
        );
        assert_eq!(r, StoreResult::Stored, "{k}");
    };
    let sparse = s.class_for_item(7, 100).unwrap() - 1;
    let host_len = (100..)
        .find(|&v| s.class_for_item(7, v) == Some(sparse + 2))
        .unwrap();
    put(&mut s, "s:00000", 100);
    put(&mut s, "h:00000", host_len);
    let mut b = 0;
    while s.slabs.classes[sparse].pages == 1 {
        put(&mut s, &format!("b:{b:05}"), 7000);
        b += 1;
    }
    // Guests up to a page of the host class: the class takes a page back.
    let mut n = 1;
    while s.slabs.classes[sparse].pages == 0 {
        put(&mut s, &format!("s:{n:05}"), 100);
        n += 1;
    }
    let moves = s.stats().page_moves;
    // A few of its items go and come back, with large items in between: its
    // page stays where it is.
    let mut d = 1;
    for _ in 0..50 {
        for _ in 0..3 {
            let k = format!("s:{d:05}");
            s.delete(k.as_bytes(), key_hash(k.as_bytes()), T0);
            d += 1;
        }
        put(&mut s, &format!("b:{b:05}"), 7000);
        b += 1;
        for _ in 0..3 {
            put(&mut s, &format!("s:{n:05}"), 100);
            n += 1;
        }
        assert_eq!(s.slabs.classes[sparse].pages, 1);
    }
    assert_eq!(s.stats().page_moves, moves);
    check_invariants(&s);
}

#[test]
fn out_of_memory_when_no_page_can_be_had() {
    let mut s = shard(MIB / 2);
    assert_eq!(set(&mut s, b"k", b"v"), StoreResult::OutOfMemory);
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(s.stats().total_pages, 0);
    // One page: an item cannot evict itself to grow into another class.
    let mut s = shard(MIB);
    set(&mut s, b"k", b"v");
    let r = store_at(&mut s, StoreMode::Append, b"k", &[b'a'; 5000], T0);
    assert_eq!(r, StoreResult::NotStored);
    assert_eq!(get(&mut s, b"k").unwrap(), b"v");
    assert_eq!(set(&mut s, b"k", &[b'a'; 5000]), StoreResult::OutOfMemory);
    assert_eq!(get(&mut s, b"k"), None, "a failed set drops the old value");
    check_invariants(&s);
}

#[test]
fn memory_limit_can_be_lowered_and_raised_at_run_time() {
    let mut s = shard(4 * MIB);
    let mut i = 0;
    while s.stats().total_pages < 4 {
        set(&mut s, &key(i), &[b'v'; 200]);
        i += 1;
    }
    s.set_memory_limit(2 * MIB);
    let st = s.stats();
    assert_eq!(st.total_pages, 2);
    assert_eq!(st.memory_limit, 2 * MIB as u64);
    assert!(st.evictions > 0);
    check_invariants(&s);
    s.set_memory_limit(6 * MIB);
    assert_eq!(s.stats().bytes_mapped, 6 * MIB as u64);
    while s.stats().total_pages < 6 {
        assert_eq!(set(&mut s, &key(i), &[b'v'; 200]), StoreResult::Stored);
        i += 1;
    }
    assert!(get(&mut s, &key(i - 1)).is_some());
    check_invariants(&s);
}

#[test]
fn slab_stats_and_cachedump_describe_a_class() {
    let mut s = shard(8 * MIB);
    for i in 0..5 {
        s.store(
            StoreMode::Set,
            &key(i),
            key_hash(&key(i)),
            0,
            T0 + i as u32,
            b"val",
            T0,
        );
    }
    let class = s.class_for_item(key(0).len(), 3).unwrap();
    let st = s.slab_class_stats();
    assert_eq!(st[0].id, 1);
    let c = st[class - 1];
    assert_eq!((c.total_pages, c.used_chunks, c.number), (1, 5, 5));
    assert_eq!(c.total_chunks, c.chunks_per_page);
    assert_eq!(c.free_chunks, c.total_chunks - 5);
    assert!(c.chunk_size as usize >= item::HEADER_MIN + key(0).len() + 3);
    // A read in the second the item was last used leaves it in place; a read in
    // a later second moves it to the front.
    let dump = |s: &Shard, class, limit| -> Vec<(Vec<u8>, usize, u32)> {
        s.cachedump(class, limit)
            .map(|(k, len, exp)| (k.to_vec(), len, exp))
            .collect()
    };
    get(&mut s, &key(1));
    assert_eq!(dump(&s, class, 1)[0].0, key(4));
    assert!(s.get(&key(2), key_hash(&key(2)), T0 + 1).is_some());
    let three = dump(&s, class, 3);
    assert_eq!(three.len(), 3);
    assert_eq!(three[0], (key(2), 3, T0 + 2));
    assert_eq!(three[1].0, key(4));
    assert_eq!(dump(&s, class, 0).len(), 5);
    assert!(dump(&s, 0, 0).is_empty());
    assert!(dump(&s, class + 1, 0).is_empty());
}

/// Bytes each item costs: the header inside the chunk, the index slot outside.
#[test]
fn bytes_per_item_stay_small() {
    const { assert!(item::HEADER_MIN <= 22) };
    let mut s = shard(64 * MIB);
    let n = 100_000;
    for i in 0..n {
        assert_eq!(set(&mut s, &key(i), b"0123456789"), StoreResult::Stored);
    }
    // 64-byte buckets of 12 slots, 90% full at most, growing by a quarter.
    let index_bytes = s.index.heap_bytes();
    let per_item = index_bytes as f64 / n as f64;
    eprintln!("index {per_item:.1} B/item");
    assert!(per_item <= 7.5, "index costs {per_item} B/item");
    // No flags, no expiry: the fixed header only.
    assert_eq!(
        s.stats().bytes,
        (n * (item::HEADER_MIN + key(0).len() + 10)) as u64
    );
}

#[test]
fn memory_follows_a_change_in_value_sizes() {
    // Phase 1: a working set of 1000-byte values fills all 4 pages.
    let mut s = shard(4 * MIB);
    let small = vec![b's'; 1000];
    for round in 0..3 {
        for i in 0..6000 {
            let k = format!("small:{i}");
            if get(&mut s, k.as_bytes()).is_none() {
                set(&mut s, k.as_bytes(), &small);
            }
        }
        let _ = round;
    }
    let small_class = s.class_for_item(8, 1000).unwrap() - 1;
    assert_eq!(s.slab_class_stats()[small_class].total_pages, 4);
    // Phase 2: the clients now read and write 3000-byte values only, a working set
    // that needs all the memory. Without rebalancing the new class would keep the
    // single page it steals first.
    let big = vec![b'b'; 3000];
    let big_class = s.class_for_item(8, 3000).unwrap() - 1;
    let mut hits = 0;
    for round in 0..40 {
        for i in 0..1000 {
            let k = format!("big:{i}");
            if get(&mut s, k.as_bytes()).is_some() {
                if round == 39 {
                    hits += 1;
                }
            } else {
                set(&mut s, k.as_bytes(), &big);
            }
        }
    }
    let classes = s.slab_class_stats();
    let st = s.stats();
    assert!(
        classes[big_class].total_pages >= 3,
        "big class holds {} pages after the mix changed",
        classes[big_class].total_pages
    );
    assert!(st.page_moves >= 3, "{st:?}");
    assert_eq!(
        classes[big_class].pages_moved_in,
        classes[small_class].pages_moved_out
    );
    assert!(hits > 700, "last round hit {hits} of 1000");
    check_invariants(&s);
}

#[test]
fn a_page_of_hot_items_is_not_moved_for_a_class_with_hotter_victims() {
    // Class "small": one page whose items are read often, and never-read items
    // at the tail of its lists (its next victims).
    let mut s = shard(4 * MIB);
    let small = vec![b's'; 100];
    for i in 0..2000 {
        set(&mut s, format!("small:{i}").as_bytes(), &small);
    }
    for i in 0..100 {
        set(&mut s, format!("cold:{i}").as_bytes(), &small);
    }
    for _ in 0..4 {
        for i in 0..2000 {
            assert!(get(&mut s, format!("small:{i}").as_bytes()).is_some());
        }
    }
    let small_class = s.class_for_item(9, 100).unwrap() - 1;
    assert_eq!(s.slab_class_stats()[small_class].total_pages, 1);
    // Class "big": a loop over more keys than the other pages hold, so it
    // evicts items read every round, which makes its victims far hotter than
    // the small class's cold ones.
    let big = vec![b'b'; 3000];
    for _ in 0..6 {
        for i in 0..1200 {
            let k = format!("big:{i}");
            if get(&mut s, k.as_bytes()).is_none() {
                set(&mut s, k.as_bytes(), &big);
            }
        }
    }
    let st = s.stats();
    assert!(st.evictions > 1000, "{st:?}");
    // Taking the small class's page would evict 2000 hot items to make room for
    // a few more loop members: it stays (its last page, and its items have no
    // class above with room to go to).
    assert_eq!(s.slab_class_stats()[small_class].total_pages, 1);
    assert_eq!(st.page_moves, 0, "{st:?}");
    let kept = (0..2000)
        .filter(|i| get(&mut s, format!("small:{i}").as_bytes()).is_some())
        .count();
    assert_eq!(kept, 2000);
    check_invariants(&s);
}

#[test]
fn a_class_keeps_its_last_page_when_another_class_has_hotter_victims() {
    // Class "rare": one page of items never read again.
    let mut s = shard(4 * MIB);
    let rare = vec![b'r'; 100];
    for i in 0..50 {
        set(&mut s, format!("rare:{i}").as_bytes(), &rare);
    }
    let rare_class = s.class_for_item(7, 100).unwrap() - 1;
    // Class "big": a loop over more keys than the other pages hold, read every
    // round, so its victims are far hotter than the rare class's.
    let big = vec![b'b'; 3000];
    for _ in 0..8 {
        for i in 0..1200 {
            let k = format!("big:{i}");
            if get(&mut s, k.as_bytes()).is_none() {
                set(&mut s, k.as_bytes(), &big);
            }
        }
    }
    assert!(s.stats().evictions > 1000);
    // Taking the rare class's only page would make its next store take a page
    // back from some other class, evicting a page of that class's items.
    assert_eq!(s.slab_class_stats()[rare_class].total_pages, 1);
    set(&mut s, b"rare:new", &rare);
    assert_eq!(s.stats().page_moves, 0, "{:?}", s.stats());
    check_invariants(&s);
}

#[test]
fn a_rewrite_in_the_same_second_keeps_the_items_place() {
    let mut s = shard(MIB);
    store_at(&mut s, StoreMode::Set, b"a", b"1", T0);
    store_at(&mut s, StoreMode::Set, b"b", b"1", T0);
    let class = s.class_for_item(1, 1).unwrap() - 1;
    let head = |s: &Shard| s.policy.classes[class].window.head;
    let b = head(&s);
    // Rewritten in the second it was stored: "a" stays behind "b".
    store_at(&mut s, StoreMode::Set, b"a", b"2", T0);
    assert_eq!(head(&s), b);
    assert_eq!(get_at(&mut s, b"a", T0).as_deref(), Some(&b"2"[..]));
    check_invariants(&s);
    // A second later the rewrite is a fresh use and moves it to the front.
    store_at(&mut s, StoreMode::Set, b"a", b"3", T0 + 1);
    assert_ne!(head(&s), b);
    assert_eq!(get_at(&mut s, b"a", T0 + 1).as_deref(), Some(&b"3"[..]));
    check_invariants(&s);
}

#[test]
fn policy_keeps_a_hot_set_through_a_scan_in_the_shard() {
    let mut s = shard(MIB);
    let value = [b'v'; 100];
    let class = s.class_for_item(key(0).len(), value.len()).unwrap();
    let per_page = s.slab_class_stats()[class - 1].chunks_per_page as usize;
    let hot = per_page / 4;
    let mut scan = 1_000_000;
    let mut last_hits = 0;
    for round in 0..30 {
        last_hits = 0;
        for i in 0..hot {
            if get(&mut s, &key(i)).is_some() {
                last_hits += 1;
            } else {
                set(&mut s, &key(i), &value);
            }
        }
        // A scan of one-off keys as large as the cache.
        for _ in 0..per_page {
            set(&mut s, &key(scan), &value);
            scan += 1;
        }
        let _ = round;
    }
    let st = s.stats();
    assert!(
        last_hits > hot * 9 / 10,
        "hot set hits {last_hits} of {hot}"
    );
    assert!(st.rejections > 0 && st.admissions > 0, "{st:?}");
    assert!(st.protected_items > 0);
    check_invariants(&s);
}

#[test]
fn overhead_per_item_outside_the_chunk_is_small() {
    // 14-byte keys and 100-byte values, no flags or expiry: a 136-byte item
    // (22-byte header), in the default classes' 136-byte chunk.
    let mut s = Shard::new(ShardConfig::new(64 * MIB, MAX_ITEM)).unwrap();
    let n = 100_000;
    let value = [b'v'; 100];
    for i in 0..n {
        let k = format!("key:{i:010}");
        assert_eq!(k.len(), 14);
        assert_eq!(set(&mut s, k.as_bytes(), &value), StoreResult::Stored);
    }
    let class = s.class_for_item(14, 100).unwrap();
    assert_eq!(s.slab_class_stats()[class - 1].chunk_size, 136);
    let st = s.stats();
    assert_eq!(st.curr_items, n as u64);
    let pages = st.total_pages as usize * MIB;
    let heap = s.heap_bytes();
    let per_item = (pages + heap) as f64 / n as f64;
    let outside = heap as f64 / n as f64;
    println!("arena {pages} + heap {heap} bytes: {per_item:.1} bytes/item, {outside:.1} outside the chunk");
    // Index 5.9-7.4, sketch 4 x capacity rounded to a power of two, doorkeeper
    // 1: at most 30 bytes outside the chunk.
    assert!(
        outside <= 30.0,
        "{outside:.1} bytes per item outside the arena"
    );
    assert!(
        per_item <= 136.0 + 30.0 + 2.0,
        "{per_item:.1} bytes per item"
    );
    check_invariants(&s);
}

#[test]
fn all_size_classes_at_three_times_the_limit_stay_within_it() {
    let limit = 16 * MIB;
    let mut s = shard(limit);
    let mut written = 0usize;
    let mut i = 0usize;
    // Value sizes sweep every class, smallest to largest and back, until three
    // times the limit has been written.
    let sizes: Vec<usize> = (0..60)
        .map(|k| ((1.2f64).powi(k) as usize).min(MAX_ITEM - 300))
        .collect();
    while written < 3 * limit {
        for &len in sizes.iter().chain(sizes.iter().rev()) {
            let v = vec![b'x'; len];
            let k = format!("k{i}");
            let r = set(&mut s, k.as_bytes(), &v);
            assert!(
                r == StoreResult::Stored || r == StoreResult::OutOfMemory,
                "{r:?}"
            );
            written += len;
            i += 1;
        }
    }
    let st = s.stats();
    assert!(st.total_pages as usize * MIB <= limit);
    // Outside the arena: the documented bound (module docs, "Memory"): at most 30
    // bytes per chunk the limit can hold (index, sketch, doorkeeper, free lists).
    let bound = limit / 48 * 30;
    assert!(s.heap_bytes() <= bound, "heap {} > {bound}", s.heap_bytes());
    println!("heap {} bytes for a {limit}-byte limit", s.heap_bytes());
    assert!(st.evictions > 0 && st.page_moves > 0, "{st:?}");
    check_invariants(&s);
}

#[test]
fn idle_memory_moves_to_a_starving_class_without_evicting() {
    // 1000-byte items fill all 4 pages, then two of every three are deleted: the
    // class holds more than a page of free chunks spread over its pages.
    let mut s = shard(4 * MIB);
    let small = vec![b's'; 1000];
    let mut n = 0;
    while s.stats().evictions == 0 {
        set(&mut s, format!("small:{n}").as_bytes(), &small);
        n += 1;
    }
    assert_eq!(s.stats().total_pages, 4);
    let stored: Vec<usize> = (0..n)
        .filter(|i| get(&mut s, format!("small:{i}").as_bytes()).is_some())
        .collect();
    let evictions_before = s.stats().evictions;
    let kept: Vec<usize> = stored.iter().copied().filter(|i| i % 3 == 0).collect();
    for i in stored.iter().filter(|i| *i % 3 != 0) {
        let k = format!("small:{i}");
        assert!(s.delete(k.as_bytes(), key_hash(k.as_bytes()), T0));
    }
    // A 3000-byte item needs a page of its own class; none is unowned.
    let big = vec![b'b'; 3000];
    assert_eq!(set(&mut s, b"big", &big), StoreResult::Stored);
    let st = s.stats();
    assert_eq!(st.page_moves, 1, "{st:?}");
    assert!(st.pages_rescued_items > 0, "{st:?}");
    assert_eq!(st.evictions, evictions_before, "no item was evicted");
    for i in &kept {
        assert_eq!(
            get(&mut s, format!("small:{i}").as_bytes()),
            Some(small.clone())
        );
    }
    assert_eq!(get(&mut s, b"big"), Some(big));
    check_invariants(&s);
}

// ----- header forms (`item.rs`): fields an item gains after it was stored --------

/// A touch that gives an item its first expiry rewrites it in the larger form:
/// value, flags, CAS, fetched bit and last access stay; the expiry works.
#[test]
fn a_first_expiry_rewrites_the_item_in_its_larger_form() {
    let mut s = shard(8 * MIB);
    let h = key_hash(b"k");
    // 22-byte header + 1 + 113 = 136 bytes, the whole of a default chunk: the
    // 4 bytes of an expiry move it to the next class.
    let value = [b'v'; 113];
    s.store(StoreMode::Set, b"k", h, 0, 0, &value, T0);
    let small = s.class_for_item(1, 113).unwrap();
    assert_eq!(s.slab_class_stats()[small - 1].chunk_size, 136);
    let cas = s.get(b"k", h, T0).unwrap().cas;
    assert!(s.touch(b"k", h, T0 + 50, T0 + 1));
    let v = s.get(b"k", h, T0 + 2).unwrap();
    assert_eq!(
        (v.value, v.flags, v.cas, v.expiry),
        (&value[..], 0, cas, T0 + 50)
    );
    let st = s.slab_class_stats();
    assert_eq!(st[small - 1].used_chunks, 0, "the old chunk was given back");
    assert_eq!(st[small].used_chunks, 1, "the item is in the next class");
    assert_eq!(s.stats().bytes, (136 + 4) as u64);
    assert_eq!(get_at(&mut s, b"k", T0 + 50), None, "the new expiry holds");
    // Within its class (room in the chunk) the form changes in place, and gat
    // takes the same path.
    s.store(StoreMode::Set, b"j", key_hash(b"j"), 0xF1A6, 0, b"x", T0);
    let cas = s.get(b"j", key_hash(b"j"), T0).unwrap().cas;
    let v = s.get_and_touch(b"j", key_hash(b"j"), T0 + 9, T0).unwrap();
    assert_eq!(
        (v.value, v.flags, v.cas, v.expiry),
        (&b"x"[..], 0xF1A6, cas, T0 + 9)
    );
    assert_eq!(get_at(&mut s, b"j", T0 + 9), None);
    check_invariants(&s);
}

/// `md ... I E<cas>` with a CAS over 48 bits on an item stored with a shard CAS:
/// the item is rewritten, stale, with the client's CAS and its own value.
#[test]
fn a_wide_client_cas_rewrites_the_item() {
    let mut s = shard(8 * MIB);
    let h = key_hash(b"k");
    s.store(StoreMode::Set, b"k", h, 3, T0 + 100, b"value", T0);
    let wide = u64::MAX - 5;
    let opts = MetaDelete {
        invalidate: true,
        new_cas: Some(wide),
        touch: Some(T0 + 30),
        ..MetaDelete::default()
    };
    assert_eq!(s.meta_delete(b"k", h, opts, T0), MetaDeleteResult::Deleted);
    let v = s.get(b"k", h, T0).unwrap();
    assert_eq!(
        (v.value, v.flags, v.cas, v.expiry),
        (&b"value"[..], 3, wide, T0 + 30)
    );
    let d = s.meta_debug(b"k", h, T0).unwrap();
    assert_eq!(d.size, item::HEADER_MIN + 4 + 4 + 2 + 1 + 5);
    check_invariants(&s);
}

/// With no memory to rewrite it into, an item that must grow is dropped (as an
/// eviction would have) rather than kept without the expiry it was given.
#[test]
fn an_item_that_cannot_grow_is_dropped_not_left_without_its_expiry() {
    // One page, held by the item's own class: the larger form has nowhere to go.
    let mut s = Shard::new(ShardConfig::new(MIB, 64 * 1024)).unwrap();
    let h = key_hash(b"k");
    let value = [b'v'; 113];
    assert_eq!(set(&mut s, b"k", &value), StoreResult::Stored);
    assert!(!s.touch(b"k", h, T0 + 50, T0));
    assert_eq!(get(&mut s, b"k"), None);
    assert_eq!(s.stats().curr_items, 0);
    check_invariants(&s);
}

/// A rewrite in a larger form keeps the item on its list, whether it stays in
/// its chunk's class or moves to the next one, and the lists stay whole
/// (found by review: `mg T` wrote the old chunk's segment bits on the new one).
#[test]
fn a_regrown_item_keeps_its_list() {
    for (value_len, moves_class) in [(110, true), (100, false)] {
        let mut s = shard(8 * MIB);
        let key = |i: usize| format!("k{i:03}").into_bytes();
        // 22 + 4 + 110 = 136 bytes fill a default chunk; 126 leave room.
        let value = vec![b'v'; value_len];
        for i in 0..300 {
            assert_eq!(set(&mut s, &key(i), &value), StoreResult::Stored);
        }
        let hot = key(7);
        let h = key_hash(&hot);
        assert!(get_at(&mut s, &hot, T0 + 1).is_some());
        let id = s.find(&hot, h).unwrap();
        assert_eq!(s.slabs.segment(id), policy::Segment::Protected);
        let mut ttl = TtlSteps::default();
        ttl.push(TtlStep::Touch(T0 + 100));
        let opts = MetaGet {
            ttl,
            ..MetaGet::default()
        };
        let hit = s.meta_get(&hot, h, opts, T0 + 2).unwrap();
        assert_eq!(hit.value, &value[..]);
        let new = s.find(&hot, h).unwrap();
        assert_eq!(s.slabs.class_of(new) != s.slabs.class_of(id), moves_class);
        assert_eq!(s.slabs.segment(new), policy::Segment::Protected);
        check_invariants(&s);
        for t in 3..6 {
            assert!(get_at(&mut s, &hot, T0 + t).is_some());
            check_invariants(&s);
        }
        let st = s.stats();
        assert_eq!(
            (st.get_hits, st.total_items),
            (5, 300),
            "the rewrite is no store"
        );
    }
}

#[test]
fn the_sketch_starts_at_half_the_pages_knowing_the_items_held() {
    // 8 pages of 1 MiB; 100 KiB values take a page per 10 items or so.
    let mut s = shard(8 * MIB);
    let value = vec![b'v'; 100 << 10];
    let mut stored = Vec::new();
    let mut i = 0;
    while (s.slabs.pages_in_use + 1) * 2 < s.slabs.max_pages {
        let key = format!("k{i}");
        assert_eq!(set(&mut s, key.as_bytes(), &value), StoreResult::Stored);
        // Reads before the start count nothing, and cost no sketch line.
        assert!(get(&mut s, key.as_bytes()).is_some());
        stored.push(key);
        i += 1;
    }
    assert_eq!(s.stats().sketch_bytes, 0, "under half full: no sketch yet");
    assert!(stored
        .iter()
        .all(|k| s.policy.frequency(key_hash(k.as_bytes())) == 0));
    while s.slabs.pages_in_use * 2 < s.slabs.max_pages {
        let key = format!("k{i}");
        assert_eq!(set(&mut s, key.as_bytes(), &value), StoreResult::Stored);
        i += 1;
    }
    assert!(s.stats().sketch_bytes > 0, "half full: the sketch counts");
    // Every item held at the start got the sighting of its store.
    for k in &stored {
        assert!(s.policy.frequency(key_hash(k.as_bytes())) >= 1, "{k}");
    }
    // Sized for the full shard at the start: filling the other half neither
    // grows nor clears it, so those sightings are still there at the first
    // eviction.
    let sized = s.stats().sketch_bytes;
    while s.slabs.pages_in_use < s.slabs.max_pages {
        let key = format!("k{i}");
        assert_eq!(set(&mut s, key.as_bytes(), &value), StoreResult::Stored);
        i += 1;
    }
    assert_eq!(s.stats().evictions, 0);
    assert_eq!(s.stats().sketch_bytes, sized);
    for k in &stored {
        assert!(s.policy.frequency(key_hash(k.as_bytes())) >= 1, "{k}");
    }
    check_invariants(&s);
}
