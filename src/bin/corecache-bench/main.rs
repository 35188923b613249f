//! corecache-bench: load generator for memcached-text and Redis (RESP2) servers,
//! and side-by-side comparisons of corecache, memcached, redis-server and null
//! servers. See docs/benchmarks.md for the method.
//!
//! - `run`: one workload against one already running server.
//! - `ab`: two builds of one server alternated round by round: server CPU per
//!   request of each, user and kernel apart, and the rounds' ratios.
//! - `compare`: starts each server itself (same memory, same pinned CPUs,
//!   persistence off), runs every workload at every pipeline depth against it,
//!   and writes a markdown table, JSON and SVG charts.
//! - `policy`: replays a cache trace through the shard's eviction policy (and LRU,
//!   OPT) and prints hit ratios.
//! - `replay`: starts each server itself with the same `-m`, replays the same
//!   cache-aside key sequences (skewed, scan, loop, shift) against it and compares
//!   hit ratios.

mod ab;
mod client;
mod compare;
mod cpu;
mod engine;
mod policy;
mod proto;
mod recorder;
mod replay;
mod report;
mod workload;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::proto::Protocol;
use crate::report::RunResult;
use crate::workload::{KeyDist, Ratio, ValueSize, Workload};

#[derive(Parser)]
#[command(
    name = "corecache-bench",
    version,
    about = "Load generator and server comparison for corecache"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one workload against an already running server.
    Run(RunArgs),
    /// Start corecache, memcached, redis-server and null servers in turn and
    /// compare them on the same workloads.
    Compare(compare::CompareArgs),
    /// Start two builds of a server in alternated rounds and compare what a
    /// request costs each in server CPU time.
    Ab(ab::AbArgs),
    /// Hit ratio of W-TinyLFU (the shard's own policy code), LRU or OPT on a trace.
    Policy(policy::PolicyArgs),
    /// Start corecache and memcached with the same -m in turn and compare their hit
    /// ratios on the same cache-aside key sequences.
    Replay(replay::ReplayArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RunTarget {
    /// memcached text protocol
    Memcached,
    /// memcached text protocol (same as memcached)
    Corecache,
    /// Redis RESP2
    Redis,
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "memcached")]
    target: RunTarget,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Default: 11211 (memcached, corecache) or 6379 (redis).
    #[arg(long)]
    port: Option<u16>,
    /// Workload profile: default, multiget10, seed.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Server process to charge CPU time to (utime+stime from /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the set-then-get correctness probe (needed for servers with canned replies).
    #[arg(long)]
    no_probe: bool,
    /// Smart-client routing for corecache started with `--core-ports BASE -t CORES`:
    /// BASE:CORES. Each connection goes to one core's port and asks only for keys
    /// that core owns, so no request is forwarded between cores (`--port` is still
    /// used for the probe and the prefill).
    #[arg(long, value_parser = parse_core_ports)]
    core_ports: Option<engine::CoreRouting>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
}

/// Overrides of a profile's settings.
#[derive(Args, Clone, Debug, Default)]
pub struct WorkloadArgs {
    /// Connections in total (spread over the client threads).
    #[arg(long)]
    conns: Option<usize>,
    /// SETS:GETS, e.g. 1:10.
    #[arg(long)]
    ratio: Option<Ratio>,
    /// Key space size.
    #[arg(long)]
    keys: Option<u64>,
    /// Key distribution: uniform | zipf[:EXP] | hotspot[:KEYFRAC:OPFRAC].
    #[arg(long)]
    dist: Option<KeyDist>,
    /// Value size in bytes: N or MIN-MAX.
    #[arg(long)]
    value_size: Option<ValueSize>,
    /// Keys per get (multi-get width).
    #[arg(long)]
    multiget: Option<usize>,
    /// Fraction of the key space to write before the run (0 = none).
    #[arg(long)]
    prefill: Option<f64>,
    /// Cache-aside: set every key a get missed.
    #[arg(long)]
    cache_aside: Option<bool>,
    /// Key prefix.
    #[arg(long)]
    key_prefix: Option<String>,
}

impl WorkloadArgs {
    pub fn apply(&self, mut wl: Workload) -> Workload {
        if let Some(v) = self.conns {
            wl.conns = v;
        }
        if let Some(v) = self.ratio {
            wl.ratio = v;
        }
        if let Some(v) = self.keys {
            wl.keys = v.max(1);
        }
        if let Some(v) = &self.dist {
            wl.dist = v.clone();
        }
        if let Some(v) = self.value_size {
            wl.value = v;
        }
        if let Some(v) = self.multiget {
            wl.multiget = v.max(1);
        }
        if let Some(v) = self.prefill {
            wl.prefill = v;
        }
        if let Some(v) = self.cache_aside {
            wl.cache_aside = v;
        }
        if let Some(v) = &self.key_prefix {
            wl.key_prefix = v.clone();
        }
        wl
    }
}

