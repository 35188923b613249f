//! The load engine: one pinned thread per client CPU, each with its own io_uring
//! driving its share of the connections.
//!
//! Per connection there is at most one outstanding `recv` (into the connection's
//! own buffer) and one outstanding `send` (carrying every request generated since
//! the last send). Each loop turn generates requests, submits, and waits for at
//! least one completion or the next open-loop deadline in a single
//! `io_uring_enter`. The ring uses SINGLE_ISSUER + DEFER_TASKRUN when the kernel
//! has them, so the client spends as little CPU per request as the server under test.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use corecache::keyhash::{key_hash, owner};

use crate::proto::{self, Protocol, Reply};
use crate::recorder::{Pacer, Recorder};
use crate::workload::{Generator, Op, Workload};

/// How to drive one run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub workload: Workload,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Open loop at this total rate (requests/s over all connections); closed loop if None.
    pub rate: Option<f64>,
    /// Open loop: exponential inter-arrival times instead of a fixed interval.
    pub poisson: bool,
    pub warmup: Duration,
    pub duration: Duration,
    /// One load thread per listed CPU, pinned there.
    pub client_cpus: Vec<usize>,
    pub seed: u64,
    /// Smart-client routing (corecache's per-core ports): None sends every
    /// request to `addr`.
    pub routing: Option<CoreRouting>,
}

/// A smart client's view of corecache started with `--core-ports BASE -t CORES`:
/// core `c` listens on `BASE + c`, and a key belongs to core
/// `owner(key_hash(key), CORES)` (the server's own function). Connection `i`
/// goes to core `i % CORES` and asks only for keys that core owns, so no request
/// is forwarded between cores.
#[derive(Clone, Copy, Debug)]
pub struct CoreRouting {
    pub base_port: u16,
    pub cores: usize,
}

impl CoreRouting {
    /// The address and core of connection `i`.
    fn connection(&self, addr: SocketAddr, i: usize) -> (SocketAddr, usize) {
        let core = i % self.cores;
        (
            SocketAddr::new(addr.ip(), self.base_port + core as u16),
            core,
        )
    }
}

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const RBUF_INITIAL: usize = 64 * 1024;

struct Pending {
    op: Op,
    sched_ns: u64,
    /// Keys asked for (gets); their bytes are the next `nkeys * klen` bytes of
    /// `Conn::inflight_keys`.
    nkeys: u32,
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
    recv_armed: bool,
    /// Requests generated while a send is in flight.
    out: Vec<u8>,
    /// The buffer the in-flight send reads from; untouched until it completes.
    sending: Vec<u8>,
    sent: usize,
    send_armed: bool,
    pending: VecDeque<Pending>,
    inflight_keys: VecDeque<u8>,
    /// Cache-aside: keys a get missed, to be set next.
    followups: VecDeque<u64>,
    /// With core routing, the core this connection goes to: it asks only for
    /// keys that core owns.
    core: Option<usize>,
    pacer: Option<Pacer>,
    dead: bool,
}

/// Draws the next key of the workload into `key`; with core routing, the next
/// one that `core` owns (the draws of other cores' keys are skipped, so each
/// core sees the workload's distribution over the keys it owns). That costs
/// about `cores` draws per key: at 8 cores, check the run's client CPU.
fn draw_key(
    gen: &mut Generator,
    wl: &Workload,
    routing: Option<CoreRouting>,
    core: Option<usize>,
    key: &mut Vec<u8>,
) {
    loop {
        wl.key(gen.key_id(), key);
        match (routing, core) {
            (Some(r), Some(c)) if owner(key_hash(key), r.cores) != c => continue,
            _ => return,
        }
    }
}

/// Monotonic nanoseconds since the run's common start.
fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

