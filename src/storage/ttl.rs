//! The TTL heap: (expiry, chunk id) of items with an expiry, earliest first, so the
//! reaper frees items as they come due without looking at the others.
//!
//! Entries are not removed when their item is deleted, rewritten or given a new
//! expiry (finding them would cost a search); such **stale** entries are skipped
//! when they come due. So that they do not pile up, a heap holding more than
//! twice as many entries as its shard has items checks a few entries on every
//! push ([`TtlHeap::sweep`]) and removes the stale ones where they stand. (A
//! rewrite that keeps its item's expiry pushes nothing, so the heap holds one
//! current entry per item; an expiry that returns to an earlier value can leave
//! identical copies, which count as current and go when they come due.) It never rebuilds itself at once:
//! telling a stale entry from a current one reads the item (a cache miss), and a
//! rebuild of a 2M-item shard stopped its core for 250 ms (measured, release
//! build), where a sweep costs a few misses per push.

/// One entry: (expiry in unix seconds, chunk id). Ordered by expiry first.
pub(crate) type Entry = (u32, u32);

#[derive(Default)]
pub(crate) struct TtlHeap {
    /// A binary min-heap of entries.
    heap: Vec<Entry>,
    /// The next position [`sweep`](Self::sweep) looks at.
    cursor: usize,
}

impl TtlHeap {
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Bytes of the heap's storage.
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Entry>()
    }

    pub fn push(&mut self, entry: Entry) {
        self.heap.push(entry);
        self.sift_up(self.heap.len() - 1);
    }

    /// The earliest entry.
    pub fn peek(&self) -> Option<Entry> {
        self.heap.first().copied()
    }

    /// Removes and returns the earliest entry.
    pub fn pop(&mut self) -> Option<Entry> {
        if self.heap.is_empty() {
            return None;
        }
        Some(self.remove_at(0))
    }

    /// Looks at up to `count` entries from where the last sweep stopped (going
    /// round), removing those `is_current` rejects. Returns how many it removed.
    pub fn sweep(&mut self, count: usize, mut is_current: impl FnMut(Entry) -> bool) -> usize {
        let mut removed = 0;
        for _ in 0..count {
            if self.heap.is_empty() {
                break;
            }
            if self.cursor >= self.heap.len() {
                self.cursor = 0;
            }
            if is_current(self.heap[self.cursor]) {
                self.cursor += 1;
            } else {
                // The entry moved into this position is looked at next.
                self.remove_at(self.cursor);
                removed += 1;
            }
        }
        removed
    }

    /// Takes out the entry at `i`: the last entry fills its place and sifts to
    /// where it belongs.
    fn remove_at(&mut self, i: usize) -> Entry {
        let last = self.heap.len() - 1;
        self.heap.swap(i, last);
        let removed = self.heap.pop().expect("not empty");
        if i < self.heap.len() {
            self.sift_down(i);
            self.sift_up(i);
        }
        removed
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[i] >= self.heap[parent] {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.heap[right] < self.heap[left] {
                right
            } else {
                left
            };
            if self.heap[i] <= self.heap[child] {
                break;
            }
            self.heap.swap(i, child);
            i = child;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pops_earliest_first_and_sweeps_out_stale_entries() {
        let mut h = TtlHeap::default();
        for (i, exp) in [50u32, 10, 40, 20, 30].into_iter().enumerate() {
            h.push((exp, i as u32));
        }
        assert_eq!(h.peek(), Some((10, 1)));
        // Ids 0 and 2 are stale: a sweep over every entry removes exactly them.
        assert_eq!(h.sweep(10, |(_, id)| id != 0 && id != 2), 2);
        assert_eq!(h.len(), 3);
        let order: Vec<Entry> = std::iter::from_fn(|| h.pop()).collect();
        assert_eq!(order, vec![(10, 1), (20, 3), (30, 4)]);
        assert_eq!(h.sweep(4, |_| false), 0, "an empty heap sweeps nothing");
    }

    #[test]
    fn sweeps_resume_where_they_stopped() {
        let mut h = TtlHeap::default();
        for i in 0..8 {
            h.push((i, i));
        }
        let mut seen = Vec::new();
        h.sweep(3, |(_, id)| {
            seen.push(id);
            true
        });
        h.sweep(3, |(_, id)| {
            seen.push(id);
            true
        });
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            6,
            "two sweeps of 3 looked at 6 different entries"
        );
    }

    proptest! {
        /// Pushes, pops and sweeps in any order: pops come out as from a sorted
        /// model, and a sweep removes exactly the entries it rejects.
        #[test]
        fn heap_matches_a_sorted_model(ops in prop::collection::vec(
            prop_oneof![
                (0u32..100, 0u32..50).prop_map(|(e, id)| (0u8, e, id)),
                Just((1u8, 0, 0)),
                (1u32..20, 0u32..50).prop_map(|(n, id)| (2u8, n, id)),
            ],
            1..300,
        )) {
            let mut h = TtlHeap::default();
            let mut model: Vec<Entry> = Vec::new();
            for (op, a, b) in ops {
                match op {
                    0 => {
                        h.push((a, b));
                        model.push((a, b));
                    }
                    1 => {
                        model.sort_unstable();
                        let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                        prop_assert_eq!(h.pop(), want);
                    }
                    _ => {
                        // Entries with id b are stale: the sweep may remove some
                        // of them and nothing else.
                        let removed = h.sweep(a as usize, |(_, id)| id != b);
                        let mut left: Vec<Entry> = h.heap.clone();
                        left.sort_unstable();
                        model.sort_unstable();
                        let mut gone = Vec::new();
                        let mut i = 0;
                        for &e in &model {
                            if i < left.len() && left[i] == e {
                                i += 1;
                            } else {
                                gone.push(e);
                            }
                        }
                        prop_assert_eq!(i, left.len(), "the heap kept only model entries");
                        prop_assert_eq!(gone.len(), removed);
                        prop_assert!(gone.iter().all(|&(_, id)| id == b));
                        model = left;
                    }
                }
                for i in 1..h.heap.len() {
                    prop_assert!(h.heap[(i - 1) / 2] <= h.heap[i], "heap order");
                }
                let mut a = h.heap.clone();
                let mut m = model.clone();
                a.sort_unstable();
                m.sort_unstable();
                prop_assert_eq!(a, m);
            }
        }
    }
}
