//! `corecache-bench ab`: two builds of the server started in alternated rounds,
//! each charged the CPU time it spent per request.

use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corecache-ab-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn ab_alternates_the_two_servers_and_charges_each_its_cpu_per_request() {
    let server = env!("CARGO_BIN_EXE_corecache");
    let dir = scratch("alternates");
    let json = dir.join("ab.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corecache-bench"))
        .args(["ab", "--a", server, "--b", server])
        .args(["--b-args", "-C", "--rounds", "2", "--memory-mb", "64"])
        .args(["--keys", "2000", "--conns", "4", "--pipeline", "4"])
        .args(["--duration", "0.4", "--warmup", "0.1"])
        // Below the ephemeral range the other tests' servers take ports from,
        // and apart from the other test here (both run at once).
        .args(["--base-port", "24100"])
        .arg("--logs")
        .arg(dir.join("logs"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
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
    for r in runs {
        assert!(r["requests"].as_u64().unwrap() > 0, "{r}");
        let cost = &r["cost"];
        let (total, user, system) = (
            cost["total_ns"].as_f64().unwrap(),
            cost["user_ns"].as_f64().unwrap(),
            cost["system_ns"].as_f64().unwrap(),
        );
        assert!(total > 0.0 && user >= 0.0 && system >= 0.0, "{r}");
        assert!((user + system - total).abs() < 1e-6 * total, "{r}");
    }
    assert_eq!(report["summary"]["ratios"].as_array().unwrap().len(), 2);
    assert!(text.contains("B/A per round:"), "{text}");
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs.iter().filter(|l| l.starts_with("A-")).count(), 2);
    assert_eq!(logs.iter().filter(|l| l.starts_with("B-")).count(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// B's own arguments reach B's command line: one it refuses stops the run with
/// a message naming B.
#[test]
fn ab_stops_with_a_message_when_a_server_does_not_start() {
    let server = env!("CARGO_BIN_EXE_corecache");
    let dir = scratch("refused");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corecache-bench"))
        .args(["ab", "--a", server, "--b", server])
        .args([
            "--b-args",
            "--no-such-flag",
            "--rounds",
            "1",
            "--memory-mb",
            "64",
        ])
        .args([
            "--keys",
            "500",
            "--conns",
            "2",
            "--duration",
            "0.2",
            "--warmup",
            "0",
        ])
        .arg("--logs")
        .arg(dir.join("logs"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("B exited at start"), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
