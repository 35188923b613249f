//! The meta protocol (`mg`, `ms`, `md`, `ma`, `mn`, `me`) and server-side
//! stampede protection, byte for byte as memcached 1.6.18 answers.
//!
//! Run against memcached with `CORECACHE_TEST_SERVER=/usr/bin/memcached`; what
//! 1.6.18 lacks (features of later 1.6 releases that corecache implements, and
//! corecache's cross-core routing) is guarded by `is_memcached()` or
//! `skip_unless_corecache`.

mod common;
use common::*;
use corecache::keyhash::{key_hash, owner};
use std::sync::{Arc, Barrier};

/// Sends `cmd` and returns the next line.
fn line(c: &mut Client, cmd: &str) -> String {
    c.send(cmd);
    c.read_line()
}

/// The item's CAS, read with `mg <key> c`.
fn cas_of(c: &mut Client, key: &str) -> u64 {
    let l = line(c, &format!("mg {key} c\r\n"));
    let n = l
        .split(' ')
        .find_map(|t| t.strip_prefix('c'))
        .unwrap_or_else(|| panic!("no cas in {l:?}"));
    n.parse().unwrap()
}

/// The TTL in `HD ... t<n>`.
fn ttl_of(l: &str) -> i64 {
    l.split(' ')
        .find_map(|t| t.strip_prefix('t'))
        .unwrap_or_else(|| panic!("no ttl in {l:?}"))
        .parse()
        .unwrap()
}

fn assert_ttl_near(l: &str, want: i64) {
    let t = ttl_of(l);
    assert!(
        t == want || t == want - 1,
        "ttl {t} in {l:?}, want {want} (or one less)"
    );
}

#[test]
fn mg_returns_flags_in_the_order_sent() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms foo 3 T0 F5\r\nbar\r\n", "HD\r\n");
    let cas = cas_of(&mut c, "foo");
    c.expect(
        "mg foo v f t s c k O123 q\r\n",
        format!("VA 3 f5 t-1 s3 c{cas} kfoo O123\r\nbar\r\n"),
    );
    c.expect("mg foo O9 k s v\r\n", "VA 3 O9 kfoo s3\r\nbar\r\n");
    c.expect("mg foo\r\n", "HD\r\n");
    c.expect("mg foo s\r\n", "HD s3\r\n");
    // Proxy hints are accepted and ignored.
    c.expect("mg foo P L v\r\n", "VA 3\r\nbar\r\n");
    c.expect("ms empty 0\r\n\r\n", "HD\r\n");
    c.expect("mg empty s v\r\n", "VA 0 s0\r\n\r\n");
}

#[test]
fn mg_miss_is_en_and_quiet_hides_it() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("mg missing v\r\n", "EN\r\n");
    c.expect("mg missing\r\n", "EN\r\n");
    // A miss still echoes the opaque and the key.
    c.expect("mg missing O5 k v\r\n", "EN O5 kmissing\r\n");
    c.expect("mn\r\n", "MN\r\n");
    // A quiet pipeline: hits answer, misses are silent, mn marks the end.
    c.expect("ms a 1\r\n1\r\n", "HD\r\n");
    c.expect("ms b 1\r\n2\r\n", "HD\r\n");
    c.expect(
        "mg a v q k\r\nmg nope v q k\r\nmg b v q k O7\r\nmg nope2 q\r\nmn\r\n",
        "VA 1 ka\r\n1\r\nVA 1 kb O7\r\n2\r\nMN\r\n",
    );
}

#[test]
fn mg_hit_before_last_access_and_no_bump() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms h1 1\r\nx\r\n", "HD\r\n");
    // `u` neither marks the item fetched nor bumps it.
    c.expect("mg h1 u h\r\n", "HD h0\r\n");
    c.expect("mg h1 h\r\n", "HD h0\r\n");
    c.expect("mg h1 h\r\n", "HD h1\r\n");
    let l = line(&mut c, "mg h1 l\r\n");
    assert!(
        l == "HD l0" || l == "HD l1",
        "seconds since last access: {l:?}"
    );
    sleep_s(2.1);
    let l = line(&mut c, "mg h1 l u\r\n");
    assert!(l == "HD l2" || l == "HD l3", "after 2 s: {l:?}");
    // `u` left the access time alone.
    let l = line(&mut c, "mg h1 l\r\n");
    assert!(l == "HD l2" || l == "HD l3", "after 2 s, u: {l:?}");
    if !is_memcached() {
        // memcached refreshes the access time at most once a minute
        // (ITEM_UPDATE_INTERVAL); corecache on every read.
        let l = line(&mut c, "mg h1 l\r\n");
        assert!(l == "HD l0" || l == "HD l1", "after a bump: {l:?}");
    }
}

#[test]
fn mg_touch_and_ttl_in_flag_order() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms t1 1 T100\r\nx\r\n", "HD\r\n");
    // `t` before `T` reports the TTL before the touch; after it, the new one.
    assert_ttl_near(&line(&mut c, "mg t1 t T50\r\n"), 100);
    assert_ttl_near(&line(&mut c, "mg t1 t\r\n"), 50);
    assert_ttl_near(&line(&mut c, "mg t1 T70 t\r\n"), 70);
    c.expect("mg t1 T0 t\r\n", "HD t-1\r\n");
    // A negative TTL stores an item that is already expired.
    c.expect("ms t2 1 T-1\r\nx\r\n", "HD\r\n");
    c.expect("mg t2 v\r\n", "EN\r\n");
    c.expect("ms t3 1 T1\r\nx\r\n", "HD\r\n");
    sleep_s(2.1);
    c.expect("mg t3 v\r\n", "EN\r\n");
}

