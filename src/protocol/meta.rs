//! The meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`): check a buffered
//! request for completeness, then parse it into a [`MetaRequest`].
//!
//! A meta request is `<cm> <key> [<datalen>] <flag>*`. Each flag is one letter,
//! some followed by a value (`T30`, `Oabc`, `MS`). Return flags (`c f h k l O s t`)
//! come back in the order they were sent, and memcached applies the TTL flags
//! (`T N R t`) in that order too, so the executor walks the flag tokens again for
//! both; every value is parsed here once.
//!
//! A key sent with `b` is base64: it is decoded here ([`DecodedKey`], boxed: the
//! 250 bytes inline made every parsed request of any kind 440 bytes, copied
//! as the server moves requests through its prefetch window), because the
//! decoded bytes are what is stored, hashed and routed to the owning core.

use super::classic::{parse_i32, parse_u64, split_command, Unlink};
use super::{reply, ParseLimits, Parsed, Request, KEY_MAX_LENGTH};

pub const INVALID_FLAG: &[u8] = b"CLIENT_ERROR invalid flag\r\n";
pub const DUPLICATE_FLAG: &[u8] = b"CLIENT_ERROR duplicate flag\r\n";
pub const INVALID_OR_DUPLICATE: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";
pub const OPAQUE_TOO_LONG: &[u8] = b"CLIENT_ERROR opaque token too long\r\n";
pub const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";
pub const BAD_MS_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ms M token\r\n";
pub const BAD_MA_MODE: &[u8] = b"CLIENT_ERROR invalid mode for ma M token\r\n";
pub const BAD_KEY_ENCODING: &[u8] = b"CLIENT_ERROR error decoding key\r\n";
pub const BAD_DELTA: &[u8] = b"CLIENT_ERROR invalid numeric delta value\r\n";
pub const BAD_INITIAL: &[u8] = b"CLIENT_ERROR invalid numeric initial value\r\n";
pub const BAD_MODE_LENGTH: &[u8] = b"CLIENT_ERROR incorrect length for M token\r\n";

/// memcached's `MFLAG_MAX_OPAQUE_LENGTH`: the whole `O...` token, letter included.
pub const MAX_OPAQUE_TOKEN: usize = 32;

/// Which meta command a [`MetaRequest`] is (`mn` is [`Request::MetaNoop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaCommand {
    Get,
    Set,
    Delete,
    Arith,
    Debug,
}

/// The flags memcached 1.6.18 knows, for every meta command alike (a command
/// ignores the ones it has no use for), plus `E` (explicit CAS) from later 1.6
/// releases. `P` and `L` are proxy hints, accepted and ignored.
const KNOWN_FLAGS: &[u8] = b"bcfhklqstuvCDEFIJLMNOPRT";

impl MetaCommand {
    /// memcached's reply for a flag error of this command: `mg` and `ms` say
    /// what was wrong, `md` and `ma` answer every flag problem but a bad `ma`
    /// mode with one message.
    fn error(self, e: FlagError) -> &'static [u8] {
        use FlagError::*;
        match (self, e) {
            (_, OpaqueTooLong) => OPAQUE_TOO_LONG,
            (MetaCommand::Arith, BadMode) => BAD_MA_MODE,
            (MetaCommand::Delete | MetaCommand::Arith, _) => INVALID_OR_DUPLICATE,
            (_, Invalid) => INVALID_FLAG,
            (_, Duplicate) => DUPLICATE_FLAG,
            (_, BadToken) => BAD_TOKEN,
            (_, BadClientFlags) => reply::BAD_FORMAT,
            (_, BadDelta) => BAD_DELTA,
            (_, BadInitial) => BAD_INITIAL,
            (_, ModeLength) => BAD_MODE_LENGTH,
            (_, BadMode) => BAD_MS_MODE,
        }
    }

    /// memcached's reply for a `b` key that is not base64.
    fn bad_key_error(self) -> &'static [u8] {
        match self {
            MetaCommand::Get | MetaCommand::Set => BAD_KEY_ENCODING,
            MetaCommand::Delete | MetaCommand::Arith => INVALID_OR_DUPLICATE,
            MetaCommand::Debug => reply::BAD_FORMAT,
        }
    }
}

