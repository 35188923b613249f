//! corecache-only: thread-per-core routing. With `-t 2 --core-ports BASE`, core i also
//! listens on BASE+i; any key must be readable and writable through any port (requests
//! for keys another core owns are forwarded), with replies in request order.
//! These tests skip themselves when the server under test is memcached.

mod common;
use common::*;
use corecache::keyhash::{key_hash, owner};

const CORES: usize = 2;

fn start() -> Option<Server> {
    start_with(&[])
}

fn start_with(args: &[&str]) -> Option<Server> {
    if skip_unless_corecache("--core-ports / cross-core routing") {
        return None;
    }
    let s = Server::builder()
        .args(&["-t", &CORES.to_string()])
        .args(args)
        .core_ports(CORES)
        .start();
    assert_eq!(s.core_ports.len(), CORES);
    Some(s)
}

/// Keys whose documented owner is `core`.
fn keys_owned_by(core: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| owner(key_hash(k.as_bytes()), CORES) == core)
        .take(n)
        .collect()
}

/// Every port: the shared one first, then each core's own.
fn all_ports(s: &Server) -> Vec<u16> {
    let mut p = vec![s.port];
    p.extend(s.core_ports.iter().copied());
    p
}

#[test]
fn key_set_on_one_port_is_read_on_every_port() {
    let Some(s) = start() else { return };
    let ports = all_ports(&s);
    for core in 0..CORES {
        for (w, &wport) in ports.iter().enumerate() {
            let keys = keys_owned_by(core, 5, &format!("o{core}w{w}-"));
            let mut writer = Client::connect(wport);
            for k in &keys {
                writer.set_full(k, 7, 0, format!("val-{k}").as_bytes());
            }
            for &rport in &ports {
                let mut reader = Client::connect(rport);
                for k in &keys {
                    let v = format!("val-{k}");
                    reader.expect(
                        format!("get {k}\r\n"),
                        format!("VALUE {k} 7 {}\r\n{v}\r\nEND\r\n", v.len()),
                    );
                }
            }
        }
    }
}

#[test]
fn multi_get_of_50_keys_on_each_port_is_in_request_order() {
    let Some(s) = start() else { return };
    // Interleave owners so the get must be split across cores and merged back.
    let a = keys_owned_by(0, 25, "mg-");
    let b = keys_owned_by(1, 25, "mg-");
    let keys: Vec<String> = a.into_iter().zip(b).flat_map(|(x, y)| [x, y]).collect();
    let mut c = s.client();
    for k in &keys {
        c.set(k, k.as_bytes());
    }
    for port in all_ports(&s) {
        let mut c = Client::connect(port);
        for order in [keys.clone(), keys.iter().rev().cloned().collect()] {
            let mut want = String::new();
            for k in &order {
                want.push_str(&format!("VALUE {k} 0 {}\r\n{k}\r\n", k.len()));
            }
            want.push_str("END\r\n");
            c.expect(format!("get {}\r\n", order.join(" ")), &want);
            // With misses mixed in.
            let mut with_misses = String::from("get");
            let mut want = String::new();
            for k in &order {
                with_misses.push_str(&format!(" nope-{k} {k}"));
                want.push_str(&format!("VALUE {k} 0 {}\r\n{k}\r\n", k.len()));
            }
            want.push_str("END\r\n");
            c.expect(format!("{with_misses}\r\n"), &want);
        }
    }
}

/// Keys past what a window of pipelined requests routes and prefetches ahead
/// (256 of the serving core's) are routed as they are served: two 300-key
/// multi-gets of core 0's keys, a set and a get in one write, through every
/// port (on core 0's own port one multi-get passes the cap).
#[test]
fn pipelined_multi_gets_past_the_prefetch_cap_answer_every_key() {
    let Some(s) = start() else { return };
    let keys = keys_owned_by(0, 300, "cap-");
    let mut c = s.client();
    for k in &keys {
        c.set(k, format!("v{k}").as_bytes());
    }
    let get = format!("get {}\r\n", keys.join(" "));
    let mut values = String::new();
    for k in &keys {
        let v = format!("v{k}");
        values.push_str(&format!("VALUE {k} 0 {}\r\n{v}\r\n", v.len()));
    }
    for (n, port) in all_ports(&s).into_iter().enumerate() {
        let mut c = Client::connect(port);
        let late = format!("late{n}");
        let request = format!("{get}{get}set {late} 0 0 2\r\nok\r\nget {late}\r\n");
        let reply =
            format!("{values}END\r\n{values}END\r\nSTORED\r\nVALUE {late} 0 2\r\nok\r\nEND\r\n");
        c.expect(request, reply);
    }
}