#[test]
fn ttl_flags_apply_in_the_order_sent() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // R looks at the TTL the flags before it left: the old one here...
    c.expect("ms a 1 T100\r\nx\r\n", "HD\r\n");
    assert_eq!(strip_ttl(&line(&mut c, "mg a R30 T10 t\r\n")), "HD");
    assert_ttl_near(&line(&mut c, "mg a t\r\n"), 10);
    // ...and the new one here.
    c.expect("ms b 1 T100\r\nx\r\n", "HD\r\n");
    assert_eq!(strip_ttl(&line(&mut c, "mg b T10 R30 t\r\n")), "HD W");
    c.expect("ms b2 1 T10\r\nx\r\n", "HD\r\n");
    let l = line(&mut c, "mg b2 t R30 T100\r\n");
    assert_eq!(strip_ttl(&l), "HD W");
    assert_ttl_near(&l, 10);
    // An item N creates starts without a TTL; of T and N the later one counts.
    c.expect("mg c t N30\r\n", "HD t-1 W\r\n");
    assert_ttl_near(&line(&mut c, "mg c t\r\n"), 30);
    assert_ttl_near(&line(&mut c, "mg d T60 N30 t\r\n"), 30);
    assert_ttl_near(&line(&mut c, "mg e N30 T60 t\r\n"), 60);
    c.expect("mg f T-1 N0\r\n", "HD W\r\n");
    c.expect("add f 0 0 1\r\ny\r\n", "NOT_STORED\r\n");
    // ma: the same order for T, N and t.
    assert_ttl_near(&line(&mut c, "ma g N30 T60 t\r\n"), 60);
    c.expect("set h 0 0 1\r\n1\r\n", "STORED\r\n");
    c.expect("ma h t T60\r\n", "HD t-1\r\n");
    assert_ttl_near(&line(&mut c, "ma h t\r\n"), 60);
}

#[test]
fn base64_keys() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // "Zm9v" is "foo": the decoded key is the item's key.
    c.expect("ms Zm9v 3 b\r\nbar\r\n", "HD\r\n");
    assert_eq!(c.get("foo").as_deref(), Some(&b"bar"[..]));
    c.expect("mg Zm9v b v\r\n", "VA 3\r\nbar\r\n");
    // A base64 key comes back in base64, followed by `b`.
    c.expect("mg Zm9v b k v\r\n", "VA 3 kZm9v b\r\nbar\r\n");
    c.expect("mg bjE b v\r\n", "CLIENT_ERROR error decoding key\r\n");
    c.expect("ma bjE= b N0 J7 v\r\n", "VA 1\r\n7\r\n");
    assert_eq!(c.get("n1").as_deref(), Some(&b"7"[..]));
    c.expect("md Zm9v b\r\n", "HD\r\n");
    c.expect("mg foo v\r\n", "EN\r\n");
}

#[test]
fn ms_modes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms m 1 ME\r\na\r\n", "HD\r\n");
    c.expect("ms m 1 ME\r\nb\r\n", "NS\r\n");
    c.expect("ms m2 1 MR\r\nb\r\n", "NS\r\n");
    c.expect("ms m 1 MR\r\nc\r\n", "HD\r\n");
    c.expect("ms m 1 MA\r\nd\r\n", "HD\r\n");
    c.expect("ms m 1 MP\r\ne\r\n", "HD\r\n");
    c.expect("mg m v\r\n", "VA 3\r\necd\r\n");
    c.expect("ms m2 1 MA\r\nd\r\n", "NS\r\n");
    c.expect("ms m2 1 MP\r\nd\r\n", "NS\r\n");
    c.expect("ms m 1 MS\r\nf\r\n", "HD\r\n");
    c.expect("ms m 1 MS\r\ng\r\n", "HD\r\n");
    c.expect("mg m v\r\n", "VA 1\r\ng\r\n");
    // Modes are case-sensitive.
    c.expect(
        "ms m 1 Ms\r\nx\r\n",
        "CLIENT_ERROR invalid mode for ms M token\r\n",
    );
    // A bad mode is an error; the data block is swallowed.
    c.expect(
        "ms m 1 MX\r\nx\r\n",
        "CLIENT_ERROR invalid mode for ms M token\r\n",
    );
    c.expect("mg m v\r\n", "VA 1\r\ng\r\n");
    // Append keeps the old client flags.
    c.expect("ms fl 1 F9\r\na\r\n", "HD\r\n");
    c.expect("ms fl 1 MA F3\r\nb\r\n", "HD\r\n");
    c.expect("mg fl f v\r\n", "VA 2 f9\r\nab\r\n");
}

#[test]
fn ms_flags_ttl_cas_and_opaque() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms k 3 F42 T100 O1 k\r\nabc\r\n", "HD O1 kk\r\n");
    c.expect("get k\r\n", "VALUE k 42 3\r\nabc\r\nEND\r\n");
    assert_ttl_near(&line(&mut c, "mg k t\r\n"), 100);
    let l = line(&mut c, "ms k 1 c\r\nx\r\n");
    let cas: u64 = l.strip_prefix("HD c").expect(&l).parse().unwrap();
    assert_eq!(cas_of(&mut c, "k"), cas);
    assert_eq!(c.gets("k").unwrap().1, cas);
    // Compare and swap.
    c.expect(format!("ms k 1 C{}\r\ny\r\n", cas + 1000), "EX\r\n");
    let l = line(&mut c, &format!("ms k 1 C{cas} c\r\ny\r\n"));
    let new: u64 = l.strip_prefix("HD c").expect(&l).parse().unwrap();
    assert_ne!(new, cas);
    c.expect("mg k v\r\n", "VA 1\r\ny\r\n");
    c.expect("ms nokey 1 C5\r\nx\r\n", "NF\r\n");
}

