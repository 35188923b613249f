//! The server: one pinned thread per core, each running its own io_uring event
//! loop over its own shard, joined only by the request queues between cores.

pub mod admin;
pub mod connection;
mod core;
pub mod execute;
pub mod listener;
mod meta;
pub mod reactor;
pub mod routing;
pub mod stats;

use crate::config::Config;
use routing::Mailbox;
use stats::CorePublished;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A server-wide setting that cores apply to their shards at their own pace:
/// a value plus a generation that tells a core whether it has seen it.
#[derive(Debug, Default)]
pub struct Gate {
    value: AtomicU64,
    generation: AtomicU64,
}

impl Gate {
    fn new(value: u64) -> Gate {
        Gate {
            value: AtomicU64::new(value),
            generation: AtomicU64::new(0),
        }
    }

    pub fn request(&self, value: u64) {
        self.value.store(value, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn current(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// The new value if it changed since generation `seen`, updating `seen`.
    pub fn changed_since(&self, seen: &mut u64) -> Option<u64> {
        let generation = self.generation.load(Ordering::SeqCst);
        if generation == *seen {
            return None;
        }
        *seen = generation;
        Some(self.value.load(Ordering::SeqCst))
    }
}

/// State every core can see. Mutable parts are atomics with one clear owner
/// or setting-style values; the data path shares nothing else.
pub struct Shared {
    pub config: Config,
    pub started_unix: u32,
    pub published: Vec<CorePublished>,
    pub mailboxes: Vec<Mailbox>,
    pub ring_fds: Vec<AtomicI32>,
    pub memory_limit: Gate,
    pub shutdown: AtomicBool,
    /// Cores that have published their figures once (start-up).
    pub cores_published: AtomicUsize,
    /// Cores that have finished draining during shutdown.
    pub drained: AtomicUsize,
    pub curr_connections: AtomicUsize,
    pub verbosity: AtomicU32,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let cores = config.cores();
        Shared {
            started_unix: unix_now(),
            published: (0..cores).map(|_| CorePublished::default()).collect(),
            mailboxes: (0..cores).map(|_| Mailbox::new(cores)).collect(),
            ring_fds: (0..cores).map(|_| AtomicI32::new(-1)).collect(),
            memory_limit: Gate::new(config.memory_limit as u64),
            shutdown: AtomicBool::new(false),
            cores_published: AtomicUsize::new(0),
            drained: AtomicUsize::new(0),
            curr_connections: AtomicUsize::new(0),
            verbosity: AtomicU32::new(config.verbose as u32),
            config,
        }
    }

    pub fn cores(&self) -> usize {
        self.config.cores()
    }

    /// Starts a clean shutdown: every core stops reading, answers what it has,
    /// and exits.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

/// The current unix time in whole seconds.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Runs the server until SIGTERM, SIGINT, SIGUSR1 or `shutdown`.
pub fn run(config: Config) -> Result<(), String> {
    reactor::check_memlock(config.cores())?;
    let cores = config.cores();
    let shared = Arc::new(Shared::new(config));

    raise_open_files_limit(&shared.config);

    // Listeners are bound before any thread starts so that a port in use is
    // reported at once, and before privileges are dropped.
    let listeners = listener::bind_all(&shared.config).map_err(|e| e.to_string())?;

    // Signals are taken by a dedicated wait below: block them in every thread.
    let signals = {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        // memcached's graceful stop, the one its warm restart documents.
        set.add(Signal::SIGUSR1);
        set.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        set
    };

    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (index, core_listeners) in listeners.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("core-{index}"))
            .spawn(move || {
                let _stop_all = ShutdownOnExit(Arc::clone(&shared));
                core::run_core(index, shared, core_listeners, ready)
            })
            .map_err(|e| format!("starting core {index}: {e}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.begin_shutdown();
                return Err(e);
            }
            Err(_) => return Err("a core exited during start-up".into()),
        }
    }
    if let Some(user) = &shared.config.user {
        drop_privileges(user)?;
    }
    tracing::info!(
        "corecache {} serving on port {} with {} cores",
        admin::VERSION,
        shared.config.port,
        cores
    );

    // Wait for SIGTERM/SIGINT/SIGUSR1, or for a core to start a shutdown (`shutdown`
    // command), whichever comes first.
    let watcher = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            if let Ok(signal) = signals.wait() {
                tracing::info!("{signal} received, shutting down");
                shared.begin_shutdown();
            }
        })
    };
    let mut result = Ok(());
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err("a core panicked".into()),
        }
    }
    drop(watcher);
    result
}

/// Starts a shutdown when dropped. Each core thread holds one: a core that
/// stops for any reason (an error, a panic) stops the whole server, which
/// exits non-zero for its supervisor to restart, rather than leave the
/// clients of its keys waiting for replies it will never send. A core that
/// stops in a shutdown finds it begun already.
struct ShutdownOnExit(Arc<Shared>);

impl Drop for ShutdownOnExit {
    fn drop(&mut self) {
        self.0.begin_shutdown();
    }
}

/// Descriptors the process holds besides its connections and its cores' own:
/// standard streams, the signal wait, the allocator's and the logger's.
const RESERVED_DESCRIPTORS: u64 = 32;

/// Descriptors `-c` connections and the cores need: each core has a ring, a
/// memory file with `-e`, and its listeners.
fn descriptors_needed(config: &Config) -> u64 {
    let listeners_per_core = config.listen.len() * (1 + usize::from(config.core_ports.is_some()));
    let per_core = 2 + listeners_per_core as u64;
    config.max_connections as u64 + config.cores() as u64 * per_core + RESERVED_DESCRIPTORS
}

/// Raises the open files limit so that `-c` connections fit (the hard limit
/// too, where the process may). Where it cannot, the server runs anyway and
/// says so: connections past the limit wait in the listen backlog until
/// others close (`listen_disabled_num` counts the pauses). memcached sets the
/// limit to `-c` exactly and exits when it cannot; a limit already higher is
/// kept here.
fn raise_open_files_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = descriptors_needed(config);
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= needed {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, needed, hard.max(needed)).is_ok() {
        return;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    tracing::warn!(
        "-c {} needs about {needed} open files, and the limit is {hard}: connections \
         past it wait until others close (raise LimitNOFILE or ulimit -n)",
        config.max_connections
    );
}

/// memcached's `-u`: switch to an unprivileged user once the ports are bound.
fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{getuid, setgid, setuid, User};
    if !getuid().is_root() {
        return Ok(());
    }
    let entry = User::from_name(user)
        .map_err(|e| format!("looking up user {user}: {e}"))?
        .ok_or_else(|| format!("can't find the user {user} to switch to"))?;
    if entry.uid.is_root() {
        return Ok(());
    }
    setgid(entry.gid).map_err(|e| format!("setgid {user}: {e}"))?;
    setuid(entry.uid).map_err(|e| format!("setuid {user}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_core_that_panics_starts_a_shutdown() {
        let cli = crate::config::Cli::parse_from(["corecache", "-t", "1"]);
        let shared = Arc::new(Shared::new(cli.into_config().unwrap()));
        let core = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let _stop_all = ShutdownOnExit(shared);
                panic!("a core's bug");
            })
        };
        assert!(core.join().is_err());
        assert!(shared.shutdown.load(Ordering::SeqCst));
    }
}