#[test]
fn incr_delete_cas_consistent_across_ports() {
    let Some(s) = start() else { return };
    let ports = all_ports(&s);
    let mut clients: Vec<Client> = ports.iter().map(|&p| Client::connect(p)).collect();
    for core in 0..CORES {
        let key = &keys_owned_by(core, 1, "ctr-")[0];
        clients[0].set(key, b"0");
        // Every port increments the same counter in turn.
        let mut expect = 0u64;
        for round in 0..10 {
            for c in clients.iter_mut() {
                expect += round + 1;
                c.expect(
                    format!("incr {key} {}\r\n", round + 1),
                    format!("{expect}\r\n"),
                );
            }
        }
        for c in clients.iter_mut() {
            c.expect(format!("decr {key} 1\r\n"), format!("{}\r\n", expect - 1));
            expect -= 1;
        }
        // cas: a cas read through one port is valid through another, once.
        let (_, cas) = clients[1].gets(key).unwrap();
        for c in clients.iter_mut() {
            let (_, seen) = c.gets(key).unwrap();
            assert_eq!(seen, cas, "ports disagree on the cas of {key}");
        }
        let last = clients.len() - 1;
        clients[last].expect(format!("cas {key} 0 0 1 {cas}\r\nx\r\n"), "STORED\r\n");
        clients[0].expect(format!("cas {key} 0 0 1 {cas}\r\ny\r\n"), "EXISTS\r\n");
        for c in clients.iter_mut() {
            c.expect(
                format!("get {key}\r\n"),
                format!("VALUE {key} 0 1\r\nx\r\nEND\r\n"),
            );
        }
        // delete through one port: gone through all of them.
        clients[0].expect(format!("delete {key}\r\n"), "DELETED\r\n");
        for c in clients.iter_mut() {
            c.expect(format!("get {key}\r\n"), "END\r\n");
            c.expect(format!("delete {key}\r\n"), "NOT_FOUND\r\n");
            c.expect(format!("incr {key} 1\r\n"), "NOT_FOUND\r\n");
        }
        // add races: exactly one port wins.
        let mut stored = 0;
        for c in clients.iter_mut() {
            c.send(format!("add {key} 0 0 1\r\na\r\n"));
            match c.read_line().as_str() {
                "STORED" => stored += 1,
                "NOT_STORED" => {}
                other => panic!("add -> {other}"),
            }
        }
        assert_eq!(stored, 1);
    }
}

#[test]
fn pipelined_mixed_owners_reply_in_order() {
    pipelined_mixed_owners_reply_in_order_with(&[]);
}

/// The same with cores that poll for the replies they are owed before
/// blocking: they count replies owed and received, and must neither miss a
/// reply nor stall.
#[test]
fn pipelined_mixed_owners_reply_in_order_with_reply_polling() {
    pipelined_mixed_owners_reply_in_order_with(&["--reply-spin-us", "200"]);
}

/// A `set` refused as too large drops the key's old value on the core that
/// owns it, whichever core it came through, in order with the connection's
/// next request, and without counting a `delete`; `ms` with a base64 key
/// drops the decoded key's value.
#[test]
fn a_refused_set_drops_the_old_value_on_the_owner() {
    let Some(s) = start() else { return };
    let mut c = Client::connect(s.core_ports[0]);
    let too_large = vec![b'v'; 2 << 20];
    for key in keys_owned_by(1, 3, "refused-") {
        c.set(&key, b"old");
        c.send(format!("set {key} 0 0 {}\r\n", too_large.len()));
        c.send(&too_large);
        c.send("\r\nget ");
        c.send(format!("{key}\r\n"));
        c.expect_reply("SERVER_ERROR object too large for cache\r\nEND\r\n");
    }
    let key = keys_owned_by(1, 1, "refused-b64-").remove(0);
    c.set(&key, b"old");
    let mut encoded = Vec::new();
    corecache::protocol::meta::encode_base64(key.as_bytes(), &mut encoded);
    let encoded = String::from_utf8(encoded).unwrap();
    c.send(format!("ms {encoded} {} b\r\n", too_large.len()));
    c.send(&too_large);
    c.send("\r\n");
    c.expect_reply("SERVER_ERROR object too large for cache\r\n");
    assert_eq!(c.get(&key), None);
    assert_eq!(c.stat("delete_hits") + c.stat("delete_misses"), 0);
    assert_eq!(c.stat("store_too_large"), 4);
}

