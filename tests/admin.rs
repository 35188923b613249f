//! Administrative commands and server flags: version, verbosity, quit, stats,
//! stats settings, cachedump, cache_memlimit, shutdown (-A), -C, -F.
//! Every expected reply here was checked against memcached 1.6.18.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn version_command() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send("version\r\n");
    let line = c.read_line();
    let v = line.strip_prefix("VERSION ").expect("VERSION <v>");
    assert!(!v.is_empty() && !v.contains(' '), "{line:?}");
    assert_eq!(c.stats("")["version"], v);
}

#[test]
fn verbosity_command() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("verbosity 1\r\n", "OK\r\n");
    c.expect("verbosity 0\r\n", "OK\r\n");
    c.expect("verbosity\r\n", "ERROR\r\n");
    c.expect("verbosity 1 2 3\r\n", "ERROR\r\n");
    c.send("verbosity 1 noreply\r\n");
    c.expect_version();
    // memcached reads the level with strtoul: a sign or a non-number is refused,
    // a large level is not.
    let bad = "CLIENT_ERROR bad command line format\r\n";
    c.expect("verbosity abc\r\n", bad);
    c.expect("verbosity -1\r\n", bad);
    c.expect("verbosity +1\r\n", "OK\r\n");
    c.expect("verbosity 99999999999\r\n", "OK\r\n");
    c.send("verbosity abc noreply\r\n");
    c.expect_version();
    // Levels past 2 are kept as 2; a lone noreply is a level it cannot read.
    c.expect("verbosity 5\r\n", "OK\r\n");
    c.send("verbosity noreply\r\n");
    assert_eq!(c.stats("settings")["verbosity"], "2");
}

#[test]
fn quit_closes_connection() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("quit\r\n", "");
    c.expect_closed();
    // Commands before quit are answered; the ones after it are not.
    let mut c = s.client();
    c.send("set k 0 0 1\r\nx\r\nget k\r\nquit\r\nget k\r\n");
    c.expect_reply("STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n");
    c.expect_closed();
    // memcached looks only at the command token.
    let mut c = s.client();
    c.expect("quit now\r\n", "");
    c.expect_closed();
    s.client().expect_version();
}

#[test]
fn stats_has_the_usual_fields() {
    let s = Server::start(&["-m", "32", "-t", "2"]);
    let mut c = s.client();
    let st = c.stats("");
    for name in [
        "pid",
        "uptime",
        "time",
        "version",
        "curr_connections",
        "total_connections",
        "rejected_connections",
        "cmd_get",
        "cmd_set",
        "cmd_flush",
        "cmd_touch",
        "get_hits",
        "get_misses",
        "delete_hits",
        "delete_misses",
        "incr_hits",
        "incr_misses",
        "decr_hits",
        "decr_misses",
        "cas_hits",
        "cas_misses",
        "cas_badval",
        "touch_hits",
        "touch_misses",
        "bytes_read",
        "bytes_written",
        "curr_items",
        "total_items",
        "bytes",
        "evictions",
        "limit_maxbytes",
        "threads",
    ] {
        assert!(st.contains_key(name), "stats has no {name}: {st:?}");
    }
    // Text-valued fields: memcached's version and libevent; corecache's routing
    // contract (the names of its key hash and owner function).
    let text_fields = ["version", "libevent", "key_hash", "core_owner"];
    for (name, v) in &st {
        if !text_fields.contains(&name.as_str()) && !name.starts_with("rusage") {
            assert!(v.parse::<f64>().is_ok(), "stat {name} is not a number: {v}");
        }
    }
    assert_eq!(st["pid"], s.pid().to_string());
    let time: i64 = st["time"].parse().unwrap();
    assert!((time - unix_now()).abs() <= 2, "stats time {time} is off");
    assert_eq!(st["limit_maxbytes"], "33554432");
    if !is_memcached() {
        assert_eq!(st["key_hash"], "xxh3_64");
        assert_eq!(st["core_owner"], "jump_consistent_hash");
        assert!(st["cores"].parse::<u64>().unwrap() >= 1);
    }
    assert_eq!(st["threads"], "2");
    assert_eq!(st["curr_items"], "0");
    assert_eq!(st["evictions"], "0");
}

