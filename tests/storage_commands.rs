//! Storage commands: set/add/replace/append/prepend/cas, their replies and `noreply`.
//! Every expected reply here was checked against memcached 1.6.18.

mod common;
use common::*;

#[test]
fn set_then_get_roundtrip() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set foo 0 0 3\r\nbar\r\n", "STORED\r\n");
    c.expect("get foo\r\n", "VALUE foo 0 3\r\nbar\r\nEND\r\n");
    // Overwrite with a longer value and different flags.
    c.expect("set foo 42 0 6\r\nbarbaz\r\n", "STORED\r\n");
    c.expect("get foo\r\n", "VALUE foo 42 6\r\nbarbaz\r\nEND\r\n");
    // And with a shorter one.
    c.expect("set foo 1 0 1\r\nx\r\n", "STORED\r\n");
    c.expect("get foo\r\n", "VALUE foo 1 1\r\nx\r\nEND\r\n");
}

#[test]
fn set_is_binary_safe() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // A value containing CR, LF, NUL and high bytes, and one that looks like a command.
    let mut cmd = b"set bin 0 0 10\r\n".to_vec();
    let value = b"a\r\nb\0\xff\r\nEN";
    cmd.extend_from_slice(value);
    cmd.extend_from_slice(b"\r\n");
    c.expect(&cmd, "STORED\r\n");
    let mut want = b"VALUE bin 0 10\r\n".to_vec();
    want.extend_from_slice(value);
    want.extend_from_slice(b"\r\nEND\r\n");
    c.expect("get bin\r\n", &want);
    c.expect("set cmd 0 0 9\r\nget x y\r\n\r\n", "STORED\r\n");
    c.expect("get cmd\r\n", "VALUE cmd 0 9\r\nget x y\r\n\r\nEND\r\n");
}

#[test]
fn zero_byte_value() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set empty 7 0 0\r\n\r\n", "STORED\r\n");
    c.expect("get empty\r\n", "VALUE empty 7 0\r\n\r\nEND\r\n");
    c.expect("append empty 0 0 2\r\nab\r\n", "STORED\r\n");
    c.expect("get empty\r\n", "VALUE empty 7 2\r\nab\r\nEND\r\n");
}

#[test]
fn client_flags_are_32_bit() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("set f 4294967295 0 1\r\nx\r\n", "STORED\r\n");
    c.expect("get f\r\n", "VALUE f 4294967295 1\r\nx\r\nEND\r\n");
    c.expect("set f 12345 0 1\r\nx\r\n", "STORED\r\n");
    c.expect("get f\r\n", "VALUE f 12345 1\r\nx\r\nEND\r\n");
    // memcached 1.6.18: flags of 2^32 are accepted (STORED, as the reference says) but
    // come back as 0: they are truncated to 32 bits, not range-checked.
    c.expect("set f 4294967296 0 1\r\nx\r\n", "STORED\r\n");
    c.expect("get f\r\n", "VALUE f 0 1\r\nx\r\nEND\r\n");
    // Negative flags are a format error (and the data line is then read as a command).
    c.expect(
        "set f -1 0 1\r\nx\r\n",
        "CLIENT_ERROR bad command line format\r\nERROR\r\n",
    );
}

#[test]
fn add_stores_only_when_absent() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("add k 1 0 1\r\na\r\n", "STORED\r\n");
    c.expect("add k 2 0 1\r\nb\r\n", "NOT_STORED\r\n");
    c.expect("get k\r\n", "VALUE k 1 1\r\na\r\nEND\r\n");
    c.expect("delete k\r\n", "DELETED\r\n");
    c.expect("add k 3 0 1\r\nc\r\n", "STORED\r\n");
    c.expect("get k\r\n", "VALUE k 3 1\r\nc\r\nEND\r\n");
}

#[test]
fn replace_stores_only_when_present() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("replace k 0 0 1\r\na\r\n", "NOT_STORED\r\n");
    c.expect("get k\r\n", "END\r\n");
    c.expect("set k 0 0 1\r\na\r\n", "STORED\r\n");
    c.expect("replace k 5 0 2\r\nbb\r\n", "STORED\r\n");
    c.expect("get k\r\n", "VALUE k 5 2\r\nbb\r\nEND\r\n");
}

#[test]
fn append_and_prepend() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("append k 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    c.expect("prepend k 0 0 1\r\nx\r\n", "NOT_STORED\r\n");
    c.expect("get k\r\n", "END\r\n");
    c.expect("set k 5 0 2\r\nbb\r\n", "STORED\r\n");
    // The flags (and exptime) given to append/prepend are ignored: the item keeps its own.
    c.expect("append k 9 0 2\r\ncc\r\n", "STORED\r\n");
    c.expect("prepend k 7 0 2\r\naa\r\n", "STORED\r\n");
    c.expect("get k\r\n", "VALUE k 5 6\r\naabbcc\r\nEND\r\n");
}

/// Parse `VALUE <key> <flags> <bytes> <cas>` and return the cas.
fn gets_cas(c: &mut Client, key: &str) -> u64 {
    c.gets(key).expect("item present").1
}

