//! The per-core io_uring event loop: the only code in corecache that touches
//! io_uring, and so the only home of the `unsafe` that submitting work to the
//! kernel requires.
//!
//! The set-up is the one that measured cheapest per request on our machines
//! (DESIGN.md, "The I/O layer"): `SINGLE_ISSUER | DEFER_TASKRUN` so completions
//! run only when this thread asks for them, a registered ring fd, multishot
//! accept, multishot recv into a provided buffer ring whose buffers are handed
//! back as soon as the bytes are parsed, at most one send per connection per
//! loop turn, and one `submit_and_wait` per turn with the next timer deadline as
//! its timeout.
//!
//! Ownership rules that make the `unsafe` sound live here, not in callers:
//! send buffers are moved into the reactor while the kernel reads them and
//! handed back on completion; receive buffers belong to the reactor and are lent
//! to the caller for the duration of one callback.

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

/// Provided buffers per core, at most: the entries of the ring that hands them
/// to the kernel. Each connection holds one only while a callback parses it,
/// so this bounds the bytes in flight from the kernel, not clients.
pub const RECV_BUFFERS: usize = 512;
/// Provided buffers a core starts with. The kernel takes buffers in ring order,
/// so every buffer provided is written in turn: the fewer there are, the more
/// likely the one a receive lands in is still in cache (64 against 512 used
/// less server CPU per request at pipeline 16 in three A/B runs, clearly in one:
/// docs/benchmarks.md, "eighth session"). A turn
/// that runs out (more receives at once than buffers) doubles them, up to
/// [`RECV_BUFFERS`]; the receives that found none are re-armed.
pub const INITIAL_RECV_BUFFERS: usize = 64;
/// Size of one provided receive buffer: a pipeline of small requests fits in
/// one; a large value arrives in several, appended to the connection's input.
pub const RECV_BUFFER_SIZE: usize = 8 * 1024;
const BUFFER_GROUP: u16 = 0;
const SUBMISSION_ENTRIES: u32 = 4096;
const COMPLETION_ENTRIES: u32 = 16384;

/// Bytes of memory the kernel pins for one core's ring of provided-buffer
/// descriptors; counted against RLIMIT_MEMLOCK.
pub const PINNED_BYTES_PER_CORE: usize = RECV_BUFFERS * std::mem::size_of::<types::BufRingEntry>();

// user_data layout: | op: 8 bits | payload: 56 bits |
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_WAKE: u64 = 4;
const OP_WAKE_SENT: u64 = 5;
const OP_CANCEL: u64 = 6;
const PAYLOAD_MASK: u64 = (1 << 56) - 1;

fn user_data(op: u64, payload: u64) -> u64 {
    debug_assert!(payload <= PAYLOAD_MASK);
    (op << 56) | payload
}

/// What one completion meant, in the caller's terms. Tokens are the caller's
/// own 56-bit names for listeners and connections.
pub enum Event<'a> {
    /// A connection was accepted on listener `listener`; `more` is false when
    /// the multishot accept ended and must be re-armed.
    Accepted {
        listener: u64,
        socket: io::Result<OwnedFd>,
        more: bool,
    },
    /// Bytes arrived for connection `conn`; the slice is valid for this call only.
    Received {
        conn: u64,
        data: &'a [u8],
        more: bool,
    },
    /// The multishot receive stopped delivering, for `reason`; it has ended
    /// when `more` is false (re-arm it unless the connection is going away).
    ReceiveEnded {
        conn: u64,
        reason: EndReason,
        more: bool,
    },
    /// A send finished (all bytes, or an error); the buffer comes back, emptied.
    Sent {
        conn: u64,
        buffer: Vec<u8>,
        result: io::Result<()>,
    },
    /// Another core woke this one through its ring (new messages in its queues).
    Woken,
    /// Bytes that will arrive for connection `conn` later in this batch of
    /// completions, shown first so their keys' memory can start loading (a
    /// hint: the same bytes come again in [`Event::Received`]).
    Arriving { conn: u64, data: &'a [u8] },
    /// Every receive of the batch has been shown as [`Event::Arriving`]; the
    /// batch's events follow.
    ArrivalsShown,
}

/// Why a receive stopped.
#[derive(Debug)]
pub enum EndReason {
    /// The peer closed its side.
    EndOfStream,
    /// Every provided buffer was in use; buffers come back each turn.
    OutOfBuffers,
    /// This core cancelled it.
    Cancelled,
    Error(io::Error),
}

/// A send that the kernel may be reading: the buffer stays here until done.
struct PendingSend {
    conn: u64,
    fd: RawFd,
    buffer: Vec<u8>,
    sent: usize,
}

