//! Retrieval and key commands: get/gets (many keys), gat/gats, touch, delete, incr/decr.
//! Every expected reply here was checked against memcached 1.6.18.

mod common;
use common::*;

#[test]
fn get_miss_is_just_end() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("get\r\n", "ERROR\r\n");
    c.expect("gets\r\n", "ERROR\r\n");
    c.expect("get nothing\r\n", "END\r\n");
    c.expect("gets nothing\r\n", "END\r\n");
    c.expect("get a b c d\r\n", "END\r\n");
}

#[test]
fn multi_get_returns_hits_in_request_order() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for i in 0..100 {
        if i % 3 != 0 {
            c.set_full(&format!("k{i}"), i, 0, format!("v{i}").as_bytes());
        }
    }
    // Ask in a scrambled order, including misses.
    let order: Vec<u32> = (0..100).map(|i| (i * 37) % 100).collect();
    let mut cmd = String::from("get");
    let mut want = String::new();
    for &i in &order {
        cmd.push_str(&format!(" k{i}"));
        if i % 3 != 0 {
            want.push_str(&format!(
                "VALUE k{i} {i} {}\r\nv{i}\r\n",
                format!("v{i}").len()
            ));
        }
    }
    cmd.push_str("\r\n");
    want.push_str("END\r\n");
    c.expect(&cmd, &want);
}

#[test]
fn multi_get_repeats_duplicate_keys() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("a", b"1");
    c.expect(
        "get a a missing a\r\n",
        "VALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nVALUE a 0 1\r\n1\r\nEND\r\n",
    );
}

#[test]
fn gets_shows_distinct_cas_per_key() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("a", b"1");
    c.set("b", b"22");
    c.send("gets a missing b\r\n");
    let la = c.read_line();
    let pa: Vec<&str> = la.split(' ').collect();
    assert_eq!(&pa[..4], &["VALUE", "a", "0", "1"], "{la}");
    c.expect_reply("1\r\n");
    let lb = c.read_line();
    let pb: Vec<&str> = lb.split(' ').collect();
    assert_eq!(&pb[..4], &["VALUE", "b", "0", "2"], "{lb}");
    c.expect_reply("22\r\nEND\r\n");
    let (ca, cb): (u64, u64) = (pa[4].parse().unwrap(), pb[4].parse().unwrap());
    assert_ne!(ca, cb);
    // `get` never shows the cas.
    c.expect("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n");
    // Storing again changes it.
    c.set("a", b"1");
    assert_ne!(c.gets("a").unwrap().1, ca);
}

#[test]
fn get_with_many_long_keys_beyond_2048_bytes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // 300 keys of 30 bytes: a ~9.3 KB command line, far over the 2048-byte limit for
    // other commands; memcached lets get/gets lines grow.
    let keys: Vec<String> = (0..300).map(|i| format!("key{i:027}")).collect();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            c.send(format!("set {k} 0 0 2 noreply\r\nv{}\r\n", i % 10));
        }
    }
    let mut want = String::new();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            want.push_str(&format!("VALUE {k} 0 2\r\nv{}\r\n", i % 10));
        }
    }
    want.push_str("END\r\n");
    c.expect(format!("get {}\r\n", keys.join(" ")), &want);
    // The same through gets: check the count of VALUE lines.
    c.send(format!("gets {}\r\n", keys.join(" ")));
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            let line = c.read_line();
            assert!(line.starts_with(&format!("VALUE {k} 0 2 ")), "{line}");
            assert_eq!(c.read_line(), format!("v{}", i % 10));
        }
    }
    c.expect_reply("END\r\n");
}

#[test]
fn gat_and_gats() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("gat 100 k\r\n", "END\r\n");
    c.expect("gats 100 k\r\n", "END\r\n");
    c.set_full("k", 3, 0, b"val");
    c.set("j", b"x");
    c.expect("gat 100 k\r\n", "VALUE k 3 3\r\nval\r\nEND\r\n");
    c.expect(
        "gat 100 k missing j\r\n",
        "VALUE k 3 3\r\nval\r\nVALUE j 0 1\r\nx\r\nEND\r\n",
    );
    let cas = c.gets("k").unwrap().1;
    c.expect(
        "gats 0 k\r\n",
        format!("VALUE k 3 3 {cas}\r\nval\r\nEND\r\n"),
    );
    // No arguments at all: too few tokens.
    c.expect("gat\r\n", "ERROR\r\n");
    c.expect("gats\r\n", "ERROR\r\n");
    // memcached 1.6.18: a missing exptime is caught by the exptime parser (the key is
    // taken as the exptime), and an exptime with no keys is an empty result.
    c.expect("gat k\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    c.expect("gat abc k\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    c.expect("gat 10\r\n", "END\r\n");
}

