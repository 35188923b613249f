//! Error replies, limits and how the server resynchronises after bad input.
//! Every expected reply here was checked against memcached 1.6.18.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn unknown_and_malformed_commands_are_error() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("bogus\r\n", "ERROR\r\n");
    c.expect("\r\n", "ERROR\r\n");
    c.expect("GET k\r\n", "ERROR\r\n"); // commands are case-sensitive
    c.expect("set a 0 0\r\n", "ERROR\r\n"); // too few tokens
    c.expect("set\r\n", "ERROR\r\n");
    // Too many tokens: ERROR, and the data line is then read as a command (ERROR).
    c.expect(
        "set a 0 0 1 extra tokens here\r\nx\r\n",
        "ERROR\r\nERROR\r\n",
    );
    // A single unknown trailing token (not `noreply`) is ignored.
    c.expect("set a 0 0 1 whatever\r\nx\r\n", "STORED\r\n");
    // A bare \n also ends a command line.
    c.expect("get a\n", "VALUE a 0 1\r\nx\r\nEND\r\n");
    c.expect_version();
}

#[test]
fn key_too_long() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let k251 = "k".repeat(251);
    // For set, the data block is NOT swallowed: it is then parsed as a command (ERROR).
    c.expect(
        format!("set {k251} 0 0 1\r\nx\r\n"),
        "CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    for cmd in [
        format!("get {k251}\r\n"),
        format!("get a {k251}\r\n"),
        format!("gets {k251}\r\n"),
        format!("delete {k251}\r\n"),
        format!("incr {k251} 1\r\n"),
        format!("touch {k251} 1\r\n"),
    ] {
        c.expect(&cmd, "CLIENT_ERROR bad command line format\r\n");
    }
    // With noreply the CLIENT_ERROR is suppressed, but the data line still gives ERROR.
    c.expect(format!("set {k251} 0 0 1 noreply\r\nx\r\n"), "ERROR\r\n");
    c.expect_version();
}

