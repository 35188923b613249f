//! Shared harness for the integration tests: starts the real server binary on free
//! loopback ports and talks to it over a small blocking client.
//!
//! The binary is `$CORECACHE_TEST_SERVER` when set (e.g. `/usr/bin/memcached`, to check
//! that every expectation here is what memcached 1.6.18 really does), otherwise the
//! `corecache` binary cargo built for this test run.
//!
//! Nothing here can hang the suite: every read has a timeout (5 s), startup gives up
//! after 10 s, and the server is killed on drop (SIGTERM, then SIGKILL after 5 s).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a read may wait before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server may take to accept its first connection.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server gets to exit after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The server binary under test.
pub fn server_path() -> String {
    match std::env::var("CORECACHE_TEST_SERVER") {
        Ok(p) if !p.is_empty() => p,
        _ => env!("CARGO_BIN_EXE_corecache").to_string(),
    }
}

/// True when the suite runs against real memcached rather than corecache.
pub fn is_memcached() -> bool {
    std::path::Path::new(&server_path())
        .file_name()
        .map(|n| n.to_string_lossy().contains("memcached"))
        .unwrap_or(false)
}

/// For corecache-only tests: returns true (and says so) when the server is memcached,
/// so the caller can `return` early.
pub fn skip_unless_corecache(what: &str) -> bool {
    if is_memcached() {
        println!(
            "SKIPPED (corecache-only: {what}); server under test is {}",
            server_path()
        );
        true
    } else {
        false
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `setpriv` can start a process without CAP_SYS_RESOURCE: root can
/// (unless its container withholds CAP_SETPCAP); anyone else has no such
/// capability to drop.
fn can_drop_sys_resource() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        is_root()
            && Command::new("setpriv")
                .args(["--bounding-set=-sys_resource", "true"])
                .status()
                .is_ok_and(|status| status.success())
    })
}

/// Ports handed out by this process, never handed out twice (tests run in parallel).
fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    USED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// `count` consecutive loopback ports that are free right now (bound and released).
/// The first is at `base` if given, else chosen by the kernel.
fn free_ports(count: usize) -> Vec<u16> {
    for attempt in 0..200u32 {
        let base = if count == 1 {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().unwrap().port()
        } else {
            // Consecutive ports: a pseudo-random base below the usual ephemeral range.
            let seed = thread_seed().wrapping_add(attempt as u64 * 104_729);
            20_000 + (seed % 12_000) as u16
        };
        let ports: Vec<u16> = (0..count as u16).map(|i| base + i).collect();
        let mut used = used_ports().lock().unwrap();
        if ports.iter().any(|p| used.contains(p)) {
            continue;
        }
        let all_free = ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if all_free {
            used.extend(ports.iter().copied());
            return ports;
        }
    }
    panic!("could not find {count} free consecutive loopback ports");
}

fn thread_seed() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    thread::current().id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}

/// Builder for a server process.
#[derive(Clone, Default)]
pub struct ServerBuilder {
    args: Vec<String>,
    memcached_args: Vec<String>,
    core_ports: usize,
    open_files: Option<(u64, u64)>,
}

