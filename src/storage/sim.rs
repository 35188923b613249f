//! The policy simulator: replays a trace of keys through the shard's own eviction
//! code (`policy.rs`, `sketch.rs`) on a cache of N equal-sized entries, and
//! through plain LRU and Belady's OPT for comparison.
//!
//! The W-TinyLFU run drives [`Policy`] exactly as [`Shard`](super::Shard) does for
//! one slab class: a read that hits is `access`; on a miss the store of the key
//! takes a chunk (`victim` + `remove` when the class is
//! full) and `insert`s it. Only the link storage differs (a vector here, item
//! headers in the shard). Used by `corecache-bench policy` and the trace tests.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::policy::{Entries, Policy, Segment, NIL};
use crate::keyhash::key_hash;

/// Trace file formats (see shared/traces/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceFormat {
    /// ARC `.lis`: `start_block n_blocks ignore request_no`; n consecutive keys.
    Lis,
    /// LIRS: one decimal key per line; empty lines and `*` skipped.
    Lirs,
    /// One key (any text) per line.
    Keys,
}

/// Reads a trace into a sequence of key ids.
pub fn read_trace(path: &Path, format: TraceFormat) -> io::Result<Vec<u64>> {
    let reader = BufReader::new(File::open(path)?);
    let mut keys = Vec::new();
    let bad = |line: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bad line {line:?}"));
    for line in reader.lines() {
        let line = line?;
        let t = line.trim();
        if t.is_empty() || t == "*" {
            continue;
        }
        match format {
            TraceFormat::Lis => {
                let mut f = t.split_whitespace();
                let start: u64 = f
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad(t))?;
                let n: u64 = f
                    .next()
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| bad(t))?;
                keys.extend(start..start + n);
            }
            TraceFormat::Lirs => keys.push(t.parse().map_err(|_| bad(t))?),
            TraceFormat::Keys => keys.push(key_hash(t.as_bytes())),
        }
    }
    Ok(keys)
}

/// Hits and references of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimResult {
    pub hits: u64,
    pub refs: u64,
}

impl SimResult {
    /// Hit ratio in percent.
    pub fn hit_ratio(&self) -> f64 {
        if self.refs == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.refs as f64
        }
    }
}

#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    seg: Segment,
    key: u64,
    hash: u64,
}

struct Nodes(Vec<Node>);

impl Entries for Nodes {
    fn prev(&self, id: u32) -> u32 {
        self.0[id as usize].prev
    }
    fn next(&self, id: u32) -> u32 {
        self.0[id as usize].next
    }
    fn set_prev(&mut self, id: u32, v: u32) {
        self.0[id as usize].prev = v
    }
    fn set_next(&mut self, id: u32, v: u32) {
        self.0[id as usize].next = v
    }
    fn segment(&self, id: u32) -> Segment {
        self.0[id as usize].seg
    }
    fn set_segment(&mut self, id: u32, s: Segment) {
        self.0[id as usize].seg = s
    }
    fn key_hash(&self, id: u32) -> u64 {
        self.0[id as usize].hash
    }
}

/// A cache of `capacity` equal-sized entries under the shard's W-TinyLFU.
pub struct WTinyLfuSim {
    policy: Policy,
    nodes: Nodes,
    map: HashMap<u64, u32>,
    free: Vec<u32>,
    capacity: u32,
    result: SimResult,
}

impl WTinyLfuSim {
    /// `seed` drives the warm-candidate coin only; a fixed seed repeats a run.
    pub fn new(capacity: usize, seed: u64) -> WTinyLfuSim {
        let capacity = capacity.max(1) as u32;
        let mut policy = Policy::new(1, seed);
        let mut nodes = Nodes(Vec::with_capacity(capacity as usize));
        policy.set_capacity(&mut nodes, 0, capacity);
        WTinyLfuSim {
            policy,
            nodes,
            map: HashMap::with_capacity(capacity as usize),
            free: Vec::new(),
            capacity,
            result: SimResult::default(),
        }
    }

    /// One reference: a read, and on a miss the store of the key. True on a hit.
    pub fn access(&mut self, key: u64) -> bool {
        self.result.refs += 1;
        if let Some(&id) = self.map.get(&key) {
            self.result.hits += 1;
            let hash = self.nodes.0[id as usize].hash;
            self.policy.access(&mut self.nodes, 0, id, hash);
            return true;
        }
        if self.map.len() as u32 * 2 >= self.capacity {
            // Half full, as a shard starts its sketch at half its pages.
            self.policy
                .start_sketch(&self.nodes, self.capacity as usize);
        }
        if self.map.len() as u32 >= self.capacity {
            // Full, as a shard is once its last page is taken.
            self.policy.set_pressure(true);
            let victim = self
                .policy
                .victim(&mut self.nodes, 0, NIL)
                .expect("a full cache has a victim");
            self.policy.remove(&mut self.nodes, 0, victim);
            self.map.remove(&self.nodes.0[victim as usize].key);
            self.free.push(victim);
        }
        let hash = key_hash(&key.to_le_bytes());
        let node = Node {
            prev: NIL,
            next: NIL,
            seg: Segment::None,
            key,
            hash,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes.0[id as usize] = node;
                id
            }
            None => {
                self.nodes.0.push(node);
                (self.nodes.0.len() - 1) as u32
            }
        };
        self.map.insert(key, id);
        self.policy.insert(&mut self.nodes, 0, id, hash);
        false
    }

    pub fn result(&self) -> SimResult {
        self.result
    }

    /// The window's share of capacity now (the hill climber moves it).
    pub fn window_share(&self) -> f64 {
        self.policy.window_share()
    }

    pub fn policy_stats(&self) -> super::PolicyStats {
        self.policy.stats()
    }
}