#[test]
fn stats_counters_move() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let before = c.stats("");
    let n =
        |m: &std::collections::HashMap<String, String>, k: &str| -> u64 { m[k].parse().unwrap() };
    c.set("a", b"1");
    c.set("b", b"2");
    c.set("a", b"3");
    c.expect("get a missing1 missing2\r\n", "VALUE a 0 1\r\n3\r\nEND\r\n");
    c.expect("get b\r\n", "VALUE b 0 1\r\n2\r\nEND\r\n");
    c.expect("delete b\r\n", "DELETED\r\n");
    c.expect("delete b\r\n", "NOT_FOUND\r\n");
    c.expect("incr a 1\r\n", "4\r\n");
    c.expect("touch a 0\r\n", "TOUCHED\r\n");
    let after = c.stats("");
    // Each key of a multi-get counts as one get.
    assert_eq!(n(&after, "cmd_get") - n(&before, "cmd_get"), 4);
    assert_eq!(n(&after, "get_hits") - n(&before, "get_hits"), 2);
    assert_eq!(n(&after, "get_misses") - n(&before, "get_misses"), 2);
    assert_eq!(n(&after, "cmd_set") - n(&before, "cmd_set"), 3);
    assert_eq!(n(&after, "delete_hits") - n(&before, "delete_hits"), 1);
    assert_eq!(n(&after, "delete_misses") - n(&before, "delete_misses"), 1);
    assert_eq!(n(&after, "incr_hits") - n(&before, "incr_hits"), 1);
    assert_eq!(n(&after, "touch_hits") - n(&before, "touch_hits"), 1);
    assert_eq!(n(&after, "curr_items"), 1);
    // 3 sets; memcached 1.6.18 does an incr whose result fits in place without a new
    // item (so 3 there), a server that stores a new item for it would count 4.
    let total = n(&after, "total_items") - n(&before, "total_items");
    assert!((3..=4).contains(&total), "total_items grew by {total}");
    assert!(n(&after, "bytes_read") > n(&before, "bytes_read"));
    assert!(n(&after, "bytes_written") > n(&before, "bytes_written"));
    c.expect("flush_all\r\n", "OK\r\n");
    assert_eq!(c.stat("cmd_flush") - n(&before, "cmd_flush"), 1);
    c.expect("stats reset\r\n", "RESET\r\n");
    assert_eq!(c.stat("get_hits"), 0);
}

/// Poll a stat until it equals `want` (connection open/close is seen asynchronously).
fn wait_for_stat(c: &mut Client, name: &str, want: u64) {
    let mut got = 0;
    for _ in 0..100 {
        got = c.stat(name);
        if got == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("stat {name} is {got}, expected {want}");
}

#[test]
fn stats_counts_connections() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // Let the server notice the start-up probe connection going away.
    std::thread::sleep(Duration::from_millis(200));
    let cur0 = c.stat("curr_connections");
    let tot0 = c.stat("total_connections");
    let extra: Vec<Client> = (0..3)
        .map(|_| {
            let mut e = s.client();
            e.expect_version();
            e
        })
        .collect();
    wait_for_stat(&mut c, "curr_connections", cur0 + 3);
    assert!(c.stat("total_connections") >= tot0 + 3);
    drop(extra);
    wait_for_stat(&mut c, "curr_connections", cur0);
}

