//! Clients nobody here wrote, run against the real server binary:
//! - libmemcached's `memccapable -a` (the ASCII protocol conformance checks; Debian's
//!   libmemcached-tools names it `memccapable`, other builds `memcapable`);
//! - pymemcache's own integration tests (`pymemcache/test/test_integration.py`, shipped
//!   in the pymemcache wheel), run with pytest against our port;
//! - meta-memcache (PyPI `meta-memcache`), a meta-protocol client, driven by
//!   `tests/clients/meta_memcache_check.py` (its herd-control policies included).
//!
//! A missing tool skips the test with a note, except in CI (`CI` set), where it fails:
//! `.ci/run` installs them. `CORECACHE_TEST_PYTHON` picks the Python interpreter
//! (default `python3`); `.ci/run` points it at a venv holding pymemcache, pytest and
//! meta-memcache.

mod common;
use common::*;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `cmd` with a wall-clock limit; returns (success, combined output).
fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    text.push_str(&String::from_utf8_lossy(&t_err.join().unwrap()));
    match status {
        Some(st) => (st.success(), text),
        None => (false, format!("TIMED OUT after {limit:?}\n{text}")),
    }
}

/// The first of `names` found on PATH.
fn find_tool(names: &[&str]) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    None
}

/// Skip (outside CI) or fail (in CI) because a tool is missing.
fn missing(what: &str) {
    if in_ci() {
        panic!("{what} is missing, and CI is set: .ci/run should have installed it");
    }
    println!("SKIPPED: {what} is not installed (this is a failure when CI is set)");
}

#[test]
fn memccapable_ascii() {
    let Some(tool) = find_tool(&["memccapable", "memcapable"]) else {
        return missing("memccapable (apt-get install libmemcached-tools)");
    };
    let s = Server::start(&[]);
    let (ok, out) = run_with_timeout(
        Command::new(&tool).args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-a",
            "-t",
            "5",
        ]),
        Duration::from_secs(60),
    );
    println!("{out}");
    assert!(
        ok && out.contains("All tests passed") && !out.contains("[FAIL]"),
        "{tool} -a failed against {}:\n{out}\nserver output:\n{}",
        server_path(),
        s.output()
    );
}

#[test]
fn pymemcache_integration_suite() {
    let python = std::env::var("CORECACHE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    // Where the installed pymemcache keeps its tests (and pytest is importable).
    let probe = Command::new(&python)
        .args([
            "-c",
            "import os, pytest, pymemcache.test as t; print(os.path.dirname(t.__file__))",
        ])
        .output();
    let dir = match probe {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
        _ => return missing(&format!("pymemcache + pytest for {python}")),
    };
    let file = format!("{dir}/test_integration.py");
    if !std::path::Path::new(&file).is_file() {
        return missing(&format!("{file} (the pymemcache wheel ships it)"));
    }
    let s = Server::start(&[]);
    // The file path (not --pyargs) so pytest loads the package's conftest.py, which
    // defines --server/--port. No cache dir: the site-packages tree may be read-only.
    let (ok, out) = run_with_timeout(
        Command::new(&python)
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "ignore::pytest.PytestUnknownMarkWarning",
                &file,
                "--server",
                "127.0.0.1",
                "--port",
                &s.port.to_string(),
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(std::env::temp_dir()),
        Duration::from_secs(120),
    );
    println!("{out}");
    assert!(
        ok && out.contains(" passed") && !out.contains(" failed") && !out.contains(" error"),
        "pymemcache integration tests failed against {}:\n{out}\nserver output:\n{}",
        server_path(),
        s.output()
    );
}

/// meta-memcache (PyPI), a meta-protocol client: `tests/clients/meta_memcache_check.py`
/// drives it against a two-core server, herd-control policies included.
#[test]
fn meta_memcache_client() {
    let python = std::env::var("CORECACHE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&python)
        .args(["-c", "import meta_memcache"])
        .output();
    if !matches!(probe, Ok(ref o) if o.status.success()) {
        return missing(&format!(
            "meta-memcache for {python} (pip install meta-memcache)"
        ));
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/meta_memcache_check.py"
    );
    let s = Server::start(&["-t", "2"]);
    let (ok, out) = run_with_timeout(
        Command::new(&python)
            .args([script, &s.port.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(60),
    );
    println!("{out}");
    assert!(
        ok && out.contains("checks passed"),
        "meta-memcache checks failed against {}:\n{out}\nserver output:\n{}",
        server_path(),
        s.output()
    );
}

/// twemproxy (nutcracker) in front of two corecache servers: keys are spread
/// over both by ketama, and every set reads back through the proxy.
#[test]
fn twemproxy_in_front_of_two_servers() {
    let Some(tool) = find_tool(&["nutcracker"]) else {
        return missing("nutcracker (apt-get install nutcracker)");
    };
    let a = Server::start(&["-t", "2"]);
    let b = Server::start(&["-t", "2"]);
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (proxy_port, stats_port) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("corecache-twem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nutcracker.yml");
    std::fs::write(
        &conf,
        format!(
            "pool:\n  listen: 127.0.0.1:{proxy_port}\n  hash: fnv1a_64\n  distribution: ketama\n  \
             timeout: 2000\n  auto_eject_hosts: false\n  servers:\n   - 127.0.0.1:{}:1 a\n   - \
             127.0.0.1:{}:1 b\n",
            a.port, b.port
        ),
    )
    .unwrap();
    let mut proxy = Command::new(&tool)
        .args(["-c", conf.to_str().unwrap()])
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut proxy);
    let mut c = None;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_ok() {
            c = Some(Client::connect(proxy_port));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = c.expect("nutcracker listens");
    for i in 0..200 {
        c.set(&format!("user:{i}"), format!("profile {i}").as_bytes());
    }
    for i in 0..200 {
        assert_eq!(
            c.get(&format!("user:{i}")),
            Some(format!("profile {i}").into_bytes())
        );
    }
    c.expect("delete user:7\r\n", "DELETED\r\n");
    c.expect("get user:7\r\n", "END\r\n");
    // Both servers got a share of the keys.
    let held_a = a.client().stat("curr_items");
    let held_b = b.client().stat("curr_items");
    assert_eq!(held_a + held_b, 199);
    assert!(held_a > 20 && held_b > 20, "{held_a} / {held_b}");
    let _ = std::fs::remove_dir_all(&dir);
}
