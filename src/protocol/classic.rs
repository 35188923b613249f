//! The classic memcached text commands: check a buffered request for
//! completeness, then parse it into a borrowed [`Request`].

use super::meta::{parse_meta, MetaCommand};
use super::reply;
use super::{
    GetKind, Keys, ParseLimits, Request, StoreKind, KEY_MAX_LENGTH, MAX_GET_LINE_LENGTH,
    MAX_LINE_LENGTH,
};

/// The outcome of looking at the front of a connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// No complete request yet: read more bytes and look again.
    Incomplete,
    /// One complete request that used `consumed` bytes.
    Request {
        request: Request<'a>,
        consumed: usize,
    },
    /// A bad request: send `reply` (empty when the client said `noreply`) and
    /// skip `consumed` bytes. `consumed` may exceed the bytes buffered: the rest
    /// of a too-large value is still arriving and is swallowed as it comes.
    Error {
        reply: &'static [u8],
        consumed: usize,
    },
    /// A value over the item size limit: like [`Parsed::Error`], and a `set`
    /// also removes the key's old value (`unlink`), as memcached does, so that
    /// a client never reads the value it failed to replace.
    TooLarge {
        reply: &'static [u8],
        consumed: usize,
        unlink: Option<Unlink<'a>>,
    },
    /// memcached hangs up: a line too long to be a command.
    Close,
}

/// The key whose old value a refused `set` removes, as stored: a meta key
/// sent in base64 decoded (that rare case owns its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlink<'a>(pub std::borrow::Cow<'a, [u8]>);

