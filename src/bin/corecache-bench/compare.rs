//! `compare`: start each server with the same memory and pinned CPUs, run every
//! workload at every pipeline depth against it, write table, JSON and charts.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::proto::Protocol;
use crate::report::{self, RunResult};
use crate::workload::Workload;
use crate::{client, measure, parse_cpus, LoadArgs, WorkloadArgs};

#[derive(Args)]
pub struct CompareArgs {
    /// Targets, in order: corecache, memcached, redis, null, uring-null.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "corecache,memcached,redis,null,uring-null"
    )]
    targets: Vec<String>,
    /// Workload profiles: default, multiget10, seed.
    #[arg(long, value_delimiter = ',', default_value = "default,multiget10,seed")]
    workloads: Vec<String>,
    /// Pipeline depths to run each workload at.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pipelines: Vec<usize>,
    /// Memory limit given to every server, in MB.
    #[arg(long, default_value_t = 256)]
    memory_mb: u64,
    /// CPUs the servers are pinned to; their thread count is the number of CPUs.
    #[arg(long, default_value = "1", value_parser = parse_cpus)]
    server_cpus: ::std::vec::Vec<usize>, // full path: one value parsed to a list
    /// The corecache server binary.
    #[arg(long, default_value = "target/release/corecache")]
    corecache_bin: PathBuf,
    #[arg(long, default_value = "memcached")]
    memcached_bin: PathBuf,
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Command line of the `null` target (canned replies, measures the I/O layer);
    /// whitespace-separated, with {port}, {threads}, {cpu} and {corecache} replaced.
    #[arg(long, default_value = "{corecache} --null -p {port} -t {threads}")]
    null_cmd: String,
    /// The reference uring-null server (run as `uring-null PORT CPU`); the
    /// uring-null target is skipped without it.
    #[arg(long)]
    uring_null_bin: Option<PathBuf>,
    /// Output directory (created): results.md, results.json, throughput.svg,
    /// latency.svg, logs/.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Rounds: every target runs every workload once per round, the targets'
    /// order turning by one each round; with more than one, the table holds
    /// each group's median run and the figures follow round by round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// First port to start servers on; each server start takes the next free one.
    #[arg(long, default_value_t = 31100)]
    base_port: u16,
    #[command(flatten)]
    load: LoadArgs,
    /// Overrides applied to every workload profile.
    #[command(flatten)]
    workload: WorkloadArgs,
}

/// How to start one target.
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    /// Program and arguments, with {port} still to be replaced.
    argv: Vec<String>,
    /// Real caches get the correctness probe and a prefill; null servers do not.
    is_cache: bool,
    /// Understands single-key `get` only (the reference uring-null): multi-get
    /// workloads are skipped for it.
    single_key_only: bool,
}