/// What is wrong with a request's flags, in memcached's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlagError {
    Invalid,
    Duplicate,
    OpaqueTooLong,
    /// `T`, `N`, `R`, `C` (or `E`) without a number.
    BadToken,
    /// `F` without a number.
    BadClientFlags,
    /// `D` without a number.
    BadDelta,
    /// `J` without a number.
    BadInitial,
    /// `M` not followed by exactly one character.
    ModeLength,
    /// `M` with a character the command has no mode for.
    BadMode,
}

/// `ms` modes (`M` flag: `S` set, the default; `E` add; `R` replace; `A`
/// append; `P` prepend): the shard's own modes, handed to storage unchanged.
pub use crate::storage::MetaSetMode as SetMode;

/// The flags of one meta request. Numeric values are as sent (TTLs are
/// memcached exptimes, not yet absolute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaFlags<'a> {
    /// The flag tokens as sent, space separated, for the return flags in order.
    pub tokens: &'a [u8],
    /// `b`: the key is base64.
    pub base64: bool,
    /// `q`: hide the "nothing happened / it worked" reply (EN for mg, HD for
    /// ms/md/ma); mn ends the pipeline.
    pub quiet: bool,
    /// `u`: do not bump the item in the LRU or mark it fetched.
    pub no_bump: bool,
    /// `v`: return the value.
    pub value: bool,
    /// `I`: invalidate (md: mark stale; ms: a CAS older than the item's stores
    /// the item as stale instead of failing).
    pub invalidate: bool,
    /// `T`: new TTL.
    pub touch: Option<i64>,
    /// `N`: vivify on miss with this TTL.
    pub vivify: Option<i64>,
    /// `R`: win a recache token when the TTL left is below this.
    pub recache: Option<i64>,
    /// `C`: compare CAS.
    pub compare_cas: Option<u64>,
    /// `E`: the new item's CAS value.
    pub new_cas: Option<u64>,
    /// `F`: client flags (ms).
    pub client_flags: Option<u32>,
    /// `M` for ms.
    pub set_mode: SetMode,
    /// `M` for ma: false for decrement.
    pub incr: bool,
    /// `J`: initial value for ma's vivify.
    pub initial: Option<u64>,
    /// `D`: ma's delta.
    pub delta: Option<u64>,
}

impl<'a> MetaFlags<'a> {
    /// The flag tokens in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.tokens.split(|&b| b == b' ').filter(|t| !t.is_empty())
    }
}

/// A base64 key, decoded into the request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DecodedKey {
    len: u8,
    bytes: [u8; KEY_MAX_LENGTH],
}

impl std::fmt::Debug for DecodedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecodedKey({:?})", &self.bytes[..self.len as usize])
    }
}

/// One complete meta request with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    pub command: MetaCommand,
    /// The key token as sent (base64 when `flags.base64`).
    pub raw_key: &'a [u8],
    decoded: Option<Box<DecodedKey>>,
    pub flags: MetaFlags<'a>,
    /// `ms`'s data block.
    pub data: &'a [u8],
}

impl MetaRequest<'_> {
    /// The key: decoded when it was sent in base64.
    pub fn key(&self) -> &[u8] {
        match &self.decoded {
            Some(d) => &d.bytes[..d.len as usize],
            None => self.raw_key,
        }
    }
}

