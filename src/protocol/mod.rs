//! The memcached text protocol: framing, parsing and reply encoding. No I/O.
//!
//! Parsing follows the check-then-parse discipline: [`parse`] looks at the bytes a
//! connection has buffered and either finds one complete request (returning it
//! borrowed from the buffer, plus how many bytes it used), says more bytes are
//! needed, or produces memcached's error reply. Nothing is allocated on the way but a
//! meta key sent in base64, decoded into a box.

pub mod classic;
pub mod meta;
pub mod reply;

pub use classic::{line_may_grow, parse, Parsed, Unlink};
pub use meta::{MetaCommand, MetaFlags, MetaRequest, SetMode};

/// Longest key memcached accepts (`KEY_MAX_LENGTH`).
pub const KEY_MAX_LENGTH: usize = 250;

/// Longest command line memcached buffers without a newline before it closes the
/// connection; multi-key retrievals are exempt because their lines have no bound.
pub const MAX_LINE_LENGTH: usize = 2048;
/// Longest `get`/`gets` line: multi-key retrievals may exceed [`MAX_LINE_LENGTH`]
/// (memcached reads them in pieces), but not without bound. 16 MiB holds over
/// 60,000 keys of the longest size.
pub const MAX_GET_LINE_LENGTH: usize = 16 << 20;

/// Exptime values up to this many seconds are relative to now; larger ones are
/// absolute unix times (memcached's `REALTIME_MAXDELTA`, 30 days).
pub const RELATIVE_EXPTIME_MAX: i64 = 60 * 60 * 24 * 30;

/// What the parser needs to know about the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// `-I`, the largest item. A storage command with a longer value is refused
    /// (and its data swallowed) here; one whose value fits but whose item, with
    /// the header and key, does not is refused by the shard once read.
    pub max_item_size: usize,
}

/// Which storage command a [`Request::Store`] is: the shard's own store modes,
/// so the executor hands the parsed command to storage unchanged.
pub use crate::storage::StoreMode as StoreKind;

/// Which retrieval command a [`Request::Get`] is: `get`, `gets`, `gat`, `gats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetKind {
    /// `gets`/`gats`: print the CAS unique value.
    pub with_cas: bool,
    /// `gat`/`gats`: the new exptime applied to every hit.
    pub touch: Option<i64>,
}

/// One complete request, borrowing its key(s) and data from the read buffer.
///
/// About 200 bytes, most of it a meta request's flags; a base64 meta key is
/// decoded into a box, so that rare case alone allocates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Store {
        kind: StoreKind,
        key: &'a [u8],
        flags: u32,
        exptime: i64,
        data: &'a [u8],
        noreply: bool,
    },
    Get {
        kind: GetKind,
        keys: Keys<'a>,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Arith {
        incr: bool,
        key: &'a [u8],
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i64,
        noreply: bool,
    },
    FlushAll {
        delay: i64,
        noreply: bool,
    },
    Version,
    Verbosity {
        level: u32,
        noreply: bool,
    },
    Quit,
    Shutdown {
        graceful: bool,
    },
    CacheMemlimit {
        megabytes: u64,
        noreply: bool,
    },
    /// `stats` and its sub-commands; the arguments after `stats`, space separated.
    Stats {
        args: Keys<'a>,
    },
    /// `mg`, `ms`, `md`, `ma`, `me`: one key, routed like the classic commands.
    Meta(MetaRequest<'a>),
    /// `mn`: answers `MN`, marking the end of a pipeline of quiet meta requests.
    MetaNoop,
}

impl<'a> Request<'a> {
    /// The single key a request is about, for routing to its owner; `None` for
    /// multi-key retrievals (routed key by key) and for server-wide commands.
    /// A meta request's key is the decoded one when it was sent in base64.
    pub fn single_key(&self) -> Option<&[u8]> {
        match self {
            Request::Store { key, .. }
            | Request::Delete { key, .. }
            | Request::Arith { key, .. }
            | Request::Touch { key, .. } => Some(key),
            Request::Meta(m) => Some(m.key()),
            _ => None,
        }
    }

    /// Every key a request is about, in order: a retrieval's keys, or its
    /// single key (none for server-wide commands).
    pub fn keys(&self) -> RequestKeys<'_> {
        match self {
            Request::Get { keys, .. } => RequestKeys::Retrieved(keys.iter()),
            _ => RequestKeys::Single(self.single_key()),
        }
    }

    /// Whether the client asked for no reply. Never for meta requests: `q` hides
    /// only some replies, so the owner decides (an empty reply is fine).
    pub fn noreply(&self) -> bool {
        match self {
            Request::Store { noreply, .. }
            | Request::Delete { noreply, .. }
            | Request::Arith { noreply, .. }
            | Request::Touch { noreply, .. }
            | Request::FlushAll { noreply, .. }
            | Request::Verbosity { noreply, .. }
            | Request::CacheMemlimit { noreply, .. } => *noreply,
            _ => false,
        }
    }
}

