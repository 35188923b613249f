//! `corecache-bench replay`: server-level hit ratio. Each target is started with
//! the same `-m` and `-t`, and a deterministic key sequence is replayed against it
//! cache-aside (get; on a miss, set the key with its value size) over one pipelined
//! connection. Both servers see the identical sequence, so the hit ratios differ
//! only by what each server keeps.
//!
//! Workloads are sized from the memory limit: `capacity` is an estimate of how many
//! items of the workload's mean value size fit in `-m` (mean + 100 bytes each, a
//! little under what either server spends per item), and every key space is a
//! multiple of it, so eviction, not the key space, decides the hit ratio.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::client::ReplyStream;
use crate::compare::{self, Server, Target};
use crate::parse_cpus;
use crate::proto::{self, Parsed};
use crate::workload::{Rng, ValueSize, Zipf};

/// Key ids of scan keys start here; no other part of a trace reaches it, and scan
/// ids only grow, so a scan key is never requested twice.
pub const SCAN_BASE: u64 = 100_000_000_000;
/// Keys are `r:` + the id zero-padded to this many digits (fixed width).
const KEY_DIGITS: usize = 12;
/// Bytes per item added to the mean value size for the capacity estimate.
const ITEM_OVERHEAD: u64 = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// zipf over 4 x capacity keys
    Skewed,
    /// `skewed`, and after every `capacity` requests a scan of capacity/2 keys never seen
    /// before or after
    Scan,
    /// 90%: cyclic over 1.25 x capacity keys; 10%: zipf over `capacity` other keys
    Loop,
    /// zipf over 4 x capacity keys whose popularity order is reshuffled every
    /// 2 x capacity requests
    Shift,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Skewed => "skewed",
            Kind::Scan => "scan",
            Kind::Loop => "loop",
            Kind::Shift => "shift",
        }
    }
}

/// Everything that decides a trace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceSpec {
    pub kind: Kind,
    pub requests: u64,
    /// Estimated items the cache holds; the key spaces are multiples of it.
    pub capacity: u64,
    pub zipf: f64,
    pub seed: u64,
}

impl TraceSpec {
    /// Keys of the zipf part (skewed, scan, shift).
    pub fn hot_keys(&self) -> u64 {
        4 * self.capacity
    }
    /// Keys the loop cycles over (ids `0..loop_keys()`).
    pub fn loop_keys(&self) -> u64 {
        self.capacity + self.capacity / 4
    }
    /// Skewed requests between two scans, and keys per scan.
    pub fn scan_period(&self) -> (u64, u64) {
        (self.capacity, (self.capacity / 2).max(1))
    }
    /// Requests per popularity phase of `shift`.
    pub fn shift_phase(&self) -> u64 {
        2 * self.capacity
    }

    /// The key ids, in request order.
    pub fn keys(&self) -> Vec<u64> {
        let c = self.capacity.max(1);
        let n = self.requests as usize;
        let mut rng = Rng::new(self.seed);
        let mut out = Vec::with_capacity(n);
        match self.kind {
            Kind::Skewed => {
                let z = Zipf::new(self.hot_keys(), self.zipf);
                out.extend((0..n).map(|_| z.sample(&mut rng) - 1));
            }
            Kind::Scan => {
                let z = Zipf::new(self.hot_keys(), self.zipf);
                let (period, scan) = self.scan_period();
                let mut next_scan = SCAN_BASE;
                'outer: loop {
                    for _ in 0..period {
                        if out.len() == n {
                            break 'outer;
                        }
                        out.push(z.sample(&mut rng) - 1);
                    }
                    for _ in 0..scan {
                        if out.len() == n {
                            break 'outer;
                        }
                        out.push(next_scan);
                        next_scan += 1;
                    }
                }
            }
            Kind::Loop => {
                let l = self.loop_keys();
                let z = Zipf::new(c, self.zipf);
                let mut pos = 0;
                for _ in 0..n {
                    if rng.below(10) == 0 {
                        out.push(l + z.sample(&mut rng) - 1);
                    } else {
                        out.push(pos);
                        pos = (pos + 1) % l;
                    }
                }
            }
            Kind::Shift => {
                let k = self.hot_keys();
                let z = Zipf::new(k, self.zipf);
                let mut order: Vec<u64> = (0..k).collect();
                for i in 0..n {
                    if i as u64 % self.shift_phase() == 0 {
                        // A fresh popularity order: rank r is key order[r - 1].
                        for j in (1..order.len()).rev() {
                            order.swap(j, rng.below(j as u64 + 1) as usize);
                        }
                    }
                    out.push(order[(z.sample(&mut rng) - 1) as usize]);
                }
            }
        }
        out
    }
}