#[test]
fn stats_settings_reflect_flags() {
    let s = Server::start(&["-m", "32", "-c", "100", "-I", "2m"]);
    let mut c = s.client();
    let st = c.stats("settings");
    assert_eq!(st["maxbytes"], "33554432");
    assert_eq!(st["maxconns"], "100");
    assert_eq!(st["tcpport"], s.port.to_string());
    assert_eq!(st["item_size_max"], "2097152");
    // Defaults.
    let s = Server::start(&[]);
    let st = s.client().stats("settings");
    assert_eq!(st["maxbytes"], "67108864");
    assert_eq!(st["maxconns"], "1024");
    assert_eq!(st["item_size_max"], "1048576");
    assert_eq!(st["cas_enabled"], "yes");
    assert_eq!(st["flush_enabled"], "yes");
}

#[test]
fn stats_subcommand_errors() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("stats nonsense\r\n", "ERROR\r\n");
    c.expect("stats cachedump\r\n", "CLIENT_ERROR bad command line\r\n");
    c.expect_version();
}

#[test]
fn stats_cachedump() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("stats cachedump 1 0\r\n", "END\r\n");
    for i in 0..20 {
        c.set(&format!("k{i}"), b"v");
    }
    // memcached 1.6.18 dumps only the COLD LRU, so freshly set items may not be listed:
    // either `ITEM <key> [<bytes> b; <exptime> s]` lines or just END.
    c.send("stats cachedump 1 0\r\n");
    loop {
        let line = c.read_line();
        if line == "END" {
            break;
        }
        let rest = line
            .strip_prefix("ITEM ")
            .unwrap_or_else(|| panic!("{line}"));
        let (key, meta) = rest.split_once(' ').unwrap();
        assert!(key.starts_with('k'), "{line}");
        assert!(
            meta.starts_with('[') && meta.ends_with(" s]") && meta.contains(" b; "),
            "{line}"
        );
    }
}

/// A dump of everything is capped, as memcached caps its at 2 MB: here per core.
#[test]
fn stats_cachedump_output_is_capped() {
    if skip_unless_corecache("cachedump of every LRU segment") {
        return;
    }
    let s = Server::start(&["-m", "64", "-t", "1"]);
    let mut c = s.client();
    let prefix = "k".repeat(240);
    let mut batch = Vec::new();
    for i in 0..12_000 {
        batch.extend_from_slice(format!("set {prefix}{i:05} 0 0 1 noreply\r\nv\r\n").as_bytes());
    }
    c.send(&batch);
    c.expect_version();
    let slabs = c.stats("slabs");
    let class = slabs
        .iter()
        .find(|(k, v)| k.ends_with(":used_chunks") && v.parse::<u64>().unwrap() >= 12_000)
        .map(|(k, _)| k.split(':').next().unwrap().to_string())
        .expect("one class holds the items");
    c.send(format!("stats cachedump {class} 0\r\n"));
    let (mut lines, mut bytes) = (0, 0);
    loop {
        let line = c.read_line();
        if line == "END" {
            break;
        }
        assert!(line.starts_with("ITEM k"), "{line}");
        lines += 1;
        bytes += line.len() + 2;
    }
    assert!(bytes <= 2 << 20, "{bytes} bytes dumped");
    assert!(lines > 7_000 && lines < 12_000, "{lines} lines");
}

#[test]
fn cache_memlimit() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("cache_memlimit 100\r\n", "OK\r\n");
    // memcached 1.6.18 reports the new limit in stats (stats settings keeps the -m value).
    assert_eq!(c.stats("")["limit_maxbytes"], "104857600");
    c.send("cache_memlimit 128 noreply\r\n");
    c.expect_version();
    assert_eq!(c.stats("")["limit_maxbytes"], "134217728");
}

#[test]
fn shutdown_not_enabled_without_a() {
    let mut s = Server::start(&[]);
    let mut c = s.client();
    c.expect("shutdown\r\n", "ERROR: shutdown not enabled\r\n");
    c.expect("shutdown graceful\r\n", "ERROR: shutdown not enabled\r\n");
    c.expect_version();
    assert!(s.try_wait().is_none(), "server exited");
}