/// Connects `conns` sockets, runs the load and returns the merged results of all
/// threads. `at_window` is called on the calling thread at the start and at the end
/// of the measurement window (after warm-up): it reads CPU counters there.
pub fn run(spec: &LoadSpec, mut at_window: impl FnMut(bool)) -> io::Result<Recorder> {
    let threads = spec.client_cpus.len().max(1);
    let conns = spec.workload.conns.max(1);
    let mut per_thread: Vec<Vec<(TcpStream, Option<usize>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    for i in 0..conns {
        let (addr, core) = match spec.routing {
            None => (spec.addr, None),
            Some(r) => {
                let (addr, core) = r.connection(spec.addr, i);
                (addr, Some(core))
            }
        };
        let s = TcpStream::connect(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("connect {addr} (connection {}): {e}", i + 1),
            )
        })?;
        s.set_nodelay(true)?;
        per_thread[i % threads].push((s, core));
    }
    let warm_ns = spec.warmup.as_nanos() as u64;
    let end_ns = warm_ns + spec.duration.as_nanos() as u64;
    let base = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(t, streams)| {
                let cpu = spec.client_cpus.get(t).copied();
                scope.spawn(move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            eprintln!("warning: could not pin load thread {t} to CPU {cpu}");
                        }
                    }
                    let seed = spec.seed.wrapping_add(t as u64 * 0x9e37_79b9);
                    Worker::new(spec, streams, base, warm_ns, end_ns, seed)?.run()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_nanos(warm_ns.saturating_sub(now_ns(base))));
        at_window(true);
        std::thread::sleep(Duration::from_nanos(end_ns.saturating_sub(now_ns(base))));
        at_window(false);
        let mut total = Recorder::new(warm_ns, end_ns);
        for h in handles {
            let r = h
                .join()
                .map_err(|_| io::Error::other("load thread panicked"))??;
            total.merge(&r);
        }
        Ok(total)
    })
}

struct Worker<'a> {
    spec: &'a LoadSpec,
    ring: IoUring,
    conns: Vec<Conn>,
    gen: Generator,
    rec: Recorder,
    base: Instant,
    end_ns: u64,
    klen: usize,
    /// Digits of the key id at the end of each key (cache-aside reads ids back).
    id_digits: usize,
    key: Vec<u8>,
    keys_scratch: Vec<u8>,
    /// Ops submitted to the kernel and not yet completed.
    in_kernel: usize,
}