#[test]
fn ms_cas_reply_on_failure_and_quiet() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms a1 1\r\nx\r\n", "HD\r\n");
    let cas = cas_of(&mut c, "a1");
    // memcached sends `c0` with a failed store.
    c.expect(format!("ms a1 1 C{} c\r\ny\r\n", cas + 99), "EX c0\r\n");
    c.expect("ms a1 1 MR O5 k\r\nx\r\n", "HD O5 ka1\r\n");
    c.expect("ms zz 1 MR O5 k\r\nx\r\n", "NS O5 kzz\r\n");
    // q hides HD, not NS or EX.
    c.expect(
        "ms a1 1 q\r\nx\r\nms zz 1 MR q\r\nx\r\nms a1 1 C999999 q\r\ny\r\nmn\r\n",
        "NS\r\nEX\r\nMN\r\n",
    );
    // ms's `s` is accepted (1.6.18 sends nothing for it).
    c.expect("ms a1 1 s\r\nx\r\n", "HD\r\n");
}

#[test]
fn ms_too_large_and_bad_chunks() {
    let s = Server::with_2k_items();
    let mut c = s.client();
    c.expect("ms big 1 T0\r\nx\r\n", "HD\r\n");
    let big = vec![b'v'; 4000];
    let mut cmd = b"ms big 4000\r\n".to_vec();
    cmd.extend_from_slice(&big);
    cmd.extend_from_slice(b"\r\n");
    c.expect(cmd, "SERVER_ERROR object too large for cache\r\n");
    // The data was swallowed, and the old value is gone.
    c.expect("mg big v\r\n", "EN\r\n");
    // The same with the key in base64 ("big2" is YmlnMg==).
    c.expect("ms YmlnMg== 1 b T0\r\nx\r\n", "HD\r\n");
    let mut cmd = b"ms YmlnMg== 4000 b\r\n".to_vec();
    cmd.extend_from_slice(&big);
    cmd.extend_from_slice(b"\r\n");
    c.expect(cmd, "SERVER_ERROR object too large for cache\r\n");
    c.expect("mg big2 v\r\n", "EN\r\n");
    // A data block of the wrong length.
    c.expect(
        "ms a 2\r\nxyz\r\n",
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n",
    );
    c.expect(
        "ms a abc\r\nx\r\n",
        "CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
    c.expect("ms a\r\n", "CLIENT_ERROR bad command line format\r\n");
    c.expect("mn\r\n", "MN\r\n");
}

#[test]
fn md_delete_cas_quiet() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("md nokey\r\n", "NF\r\n");
    c.expect("md nokey O5 k\r\n", "NF O5 knokey\r\n");
    c.expect("ms d 1\r\nx\r\n", "HD\r\n");
    c.expect("md d O5 k C999999\r\n", "EX O5 kd\r\n");
    let cas = cas_of(&mut c, "d");
    c.expect(format!("md d C{cas} O6\r\n"), "HD O6\r\n");
    c.expect("mg d v\r\n", "EN\r\n");
    // q hides HD; NF is still sent.
    c.expect("ms d 1\r\nx\r\n", "HD\r\n");
    c.expect("md d q\r\nmd d q\r\nmn\r\n", "NF\r\nMN\r\n");
    // T without I is ignored: the item is deleted.
    c.expect("ms d 1\r\nx\r\n", "HD\r\n");
    c.expect("md d T30\r\n", "HD\r\n");
    c.expect("mg d\r\n", "EN\r\n");
}

#[test]
fn ma_arithmetic() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ma n\r\n", "NF\r\n");
    c.expect("ma n O5 k\r\n", "NF O5 kn\r\n");
    // Vivify with an initial value: the first reply is that value.
    c.expect("ma n N0 J10 v\r\n", "VA 2\r\n10\r\n");
    c.expect("ma n v\r\n", "VA 2\r\n11\r\n");
    c.expect("ma n\r\n", "HD\r\n");
    c.expect("ma n D8 v\r\n", "VA 2\r\n20\r\n");
    let l = line(&mut c, "ma n MD D5 v t c\r\n");
    c.expect_reply("15\r\n");
    let cas = cas_of(&mut c, "n");
    assert_eq!(l, format!("VA 2 t-1 c{cas}"));
    c.expect("ma n M- D50 v\r\n", "VA 1\r\n0\r\n");
    c.expect("ma n M+ D3 v\r\n", "VA 1\r\n3\r\n");
    c.expect("ma n MI v\r\n", "VA 1\r\n4\r\n");
    c.expect("ma n MD v\r\n", "VA 1\r\n3\r\n");
    c.expect(
        "ma n Md v\r\n",
        "CLIENT_ERROR invalid mode for ma M token\r\n",
    );
    // Wraps at 2^64 like incr.
    c.expect("ma n D18446744073709551615 v\r\n", "VA 1\r\n2\r\n");
    // q hides every success, even with v; failures are shown.
    c.expect("ma n q v\r\nma nope q\r\nmn\r\n", "NF\r\nMN\r\n");
    c.expect("ma n C999999 v\r\n", "EX\r\n");
    c.expect("ma n T100 t\r\n", "HD t100\r\n");
    c.expect("ma zz N0 J3 MD v k O1\r\n", "VA 1 kzz O1\r\n3\r\n");
    c.expect("ma zz2 N0 v\r\n", "VA 1\r\n0\r\n");
    c.expect("ms s1 3\r\nabc\r\n", "HD\r\n");
    c.expect(
        "ma s1\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.expect(
        "ma n Mx\r\n",
        "CLIENT_ERROR invalid mode for ma M token\r\n",
    );
    c.expect(
        "ma n Dabc\r\n",
        "CLIENT_ERROR invalid or duplicate flag\r\n",
    );
    c.expect(
        "ma n D18446744073709551616\r\n",
        "CLIENT_ERROR invalid or duplicate flag\r\n",
    );
}

