//! The eviction policy: for now a plain LRU per slab class.
//!
//! The shard talks to the policy through four calls only: [`Lru::insert`] when an
//! item is stored, [`Lru::access`] when it is read, [`Lru::remove`] when it leaves,
//! and [`Lru::victims`] for candidates to evict, best first. W-TinyLFU (window,
//! probation, protected segments and a frequency sketch) will replace this module
//! behind the same calls.
//!
//! The list is intrusive: `prev`/`next` live in the item header as chunk ids, so it
//! costs 8 bytes per item inside the arena and nothing outside it. `head` is the most
//! recently used item, `tail` the least.

use super::item::{self, NIL};
use super::slab::Slabs;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Lru {
    pub head: u32,
    pub tail: u32,
}

impl Default for Lru {
    fn default() -> Self {
        Lru {
            head: NIL,
            tail: NIL,
        }
    }
}

impl Lru {
    /// A newly stored item enters at the most recent end of its class's list.
    pub fn insert(slabs: &mut Slabs, id: u32) {
        let class = slabs.class_of(id);
        let head = slabs.classes[class].lru.head;
        {
            let b = slabs.item_mut(id);
            item::set_prev(b, NIL);
            item::set_next(b, head);
        }
        if head != NIL {
            item::set_prev(slabs.item_mut(head), id);
        }
        let lru = &mut slabs.classes[class].lru;
        lru.head = id;
        if lru.tail == NIL {
            lru.tail = id;
        }
    }

    /// Unlinks an item from its class's list.
    pub fn remove(slabs: &mut Slabs, id: u32) {
        let class = slabs.class_of(id);
        let (prev, next) = {
            let b = slabs.item(id);
            (item::prev(b), item::next(b))
        };
        if prev != NIL {
            item::set_next(slabs.item_mut(prev), next);
        } else {
            slabs.classes[class].lru.head = next;
        }
        if next != NIL {
            item::set_prev(slabs.item_mut(next), prev);
        } else {
            slabs.classes[class].lru.tail = prev;
        }
        let b = slabs.item_mut(id);
        item::set_prev(b, NIL);
        item::set_next(b, NIL);
    }

    /// A read moves the item to the most recent end.
    pub fn access(slabs: &mut Slabs, id: u32) {
        let class = slabs.class_of(id);
        if slabs.classes[class].lru.head != id {
            Self::remove(slabs, id);
            Self::insert(slabs, id);
        }
    }

    /// Eviction candidates of `class`, best first (least recently used first).
    pub fn victims(slabs: &Slabs, class: usize) -> impl Iterator<Item = u32> + '_ {
        let mut id = slabs.classes[class].lru.tail;
        std::iter::from_fn(move || {
            if id == NIL {
                return None;
            }
            let cur = id;
            id = item::prev(slabs.item(cur));
            Some(cur)
        })
    }

    /// The items of `class` from most to least recently used.
    pub fn iter(slabs: &Slabs, class: usize) -> impl Iterator<Item = u32> + '_ {
        let mut id = slabs.classes[class].lru.head;
        std::iter::from_fn(move || {
            if id == NIL {
                return None;
            }
            let cur = id;
            id = item::next(slabs.item(cur));
            Some(cur)
        })
    }
}