pub struct Reactor {
    // Declared first so it is dropped first: the kernel stops using the
    // buffers below before they are freed.
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    /// Descriptors of the provided buffers, shared with the kernel.
    buffer_ring: memmap2::MmapMut,
    buffer_ring_tail: u16,
    /// Room for [`RECV_BUFFERS`], in an anonymous mapping: pages of buffers
    /// not yet provided are never touched, so they take no memory.
    buffers: memmap2::MmapMut,
    /// Buffers provided so far: ids `0..provided`.
    provided: usize,
    sends: Vec<Option<PendingSend>>,
    free_sends: Vec<usize>,
    completions: Vec<cqueue::Entry>,
}

impl Reactor {
    /// Creates the ring and its provided buffers, checking that the kernel has
    /// every feature the loop uses.
    pub fn new() -> io::Result<Reactor> {
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            // The kernel flags pending deferred work, so that `collect` runs
            // it only when there is some.
            .setup_taskrun_flag()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(SUBMISSION_ENTRIES)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "io_uring setup with SINGLE_ISSUER|DEFER_TASKRUN failed ({e}); \
                         corecache needs Linux 6.1 or later with io_uring enabled \
                         (sysctl kernel.io_uring_disabled=0)"
                    ),
                )
            })?;
        check_kernel_features(&ring)?;

        let ring_bytes = RECV_BUFFERS * std::mem::size_of::<types::BufRingEntry>();
        let buffer_ring = memmap2::MmapMut::map_anon(ring_bytes)?;
        let mut reactor = Reactor {
            ring,
            buffer_ring,
            buffer_ring_tail: 0,
            buffers: memmap2::MmapMut::map_anon(RECV_BUFFERS * RECV_BUFFER_SIZE)?,
            provided: 0,
            sends: Vec::new(),
            free_sends: Vec::new(),
            completions: Vec::with_capacity(COMPLETION_ENTRIES as usize),
        };
        reactor.add_buffers(INITIAL_RECV_BUFFERS);
        reactor.publish_buffers();
        // SAFETY: the descriptor ring lives in `buffer_ring`, a mapping owned by
        // the reactor that outlives the registration (struct fields drop in
        // declaration order, so `ring` goes first), and it holds RECV_BUFFERS
        // entries, a power of two. The buffers it points into live in `buffers`,
        // dropped after the ring too.
        unsafe {
            reactor.ring.submitter().register_buf_ring_with_flags(
                reactor.buffer_ring.as_ptr() as u64,
                RECV_BUFFERS as u16,
                BUFFER_GROUP,
                0,
            )
        }
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::ENOMEM) {
                " (is RLIMIT_MEMLOCK too low? see docs/tuning.md)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("registering the receive buffer ring: {e}{hint}"),
            )
        })?;
        reactor.ring.submitter().register_ring_fd()?;
        Ok(reactor)
    }

    /// The ring's file descriptor, which other cores target to wake this one.
    pub fn ring_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.ring.as_raw_fd()
    }

    /// Receive buffers provided to the kernel.
    pub fn receive_buffers(&self) -> usize {
        self.provided
    }

    /// Provides `count` more buffers (fewer if that would pass
    /// [`RECV_BUFFERS`]); the caller publishes them.
    fn add_buffers(&mut self, count: usize) {
        let end = (self.provided + count).min(RECV_BUFFERS);
        for id in self.provided..end {
            self.provide_buffer(id as u16);
        }
        self.provided = end;
    }

    /// The `len` bytes a receive completion left in buffer `id`.
    fn received(&self, id: u16, len: i32) -> &[u8] {
        let start = id as usize * RECV_BUFFER_SIZE;
        &self.buffers[start..start + len as usize]
    }

    fn provide_buffer(&mut self, id: u16) {
        let entries = self.buffer_ring.as_mut_ptr() as *mut types::BufRingEntry;
        let slot = (self.buffer_ring_tail as usize) & (RECV_BUFFERS - 1);
        // SAFETY: `slot` < RECV_BUFFERS, the number of entries the mapping
        // holds; the kernel only reads entries between its head and our
        // published tail, and this slot is past the published tail (at most
        // RECV_BUFFERS buffers exist, so the ring never holds more).
        let entry = unsafe { &mut *entries.add(slot) };
        let addr = self.buffers[id as usize * RECV_BUFFER_SIZE..].as_ptr();
        entry.set_addr(addr as u64);
        entry.set_len(RECV_BUFFER_SIZE as u32);
        entry.set_bid(id);
        self.buffer_ring_tail = self.buffer_ring_tail.wrapping_add(1);
    }

    fn publish_buffers(&mut self) {
        let entries = self.buffer_ring.as_ptr() as *const types::BufRingEntry;
        // SAFETY: the tail field overlays the first entry's reserved field, inside
        // the mapping; the kernel reads it concurrently, hence the atomic store.
        let tail = unsafe { &*(types::BufRingEntry::tail(entries) as *const AtomicU16) };
        tail.store(self.buffer_ring_tail, Ordering::Release);
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry pushed references only memory the reactor
            // keeps alive until its completion: send buffers in `sends`, receive
            // buffers in `buffers`, nothing else.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                tracing::error!("io_uring submit failed: {e}");
            }
        }
    }

    /// Arms a multishot accept on a listening socket.
    pub fn accept(&mut self, listener_fd: RawFd, listener: u64) {
        let entry = opcode::AcceptMulti::new(types::Fd(listener_fd))
            .build()
            .user_data(user_data(OP_ACCEPT, listener));
        self.push(entry);
    }

    /// Cancels listener `listener`'s multishot accept; its final completion
    /// ([`Event::Accepted`] with `more` false) follows.
    pub fn cancel_accept(&mut self, listener: u64) {
        let entry = opcode::AsyncCancel::new(user_data(OP_ACCEPT, listener))
            .build()
            .user_data(user_data(OP_CANCEL, 0));
        self.push(entry);
    }

    /// Arms a multishot receive into the provided buffers.
    pub fn receive(&mut self, fd: RawFd, conn: u64) {
        let entry = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(user_data(OP_RECV, conn));
        self.push(entry);
    }

    /// Cancels a connection's multishot receive; its final completion follows.
    pub fn cancel_receive(&mut self, conn: u64) {
        let entry = opcode::AsyncCancel::new(user_data(OP_RECV, conn))
            .build()
            .user_data(user_data(OP_CANCEL, 0));
        self.push(entry);
    }

    /// Sends all of `buffer` on `fd`; the buffer comes back in [`Event::Sent`].
    pub fn send(&mut self, fd: RawFd, conn: u64, buffer: Vec<u8>) {
        let slot = self.free_sends.pop().unwrap_or_else(|| {
            self.sends.push(None);
            self.sends.len() - 1
        });
        self.sends[slot] = Some(PendingSend {
            conn,
            fd,
            buffer,
            sent: 0,
        });
        self.push_send(slot);
    }

    fn push_send(&mut self, slot: usize) {
        let pending = self.sends[slot].as_ref().expect("send slot in use");
        let rest = &pending.buffer[pending.sent..];
        let entry = opcode::Send::new(types::Fd(pending.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(OP_SEND, slot as u64));
        self.push(entry);
    }

    /// Posts a completion on another core's ring, waking it if it waits.
    pub fn wake(&mut self, target_ring_fd: RawFd) {
        let entry =
            opcode::MsgRingData::new(types::Fd(target_ring_fd), 0, user_data(OP_WAKE, 0), None)
                .build()
                .user_data(user_data(OP_WAKE_SENT, 0))
                .flags(squeue::Flags::SKIP_SUCCESS);
        self.push(entry);
    }

    /// Submits everything queued and waits for at least one completion or the
    /// timeout, whichever comes first.
    pub fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Submits everything queued and runs the kernel's deferred completion
    /// work, without waiting: for a turn that has work already (batches from
    /// other cores). A wait with a zero timeout would cost a timer and a sleep
    /// of some 20 us when no completion is ready.
    pub fn collect(&mut self) -> io::Result<()> {
        // With the task-run flag set up, `submit` asks the kernel for its
        // completions (GETEVENTS) exactly when deferred work is pending.
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether completions are ready, or deferred work the kernel would turn
    /// into completions on the next `collect` (a look, without a syscall).
    pub fn work_pending(&mut self) -> bool {
        self.ring.submission().taskrun() || !self.ring.completion().is_empty()
    }

    /// Hands every ready completion to `handle`, then returns the receive
    /// buffers it used to the kernel.
    pub fn dispatch(&mut self, mut handle: impl FnMut(Event<'_>)) {
        let mut completions = std::mem::take(&mut self.completions);
        completions.extend(self.ring.completion());
        // Several connections' requests arrive in one batch: showing them all
        // first lets their cache misses overlap, where one request per receive
        // (no pipelining) would otherwise wait for its own, one after another.
        let mut shown = false;
        for cqe in &completions {
            if cqe.user_data() >> 56 == OP_RECV && cqe.result() > 0 {
                if let Some(id) = cqueue::buffer_select(cqe.flags()) {
                    handle(Event::Arriving {
                        conn: cqe.user_data() & PAYLOAD_MASK,
                        data: self.received(id, cqe.result()),
                    });
                    shown = true;
                }
            }
        }
        if shown {
            handle(Event::ArrivalsShown);
        }
        let mut recycled = false;
        let mut ran_out = false;
        for cqe in completions.drain(..) {
            let op = cqe.user_data() >> 56;
            let payload = cqe.user_data() & PAYLOAD_MASK;
            let result = cqe.result();
            let more = cqueue::more(cqe.flags());
            match op {
                OP_ACCEPT => {
                    let socket = if result >= 0 {
                        // SAFETY: a successful accept returns a new descriptor
                        // that nothing else owns.
                        Ok(unsafe { OwnedFd::from_raw_fd(result) })
                    } else {
                        Err(io::Error::from_raw_os_error(-result))
                    };
                    handle(Event::Accepted {
                        listener: payload,
                        socket,
                        more,
                    });
                }
                OP_RECV if result > 0 => {
                    let Some(id) = cqueue::buffer_select(cqe.flags()) else {
                        tracing::error!("receive completion without a buffer");
                        continue;
                    };
                    handle(Event::Received {
                        conn: payload,
                        data: self.received(id, result),
                        more,
                    });
                    self.provide_buffer(id);
                    recycled = true;
                }
                OP_RECV => {
                    ran_out |= -result == libc::ENOBUFS;
                    let reason = match -result {
                        0 => EndReason::EndOfStream,
                        libc::ENOBUFS => EndReason::OutOfBuffers,
                        libc::ECANCELED => EndReason::Cancelled,
                        errno => EndReason::Error(io::Error::from_raw_os_error(errno)),
                    };
                    handle(Event::ReceiveEnded {
                        conn: payload,
                        reason,
                        more,
                    });
                }
                OP_SEND => self.complete_send(payload as usize, result, &mut handle),
                OP_WAKE => handle(Event::Woken),
                OP_WAKE_SENT if result < 0 => {
                    tracing::error!(
                        "waking a core failed: {}",
                        io::Error::from_raw_os_error(-result)
                    )
                }
                _ => {}
            }
        }
        self.completions = completions;
        // Once a turn: the receives that ran out are re-armed and come back
        // next turn, when the doubled buffers are there for them.
        if ran_out && self.provided < RECV_BUFFERS {
            self.add_buffers(self.provided);
            recycled = true;
        }
        if recycled {
            self.publish_buffers();
        }
    }

    fn complete_send(&mut self, slot: usize, result: i32, handle: &mut impl FnMut(Event<'_>)) {
        let Some(pending) = self.sends[slot].as_mut() else {
            return;
        };
        if result >= 0 {
            pending.sent += result as usize;
            if pending.sent < pending.buffer.len() && result > 0 {
                // A short send: the socket buffer filled up; send the rest.
                self.push_send(slot);
                return;
            }
        }
        let mut pending = self.sends[slot].take().expect("send slot in use");
        self.free_sends.push(slot);
        let result = if result < 0 {
            Err(io::Error::from_raw_os_error(-result))
        } else if pending.sent < pending.buffer.len() {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "send wrote nothing",
            ))
        } else {
            Ok(())
        };
        pending.buffer.clear();
        handle(Event::Sent {
            conn: pending.conn,
            buffer: pending.buffer,
            result,
        });
    }
}

/// Refuses to start on a kernel that lacks an operation the loop relies on.
fn check_kernel_features(ring: &IoUring) -> io::Result<()> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let needed = [
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::MsgRingData::CODE, "MSG_RING"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ];
    let missing: Vec<&str> = needed
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "this kernel's io_uring lacks {}; corecache needs Linux 6.1 or later",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Checks RLIMIT_MEMLOCK against what `cores` rings will pin, with advice.
pub fn check_memlock(cores: usize) -> Result<(), String> {
    let needed = (cores * PINNED_BYTES_PER_CORE.next_multiple_of(4096)) as u64;
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK)
        .map_err(|e| format!("reading RLIMIT_MEMLOCK: {e}"))?;
    if soft != nix::sys::resource::RLIM_INFINITY && soft < needed {
        return Err(format!(
            "RLIMIT_MEMLOCK is {soft} bytes but {cores} cores need {needed} bytes of locked \
             memory for their receive buffer rings; raise it (ulimit -l, or LimitMEMLOCK= in \
             the systemd unit, see tuning/corecache.service) or run fewer cores with -t"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// Bytes that arrive for an armed receive complete in deferred task
    /// work: `collect`, which does not wait, must still run it, or a core
    /// that always has batches from other cores would never see its sockets.
    #[test]
    fn collect_delivers_receives_without_waiting() {
        let mut reactor = Reactor::new().expect("io_uring");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        reactor.receive(server.as_raw_fd(), 7);
        reactor.collect().unwrap();
        client.write_all(b"get k\r\n").unwrap();
        let mut received = Vec::new();
        for _ in 0..1000 {
            reactor.collect().unwrap();
            reactor.dispatch(|event| {
                if let Event::Received { conn, data, .. } = event {
                    assert_eq!(conn, 7);
                    received.extend_from_slice(data);
                }
            });
            if received.len() == 7 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(received, b"get k\r\n");
    }
}
