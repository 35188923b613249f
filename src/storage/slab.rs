//! The arena and its slab classes: where item bytes live.
//!
//! The arena is one anonymous `memmap2` mapping per shard (plus one more for each
//! time `cache_memlimit` raises the limit past what is mapped), or one file
//! mapping (below), cut into pages of
//! `page_size` bytes. The kernel backs a page with memory only when it is first
//! written, and pages are handed out one at a time, so an idle shard costs nothing.
//!
//! Each page belongs to at most one slab class, which cuts it into equal chunks.
//! Chunks are carved from a page lazily, in slot order, so a page's bytes are only
//! touched as items land in them. Freed chunks go on the class's free list.
//!
//! # Chunk ids
//!
//! A chunk is named by a `u32`, used for the index, the recency links and the TTL
//! heap. The split between page and slot bits is fixed per shard by the most chunks
//! any class fits in a page (`page_size / smallest chunk`):
//!
//! ```text
//!  bit 31                       S  S-1                   0
//!      +--------------------------+------------------------+
//!      | page index (32 - S bits) | slot in page (S bits)  |
//!      +--------------------------+------------------------+
//!
//!  S = bits for (page_size / min_chunk_size - 1)
//!  defaults (1 MiB pages, 48 B chunks): S = 15, 17 page bits,
//!  so up to 2^17 - 1 pages = 128 GiB per shard.
//!  u32::MAX (all ones) is NIL; the all-ones page index is never handed out.
//! ```
//!
//! A chunk's byte offset is `slot * chunk_size` inside its page, where the page's
//! class gives `chunk_size`.
//!
//! # File-backed arenas (warm restart)
//!
//! With `--memory-file` the arena is instead one shared mapping of a file (on
//! tmpfs), made by [`Slabs::new_in_file`]: the file's first `header_len` bytes are
//! the warm-restart header (`warm.rs`), the pages follow. Such an arena never
//! grows: `cache_memlimit` above the file's size is refused.
//!
//! # Unsafe code
//!
//! The storage side's `unsafe` blocks are all here, each with its `SAFETY` note:
//! item access through the page-start table (`Slabs::chunk`, `item`,
//! `item_mut`: a chunk is checked to lie inside its page, and pages lie inside
//! mappings the `Slabs` owns for its whole life), `Send` and `Sync` for `Slabs`
//! (the page-start pointers move and are shared with the mappings they point
//! into), the word view of
//! [`MappedWords`], the prefetch hint, and mapping a file (`MmapMut::map_mut`):
//! that one is sound only while no one else changes the file's length or bytes
//! under the mapping. The file is locked with an exclusive
//! `flock` before it is mapped, sized before it is mapped, owned by the `Slabs`
//! (nothing else holds a handle to resize it) and never truncated while mapped;
//! see the `SAFETY` comment in [`Slabs::new_in_file`].

use std::fs::File;
use std::io;
use std::ptr::NonNull;

use memmap2::{Advice, MmapMut, MmapOptions};
use nix::fcntl::Flock;

/// The page has no class: free in the pool, or never used.
pub(crate) const NO_CLASS: u16 = u16::MAX;

/// Per-page bookkeeping (16 bytes per page, outside the arena).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageMeta {
    /// Owning class index, or [`NO_CLASS`].
    pub class: u16,
    /// Chunk size of the owning class (saves a lookup on every item access).
    pub chunk_size: u32,
    /// Slots handed out so far; slots at and past this were never written by
    /// the current class and hold stale bytes.
    pub carved: u32,
    /// Chunks of this page holding live items.
    pub live: u32,
}

/// One slab class: a chunk size and the pages cut into it.
pub(crate) struct SlabClass {
    pub size: u32,
    pub per_page: u32,
    pub pages: u32,
    /// Free chunk ids (carved, not live).
    pub free: Vec<u32>,
    /// The page chunks are being carved from, if it has uncarved slots left.
    pub carving: Option<u32>,
    /// Live items (= used chunks).
    pub items: u64,
    pub evicted: u64,
    /// Pages this class took from other classes (rebalancing).
    pub pages_moved_in: u64,
    /// Pages other classes took from this one.
    pub pages_moved_out: u64,
    /// Live items of this class's size held in chunks of a larger class (a
    /// sparse class lent its last page: see `Shard`'s "Sparse classes").
    pub guests: u32,
}