#[test]
fn bad_numbers_in_storage_commands() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // The data line that follows is not swallowed and comes back as ERROR.
    for cmd in [
        "set c 0 0 abc\r\nx\r\n",
        "set c 0 xyz 1\r\nx\r\n",
        "set c abc 0 1\r\nx\r\n",
        "set c 0 0 1x\r\nx\r\n",
        "cas c 0 0 1 abc\r\nx\r\n",
        // Out of the 32-bit range: refused, never wrapped into it.
        "set c 0 18446744073709551615 1\r\nx\r\n",
        "set c 0 9223372036854775808 1\r\nx\r\n",
    ] {
        c.expect(cmd, "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    }
    // Negative length: just the CLIENT_ERROR (nothing else was sent).
    c.expect(
        "set c 0 0 -1\r\n",
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.expect(
        "set c 0 0 -18446744073709551615\r\n",
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.expect(
        "touch c 18446744073709551615\r\n",
        "CLIENT_ERROR invalid exptime argument\r\n",
    );
    c.expect("get c\r\n", "END\r\n");
}

#[test]
fn data_length_mismatch_is_bad_data_chunk() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("k", b"old");
    // memcached reads exactly <bytes>+2 bytes ("xyz"), finds no \r\n at the end and says
    // bad data chunk; the rest of the line ("\r\n") is then parsed as an empty command
    // line, hence the ERROR. The old value is kept.
    c.expect(
        "set k 0 0 1\r\nxyz\r\n",
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    c.expect("get k\r\n", "VALUE k 0 3\r\nold\r\nEND\r\n");
    // Data shorter than announced: "12\r" is read as the 1+2 bytes; the "\n" left over
    // is an empty command line (ERROR).
    c.expect(
        "set k 0 0 1\r\n12\r\n",
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    // With noreply only the ERROR for the leftover line comes back.
    c.expect("set k 0 0 1 noreply\r\nxyz\r\n", "ERROR\r\n");
    c.expect("get k\r\n", "VALUE k 0 3\r\nold\r\nEND\r\n");
}

/// Send a set of `len` bytes and return the first reply line, then check that the
/// data was swallowed (the next command is answered normally).
fn set_len(c: &mut Client, key: &str, len: usize) -> String {
    let mut cmd = format!("set {key} 0 0 {len}\r\n").into_bytes();
    cmd.resize(cmd.len() + len, b'v');
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    let line = c.read_line();
    c.expect_version();
    line
}

#[test]
fn item_size_limit_default_1m() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // The default -I 1m limits the whole item (value, key and header), so a value of
    // exactly 1048576 bytes does NOT fit. memcached 1.6.18, measured: with a 3-byte
    // key the largest value stored is 1048514 bytes (1048576 - 48 header - 8 cas -
    // (key+1) - 2 for \r\n); corecache: 1048539 (1048576 - 34 header - 3). The
    // reference's 1048000 fits both.
    assert_eq!(set_len(&mut c, "big", 1_048_000), "STORED");
    let v = c.get("big").unwrap();
    assert_eq!(v.len(), 1_048_000);
    assert!(v.iter().all(|&b| b == b'v'));
    let largest = if is_memcached() { 1_048_514 } else { 1_048_539 };
    assert_eq!(set_len(&mut c, "big", largest), "STORED");
    assert_eq!(c.get("big").unwrap().len(), largest);
    c.expect("stats reset\r\n", "RESET\r\n");
    assert_eq!(
        set_len(&mut c, "big", largest + 1),
        "SERVER_ERROR object too large for cache"
    );
    c.expect("get big\r\n", "END\r\n");
    // A refused set is not counted as one, but as memcached's store_too_large.
    assert_eq!(c.stats("")["cmd_set"], "0");
    assert_eq!(c.stat("store_too_large"), 1);
    assert_eq!(
        set_len(&mut c, "big", 1_048_576),
        "SERVER_ERROR object too large for cache"
    );
    c.set("big", b"small");
    // A failed set of a too-large value also removes the old value (memcached does this
    // so a client never reads the stale one).
    assert_eq!(
        set_len(&mut c, "big", 1_048_577),
        "SERVER_ERROR object too large for cache"
    );
    c.expect("get big\r\n", "END\r\n");
    assert_eq!(
        set_len(&mut c, "big", 2_000_000),
        "SERVER_ERROR object too large for cache"
    );
    // An append that would be too large fails but keeps the old value.
    c.set("big", b"x");
    let mut cmd = b"append big 0 0 2000000\r\n".to_vec();
    cmd.resize(cmd.len() + 2_000_000, b'y');
    cmd.extend_from_slice(b"\r\n");
    c.expect(&cmd, "SERVER_ERROR object too large for cache\r\n");
    c.expect("get big\r\n", "VALUE big 0 1\r\nx\r\nEND\r\n");
    // noreply: nothing comes back, the data is still swallowed.
    let mut cmd = b"set big 0 0 1100000 noreply\r\n".to_vec();
    cmd.resize(cmd.len() + 1_100_000, b'y');
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    c.expect_version();
    // Every refusal counted, whether the value was refused as its line was
    // read (over -I) or by the store (the item with its header over -I).
    assert_eq!(c.stat("store_too_large"), 6);
    assert_eq!(c.stat("store_no_memory"), 0);
    // The old values the refused sets dropped were not `delete`s.
    assert_eq!(c.stat("delete_hits") + c.stat("delete_misses"), 0);
}

#[test]
fn item_size_limit_2k() {
    let s = Server::with_2k_items();
    let mut c = s.client();
    // Measured on memcached: with a 3-byte key the largest value is 1986 bytes
    // (2048 - 62 of overhead); corecache: 2011 (2048 - 34 header - 3). A 2048-byte
    // value fits neither.
    assert_eq!(set_len(&mut c, "big", 1900), "STORED");
    assert_eq!(c.get("big").unwrap().len(), 1900);
    let largest = if is_memcached() { 1986 } else { 2011 };
    assert_eq!(set_len(&mut c, "big", largest), "STORED");
    assert_eq!(c.get("big").unwrap().len(), largest);
    assert_eq!(
        set_len(&mut c, "big", largest + 1),
        "SERVER_ERROR object too large for cache"
    );
    assert_eq!(
        set_len(&mut c, "big", 2048),
        "SERVER_ERROR object too large for cache"
    );
    assert_eq!(
        set_len(&mut c, "big", 4096),
        "SERVER_ERROR object too large for cache"
    );
    let st = c.stats("settings");
    assert_eq!(st.get("item_size_max").map(String::as_str), Some("2048"));
}

/// A multi-get line may be far longer than a command line, arriving in many
/// small pieces; past 16 MiB without a newline the server hangs up.
#[test]
fn long_get_lines_are_served_and_endless_ones_close() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("k00007", b"seven");
    let mut line = b"get".to_vec();
    for i in 0..20_000 {
        line.extend_from_slice(format!(" k{i:05}").as_bytes());
    }
    line.extend_from_slice(b"\r\n");
    for piece in line.chunks(100) {
        c.send(piece);
    }
    c.expect_reply("VALUE k00007 0 5\r\nseven\r\nEND\r\n");
    if is_memcached() {
        return; // memcached reads multi-gets without a length limit
    }
    let mut c = s.client();
    c.send(b"get ");
    let chunk = vec![b'k'; 1 << 20];
    for _ in 0..17 {
        if c.try_send(&chunk).is_err() {
            break;
        }
    }
    c.expect_closed();
    s.client().expect_version();
}

#[test]
fn long_line_without_newline_closes_connection() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send(vec![b'x'; 3000]);
    c.expect_closed();
    let mut c = s.client();
    let mut line = b"set ".to_vec();
    line.resize(2100, b'k');
    c.send(&line);
    c.expect_closed();
    // The server is fine.
    s.client().expect_version();
}

#[test]
fn long_get_line_without_newline_yet_is_kept() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("present", b"1");
    let keys: Vec<String> = (0..100).map(|i| format!("key{i:027}")).collect();
    // ~3.1 KB of `get` line, sent without its newline first.
    c.send(format!("get {} present", keys.join(" ")));
    std::thread::sleep(Duration::from_millis(300));
    c.send("\r\n");
    c.expect_reply("VALUE present 0 1\r\n1\r\nEND\r\n");
}