impl ServerBuilder {
    /// Flags passed to either server (memcached-compatible flags).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Flags passed only when the server is memcached (e.g. `-o slab_chunk_max=1024`,
    /// which memcached 1.6.18 needs before it accepts `-I 2k`).
    pub fn memcached_args(mut self, args: &[&str]) -> Self {
        self.memcached_args
            .extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Ask for `--core-ports BASE` with `n` consecutive free ports (corecache only).
    pub fn core_ports(mut self, n: usize) -> Self {
        self.core_ports = n;
        self
    }

    /// Start the server with this open files limit, soft and hard (through
    /// util-linux's `prlimit`, which then runs the server in its own process).
    /// As root, `setpriv` first drops CAP_SYS_RESOURCE, so that the server
    /// cannot raise the hard limit the test set.
    pub fn open_files_limit(mut self, soft: u64, hard: u64) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    pub fn start(self) -> Server {
        let mut last_err = String::new();
        for _ in 0..5 {
            match self.try_start() {
                Ok(s) => return s,
                Err(e) => last_err = e,
            }
        }
        panic!("server did not start: {last_err}");
    }

    fn try_start(&self) -> Result<Server, String> {
        let port = free_ports(1)[0];
        let core_ports = if self.core_ports > 0 {
            free_ports(self.core_ports)
        } else {
            Vec::new()
        };
        let mut args: Vec<String> = vec![
            "-l".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
        ];
        if is_root() {
            // memcached refuses to run as root without -u; corecache accepts -u too.
            args.extend(["-u".to_string(), "root".to_string()]);
        }
        if let Some(base) = core_ports.first() {
            args.extend(["--core-ports".to_string(), base.to_string()]);
        }
        args.extend(self.args.iter().cloned());
        if is_memcached() {
            args.extend(self.memcached_args.iter().cloned());
        }
        let path = server_path();
        let mut command = match self.open_files {
            None => Command::new(&path),
            Some((soft, hard)) => {
                let mut command = if can_drop_sys_resource() {
                    let mut setpriv = Command::new("setpriv");
                    setpriv.args(["--bounding-set=-sys_resource", "prlimit"]);
                    setpriv
                } else {
                    Command::new("prlimit")
                };
                command.arg(format!("--nofile={soft}:{hard}")).arg(&path);
                command
            }
        };
        let mut child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {path}: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            thread::spawn(move || drain(out, log));
        }
        let mut server = Server {
            child: Some(child),
            port,
            core_ports,
            args: args.clone(),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ports = vec![server.port];
        ports.extend(server.core_ports.iter().copied());
        let mut ready = 0;
        while ready < ports.len() {
            if let Some(status) = server.try_wait() {
                return Err(format!(
                    "{path} {} exited early with {status}; output:\n{}",
                    args.join(" "),
                    server.output()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{path} {} did not accept connections on port {} within {:?}; output:\n{}",
                    args.join(" "),
                    ports[ready],
                    START_TIMEOUT,
                    server.output()
                ));
            }
            match TcpStream::connect(("127.0.0.1", ports[ready])) {
                Ok(_) => ready += 1,
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
        // A port taken by someone else would make our server exit on bind: check again.
        thread::sleep(Duration::from_millis(30));
        if let Some(status) = server.try_wait() {
            return Err(format!(
                "{path} exited with {status} after its port answered; output:\n{}",
                server.output()
            ));
        }
        Ok(server)
    }
}

fn drain(mut r: Box<dyn Read + Send>, log: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut l = log.lock().unwrap();
        l.extend_from_slice(&buf[..n]);
        let len = l.len();
        if len > 64 * 1024 {
            l.drain(..len - 64 * 1024);
        }
    }
}

/// A running server process; killed when dropped.
pub struct Server {
    child: Option<Child>,
    /// The shared port (`-p`).
    pub port: u16,
    /// Per-core ports (`--core-ports`), core i at index i; empty unless asked for.
    pub core_ports: Vec<u16>,
    pub args: Vec<String>,
    log: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Start the server with these extra flags and wait until it accepts connections.
    /// A server whose items may be at most 2 KiB (`-I 2k`). memcached 1.6.18
    /// refuses `-I 2k` alone ("slab_chunk_max (bytes: 524288) cannot be larger
    /// than -I") and needs `-o slab_chunk_max=1024` as well.
    pub fn with_2k_items() -> Server {
        Server::builder()
            .args(&["-I", "2k"])
            .memcached_args(&["-o", "slab_chunk_max=1024"])
            .start()
    }

    pub fn start(args: &[&str]) -> Server {
        Server::builder().args(args).start()
    }

    /// A new client connection to the shared port.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// What the server printed so far (stdout and stderr, last 64 KiB).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The CPU time the server process has used so far (user and system).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // utime and stime, fields 14 and 15, counted after the command name.
        let ticks: u64 = (stat.rsplit_once(')').unwrap().1.split_whitespace())
            .skip(11)
            .take(2)
            .map(|field| field.parse::<u64>().unwrap())
            .sum();
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap();
        ticks as f64 / per_second as f64
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends SIGTERM (a clean shutdown) and waits up to `timeout` for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with(nix::sys::signal::Signal::SIGTERM, timeout)
    }

    /// Sends `signal` and waits up to `timeout` for the exit.
    pub fn stop_with(
        &mut self,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
        self.wait_exit(timeout)
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill_hard(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            // Short: a test may look at what the exit left behind at once.
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A blocking text-protocol client with read timeouts.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    pub port: u16,
}

/// Printable form of protocol bytes for failure messages.
pub fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b.iter().take(600) {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    if b.len() > 600 {
        s.push_str(&format!("... ({} bytes)", b.len()));
    }
    s
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            port,
        }
    }

    pub fn set_read_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Write all of `bytes`.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream
            .write_all(bytes.as_ref())
            .unwrap_or_else(|e| panic!("write to port {}: {e}", self.port));
    }

