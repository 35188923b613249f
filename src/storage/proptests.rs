//! Property tests: random operation sequences against a `HashMap` model.
//!
//! With plenty of memory the shard must agree with the model exactly. With little
//! memory it may evict: a key the model holds may be missing, but a value the
//! shard returns is always the model's, and the pages in use never pass the limit.

use std::collections::HashMap;

use proptest::prelude::*;

use super::tests::check_invariants;
use super::*;
use crate::keyhash::key_hash;

const PAGE: usize = 128 << 10;
const MAX_ITEM: usize = 64 << 10;
/// The longest value an item of a `key_of` key (5 bytes) may have.
const MAX_VALUE: usize = MAX_ITEM - item::HEADER_MAX - 5;
const NOW: u32 = 1_700_000_000;

#[derive(Debug, Clone)]
enum Op {
    Store(StoreMode, u8, usize, u8),
    SetNum(u8, u64),
    Delete(u8),
    Arith(u8, bool, u64),
    Get(u8),
    /// touch with no expiry (false) or one far in the future (true): the first
    /// expiry rewrites an item in a larger header (`Shard::regrow`).
    Touch(u8, bool),
    /// mg with T (far in the future) and v.
    MetaGetTouch(u8),
    /// md I with a client CAS over 48 bits: another regrow, the item stays.
    InvalidateWideCas(u8),
    /// The clock moves a second on: later uses move items on their lists
    /// (within a second they keep their place).
    Tick,
    /// Only in the small-memory test: a new limit in pages.
    Limit(usize),
}

fn value_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 0..64usize,
        3 => 64..2048usize,
        2 => 2048..=MAX_VALUE,
        1 => Just(MAX_VALUE),
    ]
}

fn op(with_limit: bool) -> impl Strategy<Value = Op> {
    let key = 0..8u8;
    let mode = prop_oneof![
        Just(StoreMode::Set),
        Just(StoreMode::Add),
        Just(StoreMode::Replace),
        Just(StoreMode::Append),
        Just(StoreMode::Prepend),
    ];
    let limit_weight = if with_limit { 1 } else { 0 };
    prop_oneof![
        6 => (mode, key.clone(), value_len(), any::<u8>()).prop_map(|(m, k, l, s)| Op::Store(m, k, l, s)),
        2 => (key.clone(), prop_oneof![any::<u64>(), 0..100u64]).prop_map(|(k, n)| Op::SetNum(k, n)),
        1 => key.clone().prop_map(Op::Delete),
        2 => (key.clone(), any::<bool>(), prop_oneof![any::<u64>(), 0..10u64]).prop_map(|(k, i, d)| Op::Arith(k, i, d)),
        4 => key.clone().prop_map(Op::Get),
        2 => (key.clone(), any::<bool>()).prop_map(|(k, far)| Op::Touch(k, far)),
        1 => key.clone().prop_map(Op::MetaGetTouch),
        1 => key.prop_map(Op::InvalidateWideCas),
        2 => Just(Op::Tick),
        limit_weight => (2..10usize).prop_map(Op::Limit),
    ]
}

fn key_of(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

/// Letters only, so a generated value is never a number.
fn value_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + ((seed as usize + i) % 26) as u8)
        .collect()
}