#[test]
fn mn_and_me() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("mn\r\n", "MN\r\n");
    c.expect("me nokey\r\n", "EN\r\n");
    c.expect("ms foo 3\r\nbar\r\n", "HD\r\n");
    let cas = cas_of(&mut c, "foo");
    let l = line(&mut c, "me foo\r\n");
    let prefix = "ME foo exp=-1 la=";
    assert!(l.starts_with(prefix), "{l:?}");
    assert!(
        l.contains(&format!(" cas={cas} fetch=yes cls=1 size=")),
        "{l:?}"
    );
}

#[test]
fn flag_errors_name_the_flag_in_mg_and_ms() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let token = "CLIENT_ERROR bad token in command line format\r\n";
    for flag in ["T", "C", "N", "R"] {
        c.expect(format!("ms a 1 {flag}abc\r\nx\r\n"), token);
    }
    c.expect("mg a Cx\r\n", token);
    let format = "CLIENT_ERROR bad command line format\r\n";
    c.expect("mg a Fabc\r\n", format);
    let delta = "CLIENT_ERROR invalid numeric delta value\r\n";
    c.expect("mg a Dabc\r\n", delta);
    c.expect("ms a 1 Dabc\r\nx\r\n", delta);
    let initial = "CLIENT_ERROR invalid numeric initial value\r\n";
    c.expect("mg a J\r\n", initial);
    c.expect("ms a 1 Jx\r\nx\r\n", initial);
    let length = "CLIENT_ERROR incorrect length for M token\r\n";
    c.expect("ms a 2 MEE\r\nhi\r\n", length);
    c.expect("ms a 2 M\r\nhi\r\n", length);
    c.expect("mg a M\r\n", length);
    c.expect("mg a Mx\r\n", "EN\r\n");
    // md and ma: one message for every flag problem, a bad key included.
    let any = "CLIENT_ERROR invalid or duplicate flag\r\n";
    c.expect("ma a MII\r\n", any);
    c.expect("md a MEE\r\n", any);
    c.expect("md !!! b\r\n", any);
    c.expect("ma !!! b\r\n", any);
    c.expect("mg !!! b\r\n", "CLIENT_ERROR error decoding key\r\n");
    // me reads no flag but b, and that only as its first; it wants a key.
    c.expect("me a b\r\n", format);
    c.expect("me a Z T1 T2\r\n", "EN\r\n");
    c.expect("set fooz 0 0 1\r\nx\r\n", "STORED\r\n");
    assert!(line(&mut c, "me fooz bar\r\n").starts_with("ME fooz exp=-1 "));
    assert!(line(&mut c, "me Zm9veg== b\r\n").starts_with("ME "));
    c.expect("me Zm9veg== v b\r\n", "EN\r\n");
    c.expect("me\r\n", format);
    // The key as sent is at most 250 bytes, base64 or not.
    let b64 = "QUFB".repeat(63);
    for cmd in ["mg", "md", "ma", "me"] {
        c.expect(format!("{cmd} {b64} b\r\n"), format);
    }
    c.expect(format!("mg {}QUE= b v\r\n", "QUFB".repeat(61)), "EN\r\n");
    // q hides ma's reply for an update, not for a creation.
    c.expect("ma n q N0\r\nmn\r\n", "HD\r\nMN\r\n");
    c.expect("ma n q v\r\nmn\r\n", "MN\r\n");
    c.expect("ma n2 q N0 v\r\nmn\r\n", "VA 1\r\n0\r\nMN\r\n");
    // A creation counts as neither an incr hit nor a miss.
    c.expect("stats reset\r\n", "RESET\r\n");
    c.expect("ma n3 N0\r\nma n3\r\nma n4\r\n", "HD\r\nHD\r\nNF\r\n");
    let st = c.stats("");
    assert_eq!((&st["incr_hits"][..], &st["incr_misses"][..]), ("1", "1"));
}

