//! Server-wide commands: `stats`, `flush_all`, `cache_memlimit`, `version`,
//! `verbosity`, `shutdown`. They act on state every core shares.

use super::stats::summed;
use super::Shared;
use crate::protocol::classic::parse_u64;
use crate::protocol::{reply, Keys, RELATIVE_EXPTIME_MAX};
use crate::storage::{Shard, SlabClassStats};
use std::sync::atomic::Ordering;

pub const VERSION: &str = concat!("1.6.18-corecache-", env!("CARGO_PKG_VERSION"));

/// `flush_all [delay]`: everything stored up to the flush moment is gone once
/// that moment arrives. Cores pick the new moment up before their next request.
/// `flush_all [delay]`: the moment items stored before become invalid, or the
/// refusal to send when flushing is disabled (`-F`).
pub fn flush_moment(shared: &Shared, delay: i64, now: u32) -> Result<u32, &'static [u8]> {
    if !shared.config.flush_enabled {
        return Err(reply::FLUSH_DISABLED);
    }
    // memcached: a delay is relative up to 30 days, absolute beyond; the flush
    // takes effect for items stored up to one second before that moment.
    let oldest_live = if delay > 0 {
        let at = if delay <= RELATIVE_EXPTIME_MAX {
            now as i64 + delay
        } else {
            delay
        };
        (at - 1).clamp(0, u32::MAX as i64) as u32
    } else {
        now
    };
    Ok(oldest_live)
}

/// `cache_memlimit <MB>`: changes the item memory limit at run time.
pub fn cache_memlimit(shared: &Shared, megabytes: u64) -> &'static [u8] {
    if megabytes < 8 {
        return reply::MEMLIMIT_TOO_SMALL;
    }
    // The arena of each core is its memory file, sized at start by -m.
    if shared.config.memory_file.is_some()
        && megabytes.saturating_mul(1024 * 1024) > shared.config.memory_limit as u64
    {
        tracing::warn!(
            "cache_memlimit {megabytes} refused: above -m with --memory-file; keeping the limit"
        );
        return reply::MEMLIMIT_FIXED;
    }
    shared
        .memory_limit
        .request(megabytes.saturating_mul(1024 * 1024));
    reply::OK
}

/// `stats` and its sub-commands.
pub fn stats(
    shared: &Shared,
    args: Keys<'_>,
    now: u32,
    slabs: &[SlabClassStats],
    out: &mut Vec<u8>,
) {
    let mut args = args.iter();
    match args.next() {
        None => general_stats(shared, now, out),
        Some(b"settings") => settings_stats(shared, out),
        Some(b"reset") => {
            for core in &shared.published {
                core.counters.reset();
            }
            out.extend_from_slice(reply::RESET);
            return;
        }
        Some(b"slabs") => slab_stats(slabs, out),
        Some(b"items") => item_stats(slabs, out),
        Some(b"conns") | Some(b"sizes") => {}
        Some(_) => {
            out.extend_from_slice(reply::ERROR);
            return;
        }
    }
    out.extend_from_slice(reply::END);
}

fn general_stats(shared: &Shared, now: u32, out: &mut Vec<u8>) {
    let cores = &shared.published;
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok();
    let seconds = |tv: nix::sys::time::TimeVal| format!("{}.{:06}", tv.tv_sec(), tv.tv_usec());
    reply::push_stat(out, "pid", std::process::id());
    reply::push_stat(out, "uptime", now.saturating_sub(shared.started_unix));
    reply::push_stat(out, "time", now);
    reply::push_stat(out, "version", VERSION);
    reply::push_stat(out, "pointer_size", usize::BITS);
    if let Some(usage) = usage {
        reply::push_stat(out, "rusage_user", seconds(usage.user_time()));
        reply::push_stat(out, "rusage_system", seconds(usage.system_time()));
    }
    reply::push_stat(out, "max_connections", shared.config.max_connections);
    reply::push_stat(
        out,
        "curr_connections",
        shared.curr_connections.load(Ordering::Relaxed),
    );
    for (name, total) in summed(cores, |c| c.counters.fields()) {
        reply::push_stat(out, name, total);
    }
    reply::push_stat(out, "limit_maxbytes", shared.memory_limit.current());
    reply::push_stat(
        out,
        "accepting_conns",
        u8::from(!shared.shutdown.load(Ordering::Relaxed)),
    );
    reply::push_stat(out, "threads", cores.len());
    // Items, memory, expiry and eviction, and the eviction policy (W-TinyLFU):
    // its lists and its admission duels.
    for (name, total) in summed(cores, |c| c.gauges.fields()) {
        reply::push_stat(out, name, total);
    }
    let window_permille: u64 = cores.iter().map(|c| c.window_permille.get()).sum();
    reply::push_stat(
        out,
        "policy_window_permille",
        window_permille / cores.len() as u64,
    );
    let receive_buffers: u64 = cores.iter().map(|c| c.receive_buffers.get()).sum();
    reply::push_stat(out, "receive_buffers", receive_buffers);
    // corecache's own: what a smart client needs to route keys itself.
    reply::push_stat(out, "cores", cores.len());
    reply::push_stat(out, "key_hash", "xxh3_64");
    reply::push_stat(out, "core_owner", "jump_consistent_hash");
    if let Some(base) = shared.config.core_ports {
        reply::push_stat(out, "core_ports_base", base);
    }
}