struct Segment {
    map: MmapMut,
    /// Offset of the first page in `map` (the header's length in a file mapping).
    base: usize,
}

/// The geometry every chunk id depends on, computed from the sizing alone.
pub(crate) struct Layout {
    pub sizes: Vec<usize>,
    pub slot_bits: u32,
    /// Most pages a chunk id can name.
    pub id_page_cap: usize,
}

impl Layout {
    pub fn new(page_size: usize, min_chunk: usize, factor: f64) -> Layout {
        let sizes = class_sizes(min_chunk, factor, page_size);
        let most_per_page = page_size / sizes[0];
        let slot_bits = u32::BITS - (most_per_page.max(1) as u32 - 1).leading_zeros();
        let page_bits = u32::BITS - slot_bits;
        let id_page_cap = ((1u64 << page_bits) - 1) as usize;
        Layout {
            sizes,
            slot_bits,
            id_page_cap,
        }
    }

    /// Pages a memory limit of `bytes` allows.
    pub fn pages_for(&self, bytes: usize, page_size: usize) -> usize {
        (bytes / page_size).min(self.id_page_cap)
    }
}

pub(crate) struct Slabs {
    segments: Vec<Segment>,
    /// Where each mapped page starts, by page id: an item access is then one
    /// table read and an add, not a search of the segments and two slice bounds
    /// checks (it ran several times per request and was a fifth of a cached
    /// get's instructions). Every pointer points into a mapping of `segments`,
    /// which live as long as the `Slabs` and are never unmapped or moved (a
    /// mapping's address does not change when its `MmapMut` moves).
    page_starts: Vec<NonNull<u8>>,
    page_size: usize,
    slot_bits: u32,
    /// Most pages a chunk id can name (the all-ones page index is reserved).
    id_page_cap: usize,
    /// One entry per page handed out at least once; index = page id.
    pub pages: Vec<PageMeta>,
    /// Pages given back (the limit was lowered), reused before fresh ones.
    free_pages: Vec<u32>,
    /// Pages that belong to a class now.
    pub pages_in_use: usize,
    /// The most pages the memory limit allows.
    pub max_pages: usize,
    pub classes: Vec<SlabClass>,
    /// The locked file a file-backed arena maps (segment 0 is its mapping).
    file: Option<Flock<File>>,
    /// `-L`: new anonymous segments are advised to use transparent huge pages.
    /// Items are reached at random, and with 4 KiB pages a large arena makes
    /// nearly every item access a TLB miss too.
    huge_pages: bool,
}

// SAFETY: the only fields that are not Send and Sync on their own are the
// `page_starts` pointers, which point into the mappings `segments` owns: moving a
// `Slabs` to another thread moves those mappings with it, and a shared `&Slabs`
// only ever reads chunk bytes (writes need `&mut Slabs`), as a shared `&MmapMut`
// would. So the arena is as Send and Sync as its mappings are.
unsafe impl Send for Slabs {}
unsafe impl Sync for Slabs {}

/// A zeroed table of `u64` words in an anonymous mapping of its own, for tables
/// that grow by reallocation (the policy's sketch and doorkeeper): dropping one
/// gives its memory back to the kernel at once, where malloc may keep a freed
/// heap block of a few MB resident for reuse (measured: the outgrown tables of a
/// sketch sized for 1M items stayed resident, as much again as the live one).
pub(crate) struct MappedWords {
    map: Option<MmapMut>,
}

impl MappedWords {
    pub fn empty() -> MappedWords {
        MappedWords { map: None }
    }

    pub fn zeroed(words: usize) -> io::Result<MappedWords> {
        if words == 0 {
            return Ok(MappedWords::empty());
        }
        let bytes = words
            .checked_mul(8)
            .ok_or_else(|| io::Error::new(io::ErrorKind::OutOfMemory, "table too large"))?;
        Ok(MappedWords {
            map: Some(MmapMut::map_anon(bytes)?),
        })
    }
}

impl std::ops::Deref for MappedWords {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match &self.map {
            None => &[],
            // SAFETY: an anonymous mapping starts on a page boundary (so is
            // 8-aligned), its length is a multiple of 8 (`zeroed`), it is
            // initialized (zero-filled by the kernel) and any 8 bytes are a
            // valid u64; the slice borrows `self`, which owns the mapping.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<u64>(), m.len() / 8) },
        }
    }
}

