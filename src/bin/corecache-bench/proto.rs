//! Wire formats the load generator speaks: memcached text and Redis RESP2.
//!
//! Requests are encoded straight into a connection's output buffer. Replies are
//! parsed incrementally: a parser is given the bytes received so far and returns
//! `Ok(None)` when the reply is not complete yet, so a partial read costs only a
//! rescan of the incomplete reply.

use std::fmt;

/// Which protocol a target speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Memcached,
    Redis,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Memcached => f.write_str("memcached"),
            Protocol::Redis => f.write_str("redis"),
        }
    }
}

/// What a complete reply said, reduced to what the benchmark counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Keys found (memcached `VALUE` blocks; RESP non-nil bulk strings).
    pub hits: u32,
    /// Bit i set: the i-th key asked for was found (first 64 keys only).
    pub hit_mask: u64,
    /// Keys not found (RESP nil bulk strings; for memcached the caller derives
    /// misses from the number of keys asked for).
    pub nils: u32,
    /// `STORED` / `+OK`.
    pub stored: bool,
    /// An error reply (`ERROR`, `CLIENT_ERROR`, `SERVER_ERROR`, `-ERR ...`), or an
    /// unexpected reply such as `NOT_STORED` to a plain set.
    pub error: bool,
    /// memcached only: a `VALUE` block named a key that was not asked for (or came out
    /// of order). Means the client and server disagree about which reply is which.
    pub key_mismatch: bool,
}

/// A reply that cannot be parsed: the stream is out of sync and the connection is
/// unusable.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Result of one parse attempt: bytes consumed and the reply, or `None` if more
/// bytes are needed.
pub type Parsed = Result<Option<(usize, Reply)>, ProtoError>;

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match buf[i + 1..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                let nl = i + 1 + p;
                if buf[nl - 1] == b'\r' {
                    return Some(nl - 1);
                }
                i = nl;
            }
            None => return None,
        }
    }
    None
}

fn parse_usize(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut n: usize = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (c - b'0') as usize;
    }
    Some(n)
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    match b.first() {
        Some(b'-') => parse_usize(&b[1..]).map(|n| -(n as i64)),
        _ => parse_usize(b).map(|n| n as i64),
    }
}

// ---------------------------------------------------------------------------
// memcached text protocol
// ---------------------------------------------------------------------------