/// Replays `keys` through W-TinyLFU.
pub fn wtinylfu(keys: &[u64], capacity: usize) -> SimResult {
    let mut sim = WTinyLfuSim::new(capacity, 0x5eed);
    for &k in keys {
        sim.access(k);
    }
    sim.result()
}

/// Replays `keys` through plain LRU.
pub fn lru(keys: &[u64], capacity: usize) -> SimResult {
    let capacity = capacity.max(1);
    // key -> last use; (last use, key) ordered: the first is the LRU entry.
    let mut last: HashMap<u64, u64> = HashMap::with_capacity(capacity);
    let mut order: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut r = SimResult::default();
    for (t, &k) in keys.iter().enumerate() {
        let t = t as u64;
        r.refs += 1;
        if let Some(old) = last.insert(k, t) {
            r.hits += 1;
            order.remove(&(old, k));
        } else if last.len() > capacity {
            let (_, lru) = order.pop_first().expect("full");
            last.remove(&lru);
        }
        order.insert((t, k));
    }
    r
}

/// Replays `keys` through Belady's OPT with bypass: on a miss with the cache
/// full, the entry (the new key included) used furthest in the future is not kept.
pub fn opt(keys: &[u64], capacity: usize) -> SimResult {
    let capacity = capacity.max(1);
    let never = u64::MAX;
    let mut next_use = vec![never; keys.len()];
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for (t, &k) in keys.iter().enumerate().rev() {
        if let Some(n) = seen.insert(k, t as u64) {
            next_use[t] = n;
        }
    }
    // key -> its next use; (next use, key) ordered: the last is the one to drop.
    let mut cached: HashMap<u64, u64> = HashMap::with_capacity(capacity);
    let mut order: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut r = SimResult::default();
    for (t, &k) in keys.iter().enumerate() {
        r.refs += 1;
        let n = next_use[t];
        if let Some(old) = cached.get_mut(&k) {
            r.hits += 1;
            order.remove(&(*old, k));
            *old = n;
            order.insert((n, k));
            continue;
        }
        if n == never {
            continue; // never used again: bypass
        }
        if cached.len() >= capacity {
            let &(furthest, fk) = order.last().expect("full");
            if furthest <= n {
                continue; // the new key is needed later than anything cached
            }
            order.pop_last();
            cached.remove(&fk);
        }
        cached.insert(k, n);
        order.insert((n, k));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_and_opt_on_a_loop() {
        // A loop over 4 keys in a cache of 3: LRU always misses, OPT keeps 2 of 3.
        let keys: Vec<u64> = (0..40).map(|i| i % 4).collect();
        assert_eq!(lru(&keys, 3).hits, 0);
        let o = opt(&keys, 3);
        assert!(o.hits >= 24, "{o:?}");
        assert_eq!(lru(&keys, 4).hits, 36);
        assert_eq!(opt(&keys, 4).hits, 36);
    }

    #[test]
    fn wtinylfu_keeps_a_frequent_set_through_a_scan() {
        let mut sim = WTinyLfuSim::new(100, 1);
        // 50 hot keys, read often, interleaved with a scan of one-off keys.
        let mut keys = Vec::new();
        for round in 0..200u64 {
            keys.extend(0..50);
            keys.extend((0..150).map(|s| 1_000_000 + round * 150 + s));
        }
        for &k in &keys {
            sim.access(k);
        }
        let r = sim.result();
        // 200 distinct keys a round in a cache of 100: LRU keeps nothing, W-TinyLFU
        // keeps the hot set (at most 25% of references can hit).
        assert_eq!(lru(&keys, 100).hits, 0);
        assert!(r.hit_ratio() > 20.0, "{:.2}", r.hit_ratio());
        assert!(sim.policy_stats().rejected > 0);
    }

    /// shared/traces beside the repository (CI keeps a copy of shared/ beside the
    /// clone); None, with a note, if it is missing.
    fn trace(name: &str) -> Option<std::path::PathBuf> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/traces")
            .join(name);
        if p.exists() {
            Some(p)
        } else {
            println!("skipped: trace {} not found", p.display());
            None
        }
    }

    #[test]
    fn gli_trace_hit_ratios_match_the_references() {
        let Some(path) = trace("gli.trace") else {
            return;
        };
        let keys = read_trace(&path, TraceFormat::Lirs).unwrap();
        assert_eq!(keys.len(), 6015);
        // Exact references from shared/traces/README.md.
        assert_eq!(format!("{:.2}", lru(&keys, 1000).hit_ratio()), "11.21");
        assert_eq!(format!("{:.2}", opt(&keys, 1000).hit_ratio()), "53.15");
        assert_eq!(format!("{:.2}", opt(&keys, 500).hit_ratio()), "34.33");
        let w = wtinylfu(&keys, 1000).hit_ratio();
        assert!(w >= 50.0, "W-TinyLFU on gli at 1000: {w:.2}% < 50%");
        let w = wtinylfu(&keys, 500).hit_ratio();
        assert!(w >= 25.0, "W-TinyLFU on gli at 500: {w:.2}% (LRU: 0.95%)");
    }
}