#[test]
fn cas_replies() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.expect("cas k 0 0 1 1\r\nx\r\n", "NOT_FOUND\r\n");
    c.set("k", b"a");
    let cas = gets_cas(&mut c, "k");
    c.expect(format!("cas k 0 0 1 {}\r\nx\r\n", cas + 1), "EXISTS\r\n");
    c.expect("get k\r\n", "VALUE k 0 1\r\na\r\nEND\r\n");
    c.expect(format!("cas k 3 0 1 {cas}\r\nb\r\n"), "STORED\r\n");
    c.expect("get k\r\n", "VALUE k 3 1\r\nb\r\nEND\r\n");
    // The old cas is stale now.
    c.expect(format!("cas k 0 0 1 {cas}\r\nc\r\n"), "EXISTS\r\n");
    c.expect("delete k\r\n", "DELETED\r\n");
    c.expect(format!("cas k 0 0 1 {cas}\r\nc\r\n"), "NOT_FOUND\r\n");
}

#[test]
fn cas_value_changes_on_every_store_but_not_on_touch() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.set("k", b"1");
    let mut seen = vec![gets_cas(&mut c, "k")];
    let stores: [&str; 5] = [
        "set k 0 0 1\r\n2\r\n",
        "append k 0 0 1\r\n0\r\n",
        "prepend k 0 0 1\r\n1\r\n",
        "replace k 0 0 1\r\n3\r\n",
        "incr k 1\r\n",
    ];
    for cmd in stores {
        c.send(cmd);
        let reply = c.read_line();
        assert!(reply == "STORED" || reply == "4", "{cmd:?} -> {reply}");
        let cas = gets_cas(&mut c, "k");
        assert!(
            !seen.contains(&cas),
            "cas {cas} reused after {cmd:?}; seen {seen:?}"
        );
        seen.push(cas);
    }
    c.expect("decr k 1\r\n", "3\r\n");
    let cas = gets_cas(&mut c, "k");
    assert!(!seen.contains(&cas), "cas unchanged after decr");
    // touch and gat change the TTL only: the cas stays.
    c.expect("touch k 100\r\n", "TOUCHED\r\n");
    assert_eq!(gets_cas(&mut c, "k"), cas, "touch changed the cas");
    c.expect("gat 100 k\r\n", "VALUE k 0 1\r\n3\r\nEND\r\n");
    assert_eq!(gets_cas(&mut c, "k"), cas, "gat changed the cas");
    // Different keys get different cas values.
    c.set("other", b"x");
    assert_ne!(gets_cas(&mut c, "other"), cas);
}

#[test]
fn noreply_storage_commands_send_nothing() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send("set k 1 0 1 noreply\r\na\r\n");
    c.send("add k 0 0 1 noreply\r\nz\r\n"); // NOT_STORED, silently
    c.send("add n 0 0 1 noreply\r\n5\r\n");
    c.send("replace k 2 0 1 noreply\r\nb\r\n");
    c.send("replace missing 0 0 1 noreply\r\nb\r\n"); // NOT_STORED, silently
    c.send("append k 0 0 1 noreply\r\nc\r\n");
    c.send("prepend k 0 0 1 noreply\r\nd\r\n");
    c.send("append missing 0 0 1 noreply\r\nd\r\n");
    // The first thing to come back must be the reply to this get.
    c.expect(
        "get k n missing\r\n",
        "VALUE k 2 3\r\ndbc\r\nVALUE n 0 1\r\n5\r\nEND\r\n",
    );
    let cas = gets_cas(&mut c, "k");
    c.send(format!("cas k 0 0 1 {} noreply\r\nx\r\n", cas + 1)); // EXISTS, silently
    c.send("cas missing 0 0 1 1 noreply\r\nx\r\n"); // NOT_FOUND, silently
    c.expect("get k\r\n", "VALUE k 2 3\r\ndbc\r\nEND\r\n");
    c.send(format!("cas k 9 0 1 {cas} noreply\r\ne\r\n"));
    c.expect_version();
    c.expect("get k\r\n", "VALUE k 9 1\r\ne\r\nEND\r\n");
}

#[test]
fn many_keys_and_sizes() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for i in 0..200usize {
        let v = vec![b'a' + (i % 26) as u8; i * 37];
        c.set(&format!("key:{i}"), &v);
    }
    for i in (0..200usize).rev() {
        let v = vec![b'a' + (i % 26) as u8; i * 37];
        assert_eq!(
            c.get(&format!("key:{i}")).as_deref(),
            Some(&v[..]),
            "key:{i}"
        );
    }
}

#[test]
fn value_of_max_key_length() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let key = "k".repeat(250);
    c.expect(format!("set {key} 0 0 2\r\nok\r\n"), "STORED\r\n");
    c.expect(
        format!("get {key}\r\n"),
        format!("VALUE {key} 0 2\r\nok\r\nEND\r\n"),
    );
    c.expect(format!("delete {key}\r\n"), "DELETED\r\n");
}
