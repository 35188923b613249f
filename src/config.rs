//! Command line and configuration.
//!
//! memcached's flags keep memcached's meaning and defaults, so scripts and init
//! files written for memcached start corecache unchanged. corecache's own options
//! are long-only.

use clap::{ArgAction, Parser};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Smallest and largest `-I` memcached accepts (`ITEM_SIZE_MAX_LOWER_LIMIT` / `UPPER_LIMIT`).
pub const ITEM_SIZE_MAX_LOWER_LIMIT: usize = 1024;
pub const ITEM_SIZE_MAX_UPPER_LIMIT: usize = 1024 * 1024 * 1024;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "corecache",
    version,
    about = "A memcached-compatible cache server, thread-per-core on io_uring",
    disable_help_flag = true,
    // As with memcached's getopt, a flag given twice takes its last value.
    args_override_self = true
)]
pub struct Cli {
    /// Print help.
    #[arg(short = 'h', long = "help", action = ArgAction::Help)]
    help: Option<bool>,

    /// TCP port to listen on (memcached -p).
    #[arg(short = 'p', long = "port", default_value_t = 11211)]
    pub port: u16,

    /// Interfaces to listen on, comma separated (memcached -l).
    #[arg(
        short = 'l',
        long = "listen",
        default_value = "127.0.0.1",
        value_delimiter = ','
    )]
    pub listen: Vec<IpAddr>,

    /// Item memory in megabytes (memcached -m).
    #[arg(short = 'm', long = "memory-limit", default_value_t = 64)]
    pub memory_mb: u64,

    /// Maximum simultaneous connections (memcached -c).
    #[arg(short = 'c', long = "conn-limit", default_value_t = 1024)]
    pub max_connections: usize,

    /// Worker cores (memcached -t); default: every CPU this process may run on.
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,

    /// Largest item (header, key and value), with k or m suffix (memcached -I).
    #[arg(short = 'I', long = "max-item-size", default_value = "1m", value_parser = parse_size)]
    pub max_item_size: usize,

    /// UDP port (memcached -U). UDP is not served; a non-zero port is logged and ignored.
    #[arg(short = 'U', long = "udp-port", default_value_t = 0)]
    pub udp_port: u16,

    /// Run as this user when started as root (memcached -u).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,

    /// Disable CAS: gets report 0 and items carry no CAS (memcached -C).
    #[arg(short = 'C', long = "disable-cas")]
    pub disable_cas: bool,

    /// Disable flush_all (memcached -F).
    #[arg(short = 'F', long = "disable-flush-all")]
    pub disable_flush_all: bool,

    /// Enable the `shutdown` command (memcached -A).
    #[arg(short = 'A', long = "enable-shutdown")]
    pub enable_shutdown: bool,

    /// Back item memory with transparent huge pages where the kernel allows them
    /// (memcached -L): fewer TLB misses for large caches (docs/tuning.md).
    #[arg(short = 'L', long = "enable-largepages")]
    pub large_pages: bool,

    /// Slab chunk growth factor (memcached -f).
    #[arg(short = 'f', long = "slab-growth-factor", default_value_t = 1.25)]
    pub growth_factor: f64,

    /// Smallest slab chunk in bytes (memcached -n).
    #[arg(short = 'n', long = "slab-min-size", default_value_t = 48)]
    pub min_chunk_size: usize,

    /// Listen backlog (memcached -b).
    #[arg(short = 'b', long = "listen-backlog", default_value_t = 1024)]
    pub backlog: i32,

    /// Accepted for memcached compatibility; corecache serves every parsed request of a read.
    #[arg(short = 'R', long = "max-reqs-per-event", default_value_t = 20)]
    pub max_reqs_per_event: u32,

    /// Run in the background, detached from the terminal (memcached -d).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,

    /// Write the server's process id to this file (memcached -P); removed on a
    /// clean exit.
    #[arg(short = 'P', long = "pidfile")]
    pub pidfile: Option<std::path::PathBuf>,

    /// Verbose logging; repeat for more (memcached -v, -vv).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// Extended options, comma separated key=value (memcached -o).
    #[arg(short = 'o', long = "extended", value_delimiter = ',')]
    pub extended: Vec<String>,

    /// CPU ids to pin the cores to, e.g. `0-3,6`; default: the first `-t` CPUs
    /// this process may run on.
    #[arg(long = "cores")]
    pub cores: Option<String>,

    /// Keep item memory in files so a clean restart keeps the items (memcached
    /// -e): core N maps the file PATH.N, sized to its share of -m. Use tmpfs (/dev/shm).
    #[arg(short = 'e', long = "memory-file", value_name = "PATH")]
    pub memory_file: Option<PathBuf>,

    /// Also listen on a port per core: core i on BASE+i (zero-hop steering).
    #[arg(long = "core-ports")]
    pub core_ports: Option<u16>,

    /// Serve canned replies on the same event loop, touching no storage: the
    /// cost of the I/O layer and the parser alone (a benchmark target).
    #[arg(long = "null")]
    pub null: bool,

    /// Microseconds a core with replies owed by other cores polls for them
    /// before it blocks (0: it blocks at once). On dedicated cores this trades
    /// idle CPU time for fewer wake-ups and context switches (docs/tuning.md).
    #[arg(long = "reply-spin-us", default_value_t = 0, value_name = "MICROSECONDS",
          value_parser = clap::value_parser!(u64).range(0..=MAX_REPLY_SPIN_US))]
    pub reply_spin_us: u64,
}

