//! Runs meta requests (`mg`, `ms`, `md`, `ma`, `me`) against the owning core's
//! shard and writes memcached 1.6's replies: a return code, then the return
//! flags in the order the client sent them, then `Z`, `X`, `W` for `mg`.

use super::execute::{Executor, NO_CAS_MATCHES};
use crate::protocol::meta::{MetaCommand, SetMode};
use crate::protocol::{absolute_expiry, reply, MetaFlags, MetaRequest};
use crate::storage::{
    MetaArith, MetaArithResult, MetaDelete, MetaDeleteResult, MetaGet, MetaSet, StoreResult,
    TtlStep, TtlSteps,
};

impl Executor<'_> {
    /// Runs one meta request, appending its reply (possibly nothing, with `q`).
    /// `hash` is the key's [`key_hash`](crate::keyhash::key_hash).
    pub fn meta(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        match m.command {
            MetaCommand::Get => self.meta_get(m, hash, out),
            MetaCommand::Set => self.meta_set(m, hash, out),
            MetaCommand::Delete => self.meta_delete(m, hash, out),
            MetaCommand::Arith => self.meta_arith(m, hash, out),
            MetaCommand::Debug => self.meta_debug(m, hash, out),
        }
    }

    /// A CAS the client compares against; with `-C` no item matches any.
    fn compare(&self, cas: Option<u64>) -> Option<u64> {
        cas.map(|c| if self.use_cas { c } else { NO_CAS_MATCHES })
    }

    fn expiry(&self, ttl: Option<i64>) -> Option<u32> {
        ttl.map(|t| absolute_expiry(t, self.now))
    }

    /// The TTL flags (`T`, `N`, `R`, `t`) in the order sent, which is the order
    /// memcached applies them in (see [`TtlStep`]).
    fn ttl_steps(&self, f: &MetaFlags<'_>) -> TtlSteps {
        let absolute = |ttl: Option<i64>| absolute_expiry(ttl.unwrap_or(0), self.now);
        let mut steps = TtlSteps::default();
        for token in f.iter() {
            match token[0] {
                b'T' => steps.push(TtlStep::Touch(absolute(f.touch))),
                b'N' => steps.push(TtlStep::Vivify(absolute(f.vivify))),
                b'R' => {
                    let secs = f.recache.unwrap_or(0).clamp(0, u32::MAX as i64) as u32;
                    steps.push(TtlStep::Recache(secs));
                }
                b't' => steps.push(TtlStep::Report),
                _ => {}
            }
        }
        steps
    }

    fn meta_get(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        self.stats.cmd_get.incr();
        let f = &m.flags;
        if f.touch.is_some() {
            self.stats.cmd_touch.incr();
        }
        let opts = MetaGet {
            ttl: self.ttl_steps(f),
            no_bump: f.no_bump,
            new_cas: f.new_cas,
        };
        let key = m.key();
        let now = self.now;
        let Some(hit) = self.shard.meta_get(key, hash, opts, now) else {
            self.stats.get_misses.incr();
            if f.touch.is_some() {
                self.stats.touch_misses.incr();
            }
            if !f.quiet {
                out.extend_from_slice(b"EN");
                push_echo_flags(m, out);
                out.extend_from_slice(b"\r\n");
            }
            return;
        };
        self.stats.get_hits.incr();
        if f.touch.is_some() {
            self.stats.touch_hits.incr();
        }
        let cas = if self.use_cas { hit.cas } else { 0 };
        if f.value {
            out.extend_from_slice(b"VA ");
            reply::push_u64(out, hit.value.len() as u64);
        } else {
            out.extend_from_slice(b"HD");
        }
        for token in f.iter() {
            match token[0] {
                b'c' => push_flag_u64(out, b'c', cas),
                b'f' => push_flag_u64(out, b'f', hit.flags as u64),
                b'h' => push_flag_u64(out, b'h', hit.fetched_before as u64),
                b'l' => push_flag_u64(out, b'l', hit.idle as u64),
                b's' => push_flag_u64(out, b's', hit.value.len() as u64),
                b't' => push_ttl(out, hit.reported_expiry, now),
                b'k' => push_key(m, out),
                b'O' => push_token(out, token),
                _ => {}
            }
        }
        if hit.already_won {
            out.extend_from_slice(b" Z");
        }
        if hit.stale {
            out.extend_from_slice(b" X");
        }
        if hit.win {
            out.extend_from_slice(b" W");
        }
        out.extend_from_slice(b"\r\n");
        if f.value {
            out.extend_from_slice(hit.value);
            out.extend_from_slice(b"\r\n");
        }
    }

    fn meta_set(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        let f = &m.flags;
        // Set and replace with C are memcached's compare-and-swap (C0 matches
        // nothing, and the cas_* counters count them); append and prepend read
        // C0 as no C.
        let swap = matches!(f.set_mode, SetMode::Set | SetMode::Replace);
        let compare_cas = if swap {
            f.compare_cas
        } else {
            f.compare_cas.filter(|&c| c != 0)
        };
        let opts = MetaSet {
            mode: f.set_mode,
            flags: f.client_flags.unwrap_or(0),
            expiry: self.expiry(f.touch).unwrap_or(0),
            compare_cas: self.compare(compare_cas),
            new_cas: f.new_cas,
            invalidate: f.invalidate,
            vivify: self.expiry(f.vivify),
        };
        let key = m.key();
        let (result, cas) = self.shard.meta_store(key, hash, m.data, opts, self.now);
        self.count_store(result, swap && f.compare_cas.is_some());
        let code: &[u8] = match result {
            StoreResult::Stored if f.quiet => return,
            StoreResult::Stored => b"HD",
            StoreResult::NotStored => b"NS",
            StoreResult::Exists => b"EX",
            StoreResult::NotFound => b"NF",
            StoreResult::TooLarge => return out.extend_from_slice(reply::TOO_LARGE),
            StoreResult::OutOfMemory => return out.extend_from_slice(reply::OUT_OF_MEMORY),
        };
        out.extend_from_slice(code);
        let cas = if self.use_cas { cas } else { 0 };
        for token in f.iter() {
            match token[0] {
                b'c' => push_flag_u64(out, b'c', cas),
                b'k' => push_key(m, out),
                b'O' => push_token(out, token),
                _ => {}
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    fn meta_delete(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        let f = &m.flags;
        let opts = MetaDelete {
            compare_cas: self.compare(f.compare_cas),
            new_cas: f.new_cas,
            invalidate: f.invalidate,
            touch: self.expiry(f.touch),
        };
        let key = m.key();
        let code: &[u8] = match self.shard.meta_delete(key, hash, opts, self.now) {
            MetaDeleteResult::Deleted => {
                self.stats.delete_hits.incr();
                if f.quiet {
                    return;
                }
                b"HD"
            }
            MetaDeleteResult::NotFound => {
                self.stats.delete_misses.incr();
                b"NF"
            }
            MetaDeleteResult::Exists => b"EX",
        };
        out.extend_from_slice(code);
        push_echo_flags(m, out);
        out.extend_from_slice(b"\r\n");
    }

    fn meta_arith(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        let f = &m.flags;
        let opts = MetaArith {
            incr: f.incr,
            delta: f.delta.unwrap_or(1),
            // memcached's arithmetic reads C0 as "no C".
            compare_cas: self.compare(f.compare_cas.filter(|&c| c != 0)),
            new_cas: f.new_cas,
            initial: f.initial.unwrap_or(0),
            ttl: self.ttl_steps(f),
        };
        let (hits, misses) = if f.incr {
            (&self.stats.incr_hits, &self.stats.incr_misses)
        } else {
            (&self.stats.decr_hits, &self.stats.decr_misses)
        };
        let key = m.key();
        let now = self.now;
        let code: &[u8] = match self.shard.meta_arith(key, hash, opts, now) {
            MetaArithResult::Value {
                value,
                cas,
                reported_expiry,
                created,
            } => {
                // memcached counts an item N created as neither hit nor miss.
                if !created {
                    hits.incr();
                }
                // memcached's q hides an update's reply, not a creation's.
                if f.quiet && !created {
                    return;
                }
                let mut digits = itoa::Buffer::new();
                let digits = digits.format(value).as_bytes();
                if f.value {
                    out.extend_from_slice(b"VA ");
                    reply::push_u64(out, digits.len() as u64);
                } else {
                    out.extend_from_slice(b"HD");
                }
                let cas = if self.use_cas { cas } else { 0 };
                for token in f.iter() {
                    match token[0] {
                        b'c' => push_flag_u64(out, b'c', cas),
                        b't' => push_ttl(out, reported_expiry, now),
                        b'k' => push_key(m, out),
                        b'O' => push_token(out, token),
                        _ => {}
                    }
                }
                out.extend_from_slice(b"\r\n");
                if f.value {
                    out.extend_from_slice(digits);
                    out.extend_from_slice(b"\r\n");
                }
                return;
            }
            MetaArithResult::NotFound => {
                misses.incr();
                b"NF"
            }
            MetaArithResult::NotStored => b"NS",
            MetaArithResult::Exists => b"EX",
            MetaArithResult::NonNumeric => return out.extend_from_slice(reply::NON_NUMERIC),
        };
        out.extend_from_slice(code);
        push_echo_flags(m, out);
        out.extend_from_slice(b"\r\n");
    }

    fn meta_debug(&mut self, m: &MetaRequest<'_>, hash: u64, out: &mut Vec<u8>) {
        let key = m.key();
        let now = self.now;
        let Some(d) = self.shard.meta_debug(key, hash, now) else {
            out.extend_from_slice(b"EN\r\n");
            return;
        };
        out.extend_from_slice(b"ME ");
        out.extend_from_slice(m.raw_key);
        out.extend_from_slice(b" exp=");
        if d.expiry == 0 {
            out.extend_from_slice(b"-1");
        } else {
            reply::push_u64(out, d.expiry.saturating_sub(now) as u64);
        }
        out.extend_from_slice(b" la=");
        reply::push_u64(out, now.saturating_sub(d.atime) as u64);
        out.extend_from_slice(b" cas=");
        reply::push_u64(out, if self.use_cas { d.cas } else { 0 });
        out.extend_from_slice(if d.fetched {
            b" fetch=yes"
        } else {
            b" fetch=no"
        });
        out.extend_from_slice(b" cls=");
        reply::push_u64(out, d.class as u64);
        out.extend_from_slice(b" size=");
        reply::push_u64(out, d.size as u64);
        out.extend_from_slice(b"\r\n");
    }
}

/// ` <flag><n>`.
fn push_flag_u64(out: &mut Vec<u8>, flag: u8, n: u64) {
    out.push(b' ');
    out.push(flag);
    reply::push_u64(out, n);
}

/// ` t<seconds left>`, `-1` for never.
fn push_ttl(out: &mut Vec<u8>, expiry: u32, now: u32) {
    out.extend_from_slice(b" t");
    if expiry == 0 {
        out.extend_from_slice(b"-1");
    } else {
        reply::push_u64(out, expiry.saturating_sub(now) as u64);
    }
}

fn push_token(out: &mut Vec<u8>, token: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(token);
}

/// ` k<key>`; a base64 key goes back as sent, followed by ` b` (memcached's
/// later 1.6 releases; 1.6.18 sends the decoded bytes).
fn push_key(m: &MetaRequest<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b" k");
    out.extend_from_slice(m.raw_key);
    if m.flags.base64 {
        out.extend_from_slice(b" b");
    }
}

/// The flags every reply echoes, misses and failures included: `O` and `k`.
fn push_echo_flags(m: &MetaRequest<'_>, out: &mut Vec<u8>) {
    for token in m.flags.iter() {
        match token[0] {
            b'k' => push_key(m, out),
            b'O' => push_token(out, token),
            _ => {}
        }
    }
}