    /// Write, reporting errors instead of failing (for peers that may have closed).
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref())
    }

    /// Read more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 65536];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_or_panic(&mut self, what: &str) {
        match self.fill() {
            Ok(0) => panic!(
                "port {}: connection closed while waiting for {what}; have: {}",
                self.port,
                show(&self.buf)
            ),
            Ok(_) => {}
            Err(e) => panic!(
                "port {}: {e} while waiting for {what}; have: {}",
                self.port,
                show(&self.buf)
            ),
        }
    }

    /// One line without its `\r\n` (a bare `\n` also ends it), as a String.
    pub fn read_line(&mut self) -> String {
        let line = self.read_line_bytes();
        String::from_utf8(line.clone()).unwrap_or_else(|_| panic!("non-UTF-8 line {}", show(&line)))
    }

    pub fn read_line_bytes(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.iter().position(|&c| c == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return line;
            }
            self.fill_or_panic("a line");
        }
    }

    /// Exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill_or_panic(&format!("{n} bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Send `cmd` (exact bytes, including `\r\n` and any data block) and check that the
    /// next bytes the server sends are exactly `reply`.
    pub fn expect(&mut self, cmd: impl AsRef<[u8]>, reply: impl AsRef<[u8]>) {
        let cmd = cmd.as_ref();
        self.send(cmd);
        self.expect_reply_ctx(reply.as_ref(), cmd);
    }

    /// Check that the next bytes from the server are exactly `reply`.
    pub fn expect_reply(&mut self, reply: impl AsRef<[u8]>) {
        self.expect_reply_ctx(reply.as_ref(), b"");
    }

    fn expect_reply_ctx(&mut self, reply: &[u8], cmd: &[u8]) {
        loop {
            let n = self.buf.len().min(reply.len());
            if self.buf[..n] != reply[..n] {
                // Wrong already: collect a little more for the message, then fail.
                let _ = self
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(200)));
                let _ = self.fill();
                panic!(
                    "port {}: after sending {}\n  expected: {}\n  got:      {}",
                    self.port,
                    show(cmd),
                    show(reply),
                    show(&self.buf)
                );
            }
            if n == reply.len() {
                self.buf.drain(..n);
                return;
            }
            match self.fill() {
                Ok(0) => panic!(
                    "port {}: connection closed; after sending {}\n  expected: {}\n  got:      {}",
                    self.port,
                    show(cmd),
                    show(reply),
                    show(&self.buf)
                ),
                Ok(_) => {}
                Err(e) => panic!(
                    "port {}: {e}; after sending {}\n  expected: {}\n  got:      {}",
                    self.port,
                    show(cmd),
                    show(reply),
                    show(&self.buf)
                ),
            }
        }
    }

    /// Assert the server closes the connection (EOF or reset) within the read timeout,
    /// having sent nothing more than what is already buffered.
    pub fn expect_closed(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    break
                }
                Err(e) => panic!(
                    "port {}: expected the server to close the connection, got {e}; have: {}",
                    self.port,
                    show(&self.buf)
                ),
            }
        }
        assert!(
            self.buf.is_empty(),
            "port {}: unexpected bytes before close: {}",
            self.port,
            show(&self.buf)
        );
    }

    /// Data the server sent within `wait` without being asked (empty if none).
    pub fn read_available(&mut self, wait: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let _ = self.fill();
        self.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        std::mem::take(&mut self.buf)
    }

    /// A second handle on the socket, e.g. to write from another thread while this
    /// one reads (big pipelines would otherwise fill both socket buffers).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    // ---- small conveniences on top of the raw protocol ----

    /// Send `version` and assert the very next line is `VERSION <something>`: proves
    /// that nothing else (e.g. a reply to a `noreply` command) was sent before it.
    pub fn expect_version(&mut self) {
        self.send("version\r\n");
        let line = self.read_line();
        assert!(
            line.starts_with("VERSION ") && line.len() > 8,
            "port {}: expected VERSION <v>, got {line:?}",
            self.port
        );
    }

    /// `set key 0 0 len` and assert STORED.
    pub fn set(&mut self, key: &str, value: &[u8]) {
        self.set_full(key, 0, 0, value);
    }

    pub fn set_full(&mut self, key: &str, flags: u32, exptime: i64, value: &[u8]) {
        let mut cmd = format!("set {key} {flags} {exptime} {}\r\n", value.len()).into_bytes();
        cmd.extend_from_slice(value);
        cmd.extend_from_slice(b"\r\n");
        self.expect(cmd, "STORED\r\n");
    }

    /// `get key`: the value, or None on a miss.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.get_with_flags(key).map(|(_, value)| value)
    }

    /// `get key`: (flags, value), or None on a miss.
    pub fn get_with_flags(&mut self, key: &str) -> Option<(u32, Vec<u8>)> {
        self.send(format!("get {key}\r\n"));
        let line = self.read_line();
        if line == "END" {
            return None;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 4 && parts[0] == "VALUE" && parts[1] == key,
            "bad reply to get {key}: {line}"
        );
        let flags = parts[2].parse().unwrap();
        let value = self.read_exact(parts[3].parse().unwrap());
        self.expect_reply("\r\nEND\r\n");
        Some((flags, value))
    }

    /// One `VALUE` block of a retrieval's reply: the line for `key` with
    /// `flags`, then exactly `value` and its `\r\n`.
    pub fn expect_value(&mut self, key: &str, flags: u32, value: &[u8]) {
        self.expect_reply(format!("VALUE {key} {flags} {}\r\n", value.len()));
        assert_eq!(self.read_exact(value.len()), value, "value of {key}");
        self.expect_reply("\r\n");
    }

    /// `gets key`: (value, cas), or None on a miss.
    pub fn gets(&mut self, key: &str) -> Option<(Vec<u8>, u64)> {
        self.send(format!("gets {key}\r\n"));
        let line = self.read_line();
        if line == "END" {
            return None;
        }
        let parts: Vec<&str> = line.split(' ').collect();
        assert!(
            parts.len() == 5 && parts[0] == "VALUE" && parts[1] == key,
            "bad reply to gets {key}: {line}"
        );
        let len: usize = parts[3].parse().unwrap();
        let cas: u64 = parts[4].parse().unwrap();
        let v = self.read_exact(len);
        self.expect_reply("\r\nEND\r\n");
        Some((v, cas))
    }

    /// `stats [sub]` as a map of name -> value.
    pub fn stats(&mut self, sub: &str) -> HashMap<String, String> {
        if sub.is_empty() {
            self.send("stats\r\n");
        } else {
            self.send(format!("stats {sub}\r\n"));
        }
        let mut map = HashMap::new();
        loop {
            let line = self.read_line();
            if line == "END" {
                return map;
            }
            let mut it = line.splitn(3, ' ');
            assert_eq!(it.next(), Some("STAT"), "bad stats line: {line}");
            let name = it.next().expect("stat name").to_string();
            let value = it.next().unwrap_or("").to_string();
            map.insert(name, value);
        }
    }

    /// A numeric stat.
    pub fn stat(&mut self, name: &str) -> u64 {
        let s = self.stats("");
        s.get(name)
            .unwrap_or_else(|| panic!("stats has no {name}"))
            .parse()
            .unwrap_or_else(|_| panic!("stat {name} is not a number: {}", s[name]))
    }
}

/// Sleep for `secs` seconds (fractions allowed).
/// Resident memory of a process, from /proc/PID/status.
pub fn vmrss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

pub fn sleep_s(secs: f64) {
    thread::sleep(Duration::from_secs_f64(secs));
}

/// Current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// True when running in CI (the `CI` environment variable is set and not empty/false).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI"), Ok(v) if !v.is_empty() && v != "0" && v != "false")
}