/// The value size of key `id`: fixed, or uniform in the range, the same every time
/// the key is set.
pub fn value_len(id: u64, v: ValueSize, seed: u64) -> usize {
    if v.min == v.max {
        return v.min;
    }
    let mut h = Rng::new(id ^ seed.rotate_left(32));
    v.min + h.below((v.max - v.min + 1) as u64) as usize
}

/// Writes the key of `id`.
pub fn key(id: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(b"r:");
    let s = format!("{id:0KEY_DIGITS$}");
    out.extend_from_slice(s.as_bytes());
}

/// Writes `keys` as DIR/NAME.keys, one key per line.
fn write_trace(dir: &Path, name: &str, keys: &[u64]) -> Result<(), String> {
    let path = dir.join(format!("{name}.keys"));
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    fs::create_dir_all(dir).map_err(fail)?;
    let mut out = std::io::BufWriter::new(fs::File::create(&path).map_err(fail)?);
    let mut k = Vec::new();
    for &id in keys {
        key(id, &mut k);
        k.push(b'\n');
        out.write_all(&k).map_err(fail)?;
    }
    out.flush().map_err(fail)
}

/// Splits `keys` into pipelined batches of at most `max` requests, each ending
/// before a key that already occurs in it: every get in a batch is for a distinct
/// key, so a miss's set is sent before the key is asked for again, as a sequential
/// cache-aside client would.
pub fn batches(keys: &[u64], max: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen: HashSet<u64> = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if i - start == max || seen.contains(k) {
            out.push(start..i);
            start = i;
            seen.clear();
        }
        seen.insert(*k);
    }
    if start < keys.len() {
        out.push(start..keys.len());
    }
    out
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Targets, in order: corecache, memcached. The difference column is the first
    /// minus the second.
    #[arg(long, value_delimiter = ',', default_value = "corecache,memcached")]
    targets: Vec<String>,
    /// Memory limit (`-m`) given to every server, in MB.
    #[arg(long, default_value_t = 32)]
    memory_mb: u64,
    /// Server threads (`-t`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs the servers are pinned to.
    #[arg(long, default_value = "1", value_parser = parse_cpus)]
    server_cpus: ::std::vec::Vec<usize>, // full path: one value parsed to a list
    /// Requests (gets) per workload.
    #[arg(long, default_value_t = 300_000)]
    requests: u64,
    /// Workloads, each run with every value size.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "skewed,scan,loop,shift"
    )]
    workloads: Vec<Kind>,
    /// Value sizes in bytes: N (fixed) or MIN-MAX (uniform per key); each workload
    /// runs with each.
    #[arg(long, value_delimiter = ',', default_value = "800,50-1500")]
    value_sizes: Vec<ValueSize>,
    /// Zipf exponent of the skewed parts.
    #[arg(long, default_value_t = 0.9)]
    zipf: f64,
    /// Seed of the key sequences and value sizes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most gets per pipelined batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value = "target/release/corecache")]
    corecache_bin: PathBuf,
    #[arg(long, default_value = "memcached")]
    memcached_bin: PathBuf,
    /// Output directory (created): replay.md, replay.json, logs/.
    #[arg(long, default_value = "replay-results")]
    out: PathBuf,
    /// First port to try; each server start takes the next free one.
    #[arg(long, default_value_t = 31400)]
    base_port: u16,
    /// Also write each workload's key sequence to DIR/WORKLOAD-VALUES.keys (one key
    /// per line), for `corecache-bench policy --format keys`: the same sequence through
    /// the policy simulator, without sockets.
    #[arg(long)]
    write_traces: Option<PathBuf>,
}

