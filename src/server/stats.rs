//! Server statistics: per-core counters any core can read, and the `stats`
//! reports built from them with memcached's field names.
//!
//! Each counter has exactly one writer, its core, so an increment is a plain
//! load and store (no locked instruction); readers on other cores see a value at
//! most one loop turn old.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter written by one core and read by any.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A struct of [`Counter`]s named as their `stats` fields, which lists them in
/// declaration order.
macro_rules! stat_fields {
    ($(#[$doc:meta])* $type:ident { $($name:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Default, Debug)]
        pub struct $type {
            $(pub $name: Counter,)*
        }

        impl $type {
            /// Each field's name and value, in declaration order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name.get()),)*].into_iter()
            }

            /// Zeroes every field.
            pub fn reset(&self) {
                $(self.$name.set(0);)*
            }
        }
    };
}

stat_fields!(
    /// One core's counters, named as memcached's `stats` fields; `stats reset`
    /// zeroes them.
    CoreStats {
        cmd_get,
        cmd_set,
        cmd_flush,
        cmd_touch,
        get_hits,
        get_misses,
        delete_misses,
        delete_hits,
        incr_misses,
        incr_hits,
        decr_misses,
        decr_hits,
        cas_misses,
        cas_hits,
        cas_badval,
        touch_hits,
        touch_misses,
        store_too_large,
        store_no_memory,
        bytes_read,
        bytes_written,
        total_connections,
        rejected_connections,
        listen_disabled_num,
        forwarded_requests,
        forwarded_batches,
        wakes_sent,
        reply_polls,
        reply_polls_answered,
        loop_turns,
    }
);

stat_fields!(
    /// Figures a core copies from its shard once per loop turn, named as their
    /// `stats` fields: gauges and the shard's own counters, which `stats reset`
    /// does not zero. `stats` sums them over the cores.
    ShardGauges {
        bytes,
        curr_items,
        total_items,
        get_expired,
        get_flushed,
        expired_unfetched,
        evicted_unfetched,
        evictions,
        reclaimed,
        total_pages,
        slabs_moved,
        slab_reassign_rescues,
        policy_window_items,
        policy_probation_items,
        policy_protected_items,
        policy_admissions,
        policy_rejections,
        policy_window_ghost_hits,
        policy_main_ghost_hits,
        policy_sketch_bytes,
    }
);

/// Everything one core publishes.
#[derive(Default, Debug)]
pub struct CorePublished {
    pub counters: CoreStats,
    pub gauges: ShardGauges,
    /// The admission window's share of the shard's capacity, per mille (`stats`
    /// averages it over the cores).
    pub window_permille: Counter,
    /// Receive buffers the core has provided to the kernel (they grow when a
    /// loop turn runs out).
    pub receive_buffers: Counter,
    /// The shard's slab classes for `stats slabs` / `stats items`, copied once
    /// a second (a lock, taken that rarely, off the request path).
    pub slabs: std::sync::Mutex<Vec<crate::storage::SlabClassStats>>,
}

/// Each field's name and its sum over the cores.
pub fn summed<'a, I>(
    cores: &'a [CorePublished],
    fields: impl Fn(&'a CorePublished) -> I,
) -> Vec<(&'static str, u64)>
where
    I: Iterator<Item = (&'static str, u64)>,
{
    let mut totals: Vec<(&'static str, u64)> = Vec::new();
    for core in cores {
        for (i, (name, value)) in fields(core).enumerate() {
            match totals.get_mut(i) {
                Some((_, total)) => *total += value,
                None => totals.push((name, value)),
            }
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_and_reset() {
        let stats = CoreStats::default();
        stats.get_hits.incr();
        stats.get_hits.add(2);
        stats.cmd_get.incr();
        let fields: Vec<_> = stats.fields().filter(|(_, v)| *v > 0).collect();
        assert_eq!(fields, [("cmd_get", 1), ("get_hits", 3)]);
        stats.reset();
        assert!(stats.fields().all(|(_, v)| v == 0));
    }

    #[test]
    fn summed_adds_each_field_over_the_cores() {
        let cores: Vec<CorePublished> = (0..3).map(|_| CorePublished::default()).collect();
        for (i, core) in cores.iter().enumerate() {
            core.gauges.curr_items.add(i as u64 + 1);
            core.counters.cmd_get.add(10);
        }
        let gauges = summed(&cores, |c| c.gauges.fields());
        assert_eq!(
            gauges.iter().find(|(n, _)| *n == "curr_items"),
            Some(&("curr_items", 6))
        );
        assert_eq!(gauges.len(), cores[0].gauges.fields().count());
        let counters = summed(&cores, |c| c.counters.fields());
        assert_eq!(counters[0], ("cmd_get", 30));
    }
}