#[test]
fn flush_all_bad_argument() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("k", b"v");
    c.expect(
        "flush_all abc\r\n",
        "CLIENT_ERROR invalid exptime argument\r\n",
    );
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    // The first argument is the delay unless it is a lone `noreply`; a second
    // one is ignored unless it is `noreply`; a third is one too many.
    c.expect(
        "flush_all noreply 0\r\n",
        "CLIENT_ERROR invalid exptime argument\r\n",
    );
    c.expect("flush_all 0 0 0\r\n", "ERROR\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    c.expect("flush_all 0 x\r\n", "OK\r\n");
    c.expect("get k\r\n", "END\r\n");
}

#[test]
fn too_many_connections() {
    // memcached 1.6.18 counts its own file descriptors against -c (it reserves some:
    // with `-t 1 -c 16` only 4 client connections fit, and it will not even start with
    // `-c 5`, or with -c below 24 at the default 4 threads). So this asserts only what
    // any compliant server shows: with -c 16, of 20 connections at least one gets
    // `ERROR Too many open connections` and is closed, no more than 16 are served, and
    // stats counts the rejection.
    let s = Server::start(&["-t", "1", "-c", "16"]);
    let mut accepted = Vec::new();
    let mut rejected = 0;
    for _ in 0..20 {
        let mut c = s.client();
        let early = c.read_available(Duration::from_millis(300));
        if early.is_empty() {
            c.expect_version();
            accepted.push(c);
        } else {
            assert_eq!(
                show(&early),
                show(b"ERROR Too many open connections\r\n"),
                "unexpected greeting"
            );
            c.expect_closed();
            rejected += 1;
        }
    }
    assert!(
        (1..=16).contains(&accepted.len()),
        "{} connections accepted with -c 16",
        accepted.len()
    );
    assert!(rejected >= 1, "no connection was rejected with -c 16");
    let mut first = accepted.swap_remove(0);
    assert!(first.stat("rejected_connections") >= 1);
    assert_eq!(first.stats("settings")["maxconns"], "16");
    // Closing connections makes room again.
    drop(accepted);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = s.client();
    assert!(again.read_available(Duration::from_millis(300)).is_empty());
    again.expect_version();
}

/// A refused value is swallowed wherever the reads split it, even when its
/// command line began in an earlier read and the rest of the value arrives
/// with the request after it.
#[test]
fn a_refused_value_split_across_reads_is_swallowed() {
    let s = Server::with_2k_items();
    let mut c = s.client();
    c.set("k", b"x");
    let mut req = b"get k\r\nset big 0 0 3000\r\n".to_vec();
    req.resize(req.len() + 3000, b'y');
    req.extend_from_slice(b"\r\nget k\r\n");
    let want = "VALUE k 0 1\r\nx\r\nEND\r\n\
                SERVER_ERROR object too large for cache\r\n\
                VALUE k 0 1\r\nx\r\nEND\r\n";
    let header = b"get k\r\nset big 0 0 3000\r\n".len();
    for split in [
        3,
        10,
        20,
        header - 1,
        header,
        header + 10,
        header + 1500,
        req.len() - 10,
    ] {
        c.send(&req[..split]);
        std::thread::sleep(std::time::Duration::from_millis(5));
        c.send(&req[split..]);
        c.expect_reply(want);
    }
}