#[test]
fn touch_replies() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("touch k 10\r\n", "NOT_FOUND\r\n");
    c.set("k", b"v");
    c.expect("touch k 10\r\n", "TOUCHED\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
    c.expect(
        "touch k abc\r\n",
        "CLIENT_ERROR invalid exptime argument\r\n",
    );
    c.send("touch k 20 noreply\r\n");
    c.send("touch missing 20 noreply\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\nv\r\nEND\r\n");
}

#[test]
fn delete_replies() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("delete k\r\n", "NOT_FOUND\r\n");
    c.set("k", b"v");
    c.expect("delete k\r\n", "DELETED\r\n");
    c.expect("get k\r\n", "END\r\n");
    c.expect("delete k\r\n", "NOT_FOUND\r\n");
    c.set("k", b"v");
    c.send("delete k noreply\r\n");
    c.send("delete k noreply\r\n");
    c.expect("get k\r\n", "END\r\n");
    // Legacy `delete <key> 0` is accepted; any other time argument is refused.
    c.set("k", b"v");
    c.expect("delete k 0\r\n", "DELETED\r\n");
    c.set("k", b"v");
    c.expect(
        "delete k 5\r\n",
        "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
    );
}

#[test]
fn incr_decr_basics() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("incr n 1\r\n", "NOT_FOUND\r\n");
    c.expect("decr n 1\r\n", "NOT_FOUND\r\n");
    c.set_full("n", 5, 0, b"10");
    c.expect("incr n 5\r\n", "15\r\n");
    c.expect("incr n 0\r\n", "15\r\n");
    c.expect("decr n 3\r\n", "12\r\n");
    c.expect("incr n 988\r\n", "1000\r\n");
    // Flags are kept; a result that grows gets the new length.
    c.expect("get n\r\n", "VALUE n 5 4\r\n1000\r\nEND\r\n");
    c.expect("decr n 1\r\n", "999\r\n");
    // memcached 1.6.18: a decr result shorter than the stored value is written in
    // place and padded with trailing spaces ("999 "), so only the trimmed value is
    // checked here.
    let v = c.get("n").unwrap();
    assert_eq!(String::from_utf8(v).unwrap().trim_end(), "999");
    c.expect("incr n 1\r\n", "1000\r\n");
    c.expect("decr n 5000\r\n", "0\r\n");
    c.expect("decr n 1\r\n", "0\r\n");
    // Leading zeros and surrounding spaces in the stored value are tolerated.
    c.set("z", b"007");
    c.expect("incr z 1\r\n", "8\r\n");
}

#[test]
fn incr_wraps_at_2_pow_64() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("n", b"18446744073709551615");
    c.expect("incr n 1\r\n", "0\r\n");
    c.set("n", b"18446744073709551610");
    c.expect("incr n 10\r\n", "4\r\n");
    c.set("n", b"0");
    c.expect(
        "incr n 18446744073709551615\r\n",
        "18446744073709551615\r\n",
    );
    c.expect("decr n 18446744073709551615\r\n", "0\r\n");
}

#[test]
fn incr_decr_errors() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("s", b"abc");
    c.expect(
        "incr s 1\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.expect(
        "decr s 1\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.set("n", b"5");
    for delta in ["abc", "-1", "18446744073709551616", "1x"] {
        c.expect(
            format!("incr n {delta}\r\n"),
            "CLIENT_ERROR invalid numeric delta argument\r\n",
        );
        c.expect(
            format!("decr n {delta}\r\n"),
            "CLIENT_ERROR invalid numeric delta argument\r\n",
        );
    }
    c.expect("incr n\r\n", "ERROR\r\n");
    c.expect("get n\r\n", "VALUE n 0 1\r\n5\r\nEND\r\n");
    // noreply: nothing comes back, but the value changes.
    c.send("incr n 10 noreply\r\n");
    c.send("decr n 2 noreply\r\n");
    c.send("incr missing 2 noreply\r\n");
    c.expect("get n\r\n", "VALUE n 0 2\r\n13\r\nEND\r\n");
}