/// A core polls for owed replies only when asked to, and then does: a client
/// that waits for each reply of the other core's keys leaves its core with
/// nothing to do but wait for them.
#[test]
fn cores_poll_for_owed_replies_only_when_asked() {
    for (args, polls_expected) in [(&[][..], false), (&["--reply-spin-us", "200"][..], true)] {
        let Some(s) = start_with(args) else { return };
        let mut c = Client::connect(s.core_ports[0]);
        for key in keys_owned_by(1, 200, "poll-") {
            c.set(&key, b"v");
            assert_eq!(c.get(&key), Some(b"v".to_vec()));
        }
        let polls = c.stat("reply_polls");
        assert!(c.stat("reply_polls_answered") <= polls);
        assert_eq!(polls > 0, polls_expected, "{args:?}: {polls} polls");
        // Every reply came back, so none is owed: an idle core no longer
        // polls (with a count that drifted up it would, every 100 ms turn).
        c.expect("stats reset\r\n", "RESET\r\n");
        sleep_s(0.5);
        assert_eq!(c.stat("reply_polls"), 0, "{args:?}");
    }
}

fn pipelined_mixed_owners_reply_in_order_with(args: &[&str]) {
    let Some(s) = start_with(args) else { return };
    let a = keys_owned_by(0, 200, "pl-");
    let b = keys_owned_by(1, 200, "pl-");
    for port in all_ports(&s) {
        let mut c = Client::connect(port);
        let mut req = String::new();
        let mut want = String::new();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            req.push_str(&format!("set {x} 0 0 1\r\n{}\r\n", i % 10));
            want.push_str("STORED\r\n");
            req.push_str(&format!("set {y} 0 0 1 noreply\r\n{}\r\n", (i + 1) % 10));
            req.push_str(&format!("get {y} {x}\r\n"));
            want.push_str(&format!(
                "VALUE {y} 0 1\r\n{}\r\nVALUE {x} 0 1\r\n{}\r\nEND\r\n",
                (i + 1) % 10,
                i % 10
            ));
            req.push_str(&format!("incr {y} 1\r\n"));
            want.push_str(&format!("{}\r\n", (i + 1) % 10 + 1));
            req.push_str(&format!("delete {x}\r\n"));
            want.push_str("DELETED\r\n");
        }
        let mut w = c.try_clone_stream();
        let t = std::thread::spawn(move || {
            use std::io::Write;
            w.write_all(req.as_bytes()).unwrap();
        });
        c.expect_reply(&want);
        t.join().unwrap();
    }
}

#[test]
fn flush_all_through_one_core_flushes_every_core() {
    let Some(s) = start() else { return };
    let a = keys_owned_by(0, 3, "fl-");
    let b = keys_owned_by(1, 3, "fl-");
    let mut c = Client::connect(s.core_ports[1]);
    for k in a.iter().chain(&b) {
        c.set(k, b"v");
    }
    c.expect("flush_all\r\n", "OK\r\n");
    for port in all_ports(&s) {
        let mut c = Client::connect(port);
        c.expect(
            format!("get {} {}\r\n", a.join(" "), b.join(" ")),
            "END\r\n",
        );
    }
}

/// `flush_all` is ordered with the requests around it on the same connection,
/// whichever core owns their keys: a set pipelined just before it is flushed, a
/// set just after it is kept.
#[test]
fn flush_all_is_ordered_with_forwarded_requests() {
    let Some(s) = start() else { return };
    let other = keys_owned_by(0, 2, "ord-");
    let mut c = Client::connect(s.core_ports[1]);
    for _ in 0..20 {
        c.send(format!(
            "set {} 0 0 1\r\nx\r\nflush_all\r\nset {} 0 0 1\r\ny\r\n",
            other[0], other[1]
        ));
        c.expect_reply("STORED\r\nOK\r\nSTORED\r\n");
        c.expect(format!("get {}\r\n", other[0]), "END\r\n");
        c.expect(
            format!("get {}\r\n", other[1]),
            format!("VALUE {} 0 1\r\ny\r\nEND\r\n", other[1]),
        );
    }
}