/// How long and from where load is generated.
#[derive(Args, Clone, Debug)]
pub struct LoadArgs {
    /// Measured seconds per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Warm-up seconds before measuring (load runs, nothing is recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// CPUs for the load threads, one thread per CPU: e.g. 0 or 0,2 or 2-3.
    #[arg(long, default_value = "0", value_parser = parse_cpus)]
    client_cpus: ::std::vec::Vec<usize>, // full path: one value parsed to a list, not repeated values
    /// Open loop at this total request rate (requests/s); latency is then measured
    /// from each request's scheduled send time. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: Poisson arrivals instead of evenly spaced ones.
    #[arg(long)]
    poisson: bool,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl LoadArgs {
    pub fn mode(&self) -> String {
        match self.rate {
            None => "closed".into(),
            Some(r) => format!(
                "open@{r:.0}/s{}",
                if self.poisson { " poisson" } else { "" }
            ),
        }
    }
}

/// `BASE:CORES` of `--core-ports`.
fn parse_core_ports(s: &str) -> Result<engine::CoreRouting, String> {
    let (base, cores) = s
        .split_once(':')
        .ok_or_else(|| format!("{s}: expected BASE:CORES"))?;
    let base_port: u16 = base.parse().map_err(|e| format!("{s}: port: {e}"))?;
    let cores: usize = cores.parse().map_err(|e| format!("{s}: cores: {e}"))?;
    if cores == 0 || base_port as usize + cores > 65536 {
        return Err(format!("{s}: cores must be 1 or more, ports at most 65535"));
    }
    Ok(engine::CoreRouting { base_port, cores })
}

/// Parses a CPU list like `0`, `0,2`, `1-3`, `0,2-3`.
pub fn parse_cpus(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let num = |x: &str| x.trim().parse::<usize>().map_err(|e| format!("{s}: {e}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{s}: bad range"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    Ok(cpus)
}

/// Probes (optionally), prefills and runs one load against `addr`, reading the
/// CPU time of `server_pid` at the edges of the measurement window.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    target: &str,
    protocol: Protocol,
    addr: SocketAddr,
    wl: &Workload,
    pipeline: usize,
    load: &LoadArgs,
    server_pid: Option<u32>,
    routing: Option<engine::CoreRouting>,
) -> Result<RunResult, String> {
    let spec = engine::LoadSpec {
        protocol,
        addr,
        workload: wl.clone(),
        pipeline,
        rate: load.rate,
        poisson: load.poisson,
        warmup: Duration::from_secs_f64(load.warmup),
        duration: Duration::from_secs_f64(load.duration),
        client_cpus: load.client_cpus.clone(),
        seed: load.seed,
        routing,
    };
    let mut server = [None, None];
    let mut client = [0.0, 0.0];
    let mut cpu_err = None;
    let mut wall = [None, None];
    let rec = engine::run(&spec, |start| {
        let i = if start { 0 } else { 1 };
        wall[i] = Some(std::time::Instant::now());
        client[i] = cpu::self_cpu_seconds();
        if let Some(pid) = server_pid {
            match cpu::process_cpu_times(pid) {
                Ok(c) => server[i] = Some(c),
                Err(e) => cpu_err = Some(format!("server CPU of pid {pid}: {e}")),
            }
        }
    })
    .map_err(|e| format!("{target}: {e}"))?;
    if let Some(e) = cpu_err {
        eprintln!("warning: {e}");
    }
    let seconds = match wall {
        [Some(a), Some(b)] => (b - a).as_secs_f64(),
        _ => load.duration,
    };
    let server_cpu = match server {
        [Some(a), Some(b)] => Some(b - a),
        _ => None,
    };
    Ok(RunResult::new(
        target,
        &wl.name,
        pipeline,
        wl.conns,
        load.mode(),
        seconds,
        &rec,
        server_cpu,
        client[1] - client[0],
    ))
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}

fn cmd_run(a: RunArgs) -> Result<(), String> {
    let protocol = match a.target {
        RunTarget::Memcached | RunTarget::Corecache => Protocol::Memcached,
        RunTarget::Redis => Protocol::Redis,
    };
    let port = a.port.unwrap_or(match protocol {
        Protocol::Memcached => 11211,
        Protocol::Redis => 6379,
    });
    let addr = resolve(&a.host, port)?;
    let wl = a.workload.apply(Workload::profile(&a.profile)?);
    let probe = if a.no_probe {
        "skipped".to_string()
    } else {
        match client::probe(addr, protocol) {
            Ok(()) => "ok".into(),
            Err(e) => {
                eprintln!("warning: {e}");
                format!("FAILED: {e}")
            }
        }
    };
    let pre = client::prefill(addr, protocol, &wl).map_err(|e| format!("prefill: {e}"))?;
    if pre.keys > 0 {
        eprintln!(
            "prefilled {} keys in {:.2} s ({} not stored)",
            pre.keys, pre.seconds, pre.errors
        );
    }
    let name = format!("{:?}", a.target).to_lowercase();
    let mut r = measure(
        &name,
        protocol,
        addr,
        &wl,
        a.pipeline,
        &a.load,
        a.server_pid,
        a.core_ports,
    )?;
    r.probe = probe;
    r.prefill_errors = pre.errors;
    print!("{}", r.summary());
    if let Some(p) = a.json {
        let doc = serde_json::json!({ "workload": wl, "result": r });
        std::fs::write(&p, serde_json::to_string_pretty(&doc).unwrap())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Compare(a) => compare::run(a),
        Cmd::Ab(a) => ab::run(a),
        Cmd::Policy(a) => policy::run(a),
        Cmd::Replay(a) => replay::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpus("0"), Ok(vec![0]));
        assert_eq!(parse_cpus("0,2-4"), Ok(vec![0, 2, 3, 4]));
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "corecache-bench",
            "run",
            "--target",
            "redis",
            "--dist",
            "zipf:1.1",
            "--value-size",
            "100-200",
            "--client-cpus",
            "0,1",
        ]);
        assert!(c.is_ok());
        let c = Cli::try_parse_from([
            "corecache-bench",
            "replay",
            "--targets",
            "corecache,memcached",
            "--memory-mb",
            "16",
            "--workloads",
            "scan,loop",
            "--value-sizes",
            "100,50-1500",
        ]);
        assert!(c.is_ok());
        assert!(
            Cli::try_parse_from(["corecache-bench", "replay", "--workloads", "zigzag"]).is_err()
        );
    }
}