#[test]
fn shutdown_with_a_exits() {
    let mut s = Server::start(&["-A"]);
    let mut c = s.client();
    c.set("k", b"v");
    c.expect("shutdown\r\n", "");
    c.expect_closed();
    let status = s
        .wait_exit(Duration::from_secs(5))
        .expect("server still running 5 s after shutdown");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn cas_disabled_with_big_c() {
    let s = Server::start(&["-C"]);
    let mut c = s.client();
    c.set("k", b"v");
    c.expect("gets k\r\n", "VALUE k 0 1 0\r\nv\r\nEND\r\n");
    // memcached 1.6.18 with -C: every cas on an existing item is EXISTS, even with the
    // cas 0 that gets showed; on a missing item it is NOT_FOUND.
    c.expect("cas k 0 0 1 0\r\nx\r\n", "EXISTS\r\n");
    c.expect("cas k 0 0 1 5\r\nx\r\n", "EXISTS\r\n");
    c.expect("cas missing 0 0 1 0\r\nx\r\n", "NOT_FOUND\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    assert_eq!(c.stats("settings")["cas_enabled"], "no");
}

#[test]
fn flush_disabled_with_big_f() {
    let s = Server::start(&["-F"]);
    let mut c = s.client();
    c.set("k", b"v");
    c.expect("flush_all\r\n", "CLIENT_ERROR flush_all not allowed\r\n");
    c.expect("flush_all 2\r\n", "CLIENT_ERROR flush_all not allowed\r\n");
    c.send("flush_all noreply\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    assert_eq!(c.stats("settings")["flush_enabled"], "no");
}

/// SIGTERM, SIGINT and SIGUSR1 (memcached's graceful stop): requests already
/// received are answered, then exit 0.
#[test]
fn signals_drain_and_exit_cleanly() {
    for signal in ["TERM", "INT", "USR1"] {
        let mut s = Server::start(&["-t", "2"]);
        let mut c = s.client();
        c.set("k", b"v");
        // A pipeline the server has received, and is answering when the signal
        // arrives, is answered to the end. (It fits one receive buffer, and its
        // first reply is read before the signal: bytes the server never read
        // before it stopped reading cannot be answered, and a socket closed
        // with them unread is reset.)
        let mut pipeline = Vec::new();
        for i in 0..100 {
            pipeline
                .extend_from_slice(format!("set key{i} 0 0 1\r\nx\r\nget key{i}\r\n").as_bytes());
        }
        assert!(pipeline.len() < 8192);
        c.send(&pipeline);
        c.expect_reply("STORED\r\n");
        let kill = std::process::Command::new("kill")
            .args([format!("-{signal}"), s.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        for i in 0..100 {
            if i > 0 {
                c.expect_reply("STORED\r\n");
            }
            c.expect_reply(format!("VALUE key{i} 0 1\r\nx\r\nEND\r\n"));
        }
        let status = s
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("server still running 10 s after SIG{signal}"));
        assert!(status.success(), "SIG{signal}: exit status {status}");
    }
}

/// A stopped server leaves its ports free when it exits, so one started in
/// its place at once (a restart) can bind them. corecache's accepts live in
/// io_uring, which let go of the listening sockets only some milliseconds
/// after the process had gone, until the drain came to cancel them first.
#[test]
fn ports_are_free_once_a_stopped_server_exits() {
    let core_ports = if is_memcached() { 0 } else { 2 };
    for _ in 0..5 {
        let mut s = Server::builder()
            .args(&["-t", "2"])
            .core_ports(core_ports)
            .start();
        s.client().expect_version();
        let status = s
            .terminate(Duration::from_secs(10))
            .expect("exits after SIGTERM");
        assert!(status.success(), "exit status {status}");
        for port in std::iter::once(s.port).chain(s.core_ports.iter().copied()) {
            let bound = std::net::TcpListener::bind(("127.0.0.1", port));
            assert!(bound.is_ok(), "port {port} still taken: {bound:?}");
        }
    }
}

/// `-c` connections need as many descriptors: a lower soft limit is raised at
/// start-up (memcached sets it to `-c`; corecache only raises it).
#[test]
fn the_open_files_limit_is_raised_for_c() {
    if skip_unless_corecache("corecache raises the soft limit only") {
        return;
    }
    let s = Server::builder()
        .args(&["-t", "2", "-c", "4000"])
        .open_files_limit(256, 8192)
        .start();
    let soft = open_files_soft_limit(s.pid());
    assert!((4000..=8192).contains(&soft), "soft limit {soft}");
}

/// A process's soft RLIMIT_NOFILE, from /proc.
fn open_files_soft_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Out of file descriptors, accepting pauses (`listen_disabled_num`, as in
/// memcached) instead of failing again at once: the core does not spin, and
/// a client left in the listen backlog is served once a connection closes.
#[test]
fn out_of_descriptors_accepting_pauses_until_a_connection_closes() {
    if skip_unless_corecache("corecache's accept pause") {
        return;
    }
    let mut s = Server::builder()
        .args(&["-t", "1", "-c", "1000"])
        .open_files_limit(64, 64)
        .start();
    if open_files_soft_limit(s.pid()) > 64 {
        println!("SKIPPED: the server could raise the test's open files limit");
        return;
    }
    let mut c = s.client();
    // More connections than descriptors: the last ones wait in the backlog.
    let mut clients: Vec<std::net::TcpStream> = (0..100)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = s.cpu_seconds();
    let pauses = c.stat("listen_disabled_num");
    std::thread::sleep(Duration::from_secs(1));
    let spent = s.cpu_seconds() - before;
    // A core that retried the failing accept at once used the whole second.
    assert!(spent < 0.5, "{spent} s of CPU in 1 s with nothing to serve");
    // Paused, and counted once however often the listener tried again.
    assert!(pauses >= 1);
    assert_eq!(c.stat("listen_disabled_num"), pauses);
    drop(c);

    let mut waiting = clients.pop().unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    waiting.write_all(b"version\r\n").unwrap();
    clients.truncate(40);
    let mut reply = [0u8; 8];
    waiting.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"VERSION ");

    // Paused again, and a shutdown closes the resting listener without
    // waiting for an accept that is not armed.
    clients.extend((0..100).map(|_| std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap()));
    std::thread::sleep(Duration::from_millis(100));
    let status = s
        .terminate(Duration::from_secs(5))
        .expect("exits within the drain deadline");
    assert!(status.success(), "exit status {status}");
}

/// A listening socket destroyed from outside (`ss -K`) fails every accept
/// with EINVAL: the listener rests between tries instead of spinning.
#[test]
fn a_destroyed_listener_does_not_spin_the_core() {
    if skip_unless_corecache("corecache's accept pause") {
        return;
    }
    let s = Server::start(&["-t", "1"]);
    let filter = format!("sport = :{}", s.port);
    let killed = std::process::Command::new("ss")
        .args(["-K", "-a", "state", "listening", &filter])
        .output();
    std::thread::sleep(Duration::from_millis(200));
    if killed.is_err() || std::net::TcpStream::connect(("127.0.0.1", s.port)).is_ok() {
        println!("SKIPPED: this kernel or user cannot destroy sockets (ss -K)");
        return;
    }
    let before = s.cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let spent = s.cpu_seconds() - before;
    assert!(spent < 0.5, "{spent} s of CPU in 1 s with nothing to serve");
    assert!(
        s.output().matches("accepting paused").count() <= 1,
        "{}",
        s.output()
    );
}

/// Bad flags and values: a message and exit code 2, before anything listens.
#[test]
fn bad_flags_exit_with_code_two() {
    if skip_unless_corecache("corecache's exit codes") {
        return;
    }
    for args in [
        &["-I", "512"][..],
        &["-m", "1", "-I", "1m"],
        &["-t", "0"],
        &["--no-such-flag"],
        &["-p", "notaport"],
        &["-o", "no_such_option"],
    ] {
        let out = std::process::Command::new(server_path())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

/// `stats` reports the eviction policy: its lists and its admission duels.
#[test]
fn stats_report_the_eviction_policy() {
    if skip_unless_corecache("W-TinyLFU figures in stats") {
        return;
    }
    let s = Server::start(&["-m", "8", "-t", "1"]);
    let mut c = s.client();
    let value = vec![b'v'; 1000];
    let mut batch = Vec::new();
    for i in 0..20_000 {
        batch.extend_from_slice(format!("set k{i} 0 0 {} noreply\r\n", value.len()).as_bytes());
        batch.extend_from_slice(&value);
        batch.extend_from_slice(b"\r\n");
    }
    c.send(&batch);
    c.expect_version();
    let st = c.stats("");
    let n = |name: &str| -> u64 { st[name].parse().unwrap() };
    assert!(n("evictions") > 0, "{st:?}");
    assert!(
        n("policy_admissions") + n("policy_rejections") > 0,
        "{st:?}"
    );
    assert_eq!(
        n("policy_window_items") + n("policy_probation_items") + n("policy_protected_items"),
        n("curr_items")
    );
    assert!(n("policy_window_permille") >= 1 && n("policy_window_permille") < 1000);
    assert!(n("policy_sketch_bytes") > 0);
}

/// `stats slabs` and `stats items` cover every core's shard, whichever core answers.
#[test]
fn stats_slabs_and_items_sum_over_the_cores() {
    if skip_unless_corecache("per-core shards") {
        return;
    }
    let s = Server::start(&["-t", "2"]);
    let mut c = s.client();
    for i in 0..200 {
        c.set(&format!("k{i}"), b"0123456789");
    }
    // Other cores publish their classes once a second.
    sleep_s(1.5);
    let items = c.stats("items");
    let number: u64 = items
        .iter()
        .filter(|(name, _)| name.ends_with(":number"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(number, 200, "{items:?}");
    let slabs = c.stats("slabs");
    let used: u64 = slabs
        .iter()
        .filter(|(name, _)| name.ends_with(":used_chunks"))
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum();
    assert_eq!(used, 200, "{slabs:?}");
}

/// memcached's -d and -P: the command returns at once, the server runs in the
/// background with its pid in the file, and removes the file on a clean exit.
#[test]
fn daemon_mode_writes_and_removes_the_pid_file() {
    if skip_unless_corecache("corecache's -d/-P") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("corecache-pid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("corecache.pid");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let status = std::process::Command::new(server_path())
        .args([
            "-d",
            "-P",
            pidfile.to_str().unwrap(),
            "-p",
            &port.to_string(),
        ])
        .args(["-l", "127.0.0.1", "-t", "1", "-U", "0"])
        .status()
        .unwrap();
    assert!(status.success(), "the launching process exits 0");
    let mut pid = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = text.trim().parse::<i32>() {
                pid = Some(p);
                break;
            }
        }
        sleep_s(0.05);
    }
    let pid = pid.expect("pid file written");
    let mut c = None;
    for _ in 0..100 {
        if let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            c = Some(stream);
            break;
        }
        sleep_s(0.05);
    }
    let mut stream = c.expect("the daemon serves");
    use std::io::{Read, Write};
    stream.write_all(b"version\r\n").unwrap();
    let mut reply = [0u8; 8];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"VERSION ");
    drop(stream);
    let pid = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    for _ in 0..200 {
        if !pidfile.exists() {
            break;
        }
        sleep_s(0.05);
    }
    assert!(!pidfile.exists(), "pid file removed on a clean exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// memcached's -u: started as root, the server runs as that user once its
/// ports are bound.
#[test]
fn u_drops_root_privileges() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root to drop privileges");
        return;
    }
    let s = Server::start(&["-u", "nobody", "-t", "2"]);
    s.client().expect_version();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    // Every thread, the cores included, runs as that user.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", s.pid())).unwrap();
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<u32> = uid_line
            .split_whitespace()
            .skip(1)
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(uids.iter().all(|&u| u == nobody.as_raw()), "{uid_line}");
    }
}