/// One replay against one server.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub target: String,
    pub gets: u64,
    pub hits: u64,
    pub sets: u64,
    /// Sets not answered `STORED`.
    pub set_errors: u64,
    /// Error replies to gets.
    pub get_errors: u64,
    /// `curr_items` and `evictions` from `stats` after the replay.
    pub items_held: Option<u64>,
    pub evictions: Option<u64>,
    pub version: Option<String>,
    pub seconds: f64,
    /// `stats` then `stats slabs` after the replay (written to logs/LABEL.stats).
    #[serde(skip)]
    pub final_stats: Vec<(String, String)>,
}

impl Outcome {
    pub fn hit_ratio(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.gets as f64
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct Row {
    workload: &'static str,
    values: String,
    spec: TraceSpec,
    distinct_keys: u64,
    /// Bytes of the values of all distinct keys, in MB.
    distinct_mb: f64,
    memory_mb: u64,
    results: Vec<Outcome>,
}

type Parsed2<T> = Result<Option<(usize, T)>, String>;

fn lift(p: Parsed) -> Parsed2<proto::Reply> {
    p.map_err(|e| e.0)
}

/// Parses a `stats` reply (up to `END`) into name/value pairs.
fn parse_stats(buf: &[u8]) -> Parsed2<Vec<(String, String)>> {
    let mut pos = 0;
    let mut stats = Vec::new();
    while let Some(eol) = buf[pos..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| pos + i)
    {
        let line = String::from_utf8_lossy(&buf[pos..eol]);
        if line == "END" {
            return Ok(Some((eol + 2, stats)));
        }
        let mut f = line.splitn(3, ' ');
        match (f.next(), f.next(), f.next()) {
            (Some("STAT"), Some(k), Some(v)) => stats.push((k.to_string(), v.to_string())),
            _ => return Err(format!("unexpected line in stats reply: {line:?}")),
        }
        pos = eol + 2;
    }
    Ok(None)
}

/// Replays `keys` cache-aside against `addr`.
pub fn replay(
    addr: SocketAddr,
    keys: &[u64],
    values: ValueSize,
    seed: u64,
    batch: usize,
) -> io::Result<Outcome> {
    let start = Instant::now();
    let mut c = ReplyStream::connect(addr, Duration::from_secs(30), 256 * 1024)?;
    let mut rng = Rng::new(seed ^ 0x5eed);
    let value_bytes: Vec<u8> = (0..values.max)
        .map(|_| b'a' + rng.below(26) as u8)
        .collect();
    let mut o = Outcome::default();
    let mut out = Vec::new();
    let mut k = Vec::new();
    let mut missed = Vec::new();
    for r in batches(keys, batch) {
        let ids = &keys[r];
        out.clear();
        for &id in ids {
            key(id, &mut k);
            proto::mc_get(&mut out, [k.as_slice()]);
        }
        c.stream.write_all(&out)?;
        missed.clear();
        for &id in ids {
            key(id, &mut k);
            let reply = c.reply(|b| lift(proto::mc_parse_get(b, &k, k.len())))?;
            if reply.key_mismatch {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "get reply for another key",
                ));
            }
            o.gets += 1;
            o.get_errors += reply.error as u64;
            if reply.hits > 0 {
                o.hits += 1;
            } else {
                missed.push(id);
            }
        }
        if missed.is_empty() {
            continue;
        }
        out.clear();
        for &id in &missed {
            key(id, &mut k);
            proto::mc_set(&mut out, &k, &value_bytes[..value_len(id, values, seed)]);
        }
        c.stream.write_all(&out)?;
        for _ in &missed {
            let reply = c.reply(|b| lift(proto::mc_parse_store(b)))?;
            o.sets += 1;
            o.set_errors += (!reply.stored) as u64;
        }
    }
    o.seconds = start.elapsed().as_secs_f64();
    c.stream.write_all(b"stats\r\n")?;
    let stats = c.reply(parse_stats)?;
    let get = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    o.items_held = get("curr_items").and_then(|v| v.parse().ok());
    o.evictions = get("evictions").and_then(|v| v.parse().ok());
    o.version = get("version");
    c.stream.write_all(b"stats slabs\r\n")?;
    let slabs = c.reply(parse_stats)?;
    o.final_stats = stats;
    o.final_stats.extend(slabs);
    Ok(o)
}