impl<'a> Unlink<'a> {
    pub fn key(key: &'a [u8]) -> Unlink<'a> {
        Unlink(std::borrow::Cow::Borrowed(key))
    }
}

/// Whether `buf`, the start of a command line with no newline yet, may still
/// become a request: a command line is at most [`MAX_LINE_LENGTH`] bytes, a
/// multi-key retrieval at most [`MAX_GET_LINE_LENGTH`]. memcached hangs up on
/// longer ones.
pub fn line_may_grow(buf: &[u8]) -> bool {
    buf.len() <= MAX_LINE_LENGTH
        || (buf.len() <= MAX_GET_LINE_LENGTH
            && (buf.starts_with(b"get ") || buf.starts_with(b"gets ")))
}

/// Looks at the front of `buf` for one request.
pub fn parse<'a>(buf: &'a [u8], limits: &ParseLimits) -> Parsed<'a> {
    let Some(newline) = memchr(b'\n', buf) else {
        return if line_may_grow(buf) {
            Parsed::Incomplete
        } else {
            Parsed::Close
        };
    };
    let line_len = newline + 1;
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (command, args) = split_command(line);
    let error = |reply: &'static [u8]| Parsed::Error {
        reply,
        consumed: line_len,
    };
    let request = match command {
        b"get" => return parse_get(args, line_len, false, None),
        b"gets" => return parse_get(args, line_len, true, None),
        b"gat" | b"gats" => {
            // memcached reads the exptime first: `gat k` is a bad exptime, and
            // `gat 10` with no keys is an empty result.
            let (exptime, keys) = split_command(args);
            if exptime.is_empty() {
                return error(reply::ERROR);
            }
            let Some(exptime) = parse_i32(exptime) else {
                return error(reply::INVALID_EXPTIME);
            };
            return parse_get(keys, line_len, command == b"gats", Some(exptime));
        }
        b"set" => return parse_store(StoreKind::Set, args, buf, line_len, limits),
        b"add" => return parse_store(StoreKind::Add, args, buf, line_len, limits),
        b"replace" => return parse_store(StoreKind::Replace, args, buf, line_len, limits),
        b"append" => return parse_store(StoreKind::Append, args, buf, line_len, limits),
        b"prepend" => return parse_store(StoreKind::Prepend, args, buf, line_len, limits),
        b"cas" => return parse_store(StoreKind::Cas(0), args, buf, line_len, limits),
        b"delete" => {
            let mut t = Tokens::new(args);
            let (Some(key), extra) = (t.next(), t.rest_vec::<3>()) else {
                return error(reply::ERROR);
            };
            // memcached still accepts the long-gone `delete <key> 0` hold time.
            let valid = match extra.as_slice() {
                [] => true,
                [a] => *a == b"0" || *a == b"noreply",
                [a, b] => *a == b"0" && *b == b"noreply",
                _ => return error(reply::ERROR),
            };
            let noreply = extra.last() == Some(&&b"noreply"[..]);
            if !valid {
                return error(silenced(reply::BAD_DELETE_FORMAT, noreply));
            }
            if key.len() > KEY_MAX_LENGTH {
                return error(silenced(reply::BAD_FORMAT, noreply));
            }
            Request::Delete { key, noreply }
        }
        b"incr" | b"decr" => {
            let t = Tokens::new(args).rest_vec::<4>();
            let (key, delta, noreply) = match t.as_slice() {
                [k, d] => (*k, *d, false),
                [k, d, n] => (*k, *d, *n == b"noreply"),
                _ => return error(reply::ERROR),
            };
            if key.len() > KEY_MAX_LENGTH {
                return error(silenced(reply::BAD_FORMAT, noreply));
            }
            let Some(delta) = parse_u64(delta) else {
                return error(silenced(reply::INVALID_DELTA, noreply));
            };
            Request::Arith {
                incr: command == b"incr",
                key,
                delta,
                noreply,
            }
        }
        b"touch" => {
            let t = Tokens::new(args).rest_vec::<4>();
            let (key, exptime, noreply) = match t.as_slice() {
                [k, e] => (*k, *e, false),
                [k, e, n] => (*k, *e, *n == b"noreply"),
                _ => return error(reply::ERROR),
            };
            if key.len() > KEY_MAX_LENGTH {
                return error(silenced(reply::BAD_FORMAT, noreply));
            }
            let Some(exptime) = parse_i32(exptime) else {
                return error(silenced(reply::INVALID_EXPTIME, noreply));
            };
            Request::Touch {
                key,
                exptime,
                noreply,
            }
        }
        b"flush_all" => {
            // memcached: at most two arguments; a trailing `noreply` is one, and
            // the first other argument is the delay (`flush_all 10 x` flushes in
            // 10 seconds; `flush_all noreply x` has the delay `noreply`).
            let t = Tokens::new(args).rest_vec::<3>();
            if t.len() > 2 {
                return error(reply::ERROR);
            }
            let noreply = t.last() == Some(&&b"noreply"[..]);
            let delay = match t[..t.len() - noreply as usize].first() {
                None => 0,
                Some(delay) => match parse_i32(delay) {
                    Some(delay) => delay,
                    None => return error(silenced(reply::INVALID_EXPTIME, noreply)),
                },
            };
            Request::FlushAll { delay, noreply }
        }
        // memcached 1.6 looks only at the command token of `version` and `quit`.
        b"version" => Request::Version,
        b"quit" => Request::Quit,
        b"verbosity" => {
            let t = Tokens::new(args).rest_vec::<3>();
            // `verbosity noreply` is a (silent) request for level 0, as in memcached.
            let noreply = t.last() == Some(&&b"noreply"[..]);
            let (level, noreply) = match t.as_slice() {
                [l] | [l, _] => (*l, noreply),
                _ => return error(reply::ERROR),
            };
            // memcached reads the level with strtoul and refuses what that cannot
            // read (a minus sign, or a lone `noreply`); a level too large for 32
            // bits is still OK.
            let level = match parse_u64(level.strip_prefix(b"+").unwrap_or(level)) {
                Some(l) => l.min(u32::MAX as u64) as u32,
                None => return error(silenced(reply::BAD_FORMAT, noreply)),
            };
            Request::Verbosity { level, noreply }
        }
        b"shutdown" => {
            let t = Tokens::new(args).rest_vec::<2>();
            match t.as_slice() {
                [] => Request::Shutdown { graceful: false },
                [g] if *g == b"graceful" => Request::Shutdown { graceful: true },
                _ => return error(reply::ERROR),
            }
        }
        b"cache_memlimit" => {
            let t = Tokens::new(args).rest_vec::<3>();
            let (mb, noreply) = match t.as_slice() {
                [m] => (*m, false),
                [m, n] => (*m, *n == b"noreply"),
                _ => return error(reply::ERROR),
            };
            match parse_u64(mb) {
                Some(megabytes) => Request::CacheMemlimit { megabytes, noreply },
                None => return error(silenced(reply::ERROR, noreply)),
            }
        }
        b"stats" => Request::Stats { args: Keys(args) },
        b"mg" => return parse_meta(MetaCommand::Get, args, buf, line_len, limits),
        b"ms" => return parse_meta(MetaCommand::Set, args, buf, line_len, limits),
        b"md" => return parse_meta(MetaCommand::Delete, args, buf, line_len, limits),
        b"ma" => return parse_meta(MetaCommand::Arith, args, buf, line_len, limits),
        b"me" => return parse_meta(MetaCommand::Debug, args, buf, line_len, limits),
        b"mn" => Request::MetaNoop,
        _ => return error(reply::ERROR),
    };
    Parsed::Request {
        request,
        consumed: line_len,
    }
}