#[test]
fn cas_guards_only_the_modes_that_overwrite() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // add ignores C: a miss stores, a hit is NS.
    c.expect("ms a 1 ME C5\r\nx\r\n", "HD\r\n");
    c.expect("ms a 1 ME C5\r\ny\r\n", "NS\r\n");
    // append and prepend: a miss is NS, as without C; a hit compares.
    c.expect("ms b 1 MA C5\r\nx\r\n", "NS\r\n");
    c.expect("ms b 1 MP C5\r\nx\r\n", "NS\r\n");
    c.expect("ms a 1 MA C5\r\ny\r\n", "EX\r\n");
    let cas = cas_of(&mut c, "a");
    c.expect(format!("ms a 1 MA C{cas}\r\ny\r\n"), "HD\r\n");
    c.expect("mg a v\r\n", "VA 2\r\nxy\r\n");
    // set and replace: a miss is NF.
    c.expect("ms b 1 MS C5\r\nx\r\n", "NF\r\n");
    c.expect("ms b 1 MR C5\r\nx\r\n", "NF\r\n");
    // C0 matches nothing in ms and md, and with I is not "older" either...
    c.expect("ms a 1 C0\r\nz\r\n", "EX\r\n");
    c.expect("ms a 1 C0 I\r\nz\r\n", "EX\r\n");
    c.expect("md a C0\r\n", "EX\r\n");
    c.expect("mg a v\r\n", "VA 2\r\nxy\r\n");
    // An empty value is not a number whatever the CAS; another non-number with
    // a wrong CAS is EX (memcached checks in that order).
    c.expect("set e 0 0 0\r\n\r\n", "STORED\r\n");
    c.expect(
        "ma e C999999\r\n",
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
    );
    c.expect("set x 0 0 1\r\nx\r\n", "STORED\r\n");
    c.expect("ma x C999999\r\n", "EX\r\n");
    // ...and in append, prepend and ma it means no C at all.
    c.expect("ms a 1 MA C0\r\nz\r\n", "HD\r\n");
    c.expect("ms a 1 MP C0\r\nw\r\n", "HD\r\n");
    c.expect("mg a v\r\n", "VA 4\r\nwxyz\r\n");
    c.expect("set n 0 0 2\r\n10\r\n", "STORED\r\n");
    c.expect("ma n C0 v\r\n", "VA 2\r\n11\r\n");
    // I turns an older CAS into a stale store for set and replace only.
    let older = cas_of(&mut c, "a") - 1;
    c.expect(format!("ms a 1 MA C{older} I\r\nq\r\n"), "EX\r\n");
    c.expect("mg a v\r\n", "VA 4\r\nwxyz\r\n");
    c.expect(format!("ms a 1 MR C{older} I\r\nq\r\n"), "HD\r\n");
    c.expect("mg a v\r\n", "VA 1 X W\r\nq\r\n");
    // The cas_* counters count set and replace with C, as memcached's do.
    c.expect("stats reset\r\n", "RESET\r\n");
    c.expect("ms new 1 ME C5\r\nx\r\n", "HD\r\n");
    c.expect("ms new 1 MA C99\r\nx\r\n", "EX\r\n");
    c.expect("ms new 1 MS C99\r\nx\r\n", "EX\r\n");
    c.expect("ms gone 1 MR C99\r\nx\r\n", "NF\r\n");
    let st = c.stats("");
    assert_eq!(
        (
            &st["cas_hits"][..],
            &st["cas_badval"][..],
            &st["cas_misses"][..]
        ),
        ("0", "1", "1")
    );
}

#[test]
fn arithmetic_keeps_the_items_fetched_stale_and_win_bits() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set a 0 0 1\r\n1\r\n", "STORED\r\n");
    c.expect("get a\r\n", "VALUE a 0 1\r\n1\r\nEND\r\n");
    c.expect("incr a 1\r\n", "2\r\n");
    c.expect("mg a h\r\n", "HD h1\r\n");
    // ...unless the number grows longer: memcached makes a new item then.
    c.expect("set a 0 0 1\r\n9\r\n", "STORED\r\n");
    c.expect("get a\r\n", "VALUE a 0 1\r\n9\r\nEND\r\n");
    c.expect("incr a 1\r\n", "10\r\n");
    c.expect("mg a h\r\n", "HD h0\r\n");
    // An invalidated item stays stale through an increment, its win still owed.
    c.expect("set b 0 0 1\r\n1\r\n", "STORED\r\n");
    c.expect("md b I\r\n", "HD\r\n");
    c.expect("incr b 1\r\n", "2\r\n");
    c.expect("mg b v\r\n", "VA 1 X W\r\n2\r\n");
    c.expect("ma b v\r\n", "VA 1\r\n3\r\n");
    c.expect("mg b v\r\n", "VA 1 Z X\r\n3\r\n");
}

#[test]
fn a_too_large_ms_drops_the_old_value_in_every_mode() {
    let s = Server::with_2k_items();
    let mut c = s.client();
    let big = "x".repeat(3000);
    let fits = "y".repeat(2030);
    for mode in ["MS", "ME", "MR", "MA", "MP"] {
        c.expect("set k 0 0 1\r\na\r\n", "STORED\r\n");
        c.expect(
            format!("ms k 3000 {mode}\r\n{big}\r\n"),
            "SERVER_ERROR object too large for cache\r\n",
        );
        c.expect("mg k v\r\n", "EN\r\n");
        // Over the limit with the header and key only: refused once read.
        c.expect("set k 0 0 1\r\na\r\n", "STORED\r\n");
        c.expect(
            format!("ms k 2030 {mode}\r\n{fits}\r\n"),
            "SERVER_ERROR object too large for cache\r\n",
        );
        c.expect("mg k v\r\n", "EN\r\n");
    }
    // A classic append keeps it, in memcached too.
    c.expect("set k 0 0 1\r\na\r\n", "STORED\r\n");
    c.expect(
        format!("append k 0 0 3000\r\n{big}\r\n"),
        "SERVER_ERROR object too large for cache\r\n",
    );
    c.expect("mg k v\r\n", "VA 1\r\na\r\n");
}

