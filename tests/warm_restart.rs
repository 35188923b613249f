//! Warm restart (`--memory-file`, memcached's `-e`) on the real binary: items
//! stored before a clean shutdown (SIGTERM, or SIGUSR1 as for memcached) are
//! all there after the next start;
//! after a crash (SIGKILL) the next start is empty.

mod common;
use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A fresh directory on tmpfs (or the temp dir if there is no /dev/shm),
/// removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let shm = std::path::Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = root.join(format!(
            "corecache-test-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn value_of(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 300)).into_bytes()
}

/// Waits up to 3 s for `needle` in the server's output.
fn wait_for_output(s: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if s.output().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn items_survive_a_clean_restart_and_not_a_crash() {
    if skip_unless_corecache("--memory-file files are PATH.<core>") {
        return;
    }
    const KEYS: usize = 1000;
    let dir = Dir::new("warm");
    let base = dir.0.join("cache");
    let base = base.to_str().unwrap();
    let args = ["-t", "2", "-m", "64", "-v", "--memory-file", base];

    let mut s = Server::start(&args);
    let mut c = s.client();
    for i in 0..KEYS {
        c.set_full(&format!("key:{i}"), i as u32 * 3, 0, &value_of(i));
    }
    // Items whose CAS a client chose (`E`), above the server's counter and 0.
    c.expect("ms e:high 1 E999999999\r\nh\r\n", "HD\r\n");
    c.expect("ms e:zero 1 E0\r\nz\r\n", "HD\r\n");
    assert_eq!(c.stat("curr_items"), KEYS as u64 + 2, "nothing was evicted");
    let cas_before = c.gets("key:0").unwrap().1;
    drop(c);
    let status = s
        .terminate(Duration::from_secs(15))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}; output:\n{}", s.output());
    for core in 0..2 {
        assert!(
            dir.0.join(format!("cache.{core}")).exists(),
            "no file for core {core}"
        );
    }

    // Clean restart: every key, value and flags is back, on both cores.
    let mut s = Server::start(&args);
    for core in 0..2 {
        let needle = format!("core {core}: warm restart");
        assert!(wait_for_output(&s, &needle), "output:\n{}", s.output());
    }
    // Both cores had keys to bring back.
    for core in 0..2 {
        let prefix = format!("core {core}: warm restart: ");
        let line = s
            .output()
            .lines()
            .find(|l| l.contains(&prefix))
            .map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("no {prefix:?} line:\n{}", s.output()));
        assert!(!line.contains(": 0 items"), "{line}");
    }
    let mut c = s.client();
    assert_eq!(c.stat("curr_items"), KEYS as u64 + 2);
    c.expect("mg e:high v c\r\n", "VA 1 c999999999\r\nh\r\n");
    c.expect("mg e:zero v c\r\n", "VA 1 c0\r\nz\r\n");
    for i in 0..KEYS {
        let key = format!("key:{i}");
        assert_eq!(
            c.get_with_flags(&key),
            Some((i as u32 * 3, value_of(i))),
            "{key}"
        );
    }
    assert_eq!(c.gets("key:0").unwrap().1, cas_before, "CAS is kept");
    c.set("after", b"restart");
    assert!(
        c.gets("after").unwrap().1 > cas_before,
        "CAS keeps increasing"
    );
    drop(c);

    // A crash: the files are not marked clean, so the next start is empty.
    s.kill_hard();
    let s = Server::start(&args);
    assert!(
        wait_for_output(&s, "did not shut down cleanly"),
        "output:\n{}",
        s.output()
    );
    let mut c = s.client();
    assert_eq!(c.stat("curr_items"), 0);
    assert_eq!(c.get("key:0"), None);
}

/// memcached's warm restart is documented as "stop it with SIGUSR1": the
/// same procedure keeps corecache's items.
#[test]
fn sigusr1_stops_cleanly_and_keeps_the_items() {
    if skip_unless_corecache("--memory-file files are PATH.<core>") {
        return;
    }
    let dir = Dir::new("usr1");
    let base = dir.0.join("cache");
    let args = [
        "-t",
        "2",
        "-m",
        "64",
        "-v",
        "--memory-file",
        base.to_str().unwrap(),
    ];
    let mut s = Server::start(&args);
    let mut c = s.client();
    for i in 0..100 {
        c.set(&format!("key:{i}"), &value_of(i));
    }
    drop(c);
    let status = s
        .stop_with(nix::sys::signal::Signal::SIGUSR1, Duration::from_secs(15))
        .expect("exits on SIGUSR1");
    assert!(status.success(), "{status}; output:\n{}", s.output());
    let s = Server::start(&args);
    let mut c = s.client();
    assert_eq!(c.stat("curr_items"), 100, "output:\n{}", s.output());
    for i in 0..100 {
        assert_eq!(c.get(&format!("key:{i}")), Some(value_of(i)));
    }
}

#[test]
fn a_memory_file_in_a_missing_directory_is_refused() {
    if skip_unless_corecache("--memory-file check") {
        return;
    }
    let dir = Dir::new("missing");
    let path = dir.0.join("no-such-dir").join("cache");
    let out = std::process::Command::new(server_path())
        .args(["-p", "0", "--memory-file", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn cache_memlimit_cannot_grow_past_the_memory_file() {
    if skip_unless_corecache("--memory-file limit") {
        return;
    }
    let dir = Dir::new("memlimit");
    let base = dir.0.join("cache");
    let s = Server::start(&["-t", "1", "-m", "16", "-e", base.to_str().unwrap()]);
    let mut c = s.client();
    c.expect(
        "cache_memlimit 32\r\n",
        "SERVER_ERROR cannot raise the memory limit above -m with --memory-file\r\n",
    );
    c.expect("cache_memlimit 8\r\n", "OK\r\n");
    c.expect("cache_memlimit 16\r\n", "OK\r\n");
    assert_eq!(c.stat("limit_maxbytes"), 16 << 20);
}
