//! One core: its event loop, its connections and its shard.
//!
//! A loop turn: submit and wait; handle every completion (accepts, received
//! bytes, finished sends); serve the batches other cores sent; send this turn's
//! batches to other cores; send each connection's replies in one send; reap a
//! few expired items; publish figures for `stats`.

use super::connection::{Closing, Connection, PendingGet};
use super::execute::{null_reply, Executor};
use super::listener::CoreListeners;
use super::reactor::{EndReason, Event, Reactor};
use super::routing::{
    decode_get_fragment, encode_get_fragment, ItemKind, Mailbox, Message, Outbox,
};
use super::{admin, unix_now, Shared};
use crate::keyhash::{key_hash, owner};
use crate::protocol::{self, reply, GetKind, Keys, ParseLimits, Parsed, Request, Unlink};
use crate::storage::{MemoryFile, Shard, ShardConfig, WarmStart};
use socket2::Socket;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The loop wakes at least this often to advance the clock, reap expired
/// items and notice a shutdown.
const TICK: Duration = Duration::from_millis(100);
/// Expired items freed per loop turn, so reaping never stalls requests.
const REAP_BUDGET: usize = 64;
/// How long a connection's ready replies may wait for those other cores still
/// owe it, and the ready bytes past which they go anyway
/// (`CoreState::send_replies`).
const HOLD_TIME: Duration = Duration::from_micros(500);
const HOLD_BYTES: usize = 64 << 10;
/// Pipelined requests whose keys are prefetched before the first is served.
const PREFETCH_DEPTH: usize = 16;
/// Bytes of a new read that join a connection's leftover input before it is
/// served (`CoreState::serve_after_leftover`): a split request of up to about
/// this size is completed without copying the rest of the read.
const SPLIT_REQUEST_REACH: usize = 1024;
/// Keys of a receive's request loaded ahead of its batch, at most
/// (`CoreState::preview`; a multi-get's first ones).
const PREVIEW_KEYS: usize = 16;
/// Keys prefetched per window, at most (a window of multi-gets holds many).
const PREFETCH_KEYS: usize = 256;
/// How long a shutdown waits for replies owed before closing anyway.
const DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// How long a listener rests after a failed accept (no file descriptor free,
/// a socket no longer listening), unless one of the core's connections closes
/// first (memcached, out of descriptors, looks again every 10 ms once a
/// connection has closed). Re-armed at once, the failing accept spun the
/// core. A failed accept is logged at most once per `ACCEPT_WARNING_INTERVAL`.
const ACCEPT_REST: Duration = Duration::from_millis(10);
/// Each rest that ends in another failure doubles the next, up to this: a
/// listener that stays broken (destroyed from outside) costs a try a second.
const ACCEPT_REST_MAX: Duration = Duration::from_secs(1);
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

// Connection tokens: | generation: 32 bits | slot: 24 bits |
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Work for the reactor decided while it was handing out completions.
enum Action {
    Receive(u64),
    Accept(usize),
    Cancel(u64),
}

/// Everything a core owns besides its ring.
struct CoreState {
    index: usize,
    shared: Arc<Shared>,
    shard: Shard,
    /// Boxed: a connection is taken out of its slot for every completion and
    /// every reply another core sends it, and put back after; moving the
    /// whole struct (some 250 bytes) each way showed in the profile.
    connections: Vec<Option<Box<Connection>>>,
    generations: Vec<u32>,
    free_slots: Vec<usize>,
    dirty: Vec<u64>,
    actions: Vec<Action>,
    outbox: Outbox,
    /// Replies other cores owe this one (forwarded requests not yet answered).
    replies_owed: usize,
    /// This core's listening sockets, by listener number; `None` once closed
    /// in a shutdown.
    listeners: Vec<Option<Socket>>,
    /// Listeners resting after a failed accept, and since when
    /// (`ACCEPT_REST`); new connections wait in their backlogs meanwhile.
    resting_listeners: Vec<usize>,
    resting_since: Instant,
    /// How long the current rest lasts (`ACCEPT_REST`, doubling).
    accept_rest: Duration,
    /// When the last failed accept was logged.
    accept_warned_at: Option<Instant>,
    /// Accepts have failed since the last one that succeeded: one pause in
    /// `listen_disabled_num`, however many tries it takes.
    accepts_failing: bool,
    limits: ParseLimits,
    now: u32,
    /// When this loop turn began (after its wait).
    turn_started: Instant,
    memory_limit_seen: u64,
    draining: bool,
    slabs_published_at: u32,
    /// The routes of the window being served (kept to reuse its allocation).
    routes: Vec<Route>,
    /// Hashes of this core's keys in the receives shown ahead of this batch of
    /// completions, whose buckets are loading (`preview`).
    arriving: Vec<u64>,
}

/// A key's hash and the core that owns it, computed once per key: prefetching,
/// routing and the shard's lookup all use it (the jump hash that picks the
/// owner costs more than the key hash on many cores).
#[derive(Clone, Copy)]
struct Route {
    hash: u64,
    owner: usize,
}

