//! Expiry and flush: relative, negative and absolute exptimes, touch/gat, flush_all.
//!
//! memcached keeps time in whole seconds counted from its start, so an item set with
//! exptime N disappears after between N-1 and N seconds of real time (measured on
//! 1.6.18: exptime 1 was gone after 0.0-0.9 s, exptime 2 after 1.6 s). Tests therefore
//! use TTLs of 2+ s, check presence right away (< 1 s), and absence after TTL + 0.5 s.

mod common;
use common::*;

#[test]
fn relative_ttl_expires() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set_full("short", 0, 2, b"v");
    c.set_full("long", 0, 100, b"v");
    c.set_full("never", 0, 0, b"v");
    c.expect("get short\r\n", "VALUE short 0 1\r\nv\r\nEND\r\n");
    sleep_s(2.5);
    c.expect("get short\r\n", "END\r\n");
    c.expect(
        "get long never\r\n",
        "VALUE long 0 1\r\nv\r\nVALUE never 0 1\r\nv\r\nEND\r\n",
    );
    // An expired item is gone for add/replace/incr/touch too.
    c.set_full("short", 0, 2, b"5");
    sleep_s(2.5);
    c.expect("replace short 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    c.expect("incr short 1\r\n", "NOT_FOUND\r\n");
    c.expect("touch short 10\r\n", "NOT_FOUND\r\n");
    c.expect("add short 0 0 1\r\ny\r\n", "STORED\r\n");
    c.expect("get short\r\n", "VALUE short 0 1\r\ny\r\nEND\r\n");
}

#[test]
fn negative_exptime_is_immediately_expired() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set neg 0 -1 1\r\nx\r\n", "STORED\r\n");
    c.expect("get neg\r\n", "END\r\n");
    c.set("k", b"v");
    c.expect("set k 0 -100 1\r\nx\r\n", "STORED\r\n");
    c.expect("get k\r\n", "END\r\n");
    // Touching with a negative exptime expires an existing item.
    c.set("t", b"v");
    c.expect("touch t -1\r\n", "TOUCHED\r\n");
    c.expect("get t\r\n", "END\r\n");
}

#[test]
fn absolute_exptime() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let now = unix_now();
    // Over 30 days (2592000 s) means an absolute unix time.
    c.expect(format!("set past 0 {} 1\r\nx\r\n", now - 100), "STORED\r\n");
    c.expect("get past\r\n", "END\r\n");
    c.expect(
        format!("set future 0 {} 1\r\nx\r\n", now + 100),
        "STORED\r\n",
    );
    c.expect("get future\r\n", "VALUE future 0 1\r\nx\r\nEND\r\n");
    // 30 days exactly is still relative.
    c.expect("set rel 0 2592000 1\r\nx\r\n", "STORED\r\n");
    c.expect("get rel\r\n", "VALUE rel 0 1\r\nx\r\nEND\r\n");
    // Absolute, 3 s ahead: present now, gone after.
    c.expect(format!("set soon 0 {} 1\r\nx\r\n", now + 3), "STORED\r\n");
    c.expect("get soon\r\n", "VALUE soon 0 1\r\nx\r\nEND\r\n");
    sleep_s(4.0);
    c.expect("get soon future\r\n", "VALUE future 0 1\r\nx\r\nEND\r\n");
}

#[test]
fn touch_and_gat_change_ttl() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // Extend: set with 2 s, touch to 100 s: still there after 2.5 s.
    c.set_full("ext", 0, 2, b"v");
    c.expect("touch ext 100\r\n", "TOUCHED\r\n");
    c.set_full("gat", 0, 2, b"v");
    c.expect("gat 100 gat\r\n", "VALUE gat 0 1\r\nv\r\nEND\r\n");
    // Shorten: set forever, touch / gat to 2 s: gone after 2.5 s.
    c.set_full("shr", 0, 0, b"v");
    c.expect("touch shr 2\r\n", "TOUCHED\r\n");
    c.set_full("gats", 0, 0, b"v");
    c.send("gats 2 gats\r\n");
    assert!(c.read_line().starts_with("VALUE gats 0 1 "));
    c.expect_reply("v\r\nEND\r\n");
    // noreply touch.
    c.set_full("nr", 0, 0, b"v");
    c.send("touch nr 2 noreply\r\n");
    c.expect("get nr\r\n", "VALUE nr 0 1\r\nv\r\nEND\r\n");
    sleep_s(2.5);
    c.expect(
        "get ext gat shr gats nr\r\n",
        "VALUE ext 0 1\r\nv\r\nVALUE gat 0 1\r\nv\r\nEND\r\n",
    );
}