/// The load generator's smart-client mode (`corecache-bench run --core-ports
/// BASE:CORES`, for the scaling runs through per-core ports): each connection
/// asks its core only for keys that core owns, so the measured run forwards
/// nothing between cores; through the shared port about half is forwarded.
#[test]
fn bench_routed_by_core_forwards_nothing() {
    let Some(s) = start() else { return };
    let bench = env!("CARGO_BIN_EXE_corecache-bench");
    let run = |extra: &[String]| {
        let mut args: Vec<String> = [
            "run",
            "--port",
            &s.port.to_string(),
            "--pipeline",
            "4",
            "--conns",
            "4",
            "--keys",
            "2000",
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let out = std::process::Command::new(bench)
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("errors 0, key mismatches 0, connection errors 0"),
            "{text}"
        );
        text
    };
    let mut c = s.client();
    // The probe and the prefill go through the shared port; count from here.
    let routed = [format!("--core-ports={}:{CORES}", s.core_ports[0])];
    run(&routed);
    let (forwarded, gets) = (c.stat("forwarded_requests"), c.stat("cmd_get"));
    run(&routed);
    assert!(
        c.stat("cmd_get") > gets + 1000,
        "the routed run served gets"
    );
    // The second run's probe and its prefill of 2000 keys (half of them owned by
    // the other core) are all it may forward.
    let probe_and_prefill = 2 + 2000;
    assert!(
        c.stat("forwarded_requests") <= forwarded + probe_and_prefill,
        "routed requests were forwarded"
    );
    let forwarded = c.stat("forwarded_requests");
    run(&[]);
    assert!(
        c.stat("forwarded_requests") > forwarded + probe_and_prefill,
        "through the shared port, requests for the other core are forwarded"
    );
}

#[test]
fn forwarding_wakes_each_core_at_most_once_a_turn() {
    let Some(s) = start() else { return };
    let mut c = s.client();
    let turns_before = c.stat("loop_turns");
    let wakes_before = c.stat("wakes_sent");
    // Keys of the core the shared port's connection is not on are forwarded
    // whichever core took it: use both cores' keys, pipelined.
    let mut pipelined = String::new();
    let mut expected = String::new();
    for core in 0..CORES {
        for k in keys_owned_by(core, 50, &format!("wake{core}-")) {
            pipelined.push_str(&format!("set {k} 0 0 1\r\nx\r\nget {k}\r\n"));
            expected.push_str(&format!("STORED\r\nVALUE {k} 0 1\r\nx\r\nEND\r\n"));
        }
    }
    let mut p = s.client();
    p.expect(pipelined, expected);
    let turns = c.stat("loop_turns") - turns_before;
    let wakes = c.stat("wakes_sent") - wakes_before;
    assert!(wakes > 0, "forwarded requests woke their owner");
    // A core wakes another only when it posts it a batch and no wake-up is
    // pending, so at most once per destination per turn of its own.
    assert!(
        wakes <= turns * (CORES as u64 - 1),
        "{wakes} wakes in {turns} turns"
    );
}

/// Every retrieval reaches a key on the other core with its own meaning:
/// `gets` and `gats` report the owner's CAS, `gat` and `gats` set the TTL
/// there, a missing key is left out.
#[test]
fn forwarded_retrievals_keep_their_kind() {
    let Some(s) = start() else { return };
    for core in 0..CORES {
        let [key, missing] = <[String; 2]>::try_from(keys_owned_by(core, 2, "kind-")).unwrap();
        let mut at_owner = Client::connect(s.core_ports[core]);
        at_owner.set_full(&key, 3, 0, b"v");
        let (_, cas) = at_owner.gets(&key).unwrap();
        let ttl_at_owner = |c: &mut Client| -> i64 {
            c.send(format!("mg {key} t\r\n"));
            let line = c.read_line();
            let ttl = line
                .strip_prefix("HD t")
                .unwrap_or_else(|| panic!("{line}"));
            ttl.parse().unwrap()
        };
        assert_eq!(ttl_at_owner(&mut at_owner), -1);

        let mut c = Client::connect(s.core_ports[(core + 1) % CORES]);
        c.expect(
            format!("get {key} {missing}\r\n"),
            format!("VALUE {key} 3 1\r\nv\r\nEND\r\n"),
        );
        c.expect(
            format!("gets {missing} {key}\r\n"),
            format!("VALUE {key} 3 1 {cas}\r\nv\r\nEND\r\n"),
        );
        c.expect(
            format!("gat 1000 {key}\r\n"),
            format!("VALUE {key} 3 1\r\nv\r\nEND\r\n"),
        );
        assert!((990..=1000).contains(&ttl_at_owner(&mut at_owner)));
        c.expect(
            format!("gats 5000 {missing} {key}\r\n"),
            format!("VALUE {key} 3 1 {cas}\r\nv\r\nEND\r\n"),
        );
        assert!((4990..=5000).contains(&ttl_at_owner(&mut at_owner)));
    }
}