#[test]
fn touch_is_a_read_of_the_item() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set a 0 0 1\r\n1\r\n", "STORED\r\n");
    c.expect("mg a h\r\n", "HD h0\r\n");
    c.expect("set a 0 0 1\r\n1\r\n", "STORED\r\n");
    c.expect("touch a 10\r\n", "TOUCHED\r\n");
    c.expect("mg a h\r\n", "HD h1\r\n");
}

#[test]
fn flag_errors() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms a 1\r\nx\r\n", "HD\r\n");
    c.expect("mg a zz\r\n", "CLIENT_ERROR invalid flag\r\n");
    c.expect("mg a v v\r\n", "CLIENT_ERROR duplicate flag\r\n");
    c.expect("mg a O1 O2\r\n", "CLIENT_ERROR duplicate flag\r\n");
    c.expect(
        "mg a O12345678901234567890123456789012\r\n",
        "CLIENT_ERROR opaque token too long\r\n",
    );
    c.expect(
        "mg a O1234567890123456789012345678901\r\n",
        "HD O1234567890123456789012345678901\r\n",
    );
    c.expect(
        "mg a Tabc\r\n",
        "CLIENT_ERROR bad token in command line format\r\n",
    );
    // ms errors swallow the data block.
    c.expect("ms a 1 zz\r\nx\r\n", "CLIENT_ERROR invalid flag\r\n");
    c.expect("ms a 1 c c\r\nx\r\n", "CLIENT_ERROR duplicate flag\r\n");
    c.expect(
        "ms a 1 Fabc\r\nx\r\n",
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.expect(
        "ms a 1 O123456789012345678901234567890123\r\nx\r\n",
        "CLIENT_ERROR opaque token too long\r\n",
    );
    c.expect(
        "md a Cabc\r\n",
        "CLIENT_ERROR invalid or duplicate flag\r\n",
    );
    c.expect("md a zz\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
    c.expect("md a v v\r\n", "CLIENT_ERROR invalid or duplicate flag\r\n");
    // Flags a command has no use for are ignored.
    c.expect("mg a v N5 M1 I\r\n", "VA 1\r\nx\r\n");
    c.expect(
        "md a O123456789012345678901234567890123\r\n",
        "CLIENT_ERROR opaque token too long\r\n",
    );
    c.expect("mg\r\n", "ERROR\r\n");
    c.expect("md\r\n", "ERROR\r\n");
    let long = "k".repeat(251);
    c.expect(
        format!("mg {long} v\r\n"),
        "CLIENT_ERROR bad command line format\r\n",
    );
    c.expect("mg a v\r\n", "VA 1\r\nx\r\n");
}

// ----- stampede protection ----------------------------------------------------

#[test]
fn vivify_on_miss_hands_out_one_win() {
    // memcached's protocol.txt example: `mg foo s c v N30 t`.
    let s = Server::start(&[]);
    let mut c = s.client();
    let mut other = s.client();
    let l = line(&mut c, "mg foo s c v N30 t\r\n");
    c.expect_reply("\r\n");
    let cas = cas_of(&mut other, "foo");
    assert_eq!(l, format!("VA 0 s0 c{cas} t30 W"));
    for _ in 0..3 {
        let l = line(&mut other, "mg foo s c v N30 t\r\n");
        other.expect_reply("\r\n");
        assert!(l.starts_with(&format!("VA 0 s0 c{cas} t")), "{l:?}");
        assert!(l.ends_with(" Z") && !l.contains(" W"), "{l:?}");
    }
    // The winner stores with the CAS it was given; then nobody wins or waits.
    c.expect(format!("ms foo 3 T30 C{cas}\r\nabc\r\n"), "HD\r\n");
    let l = line(&mut other, "mg foo s v N30 t\r\n");
    assert!(l == "VA 3 s3 t30" || l == "VA 3 s3 t29", "{l:?}");
    other.expect_reply("abc\r\n");
}

#[test]
fn invalidate_serves_stale_with_one_win() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms k1 3 T30\r\nabc\r\n", "HD\r\n");
    let before = cas_of(&mut c, "k1");
    c.expect("md k1 I T30\r\n", "HD\r\n");
    let l = line(&mut c, "mg k1 s c v t\r\n");
    let cas: u64 = l
        .split(' ')
        .find_map(|t| t.strip_prefix('c'))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(cas, before, "md I gives the item a new CAS");
    assert_eq!(strip_ttl(&l), format!("VA 3 s3 c{cas} X W"));
    c.expect_reply("abc\r\n");
    for _ in 0..2 {
        let l = line(&mut c, "mg k1 s c v t\r\n");
        assert_eq!(strip_ttl(&l), format!("VA 3 s3 c{cas} Z X"));
        c.expect_reply("abc\r\n");
    }
    c.expect("mg k1 c\r\n", format!("HD c{cas} Z X\r\n"));
    // A normal ms clears the stale state.
    c.expect("ms k1 3 T30\r\nnew\r\n", "HD\r\n");
    let l = line(&mut c, "mg k1 v\r\n");
    assert_eq!(l, "VA 3");
    c.expect_reply("new\r\n");
    // md I q is silent.
    c.expect("md k1 I q\r\nmn\r\n", "MN\r\n");
}