/// The longest `--reply-spin-us`: a millisecond, ten times a loop turn's
/// usual length under load, is already all polling and no sleep.
pub const MAX_REPLY_SPIN_US: u64 = 1000;

/// Validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub listen: Vec<IpAddr>,
    pub memory_limit: usize,
    pub max_connections: usize,
    pub cpus: Vec<usize>,
    pub max_item_size: usize,
    pub udp_port: u16,
    pub user: Option<String>,
    pub use_cas: bool,
    /// `-L`: advise huge pages for the arenas.
    pub large_pages: bool,
    pub flush_enabled: bool,
    pub shutdown_enabled: bool,
    pub growth_factor: f64,
    pub min_chunk_size: usize,
    pub backlog: i32,
    pub verbose: u8,
    pub daemon: bool,
    pub pidfile: Option<std::path::PathBuf>,
    pub core_ports: Option<u16>,
    pub null: bool,
    /// `--reply-spin-us`: how long a core waiting for other cores' replies
    /// polls before it blocks.
    pub reply_spin: std::time::Duration,
    /// `--memory-file`: each core's arena is the file `PATH.<core>`.
    pub memory_file: Option<PathBuf>,
}

impl Config {
    pub fn cores(&self) -> usize {
        self.cpus.len()
    }
}

/// `-o` options memcached defines that corecache accepts and has no use for:
/// they tune memcached internals (its LRU crawler, hash table) that corecache
/// does differently.
const IGNORED_EXTENDED_OPTIONS: &[&str] = &[
    "modern",
    "hashpower",
    "lru_crawler",
    "no_lru_crawler",
    "lru_maintainer",
    "no_lru_maintainer",
    "slab_reassign",
    "slab_automove",
    "hash_algorithm",
    "tail_repair_time",
    "idle_timeout",
    "watcher_logbuf_size",
    "worker_logbuf_size",
    "maxconns_fast",
    "no_maxconns_fast",
    "temporary_ttl",
    "track_sizes",
    "no_inline_ascii_resp",
    "slab_chunk_max",
    "lru_segmented",
    "no_lru_segmented",
];

