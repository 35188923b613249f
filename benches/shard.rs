//! Shard hot paths: get hit, set over existing keys, and set into a full shard
//! (every set evicts).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use corecache::keyhash::key_hash;
use corecache::storage::{Shard, ShardConfig, StoreMode, StoreResult};

const NOW: u32 = 1_700_000_000;
const MIB: usize = 1 << 20;

fn keys(n: usize) -> Vec<(Vec<u8>, u64)> {
    (0..n)
        .map(|i| {
            let k = format!("key:{i:010}").into_bytes();
            let h = key_hash(&k);
            (k, h)
        })
        .collect()
}

fn filled(memory: usize, keys: &[(Vec<u8>, u64)], value: &[u8]) -> Shard {
    filled_with(ShardConfig::new(memory, MIB), keys, value)
}

fn filled_with(config: ShardConfig, keys: &[(Vec<u8>, u64)], value: &[u8]) -> Shard {
    let mut s = Shard::new(config).expect("shard");
    for (k, h) in keys {
        let r = s.store(StoreMode::Set, k, *h, 0, 0, value, NOW);
        assert_eq!(r, StoreResult::Stored);
    }
    s
}

/// Requests per pipelined read in the batched bench (the compare runs' depth).
const BATCH: usize = 16;

/// 0..n in a fixed pseudo-random order (xorshift; no dependency for a shuffle).
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn bench(c: &mut Criterion) {
    let value = [b'v'; 100];
    let mut g = c.benchmark_group("shard");
    g.throughput(Throughput::Elements(1));

    let ks = keys(100_000);
    let mut s = filled(256 * MIB, &ks, &value);
    let mut i = 0;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            let (k, h) = &ks[i % ks.len()];
            i += 1;
            black_box(s.get(k, *h, NOW).map(|v| v.value.len()))
        })
    });
    g.bench_function("set", |b| {
        b.iter(|| {
            let (k, h) = &ks[i % ks.len()];
            i += 1;
            black_box(s.store(StoreMode::Set, k, *h, 0, 0, &value, NOW))
        })
    });

    // The server's pipelined path: 16 gets of keys in random order, their
    // buckets and items prefetched first, the keys laid out one after another
    // like a receive buffer (reading them is sequential, so only the shard's
    // own memory accesses miss). Over all 100k items (13.6 MB of 136-byte chunks,
    // far beyond L2; 17.6 MB of 176-byte chunks before the header forms of
    // 2c1297c), with and without huge pages for the arena (-L); and over 1000 of
    // them (136 KB, cached): the instructions alone, without the misses.
    let key_len = ks[0].0.len();
    assert!(ks.iter().all(|(k, _)| k.len() == key_len));
    for (name, huge_pages, hot) in [
        ("get_hit_random_batch16", false, ks.len()),
        ("get_hit_random_batch16_huge_pages", true, ks.len()),
        ("get_hit_random_batch16_cached", false, 1000),
    ] {
        let requests: Vec<&(Vec<u8>, u64)> = shuffled(ks.len())
            .into_iter()
            .map(|j| &ks[j % hot])
            .collect();
        let keys_in_order: Vec<u8> = requests.iter().flat_map(|(k, _)| k.clone()).collect();
        let hashes_in_order: Vec<u64> = requests.iter().map(|(_, h)| *h).collect();
        let mut config = ShardConfig::new(256 * MIB, MIB);
        config.huge_pages = huge_pages;
        let mut s = filled_with(config, &ks, &value);
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut at = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                if at + BATCH > hashes_in_order.len() {
                    at = 0;
                }
                let hashes = &hashes_in_order[at..at + BATCH];
                let keys = keys_in_order[at * key_len..(at + BATCH) * key_len].chunks(key_len);
                s.prefetch(hashes.iter().copied());
                let mut bytes = 0;
                for (k, h) in keys.zip(hashes) {
                    bytes += s.get(k, *h, NOW).map_or(0, |v| v.value.len());
                }
                at += BATCH;
                black_box(bytes)
            })
        });
        g.throughput(Throughput::Elements(1));
    }

    // 4 MiB holds ~31k items of this size: 200k rotating keys keep every set
    // evicting the LRU tail.
    let ks = keys(200_000);
    let mut s = filled(4 * MIB + 4096, &ks, &value);
    assert!(s.stats().evictions > 0);
    g.bench_function("set_with_eviction", |b| {
        b.iter(|| {
            let (k, h) = &ks[i % ks.len()];
            i += 1;
            black_box(s.store(StoreMode::Set, k, *h, 0, 0, &value, NOW))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
