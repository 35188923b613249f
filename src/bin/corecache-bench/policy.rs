//! `corecache-bench policy`: hit ratios of eviction policies on a trace, with the
//! shard's own W-TinyLFU code (`corecache::storage::sim`), plain LRU and Belady's
//! OPT (bypass allowed) as the yardstick.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use corecache::storage::sim::{self, TraceFormat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// ARC `.lis`: start_block n_blocks ignore request_no
    Lis,
    /// LIRS: one decimal key per line
    Lirs,
    /// one key per line (any text)
    Keys,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    Wtinylfu,
    Lru,
    Opt,
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Trace file.
    #[arg(long)]
    trace: PathBuf,
    /// Trace format.
    #[arg(long, value_enum)]
    format: Format,
    /// Cache size in entries; several with commas (e.g. 500,1000,2000).
    #[arg(long, value_delimiter = ',', required = true)]
    capacity: Vec<usize>,
    /// Policies to run; several with commas.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "wtinylfu")]
    policy: Vec<PolicyKind>,
}

pub fn run(a: PolicyArgs) -> Result<(), String> {
    let format = match a.format {
        Format::Lis => TraceFormat::Lis,
        Format::Lirs => TraceFormat::Lirs,
        Format::Keys => TraceFormat::Keys,
    };
    let keys =
        sim::read_trace(&a.trace, format).map_err(|e| format!("{}: {e}", a.trace.display()))?;
    let name = a
        .trace
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("trace {name}: {} references", keys.len());
    println!("| trace | capacity | policy | hit ratio % | hits | seconds |");
    println!("|---|---|---|---|---|---|");
    for &cap in &a.capacity {
        for &p in &a.policy {
            let start = Instant::now();
            let r = match p {
                PolicyKind::Wtinylfu => sim::wtinylfu(&keys, cap),
                PolicyKind::Lru => sim::lru(&keys, cap),
                PolicyKind::Opt => sim::opt(&keys, cap),
            };
            println!(
                "| {name} | {cap} | {p:?} | {:.2} | {} | {:.2} |",
                r.hit_ratio(),
                r.hits,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