/// Parses a meta command line (`command` is its first token, `args` the rest);
/// `buf` starts at the line, which is `line_len` bytes with its newline.
pub(crate) fn parse_meta<'a>(
    command: MetaCommand,
    args: &'a [u8],
    buf: &'a [u8],
    line_len: usize,
    limits: &ParseLimits,
) -> Parsed<'a> {
    let error = |reply: &'static [u8], consumed: usize| Parsed::Error { reply, consumed };
    let (raw_key, rest) = split_command(args);
    if raw_key.is_empty() {
        let reply = match command {
            MetaCommand::Debug => reply::BAD_FORMAT,
            _ => reply::ERROR,
        };
        return error(reply, line_len);
    }
    // ms: the data length comes before the flags.
    let (datalen, rest) = if command == MetaCommand::Set {
        let (len, rest) = split_command(rest);
        match parse_i32(len) {
            Some(n) if n >= 0 => (Some(n as usize), rest),
            _ => return error(reply::BAD_FORMAT, line_len),
        }
    } else {
        (None, rest)
    };
    // A bad ms is answered once its data block has been swallowed, as memcached
    // does for bad flags (for a key too long it reads the data as commands).
    let bad_consumed = datalen.map_or(line_len, |n| line_len + n + 2);
    // The key token as sent is at most 250 bytes, base64 or not.
    if raw_key.len() > KEY_MAX_LENGTH {
        return error(reply::BAD_FORMAT, bad_consumed);
    }
    let flags = if command == MetaCommand::Debug {
        // me reads no flag but `b`, and that only as its first, as in memcached.
        MetaFlags {
            tokens: rest,
            base64: split_command(rest).0 == b"b",
            ..MetaFlags::default()
        }
    } else {
        match parse_flags(command, rest) {
            Ok(f) => f,
            Err(e) => return error(command.error(e), bad_consumed),
        }
    };
    let decoded = if flags.base64 {
        match decode_key(raw_key) {
            Some(d) => Some(Box::new(d)),
            None => return error(command.bad_key_error(), bad_consumed),
        }
    } else {
        None
    };
    let mut request = MetaRequest {
        command,
        raw_key,
        decoded,
        flags,
        data: &[],
    };
    let Some(length) = datalen else {
        return Parsed::Request {
            request: Request::Meta(request),
            consumed: line_len,
        };
    };
    let total = line_len + length + 2;
    if length > limits.max_item_size {
        // memcached's ms drops the old value in every mode (a classic command
        // only in set).
        let unlink = Some(if request.flags.base64 {
            Unlink(request.key().to_vec().into())
        } else {
            Unlink::key(raw_key)
        });
        return Parsed::TooLarge {
            reply: reply::TOO_LARGE,
            consumed: total,
            unlink,
        };
    }
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    if &buf[line_len + length..total] != b"\r\n" {
        return error(reply::BAD_DATA_CHUNK, total);
    }
    request.data = &buf[line_len..line_len + length];
    Parsed::Request {
        request: Request::Meta(request),
        consumed: total,
    }
}