#[test]
fn flush_all_now() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("a", b"1");
    c.set("b", b"2");
    c.expect("flush_all\r\n", "OK\r\n");
    c.expect("get a b\r\n", "END\r\n");
    // Items stored after the flush are fine.
    c.set("a", b"3");
    c.expect("get a\r\n", "VALUE a 0 1\r\n3\r\nEND\r\n");
    c.expect("flush_all 0\r\n", "OK\r\n");
    c.expect("get a\r\n", "END\r\n");
    // noreply
    c.set("a", b"4");
    c.send("flush_all noreply\r\n");
    c.expect("get a\r\n", "END\r\n");
    c.set("a", b"5");
    c.send("flush_all 0 noreply\r\n");
    c.expect("get a\r\n", "END\r\n");
}

#[test]
fn flush_all_with_delay() {
    // memcached 1.6.18 rounds the delay down to its 1-second clock: measured, `flush_all
    // 1` took effect at once and `flush_all 2` after 0.02-0.63 s, `flush_all 3` after
    // ~1.6 s. So a delay of 3 s is the shortest whose "still there right after" holds on
    // memcached; gone 3.5 s later holds on any server.
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("a", b"1");
    c.expect("flush_all 3\r\n", "OK\r\n");
    c.expect("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n");
    sleep_s(3.5);
    c.expect("get a\r\n", "END\r\n");
    // Items set after the flush took effect are kept.
    c.set("b", b"2");
    c.expect("get b\r\n", "VALUE b 0 1\r\n2\r\nEND\r\n");
}

/// An expired item is counted once it is gone: in `get_expired` when a get
/// finds it first, in `expired_unfetched` when the reaper frees it first.
#[test]
fn expired_reads_are_counted() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set short 0 1 1\r\nx\r\n", "STORED\r\n");
    assert_eq!(c.stat("get_expired"), 0);
    sleep_s(2.1);
    c.expect("get short\r\n", "END\r\n");
    assert_eq!(c.stat("get_misses"), 1);
    assert_eq!(c.stat("get_expired") + c.stat("expired_unfetched"), 1);
    assert_eq!(c.stat("curr_items"), 0);
}

/// An item stored without an expiry is stored without room for one (a smaller
/// header, `storage/item.rs`); the first touch, gat or mg T rewrites it with
/// one. Whatever the value size (some of these fill their chunk, so the
/// rewrite moves them to the next slab class), the value, flags and CAS stay
/// and the new TTL holds.
#[test]
fn a_first_expiry_keeps_the_item_whole() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let lens: Vec<usize> = (100..=140).collect();
    let mut before = Vec::new();
    for &len in &lens {
        let key = format!("grow{len}");
        let value = vec![b'a' + (len % 26) as u8; len];
        c.expect(
            format!(
                "set {key} 0 0 {len}\r\n{}\r\n",
                String::from_utf8(value).unwrap()
            ),
            "STORED\r\n",
        );
        before.push(c.gets(&key).expect("stored"));
    }
    for (i, &len) in lens.iter().enumerate() {
        let key = format!("grow{len}");
        match i % 3 {
            0 => c.expect(format!("touch {key} 2\r\n"), "TOUCHED\r\n"),
            1 => {
                c.send(format!("gat 2 {key}\r\n"));
                c.expect_reply(format!("VALUE {key} 0 {len}\r\n"));
                c.read_exact(len + 2);
                c.expect_reply("END\r\n");
            }
            _ => c.expect(format!("mg {key} T2\r\n"), "HD\r\n"),
        }
        assert_eq!(
            c.gets(&key),
            Some(before[i].clone()),
            "{key} after its first expiry"
        );
    }
    sleep_s(2.5);
    for &len in &lens {
        c.expect(format!("get grow{len}\r\n"), "END\r\n");
    }
}