fn settings_stats(shared: &Shared, out: &mut Vec<u8>) {
    let c = &shared.config;
    reply::push_stat(out, "maxbytes", shared.memory_limit.current());
    reply::push_stat(out, "maxconns", c.max_connections);
    reply::push_stat(out, "tcpport", c.port);
    reply::push_stat(out, "udpport", 0);
    let interfaces: Vec<String> = c.listen.iter().map(|a| a.to_string()).collect();
    reply::push_stat(out, "inter", interfaces.join(","));
    reply::push_stat(out, "verbosity", shared.verbosity.load(Ordering::Relaxed));
    reply::push_stat(out, "evictions", "on");
    reply::push_stat(out, "growth_factor", format!("{:.2}", c.growth_factor));
    reply::push_stat(out, "chunk_size", c.min_chunk_size);
    reply::push_stat(out, "num_threads", c.cores());
    reply::push_stat(out, "cas_enabled", if c.use_cas { "yes" } else { "no" });
    reply::push_stat(out, "tcp_backlog", c.backlog);
    reply::push_stat(out, "item_size_max", c.max_item_size);
    reply::push_stat(
        out,
        "flush_enabled",
        if c.flush_enabled { "yes" } else { "no" },
    );
    reply::push_stat(
        out,
        "shutdown_enabled",
        if c.shutdown_enabled { "yes" } else { "no" },
    );
    reply::push_stat(out, "core_ports", c.core_ports.map_or(0, |p| p as u32));
    let cpus: Vec<String> = c.cpus.iter().map(|c| c.to_string()).collect();
    reply::push_stat(out, "core_cpus", cpus.join(","));
}

fn slab_stats(slabs: &[SlabClassStats], out: &mut Vec<u8>) {
    // A class that lent its last page has none, but its items live on as
    // guests of the class above: listed while it has any.
    for class in slabs.iter().filter(|c| c.total_pages > 0 || c.guests > 0) {
        let id = class.id;
        reply::push_stat(out, &format!("{id}:chunk_size"), class.chunk_size);
        reply::push_stat(out, &format!("{id}:chunks_per_page"), class.chunks_per_page);
        reply::push_stat(out, &format!("{id}:total_pages"), class.total_pages);
        reply::push_stat(out, &format!("{id}:total_chunks"), class.total_chunks);
        reply::push_stat(out, &format!("{id}:used_chunks"), class.used_chunks);
        reply::push_stat(out, &format!("{id}:free_chunks"), class.free_chunks);
        // Rebalancing: pages this class took from others / gave to others.
        reply::push_stat(out, &format!("{id}:pages_moved_in"), class.pages_moved_in);
        reply::push_stat(out, &format!("{id}:pages_moved_out"), class.pages_moved_out);
        reply::push_stat(out, &format!("{id}:guests"), class.guests);
    }
    reply::push_stat(
        out,
        "active_slabs",
        slabs.iter().filter(|c| c.total_pages > 0).count(),
    );
    let malloced: u64 = slabs
        .iter()
        .map(|c| c.total_pages * c.chunks_per_page * c.chunk_size)
        .sum();
    reply::push_stat(out, "total_malloced", malloced);
    // memcached's name (it reports it in `stats`) for pages moved between classes.
    let moved: u64 = slabs.iter().map(|c| c.pages_moved_in).sum();
    reply::push_stat(out, "slabs_moved", moved);
}

fn item_stats(slabs: &[SlabClassStats], out: &mut Vec<u8>) {
    for class in slabs.iter().filter(|c| c.number > 0 || c.evicted > 0) {
        let id = class.id;
        reply::push_stat(out, &format!("items:{id}:number"), class.number);
        // memcached's segmented LRU names for W-TinyLFU's lists: new items (hot =
        // window), items read again (warm = protected), eviction candidates
        // (cold = probation).
        reply::push_stat(out, &format!("items:{id}:number_hot"), class.window);
        reply::push_stat(out, &format!("items:{id}:number_warm"), class.protected);
        reply::push_stat(out, &format!("items:{id}:number_cold"), class.probation);
        reply::push_stat(out, &format!("items:{id}:evicted"), class.evicted);
    }
}

/// The class id and item limit of `stats cachedump <class> <limit>`.
pub fn cachedump_args(args: Keys<'_>) -> Result<(usize, usize), &'static [u8]> {
    let mut args = args.iter().skip(1);
    let (Some(class), Some(limit)) = (args.next(), args.next()) else {
        return Err(b"CLIENT_ERROR bad command line\r\n");
    };
    match (parse_u64(class), parse_u64(limit)) {
        (Some(class), Some(limit)) if class >= 1 && class <= u8::MAX as u64 => {
            Ok((class as usize, limit as usize))
        }
        (Some(_), Some(_)) => Err(b"CLIENT_ERROR Illegal slab id\r\n"),
        _ => Err(reply::BAD_FORMAT),
    }
}

/// Bytes of `ITEM` lines one core lists for `stats cachedump` at most, whatever
/// the limit asked for (memcached caps its whole dump at 2 MB the same way).
pub const CACHEDUMP_MAX_BYTES: usize = 2 << 20;

/// One shard's `ITEM <key> [<bytes> b; <expiry> s]` lines for `stats cachedump`,
/// up to [`CACHEDUMP_MAX_BYTES`].
pub fn cachedump(shard: &Shard, class: usize, limit: usize, out: &mut Vec<u8>) {
    let start = out.len();
    for (key, bytes, expiry) in shard.cachedump(class, limit) {
        let line = format!(" [{bytes} b; {expiry} s]\r\n");
        if out.len() - start + 5 + key.len() + line.len() > CACHEDUMP_MAX_BYTES {
            break;
        }
        out.extend_from_slice(b"ITEM ");
        out.extend_from_slice(key);
        out.extend_from_slice(line.as_bytes());
    }
}
