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
    let mut s = Shard::new(ShardConfig::new(memory, MIB)).expect("shard");
    for (k, h) in keys {
        let r = s.store(StoreMode::Set, k, *h, 0, 0, value, NOW);
        assert_eq!(r, StoreResult::Stored);
    }
    s
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

    // 4 MiB holds ~24k items of this size: 200k rotating keys keep every set
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