impl<'a> Worker<'a> {
    fn new(
        spec: &'a LoadSpec,
        streams: Vec<(TcpStream, Option<usize>)>,
        base: Instant,
        warm_ns: u64,
        end_ns: u64,
        seed: u64,
    ) -> io::Result<Worker<'a>> {
        let entries = (2 * streams.len() + 16).next_power_of_two() as u32;
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(entries * 2)
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(entries * 2).build(entries))?;
        let mut gen = Generator::new(&spec.workload, seed);
        let per_conn_rate = spec.rate.map(|r| r / spec.workload.conns.max(1) as f64);
        let conns = streams
            .into_iter()
            .map(|(stream, core)| {
                // Random phase, so connections of one thread do not fire together.
                let pacer = per_conn_rate.map(|r| {
                    let phase = gen.rng.below((1e9 / r) as u64 + 1);
                    Pacer::new(phase, r, spec.poisson)
                });
                Conn {
                    stream,
                    rbuf: vec![0; RBUF_INITIAL],
                    rlen: 0,
                    recv_armed: false,
                    out: Vec::with_capacity(16 * 1024),
                    sending: Vec::with_capacity(16 * 1024),
                    sent: 0,
                    send_armed: false,
                    pending: VecDeque::new(),
                    inflight_keys: VecDeque::new(),
                    followups: VecDeque::new(),
                    core,
                    pacer,
                    dead: false,
                }
            })
            .collect();
        let mut key = Vec::new();
        spec.workload.key(0, &mut key);
        Ok(Worker {
            spec,
            ring,
            conns,
            gen,
            rec: Recorder::new(warm_ns, end_ns),
            base,
            end_ns,
            klen: key.len(),
            id_digits: key.len() - spec.workload.key_prefix.len(),
            key,
            keys_scratch: Vec::new(),
            in_kernel: 0,
        })
    }

    fn push(&mut self, e: squeue::Entry) -> io::Result<()> {
        // SAFETY: every buffer an entry points to lives in a `Conn` that is neither
        // moved nor freed (nor its buffer touched) until the op completes; see `run`'s
        // shutdown, which waits for all in-kernel ops before dropping anything.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit()?;
        }
        self.in_kernel += 1;
        Ok(())
    }

    fn arm_recv(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        if c.rbuf.len() - c.rlen < RBUF_INITIAL / 4 {
            let n = c.rbuf.len() * 2;
            c.rbuf.resize(n, 0);
        }
        let fd = types::Fd(c.stream.as_raw_fd());
        let ptr = c.rbuf[c.rlen..].as_mut_ptr();
        let len = (c.rbuf.len() - c.rlen) as u32;
        c.recv_armed = true;
        let e = opcode::Recv::new(fd, ptr, len)
            .build()
            .user_data(((i as u64) << 2) | OP_RECV);
        self.push(e)
    }

    fn arm_send(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let fd = types::Fd(c.stream.as_raw_fd());
        let ptr = c.sending[c.sent..].as_ptr();
        let len = (c.sending.len() - c.sent) as u32;
        c.send_armed = true;
        let e = opcode::Send::new(fd, ptr, len)
            .build()
            .user_data(((i as u64) << 2) | OP_SEND);
        self.push(e)
    }

    /// Appends one request to connection `i`'s output, scheduled at `sched_ns`.
    fn issue(&mut self, i: usize, sched_ns: u64) {
        let wl = &self.spec.workload;
        let c = &mut self.conns[i];
        let (op, nkeys) = if let Some(id) = c.followups.pop_front() {
            wl.key(id, &mut self.key);
            let v = self.gen.value();
            match self.spec.protocol {
                Protocol::Memcached => proto::mc_set(&mut c.out, &self.key, v),
                Protocol::Redis => proto::resp_set(&mut c.out, &self.key, v),
            }
            (Op::Set, 0)
        } else {
            match self.gen.op() {
                Op::Set => {
                    draw_key(&mut self.gen, wl, self.spec.routing, c.core, &mut self.key);
                    let v = self.gen.value();
                    match self.spec.protocol {
                        Protocol::Memcached => proto::mc_set(&mut c.out, &self.key, v),
                        Protocol::Redis => proto::resp_set(&mut c.out, &self.key, v),
                    }
                    (Op::Set, 0)
                }
                Op::Get => {
                    let n = wl.multiget.max(1);
                    self.keys_scratch.clear();
                    for _ in 0..n {
                        draw_key(&mut self.gen, wl, self.spec.routing, c.core, &mut self.key);
                        self.keys_scratch.extend_from_slice(&self.key);
                    }
                    let keys = self.keys_scratch.chunks_exact(self.klen);
                    match self.spec.protocol {
                        Protocol::Memcached => proto::mc_get(&mut c.out, keys),
                        Protocol::Redis => {
                            let v: Vec<&[u8]> = keys.collect();
                            proto::resp_get(&mut c.out, &v)
                        }
                    }
                    c.inflight_keys.extend(self.keys_scratch.iter().copied());
                    (Op::Get, n as u32)
                }
            }
        };
        c.pending.push_back(Pending {
            op,
            sched_ns,
            nkeys,
        });
    }

    /// Tops connection `i` up to the pipeline depth (closed loop) or issues the
    /// requests that are due (open loop), and starts a send if none is in flight.
    /// Returns the next open-loop deadline of this connection, if any.
    fn fill(&mut self, i: usize, now: u64) -> io::Result<Option<u64>> {
        if self.conns[i].dead {
            return Ok(None);
        }
        let depth = self.spec.pipeline.max(1);
        let mut next = None;
        while self.conns[i].pending.len() < depth {
            let sched = match self.conns[i].pacer.as_mut() {
                None => now,
                Some(p) => match p.due(now, &mut self.gen.rng) {
                    Some(t) => t,
                    None => {
                        next = Some(p.next_ns());
                        break;
                    }
                },
            };
            self.issue(i, sched);
        }
        let c = &mut self.conns[i];
        if !c.send_armed && !c.out.is_empty() {
            std::mem::swap(&mut c.out, &mut c.sending);
            c.out.clear();
            c.sent = 0;
            self.arm_send(i)?;
        }
        Ok(next)
    }

    fn conn_failed(&mut self, i: usize, why: &str) {
        let c = &mut self.conns[i];
        if !c.dead {
            c.dead = true;
            self.rec.conn_errors += 1;
            if self.rec.conn_errors <= 3 {
                eprintln!("connection error: {why}");
            }
        }
    }

    /// Parses every complete reply in connection `i`'s buffer.
    fn on_data(&mut self, i: usize, now: u64) {
        let proto = self.spec.protocol;
        let klen = self.klen;
        let cache_aside = self.spec.workload.cache_aside;
        let id_digits = self.id_digits;
        let c = &mut self.conns[i];
        let mut off = 0;
        let mut failure = None;
        while let Some(p) = c.pending.front() {
            let buf = &c.rbuf[off..c.rlen];
            let nk = p.nkeys as usize;
            let parsed = match (proto, p.op) {
                (Protocol::Memcached, Op::Get) => {
                    let keys = c.inflight_keys.make_contiguous();
                    proto::mc_parse_get(buf, &keys[..nk * klen], klen)
                }
                (Protocol::Memcached, Op::Set) => proto::mc_parse_store(buf),
                (Protocol::Redis, _) => proto::resp_parse(buf),
            };
            let (n, r): (usize, Reply) = match parsed {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e.0);
                    break;
                }
            };
            off += n;
            let p = c.pending.pop_front().unwrap();
            let counted = self.rec.record(p.sched_ns, now);
            if p.op == Op::Get {
                let hits = r.hits.min(p.nkeys) as u64;
                if cache_aside {
                    for k in 0..nk.min(64) {
                        if r.hit_mask & (1 << k) == 0 && !r.error {
                            let key = c.inflight_keys.range(k * klen..(k + 1) * klen);
                            let id = key
                                .skip(klen - id_digits)
                                .fold(0u64, |a, &d| a * 10 + (d - b'0') as u64);
                            c.followups.push_back(id);
                        }
                    }
                }
                c.inflight_keys.drain(..nk * klen);
                if counted {
                    self.rec.gets += 1;
                    self.rec.keys += p.nkeys as u64;
                    self.rec.hits += hits;
                    self.rec.misses += p.nkeys as u64 - hits;
                }
            } else if counted {
                self.rec.sets += 1;
                if !r.stored && !r.error {
                    self.rec.errors += 1;
                }
            }
            if counted {
                self.rec.errors += r.error as u64;
                self.rec.key_mismatches += r.key_mismatch as u64;
            }
        }
        if failure.is_none() && c.pending.is_empty() && off < c.rlen {
            failure = Some(format!(
                "{} unexpected bytes with no request in flight",
                c.rlen - off
            ));
        }
        c.rbuf.copy_within(off..c.rlen, 0);
        c.rlen -= off;
        if let Some(f) = failure {
            self.conn_failed(i, &f);
        }
    }

    fn run(mut self) -> io::Result<Recorder> {
        for i in 0..self.conns.len() {
            self.arm_recv(i)?;
        }
        let mut completions = Vec::with_capacity(256);
        loop {
            let now = now_ns(self.base);
            if now >= self.end_ns {
                break;
            }
            let mut deadline = self.end_ns.min(now + 10_000_000);
            for i in 0..self.conns.len() {
                if let Some(t) = self.fill(i, now)? {
                    deadline = deadline.min(t);
                }
            }
            if self.conns.iter().all(|c| c.dead) {
                break;
            }
            let wait = deadline.saturating_sub(now).max(1);
            let ts = types::Timespec::new()
                .sec(wait / 1_000_000_000)
                .nsec((wait % 1_000_000_000) as u32);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            completions.clear();
            completions.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
            let now = now_ns(self.base);
            for &(ud, res) in &completions {
                self.in_kernel -= 1;
                let i = (ud >> 2) as usize;
                match ud & 3 {
                    OP_RECV => {
                        self.conns[i].recv_armed = false;
                        if res <= 0 {
                            let why = if res == 0 {
                                "server closed the connection".to_string()
                            } else {
                                format!("recv: {}", io::Error::from_raw_os_error(-res))
                            };
                            self.conn_failed(i, &why);
                            continue;
                        }
                        self.conns[i].rlen += res as usize;
                        self.on_data(i, now);
                        if !self.conns[i].dead {
                            self.arm_recv(i)?;
                        }
                    }
                    OP_SEND => {
                        let c = &mut self.conns[i];
                        c.send_armed = false;
                        if res < 0 {
                            self.conn_failed(
                                i,
                                &format!("send: {}", io::Error::from_raw_os_error(-res)),
                            );
                            continue;
                        }
                        c.sent += res as usize;
                        if c.sent < c.sending.len() && !c.dead {
                            self.arm_send(i)?;
                        }
                    }
                    _ => unreachable!(),
                }
            }
        }
        self.shutdown();
        Ok(self.rec)
    }

    /// Shuts the sockets down so outstanding recvs complete, then waits for every
    /// op still in the kernel: the buffers they point to must outlive them.
    fn shutdown(&mut self) {
        for c in &self.conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        let give_up = Instant::now() + Duration::from_secs(2);
        while self.in_kernel > 0 && Instant::now() < give_up {
            let ts = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let n = self.ring.completion().count();
            self.in_kernel -= n;
        }
        if self.in_kernel > 0 {
            // Never free memory the kernel may still write to.
            eprintln!(
                "warning: {} io_uring ops did not finish; leaking their buffers",
                self.in_kernel
            );
            std::mem::forget(std::mem::take(&mut self.conns));
        }
    }
}