impl Cli {
    /// Checks the flags against each other and against this machine.
    pub fn into_config(self) -> Result<Config, String> {
        if self.memory_mb == 0 {
            return Err("-m must be at least 1 megabyte".into());
        }
        let memory_limit = (self.memory_mb as usize)
            .checked_mul(1024 * 1024)
            .ok_or("-m is too large")?;
        if !(ITEM_SIZE_MAX_LOWER_LIMIT..=ITEM_SIZE_MAX_UPPER_LIMIT).contains(&self.max_item_size) {
            return Err(format!(
                "-I must be between {ITEM_SIZE_MAX_LOWER_LIMIT} bytes and 1g, got {}",
                self.max_item_size
            ));
        }
        if self.max_item_size > memory_limit / 2 {
            return Err("Cannot set item size limit higher than 1/2 of memory max.".into());
        }
        if self.growth_factor <= 1.0 {
            return Err("-f (slab growth factor) must be greater than 1".into());
        }
        if self.min_chunk_size < 48 {
            return Err("-n (slab min size) must be at least 48".into());
        }
        if self.max_connections == 0 {
            return Err("-c must be at least 1".into());
        }
        for option in &self.extended {
            let name = option.split('=').next().unwrap_or_default();
            if !IGNORED_EXTENDED_OPTIONS.contains(&name) {
                return Err(format!("Illegal suboption \"{option}\""));
            }
        }
        let allowed = allowed_cpus();
        let cores = self.cores.as_deref().map(parse_cpu_list).transpose()?;
        let cpus = match (cores, self.threads) {
            (Some(list), threads) => {
                if let Some(t) = threads {
                    if t != list.len() {
                        return Err(format!(
                            "-t {t} disagrees with --cores, which names {} CPUs",
                            list.len()
                        ));
                    }
                }
                list
            }
            (None, Some(0)) => return Err("-t must be at least 1".into()),
            // More cores than CPUs is allowed (tests run -t 2 on one CPU); the
            // extra cores share CPUs round robin.
            (None, Some(t)) => (0..t).map(|i| allowed[i % allowed.len()]).collect(),
            (None, None) => allowed,
        };
        if cpus.len() > 1024 {
            return Err("at most 1024 cores are supported".into());
        }
        if let Some(base) = self.core_ports {
            if base as usize + cpus.len() > u16::MAX as usize + 1 {
                return Err("--core-ports: BASE + cores exceeds 65535".into());
            }
        }
        if let Some(path) = &self.memory_file {
            check_memory_file(path)?;
        }
        Ok(Config {
            port: self.port,
            listen: self.listen,
            memory_limit,
            max_connections: self.max_connections,
            cpus,
            max_item_size: self.max_item_size,
            udp_port: self.udp_port,
            user: self.user,
            use_cas: !self.disable_cas,
            large_pages: self.large_pages,
            flush_enabled: !self.disable_flush_all,
            shutdown_enabled: self.enable_shutdown,
            growth_factor: self.growth_factor,
            min_chunk_size: self.min_chunk_size,
            backlog: self.backlog,
            verbose: self.verbose,
            daemon: self.daemon,
            pidfile: self.pidfile.map(absolute).transpose()?,
            core_ports: self.core_ports,
            null: self.null,
            reply_spin: std::time::Duration::from_micros(self.reply_spin_us),
            // Absolute, so that -d (which changes to `/`) keeps their meaning.
            memory_file: self.memory_file.map(absolute).transpose()?,
        })
    }
}

