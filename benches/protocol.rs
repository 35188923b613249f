//! Parser throughput: the cost of turning buffered bytes into requests; and
//! the cost of the commonest reply, a `VALUE` block.

use corecache::protocol::{parse, reply, ParseLimits, Parsed};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const LIMITS: ParseLimits = ParseLimits {
    max_item_size: 1 << 20,
};

/// Parses every request in `buf`, as a connection does after one read.
fn parse_all(buf: &[u8]) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while let Parsed::Request { consumed, .. } = parse(&buf[pos..], &LIMITS) {
        pos += consumed;
        count += 1;
    }
    count
}

fn pipeline(requests: &[Vec<u8>], depth: usize) -> Vec<u8> {
    requests
        .iter()
        .cycle()
        .take(depth)
        .flatten()
        .copied()
        .collect()
}

fn bench_parser(c: &mut Criterion) {
    let value = vec![b'x'; 100];
    let mut set = b"set user:000042 0 300 100\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let get = b"get user:000042\r\n".to_vec();
    let multiget: Vec<u8> = {
        let keys: Vec<String> = (0..10).map(|i| format!("user:{i:06}")).collect();
        format!("get {}\r\n", keys.join(" ")).into_bytes()
    };

    let mut group = c.benchmark_group("parse");
    for (name, requests) in [
        ("get", vec![get.clone()]),
        ("set_100b", vec![set.clone()]),
        ("mix_1set_10get", {
            let mut v = vec![set.clone()];
            v.extend(std::iter::repeat_n(get.clone(), 10));
            v
        }),
        ("multiget_10", vec![multiget.clone()]),
        // Meta commands: the usual read (value, flags, TTL) and a store.
        ("meta_mg_vft", vec![b"mg user:000042 v f t\r\n".to_vec()]),
        ("meta_ms_100b", {
            let mut ms = b"ms user:000042 100 T300 F0\r\n".to_vec();
            ms.extend_from_slice(&value);
            ms.extend_from_slice(b"\r\n");
            vec![ms]
        }),
    ] {
        let buf = pipeline(&requests, 16);
        let n = parse_all(&buf);
        assert_eq!(n, 16);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{name}_pipeline16"), |b| {
            b.iter_batched_ref(|| buf.clone(), |buf| parse_all(buf), BatchSize::SmallInput)
        });
    }
    group.finish();
}

/// Sixteen `VALUE` blocks (14-byte key, 100-byte value), as a pipelined
/// batch of hits writes them: without client flags, and with.
fn bench_value_blocks(c: &mut Criterion) {
    let key = b"user:000000042";
    let value = vec![b'x'; 100];
    let mut group = c.benchmark_group("reply");
    group.throughput(Throughput::Elements(16));
    for (name, flags) in [("value_block", 0u32), ("value_block_with_flags", 12345)] {
        let mut out = Vec::with_capacity(1 << 16);
        group.bench_function(format!("{name}_x16"), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..16 {
                    reply::push_value(&mut out, black_box(key), black_box(flags), &value, None);
                }
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parser, bench_value_blocks);
criterion_main!(benches);
