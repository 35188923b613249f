//! The W-TinyLFU frequency sketch: increment and estimate on a sketch sized for
//! a cache of a million items (8 MiB of counters, 1 MiB of doorkeeper: past L2,
//! as in a real shard), with a million distinct keys, so the figure includes the
//! cache misses a shard pays.

use corecache::keyhash::key_hash;
use corecache::storage::sketch::Sketch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CAPACITY: usize = 1 << 20;
const KEYS: usize = CAPACITY;

fn bench_sketch(c: &mut Criterion) {
    let hashes: Vec<u64> = (0..KEYS)
        .map(|i| key_hash(format!("key:{i:010}").as_bytes()).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut sketch = Sketch::new(CAPACITY);
    let mut group = c.benchmark_group("sketch");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("increment_1M_capacity", |b| {
        b.iter(|| {
            for &h in &hashes {
                sketch.increment(h);
            }
        })
    });
    group.bench_function("frequency_1M_capacity", |b| {
        b.iter(|| {
            hashes
                .iter()
                .map(|&h| sketch.frequency(h) as u64)
                .sum::<u64>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_sketch);
criterion_main!(benches);