/// The keys of a request ([`Request::keys`]). Every request's keys pass
/// through here on the way to their owner, so it is a plain enum rather than a
/// chain of iterator adapters.
pub enum RequestKeys<'a> {
    Retrieved(KeysIter<'a>),
    Single(Option<&'a [u8]>),
}

impl<'a> Iterator for RequestKeys<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            RequestKeys::Retrieved(keys) => keys.next(),
            RequestKeys::Single(key) => key.take(),
        }
    }
}

/// Space-separated tokens (keys of a multi-get, or `stats` arguments), iterated
/// lazily so a 100-key get allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a>(pub(crate) &'a [u8]);

impl<'a> Keys<'a> {
    pub fn iter(&self) -> KeysIter<'a> {
        KeysIter(*self)
    }

    pub fn is_empty(&self) -> bool {
        self.split_first().is_none()
    }

    /// The first key and the keys after it; `None` when none are left. A
    /// multi-get served in parts goes on from the rest.
    pub fn split_first(&self) -> Option<(&'a [u8], Keys<'a>)> {
        let start = self.0.iter().position(|&b| b != b' ')?;
        let rest = &self.0[start..];
        let end = classic::memchr(b' ', rest).unwrap_or(rest.len());
        Some((&rest[..end], Keys(&rest[end..])))
    }

    /// The raw bytes, tokens separated by spaces.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

/// The tokens of [`Keys`], in order.
#[derive(Debug, Clone, Copy)]
pub struct KeysIter<'a>(Keys<'a>);

impl<'a> Iterator for KeysIter<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (key, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(key)
    }
}

/// Converts a memcached exptime to an absolute unix expiry in seconds, where 0
/// means "never": 0 never expires, up to 30 days is relative to `now`, larger is
/// an absolute unix time, and a negative value is already expired.
pub fn absolute_expiry(exptime: i64, now: u32) -> u32 {
    if exptime == 0 {
        0
    } else if exptime < 0 {
        // Already expired: any time in the past will do; 1 is never "0 = never".
        1
    } else if exptime <= RELATIVE_EXPTIME_MAX {
        now.saturating_add(exptime as u32)
    } else {
        // Absolute times at or before now are expired (memcached stores them as
        // one second in the past); clamp far futures to the u32 range.
        let t = exptime.min(u32::MAX as i64) as u32;
        if t <= now {
            1
        } else {
            t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptime_rules_match_memcached() {
        let now = 1_700_000_000;
        assert_eq!(absolute_expiry(0, now), 0);
        assert_eq!(absolute_expiry(-1, now), 1);
        assert_eq!(absolute_expiry(10, now), now + 10);
        assert_eq!(
            absolute_expiry(RELATIVE_EXPTIME_MAX, now),
            now + RELATIVE_EXPTIME_MAX as u32
        );
        // One past 30 days is an absolute time, long ago: expired.
        assert_eq!(absolute_expiry(RELATIVE_EXPTIME_MAX + 1, now), 1);
        assert_eq!(absolute_expiry(now as i64 + 100, now), now + 100);
        assert_eq!(absolute_expiry(now as i64, now), 1);
    }

    #[test]
    fn split_first_walks_the_keys_in_order() {
        let mut keys = Keys(b"  a bb  ccc ");
        let mut seen = Vec::new();
        while let Some((key, rest)) = keys.split_first() {
            seen.push(key);
            keys = rest;
        }
        assert_eq!(seen, [&b"a"[..], b"bb", b"ccc"]);
        assert!(keys.is_empty());
        assert_eq!(Keys(b"").split_first(), None);
        let (first, rest) = Keys(b"k1 k2").split_first().unwrap();
        assert_eq!((first, rest.as_bytes()), (&b"k1"[..], &b" k2"[..]));
    }

    #[test]
    fn keys_iterate_lazily_over_tokens() {
        let keys = Keys(b"a bb  ccc");
        assert_eq!(keys.iter().collect::<Vec<_>>(), [&b"a"[..], b"bb", b"ccc"]);
        assert!(Keys(b"  ").is_empty());
    }
}