fn parse_get(keys: &[u8], line_len: usize, with_cas: bool, touch: Option<i64>) -> Parsed<'_> {
    let keys = Keys(keys);
    if keys.is_empty() && touch.is_none() {
        return Parsed::Error {
            reply: reply::ERROR,
            consumed: line_len,
        };
    }
    if keys.iter().any(|k| k.len() > KEY_MAX_LENGTH) {
        return Parsed::Error {
            reply: reply::BAD_FORMAT,
            consumed: line_len,
        };
    }
    Parsed::Request {
        request: Request::Get {
            kind: GetKind { with_cas, touch },
            keys,
        },
        consumed: line_len,
    }
}

fn parse_store<'a>(
    kind: StoreKind,
    args: &'a [u8],
    buf: &'a [u8],
    line_len: usize,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let is_cas = matches!(kind, StoreKind::Cas(_));
    let t = Tokens::new(args).rest_vec::<7>();
    let wanted = if is_cas { 5 } else { 4 };
    if t.len() != wanted && t.len() != wanted + 1 {
        return Parsed::Error {
            reply: reply::ERROR,
            consumed: line_len,
        };
    }
    let noreply = t.len() == wanted + 1 && t[wanted] == b"noreply";
    let bad_format = Parsed::Error {
        reply: silenced(reply::BAD_FORMAT, noreply),
        consumed: line_len,
    };
    let key = t[0];
    if key.len() > KEY_MAX_LENGTH {
        return bad_format;
    }
    let (Some(flags), Some(exptime), Some(length)) =
        (parse_u64(t[1]), parse_i32(t[2]), parse_i32(t[3]))
    else {
        return bad_format;
    };
    if length < 0 {
        return bad_format;
    }
    let kind = if is_cas {
        match parse_u64(t[4]) {
            Some(unique) => StoreKind::Cas(unique),
            None => return bad_format,
        }
    } else {
        kind
    };
    let length = length as usize;
    let total = line_len + length + 2;
    if length > limits.max_item_size {
        return Parsed::TooLarge {
            reply: silenced(reply::TOO_LARGE, noreply),
            consumed: total,
            unlink: (kind == StoreKind::Set).then_some(Unlink::key(key)),
        };
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    if &buf[line_len + length..total] != b"\r\n" {
        return Parsed::Error {
            reply: silenced(reply::BAD_DATA_CHUNK, noreply),
            consumed: total,
        };
    }
    Parsed::Request {
        request: Request::Store {
            kind,
            key,
            // memcached 1.6 reads flags with strtoul into 32 bits: larger values
            // are accepted and truncated.
            flags: flags as u32,
            exptime,
            data: &buf[line_len..line_len + length],
            noreply,
        },
        consumed: total,
    }
}

/// A `noreply` request gets no reply, errors included (memcached's `out_string`).
fn silenced(reply: &'static [u8], noreply: bool) -> &'static [u8] {
    if noreply {
        b""
    } else {
        reply
    }
}

/// Splits off the first space-separated token.
pub(super) fn split_command(line: &[u8]) -> (&[u8], &[u8]) {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let line = &line[start..];
    match memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[]),
    }
}

/// Space-separated tokens; empty tokens (runs of spaces) are skipped, as
/// memcached's tokenizer does.
struct Tokens<'a>(&'a [u8]);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.0.iter().position(|&b| b != b' ')?;
        let rest = &self.0[start..];
        let end = memchr(b' ', rest).unwrap_or(rest.len());
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Self {
        Tokens(s)
    }

    /// The remaining tokens, at most `N` (one more than any command accepts, so
    /// an overlong command is still recognised as such).
    fn rest_vec<const N: usize>(self) -> TokenVec<'a, N> {
        let mut v = TokenVec {
            items: [&[][..]; N],
            len: 0,
        };
        for t in self {
            if v.len == N {
                break;
            }
            v.items[v.len] = t;
            v.len += 1;
        }
        v
    }
}