fn targets(a: &ReplayArgs) -> Vec<Result<Target, String>> {
    a.targets
        .iter()
        .map(|name| match name.as_str() {
            "corecache" => compare::corecache_target(&a.corecache_bin, a.memory_mb, a.threads),
            "memcached" => compare::memcached_target(&a.memcached_bin, a.memory_mb, a.threads),
            other => Err(format!(
                "skipping {other}: unknown replay target (corecache, memcached)"
            )),
        })
        .collect()
}

pub fn run(a: ReplayArgs) -> Result<(), String> {
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let runnable = compare::runnable(targets(&a))?;
    fs::create_dir_all(a.out.join("logs")).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut port = a.base_port;
    for &kind in &a.workloads {
        for &values in &a.value_sizes {
            let mean = (values.min + values.max) as u64 / 2;
            let spec = TraceSpec {
                kind,
                requests: a.requests,
                capacity: (a.memory_mb << 20) / (mean + ITEM_OVERHEAD),
                zipf: a.zipf,
                seed: a.seed,
            };
            let keys = spec.keys();
            if let Some(dir) = &a.write_traces {
                write_trace(dir, &format!("{}-{values}", kind.name()), &keys)?;
            }
            let distinct: HashSet<u64> = keys.iter().copied().collect();
            let distinct_bytes: u64 = distinct
                .iter()
                .map(|&id| value_len(id, values, a.seed) as u64)
                .sum();
            let mut row = Row {
                workload: kind.name(),
                values: if values.min == values.max {
                    format!("{values} fixed")
                } else {
                    format!("{values} mixed")
                },
                spec,
                distinct_keys: distinct.len() as u64,
                distinct_mb: distinct_bytes as f64 / (1u64 << 20) as f64,
                memory_mb: a.memory_mb,
                results: Vec::new(),
            };
            for t in &runnable {
                port = compare::next_free_port(port.wrapping_add(1));
                let label = format!("{}-{}-{}", t.name, kind.name(), values);
                let log = a.out.join("logs").join(format!("{label}.log"));
                let stats_file = a.out.join("logs").join(format!("{label}.stats"));
                eprintln!("{label}: starting on port {port}");
                let server = match Server::start(t, port, &a.server_cpus, &log) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        problems.push(e);
                        continue;
                    }
                };
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                match replay(addr, &keys, values, a.seed, a.batch) {
                    Ok(mut o) => {
                        o.target = t.name.clone();
                        let lines: String = o
                            .final_stats
                            .iter()
                            .map(|(k, v)| format!("{k} {v}\n"))
                            .collect();
                        fs::write(&stats_file, lines)
                            .map_err(|e| format!("{}: {e}", stats_file.display()))?;
                        eprintln!(
                            "{label}: hit ratio {:.2}% ({} gets, {} sets, {} items held) in {:.1} s",
                            o.hit_ratio(),
                            o.gets,
                            o.sets,
                            o.items_held.map_or("?".into(), |n| n.to_string()),
                            o.seconds
                        );
                        if o.set_errors + o.get_errors > 0 {
                            problems.push(format!(
                                "{label}: {} sets not stored, {} get errors",
                                o.set_errors, o.get_errors
                            ));
                        }
                        if kind == Kind::Loop
                            && o.items_held.is_some_and(|n| n >= row.spec.loop_keys())
                        {
                            problems.push(format!(
                                "{label}: the server held {} items, not fewer than the loop's {} keys",
                                o.items_held.unwrap_or(0),
                                row.spec.loop_keys()
                            ));
                        }
                        row.results.push(o);
                    }
                    Err(e) => {
                        let e = format!("{label}: {e}");
                        eprintln!("error: {e}");
                        problems.push(e);
                    }
                }
                drop(server);
            }
            rows.push(row);
        }
    }

    let names: Vec<String> = runnable.iter().map(|t| t.name.clone()).collect();
    let versions: Vec<String> = names
        .iter()
        .filter_map(|n| {
            rows.iter()
                .flat_map(|r| &r.results)
                .find(|o| &o.target == n)
                .and_then(|o| o.version.as_ref().map(|v| format!("{n} {v}")))
        })
        .collect();
    let header = format!(
        "Cache-aside replay (get; on a miss, set), one connection, batches of at most {} gets \
         then the sets for their misses. Every server: -m {} -t {}, pinned to CPUs {:?}, a fresh \
         server per row. zipf {}, seed {}. {}. Kernel {}.",
        a.batch,
        a.memory_mb,
        a.threads,
        a.server_cpus,
        a.zipf,
        a.seed,
        versions.join(", "),
        compare::kernel()
    );
    let md = markdown(&rows, &names, &header);
    let json = serde_json::json!({
        "setup": {
            "memory_mb": a.memory_mb,
            "threads": a.threads,
            "server_cpus": a.server_cpus,
            "batch": a.batch,
            "seed": a.seed,
            "zipf": a.zipf,
            "kernel": compare::kernel(),
        },
        "rows": rows,
        "problems": problems,
    });
    let write = |name: &str, body: &str| -> Result<(), String> {
        let p = a.out.join(name);
        fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("replay.md", &md)?;
    write("replay.json", &serde_json::to_string_pretty(&json).unwrap())?;
    println!("{md}");
    for p in &problems {
        println!("problem: {p}");
    }
    println!("wrote {}/replay.md, replay.json", a.out.display());
    Ok(())
}