/// Drops the ` t<n>` token (its value depends on the clock).
fn strip_ttl(l: &str) -> String {
    l.split(' ')
        .filter(|t| !(t.starts_with('t') && t.len() > 1))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ms_with_older_cas_and_invalidate_stores_stale() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms c1 1\r\nx\r\n", "HD\r\n");
    let old = cas_of(&mut c, "c1");
    c.expect("ms c1 1\r\nw\r\n", "HD\r\n");
    let cur = cas_of(&mut c, "c1");
    // Without I an older CAS fails; a newer one fails even with I.
    c.expect(format!("ms c1 1 C{old}\r\nq\r\n"), "EX\r\n");
    c.expect(format!("ms c1 1 C{} I\r\nq\r\n", cur + 50), "EX\r\n");
    c.expect(format!("ms c1 1 C{old} I\r\nq\r\n"), "HD\r\n");
    let l = line(&mut c, "mg c1 v\r\n");
    assert_eq!(l, "VA 1 X W");
    c.expect_reply("q\r\n");
    let l = line(&mut c, "mg c1 v\r\n");
    assert_eq!(l, "VA 1 Z X");
    c.expect_reply("q\r\n");
}

/// A stale store while a refill is owed keeps the win token out (`Z`, not a
/// second `W`) and the item's expiry (memcached's CAS_STALE).
#[test]
fn a_stale_store_keeps_the_win_token_and_the_expiry() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms k 1 T100\r\nx\r\n", "HD\r\n");
    let old = cas_of(&mut c, "k");
    c.expect("md k I\r\n", "HD\r\n");
    let l = line(&mut c, "mg k\r\n");
    assert_eq!(l, "HD X W", "the first reader wins the refill");
    c.expect(format!("ms k 1 C{old} I T0\r\ny\r\n"), "HD\r\n");
    let l = line(&mut c, "mg k t\r\n");
    let tokens: Vec<&str> = l.split(' ').collect();
    assert!(tokens.contains(&"Z") && !tokens.contains(&"W"), "{l}");
    assert_ttl_near(&l, 100);
}

#[test]
fn recache_hands_out_one_win_before_expiry() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms k2 3 T10\r\nabc\r\n", "HD\r\n");
    // More than 5 seconds left: no win.
    let l = line(&mut c, "mg k2 v R5\r\n");
    assert_eq!(l, "VA 3");
    c.expect_reply("abc\r\n");
    let l = line(&mut c, "mg k2 v t R30\r\n");
    assert_eq!(strip_ttl(&l), "VA 3 W");
    c.expect_reply("abc\r\n");
    let l = line(&mut c, "mg k2 v t R30\r\n");
    assert_eq!(strip_ttl(&l), "VA 3 Z");
    c.expect_reply("abc\r\n");
    let l = line(&mut c, "mg k2 v\r\n");
    assert_eq!(l, "VA 3 Z");
    c.expect_reply("abc\r\n");
    // No expiry: R never wins.
    c.expect("ms k3 1 T0\r\nx\r\n", "HD\r\n");
    c.expect("mg k3 R30\r\n", "HD\r\n");
}

// ----- features of memcached releases after 1.6.18 -------------------------------

#[test]
fn explicit_cas_with_e() {
    if skip_unless_corecache("E flag (later memcached 1.6 releases)") {
        return;
    }
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms e1 1 E12345 c\r\nx\r\n", "HD c12345\r\n");
    c.expect("mg e1 c\r\n", "HD c12345\r\n");
    c.expect("ms e1 1 C12345 E500 c\r\ny\r\n", "HD c500\r\n");
    c.expect("md e1 I E777\r\n", "HD\r\n");
    c.expect("mg e1 c v\r\n", "VA 1 c777 X W\r\ny\r\n");
    c.expect("mg e2 N30 E4242 c\r\n", "HD c4242 W\r\n");
    c.expect("ma e3 N0 J1 E99 c\r\n", "HD c99\r\n");
    c.expect("ma e3 E100 c v\r\n", "VA 1 c100\r\n2\r\n");
    // A client's CAS is the item's only: the server's own sequence goes on as
    // before (as in memcached, the client keeps E values unique), so an extreme
    // one cannot exhaust it.
    let l = line(&mut c, "ms e4 1 c\r\nx\r\n");
    let cas: u64 = l.strip_prefix("HD c").unwrap().parse().unwrap();
    assert!(cas < 100, "{l}");
    c.expect("ms e5 1 E0\r\nx\r\n", "HD\r\n");
    c.expect("mg e5 v\r\n", "VA 1\r\nx\r\n");
    c.expect("ms e6 1 E18446744073709551615\r\nx\r\n", "HD\r\n");
    c.expect("flush_all\r\n", "OK\r\n");
    c.expect("set after 0 0 1\r\ny\r\n", "STORED\r\n");
    c.expect("get after\r\n", "VALUE after 0 1\r\ny\r\nEND\r\n");
    c.expect("mg e5 v\r\n", "EN\r\n");
}

#[test]
fn ms_append_vivify() {
    if skip_unless_corecache("ms N with MA (later memcached 1.6 releases)") {
        return;
    }
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms av 1 MA N30\r\na\r\n", "HD\r\n");
    c.expect("ms av 1 MA N30\r\nb\r\n", "HD\r\n");
    let l = line(&mut c, "mg av v t\r\n");
    assert_ttl_near(&l, 30);
    c.expect_reply("ab\r\n");
}

// ----- across cores ---------------------------------------------------------------

/// Keys whose owner is `core` of 2.
fn keys_owned_by(core: usize, n: usize, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| owner(key_hash(k.as_bytes()), 2) == core)
        .take(n)
        .collect()
}