/// A fixed-capacity token list on the stack.
struct TokenVec<'a, const N: usize> {
    items: [&'a [u8]; N],
    len: usize,
}

impl<'a, const N: usize> std::ops::Deref for TokenVec<'a, N> {
    type Target = [&'a [u8]];
    fn deref(&self) -> &Self::Target {
        &self.items[..self.len]
    }
}

impl<'a, const N: usize> TokenVec<'a, N> {
    fn as_slice(&self) -> &[&'a [u8]] {
        self
    }
}

/// An unsigned decimal as memcached's `safe_strtoull` takes it: digits only.
pub fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in token {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(n)
}

/// A signed decimal in the 32-bit range, as memcached's `safe_strtol` takes it.
pub(crate) fn parse_i32(token: &[u8]) -> Option<i64> {
    let (negative, digits) = match token.first() {
        Some(b'-') => (true, &token[1..]),
        _ => (false, token),
    };
    // Range-check before any sign or cast: 2^63 and above must not wrap into
    // range (`set k 0 18446744073709551615 1` is a bad exptime, not -1).
    let magnitude = parse_u64(digits)?;
    let limit = if negative {
        1u64 << 31
    } else {
        i32::MAX as u64
    };
    (magnitude <= limit).then(|| {
        let n = magnitude as i64;
        if negative {
            -n
        } else {
            n
        }
    })
}

/// Where `needle` first occurs in `haystack`: eight bytes at a time (a
/// request line is tens of bytes, and a byte-at-a-time loop was a third of
/// parsing a `get`; the memchr crate's vector search costs more to start than
/// it saves on lines this short).
#[inline]
pub(super) fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let pattern = ONES * needle as u64;
    let mut words = haystack.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("chunks of 8")) ^ pattern;
        // A byte of `x` is zero where the needle is; the lowest flag marks the
        // first one (borrows only mark bytes above a zero byte).
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(offset + zeros.trailing_zeros() as usize / 8);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == needle).map(|i| offset + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn i32_tokens_out_of_range_are_refused_not_wrapped() {
        assert_eq!(parse_i32(b"2147483647"), Some(i32::MAX as i64));
        assert_eq!(parse_i32(b"-2147483648"), Some(i32::MIN as i64));
        assert_eq!(parse_i32(b"2147483648"), None);
        assert_eq!(parse_i32(b"-2147483649"), None);
        assert_eq!(parse_i32(b"18446744073709551615"), None);
        assert_eq!(parse_i32(b"-18446744073709551615"), None);
        assert_eq!(parse_i32(b"9223372036854775808"), None);
        assert_eq!(parse_i32(b"-9223372036854775808"), None);
        assert_eq!(parse_i32(b"-"), None);
    }

    const LIMITS: ParseLimits = ParseLimits {
        max_item_size: 1024,
    };

    fn one(buf: &[u8]) -> Parsed<'_> {
        parse(buf, &LIMITS)
    }

    fn request(buf: &[u8]) -> Request<'_> {
        match one(buf) {
            Parsed::Request { request, consumed } => {
                assert_eq!(consumed, buf.len(), "request should use the whole buffer");
                request
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn error_reply(buf: &[u8]) -> (&'static [u8], usize) {
        match one(buf) {
            Parsed::Error { reply, consumed } => (reply, consumed),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_requests_keys_are_its_retrieved_keys_or_its_single_key() {
        let keys =
            |buf: &[u8]| -> Vec<Vec<u8>> { request(buf).keys().map(|k| k.to_vec()).collect() };
        assert_eq!(
            keys(b"get a bb c\r\n"),
            [b"a".to_vec(), b"bb".to_vec(), b"c".to_vec()]
        );
        assert_eq!(keys(b"set foo 0 0 1\r\nx\r\n"), [b"foo".to_vec()]);
        assert_eq!(keys(b"delete foo\r\n"), [b"foo".to_vec()]);
        assert_eq!(keys(b"mg Zm9v b v\r\n"), [b"foo".to_vec()]);
        assert!(keys(b"version\r\n").is_empty());
    }

    #[test]
    fn set_with_data_block() {
        assert_eq!(
            request(b"set foo 5 100 3\r\nbar\r\n"),
            Request::Store {
                kind: StoreKind::Set,
                key: b"foo",
                flags: 5,
                exptime: 100,
                data: b"bar",
                noreply: false
            }
        );
        assert_eq!(
            request(b"cas k 0 -1 0 77 noreply\r\n\r\n"),
            Request::Store {
                kind: StoreKind::Cas(77),
                key: b"k",
                flags: 0,
                exptime: -1,
                data: b"",
                noreply: true
            }
        );
    }

    #[test]
    fn bare_newlines_and_repeated_spaces_are_accepted() {
        assert_eq!(
            request(b"get  a   b\n"),
            Request::Get {
                kind: GetKind {
                    with_cas: false,
                    touch: None
                },
                keys: Keys(b" a   b")
            }
        );
    }

    #[test]
    fn partial_requests_are_incomplete() {
        assert_eq!(one(b"set foo 0 0 3\r\nba"), Parsed::Incomplete);
        assert_eq!(one(b"set foo 0 0 3\r\nbar\r"), Parsed::Incomplete);
        assert_eq!(one(b"get foo"), Parsed::Incomplete);
    }

    #[test]
    fn memcached_error_replies() {
        assert_eq!(error_reply(b"bogus\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"set a 0 0\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"get\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"verbosity\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"set a 0 xyz 1\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"set a 0 0 abc\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"set a 0 0 -1\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"set a -1 0 1\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"incr a x\r\n").0, reply::INVALID_DELTA);
        assert_eq!(error_reply(b"incr a -1\r\n").0, reply::INVALID_DELTA);
        assert_eq!(error_reply(b"touch a x\r\n").0, reply::INVALID_EXPTIME);
        assert_eq!(error_reply(b"gat x a\r\n").0, reply::INVALID_EXPTIME);
        assert_eq!(error_reply(b"gat k\r\n").0, reply::INVALID_EXPTIME);
        assert_eq!(error_reply(b"gat\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"flush_all x\r\n").0, reply::INVALID_EXPTIME);
        assert_eq!(
            error_reply(b"flush_all noreply x\r\n").0,
            reply::INVALID_EXPTIME
        );
        assert_eq!(error_reply(b"flush_all 0 0 0\r\n").0, reply::ERROR);
        assert_eq!(error_reply(b"verbosity abc\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"verbosity -1\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error_reply(b"delete a 5\r\n").0, reply::BAD_DELETE_FORMAT);
        let long_key = [b'k'; KEY_MAX_LENGTH + 1];
        let mut get = b"get ".to_vec();
        get.extend_from_slice(&long_key);
        get.extend_from_slice(b"\r\n");
        assert_eq!(error_reply(&get).0, reply::BAD_FORMAT);
    }

    #[test]
    fn bad_key_leaves_the_data_block_unread() {
        // memcached does not swallow the data after a bad command line: the data
        // line is then parsed as a command of its own.
        let mut set = b"set ".to_vec();
        set.extend_from_slice(&[b'k'; KEY_MAX_LENGTH + 1]);
        set.extend_from_slice(b" 0 0 1\r\nx\r\n");
        let (reply, consumed) = error_reply(&set);
        assert_eq!(reply, reply::BAD_FORMAT);
        assert_eq!(&set[consumed..], b"x\r\n");
    }

    #[test]
    fn too_large_value_is_swallowed_whole() {
        assert_eq!(
            one(b"set a 0 0 2000\r\nxx"),
            Parsed::TooLarge {
                reply: reply::TOO_LARGE,
                consumed: b"set a 0 0 2000\r\n".len() + 2002,
                unlink: Some(Unlink::key(b"a")),
            }
        );
        // Only `set` drops the old value; append keeps it.
        assert_eq!(
            one(b"append a 0 0 2000 noreply\r\n"),
            Parsed::TooLarge {
                reply: b"",
                consumed: b"append a 0 0 2000 noreply\r\n".len() + 2002,
                unlink: None,
            }
        );
    }

    #[test]
    fn wrong_data_length_is_a_bad_chunk() {
        let buf = b"set a 0 0 2\r\nabc\r\n";
        let (reply, consumed) = error_reply(buf);
        assert_eq!(reply, reply::BAD_DATA_CHUNK);
        assert_eq!(consumed, b"set a 0 0 2\r\n".len() + 4);
    }

    #[test]
    fn noreply_silences_errors() {
        assert_eq!(error_reply(b"set a 0 x 1 noreply\r\n").0, b"");
        assert_eq!(error_reply(b"set a 0 0 2 noreply\r\nabc\r\n").0, b"");
        assert_eq!(error_reply(b"incr a x noreply\r\n").0, b"");
    }

    #[test]
    fn overlong_lines_close_unless_a_get() {
        let junk = vec![b'x'; MAX_LINE_LENGTH + 1];
        assert_eq!(one(&junk), Parsed::Close);
        let mut get = b"get ".to_vec();
        get.extend_from_slice(&junk);
        assert_eq!(one(&get), Parsed::Incomplete);
    }

    #[test]
    fn flags_above_32_bits_are_truncated_like_memcached() {
        match request(b"set a 4294967297 0 1\r\nx\r\n") {
            Request::Store { flags, .. } => assert_eq!(flags, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn admin_commands() {
        assert_eq!(request(b"version\r\n"), Request::Version);
        assert_eq!(request(b"version foo bar\r\n"), Request::Version);
        // A lone noreply is the level memcached cannot read, silenced.
        assert_eq!(error_reply(b"verbosity noreply\r\n").0, b"");
        assert_eq!(request(b"quit\r\n"), Request::Quit);
        assert_eq!(request(b"quit x\r\n"), Request::Quit);
        assert_eq!(
            request(b"verbosity +99999999999\r\n"),
            Request::Verbosity {
                level: u32::MAX,
                noreply: false
            }
        );
        assert_eq!(
            request(b"flush_all 10 x\r\n"),
            Request::FlushAll {
                delay: 10,
                noreply: false
            }
        );
        assert_eq!(
            request(b"flush_all 10 noreply\r\n"),
            Request::FlushAll {
                delay: 10,
                noreply: true
            }
        );
        assert_eq!(
            request(b"flush_all noreply\r\n"),
            Request::FlushAll {
                delay: 0,
                noreply: true
            }
        );
        assert_eq!(
            request(b"cache_memlimit 100\r\n"),
            Request::CacheMemlimit {
                megabytes: 100,
                noreply: false
            }
        );
        assert_eq!(
            request(b"verbosity 1 noreply\r\n"),
            Request::Verbosity {
                level: 1,
                noreply: true
            }
        );
    }

    /// A stream of valid requests, each with its expected encoding.
    fn valid_request() -> impl Strategy<Value = Vec<u8>> {
        let key = "[a-z0-9:_]{1,20}";
        prop_oneof![
            (
                key,
                any::<u32>(),
                0..100i64,
                proptest::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(k, f, e, v)| {
                    let mut r = format!("set {k} {f} {e} {}\r\n", v.len()).into_bytes();
                    r.extend_from_slice(&v);
                    r.extend_from_slice(b"\r\n");
                    r
                }),
            proptest::collection::vec(key, 1..8).prop_map(|ks| format!(
                "gets {}\r\n",
                ks.join(" ")
            )
            .into_bytes()),
            (key, any::<u64>()).prop_map(|(k, d)| format!("incr {k} {d}\r\n").into_bytes()),
            key.prop_map(|k| format!("delete {k} noreply\r\n").into_bytes()),
            Just(b"version\r\n".to_vec()),
        ]
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<String> {
        // Feeds chunks the way a connection does: append, parse what is complete.
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match parse(&buf, &LIMITS) {
                    Parsed::Incomplete => break,
                    Parsed::Request { request, consumed } => {
                        seen.push(format!("{request:?}"));
                        buf.drain(..consumed);
                    }
                    other => panic!("valid stream produced {other:?}"),
                }
            }
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        seen
    }

    proptest! {
        #[test]
        fn memchr_finds_the_first_occurrence(
            haystack in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b' '), Just(0u8), Just(0x80u8), any::<u8>()],
                0..80,
            ),
            needle in prop_oneof![Just(b'\n'), Just(b' '), any::<u8>()],
        ) {
            let first = haystack.iter().position(|&b| b == needle);
            prop_assert_eq!(memchr(needle, &haystack), first);
        }

        #[test]
        fn any_split_of_a_stream_parses_like_the_whole(
            requests in proptest::collection::vec(valid_request(), 1..20),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let stream: Vec<u8> = requests.concat();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&stream[last..p]);
                last = p;
            }
            chunks.push(&stream[last..]);
            let whole = parse_all(&[&stream]);
            prop_assert_eq!(whole.len(), requests.len());
            prop_assert_eq!(parse_all(&chunks), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes, &LIMITS);
        }
    }
}