fn parse_flags(command: MetaCommand, tokens: &[u8]) -> Result<MetaFlags<'_>, FlagError> {
    let mut f = MetaFlags {
        tokens,
        incr: true,
        ..MetaFlags::default()
    };
    let mut seen: u64 = 0;
    for token in f.iter() {
        let flag = token[0];
        let value = &token[1..];
        if !KNOWN_FLAGS.contains(&flag) {
            return Err(FlagError::Invalid);
        }
        let bit = 1u64 << (flag - b'A');
        if seen & bit != 0 {
            return Err(FlagError::Duplicate);
        }
        seen |= bit;
        let ttl = || parse_i32(value).ok_or(FlagError::BadToken);
        let number = |e| parse_u64(value).ok_or(e);
        match flag {
            b'b' => f.base64 = true,
            b'q' => f.quiet = true,
            b'u' => f.no_bump = true,
            b'v' => f.value = true,
            b'I' => f.invalidate = true,
            b'O' if token.len() > MAX_OPAQUE_TOKEN => return Err(FlagError::OpaqueTooLong),
            b'T' => f.touch = Some(ttl()?),
            b'N' => f.vivify = Some(ttl()?),
            b'R' => f.recache = Some(ttl()?),
            b'C' => f.compare_cas = Some(number(FlagError::BadToken)?),
            b'E' => f.new_cas = Some(number(FlagError::BadToken)?),
            b'J' => f.initial = Some(number(FlagError::BadInitial)?),
            b'D' => f.delta = Some(number(FlagError::BadDelta)?),
            // memcached reads client flags with strtoul into 32 bits.
            b'F' => f.client_flags = Some(number(FlagError::BadClientFlags)? as u32),
            b'M' if value.len() != 1 => return Err(FlagError::ModeLength),
            b'M' => match command {
                MetaCommand::Set => {
                    f.set_mode = match value[0] {
                        b'E' => SetMode::Add,
                        b'A' => SetMode::Append,
                        b'P' => SetMode::Prepend,
                        b'R' => SetMode::Replace,
                        b'S' => SetMode::Set,
                        _ => return Err(FlagError::BadMode),
                    }
                }
                MetaCommand::Arith => {
                    f.incr = match value[0] {
                        b'I' | b'+' => true,
                        b'D' | b'-' => false,
                        _ => return Err(FlagError::BadMode),
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(f)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes padded standard base64 of at most [`KEY_MAX_LENGTH`] bytes.
fn decode_key(s: &[u8]) -> Option<DecodedKey> {
    if s.is_empty() || s.len() % 4 != 0 {
        return None;
    }
    let mut key = DecodedKey {
        len: 0,
        bytes: [0; KEY_MAX_LENGTH],
    };
    let mut len = 0usize;
    let quads = s.len() / 4;
    for (i, quad) in s.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | b64_value(c)?;
        }
        n <<= 6 * pad as u32;
        let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        for &b in &out[..3 - pad] {
            if len == KEY_MAX_LENGTH {
                return None;
            }
            key.bytes[len] = b;
            len += 1;
        }
    }
    key.len = len as u8;
    Some(key)
}

/// Appends `data` in padded standard base64.
pub fn encode_base64(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    const LIMITS: ParseLimits = ParseLimits {
        max_item_size: 1024,
    };

    fn meta(buf: &[u8]) -> MetaRequest<'_> {
        match parse(buf, &LIMITS) {
            Parsed::Request {
                request: Request::Meta(m),
                consumed,
            } => {
                assert_eq!(consumed, buf.len());
                m
            }
            other => panic!("expected a meta request, got {other:?}"),
        }
    }

    fn error(buf: &[u8]) -> (&'static [u8], usize) {
        match parse(buf, &LIMITS) {
            Parsed::Error { reply, consumed } => (reply, consumed),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn mg_flags_parse_and_keep_their_order() {
        let m = meta(b"mg foo v f t N30 R10 T-1 Oabc q u\r\n");
        assert_eq!(m.command, MetaCommand::Get);
        assert_eq!(m.key(), b"foo");
        assert!(m.flags.value && m.flags.quiet && m.flags.no_bump);
        assert_eq!(m.flags.vivify, Some(30));
        assert_eq!(m.flags.recache, Some(10));
        assert_eq!(m.flags.touch, Some(-1));
        let order: Vec<&[u8]> = m.flags.iter().collect();
        assert_eq!(order[..4], [&b"v"[..], b"f", b"t", b"N30"]);
    }

    #[test]
    fn ms_takes_its_data_block() {
        let m = meta(b"ms k 3 T30 F5 MA C9 E10 I c\r\nabc\r\n");
        assert_eq!(m.data, b"abc");
        assert_eq!(m.flags.set_mode, SetMode::Append);
        assert_eq!(m.flags.client_flags, Some(5));
        assert_eq!(m.flags.compare_cas, Some(9));
        assert_eq!(m.flags.new_cas, Some(10));
        assert!(m.flags.invalidate);
        assert_eq!(parse(b"ms k 3\r\nab", &LIMITS), Parsed::Incomplete);
        assert_eq!(error(b"ms k 2\r\nabc\r\n"), (reply::BAD_DATA_CHUNK, 12));
    }

    #[test]
    fn base64_keys_are_decoded_for_routing() {
        let m = meta(b"mg Zm9vYmFy b v\r\n");
        assert_eq!(m.key(), b"foobar");
        assert_eq!(meta(b"md Zm9vYg== b\r\n").key(), b"foob");
        assert_eq!(meta(b"ma Zm8= b\r\n").key(), b"fo");
        assert_eq!(error(b"mg bjE b v\r\n").0, BAD_KEY_ENCODING);
        assert_eq!(error(b"mg b=jE b v\r\n").0, BAD_KEY_ENCODING);
        assert_eq!(error(b"ms !!! 1 b\r\nx\r\n").0, BAD_KEY_ENCODING);
        assert_eq!(error(b"md !!! b\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"ma !!! b\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"me a b\r\n").0, reply::BAD_FORMAT);
        assert_eq!(meta(b"me Zm8= b\r\n").key(), b"fo");
        // The key as sent is at most 250 bytes, base64 or not (memcached's limit
        // is on the token: 188 decoded bytes at most).
        let long = format!("mg {} b\r\n", "QUFB".repeat(63));
        assert_eq!(error(long.as_bytes()).0, reply::BAD_FORMAT);
        let longest = format!("mg {}QUE= b\r\n", "QUFB".repeat(61));
        assert_eq!(meta(longest.as_bytes()).key().len(), 61 * 3 + 2);
        let mut out = Vec::new();
        encode_base64(b"foobar", &mut out);
        encode_base64(b"fo", &mut out);
        assert_eq!(out, b"Zm9vYmFyZm8=");
    }

    #[test]
    fn errors_match_memcached() {
        assert_eq!(error(b"mg foo z\r\n").0, INVALID_FLAG);
        assert_eq!(error(b"mg foo v v\r\n").0, DUPLICATE_FLAG);
        assert_eq!(error(b"mg foo Tabc\r\n").0, BAD_TOKEN);
        assert_eq!(
            error(b"mg a O12345678901234567890123456789012\r\n").0,
            OPAQUE_TOO_LONG
        );
        assert!(matches!(
            parse(b"mg a O1234567890123456789012345678901\r\n", &LIMITS),
            Parsed::Request { .. }
        ));
        // A bad ms still swallows its data block.
        assert_eq!(error(b"ms a 1 MX\r\nx\r\n"), (BAD_MS_MODE, 14));
        assert_eq!(error(b"ms a 1 Fx\r\nx\r\n").0, reply::BAD_FORMAT);
        // ...unless its length is unreadable.
        assert_eq!(error(b"ms a abc\r\nx\r\n"), (reply::BAD_FORMAT, 10));
        assert_eq!(error(b"ms a\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error(b"md a Cx\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"ma a v v\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"md a zz\r\n").0, INVALID_OR_DUPLICATE);
        // Known flags a command has no use for are ignored, as in 1.6.18.
        assert_eq!(meta(b"md a v N5 M1\r\n").key(), b"a");
        assert_eq!(error(b"ms a 1 Ms\r\nx\r\n").0, BAD_MS_MODE);
        assert_eq!(error(b"ma a Mx\r\n").0, BAD_MA_MODE);
        assert_eq!(error(b"mg\r\n").0, reply::ERROR);
        assert_eq!(error(b"me\r\n").0, reply::BAD_FORMAT);
        // Each number's own message in mg and ms; md and ma have one for all.
        assert_eq!(error(b"ms a 1 Tabc\r\nx\r\n"), (BAD_TOKEN, 16));
        assert_eq!(error(b"ms a 1 Cabc\r\nx\r\n").0, BAD_TOKEN);
        assert_eq!(error(b"mg a Fabc\r\n").0, reply::BAD_FORMAT);
        assert_eq!(error(b"mg a Dabc\r\n").0, BAD_DELTA);
        assert_eq!(error(b"ms a 1 Jx\r\nx\r\n").0, BAD_INITIAL);
        assert_eq!(error(b"ma a Jx\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"ma a Dabc\r\n").0, INVALID_OR_DUPLICATE);
        // M takes exactly one character.
        assert_eq!(error(b"ms a 2 MEE\r\nhi\r\n").0, BAD_MODE_LENGTH);
        assert_eq!(error(b"mg a M\r\n").0, BAD_MODE_LENGTH);
        assert_eq!(error(b"ma a MII\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(error(b"md a MEE\r\n").0, INVALID_OR_DUPLICATE);
        assert_eq!(meta(b"mg a Mx\r\n").key(), b"a");
        // ma checks its opaque too.
        assert_eq!(
            error(b"ma a O12345678901234567890123456789012\r\n").0,
            OPAQUE_TOO_LONG
        );
        // me reads no flag but b, and that only as its first.
        assert_eq!(meta(b"me a Z T1 T2\r\n").key(), b"a");
        assert_eq!(meta(b"me foo bar\r\n").key(), b"foo");
        assert_eq!(meta(b"me Zm9v v b\r\n").key(), b"Zm9v");
        let long = format!("mg {}\r\n", "k".repeat(251));
        assert_eq!(error(long.as_bytes()).0, reply::BAD_FORMAT);
    }

    #[test]
    fn too_large_ms_is_swallowed() {
        assert_eq!(
            parse(b"ms a 2000 T0\r\n", &LIMITS),
            Parsed::TooLarge {
                reply: reply::TOO_LARGE,
                consumed: 14 + 2002,
                unlink: Some(Unlink::key(b"a")),
            }
        );
    }
}