fn b64(s: &str) -> String {
    let mut out = Vec::new();
    corecache::protocol::meta::encode_base64(s.as_bytes(), &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn meta_requests_for_another_cores_keys_are_forwarded() {
    if skip_unless_corecache("--core-ports / cross-core routing") {
        return;
    }
    let s = Server::builder().args(&["-t", "2"]).core_ports(2).start();
    for core in 0..2 {
        for (p, port) in s.core_ports.iter().enumerate() {
            let mut c = Client::connect(*port);
            let keys = keys_owned_by(core, 3, &format!("x{p}-"));
            for k in &keys {
                // A quiet pipeline mixing forwarded and local work stays in order.
                c.expect(
                    format!(
                        "mg {k} s v N30 q\r\nms {k} 2 T0 q\r\nhi\r\nmg {k} v k q\r\n\
                         mg nope{k} q\r\nma {k}c N0 J5 v\r\nmn\r\n"
                    ),
                    format!("VA 0 s0 W\r\n\r\nVA 2 k{k}\r\nhi\r\nVA 1\r\n5\r\nMN\r\n"),
                );
            }
            // A base64 key is routed by its decoded bytes.
            let k = &keys[0];
            c.expect(format!("mg {} b v\r\n", b64(k)), "VA 2\r\nhi\r\n");
            c.expect(format!("md {} b I\r\n", b64(k)), "HD\r\n");
            c.expect(format!("mg {k} v\r\n"), "VA 2 X W\r\nhi\r\n");
            c.expect(format!("mg {k} v\r\n"), "VA 2 Z X\r\nhi\r\n");
            let l = line(&mut c, &format!("me {k}\r\n"));
            assert!(l.starts_with(&format!("ME {k} exp=-1 ")), "{l}");
        }
    }
}

#[test]
fn two_hundred_concurrent_vivifies_get_exactly_one_win() {
    let s = if is_memcached() {
        Server::start(&["-t", "2"])
    } else {
        Server::builder().args(&["-t", "2"]).core_ports(2).start()
    };
    let mut ports = vec![s.port];
    ports.extend(s.core_ports.iter().copied());
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.expect("mn\r\n", "MN\r\n");
                barrier.wait();
                c.send("mg herd N30 s c v t\r\n");
                let l = c.read_line();
                c.expect_reply("\r\n");
                l
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let wins = replies.iter().filter(|l| l.ends_with(" W")).count();
    let waits = replies.iter().filter(|l| l.ends_with(" Z")).count();
    assert_eq!(wins, 1, "exactly one W: {replies:?}");
    assert_eq!(waits, n - 1, "all others Z: {replies:?}");
    for l in &replies {
        assert!(l.starts_with("VA 0 s0 c"), "{l}");
    }
}

/// A client CAS over 48 bits given to an item stored with the server's own
/// (`md I E`: the item is rewritten with room for it, `storage/item.rs`):
/// the item keeps its value and flags and reports the client's CAS.
#[test]
fn a_wide_client_cas_on_a_stored_item() {
    // md E came after 1.6.18 (docs/protocol.md).
    if skip_unless_corecache("md E") {
        return;
    }
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("ms wide 5 F7\r\nhello\r\n", "HD\r\n");
    c.expect("md wide I E18446744073709551610 T30\r\n", "HD\r\n");
    c.expect(
        "mg wide v f c\r\n",
        "VA 5 f7 c18446744073709551610 X W\r\nhello\r\n",
    );
    c.expect("ms wide 2 C18446744073709551610\r\nhi\r\n", "HD\r\n");
    c.expect("mg wide v f\r\n", "VA 2 f0\r\nhi\r\n");
}

/// Found by a differential fuzz run: `mg ... T` giving an item its first
/// expiry rewrote it (a larger header) and then wrote the old chunk's list
/// bits on the new one; `stats cachedump` looped and a later store into the
/// class stopped the core. The fuzzer's minimal sequence, whole.
#[test]
fn mg_t_moving_an_item_keeps_the_server_whole() {
    // One core and the fuzzer's memory: every key in one shard, as found.
    let s = Server::builder().args(&["-t", "1", "-m", "64"]).start();
    let mut c = s.client();
    let set = |c: &mut Client, key: &str, ttl: u32, len: usize| {
        c.expect(
            format!("set {key} 0 {ttl} {len}\r\n{}\r\n", "a".repeat(len)),
            "STORED\r\n",
        );
    };
    set(&mut c, "k3", 0, 16388);
    set(&mut c, "k2", 0, 16385);
    c.send("mg k3 T400 v\r\n");
    c.expect_reply("VA 16388\r\n");
    c.read_exact(16388 + 2);
    set(&mut c, "k4", 0, 16373);
    c.expect("touch k4 300\r\n", "TOUCHED\r\n");
    set(&mut c, "k3", 0, 45095);
    set(&mut c, "k1", 0, 16388);
    c.send("mg k4 T400 v\r\n");
    c.expect_reply("VA 16373\r\n");
    c.read_exact(16373 + 2);
    c.expect("delete k1\r\n", "DELETED\r\n");
    set(&mut c, "k0", 0, 16381);
    set(&mut c, "k4", 500, 138);
    set(&mut c, "k2", 500, 117);
    set(&mut c, "k2", 0, 16381);
    for (key, len) in [("k0", 16381), ("k2", 16381), ("k3", 45095), ("k4", 138)] {
        assert_eq!(c.get(key).map(|v| v.len()), Some(len), "{key}");
    }
}