pub fn run_core(
    index: usize,
    shared: Arc<Shared>,
    listeners: CoreListeners,
    ready: Sender<Result<(), String>>,
) -> Result<(), String> {
    let cpu = shared.config.cpus[index];
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        tracing::warn!("core {index}: could not pin to CPU {cpu}");
    }
    let setup = || -> Result<(Reactor, Shard), String> {
        let reactor = Reactor::new().map_err(|e| format!("core {index}: {e}"))?;
        let config = &shared.config;
        let mut shard_config =
            ShardConfig::new(config.memory_limit / config.cores(), config.max_item_size);
        shard_config.growth_factor = config.growth_factor;
        shard_config.min_chunk_size = config.min_chunk_size;
        shard_config.use_cas = config.use_cas;
        shard_config.huge_pages = config.large_pages;
        let shard = match &config.memory_file {
            None => Shard::new(shard_config)
                .map_err(|e| format!("core {index}: mapping the shard's memory: {e}"))?,
            Some(base) => open_memory_file(index, config.cores(), base, shard_config)?,
        };
        Ok((reactor, shard))
    };
    let (mut reactor, shard) = match setup() {
        Ok(parts) => parts,
        Err(e) => {
            let _ = ready.send(Err(e.clone()));
            return Err(e);
        }
    };
    shared.ring_fds[index].store(reactor.ring_fd(), Ordering::SeqCst);
    for (i, socket) in listeners.sockets.iter().enumerate() {
        reactor.accept(socket.as_raw_fd(), i as u64);
    }
    let _ = ready.send(Ok(()));

    let cores = shared.cores();
    let mut state = CoreState {
        index,
        limits: ParseLimits {
            max_item_size: shared.config.max_item_size,
        },
        shard,
        connections: Vec::new(),
        generations: Vec::new(),
        free_slots: Vec::new(),
        dirty: Vec::new(),
        actions: Vec::new(),
        outbox: Outbox::new(cores),
        replies_owed: 0,
        listeners: listeners.sockets.into_iter().map(Some).collect(),
        resting_listeners: Vec::new(),
        resting_since: Instant::now(),
        accept_rest: ACCEPT_REST,
        accept_warned_at: None,
        accepts_failing: false,
        now: unix_now(),
        turn_started: Instant::now(),
        memory_limit_seen: 0,
        draining: false,
        slabs_published_at: 0,
        routes: Vec::new(),
        arriving: Vec::new(),
        shared,
    };
    // A warm restart brings items back before the first request: `stats` on
    // any core must see every core's figures from the start, so no core serves
    // until all have published once.
    state.publish();
    state.publish_slabs();
    state.publish_receive_buffers(&reactor);
    state.shared.cores_published.fetch_add(1, Ordering::SeqCst);
    while state.shared.cores_published.load(Ordering::SeqCst) < cores
        && !state.shared.shutdown.load(Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut drain_started: Option<Instant> = None;
    let mut reported_drained = false;
    let shared = Arc::clone(&state.shared);
    let mailbox = &shared.mailboxes[index];
    loop {
        // Replies other cores owe come within their turn: with
        // `--reply-spin-us`, look for them awake a while before blocking,
        // which costs a context switch here and a wake-up there.
        let reply_spin = state.shared.config.reply_spin;
        if !reply_spin.is_zero() && state.replies_owed > 0 && !mailbox.has_mail() {
            if let Err(e) = reactor.collect() {
                return Err(format!("core {index}: io_uring submit failed: {e}"));
            }
            // Sends that completed as they were submitted are work already:
            // no poll then.
            if !reactor.work_pending() {
                let counters = &state.shared.published[index].counters;
                counters.reply_polls.incr();
                if poll_for_work(&mut reactor, mailbox, reply_spin) {
                    counters.reply_polls_answered.incr();
                }
            }
        }
        // Batches queued already are served without blocking (the cores that
        // sent them did not wake this one: it was busy).
        let waited = if mailbox.prepare_to_wait() {
            // A resting listener is tried again after its rest, not at the
            // next tick, on an idle core too.
            let timeout = if state.resting_listeners.is_empty() {
                TICK
            } else {
                state.accept_rest.min(TICK)
            };
            let waited = reactor.submit_and_wait(timeout);
            mailbox.stop_waiting();
            waited
        } else {
            reactor.collect()
        };
        if let Err(e) = waited {
            return Err(format!("core {index}: io_uring wait failed: {e}"));
        }
        state.now = unix_now();
        state.turn_started = Instant::now();
        state.published().counters.loop_turns.incr();
        state.apply_gates();
        reactor.dispatch(|event| state.handle(event));
        state.serve_mailbox();
        state.post_batches(&mut reactor);
        state.perform_actions(&mut reactor);
        state.send_replies(&mut reactor);
        state.shard.reap_expired(state.now, REAP_BUDGET);
        state.publish();
        state.publish_slabs();
        state.publish_receive_buffers(&reactor);

        if state.shared.shutdown.load(Ordering::Relaxed) {
            let started = *drain_started.get_or_insert_with(|| {
                state.begin_drain(&mut reactor);
                Instant::now()
            });
            let idle = state.connections.iter().flatten().all(|c| c.idle());
            if !reported_drained && (idle || started.elapsed() > DRAIN_DEADLINE) {
                reported_drained = true;
                state.shared.drained.fetch_add(1, Ordering::SeqCst);
            }
            // Keep serving other cores' batches until every core is done,
            // and leave only with the ports free.
            let listening = state.listeners.iter().any(Option::is_some);
            if (state.shared.drained.load(Ordering::SeqCst) == cores && !listening)
                || started.elapsed() > DRAIN_DEADLINE * 2
            {
                close_shard(index, state.shard);
                return Ok(());
            }
        }
    }
}