/// `--memory-file PATH` must name a file in a directory that exists (the cores
/// create `PATH.<core>` in it).
fn check_memory_file(path: &Path) -> Result<(), String> {
    if path.file_name().is_none()
        || path.as_os_str().to_string_lossy().ends_with('/')
        || path.is_dir()
    {
        return Err(format!(
            "--memory-file {}: must name a file, not a directory",
            path.display()
        ));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(format!(
            "--memory-file {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

fn absolute(path: std::path::PathBuf) -> Result<std::path::PathBuf, String> {
    std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// A byte size with an optional k/m/g suffix, as memcached's `-I` takes it.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        _ => (s, 'b'),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {s:?} (use e.g. 1m, 512k, 2048)"))?;
    let scale = match unit {
        'b' => 1,
        'k' => 1024,
        'm' => 1024 * 1024,
        'g' => 1024 * 1024 * 1024,
        _ => return Err(format!("unknown size suffix in {s:?}: use k, m or g")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("size too large: {s}"))
}

/// A CPU list such as `0-3,6`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list {s:?}: use e.g. 0-3,6");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("empty CPU list".into());
    }
    let mut seen = cpus.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != cpus.len() {
        return Err(format!("CPU list {s:?} names a CPU twice"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("corecache").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.into_config()
    }

    #[test]
    fn memcached_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.port, 11211);
        assert_eq!(c.listen, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.memory_limit, 64 << 20);
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_item_size, 1 << 20);
        assert!(c.use_cas && c.flush_enabled && !c.shutdown_enabled);
        assert!(c.cores() >= 1);
    }

    #[test]
    fn reply_polling_is_off_unless_asked_and_bounded() {
        assert!(config(&[]).unwrap().reply_spin.is_zero());
        let c = config(&["--reply-spin-us", "20"]).unwrap();
        assert_eq!(c.reply_spin, std::time::Duration::from_micros(20));
        let too_long = (MAX_REPLY_SPIN_US + 1).to_string();
        assert!(config(&["--reply-spin-us", &too_long]).is_err());
    }

    #[test]
    fn memcached_flags_keep_their_meaning() {
        let c = config(&[
            "-p",
            "2000",
            "-l",
            "0.0.0.0,::1",
            "-m",
            "128",
            "-c",
            "10",
            "-t",
            "3",
            "-I",
            "2m",
            "-U",
            "0",
            "-C",
            "-F",
            "-A",
            "-L",
            "-vv",
            "-o",
            "modern,hashpower=20",
        ])
        .unwrap();
        assert_eq!(c.port, 2000);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.memory_limit, 128 << 20);
        assert_eq!(c.max_connections, 10);
        assert_eq!(c.cores(), 3);
        assert_eq!(c.max_item_size, 2 << 20);
        assert!(!c.use_cas && !c.flush_enabled && c.shutdown_enabled);
        assert!(c.large_pages);
        assert_eq!(c.verbose, 2);
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let c = config(&["-p", "1", "-p", "2", "-u", "root", "-u", "nobody"]).unwrap();
        assert_eq!(c.port, 2);
        assert_eq!(c.user.as_deref(), Some("nobody"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(config(&["-I", "512"]).is_err());
        assert!(config(&["-I", "2g"]).is_err());
        assert!(config(&["-m", "1", "-I", "1m"]).is_err());
        assert!(config(&["-t", "0"]).is_err());
        assert!(config(&["-p", "notaport"]).is_err());
        assert!(config(&["-o", "no_such_option=1"]).is_err());
        assert!(config(&["--cores", "0-1", "-t", "3"]).is_err());
    }

    #[test]
    fn memory_file_needs_an_existing_directory() {
        let dir = std::env::temp_dir();
        let path = dir.join("corecache-cache");
        let c = config(&["-e", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.memory_file, Some(path.clone()));
        let c = config(&["--memory-file", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.memory_file, Some(path));
        assert!(config(&[]).unwrap().memory_file.is_none());
        let missing = dir.join("corecache-no-such-dir").join("cache");
        let err = config(&["-e", missing.to_str().unwrap()]).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        assert!(config(&["-e", dir.to_str().unwrap()]).is_err());
        assert!(config(&["-e", "/tmp/"]).is_err());
    }

    #[test]
    fn sizes_and_cpu_lists() {
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2048"), Ok(2048));
        assert!(parse_size("1x").is_err());
        assert_eq!(parse_cpu_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("1,1").is_err());
    }
}
