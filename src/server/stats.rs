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

macro_rules! core_counters {
    ($($name:ident),* $(,)?) => {
        /// One core's counters, named as memcached's `stats` fields.
        #[derive(Default, Debug)]
        pub struct CoreStats {
            $(pub $name: Counter,)*
        }

        impl CoreStats {
            /// Each counter's name and value, in declaration order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name.get()),)*].into_iter()
            }

            /// `stats reset`: zeroes the counters that memcached resets.
            pub fn reset(&self) {
                $(self.$name.set(0);)*
            }
        }
    };
}

core_counters!(
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
    bytes_read,
    bytes_written,
    total_connections,
    rejected_connections,
    forwarded_requests,
    forwarded_batches,
);

/// Figures a core copies from its shard once per loop turn: gauges and the
/// shard's own counters, which `stats reset` does not zero.
#[derive(Default, Debug)]
pub struct ShardGauges {
    pub curr_items: Counter,
    pub total_items: Counter,
    pub bytes: Counter,
    pub evictions: Counter,
    pub expired_unfetched: Counter,
    pub evicted_unfetched: Counter,
    pub reclaimed: Counter,
    pub get_expired: Counter,
    pub get_flushed: Counter,
    pub total_pages: Counter,
    pub curr_connections: Counter,
    pub slabs_moved: Counter,
    pub slab_reassign_rescues: Counter,
    pub window_permille: Counter,
    pub window_items: Counter,
    pub probation_items: Counter,
    pub protected_items: Counter,
    pub admissions: Counter,
    pub rejections: Counter,
    pub sketch_bytes: Counter,
}

/// Everything one core publishes.
#[derive(Default, Debug)]
pub struct CorePublished {
    pub counters: CoreStats,
    pub gauges: ShardGauges,
    /// The shard's slab classes for `stats slabs` / `stats items`, copied once
    /// a second (a lock, taken that rarely, off the request path).
    pub slabs: std::sync::Mutex<Vec<crate::storage::SlabClassStats>>,
}

/// Sums a field over all cores.
pub fn sum(cores: &[CorePublished], field: impl Fn(&CorePublished) -> u64) -> u64 {
    cores.iter().map(field).sum()
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
}