/// Polls, for up to `budget`, for what would end a wait: a batch from another
/// core or a completion. Returns whether one came.
fn poll_for_work(reactor: &mut Reactor, mailbox: &Mailbox, budget: Duration) -> bool {
    let started = Instant::now();
    loop {
        if mailbox.has_mail() || reactor.work_pending() {
            return true;
        }
        if started.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// Whether an accept failed because this process or the system has no file
/// descriptor left for the new socket.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    [Errno::EMFILE, Errno::ENFILE]
        .iter()
        .any(|&errno| error.raw_os_error() == Some(errno as i32))
}

/// The shard of core `index` in its memory file `base.<index>`, with its items
/// back if the last shutdown was clean (warm restart).
fn open_memory_file(
    index: usize,
    cores: usize,
    base: &std::path::Path,
    config: ShardConfig,
) -> Result<Shard, String> {
    let file = MemoryFile::for_core(base, index, cores);
    let path = file.path.display();
    let (shard, start) = Shard::open(config, &file, unix_now())
        .map_err(|e| format!("core {index}: memory file {path}: {e}"))?;
    match start {
        WarmStart::New => tracing::info!("core {index}: new memory file {path}"),
        WarmStart::Restored { items } => {
            tracing::info!("core {index}: warm restart: {items} items back from {path}")
        }
        WarmStart::Empty { reason } => {
            tracing::warn!("core {index}: memory file {path} discarded, starting empty: {reason}")
        }
    }
    Ok(shard)
}

/// Clean shutdown of the shard: a memory file is saved and marked clean.
fn close_shard(index: usize, shard: Shard) {
    match shard.close() {
        Ok(true) => tracing::info!("core {index}: memory file saved"),
        Ok(false) => {}
        Err(e) => tracing::warn!("core {index}: saving the memory file failed: {e}"),
    }
}

impl CoreState {
    fn token(&self, slot: usize) -> u64 {
        ((self.generations[slot] as u64) << SLOT_BITS) | slot as u64
    }

    fn slot_of(&self, token: u64) -> Option<usize> {
        let slot = (token & SLOT_MASK) as usize;
        let live = self.generations.get(slot).copied() == Some((token >> SLOT_BITS) as u32)
            && self.connections[slot].is_some();
        live.then_some(slot)
    }

    /// Picks up `cache_memlimit` changes made on any core.
    fn apply_gates(&mut self) {
        if let Some(limit) = self
            .shared
            .memory_limit
            .changed_since(&mut self.memory_limit_seen)
        {
            let bytes = limit as usize / self.shared.cores();
            if !self.shard.set_memory_limit(bytes) {
                tracing::warn!(
                    "core {}: cache_memlimit refused: {bytes} bytes per core is more than \
                     the memory file holds; keeping the old limit",
                    self.index
                );
            }
        }
    }

    fn handle(&mut self, event: Event<'_>) {
        match event {
            Event::Accepted {
                listener,
                socket,
                more,
            } => {
                let listener = listener as usize;
                // An accept that ended is re-armed through `perform_actions`,
                // which closes the socket instead once the drain has begun
                // (the ring holds it no more: `begin_drain` cancelled it).
                match socket {
                    Ok(socket) => {
                        if !more {
                            self.actions.push(Action::Accept(listener));
                        }
                        self.accepts_failing = false;
                        self.open_connection(socket);
                    }
                    Err(e) if more => tracing::debug!("accept failed: {e}"),
                    Err(_) if self.draining => self.actions.push(Action::Accept(listener)),
                    // A failed accept is not re-armed at once: it would
                    // likely fail again at once (no descriptor free, a socket
                    // no longer listening), and the core would spin.
                    Err(e) => self.rest_listener(listener, &e),
                }
            }
            Event::Received { conn, data, more } => {
                let Some(slot) = self.slot_of(conn) else {
                    return;
                };
                self.published().counters.bytes_read.add(data.len() as u64);
                let mut connection = self.connections[slot].take().expect("live slot");
                if !more {
                    connection.receiving = false;
                }
                self.receive(&mut connection, conn, data);
                self.after_io(slot, conn, connection);
            }
            Event::ReceiveEnded { conn, reason, more } => {
                let Some(slot) = self.slot_of(conn) else {
                    return;
                };
                let mut connection = self.connections[slot].take().expect("live slot");
                if !more {
                    connection.receiving = false;
                }
                match reason {
                    // Buffers come back every turn; a cancel was ours: both
                    // re-arm (or not) in `after_io` as the connection wants.
                    EndReason::OutOfBuffers | EndReason::Cancelled => {}
                    // Answer what was asked, then close. A paused connection
                    // still holds requests it has not served: they are served
                    // once its replies drain, and the receive then re-armed
                    // sees the end of the stream again.
                    EndReason::EndOfStream if connection.paused => {}
                    EndReason::EndOfStream => connection.close(Closing::AfterReplies),
                    EndReason::Error(e) => {
                        tracing::debug!("receive error: {e}");
                        connection.close(Closing::Now);
                    }
                }
                self.after_io(slot, conn, connection);
            }
            Event::Sent {
                conn,
                buffer,
                result,
            } => {
                let Some(slot) = self.slot_of(conn) else {
                    return;
                };
                let mut connection = self.connections[slot].take().expect("live slot");
                connection.sending = false;
                connection.return_buffer(buffer);
                if let Err(e) = result {
                    tracing::debug!("send error: {e}");
                    connection.close(Closing::Now);
                }
                self.resume_if_drained(&mut connection, conn);
                self.after_io(slot, conn, connection);
            }
            Event::Woken => {}
            Event::Arriving { conn, data } => self.preview(conn, data),
            Event::ArrivalsShown => {
                self.shard.prefetch_items(self.arriving.drain(..));
            }
        }
    }

    /// Starts loading the index buckets of the keys of `data`, a receive this
    /// batch will serve, if it holds one whole request and the connection will
    /// serve it from its first byte. One request per receive (no pipelining)
    /// gets no window to prefetch in (`serve_windows`); this way the receives
    /// of a batch, from many connections, overlap their misses instead.
    fn preview(&mut self, conn: u64, data: &[u8]) {
        if self.shared.config.null {
            return;
        }
        let Some(slot) = self.slot_of(conn) else {
            return;
        };
        let connection = self.connections[slot].as_ref().expect("live slot");
        let fresh = connection.closing == Closing::Open
            && !connection.paused
            && connection.input.is_empty()
            && connection.swallow == 0
            && connection.pending_get.is_none();
        if !fresh {
            return;
        }
        let Parsed::Request { request, consumed } = protocol::parse(data, &self.limits) else {
            return;
        };
        if consumed < data.len() {
            // Pipelined requests: their window prefetches them all together.
            return;
        }
        let first = self.arriving.len();
        for key in request.keys().take(PREVIEW_KEYS) {
            self.preview_key(key);
        }
        self.shard
            .prefetch_buckets(self.arriving[first..].iter().copied());
    }

    fn preview_key(&mut self, key: &[u8]) {
        let route = self.route(key);
        if route.owner == self.index {
            self.arriving.push(route.hash);
        }
    }

    fn published(&self) -> &super::stats::CorePublished {
        &self.shared.published[self.index]
    }

    fn open_connection(&mut self, socket: std::os::fd::OwnedFd) {
        let counters = &self.shared.published[self.index].counters;
        let open = self.shared.curr_connections.fetch_add(1, Ordering::SeqCst);
        let mut connection = Box::new(Connection::new(
            socket,
            super::connection::held_reply_limit(self.shared.config.max_item_size),
        ));
        let rejected = open >= self.shared.config.max_connections || self.draining;
        if rejected {
            counters.rejected_connections.incr();
            connection
                .reply_buffer()
                .extend_from_slice(reply::TOO_MANY_CONNECTIONS);
            connection.close(Closing::AfterReplies);
        } else {
            counters.total_connections.incr();
            connection.receiving = true;
        }
        let slot = self.free_slots.pop().unwrap_or_else(|| {
            self.connections.push(None);
            self.generations.push(0);
            self.connections.len() - 1
        });
        self.connections[slot] = Some(connection);
        let token = self.token(slot);
        if !rejected {
            self.actions.push(Action::Receive(token));
        }
        let connection = self.connections[slot].take().expect("just stored");
        self.after_io(slot, token, connection);
    }

    /// Puts a connection back after work on it, scheduling its send, its
    /// receive re-arm or its close.
    fn after_io(&mut self, slot: usize, token: u64, mut connection: Box<Connection>) {
        if !connection.wants_input() && connection.receiving && !connection.cancel_sent {
            connection.cancel_sent = true;
            self.actions.push(Action::Cancel(token));
        }
        if connection.finished() {
            // Dropping the connection closes its socket: no operation on it is
            // left in the ring (its receive ended, its send completed).
            drop(connection);
            self.shared.curr_connections.fetch_sub(1, Ordering::SeqCst);
            // A descriptor is free: resting listeners may accept again.
            self.wake_listeners();
            self.generations[slot] = self.generations[slot].wrapping_add(1);
            self.free_slots.push(slot);
            return;
        }
        if connection.wants_input() && !connection.receiving {
            connection.receiving = true;
            connection.cancel_sent = false;
            self.actions.push(Action::Receive(token));
        }
        if connection.has_output() && !connection.dirty {
            connection.dirty = true;
            self.dirty.push(token);
        }
        self.connections[slot] = Some(connection);
    }

    /// Parses and serves what arrived, keeping any partial request.
    ///
    /// A connection closing after its replies (end of stream, shutdown drain)
    /// reads nothing more but still serves what it had read: a paused
    /// multi-get's other keys and requests that waited in its input.
    fn receive(&mut self, connection: &mut Connection, token: u64, mut data: &[u8]) {
        match connection.closing {
            Closing::Now => return,
            Closing::AfterReplies if connection.paused => return,
            Closing::AfterReplies => data = &[],
            Closing::Open => {}
        }
        data = connection.swallow(data);
        if connection.paused {
            connection.input.extend_from_slice(data);
            return;
        }
        if !self.continue_pending_get(connection, token) {
            connection.input.extend_from_slice(data);
            return;
        }
        if connection.partial_line && !data.contains(&b'\n') {
            connection.input.extend_from_slice(data);
            if protocol::line_may_grow(&connection.input) {
                return;
            }
            // Too long to become a request: parsing the input says so.
            data = &[];
        }
        if connection.input.is_empty() {
            let used = self.serve(connection, token, data);
            if used < data.len() && connection.closing != Closing::Now {
                connection.input.extend_from_slice(&data[used..]);
            }
        } else {
            self.serve_after_leftover(connection, token, data);
        }
        // Cheap: a leftover that holds a whole command line has its newline
        // near the front.
        connection.partial_line = !connection.paused && !connection.input.contains(&b'\n');
        connection.release_spent_input();
    }

    /// Serves `connection.input` (a request split across reads, or requests
    /// left while paused) followed by `data`. Only the first
    /// [`SPLIT_REQUEST_REACH`] bytes of `data` join the input, enough to complete
    /// a split request of ordinary size; once the input is used up the rest is
    /// served where it lies. Appending every read to the input and draining it
    /// again took 17% of the null target's user-space time (pipelined reads
    /// seldom end on a request boundary).
    fn serve_after_leftover(&mut self, connection: &mut Connection, token: u64, data: &[u8]) {
        let mut input = std::mem::take(&mut connection.input);
        let old = input.len();
        let head = data.len().min(SPLIT_REQUEST_REACH);
        input.extend_from_slice(&data[..head]);
        let closing = connection.closing;
        let used = self.serve(connection, token, &input);
        let served_through = connection.closing == closing && !connection.paused;
        let rest = if used >= old && served_through {
            // The old input is all served: go on in `data` itself, past the
            // rest of a refused value the input began.
            input.clear();
            let rest = connection.swallow(&data[used - old..]);
            let used = self.serve(connection, token, rest);
            &rest[used..]
        } else {
            // Still short of a whole request (a large value), or paused: as
            // before, the input takes everything.
            input.drain(..used.min(input.len()));
            input.extend_from_slice(&data[head..]);
            if served_through && head < data.len() {
                let used = self.serve(connection, token, &input);
                input.drain(..used.min(input.len()));
            }
            &[]
        };
        if connection.closing != Closing::Now {
            input.extend_from_slice(rest);
            connection.input = input;
        }
    }

    /// Serves every complete request at the front of `buf`; returns the bytes used.
    ///
    /// Requests are parsed a window at a time and their keys routed: the keys
    /// of a window that this core owns are prefetched before the first
    /// request is served, so the cache misses of pipelined requests overlap
    /// instead of stalling one after another.
    fn serve(&mut self, connection: &mut Connection, token: u64, buf: &[u8]) -> usize {
        let mut routes = std::mem::take(&mut self.routes);
        let used = self.serve_windows(connection, token, buf, &mut routes);
        self.routes = routes;
        used
    }

    fn serve_windows(
        &mut self,
        connection: &mut Connection,
        token: u64,
        buf: &[u8],
        routes: &mut Vec<Route>,
    ) -> usize {
        // A request that closes the connection (`shutdown`, a protocol error)
        // ends the serving; one served while it already closes does not.
        let closing = connection.closing;
        let mut pos = 0;
        while pos < buf.len() {
            let mut window: [Option<(Parsed<'_>, usize)>; PREFETCH_DEPTH] = Default::default();
            let mut parsed = 0;
            let mut scan = pos;
            while parsed < PREFETCH_DEPTH && scan < buf.len() {
                let request = protocol::parse(&buf[scan..], &self.limits);
                let consumed = match &request {
                    Parsed::Incomplete => break,
                    Parsed::Request { consumed, .. }
                    | Parsed::Error { consumed, .. }
                    | Parsed::TooLarge { consumed, .. } => *consumed,
                    Parsed::Close => buf.len() - scan,
                };
                window[parsed] = Some((request, scan));
                parsed += 1;
                scan += consumed;
            }
            if parsed == 0 {
                break;
            }
            // The null target touches no storage, so it routes and loads nothing.
            let mut spans = [(0, 0); PREFETCH_DEPTH];
            if !self.shared.config.null {
                self.route_window(&window[..parsed], routes, &mut spans);
                if parsed > 1 {
                    let me = self.index;
                    let owned = routes.iter().filter(|r| r.owner == me).map(|r| r.hash);
                    self.shard.prefetch(owned.take(PREFETCH_KEYS));
                }
            }
            // By reference: a parsed request is some 200 bytes, and moving each
            // out of the window and into `dispatch` copied it twice.
            for (slot, &(from, to)) in window[..parsed].iter().zip(&spans) {
                let Some((request, start)) = slot else {
                    break;
                };
                let start = *start;
                if let Parsed::TooLarge { unlink, .. } = request {
                    self.published().counters.store_too_large.incr();
                    if let Some(Unlink(key)) = unlink {
                        self.unlink(key);
                    }
                }
                match request {
                    Parsed::Incomplete => unreachable!("never stored in the window"),
                    Parsed::Request { request, consumed } => {
                        pos = start + *consumed;
                        let raw = &buf[start..pos];
                        self.dispatch(connection, token, request, raw, &routes[from..to]);
                        if connection.closing != closing {
                            return pos;
                        }
                        if connection.paused || connection.must_pause() {
                            connection.paused = true;
                            return pos;
                        }
                    }
                    Parsed::Error { reply, consumed }
                    | Parsed::TooLarge {
                        reply, consumed, ..
                    } => {
                        connection.reply_buffer().extend_from_slice(reply);
                        if connection.skip(buf.len() - start, *consumed) {
                            return buf.len();
                        }
                        pos = start + *consumed;
                    }
                    Parsed::Close => {
                        connection.close(Closing::Now);
                        return buf.len();
                    }
                }
            }
        }
        pos
    }

    /// Routes the keys of a window's requests, in order, into `routes`;
    /// `spans[r]` is the range of request `r`'s keys in `routes`. Routing
    /// stops once [`PREFETCH_KEYS`] routed keys are this core's: the other
    /// keys are routed as they are served (`serve_get`, `dispatch`).
    fn route_window(
        &self,
        window: &[Option<(Parsed<'_>, usize)>],
        routes: &mut Vec<Route>,
        spans: &mut [(usize, usize); PREFETCH_DEPTH],
    ) {
        routes.clear();
        let mut owned = 0;
        for (slot, span) in window.iter().zip(spans.iter_mut()) {
            let from = routes.len();
            if let Some((Parsed::Request { request, .. }, _)) = slot {
                // Past the cap, keys are routed as they are served.
                for key in request.keys() {
                    if owned == PREFETCH_KEYS {
                        break;
                    }
                    self.add_route(key, routes, &mut owned);
                }
            }
            *span = (from, routes.len());
        }
    }

    /// Routes `key` onto `routes`, counting it in `owned` if it is this core's.
    fn add_route(&self, key: &[u8], routes: &mut Vec<Route>, owned: &mut usize) {
        let route = self.route(key);
        *owned += usize::from(route.owner == self.index);
        routes.push(route);
    }

    /// A refused `set` also drops the key's old value, as memcached does, so
    /// that no client reads the value it failed to replace; without counting
    /// a `delete` (memcached unlinks it directly). The owner removes it in
    /// order with the connection's other requests for the key: they travel
    /// the same queue.
    fn unlink(&mut self, key: &[u8]) {
        let route = self.route(key);
        if route.owner == self.index {
            self.shard.delete(key, route.hash, self.now);
        } else {
            self.outbox.forwards[route.owner].push(0, 0, ItemKind::Unlink, Some(route.hash), |b| {
                b.extend_from_slice(key)
            });
        }
    }

    /// Serves a retrieval's keys in order, then its `END`; or, if the
    /// connection must pause first, returns the keys not yet served (the
    /// caller keeps them in [`PendingGet`] and goes on once replies drain).
    /// `routes` holds the first keys' routes, if the window routed them.
    fn serve_get<'k>(
        &mut self,
        connection: &mut Connection,
        token: u64,
        kind: GetKind,
        mut keys: Keys<'k>,
        routes: &[Route],
    ) -> Option<Keys<'k>> {
        let mut routed = routes.iter();
        while let Some((key, rest)) = keys.split_first() {
            let route = routed.next().copied().unwrap_or_else(|| self.route(key));
            if route.owner == self.index {
                let out = connection.reply_buffer();
                self.executor().get(key, route.hash, kind, out);
            } else {
                let seq = connection.hold_reply();
                self.outbox.forwards[route.owner].push(
                    token,
                    seq,
                    ItemKind::get_fragment(kind),
                    Some(route.hash),
                    |b| encode_get_fragment(b, kind, key),
                );
            }
            keys = rest;
            if connection.must_pause() && !keys.is_empty() {
                return Some(keys);
            }
        }
        connection.reply_buffer().extend_from_slice(reply::END);
        None
    }

    /// Serves the rest of a multi-get the connection paused in; false if it had
    /// to pause again (the keys left stay pending).
    fn continue_pending_get(&mut self, connection: &mut Connection, token: u64) -> bool {
        let Some(mut pending) = connection.pending_get.take() else {
            return true;
        };
        match self.serve_get(connection, token, pending.kind, pending.rest(), &[]) {
            None => true,
            Some(rest) => {
                pending.advance_to(rest.as_bytes().len());
                connection.pending_get = Some(pending);
                connection.paused = true;
                false
            }
        }
    }

    /// A paused connection whose replies have drained serves its input again.
    fn resume_if_drained(&mut self, connection: &mut Connection, token: u64) {
        if connection.paused && connection.may_resume() {
            connection.paused = false;
            self.receive(connection, token, &[]);
        }
    }

    /// The hash of `key` and the core that owns it.
    fn route(&self, key: &[u8]) -> Route {
        let hash = key_hash(key);
        let owner = match self.shared.cores() {
            1 => 0,
            cores => owner(hash, cores),
        };
        Route { hash, owner }
    }

    fn executor(&mut self) -> Executor<'_> {
        Executor {
            shard: &mut self.shard,
            stats: &self.shared.published[self.index].counters,
            now: self.now,
            use_cas: self.shared.config.use_cas,
        }
    }

    /// Serves one request: here if this core owns its key, else by forwarding.
    /// `routes` holds its keys' routes, if its window routed them.
    fn dispatch(
        &mut self,
        connection: &mut Connection,
        token: u64,
        request: &Request<'_>,
        raw: &[u8],
        routes: &[Route],
    ) {
        if self.shared.config.null {
            null_reply(request, connection.reply_buffer());
            return;
        }
        if let Some(key) = request.single_key() {
            let route = routes.first().copied().unwrap_or_else(|| self.route(key));
            let owner = route.owner;
            if owner == self.index {
                self.executor()
                    .keyed(request, route.hash, connection.reply_buffer());
            } else {
                let (seq, kind) = if request.noreply() {
                    (0, ItemKind::NoReply)
                } else {
                    (connection.hold_reply(), ItemKind::Request)
                };
                self.outbox.forwards[owner].push(token, seq, kind, Some(route.hash), |b| {
                    b.extend_from_slice(raw)
                });
            }
            return;
        }
        match *request {
            Request::Get { kind, keys } => {
                if let Some(rest) = self.serve_get(connection, token, kind, keys, routes) {
                    connection.pending_get = Some(PendingGet::new(kind, rest));
                    connection.paused = true;
                }
            }
            Request::FlushAll { delay, noreply } => {
                self.published().counters.cmd_flush.incr();
                let answer = match admin::flush_moment(&self.shared, delay, self.now) {
                    Ok(oldest_live) => {
                        // Here at once; on the other cores in order with what this
                        // core forwards them (see ItemKind::Flush).
                        self.shard.flush_all(oldest_live, self.now);
                        for core in (0..self.shared.cores()).filter(|&c| c != self.index) {
                            self.outbox.forwards[core].push(0, 0, ItemKind::Flush, None, |b| {
                                b.extend_from_slice(&oldest_live.to_le_bytes())
                            });
                        }
                        reply::OK
                    }
                    Err(refusal) => refusal,
                };
                if !noreply {
                    connection.reply_buffer().extend_from_slice(answer);
                }
            }
            Request::CacheMemlimit { megabytes, noreply } => {
                let answer = admin::cache_memlimit(&self.shared, megabytes);
                self.apply_gates();
                if !noreply {
                    connection.reply_buffer().extend_from_slice(answer);
                }
            }
            Request::Version => {
                let out = connection.reply_buffer();
                out.extend_from_slice(b"VERSION ");
                out.extend_from_slice(admin::VERSION.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Request::Verbosity { level, noreply } => {
                // memcached keeps at most its highest level, 2.
                self.shared.verbosity.store(level.min(2), Ordering::Relaxed);
                if !noreply {
                    connection.reply_buffer().extend_from_slice(reply::OK);
                }
            }
            Request::Shutdown { .. } => {
                if self.shared.config.shutdown_enabled {
                    connection.close(Closing::AfterReplies);
                    self.shared.begin_shutdown();
                    // Wake the thread waiting for signals, so the process exits.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::this(),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                } else {
                    connection
                        .reply_buffer()
                        .extend_from_slice(reply::SHUTDOWN_DISABLED);
                }
            }
            Request::Stats { args } if args.iter().next() == Some(b"cachedump") => {
                // Every core lists its own items; the lists are joined in core order.
                match admin::cachedump_args(args) {
                    Err(answer) => connection.reply_buffer().extend_from_slice(answer),
                    Ok((class, limit)) => {
                        for core in 0..self.shared.cores() {
                            if core == self.index {
                                admin::cachedump(
                                    &self.shard,
                                    class,
                                    limit,
                                    connection.reply_buffer(),
                                );
                            } else {
                                let seq = connection.hold_reply();
                                self.outbox.forwards[core].push(
                                    token,
                                    seq,
                                    ItemKind::Request,
                                    None,
                                    |b| b.extend_from_slice(raw),
                                );
                            }
                        }
                        connection.reply_buffer().extend_from_slice(reply::END);
                    }
                }
            }
            Request::Stats { args } => {
                // This core's classes as they are now, the others' as they
                // published them (at most a second ago), summed per class.
                let mut slabs = self.shard.slab_class_stats();
                for (core, published) in self.shared.published.iter().enumerate() {
                    if core != self.index {
                        let theirs = published.slabs.lock().unwrap_or_else(|e| e.into_inner());
                        for (mine, other) in slabs.iter_mut().zip(theirs.iter()) {
                            mine.add(other);
                        }
                    }
                }
                admin::stats(
                    &self.shared,
                    args,
                    self.now,
                    &slabs,
                    connection.reply_buffer(),
                );
            }
            Request::Quit => connection.close(Closing::AfterReplies),
            // After every earlier reply, held ones included: the slots keep order.
            Request::MetaNoop => connection.reply_buffer().extend_from_slice(b"MN\r\n"),
            _ => unreachable!("keyed requests are dispatched above"),
        }
    }

    /// Serves the batches other cores sent, and delivers the replies they
    /// computed for this core's connections.
    fn serve_mailbox(&mut self) {
        let shared = Arc::clone(&self.shared);
        shared.mailboxes[self.index].drain(|from, message| match message {
            Message::Forward(batch) => {
                let counters = &self.shared.published[self.index].counters;
                counters.forwarded_batches.incr();
                counters.forwarded_requests.add(batch.items.len() as u64);
                // As for a window of pipelined requests: the keys of a few
                // items load together before the first is served.
                for window in batch.items.chunks(PREFETCH_DEPTH) {
                    if window.len() > 1 {
                        self.shard
                            .prefetch(window.iter().filter_map(|item| item.key_hash));
                    }
                    for item in window {
                        let bytes = batch.item_bytes(item);
                        if item.kind == ItemKind::Flush {
                            let oldest_live = bytes.try_into().map(u32::from_le_bytes);
                            self.shard
                                .flush_all(oldest_live.expect("4 bytes"), self.now);
                            continue;
                        }
                        // The sender's hash of the item's one key: not computed again.
                        let hash_of = |key: &[u8]| {
                            let hash = item.key_hash.unwrap_or_else(|| key_hash(key));
                            debug_assert_eq!(hash, key_hash(key));
                            hash
                        };
                        if item.kind == ItemKind::Unlink {
                            self.shard.delete(bytes, hash_of(bytes), self.now);
                            continue;
                        }
                        let mut out = std::mem::take(&mut self.outbox.replies[from].bytes);
                        let start = out.len();
                        if let ItemKind::GetFragment { with_cas, touch } = item.kind {
                            let (kind, key) = decode_get_fragment(with_cas, touch, bytes);
                            self.executor().get(key, hash_of(key), kind, &mut out);
                        } else {
                            let Parsed::Request { request, .. } =
                                protocol::parse(bytes, &self.limits)
                            else {
                                unreachable!("forwarded bytes were parsed once already");
                            };
                            match &request {
                                Request::Stats { args } => {
                                    if let Ok((class, limit)) = admin::cachedump_args(*args) {
                                        admin::cachedump(&self.shard, class, limit, &mut out);
                                    }
                                }
                                _ => {
                                    let key = request.single_key().expect("forwarded for its key");
                                    self.executor().keyed(&request, hash_of(key), &mut out)
                                }
                            }
                        }
                        let replies = &mut self.outbox.replies[from];
                        replies.bytes = out;
                        if item.kind.answered() {
                            replies.seal(item.conn, item.seq, start, ItemKind::Request);
                        }
                    }
                }
                self.outbox.recycle(batch);
            }
            Message::Reply(batch) => {
                debug_assert!(self.replies_owed >= batch.items.len());
                self.replies_owed = self.replies_owed.saturating_sub(batch.items.len());
                for item in &batch.items {
                    let Some(slot) = self.slot_of(item.conn) else {
                        continue;
                    };
                    let mut connection = self.connections[slot].take().expect("live slot");
                    connection.fill_reply(item.seq, batch.item_bytes(item));
                    // A reply with no bytes (a miss) starts no send, so this is
                    // the place to notice that a connection paused on replies
                    // owed may go on.
                    self.resume_if_drained(&mut connection, item.conn);
                    self.after_io(slot, item.conn, connection);
                }
                self.outbox.recycle(batch);
            }
        });
    }

    /// Sends this turn's batches to their cores, waking each at most once.
    fn post_batches(&mut self, reactor: &mut Reactor) {
        let shared = &self.shared;
        let index = self.index;
        let wakes = &shared.published[index].counters.wakes_sent;
        let replies_owed = &mut self.replies_owed;
        self.outbox.flush(|to, message| {
            if let Message::Forward(batch) = &message {
                *replies_owed += batch.items.iter().filter(|i| i.kind.answered()).count();
            }
            if shared.mailboxes[to].post(index, message) {
                reactor.wake(shared.ring_fds[to].load(Ordering::Relaxed));
                wakes.incr();
            }
        });
    }

    /// A listener's accept failed: it rests (`ACCEPT_REST`) instead of
    /// failing again at once.
    fn rest_listener(&mut self, listener: usize, error: &std::io::Error) {
        if self.resting_listeners.is_empty() {
            self.resting_since = Instant::now();
            self.accept_rest = if self.accepts_failing {
                (self.accept_rest * 2).min(ACCEPT_REST_MAX)
            } else {
                ACCEPT_REST
            };
        }
        if !self.accepts_failing {
            self.accepts_failing = true;
            self.published().counters.listen_disabled_num.incr();
        }
        let warned_lately =
            (self.accept_warned_at).is_some_and(|at| at.elapsed() < ACCEPT_WARNING_INTERVAL);
        if !warned_lately {
            self.accept_warned_at = Some(Instant::now());
            let advice = if out_of_descriptors(error) {
                "new connections wait in the listen backlog until a connection closes \
                 (raise the open files limit, LimitNOFILE)"
            } else {
                "trying again shortly"
            };
            tracing::warn!("core {}: accepting paused: {error}; {advice}", self.index);
        }
        self.resting_listeners.push(listener);
    }

    /// Resting listeners accept again (at the next `perform_actions`).
    fn wake_listeners(&mut self) {
        self.actions
            .extend(self.resting_listeners.drain(..).map(Action::Accept));
    }

    fn perform_actions(&mut self, reactor: &mut Reactor) {
        if !self.resting_listeners.is_empty() && self.resting_since.elapsed() >= self.accept_rest {
            self.wake_listeners();
        }
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            match action {
                Action::Receive(token) => {
                    if let Some(slot) = self.slot_of(token) {
                        let fd = self.connections[slot].as_ref().expect("live slot").fd();
                        reactor.receive(fd, token);
                    }
                }
                Action::Cancel(token) => reactor.cancel_receive(token),
                // No accept is armed on this listener: a drain closes it.
                Action::Accept(listener) if self.draining => self.listeners[listener] = None,
                Action::Accept(listener) => {
                    if let Some(socket) = &self.listeners[listener] {
                        reactor.accept(socket.as_raw_fd(), listener as u64)
                    }
                }
            }
        }
        self.actions = actions;
    }

    /// One send per connection per turn, carrying every reply it has.
    ///
    /// A connection whose replies wait behind ones other cores still owe holds
    /// its ready ones back, for up to [`HOLD_TIME`] and [`HOLD_BYTES`], so
    /// that they go out with the rest. Sending the front
    /// at once split each pipelined batch into a send per turn its replies
    /// took to come back (through the shared port at `-t 2`, 9 requests per
    /// send against 16 through per-core ports), and the client's next
    /// requests into as many smaller receives. Holding them cut the server
    /// CPU per request there by a quarter (docs/benchmarks.md, "ninth
    /// session"). The replies held are ones the client could read sooner, so
    /// both bounds stay small.
    fn send_replies(&mut self, reactor: &mut Reactor) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut written = 0;
        let turn_started = self.turn_started;
        dirty.retain(|&token| {
            let Some(slot) = self.slot_of(token) else {
                return false;
            };
            let connection = self.connections[slot].as_mut().expect("live slot");
            if connection.sending || !connection.has_output() {
                connection.dirty = false;
                connection.held_since = None;
                return false;
            }
            if connection.awaiting_replies() && connection.ready_bytes() < HOLD_BYTES {
                let since = *connection.held_since.get_or_insert(turn_started);
                if turn_started.duration_since(since) < HOLD_TIME {
                    return true;
                }
            }
            connection.dirty = false;
            connection.held_since = None;
            let output = connection.take_output();
            written += output.len() as u64;
            connection.sending = true;
            reactor.send(connection.fd(), token, output);
            false
        });
        self.published().counters.bytes_written.add(written);
        // The held back stay queued, ahead of those made dirty next turn.
        self.dirty = dirty;
    }

    /// Copies the shard's slab classes for `stats slabs` once a second.
    fn publish_slabs(&mut self) {
        if self.now == self.slabs_published_at {
            return;
        }
        self.slabs_published_at = self.now;
        let slabs = self.shard.slab_class_stats();
        *self
            .published()
            .slabs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = slabs;
    }

    fn publish_receive_buffers(&self, reactor: &Reactor) {
        self.published()
            .receive_buffers
            .set(reactor.receive_buffers() as u64);
    }

    /// Copies the shard's figures where `stats` on any core can read them.
    fn publish(&self) {
        let stats = self.shard.stats();
        let gauges = &self.published().gauges;
        gauges.bytes.set(stats.bytes);
        gauges.curr_items.set(stats.curr_items);
        gauges.total_items.set(stats.total_items);
        gauges.get_expired.set(stats.get_expired);
        gauges.get_flushed.set(stats.get_flushed);
        gauges.expired_unfetched.set(stats.expired_unfetched);
        gauges.evicted_unfetched.set(stats.evicted_unfetched);
        gauges.evictions.set(stats.evictions);
        gauges.reclaimed.set(stats.reclaimed);
        gauges.total_pages.set(stats.total_pages);
        gauges.slabs_moved.set(stats.page_moves);
        gauges.slab_reassign_rescues.set(stats.pages_rescued_items);
        gauges.policy_window_items.set(stats.window_items);
        gauges.policy_probation_items.set(stats.probation_items);
        gauges.policy_protected_items.set(stats.protected_items);
        gauges.policy_admissions.set(stats.admissions);
        gauges.policy_rejections.set(stats.rejections);
        gauges.policy_window_ghost_hits.set(stats.window_ghost_hits);
        gauges.policy_main_ghost_hits.set(stats.main_ghost_hits);
        gauges.policy_sketch_bytes.set(stats.sketch_bytes);
        self.published().window_permille.set(stats.window_permille);
    }

    /// Shutdown: stop reading; connections close once their replies are sent.
    fn begin_drain(&mut self, reactor: &mut Reactor) {
        self.draining = true;
        // Stop listening: a client connecting now is refused (or, on the
        // shared port, finds the server started in our place) instead of
        // being accepted only to be turned away. A socket with no accept
        // armed (resting, or about to be re-armed) has an `Action::Accept`,
        // which closes it in a drain; one with an accept armed closes when
        // the cancelled accept completes.
        self.wake_listeners();
        self.perform_actions(reactor);
        for (listener, socket) in self.listeners.iter().enumerate() {
            if socket.is_some() {
                reactor.cancel_accept(listener as u64);
            }
        }
        for slot in 0..self.connections.len() {
            let Some(mut connection) = self.connections[slot].take() else {
                continue;
            };
            let token = self.token(slot);
            connection.close(Closing::AfterReplies);
            self.after_io(slot, token, connection);
        }
        self.perform_actions(reactor);
    }
}