/// Appends `get k1 k2 ...\r\n`.
pub fn mc_get<'a>(out: &mut Vec<u8>, keys: impl IntoIterator<Item = &'a [u8]>) {
    out.extend_from_slice(b"get");
    for k in keys {
        out.push(b' ');
        out.extend_from_slice(k);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `set key 0 0 len\r\nvalue\r\n`.
pub fn mc_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(b"set ");
    out.extend_from_slice(key);
    out.extend_from_slice(b" 0 0 ");
    push_decimal(out, value.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn is_mc_error_line(line: &[u8]) -> bool {
    line == b"ERROR" || line.starts_with(b"CLIENT_ERROR") || line.starts_with(b"SERVER_ERROR")
}

/// Parses the reply to a `get`. `keys` holds the keys asked for, concatenated, each
/// `klen` bytes long (the generator's keys have a fixed width): each `VALUE` line's
/// key must come later in that list than the previous one (memcached returns hits in
/// request order). With `klen == 0` keys are not checked.
pub fn mc_parse_get(buf: &[u8], keys: &[u8], klen: usize) -> Parsed {
    let mut pos = 0;
    let mut reply = Reply::default();
    let mut next_key = 0;
    loop {
        let Some(eol) = find_crlf(buf, pos) else {
            return Ok(None);
        };
        let line = &buf[pos..eol];
        if line == b"END" {
            return Ok(Some((eol + 2, reply)));
        }
        if is_mc_error_line(line) {
            // An error ends the reply (memcached sends it instead of END).
            reply.error = true;
            return Ok(Some((eol + 2, reply)));
        }
        let Some(rest) = line.strip_prefix(b"VALUE ") else {
            return Err(ProtoError(format!(
                "unexpected line in get reply: {:?}",
                String::from_utf8_lossy(line)
            )));
        };
        let mut fields = rest.split(|&b| b == b' ');
        let key = fields.next().unwrap_or_default();
        let _flags = fields.next();
        let len = fields.next().and_then(parse_usize).ok_or_else(|| {
            ProtoError(format!(
                "bad VALUE line: {:?}",
                String::from_utf8_lossy(line)
            ))
        })?;
        if klen > 0 {
            match keys
                .chunks_exact(klen)
                .skip(next_key)
                .position(|k| k == key)
            {
                Some(i) => {
                    let idx = next_key + i;
                    if idx < 64 {
                        reply.hit_mask |= 1 << idx;
                    }
                    next_key = idx + 1;
                }
                None => reply.key_mismatch = true,
            }
        }
        let data_end = eol + 2 + len;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(ProtoError("VALUE data not followed by CRLF".into()));
        }
        reply.hits += 1;
        pos = data_end + 2;
    }
}

/// Parses the reply to a `set`.
pub fn mc_parse_store(buf: &[u8]) -> Parsed {
    let Some(eol) = find_crlf(buf, 0) else {
        return Ok(None);
    };
    let line = &buf[..eol];
    let mut reply = Reply::default();
    match line {
        b"STORED" => reply.stored = true,
        b"NOT_STORED" | b"EXISTS" | b"NOT_FOUND" => reply.error = true,
        l if is_mc_error_line(l) => reply.error = true,
        l => {
            return Err(ProtoError(format!(
                "unexpected line in set reply: {:?}",
                String::from_utf8_lossy(l)
            )))
        }
    }
    Ok(Some((eol + 2, reply)))
}

// ---------------------------------------------------------------------------
// Redis RESP2
// ---------------------------------------------------------------------------

fn push_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn resp_bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'$');
    push_decimal(out, b.len());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

fn resp_array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends `GET key` (one key) or `MGET k1 k2 ...` (several) as a RESP array.
pub fn resp_get(out: &mut Vec<u8>, keys: &[&[u8]]) {
    resp_array_header(out, keys.len() + 1);
    resp_bulk(out, if keys.len() == 1 { b"GET" } else { b"MGET" });
    for k in keys {
        resp_bulk(out, k);
    }
}

/// Appends `SET key value`.
pub fn resp_set(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    resp_array_header(out, 3);
    resp_bulk(out, b"SET");
    resp_bulk(out, key);
    resp_bulk(out, value);
}

/// Parses one complete RESP2 value of any type, accumulating into `reply`:
/// bulk strings count as hits, nil bulks (and nil arrays) as nils, `+OK` as stored,
/// `-...` as error. Nested arrays are walked.
pub fn resp_parse(buf: &[u8]) -> Parsed {
    let mut reply = Reply::default();
    let mut slot = 0;
    match resp_value(buf, 0, &mut reply, 0, &mut slot)? {
        Some(end) => Ok(Some((end, reply))),
        None => Ok(None),
    }
}

/// `slot` numbers the values at depth 0 and 1 (the reply to GET, or MGET's elements)
/// so that `hit_mask` says which key was found.
fn resp_value(
    buf: &[u8],
    pos: usize,
    reply: &mut Reply,
    depth: u32,
    slot: &mut u32,
) -> Result<Option<usize>, ProtoError> {
    if depth > 8 {
        return Err(ProtoError("RESP nesting too deep".into()));
    }
    let Some(eol) = find_crlf(buf, pos) else {
        return Ok(None);
    };
    if eol == pos {
        return Err(ProtoError("empty RESP line".into()));
    }
    let line = &buf[pos + 1..eol];
    let next = eol + 2;
    let bad = || {
        ProtoError(format!(
            "bad RESP line: {:?}",
            String::from_utf8_lossy(&buf[pos..eol])
        ))
    };
    match buf[pos] {
        b'+' => {
            if line == b"OK" {
                reply.stored = true;
            }
            Ok(Some(next))
        }
        b'-' => {
            reply.error = true;
            Ok(Some(next))
        }
        b':' => {
            parse_i64(line).ok_or_else(bad)?;
            Ok(Some(next))
        }
        b'$' => {
            let n = parse_i64(line).ok_or_else(bad)?;
            if n < 0 {
                reply.nils += 1;
                if depth <= 1 {
                    *slot += 1;
                }
                return Ok(Some(next));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtoError("bulk string not followed by CRLF".into()));
            }
            reply.hits += 1;
            if depth <= 1 {
                if *slot < 64 {
                    reply.hit_mask |= 1 << *slot;
                }
                *slot += 1;
            }
            Ok(Some(end + 2))
        }
        b'*' => {
            let n = parse_i64(line).ok_or_else(bad)?;
            if n < 0 {
                reply.nils += 1;
                return Ok(Some(next));
            }
            let mut p = next;
            for _ in 0..n {
                match resp_value(buf, p, reply, depth + 1, slot)? {
                    Some(e) => p = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(p))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mc_get_hit_miss_partial() {
        let full = b"VALUE k1 0 3\r\nabc\r\nVALUE k3 5 2 77\r\nxy\r\nEND\r\n";
        let keys = b"k1k2k3";
        let (n, r) = mc_parse_get(full, keys, 2).unwrap().unwrap();
        assert_eq!(n, full.len());
        assert_eq!((r.hits, r.hit_mask), (2, 0b101));
        assert!(!r.error && !r.key_mismatch);
        // Every strict prefix is incomplete, never an error.
        for cut in 0..full.len() {
            assert_eq!(
                mc_parse_get(&full[..cut], keys, 2),
                Ok(None),
                "cut at {cut}"
            );
        }
        // Data containing CRLF and "END" is skipped by length, not scanned.
        let tricky = b"VALUE k 0 7\r\nEND\r\nab\r\nEND\r\nrest";
        let (n, r) = mc_parse_get(tricky, b"k", 1).unwrap().unwrap();
        assert_eq!((n, r.hits), (tricky.len() - 4, 1));
        // Miss.
        let (n, r) = mc_parse_get(b"END\r\nVALUE", b"k", 1).unwrap().unwrap();
        assert_eq!((n, r.hits), (5, 0));
    }

    #[test]
    fn mc_get_errors_and_mismatch() {
        let (_, r) = mc_parse_get(b"VALUE other 0 1\r\nx\r\nEND\r\n", b"k", 1)
            .unwrap()
            .unwrap();
        assert!(r.key_mismatch);
        // Out of order: k2 then k1.
        let (_, r) = mc_parse_get(
            b"VALUE k2 0 1\r\nx\r\nVALUE k1 0 1\r\nx\r\nEND\r\n",
            b"k1k2",
            2,
        )
        .unwrap()
        .unwrap();
        assert!(r.key_mismatch);
        // Unchecked.
        let (_, r) = mc_parse_get(b"VALUE other 0 1\r\nx\r\nEND\r\n", b"", 0)
            .unwrap()
            .unwrap();
        assert!(!r.key_mismatch && r.hits == 1);
        let (_, r) = mc_parse_get(b"SERVER_ERROR out of memory\r\n", b"k", 1)
            .unwrap()
            .unwrap();
        assert!(r.error);
        assert!(mc_parse_get(b"STORED\r\n", b"k", 1).is_err());
        assert!(mc_parse_get(b"VALUE k 0 2\r\nxyz\r\nEND\r\n", b"k", 1).is_err());
    }

    #[test]
    fn mc_store_replies() {
        assert_eq!(mc_parse_store(b"STOR"), Ok(None));
        let (n, r) = mc_parse_store(b"STORED\r\nSTORED\r\n").unwrap().unwrap();
        assert_eq!(n, 8);
        assert!(r.stored && !r.error);
        let (_, r) = mc_parse_store(b"NOT_STORED\r\n").unwrap().unwrap();
        assert!(r.error);
        let (_, r) = mc_parse_store(b"CLIENT_ERROR bad data chunk\r\n")
            .unwrap()
            .unwrap();
        assert!(r.error);
        assert!(mc_parse_store(b"VALUE x\r\n").is_err());
    }

    #[test]
    fn mc_encoding() {
        let mut out = Vec::new();
        mc_get(&mut out, [&b"a"[..], &b"bb"[..]]);
        mc_set(&mut out, b"k", b"hello");
        assert_eq!(out, b"get a bb\r\nset k 0 0 5\r\nhello\r\n");
    }

    #[test]
    fn resp_encoding() {
        let mut out = Vec::new();
        resp_get(&mut out, &[b"k"]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        out.clear();
        resp_get(&mut out, &[b"a", b"b"]);
        assert_eq!(out, b"*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n");
        out.clear();
        resp_set(&mut out, b"key", &[b'v'; 10]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\nvvvvvvvvvv\r\n"
        );
    }

    #[test]
    fn resp_replies() {
        let (n, r) = resp_parse(b"+OK\r\n+OK\r\n").unwrap().unwrap();
        assert_eq!(n, 5);
        assert!(r.stored);
        let (_, r) = resp_parse(b"-OOM command not allowed\r\n")
            .unwrap()
            .unwrap();
        assert!(r.error);
        let (_, r) = resp_parse(b"$-1\r\n").unwrap().unwrap();
        assert_eq!((r.hits, r.nils), (0, 1));
        let (n, r) = resp_parse(b"$5\r\nab\r\nc\r\n:1\r\n").unwrap().unwrap();
        assert_eq!((n, r.hits), (11, 1));
        let mget = b"*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n";
        let (n, r) = resp_parse(mget).unwrap().unwrap();
        assert_eq!((n, r.hits, r.nils, r.hit_mask), (mget.len(), 2, 1, 0b101));
        for cut in 0..mget.len() {
            assert_eq!(resp_parse(&mget[..cut]), Ok(None), "cut at {cut}");
        }
        let (_, r) = resp_parse(b"*-1\r\n").unwrap().unwrap();
        assert_eq!(r.nils, 1);
        assert!(resp_parse(b"?what\r\n").is_err());
        assert!(resp_parse(b"$x\r\n").is_err());
        assert!(resp_parse(b"$2\r\nabcd\r\n").is_err());
    }
}