impl std::ops::DerefMut for MappedWords {
    fn deref_mut(&mut self) -> &mut [u64] {
        match &mut self.map {
            None => &mut [],
            // SAFETY: as in `deref`; the mapping is writable (`MmapMut`) and the
            // slice borrows `self` mutably, so no other reference to it exists.
            Some(m) => unsafe {
                std::slice::from_raw_parts_mut(m.as_mut_ptr().cast::<u64>(), m.len() / 8)
            },
        }
    }
}

/// Asks the CPU to start loading the cache line holding `*at` without waiting
/// for it (the arena's items here, the index's buckets in `index.rs`).
#[inline]
pub(crate) fn prefetch_read<T>(at: &T) {
    let address = at as *const T as *const i8;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads nothing into the
    // program; the address comes from a live reference, and SSE (which provides
    // the instruction) is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(address)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Chunk sizes: `min_chunk` growing by `factor`, rounded up to 8 bytes, while the
/// next class is still at most `page_size / factor`; the last class is a whole page.
pub(crate) fn class_sizes(min_chunk: usize, factor: f64, page_size: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = round8(min_chunk);
    while (size as f64) <= page_size as f64 / factor && sizes.len() < (NO_CLASS as usize - 1) {
        sizes.push(size);
        size = round8(((size as f64) * factor) as usize).max(size + 8);
    }
    sizes.push(page_size);
    sizes
}

pub(crate) fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl Slabs {
    pub fn new(
        memory_limit: usize,
        page_size: usize,
        min_chunk: usize,
        factor: f64,
        huge_pages: bool,
    ) -> io::Result<Slabs> {
        let mut slabs = Slabs::empty(page_size, min_chunk, factor);
        slabs.huge_pages = huge_pages;
        slabs.set_limit(memory_limit)?;
        Ok(slabs)
    }

    /// An arena in `file`, already locked and sized to `header_len` bytes plus
    /// the pages `memory_limit` allows: the header stays at the start of the
    /// mapping ([`file_header_mut`](Self::file_header_mut)), pages follow. The limit can
    /// later be lowered, never raised past the file.
    pub fn new_in_file(
        memory_limit: usize,
        page_size: usize,
        min_chunk: usize,
        factor: f64,
        file: Flock<File>,
        header_len: usize,
    ) -> io::Result<Slabs> {
        let mut slabs = Slabs::empty(page_size, min_chunk, factor);
        let pages = (memory_limit / page_size).min(slabs.id_page_cap);
        let len = header_len + pages * page_size;
        if file.metadata()?.len() != len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("memory file is not sized to {len} bytes"),
            ));
        }
        // SAFETY: `map_mut` is unsafe because another handle could change the
        // file's bytes or length while it is mapped (a truncation makes accesses
        // fault). Here: the caller opened the file and took an exclusive `flock`
        // on it (`Flock<File>`), so no cooperating process (another corecache
        // with the same path) maps it at the same time; it was sized (`set_len`)
        // before this call and the length was just checked; the only handle is
        // moved into this `Slabs`, which never resizes it, and the mapping is
        // dropped together with it. The arena only reads bytes as plain `[u8]`
        // (no references into the file are assumed to be valid Rust values), so
        // whatever the file held before is at worst wrong data, which the
        // warm-restart checks reject.
        let map = unsafe { MmapOptions::new().len(len).map_mut(&*file)? };
        slabs.add_segment(map, header_len, pages);
        slabs.max_pages = pages;
        slabs.file = Some(file);
        Ok(slabs)
    }

    fn empty(page_size: usize, min_chunk: usize, factor: f64) -> Slabs {
        let Layout {
            sizes,
            slot_bits,
            id_page_cap,
        } = Layout::new(page_size, min_chunk, factor);
        let classes = sizes
            .iter()
            .map(|&s| SlabClass {
                size: s as u32,
                per_page: (page_size / s) as u32,
                pages: 0,
                free: Vec::new(),
                carving: None,
                items: 0,
                evicted: 0,
                pages_moved_in: 0,
                pages_moved_out: 0,
                guests: 0,
            })
            .collect();
        Slabs {
            segments: Vec::new(),
            page_starts: Vec::new(),
            page_size,
            slot_bits,
            id_page_cap,
            pages: Vec::new(),
            free_pages: Vec::new(),
            pages_in_use: 0,
            max_pages: 0,
            classes,
            file: None,
            huge_pages: false,
        }
    }

    /// Whether the arena lives in a memory file.
    pub fn is_file_backed(&self) -> bool {
        self.file.is_some()
    }

    /// The warm-restart header at the start of the memory file.
    pub fn file_header_mut(&mut self) -> Option<&mut [u8]> {
        self.file.as_ref()?;
        let seg = &mut self.segments[0];
        Some(&mut seg.map[..seg.base])
    }

    /// Writes the whole file mapping back (`msync`); nothing to do for an
    /// anonymous arena.
    pub fn flush_file(&self) -> io::Result<()> {
        match self.file {
            Some(_) => self.segments[0].map.flush(),
            None => Ok(()),
        }
    }

    /// Warm restart: takes back the page table saved at a clean shutdown, one
    /// (class, carved slots) pair per page handed out, in page order. Chunks are
    /// not looked at: the caller walks every carved chunk and calls
    /// [`restore_live`](Self::restore_live) or [`restore_free`](Self::restore_free).
    /// An error means the table does not fit this arena.
    pub fn restore_pages(&mut self, table: &[(u16, u32)]) -> Result<(), String> {
        if !self.pages.is_empty() || self.pages_in_use != 0 {
            return Err("the arena is not empty".into());
        }
        if table.len() > self.mapped_pages() {
            return Err(format!(
                "{} pages in the table, {} in the file",
                table.len(),
                self.mapped_pages()
            ));
        }
        for (page, &(class, carved)) in table.iter().enumerate() {
            let page = page as u32;
            if class == NO_CLASS {
                self.pages.push(PageMeta {
                    class: NO_CLASS,
                    chunk_size: 0,
                    carved: 0,
                    live: 0,
                });
                self.free_pages.push(page);
                continue;
            }
            let Some(c) = self.classes.get_mut(class as usize) else {
                return Err(format!("page {page}: no class {class}"));
            };
            if carved > c.per_page {
                return Err(format!(
                    "page {page}: {carved} chunks carved, class {class} has {}",
                    c.per_page
                ));
            }
            c.pages += 1;
            if carved < c.per_page {
                if c.carving.is_none() {
                    c.carving = Some(page);
                } else {
                    // A second partly carved page (never made, but harmless):
                    // carve it to the end now; the walk frees the new chunks.
                    let (per_page, size) = (c.per_page, c.size as usize);
                    self.pages.push(PageMeta {
                        class,
                        chunk_size: size as u32,
                        carved: per_page,
                        live: 0,
                    });
                    for slot in carved..per_page {
                        let id = self.make_id(page, slot);
                        super::item::set_state(self.item_mut(id), 0);
                    }
                    self.pages_in_use += 1;
                    continue;
                }
            }
            let chunk_size = c.size;
            self.pages.push(PageMeta {
                class,
                chunk_size,
                carved,
                live: 0,
            });
            self.pages_in_use += 1;
        }
        if self.pages_in_use > self.max_pages {
            return Err(format!(
                "{} pages in use, the limit allows {}",
                self.pages_in_use, self.max_pages
            ));
        }
        Ok(())
    }

    /// Warm restart: chunk `id` (carved, in a restored page) holds a live item.
    pub fn restore_live(&mut self, id: u32) {
        let page = self.page_of(id) as usize;
        self.pages[page].live += 1;
        let class = self.pages[page].class as usize;
        self.classes[class].items += 1;
    }

    /// Warm restart: chunk `id` (carved, in a restored page) is free.
    pub fn restore_free(&mut self, id: u32) {
        super::item::set_state(self.item_mut(id), 0);
        let class = self.class_of(id);
        self.classes[class].free.push(id);
    }

    #[cfg(test)]
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn bytes_mapped(&self) -> usize {
        self.mapped_pages() * self.page_size
    }

    /// Sets the page budget for `bytes` of memory and maps more pages if needed.
    /// Does not give pages back: the caller empties pages while
    /// `pages_in_use > max_pages`.
    pub fn set_limit(&mut self, bytes: usize) -> io::Result<()> {
        let want = (bytes / self.page_size).min(self.id_page_cap);
        if want > self.mapped_pages() && self.file.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the memory file holds {} pages, {want} asked for",
                    self.mapped_pages()
                ),
            ));
        }
        if want > self.mapped_pages() {
            let add = want - self.mapped_pages();
            match MmapMut::map_anon(add * self.page_size) {
                Ok(map) => {
                    if self.huge_pages {
                        // Where the kernel allows no huge pages the advice is
                        // refused, and the arena works as without -L.
                        let _ = map.advise(Advice::HugePage);
                    }
                    self.add_segment(map, 0, add);
                }
                Err(e) => {
                    self.max_pages = self.max_pages.min(self.mapped_pages());
                    return Err(e);
                }
            }
        }
        self.max_pages = want;
        Ok(())
    }

    /// The smallest class whose chunks hold `size` bytes.
    #[inline]
    pub fn class_for(&self, size: usize) -> Option<usize> {
        let i = self.classes.partition_point(|c| (c.size as usize) < size);
        (i < self.classes.len()).then_some(i)
    }

    #[inline]
    pub fn page_of(&self, id: u32) -> u32 {
        id >> self.slot_bits
    }

    #[inline]
    fn slot_of(&self, id: u32) -> u32 {
        id & ((1u32 << self.slot_bits) - 1)
    }

    #[inline]
    pub fn make_id(&self, page: u32, slot: u32) -> u32 {
        (page << self.slot_bits) | slot
    }

    /// Bytes of the per-page tables outside the arena (metadata and start
    /// addresses).
    pub fn page_table_bytes(&self) -> usize {
        self.pages.capacity() * std::mem::size_of::<PageMeta>()
            + self.page_starts.capacity() * std::mem::size_of::<NonNull<u8>>()
    }

    /// Maps `pages` more pages: those of `map` from byte `base` on.
    fn add_segment(&mut self, mut map: MmapMut, base: usize, pages: usize) {
        assert!(base + pages * self.page_size <= map.len());
        let first = map.as_mut_ptr().wrapping_add(base);
        self.page_starts.extend((0..pages).map(|p| {
            NonNull::new(first.wrapping_add(p * self.page_size)).expect("a mapping is not at 0")
        }));
        self.segments.push(Segment { map, base });
    }

    /// Pages mapped over all segments (every one has its start recorded).
    fn mapped_pages(&self) -> usize {
        self.page_starts.len()
    }

    /// Where chunk `id` starts and how long it is. Panics (instead of reaching
    /// past its page) for an id whose slot lies beyond its page's end.
    #[inline]
    fn chunk(&self, id: u32) -> (NonNull<u8>, usize) {
        let page = self.page_of(id) as usize;
        let size = self.pages[page].chunk_size as usize;
        let offset = self.slot_of(id) as usize * size;
        assert!(
            offset + size <= self.page_size,
            "chunk {id} is past its page"
        );
        // SAFETY: `offset + size <= page_size`, so the result stays inside the
        // page, which lies inside its mapping (`add_segment`).
        (unsafe { self.page_starts[page].add(offset) }, size)
    }

    /// The bytes of chunk `id`.
    #[inline]
    pub fn item(&self, id: u32) -> &[u8] {
        let (start, size) = self.chunk(id);
        // SAFETY: `chunk` gives `size` bytes inside a live mapping of
        // `self.segments` (readable, initialized: zero-filled by the kernel or
        // the file's bytes); the slice borrows `self`, and the only way to
        // write arena bytes is through `&mut self`, so nothing writes them while
        // the slice lives.
        unsafe { std::slice::from_raw_parts(start.as_ptr(), size) }
    }

    /// Asks the CPU to start loading the first cache lines of chunk `id` (the
    /// header, the key and the start of the value) without waiting for them, so
    /// that lookups of a batch of requests overlap their cache misses instead of
    /// taking them one after another.
    #[inline]
    pub fn prefetch(&self, id: u32) {
        const CACHE_LINE: usize = 64;
        const LINES: usize = 3;
        let chunk = self.item(id);
        for line in 0..LINES.min(chunk.len().div_ceil(CACHE_LINE)) {
            prefetch_read(&chunk[line * CACHE_LINE]);
        }
    }

    /// The bytes of chunk `id`, writable.
    #[inline]
    pub fn item_mut(&mut self, id: u32) -> &mut [u8] {
        let (start, size) = self.chunk(id);
        // SAFETY: as in `item`, and the mapping is writable (`MmapMut`); the
        // slice borrows `self` mutably, so no other reference to these bytes
        // exists while it lives (`file_header_mut` covers bytes before the
        // first page, never a chunk).
        unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), size) }
    }

    /// Whether `id` names a carved chunk in the current layout of its page (ids
    /// kept elsewhere, like the TTL heap's, may outlive their page's class).
    pub fn is_valid(&self, id: u32) -> bool {
        if id == super::item::NIL {
            return false;
        }
        match self.pages.get(self.page_of(id) as usize) {
            Some(p) => p.class != NO_CLASS && self.slot_of(id) < p.carved,
            None => false,
        }
    }

    /// The class of chunk `id`.
    #[inline]
    pub fn class_of(&self, id: u32) -> usize {
        self.pages[self.page_of(id) as usize].class as usize
    }

    /// A chunk of `class` without evicting anything: from its free list, from the
    /// page it is carving, or from a new page if the limit allows one. The chunk is
    /// counted as used; the caller writes an item into it.
    pub fn alloc(&mut self, class: usize) -> Option<u32> {
        let id = if let Some(id) = self.classes[class].free.pop() {
            id
        } else if let Some(id) = self.carve(class) {
            id
        } else {
            let page = self.new_page()?;
            self.assign(page, class);
            self.carve(class)?
        };
        let page = self.page_of(id) as usize;
        self.pages[page].live += 1;
        self.classes[class].items += 1;
        Some(id)
    }

    fn carve(&mut self, class: usize) -> Option<u32> {
        let page = self.classes[class].carving?;
        let per_page = self.classes[class].per_page;
        let meta = &mut self.pages[page as usize];
        let slot = meta.carved;
        meta.carved += 1;
        let done = meta.carved >= per_page;
        if done {
            self.classes[class].carving = None;
        }
        Some(self.make_id(page, slot))
    }

    /// A page with no class, if the limit allows one more in use.
    fn new_page(&mut self) -> Option<u32> {
        if self.pages_in_use >= self.max_pages {
            return None;
        }
        let page = if let Some(p) = self.free_pages.pop() {
            p
        } else if self.pages.len() < self.mapped_pages() {
            self.pages.push(PageMeta {
                class: NO_CLASS,
                chunk_size: 0,
                carved: 0,
                live: 0,
            });
            (self.pages.len() - 1) as u32
        } else {
            return None;
        };
        self.pages_in_use += 1;
        Some(page)
    }

    /// Gives an unowned page to `class`.
    fn assign(&mut self, page: u32, class: usize) {
        let c = &mut self.classes[class];
        c.pages += 1;
        c.carving = Some(page);
        self.pages[page as usize] = PageMeta {
            class: class as u16,
            chunk_size: c.size,
            carved: 0,
            live: 0,
        };
    }

    /// Takes an empty page (no live chunks) away from its class.
    fn unassign(&mut self, page: u32) {
        let meta = self.pages[page as usize];
        debug_assert_eq!(meta.live, 0, "page {page} still holds items");
        debug_assert_ne!(meta.class, NO_CLASS);
        let slot_bits = self.slot_bits;
        let c = &mut self.classes[meta.class as usize];
        c.pages -= 1;
        c.free.retain(|&id| id >> slot_bits != page);
        if c.carving == Some(page) {
            c.carving = None;
        }
        self.pages[page as usize].class = NO_CLASS;
        self.pages[page as usize].carved = 0;
    }

    /// Moves an empty page from its class to `class`.
    pub fn reassign(&mut self, page: u32, class: usize) {
        let from = self.pages[page as usize].class as usize;
        self.classes[from].pages_moved_out += 1;
        self.classes[class].pages_moved_in += 1;
        self.unassign(page);
        self.assign(page, class);
    }

    /// Gives an empty page back to the pool (the limit was lowered).
    pub fn release(&mut self, page: u32) {
        self.unassign(page);
        self.free_pages.push(page);
        self.pages_in_use -= 1;
    }

    /// A free chunk of `class` outside `page` (from its free list, or cut from
    /// the page it is carving), counted as used: where an item of `page` can go
    /// when the page is moved to another class.
    pub fn alloc_outside(&mut self, class: usize, page: u32) -> Option<u32> {
        let slot_bits = self.slot_bits;
        let c = &mut self.classes[class];
        let id = match c.free.iter().rposition(|&id| id >> slot_bits != page) {
            Some(at) => c.free.swap_remove(at),
            // The page the class is cutting chunks from has room too.
            None if c.carving.is_some_and(|p| p != page) => self.carve(class)?,
            None => return None,
        };
        self.classes[class].items += 1;
        self.pages[(id >> slot_bits) as usize].live += 1;
        Some(id)
    }

    /// Copies chunk `from` to the front of chunk `to`, of the same or a larger
    /// class.
    pub fn copy_chunk(&mut self, from: u32, to: u32) {
        let bytes = self.item(from).to_vec();
        self.item_mut(to)[..bytes.len()].copy_from_slice(&bytes);
    }

    /// Free chunks `class` holds now, in its free list and not yet carved.
    pub fn free_chunks(&self, class: usize) -> u32 {
        let c = &self.classes[class];
        let uncarved = c
            .carving
            .map_or(0, |p| c.per_page - self.pages[p as usize].carved);
        c.free.len() as u32 + uncarved
    }

    /// The page of `class` holding the fewest live items.
    pub fn emptiest_page(&self, class: usize) -> Option<u32> {
        (0..self.pages.len() as u32)
            .filter(|&p| self.pages[p as usize].class as usize == class)
            .min_by_key(|&p| self.pages[p as usize].live)
    }

    /// Returns chunk `id` to its class's free list. The item must already be out of
    /// the index and the recency list.
    pub fn free(&mut self, id: u32) {
        let b = self.item_mut(id);
        super::item::set_state(b, 0);
        let page = self.page_of(id) as usize;
        self.pages[page].live -= 1;
        let class = self.pages[page].class as usize;
        let c = &mut self.classes[class];
        c.items -= 1;
        c.free.push(id);
    }

    /// Chunks `class` holds at most with the pages it has now.
    pub fn capacity(&self, class: usize) -> u32 {
        self.classes[class].pages * self.classes[class].per_page
    }

    /// Ids of the live chunks in `page`.
    pub fn live_in_page(&self, page: u32) -> Vec<u32> {
        let carved = self.pages[page as usize].carved;
        (0..carved)
            .map(|slot| self.make_id(page, slot))
            .filter(|&id| super::item::is_live(self.item(id)))
            .collect()
    }
}

