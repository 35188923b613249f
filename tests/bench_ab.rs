//! `corecache-bench ab`: two builds of the server started in alternated rounds,
//! each charged the CPU time it spent per request.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corecache-ab-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `corecache-bench ab` with both sides the corecache under test, a small
/// workload, and `extra`. Each test gives its own `--base-port`: the two run
/// at the same time (ports this low are free of the other test files'
/// servers, which `cargo test` runs one file at a time).
fn ab(dir: &Path, extra: &[&str]) -> Output {
    let server = env!("CARGO_BIN_EXE_corecache");
    Command::new(env!("CARGO_BIN_EXE_corecache-bench"))
        .args(["ab", "--a", server, "--b", server, "--memory-mb", "64"])
        .args(["--keys", "2000", "--conns", "4", "--pipeline", "4"])
        // One CPU for all: a functional test, not a measurement.
        .args(["--server-cpus", "0", "--client-cpus", "0"])
        .arg("--logs")
        .arg(dir.join("logs"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn ab_alternates_the_two_servers_and_charges_each_its_cpu_per_request() {
    let dir = scratch("alternates");
    let json = dir.join("ab.json");
    let out = ab(
        &dir,
        &[
            "--b-args",
            "-C",
            "--rounds",
            "2",
            "--duration",
            "0.4",
            "--warmup",
            "0.1",
            "--base-port",
            "24100",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let order: Vec<(u64, &str)> = runs
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["side"].as_str().unwrap()))
        .collect();
    assert_eq!(order, [(1, "A"), (1, "B"), (2, "B"), (2, "A")]);
    let total = |r: &serde_json::Value| r["cost"]["total_ns"].as_f64().unwrap();
    for r in runs {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        let user = r["cost"]["user_ns"].as_f64().unwrap();
        assert!(total(r) > 0.0 && (0.0..=total(r)).contains(&user), "{r}");
    }
    // Each round's ratio is its own B over its own A, in round order.
    let ratios: Vec<f64> = report["summary"]["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_f64().unwrap())
        .collect();
    let expected = [
        total(&runs[1]) / total(&runs[0]),
        total(&runs[2]) / total(&runs[3]),
    ];
    assert_eq!(ratios.len(), 2);
    for (got, want) in ratios.iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-9 * want,
            "{ratios:?} against {expected:?}"
        );
    }
    assert!(text.contains("B/A by round:"), "{text}");
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.iter().filter(|l| l.starts_with("A-")).count(), 2);
    assert_eq!(logs.iter().filter(|l| l.starts_with("B-")).count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs one round of `ab` with `extra` (and its own `port`), which must fail;
/// returns what it printed on stderr.
fn refused(name: &str, port: u16, duration: &str, extra: &[&str]) -> String {
    let dir = scratch(name);
    let port = port.to_string();
    let mut args = vec!["--rounds", "1", "--warmup", "0", "--duration", duration];
    args.extend(["--base-port", &port]);
    args.extend(extra);
    let out = ab(&dir, &args);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// B's own arguments reach B's command line: one it refuses stops the run with
/// a message naming B (A, which runs first, is long enough to measure).
#[test]
fn ab_stops_with_a_message_when_a_server_does_not_start() {
    let stderr = refused("refused", 24600, "0.6", &["--b-args", "--no-such-flag"]);
    assert!(stderr.contains("B exited at start"), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

/// A run too short for the server's CPU time to show (the kernel counts it in
/// 10 ms ticks) is refused rather than reported as a cost of zero.
#[test]
fn ab_refuses_a_run_too_short_to_measure() {
    let stderr = refused("short", 25100, "0.02", &[]);
    assert!(stderr.contains("too little to measure"), "{stderr}");
}