/// Finds `p` as given (if it has a slash) or on PATH.
pub(crate) fn find_binary(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 || p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

fn missing(name: &str, p: &Path, hint: &str) -> String {
    format!("skipping {name}: binary {} not found{hint}", p.display())
}

/// corecache started as `BIN -p PORT -m MB -t THREADS -U 0`.
pub(crate) fn corecache_target(bin: &Path, mb: u64, threads: usize) -> Result<Target, String> {
    let hint = " (cargo build --release --bin corecache, or --corecache-bin)";
    memcached_style_target("corecache", bin, hint, mb, threads, &[])
}

/// memcached started as `BIN -p PORT -m MB -t THREADS -U 0 -l 127.0.0.1`, plus
/// `-u root` when run as root.
pub(crate) fn memcached_target(bin: &Path, mb: u64, threads: usize) -> Result<Target, String> {
    let root = nix::unistd::geteuid().is_root();
    let extra: &[&str] = if root {
        &["-l", "127.0.0.1", "-u", "root"]
    } else {
        &["-l", "127.0.0.1"]
    };
    memcached_style_target(
        "memcached",
        bin,
        " (apt install memcached)",
        mb,
        threads,
        extra,
    )
}

/// A server taking memcached's flags: `BIN -p PORT -m MB -t THREADS -U 0 EXTRA...`.
pub(crate) fn memcached_style_target(
    name: &str,
    bin: &Path,
    install_hint: &str,
    mb: u64,
    threads: usize,
    extra: &[&str],
) -> Result<Target, String> {
    let found = find_binary(bin).ok_or_else(|| missing(name, bin, install_hint))?;
    let (mb, threads) = (mb.to_string(), threads.to_string());
    let argv = [
        found.display().to_string().as_str(),
        "-p",
        "{port}",
        "-m",
        &mb,
        "-t",
        &threads,
        "-U",
        "0",
    ]
    .iter()
    .chain(extra)
    .map(|x| x.to_string())
    .collect();
    Ok(Target {
        name: name.into(),
        protocol: Protocol::Memcached,
        argv,
        is_cache: true,
        single_key_only: false,
    })
}

/// The targets whose binaries were found; a message for each missing one.
pub fn runnable(targets: Vec<Result<Target, String>>) -> Result<Vec<Target>, String> {
    let mut runnable = Vec::new();
    for t in targets {
        match t {
            Ok(t) => runnable.push(t),
            Err(msg) => eprintln!("{msg}"),
        }
    }
    if runnable.is_empty() {
        return Err("no target to run".into());
    }
    Ok(runnable)
}

fn targets(a: &CompareArgs) -> Vec<Result<Target, String>> {
    let threads = a.server_cpus.len().to_string();
    let mb = a.memory_mb.to_string();
    let s = |x: &str| x.to_string();
    a.targets
        .iter()
        .map(|name| -> Result<Target, String> {
            match name.as_str() {
                "corecache" => corecache_target(&a.corecache_bin, a.memory_mb, a.server_cpus.len()),
                "memcached" => memcached_target(&a.memcached_bin, a.memory_mb, a.server_cpus.len()),
                "redis" => {
                    let bin = find_binary(&a.redis_bin)
                        .ok_or_else(|| missing(name, &a.redis_bin, " (apt install redis-server)"))?;
                    let mut argv = vec![
                        bin.display().to_string(),
                        s("--port"),
                        s("{port}"),
                        s("--bind"),
                        s("127.0.0.1"),
                        s("--save"),
                        s(""),
                        s("--appendonly"),
                        s("no"),
                        s("--maxmemory"),
                        format!("{mb}mb"),
                        s("--maxmemory-policy"),
                        s("allkeys-lru"),
                    ];
                    // Redis executes commands on one thread; with more server CPUs,
                    // give it I/O threads so it may use them too.
                    if a.server_cpus.len() > 1 {
                        argv.extend([s("--io-threads"), threads.clone()]);
                    }
                    Ok(Target {
                        name: s(name),
                        protocol: Protocol::Redis,
                        argv,
                        is_cache: true,
                        single_key_only: false,
                    })
                }
                "null" => {
                    let cc = a.corecache_bin.display().to_string();
                    let argv: Vec<String> = a
                        .null_cmd
                        .split_whitespace()
                        .map(|w| {
                            w.replace("{corecache}", &cc)
                                .replace("{threads}", &threads)
                                .replace("{cpu}", &a.server_cpus[0].to_string())
                        })
                        .collect();
                    let prog = argv.first().ok_or("skipping null: empty --null-cmd")?;
                    let bin = find_binary(Path::new(prog))
                        .ok_or_else(|| missing(name, Path::new(prog), " (see --null-cmd)"))?;
                    let mut argv = argv.clone();
                    argv[0] = bin.display().to_string();
                    Ok(Target {
                        name: s(name),
                        protocol: Protocol::Memcached,
                        argv,
                        is_cache: false,
                        single_key_only: false,
                    })
                }
                "uring-null" => {
                    let p = a
                        .uring_null_bin
                        .as_ref()
                        .ok_or("skipping uring-null: no --uring-null-bin given")?;
                    let bin = find_binary(p).ok_or_else(|| missing(name, p, ""))?;
                    Ok(Target {
                        name: s(name),
                        protocol: Protocol::Memcached,
                        argv: vec![bin.display().to_string(), s("{port}"), a.server_cpus[0].to_string()],
                        is_cache: false,
                        single_key_only: true,
                    })
                }
                other => Err(format!(
                    "skipping {other}: unknown target (corecache, memcached, redis, null, uring-null)"
                )),
            }
        })
        .collect()
}

/// A started server; killed on drop.
pub(crate) struct Server {
    child: Child,
}

impl Server {
    /// Starts `t` on `port`, pinned to `cpus`, and waits until it listens; a
    /// cache must then say it is the process started (`check_identity`).
    pub(crate) fn start(
        t: &Target,
        port: u16,
        cpus: &[usize],
        log: &Path,
    ) -> Result<Server, String> {
        let argv: Vec<String> = t
            .argv
            .iter()
            .map(|a| a.replace("{port}", &port.to_string()))
            .collect();
        let log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        // `taskset` pins the server before it runs a single instruction, so every
        // thread it starts inherits the CPU set.
        let cpu_list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
        let mut cmd = Command::new("taskset");
        cmd.arg("-c")
            .arg(cpu_list.join(","))
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: start {}: {e}", t.name, argv[0]))?;
        let mut server = Server { child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({status}); see {}: {}",
                    t.name,
                    log.display(),
                    argv.join(" ")
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                if t.is_cache {
                    server.check_identity(t, addr)?;
                }
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on {addr} within 10 s; see {}",
                    t.name,
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if `addr` is answered by another process than the one started:
    /// one that took the port between the free-port check and this server's
    /// bind would have its figures reported as this server's. A server that
    /// reports no pid (a null server) passes.
    fn check_identity(&self, t: &Target, addr: SocketAddr) -> Result<(), String> {
        match client::server_pid(addr, t.protocol) {
            Ok(Some(pid)) if pid != self.pid() => Err(format!(
                "{}: port {} is answered by pid {pid}, not by the server started (pid {})",
                t.name,
                addr.port(),
                self.pid()
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("{}: asking its pid: {e}", t.name)),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(a: CompareArgs) -> Result<(), String> {
    let mut workloads = Vec::new();
    for w in &a.workloads {
        workloads.push(a.workload.apply(Workload::profile(w)?));
    }
    let overlap: Vec<_> = a
        .server_cpus
        .iter()
        .filter(|c| a.load.client_cpus.contains(c))
        .collect();
    if !overlap.is_empty() {
        eprintln!("warning: server and client CPUs overlap ({overlap:?}): load and server compete");
    }
    fs::create_dir_all(a.out.join("logs")).map_err(|e| format!("{}: {e}", a.out.display()))?;

    if a.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    let runnable = runnable(targets(&a))?;
    let total = (a.rounds * runnable.len() * workloads.len() * a.pipelines.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));

    let mut results: Vec<RunResult> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut port = a.base_port;
    // Round r starts with target r: a drift over a round weighs on each
    // target in turn.
    let turns = (0..a.rounds).flat_map(|round| {
        let n = runnable.len();
        (0..n).map(move |i| (round + 1, (round + i) % n))
    });
    for (round, which) in turns {
        let t = &runnable[which];
        for wl in &workloads {
            if t.single_key_only && wl.multiget > 1 {
                bar.println(format!(
                    "skipping {} / {}: {} answers single-key gets only",
                    t.name, wl.name, t.name
                ));
                bar.inc(a.pipelines.len() as u64);
                continue;
            }
            // A port some other process listens on would have us measure that
            // process (our server fails to bind while the readiness check
            // connects): skip taken ports (and `Server::start` checks a
            // cache's pid).
            port = next_free_port(port.wrapping_add(1));
            bar.set_message(format!("{} / {}: starting", t.name, wl.name));
            let log = a
                .out
                .join("logs")
                .join(format!("{}-{}.log", t.name, wl.name));
            let server = match Server::start(t, port, &a.server_cpus, &log) {
                Ok(s) => s,
                Err(e) => {
                    bar.println(format!("error: {e}"));
                    problems.push(e);
                    bar.inc(a.pipelines.len() as u64);
                    continue;
                }
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let (probe, prefill_errors) = if t.is_cache {
                let probe = match client::probe(addr, t.protocol) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => {
                        bar.println(format!("warning: {}: {e}", t.name));
                        problems.push(format!("{} / {}: {e}", t.name, wl.name));
                        format!("FAILED: {e}")
                    }
                };
                bar.set_message(format!("{} / {}: prefill", t.name, wl.name));
                let pre = match client::prefill(addr, t.protocol, wl) {
                    Ok(p) => p.errors,
                    Err(e) => {
                        bar.println(format!("warning: {} prefill: {e}", t.name));
                        problems.push(format!("{} / {} prefill: {e}", t.name, wl.name));
                        wl.prefill_keys() // count every key as not stored
                    }
                };
                (probe, pre)
            } else {
                ("skipped (null server)".to_string(), 0)
            };
            for &p in &a.pipelines {
                bar.set_message(format!("{} / {} / pipeline {p}", t.name, wl.name));
                match measure(
                    &t.name,
                    t.protocol,
                    addr,
                    wl,
                    p,
                    &a.load,
                    Some(server.pid()),
                    None,
                ) {
                    Ok(mut r) => {
                        r.round = round;
                        r.probe = probe.clone();
                        r.prefill_errors = prefill_errors;
                        let bad = r.errors + r.key_mismatches + r.conn_errors;
                        if bad > 0 {
                            problems.push(format!(
                                "{} / {} / pipeline {p}: {} error replies, {} key mismatches, {} connection errors",
                                t.name, wl.name, r.errors, r.key_mismatches, r.conn_errors
                            ));
                        }
                        results.push(r);
                    }
                    Err(e) => {
                        bar.println(format!("error: {e}"));
                        problems.push(e);
                    }
                }
                bar.inc(1);
            }
            drop(server);
        }
    }
    bar.finish_with_message("done");

    let header = format!(
        "Servers pinned to CPUs {:?} ({} threads each), -m {} MB, persistence off; load on CPUs {:?}; \
         {} s measured after {} s warm-up, {} loop. Kernel {}. Latency in microseconds{}.",
        a.server_cpus,
        a.server_cpus.len(),
        a.memory_mb,
        a.load.client_cpus,
        a.load.duration,
        a.load.warmup,
        a.load.mode(),
        kernel(),
        if a.load.rate.is_some() {
            ", from scheduled send time (coordinated omission corrected)"
        } else {
            ", from actual send time"
        }
    );
    let (md, (thr_svg, lat_svg)) = if a.rounds == 1 {
        (
            report::markdown(&results, &header),
            report::charts(&results),
        )
    } else {
        let medians = report::median_runs(&results);
        let header = format!(
            "{header} {} rounds; each row is the run of median requests per server \
             CPU-second, the charts show the same runs.",
            a.rounds
        );
        let md = format!(
            "{}\n{}",
            report::markdown(&medians, &header),
            report::rounds_markdown(&results, a.rounds)
        );
        (md, report::charts(&medians))
    };
    let json = serde_json::json!({
        "setup": {
            "server_cpus": a.server_cpus,
            "client_cpus": a.load.client_cpus,
            "memory_mb": a.memory_mb,
            "duration_s": a.load.duration,
            "warmup_s": a.load.warmup,
            "mode": a.load.mode(),
            "kernel": kernel(),
            "workloads": workloads,
            "rounds": a.rounds,
        },
        "results": results,
        "problems": problems,
    });
    let write = |name: &str, body: &str| -> Result<(), String> {
        let p = a.out.join(name);
        fs::write(&p, body).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("results.md", &md)?;
    write(
        "results.json",
        &serde_json::to_string_pretty(&json).unwrap(),
    )?;
    write("throughput.svg", &thr_svg)?;
    write("latency.svg", &lat_svg)?;
    println!("{md}");
    for p in &problems {
        println!("problem: {p}");
    }
    println!(
        "wrote {}/results.md, results.json, throughput.svg, latency.svg",
        a.out.display()
    );
    Ok(())
}

/// The first port from `from` upward that nothing listens on at 127.0.0.1.
pub(crate) fn next_free_port(from: u16) -> u16 {
    (from..u16::MAX)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .unwrap_or(from)
}

pub(crate) fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A port answered, as if it were a memcached, by a process reporting pid
    /// `pid`.
    fn impostor(pid: u32) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut [0u8; 64]).unwrap();
            s.write_all(format!("STAT pid {pid}\r\nEND\r\n").as_bytes())
                .unwrap();
        });
        addr
    }

    fn started(program: &str) -> Server {
        Server {
            child: Command::new(program).arg("5").spawn().unwrap(),
        }
    }

    #[test]
    fn a_port_answered_by_another_process_is_refused() {
        let server = started("sleep");
        let t = corecache_target(Path::new("/bin/true"), 64, 1).unwrap();
        let other = server.pid() + 1;
        let err = server.check_identity(&t, impostor(other)).unwrap_err();
        assert!(err.contains(&format!("answered by pid {other}")), "{err}");
        // The same answer with the right pid passes.
        let own = server.pid();
        assert_eq!(server.check_identity(&t, impostor(own)), Ok(()));
    }
}