fn markdown(rows: &[Row], names: &[String], header: &str) -> String {
    let mut s = format!("{header}\n\n| workload | values (B) | requests | distinct keys | distinct data (MB) | -m (MB) |");
    for n in names {
        s += &format!(" {n} hit % |");
    }
    if names.len() >= 2 {
        s += &format!(" {} - {} (points) |", names[0], names[1]);
    }
    s += " items held at end |\n|---|---|---|---|---|---|";
    s += &"---|".repeat(names.len() + (names.len() >= 2) as usize + 1);
    s.push('\n');
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {} | {:.1} | {} |",
            r.workload, r.values, r.spec.requests, r.distinct_keys, r.distinct_mb, r.memory_mb
        );
        let ratio = |n: &String| {
            r.results
                .iter()
                .find(|o| &o.target == n)
                .map(|o| o.hit_ratio())
        };
        for n in names {
            s += &ratio(n).map_or(" - |".into(), |h| format!(" {h:.2} |"));
        }
        if names.len() >= 2 {
            s += &match (ratio(&names[0]), ratio(&names[1])) {
                (Some(a), Some(b)) => format!(" {:+.2} |", a - b),
                _ => " - |".into(),
            };
        }
        let held: Vec<String> = names
            .iter()
            .map(|n| {
                r.results
                    .iter()
                    .find(|o| &o.target == n)
                    .and_then(|o| o.items_held)
                    .map_or("-".into(), |h| h.to_string())
            })
            .collect();
        s += &format!(" {} |\n", held.join(" / "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(kind: Kind) -> TraceSpec {
        TraceSpec {
            kind,
            requests: 60_000,
            capacity: 2_000,
            zipf: 0.9,
            seed: 7,
        }
    }

    #[test]
    fn same_seed_same_sequence_other_seed_other_sequence() {
        for kind in [Kind::Skewed, Kind::Scan, Kind::Loop, Kind::Shift] {
            let s = spec(kind);
            let a = s.keys();
            assert_eq!(a.len(), 60_000);
            assert_eq!(a, s.keys(), "{kind:?}");
            let b = TraceSpec { seed: 8, ..s }.keys();
            assert_ne!(a, b, "{kind:?}");
        }
        let v: ValueSize = "50-1500".parse().unwrap();
        for id in 0..1000 {
            let l = value_len(id, v, 3);
            assert_eq!(l, value_len(id, v, 3));
            assert!((50..=1500).contains(&l));
        }
        assert_eq!(value_len(5, "800".parse().unwrap(), 3), 800);
    }

    #[test]
    fn skewed_stays_in_its_key_space_and_is_skewed() {
        let s = spec(Kind::Skewed);
        let keys = s.keys();
        assert!(keys.iter().all(|&k| k < s.hot_keys()));
        // zipf: low ids are hot.
        let head = keys.iter().filter(|&&k| k < 80).count();
        assert!(head > keys.len() / 5, "head share {head}");
    }

    #[test]
    fn scan_keys_never_repeat() {
        let s = spec(Kind::Scan);
        let keys = s.keys();
        let scans: Vec<u64> = keys.iter().copied().filter(|&k| k >= SCAN_BASE).collect();
        let distinct: HashSet<u64> = scans.iter().copied().collect();
        assert_eq!(distinct.len(), scans.len());
        let (period, len) = s.scan_period();
        // 60k requests = 20 rounds of 2,000 skewed + 1,000 scan keys.
        assert_eq!(scans.len() as u64, 60_000 / (period + len) * len);
        assert!(keys.iter().all(|&k| k >= SCAN_BASE || k < s.hot_keys()));
        // A scan is a contiguous run of `len` keys after `period` skewed ones.
        assert!(keys[..period as usize].iter().all(|&k| k < SCAN_BASE));
        assert!(keys[period as usize..(period + len) as usize]
            .iter()
            .all(|&k| k >= SCAN_BASE));
    }

    #[test]
    fn loop_cycles_over_exactly_its_set() {
        let s = spec(Kind::Loop);
        let l = s.loop_keys();
        assert!(l > s.capacity);
        let keys = s.keys();
        let looped: Vec<u64> = keys.iter().copied().filter(|&k| k < l).collect();
        // In order, wrapping around: 0, 1, ..., l-1, 0, 1, ...
        for (i, &k) in looped.iter().enumerate() {
            assert_eq!(k, i as u64 % l);
        }
        assert!(looped.len() as u64 > 3 * l);
        let set: HashSet<u64> = looped.iter().copied().collect();
        assert_eq!(set.len() as u64, l);
        // The rest (~10%) is skewed traffic over `capacity` other keys.
        let other = keys.len() - looped.len();
        assert!((5_000..7_000).contains(&other), "other {other}");
        assert!(keys.iter().all(|&k| k < l + s.capacity));
    }

    #[test]
    fn shift_moves_the_hot_set() {
        let s = spec(Kind::Shift);
        let keys = s.keys();
        let phase = s.shift_phase() as usize;
        let top = |part: &[u64]| -> HashSet<u64> {
            let mut counts: HashMap<u64, u32> = HashMap::new();
            for &k in part {
                *counts.entry(k).or_default() += 1;
            }
            let mut v: Vec<(u64, u32)> = counts.into_iter().collect();
            v.sort_by_key(|&(k, c)| (std::cmp::Reverse(c), k));
            v.iter().take(50).map(|&(k, _)| k).collect()
        };
        let p0 = &keys[..phase];
        let p1 = &keys[phase..2 * phase];
        // Within a phase the hot set is stable ...
        let halves = top(&p0[..phase / 2])
            .intersection(&top(&p0[phase / 2..]))
            .count();
        assert!(halves >= 20, "{halves}");
        // ... and the next phase's hot set is other keys.
        let across = top(p0).intersection(&top(p1)).count();
        assert!(across <= 5, "{across}");
        assert!(keys.iter().all(|&k| k < s.hot_keys()));
    }

    #[test]
    fn batches_end_before_a_repeated_key() {
        let keys = [1, 2, 3, 2, 4, 5, 6, 7, 8, 1];
        let b = batches(&keys, 4);
        assert_eq!(b, vec![0..3, 3..7, 7..10]);
        for r in &b {
            let set: HashSet<_> = keys[r.clone()].iter().collect();
            assert_eq!(set.len(), r.len());
        }
        assert_eq!(batches(&[], 4), vec![]);
        assert_eq!(batches(&[9, 9, 9], 64), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn keys_have_fixed_width_and_stats_parse() {
        let mut k = Vec::new();
        key(42, &mut k);
        assert_eq!(k, b"r:000000000042");
        key(SCAN_BASE + 3, &mut k);
        assert_eq!(k.len(), 14);
        let reply = b"STAT pid 1\r\nSTAT version 1.6.18\r\nEND\r\nrest";
        let (n, stats) = parse_stats(reply).unwrap().unwrap();
        assert_eq!(n, reply.len() - 4);
        assert_eq!(stats[1], ("version".to_string(), "1.6.18".to_string()));
        assert_eq!(parse_stats(b"STAT pid 1\r\nST").unwrap(), None);
    }
}