/// The policy's lists live in the item headers.
impl super::policy::Entries for Slabs {
    #[inline]
    fn prev(&self, id: u32) -> u32 {
        super::item::prev(self.item(id))
    }
    #[inline]
    fn next(&self, id: u32) -> u32 {
        super::item::next(self.item(id))
    }
    #[inline]
    fn set_prev(&mut self, id: u32, v: u32) {
        super::item::set_prev(self.item_mut(id), v)
    }
    #[inline]
    fn set_next(&mut self, id: u32, v: u32) {
        super::item::set_next(self.item_mut(id), v)
    }
    #[inline]
    fn segment(&self, id: u32) -> super::policy::Segment {
        super::policy::Segment::from_bits(super::item::segment(self.item(id)))
    }
    #[inline]
    fn set_segment(&mut self, id: u32, s: super::policy::Segment) {
        super::item::set_segment(self.item_mut(id), s as u8)
    }
    #[inline]
    fn key_hash(&self, id: u32) -> u64 {
        crate::keyhash::key_hash(super::item::key(self.item(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_sizes_grow_by_factor_and_end_at_page() {
        let sizes = class_sizes(48, 1.25, 1 << 20);
        assert_eq!(sizes[0], 48);
        assert_eq!(sizes[1], 64); // 60 rounded up to 8
        assert_eq!(*sizes.last().unwrap(), 1 << 20);
        for w in sizes.windows(2) {
            assert!(w[1] > w[0]);
            assert!(w[1] % 8 == 0 || w[1] == 1 << 20);
        }
    }

    #[test]
    fn a_moved_pages_items_can_go_to_the_page_being_carved() {
        let mut s = Slabs::new(4 << 20, 1 << 20, 48, 1.25, false).unwrap();
        // A class of a few hundred chunks per page.
        let class = s.classes.iter().position(|c| c.per_page <= 500).unwrap();
        let per_page = s.classes[class].per_page;
        assert!(per_page > 2);
        let first: Vec<u32> = (0..per_page).map(|_| s.alloc(class).unwrap()).collect();
        let full = s.page_of(first[0]);
        // A second page, partly cut; no free chunks anywhere.
        let on_second = s.alloc(class).unwrap();
        assert_ne!(s.page_of(on_second), full);
        assert!(s.classes[class].free.is_empty());
        let to = s
            .alloc_outside(class, full)
            .expect("room on the page being carved");
        assert_eq!(s.page_of(to), s.page_of(on_second));
        assert_eq!(s.pages[s.page_of(to) as usize].live, 2);
        // Never a chunk of the page being emptied.
        s.free(first[1]);
        let to = s.alloc_outside(class, full).unwrap();
        assert_ne!(s.page_of(to), full);
    }

    #[test]
    fn chunk_ids_split_page_and_slot() {
        let s = Slabs::new(4 << 20, 1 << 20, 48, 1.25, false).unwrap();
        assert_eq!(s.slot_bits, 15);
        let id = s.make_id(3, 21844);
        assert_eq!(s.page_of(id), 3);
        assert_eq!(s.slot_of(id), 21844);
        assert_eq!(s.max_pages, 4);
    }

    #[test]
    fn pages_are_handed_out_up_to_the_limit() {
        let mut s = Slabs::new(2 << 20, 1 << 20, 48, 1.25, false).unwrap();
        let last = s.classes.len() - 1;
        assert!(s.alloc(last).is_some());
        assert!(s.alloc(last).is_some());
        assert!(s.alloc(last).is_none());
        assert_eq!(s.pages_in_use, 2);
        // A small class can still use a free chunk, but no new page.
        assert!(s.alloc(0).is_none());
    }

    #[test]
    fn mapped_words_start_zeroed_and_keep_what_is_written() {
        let empty = MappedWords::empty();
        assert!(empty.is_empty());
        assert!(MappedWords::zeroed(0).unwrap().is_empty());
        let mut w = MappedWords::zeroed(1000).unwrap();
        assert_eq!(w.len(), 1000);
        assert!(w.iter().all(|&x| x == 0));
        w[0] = u64::MAX;
        w[999] = 0x0123_4567_89ab_cdef;
        assert_eq!((w[0], w[1], w[999]), (u64::MAX, 0, 0x0123_4567_89ab_cdef));
        assert_eq!(w.as_ptr() as usize % 64, 0, "cache-line aligned");
        assert!(MappedWords::zeroed(usize::MAX).is_err());
    }

    proptest::proptest! {
        /// Any writes to a mapped table read back exactly as from a Vec.
        #[test]
        fn mapped_words_behave_like_a_vec(
            len in 1usize..5000,
            writes in proptest::collection::vec((0usize..5000, proptest::num::u64::ANY), 0..200),
        ) {
            let mut mapped = MappedWords::zeroed(len).unwrap();
            let mut model = vec![0u64; len];
            for (i, v) in writes {
                mapped[i % len] = v;
                model[i % len] = v;
            }
            proptest::prop_assert_eq!(&mapped[..], &model[..]);
        }

        /// Chunks reached through the page-start table are disjoint and keep
        /// what was written, across classes and across the segments a raised
        /// limit maps: after any allocations, each chunk holds exactly the bytes
        /// last written to it, as in a map of chunk id to bytes.
        #[test]
        fn chunks_keep_their_bytes_across_classes_and_segments(
            allocs in proptest::collection::vec((0usize..6, proptest::num::u8::ANY), 1..300),
        ) {
            let mut s = Slabs::new(2 << 16, 1 << 16, 48, 2.0, false).unwrap();
            let mut model: std::collections::HashMap<u32, (usize, u8)> = Default::default();
            for (n, (class, fill)) in allocs.into_iter().enumerate() {
                if n == 100 {
                    // A second segment: its pages come from a new mapping.
                    s.set_limit(8 << 16).unwrap();
                }
                let class = class % s.classes.len();
                let Some(id) = s.alloc(class) else { continue };
                let size = s.classes[class].size as usize;
                let chunk = s.item_mut(id);
                proptest::prop_assert_eq!(chunk.len(), size);
                chunk.fill(fill);
                model.insert(id, (size, fill));
            }
            for (&id, &(size, fill)) in &model {
                let chunk = s.item(id);
                proptest::prop_assert_eq!(chunk.len(), size);
                proptest::prop_assert!(chunk.iter().all(|&b| b == fill), "chunk {} was overwritten", id);
            }
        }
    }

    #[test]
    fn a_shard_can_move_to_and_be_read_from_another_thread() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Slabs>();
        send_and_sync::<crate::storage::Shard>();
    }

    #[test]
    #[should_panic(expected = "past its page")]
    fn a_slot_past_its_pages_end_panics_instead_of_reaching_the_next_page() {
        let mut s = Slabs::new(2 << 20, 1 << 20, 48, 1.25, false).unwrap();
        let last = s.classes.len() - 1; // one chunk per page
        let id = s.alloc(last).unwrap();
        let _ = s.item(s.make_id(s.page_of(id), 1));
    }
}
