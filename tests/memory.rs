//! Resident memory of the real binary stays within -m plus the documented fixed
//! overhead, whatever the mix of value sizes (DESIGN.md, "Memory bound").

mod common;
use common::*;

/// The fixed overhead is documented in docs/architecture.md ("Memory"): each
/// core's receive buffers (at most 4 MiB: touched in ring order, so all that
/// were provided are resident once traffic has cycled through them) and the shard's index, TTL heap and sketch
/// (about 1.2 MiB for this mix, `Shard::heap_bytes`), plus connection buffers.
#[test]
fn resident_memory_stays_under_the_limit_across_all_size_classes() {
    if skip_unless_corecache("VmRSS bound") {
        return;
    }
    const MB: u64 = 1 << 20;
    let limit_mb = 16;
    let s = Server::builder().args(&["-m", "16", "-t", "1"]).start();
    let mut c = s.client();
    c.expect_version();
    let base = vmrss_bytes(s.pid());
    // Values from 1 byte to 512 KiB, small to large and back, until 3x -m is written.
    let sizes: Vec<usize> = (0..70)
        .map(|k| (1.2f64.powi(k) as usize).min(512 << 10))
        .collect();
    let mut written = 0u64;
    let mut i = 0;
    while written < 3 * limit_mb * MB {
        for &len in sizes.iter().chain(sizes.iter().rev()) {
            let v = vec![b'a' + (i % 26) as u8; len];
            c.set(&format!("k{i}"), &v);
            written += len as u64;
            i += 1;
        }
    }
    c.expect_version();
    let grown = vmrss_bytes(s.pid()).saturating_sub(base);
    // One core: at most 4 MiB of receive buffers, plus 2 MiB for the shard's index, heap
    // and sketch (at most 30 bytes per 48-byte chunk the limit can hold, see
    // storage/mod.rs "Memory"), connection buffers and allocator slack.
    let bound = limit_mb * MB + 4 * MB + 2 * MB;
    assert!(
        grown <= bound,
        "VmRSS grew by {grown} bytes after writing {written} bytes at -m {limit_mb}"
    );
    println!("VmRSS grew {grown} bytes (limit {limit_mb} MiB) after {written} bytes written");
}

/// The memory figure of docs/benchmarks.md ("Memory per item"), as a test: a
/// million items of 14-byte keys and 100-byte values at `-m 1024` grow the
/// server's resident memory by at most 150 bytes each (chunk, index slot,
/// sketch counters). memcached 1.6.18 takes about 198-202 and Redis about 192
/// on the same load.
#[test]
fn a_million_small_items_cost_at_most_150_bytes_each() {
    if skip_unless_corecache("memory per item") {
        return;
    }
    const N: usize = 1_000_000;
    let s = Server::builder().args(&["-m", "1024", "-t", "1"]).start();
    let mut c = s.client();
    c.expect_version();
    let base = vmrss_bytes(s.pid());
    let value = [b'v'; 100];
    let mut batch = Vec::with_capacity(1000 * 140);
    for i in 0..N {
        batch.extend_from_slice(format!("set key:{i:010} 0 0 100 noreply\r\n").as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
        if (i + 1) % 1000 == 0 {
            c.send(&batch);
            batch.clear();
        }
    }
    c.expect_version();
    let grown = vmrss_bytes(s.pid()).saturating_sub(base);
    let per_item = grown as f64 / N as f64;
    println!("VmRSS grew {grown} bytes for {N} items: {per_item:.1} bytes/item");
    // Every item is there: the figure is not bought by evicting.
    assert_eq!(c.stat("curr_items"), N as u64);
    assert!(per_item <= 150.0, "{per_item:.1} bytes per item");
}

/// `-L` (memcached's large pages): the item arena is backed by transparent huge
/// pages where the kernel allows them, and the server works as without it.
#[test]
fn large_pages_back_the_arena_with_huge_pages() {
    let s = Server::builder()
        .args(&["-L", "-m", "64", "-t", "1"])
        .start();
    let mut c = s.client();
    let value = vec![b'h'; 1000];
    for i in 0..20_000 {
        c.set(&format!("k{i}"), &value);
    }
    for i in (0..20_000).step_by(997) {
        c.expect(
            format!("get k{i}\r\n"),
            format!("VALUE k{i} 0 1000\r\n{}\r\nEND\r\n", "h".repeat(1000)),
        );
    }
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if is_memcached() || thp.is_empty() || thp.contains("[never]") {
        println!("huge pages not checked (THP: {thp:?})");
        return;
    }
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", s.pid())).unwrap();
    let huge_kb: u64 = smaps
        .lines()
        .filter_map(|l| l.strip_prefix("AnonHugePages:"))
        .map(|v| {
            v.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    // 20 MB of items: at least a few 2 MiB pages of the arena.
    assert!(huge_kb >= 4096, "AnonHugePages {huge_kb} kB with -L");
}
