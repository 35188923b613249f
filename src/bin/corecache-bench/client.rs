//! A small blocking client for the steps around a run: the correctness probe
//! (set then get must hit, with the same bytes) and the prefill.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::proto::{self, Protocol, Reply};
use crate::workload::{Generator, Workload};

/// A blocking connection whose replies are read into a growable buffer and
/// parsed in place.
pub struct ReplyStream {
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
}

impl ReplyStream {
    pub fn connect(addr: SocketAddr, read_timeout: Duration, buffer: usize) -> io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(read_timeout))?;
        Ok(ReplyStream {
            stream,
            rbuf: vec![0; buffer],
            rlen: 0,
        })
    }

    /// Reads until `parse` finds a complete reply at the front of the buffer
    /// (returning its length and what it made of it), consumes it and returns it.
    pub fn reply<T>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(usize, T)>, String>,
    ) -> io::Result<T> {
        loop {
            let parsed = parse(&self.rbuf[..self.rlen])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some((n, r)) = parsed {
                self.rbuf.copy_within(n..self.rlen, 0);
                self.rlen -= n;
                return Ok(r);
            }
            if self.rlen == self.rbuf.len() {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            let n = self.stream.read(&mut self.rbuf[self.rlen..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.rlen += n;
        }
    }
}

pub struct Blocking {
    stream: ReplyStream,
    protocol: Protocol,
}

impl Blocking {
    pub fn connect(addr: SocketAddr, protocol: Protocol) -> io::Result<Blocking> {
        Ok(Blocking {
            stream: ReplyStream::connect(addr, Duration::from_secs(10), 64 * 1024)?,
            protocol,
        })
    }

    /// Reads one complete reply; returns its raw bytes and summary. `get_keys`
    /// (memcached) says the reply is to a get of that many keys, else to a set.
    fn reply(&mut self, get: Option<(&[u8], usize)>) -> io::Result<(Vec<u8>, Reply)> {
        let protocol = self.protocol;
        self.stream.reply(|buf| {
            let parsed = match (protocol, get) {
                (Protocol::Memcached, Some((keys, klen))) => proto::mc_parse_get(buf, keys, klen),
                (Protocol::Memcached, None) => proto::mc_parse_store(buf),
                (Protocol::Redis, _) => proto::resp_parse(buf),
            };
            parsed
                .map(|found| found.map(|(n, r)| (n, (buf[..n].to_vec(), r))))
                .map_err(|e| e.0)
        })
    }

    fn set_bytes(&self, out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
        match self.protocol {
            Protocol::Memcached => proto::mc_set(out, key, value),
            Protocol::Redis => proto::resp_set(out, key, value),
        }
    }
}

/// Checks that the server answers like a cache: a set is stored, a get of it
/// returns exactly the bytes set, a get of a key never set misses. Servers with
/// canned replies (the null targets) fail this, by design.
pub fn probe(addr: SocketAddr, protocol: Protocol) -> Result<(), String> {
    let mut c = Blocking::connect(addr, protocol).map_err(|e| format!("connect {addr}: {e}"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tag = format!("{}-{nanos}", std::process::id());
    let key = format!("cbprobe:{tag}");
    let missing = format!("cbprobe:missing:{tag}");
    let value: Vec<u8> = (0..1000u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    let io = |e: io::Error| format!("probe: {e}");

    let mut out = Vec::new();
    c.set_bytes(&mut out, key.as_bytes(), &value);
    c.stream.stream.write_all(&out).map_err(io)?;
    let (raw, r) = c.reply(None).map_err(io)?;
    if !r.stored {
        return Err(format!(
            "probe: set not stored: {:?}",
            String::from_utf8_lossy(&raw)
        ));
    }

    for (k, want_hit) in [(&key, true), (&missing, false)] {
        out.clear();
        match protocol {
            Protocol::Memcached => proto::mc_get(&mut out, [k.as_bytes()]),
            Protocol::Redis => proto::resp_get(&mut out, &[k.as_bytes()]),
        }
        c.stream.stream.write_all(&out).map_err(io)?;
        let (raw, r) = c.reply(Some((k.as_bytes(), k.len()))).map_err(io)?;
        let hit = r.hits == 1;
        if hit != want_hit || r.error || r.key_mismatch {
            return Err(format!(
                "probe: get {k}: expected a {}, got {:?}",
                if want_hit { "hit" } else { "miss" },
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ));
        }
        if want_hit {
            let expected = match protocol {
                Protocol::Memcached => {
                    let mut e = format!("VALUE {k} 0 {}\r\n", value.len()).into_bytes();
                    e.extend_from_slice(&value);
                    e.extend_from_slice(b"\r\nEND\r\n");
                    e
                }
                Protocol::Redis => {
                    let mut e = format!("${}\r\n", value.len()).into_bytes();
                    e.extend_from_slice(&value);
                    e.extend_from_slice(b"\r\n");
                    e
                }
            };
            if raw != expected {
                return Err(format!(
                    "probe: get {k} returned different bytes than were set"
                ));
            }
        }
    }
    Ok(())
}

/// Outcome of a prefill.
#[derive(Debug, Default, Clone, Copy)]
pub struct Prefill {
    pub keys: u64,
    pub errors: u64,
    pub seconds: f64,
}

/// Sets key ids `0..wl.prefill_keys()` over a few pipelined connections. Low ids
/// (the hot ones under zipf / hotspot) are written last by each connection, so an
/// LRU server that cannot hold them all keeps the hot ones.
pub fn prefill(addr: SocketAddr, protocol: Protocol, wl: &Workload) -> io::Result<Prefill> {
    let n = wl.prefill_keys();
    let start = Instant::now();
    if n == 0 {
        return Ok(Prefill::default());
    }
    let conns = 4u64.min(n);
    let errors = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|t| {
                s.spawn(move || -> io::Result<u64> {
                    let mut c = Blocking::connect(addr, protocol)?;
                    let mut gen = Generator::new(wl, 1000 + t);
                    let ids: Vec<u64> = (0..n).rev().filter(|id| id % conns == t).collect();
                    let mut errors = 0;
                    let mut key = Vec::new();
                    let mut out = Vec::new();
                    for batch in ids.chunks(256) {
                        out.clear();
                        for &id in batch {
                            wl.key(id, &mut key);
                            let v = gen.value();
                            match protocol {
                                Protocol::Memcached => proto::mc_set(&mut out, &key, v),
                                Protocol::Redis => proto::resp_set(&mut out, &key, v),
                            }
                        }
                        c.stream.stream.write_all(&out)?;
                        for _ in batch {
                            let (_, r) = c.reply(None)?;
                            errors += (!r.stored) as u64;
                        }
                    }
                    Ok(errors)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| io::Error::other("prefill thread panicked"))?
            })
            .sum::<io::Result<u64>>()
    })?;
    Ok(Prefill {
        keys: n,
        errors,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The process id the server at `addr` reports (memcached `stats`: `STAT pid`;
/// Redis `INFO server`: `process_id`), or None when it reports none (a null
/// server's canned `ERROR`).
pub fn server_pid(addr: SocketAddr, protocol: Protocol) -> io::Result<Option<u32>> {
    let mut c = ReplyStream::connect(addr, Duration::from_secs(5), 16 * 1024)?;
    let (request, field): (&[u8], &str) = match protocol {
        Protocol::Memcached => (b"stats\r\n", "STAT pid "),
        Protocol::Redis => (b"INFO server\r\n", "process_id:"),
    };
    c.stream.write_all(request)?;
    let text =
        c.reply(|buf| Ok(whole_info_reply(buf, protocol).map(|n| (n, buf[..n].to_vec()))))?;
    let text = String::from_utf8_lossy(&text);
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|pid| pid.trim().parse().ok()))
}

/// The length of the complete `stats` / `INFO` reply (or error line) at the
/// front of `buf`, if it has all arrived.
fn whole_info_reply(buf: &[u8], protocol: Protocol) -> Option<usize> {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
    };
    let first = line_end(0)?;
    match (protocol, buf[0]) {
        (Protocol::Memcached, b'S') => {
            // STAT lines up to END.
            let mut at = 0;
            while let Some(next) = line_end(at) {
                if &buf[at..next] == b"END\r\n" {
                    return Some(next);
                }
                at = next;
            }
            None
        }
        (Protocol::Redis, b'$') => {
            let len: usize = std::str::from_utf8(&buf[1..first - 2]).ok()?.parse().ok()?;
            let end = first + len + 2;
            (buf.len() >= end).then_some(end)
        }
        // A one-line answer: END (no stats), ERROR, -ERR ...
        _ => Some(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A one-shot server that reads one request and answers `reply`.
    fn answering(reply: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).unwrap();
            // In two parts: the reader must wait for the whole reply.
            let (head, tail) = reply.split_at(reply.len() / 2);
            s.write_all(head).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(tail).unwrap();
        });
        addr
    }

    #[test]
    fn reads_the_pid_a_memcached_server_reports() {
        let addr = answering(b"STAT pid 4242\r\nSTAT uptime 7\r\nEND\r\n");
        assert_eq!(server_pid(addr, Protocol::Memcached).unwrap(), Some(4242));
    }

    #[test]
    fn reads_the_pid_a_redis_server_reports() {
        let addr = answering(b"$44\r\n# Server\r\nredis_version:7.0\r\nprocess_id:77\r\n\r\n");
        assert_eq!(server_pid(addr, Protocol::Redis).unwrap(), Some(77));
    }

    #[test]
    fn a_server_without_stats_reports_no_pid() {
        let addr = answering(b"ERROR\r\n");
        assert_eq!(server_pid(addr, Protocol::Memcached).unwrap(), None);
    }
}
