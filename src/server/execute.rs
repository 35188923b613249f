//! Applies keyed requests to the shard that owns their keys and writes
//! memcached's replies. Runs on the owning core, whether the request arrived on
//! one of its own connections or was forwarded by another core.

use crate::protocol::{absolute_expiry, reply, GetKind, Request, StoreKind};
use crate::server::stats::CoreStats;
use crate::storage::{ArithResult, Shard, StoreMode, StoreResult};

/// A CAS value no item carries when CAS is disabled (their CAS is 0).
pub(crate) const NO_CAS_MATCHES: u64 = u64::MAX;

/// What a request needs besides the shard.
pub struct Executor<'a> {
    pub shard: &'a mut Shard,
    pub stats: &'a CoreStats,
    pub now: u32,
    pub use_cas: bool,
}

impl Executor<'_> {
    /// Runs a request about one key, appending its reply (nothing for noreply).
    /// `hash` is its key's [`key_hash`](crate::keyhash::key_hash) (the caller
    /// has it from routing the request).
    pub fn keyed(&mut self, request: &Request<'_>, hash: u64, out: &mut Vec<u8>) {
        let reply: &[u8] = match *request {
            Request::Store {
                kind,
                key,
                flags,
                exptime,
                data,
                ..
            } => self.store(kind, key, hash, flags, exptime, data),
            Request::Delete { key, .. } => {
                if self.shard.delete(key, hash, self.now) {
                    self.stats.delete_hits.incr();
                    reply::DELETED
                } else {
                    self.stats.delete_misses.incr();
                    reply::NOT_FOUND
                }
            }
            Request::Touch { key, exptime, .. } => {
                self.stats.cmd_touch.incr();
                let expiry = absolute_expiry(exptime, self.now);
                if self.shard.touch(key, hash, expiry, self.now) {
                    self.stats.touch_hits.incr();
                    reply::TOUCHED
                } else {
                    self.stats.touch_misses.incr();
                    reply::NOT_FOUND
                }
            }
            Request::Arith {
                incr, key, delta, ..
            } => {
                let (hits, misses) = if incr {
                    (&self.stats.incr_hits, &self.stats.incr_misses)
                } else {
                    (&self.stats.decr_hits, &self.stats.decr_misses)
                };
                match self.shard.arith(key, hash, incr, delta, self.now) {
                    ArithResult::Value(n) => {
                        hits.incr();
                        if !request.noreply() {
                            reply::push_u64(out, n);
                            out.extend_from_slice(b"\r\n");
                        }
                        return;
                    }
                    ArithResult::NotFound => {
                        misses.incr();
                        reply::NOT_FOUND
                    }
                    ArithResult::NonNumeric => reply::NON_NUMERIC,
                }
            }
            Request::Meta(ref m) => {
                self.meta(m, hash, out);
                return;
            }
            _ => unreachable!("not a single-key request: {request:?}"),
        };
        if !request.noreply() {
            out.extend_from_slice(reply);
        }
    }

    /// Appends the `VALUE` block of one key of a retrieval, if it is a hit.
    /// `hash` is the key's [`key_hash`](crate::keyhash::key_hash).
    pub fn get(&mut self, key: &[u8], hash: u64, kind: GetKind, out: &mut Vec<u8>) {
        self.stats.cmd_get.incr();
        let item = match kind.touch {
            None => self.shard.get(key, hash, self.now),
            Some(exptime) => {
                self.stats.cmd_touch.incr();
                let expiry = absolute_expiry(exptime, self.now);
                self.shard.get_and_touch(key, hash, expiry, self.now)
            }
        };
        let hit = item.is_some();
        if let Some(item) = item {
            let cas = kind
                .with_cas
                .then_some(if self.use_cas { item.cas } else { 0 });
            reply::push_value(out, key, item.flags, item.value, cas);
        }
        let (hits, misses) = if kind.touch.is_some() {
            (&self.stats.touch_hits, &self.stats.touch_misses)
        } else {
            (&self.stats.get_hits, &self.stats.get_misses)
        };
        if hit {
            hits.incr();
        } else {
            misses.incr();
        }
    }

    /// Counts a store (classic or `ms`) as memcached does: `cmd_set` once it had
    /// an item for it (not one too large), a refusal in `store_too_large` or
    /// `store_no_memory`, and a compare-and-swap's outcome in the `cas_*`
    /// counters.
    pub(super) fn count_store(&self, result: StoreResult, compare_and_swap: bool) {
        match result {
            StoreResult::TooLarge => self.stats.store_too_large.incr(),
            StoreResult::OutOfMemory => self.stats.store_no_memory.incr(),
            _ => {}
        }
        if result != StoreResult::TooLarge {
            self.stats.cmd_set.incr();
        }
        if compare_and_swap {
            match result {
                StoreResult::Stored => self.stats.cas_hits.incr(),
                StoreResult::Exists => self.stats.cas_badval.incr(),
                StoreResult::NotFound => self.stats.cas_misses.incr(),
                _ => {}
            }
        }
    }

    fn store(
        &mut self,
        kind: StoreKind,
        key: &[u8],
        hash: u64,
        flags: u32,
        exptime: i64,
        data: &[u8],
    ) -> &'static [u8] {
        let mode = match kind {
            // With -C items carry no CAS value and memcached lets no `cas`
            // succeed: an existing item is EXISTS whatever value is offered.
            StoreKind::Cas(_) if !self.use_cas => StoreMode::Cas(NO_CAS_MATCHES),
            mode => mode,
        };
        let expiry = absolute_expiry(exptime, self.now);
        let result = self
            .shard
            .store(mode, key, hash, flags, expiry, data, self.now);
        self.count_store(result, matches!(mode, StoreMode::Cas(_)));
        match result {
            StoreResult::Stored => reply::STORED,
            StoreResult::NotStored => reply::NOT_STORED,
            StoreResult::Exists => reply::EXISTS,
            StoreResult::NotFound => reply::NOT_FOUND,
            StoreResult::TooLarge => reply::TOO_LARGE,
            StoreResult::OutOfMemory => reply::OUT_OF_MEMORY,
        }
    }
}

/// Canned replies for the `--null` target: the parser and the event loop at
/// full cost, storage at none. Values are 100 bytes, as in DESIGN.md's table.
pub fn null_reply(request: &Request<'_>, out: &mut Vec<u8>) {
    const VALUE: &[u8] = &[b'x'; 100];
    match request {
        Request::Get { keys, .. } => {
            for key in keys.iter() {
                reply::push_value(out, key, 0, VALUE, None);
            }
            out.extend_from_slice(reply::END);
        }
        Request::Store { noreply: false, .. } => out.extend_from_slice(reply::STORED),
        Request::Store { .. } => {}
        _ => out.extend_from_slice(reply::ERROR),
    }
}