fn model_parse(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The value the shard holds for `key`, without touching recency or stats.
fn peek(s: &Shard, key: &[u8]) -> Option<Vec<u8>> {
    s.find(key, key_hash(key))
        .map(|id| item::value(s.slabs.item(id)).to_vec())
}

fn config(pages: usize) -> ShardConfig {
    let mut c = ShardConfig::new(pages * PAGE, MAX_ITEM);
    c.page_size = PAGE;
    c
}

/// Applies `op` to the model; returns what the shard must answer.
fn apply_model(model: &mut HashMap<Vec<u8>, Vec<u8>>, op: &Op) -> Expected {
    match *op {
        Op::Store(mode, k, len, seed) => {
            let key = key_of(k);
            let v = value_of(len, seed);
            let present = model.contains_key(&key);
            let r = match mode {
                StoreMode::Set => {
                    model.insert(key, v);
                    StoreResult::Stored
                }
                StoreMode::Add if present => StoreResult::NotStored,
                StoreMode::Add => {
                    model.insert(key, v);
                    StoreResult::Stored
                }
                _ if !present => StoreResult::NotStored,
                StoreMode::Replace => {
                    model.insert(key, v);
                    StoreResult::Stored
                }
                StoreMode::Append | StoreMode::Prepend => {
                    let old = model.get_mut(&key).unwrap();
                    if old.len() + v.len() > MAX_VALUE {
                        StoreResult::NotStored
                    } else {
                        if mode == StoreMode::Append {
                            old.extend_from_slice(&v);
                        } else {
                            let mut n = v;
                            n.extend_from_slice(old);
                            *old = n;
                        }
                        StoreResult::Stored
                    }
                }
                StoreMode::Cas(_) => unreachable!("not generated"),
            };
            Expected::Store(r)
        }
        Op::SetNum(k, n) => {
            model.insert(key_of(k), n.to_string().into_bytes());
            Expected::Store(StoreResult::Stored)
        }
        Op::Delete(k) => Expected::Bool(model.remove(&key_of(k)).is_some()),
        Op::Arith(k, incr, d) => Expected::Arith(match model.get_mut(&key_of(k)) {
            None => ArithResult::NotFound,
            Some(v) => match model_parse(v) {
                None => ArithResult::NonNumeric,
                Some(n) => {
                    let r = if incr {
                        n.wrapping_add(d)
                    } else {
                        n.saturating_sub(d)
                    };
                    *v = r.to_string().into_bytes();
                    ArithResult::Value(r)
                }
            },
        }),
        Op::Get(k) | Op::MetaGetTouch(k) => Expected::Get(model.get(&key_of(k)).cloned()),
        Op::Touch(k, _) | Op::InvalidateWideCas(k) => {
            Expected::Bool(model.contains_key(&key_of(k)))
        }
        Op::Tick | Op::Limit(_) => Expected::Nothing,
    }
}

/// An expiry no test runs long enough to reach.
const FAR: u32 = NOW + 1_000_000;

#[derive(Debug, PartialEq)]
enum Expected {
    Store(StoreResult),
    Bool(bool),
    Arith(ArithResult),
    Get(Option<Vec<u8>>),
    Nothing,
}

/// Applies `op` to the shard at time `*now` (which `Op::Tick` advances).
fn apply_shard(s: &mut Shard, op: &Op, now: &mut u32) -> Expected {
    let t = *now;
    match *op {
        Op::Store(mode, k, len, seed) => {
            let key = key_of(k);
            let v = value_of(len, seed);
            // Some with flags, so that items of every header form are stored.
            let flags = if seed % 2 == 1 { seed as u32 } else { 0 };
            Expected::Store(s.store(mode, &key, key_hash(&key), flags, 0, &v, t))
        }
        Op::SetNum(k, n) => {
            let key = key_of(k);
            let v = n.to_string().into_bytes();
            Expected::Store(s.store(StoreMode::Set, &key, key_hash(&key), 0, 0, &v, t))
        }
        Op::Delete(k) => Expected::Bool(s.delete(&key_of(k), key_hash(&key_of(k)), t)),
        Op::Arith(k, incr, d) => {
            Expected::Arith(s.arith(&key_of(k), key_hash(&key_of(k)), incr, d, t))
        }
        Op::Get(k) => Expected::Get(
            s.get(&key_of(k), key_hash(&key_of(k)), t)
                .map(|v| v.value.to_vec()),
        ),
        Op::Touch(k, far) => {
            let expiry = if far { FAR } else { 0 };
            Expected::Bool(s.touch(&key_of(k), key_hash(&key_of(k)), expiry, t))
        }
        Op::MetaGetTouch(k) => {
            let mut ttl = TtlSteps::default();
            ttl.push(TtlStep::Touch(FAR));
            let opts = MetaGet {
                ttl,
                ..MetaGet::default()
            };
            Expected::Get(
                s.meta_get(&key_of(k), key_hash(&key_of(k)), opts, t)
                    .map(|v| v.value.to_vec()),
            )
        }
        Op::InvalidateWideCas(k) => {
            let opts = MetaDelete {
                invalidate: true,
                new_cas: Some(u64::MAX - k as u64),
                ..MetaDelete::default()
            };
            let r = s.meta_delete(&key_of(k), key_hash(&key_of(k)), opts, t);
            Expected::Bool(r == MetaDeleteResult::Deleted)
        }
        Op::Tick => {
            *now += 1;
            Expected::Nothing
        }
        Op::Limit(pages) => {
            s.set_memory_limit(pages * PAGE);
            Expected::Nothing
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_a_hashmap_when_memory_is_plentiful(ops in prop::collection::vec(op(false), 1..120)) {
        let mut s = Shard::new(config(512)).unwrap();
        let mut model = HashMap::new();
        let mut now = NOW;
        for op in &ops {
            let want = apply_model(&mut model, op);
            let got = apply_shard(&mut s, op, &mut now);
            prop_assert_eq!(got, want, "op {:?}", op);
            check_invariants(&s);
        }
        check_invariants(&s);
        prop_assert_eq!(s.stats().evictions, 0);
        prop_assert_eq!(s.stats().curr_items as usize, model.len());
        for k in 0..8 {
            prop_assert_eq!(peek(&s, &key_of(k)), model.get(&key_of(k)).cloned());
        }
    }

    #[test]
    fn never_returns_a_wrong_value_under_eviction(ops in prop::collection::vec(op(true), 1..150)) {
        let pages = 4;
        let mut s = Shard::new(config(pages)).unwrap();
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut now = NOW;
        for op in &ops {
            // Evictions since the last step: forget what the shard dropped, and
            // check that what it kept is exactly the model's.
            for k in 0..8 {
                let key = key_of(k);
                match peek(&s, &key) {
                    None => { model.remove(&key); }
                    Some(v) => prop_assert_eq!(Some(&v), model.get(&key), "key {}", k),
                }
            }
            let want = apply_model(&mut model, op);
            let got = apply_shard(&mut s, op, &mut now);
            prop_assert_eq!(got, want, "op {:?}", op);
            let st = s.stats();
            prop_assert!(st.total_pages as usize * PAGE <= st.memory_limit as usize);
            check_invariants(&s);
        }
    }
}
