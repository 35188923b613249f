//! Warm restart (`--memory-file PATH`, memcached's `-e`): a shard's arena lives in
//! a file (meant for tmpfs, e.g. `/dev/shm`), so after a clean shutdown the next
//! start finds its items where they were and rebuilds everything else from them.
//!
//! Each core has its own file, `PATH.<core>`, sized to its shard's arena:
//!
//! ```text
//! offset 0            header (fixed part, 128 bytes, little-endian)
//!        0   magic        8 bytes  "CCARENA\0"
//!        8   version      u32      FORMAT_VERSION: LAYOUT_VERSION << 16 | item::HEADER_MIN
//!        12  clean        u32      1 = written by a clean shutdown, else 0
//!        16  page_size    u64   -+
//!        24  min_chunk    u64    |
//!        32  growth       u64    | geometry: must equal the new start's, or the
//!        40  file_pages   u64    | chunk ids, classes or key owners would differ
//!        48  max_item     u64    |
//!        56  slot_bits    u32    |
//!        60  core         u32    |
//!        64  cores        u32   -+
//!        68  table_len    u32      entries in the page table
//!        72  cas_last     u64      the last CAS given out (CAS keeps increasing)
//!        80  flush_seq    u64      items with cas <= this were flushed
//!        88  flush_at     u32      a delayed flush_all still due (0 = none)
//!        128 page table   8 bytes per page handed out: class u16 (0xffff = none),
//!                         2 bytes zero, carved slots u32
//!        header_len = 128 + 8 x file_pages, rounded up to 4 KiB
//! offset header_len   the arena: file_pages pages of page_size bytes
//! ```
//!
//! Items need nothing more: every chunk's header (`item.rs`) says whether it is
//! LIVE and holds key, value, flags, expiry, CAS and last access.
//!
//! At start ([`Shard::open`]) the header is read before the file is mapped. The
//! arena is kept only if the magic, the version, the geometry and the file's
//! length all match and `clean` is 1; then every carved chunk of every page is
//! walked: live ones are indexed again (expired and flushed ones are freed),
//! the rest rebuild the free lists; policy lists are rebuilt from scratch (by last
//! access, all in the window and probation; the sketch starts empty), so is the
//! TTL heap. A live chunk that is not a well-formed item of its class, or a key
//! found twice, discards the whole file. Otherwise the file is truncated and
//! starts empty, with a reason the server logs. Either way `clean` is set to 0 and
//! flushed before the shard serves, so a crash leaves it 0.
//!
//! At a clean shutdown ([`Shard::close`]) the page table and counters are
//! written, the mapping is flushed, then `clean` is set to 1 and flushed again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::item::{self, HEADER_MIN};
use super::slab::{Layout, Slabs, NO_CLASS};
use super::{Shard, ShardConfig, KEY_MAX};
use crate::keyhash::key_hash;

/// The first 8 bytes of every memory file.
pub(crate) const MAGIC: [u8; 8] = *b"CCARENA\0";
/// Bump when the file layout or the meaning of any item header field changes
/// (a change of `item::HEADER_MIN` changes the version by itself).
/// 2: `max_item_size` bounds the whole item (header, key, value), not the value.
/// 3: item headers have forms (optional expiry, flags, CAS and length bits).
const LAYOUT_VERSION: u32 = 3;
/// The version a memory file must carry to be used.
pub(crate) const FORMAT_VERSION: u32 = (LAYOUT_VERSION << 16) | HEADER_MIN as u32;

const O_VERSION: usize = 8;
const O_CLEAN: usize = 12;
const O_PAGE_SIZE: usize = 16;
const O_MIN_CHUNK: usize = 24;
const O_GROWTH: usize = 32;
const O_FILE_PAGES: usize = 40;
const O_MAX_ITEM: usize = 48;
const O_SLOT_BITS: usize = 56;
const O_CORE: usize = 60;
const O_CORES: usize = 64;
const O_TABLE_LEN: usize = 68;
const O_CAS_LAST: usize = 72;
const O_FLUSH_SEQ: usize = 80;
const O_FLUSH_AT: usize = 88;
/// The fixed part of the header; the page table follows.
const FIXED: usize = 128;
const TABLE_ENTRY: usize = 8;
/// The header is padded to this, so the arena starts page-aligned in the file.
const HEADER_ALIGN: usize = 4096;

/// Where a shard keeps its arena across restarts (`--memory-file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFile {
    /// The shard's own file.
    pub path: PathBuf,
    /// Which core's shard this is, and of how many: both are checked at restart,
    /// since they decide which keys the shard owns.
    pub core: u32,
    pub cores: u32,
}

impl MemoryFile {
    /// Core `core`'s file for `--memory-file base`: `base.<core>`.
    pub fn for_core(base: &Path, core: usize, cores: usize) -> MemoryFile {
        let mut path = base.as_os_str().to_owned();
        path.push(format!(".{core}"));
        MemoryFile {
            path: PathBuf::from(path),
            core: core as u32,
            cores: cores as u32,
        }
    }
}

/// How a file-backed shard started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmStart {
    /// There was no file (or an empty one): a first start.
    New,
    /// The file held a clean shutdown's arena: this many items are back.
    Restored { items: u64 },
    /// The shard starts empty; why the file's contents were not used.
    Empty { reason: String },
}

/// What a restart must match for chunk ids, classes and key ownership to mean
/// what they meant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Geometry {
    page_size: u64,
    min_chunk: u64,
    growth_bits: u64,
    file_pages: u64,
    max_item_size: u64,
    slot_bits: u32,
    core: u32,
    cores: u32,
}

impl Geometry {
    fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("page size", self.page_size),
            ("smallest chunk", self.min_chunk),
            ("growth factor (f64 bits)", self.growth_bits),
            ("pages (memory limit)", self.file_pages),
            ("max item size", self.max_item_size),
            ("slot bits", self.slot_bits as u64),
            ("core", self.core as u64),
            ("cores", self.cores as u64),
        ]
    }

    fn read(h: &[u8]) -> Geometry {
        Geometry {
            page_size: rd64(h, O_PAGE_SIZE),
            min_chunk: rd64(h, O_MIN_CHUNK),
            growth_bits: rd64(h, O_GROWTH),
            file_pages: rd64(h, O_FILE_PAGES),
            max_item_size: rd64(h, O_MAX_ITEM),
            slot_bits: rd32(h, O_SLOT_BITS),
            core: rd32(h, O_CORE),
            cores: rd32(h, O_CORES),
        }
    }

    fn write(&self, h: &mut [u8]) {
        wr64(h, O_PAGE_SIZE, self.page_size);
        wr64(h, O_MIN_CHUNK, self.min_chunk);
        wr64(h, O_GROWTH, self.growth_bits);
        wr64(h, O_FILE_PAGES, self.file_pages);
        wr64(h, O_MAX_ITEM, self.max_item_size);
        wr32(h, O_SLOT_BITS, self.slot_bits);
        wr32(h, O_CORE, self.core);
        wr32(h, O_CORES, self.cores);
    }

    /// The first field that differs, said for a log line.
    fn mismatch(&self, now: &Geometry) -> Option<String> {
        self.fields()
            .iter()
            .zip(now.fields())
            .find(|(a, b)| a.1 != b.1)
            .map(|((name, was), (_, is))| format!("{name} was {was}, is {is} now"))
    }

    fn header_len(&self) -> usize {
        (FIXED + TABLE_ENTRY * self.file_pages as usize).next_multiple_of(HEADER_ALIGN)
    }

    fn file_len(&self) -> usize {
        self.header_len() + (self.file_pages * self.page_size) as usize
    }
}

/// [`read_saved`]'s reason for an empty file.
const NEW_FILE: &str = "new memory file";

/// What a clean shutdown left besides the arena.
struct Saved {
    cas_last: u64,
    flush_seq: u64,
    flush_at: Option<u32>,
    /// (class, carved) per page handed out.
    table: Vec<(u16, u32)>,
}

fn rd32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn rd64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn wr32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn wr64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Opens (creating it if needed) and locks a memory file.
fn open_locked(path: &Path) -> io::Result<Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "{}: cannot lock it ({errno}): another process is using it",
                path.display()
            ),
        )
    })
}

/// Reads the header of a not yet mapped file: what a clean shutdown saved if the
/// file is usable with `now`'s geometry, else why it is not.
fn read_saved(file: &File, now: &Geometry) -> io::Result<Result<Saved, String>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Err(NEW_FILE.into()));
    }
    if len < FIXED as u64 {
        return Ok(Err(format!("the file is too short ({len} bytes)")));
    }
    let mut h = [0u8; FIXED];
    file.read_exact_at(&mut h, 0)?;
    if h[..8] != MAGIC {
        return Ok(Err("not a corecache memory file (bad magic)".into()));
    }
    let version = rd32(&h, O_VERSION);
    if version != FORMAT_VERSION {
        return Ok(Err(format!(
            "format version {version:#x} in the file, this build uses {FORMAT_VERSION:#x}"
        )));
    }
    if rd32(&h, O_CLEAN) != 1 {
        return Ok(Err(
            "the last run did not shut down cleanly (crash or kill)".into(),
        ));
    }
    if let Some(why) = Geometry::read(&h).mismatch(now) {
        return Ok(Err(format!("the geometry changed: {why}")));
    }
    if len != now.file_len() as u64 {
        return Ok(Err(format!(
            "the file is {len} bytes, {} expected",
            now.file_len()
        )));
    }
    let table_len = rd32(&h, O_TABLE_LEN) as usize;
    if table_len as u64 > now.file_pages {
        return Ok(Err(format!("the page table has {table_len} entries")));
    }
    let mut raw = vec![0u8; table_len * TABLE_ENTRY];
    file.read_exact_at(&mut raw, FIXED as u64)?;
    let table = raw
        .chunks_exact(TABLE_ENTRY)
        .map(|e| (u16::from_le_bytes([e[0], e[1]]), rd32(e, 4)))
        .collect();
    let flush_at = rd32(&h, O_FLUSH_AT);
    Ok(Ok(Saved {
        cas_last: rd64(&h, O_CAS_LAST),
        flush_seq: rd64(&h, O_FLUSH_SEQ),
        flush_at: (flush_at != 0).then_some(flush_at),
        table,
    }))
}

/// Empties a not mapped file and sizes it (tmpfs gives the old pages back).
fn reset(file: &File, len: usize) -> io::Result<()> {
    file.set_len(0)?;
    file.set_len(len as u64)
}

impl Shard {
    /// A shard whose arena lives in `file` (see the module docs): its items are
    /// back if the file holds a clean shutdown's arena of the same geometry; else
    /// it starts empty and says why. Errors are I/O errors (the file cannot be
    /// created, locked, sized or mapped) and invalid configs.
    pub fn open(
        config: ShardConfig,
        file: &MemoryFile,
        now: u32,
    ) -> io::Result<(Shard, WarmStart)> {
        let min_chunk = Self::check_config(&config)?;
        let layout = Layout::new(config.page_size, min_chunk, config.growth_factor);
        let geometry = Geometry {
            page_size: config.page_size as u64,
            min_chunk: min_chunk as u64,
            growth_bits: config.growth_factor.to_bits(),
            file_pages: layout.pages_for(config.memory_limit, config.page_size) as u64,
            max_item_size: config.max_item_size as u64,
            slot_bits: layout.slot_bits,
            core: file.core,
            cores: file.cores,
        };
        let map = |locked: Flock<File>| {
            Slabs::new_in_file(
                config.memory_limit,
                config.page_size,
                min_chunk,
                config.growth_factor,
                locked,
                geometry.header_len(),
            )
        };
        let locked = open_locked(&file.path)?;
        let saved = read_saved(&locked, &geometry)?;
        if saved.is_err() {
            reset(&locked, geometry.file_len())?;
        }
        let mut shard = Shard::from_slabs(config.clone(), map(locked)?)?;
        let start = match saved {
            Ok(saved) => match shard.restore(saved, now) {
                Ok(items) => WarmStart::Restored { items },
                Err(why) => {
                    drop(shard);
                    let locked = open_locked(&file.path)?;
                    reset(&locked, geometry.file_len())?;
                    shard = Shard::from_slabs(config.clone(), map(locked)?)?;
                    WarmStart::Empty {
                        reason: format!("the saved arena is inconsistent: {why}"),
                    }
                }
            },
            Err(reason) if reason == NEW_FILE => WarmStart::New,
            Err(reason) => WarmStart::Empty { reason },
        };
        // From here on the file is "in use": a crash must not look clean.
        let h = shard.slabs.file_header_mut().expect("file-backed");
        h[..8].copy_from_slice(&MAGIC);
        wr32(h, O_VERSION, FORMAT_VERSION);
        wr32(h, O_CLEAN, 0);
        geometry.write(h);
        shard.slabs.flush_file()?;
        Ok((shard, start))
    }

    /// Clean shutdown: for a shard in a memory file, saves the page table and
    /// counters, flushes the mapping and marks the file clean, so the next
    /// [`open`](Self::open) gets the items back. Consumes the shard: nothing may
    /// change the arena after the file says it is clean. Returns whether there
    /// was a file to write.
    pub fn close(mut self) -> io::Result<bool> {
        if !self.slabs.is_file_backed() {
            return Ok(false);
        }
        let table: Vec<(u16, u32)> = self
            .slabs
            .pages
            .iter()
            .map(|m| (m.class, if m.class == NO_CLASS { 0 } else { m.carved }))
            .collect();
        let (cas_last, flush_seq, flush_at) = (self.cas_last, self.flush_seq, self.flush_at);
        let h = self.slabs.file_header_mut().expect("file-backed");
        for (i, &(class, carved)) in table.iter().enumerate() {
            let e = &mut h[FIXED + i * TABLE_ENTRY..FIXED + (i + 1) * TABLE_ENTRY];
            e[..2].copy_from_slice(&class.to_le_bytes());
            e[2..4].fill(0);
            wr32(e, 4, carved);
        }
        wr32(h, O_TABLE_LEN, table.len() as u32);
        wr64(h, O_CAS_LAST, cas_last);
        wr64(h, O_FLUSH_SEQ, flush_seq);
        wr32(h, O_FLUSH_AT, flush_at.unwrap_or(0));
        self.slabs.flush_file()?;
        let h = self.slabs.file_header_mut().expect("file-backed");
        wr32(h, O_CLEAN, 1);
        self.slabs.flush_file()?;
        Ok(true)
    }

    /// Rebuilds the index, free lists, policy lists, TTL heap, stats and counters
    /// from an arena a clean shutdown left; the number of items back. An error
    /// says what is inconsistent: the caller then starts empty.
    fn restore(&mut self, saved: Saved, now: u32) -> Result<u64, String> {
        self.slabs.restore_pages(&saved.table)?;
        self.cas_last = saved.cas_last;
        self.flush_seq = saved.flush_seq;
        self.flush_at = saved.flush_at;
        // A delayed flush_all that came due while the server was down applies now.
        self.tick(now);
        let classes = self.slabs.classes.len();
        // (last access, cas, id, key hash) of the items kept, per class.
        let mut kept: Vec<Vec<(u32, u64, u32, u64)>> = vec![Vec::new(); classes];
        for page in 0..self.slabs.pages.len() as u32 {
            let meta = self.slabs.pages[page as usize];
            if meta.class == NO_CLASS {
                continue;
            }
            for slot in 0..meta.carved {
                let id = self.slabs.make_id(page, slot);
                let b = self.slabs.item(id);
                if !item::is_live(b) {
                    self.slabs.restore_free(id);
                    continue;
                }
                self.check_chunk(id, meta.class as usize)?;
                let b = self.slabs.item(id);
                if self.dead(b).is_some() {
                    self.slabs.restore_free(id);
                    continue;
                }
                let hash = key_hash(item::key(b));
                let slabs = &self.slabs;
                if self
                    .index
                    .find(hash, |x| item::has_key(slabs.item(x), item::key(b)))
                    .is_some()
                {
                    return Err(format!(
                        "key {:?} is stored twice",
                        String::from_utf8_lossy(item::key(b))
                    ));
                }
                let (size, expiry, atime, cas) =
                    (item::size(b), item::expiry(b), item::atime(b), item::cas(b));
                // Win tokens went with their connections; the policy links are
                // made again below.
                let b = self.slabs.item_mut(id);
                item::set_state(
                    b,
                    item::state(b) & (item::LIVE | item::FETCHED | item::STALE),
                );
                self.slabs.restore_live(id);
                if let Some(own) = self.guest_of(id) {
                    self.slabs.classes[own].guests += 1;
                }
                let slabs = &self.slabs;
                self.index
                    .reserve(|x| key_hash(item::key(slabs.item(x))))
                    .map_err(|e| format!("index: {e}"))?;
                self.index.insert(hash, id);
                self.stats.curr_items += 1;
                self.stats.bytes += size as u64;
                if expiry != 0 {
                    self.ttl.push((expiry, id));
                }
                kept[meta.class as usize].push((atime, cas, id, hash));
            }
        }
        for class in 0..kept.len() {
            let cap = self.slabs.capacity(class);
            self.policy.set_capacity(&mut self.slabs, class, cap);
        }
        // With every class's capacity back: a sketch started here is sized
        // for all of them at once, and counts every item inserted below.
        self.note_fill();
        for (class, mut items) in kept.into_iter().enumerate() {
            // Least recently used first, so the most recent end at the heads.
            items.sort_unstable();
            for (_, _, id, hash) in items {
                self.policy.insert(&mut self.slabs, class, id, hash);
            }
        }
        Ok(self.stats.curr_items)
    }

    /// Checks that live chunk `id` of `class` holds a well-formed item.
    fn check_chunk(&self, id: u32, class: usize) -> Result<(), String> {
        let b = self.slabs.item(id);
        let bad = |what: &str| Err(format!("chunk {id:#x} of class {class}: {what}"));
        // The lengths are checked before anything slices by them.
        let (key_len, value_len) = (item::key_len(b), item::value_len(b));
        if key_len == 0 || key_len > KEY_MAX {
            return bad("bad key length");
        }
        if item::bounded_size(key_len, value_len) > self.config.max_item_size {
            return bad("item larger than the max item size");
        }
        // The header's form bits decide its length; the size reads only the
        // header, which every chunk holds whole (chunks are at least
        // `HEADER_MAX` + 2 bytes).
        // A smaller item than the class's is a guest (`Shard::host_for`).
        if item::size(b) > b.len() {
            return bad("item size does not fit its class");
        }
        // Any CAS is valid: a client may have set it (`E`), below or above the
        // saved counter; it indexes nothing.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::check_invariants;
    use crate::storage::{ItemView, StoreMode, StoreResult};
    use std::sync::atomic::{AtomicU32, Ordering};

    const MIB: usize = 1 << 20;
    const T0: u32 = 1_700_000_000;

    /// A memory file path in a fresh directory under the temp dir, removed on drop.
    struct TempFile {
        dir: PathBuf,
        file: MemoryFile,
    }

    impl TempFile {
        fn new(name: &str) -> TempFile {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "corecache-warm-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let file = MemoryFile::for_core(&dir.join("cache"), 0, 1);
            TempFile { dir, file }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn config(mem: usize) -> ShardConfig {
        ShardConfig::new(mem, MIB - 1024)
    }

    fn open_at(t: &TempFile, mem: usize, now: u32) -> (Shard, WarmStart) {
        let (s, start) = Shard::open(config(mem), &t.file, now).unwrap();
        check_invariants(&s);
        (s, start)
    }

    fn store(s: &mut Shard, key: &[u8], flags: u32, expiry: u32, value: &[u8], now: u32) {
        let r = s.store(
            StoreMode::Set,
            key,
            key_hash(key),
            flags,
            expiry,
            value,
            now,
        );
        assert_eq!(r, StoreResult::Stored);
    }

    fn owned(v: Option<ItemView<'_>>) -> Option<(Vec<u8>, u32, u64, u32)> {
        v.map(|v| (v.value.to_vec(), v.flags, v.cas, v.expiry))
    }

    fn get(s: &mut Shard, key: &[u8], now: u32) -> Option<(Vec<u8>, u32, u64, u32)> {
        owned(s.get(key, key_hash(key), now))
    }

    fn empty_reason(start: WarmStart) -> String {
        match start {
            WarmStart::Empty { reason } => reason,
            other => panic!("expected an empty start, got {other:?}"),
        }
    }

    #[test]
    fn for_core_appends_the_core_index() {
        let f = MemoryFile::for_core(Path::new("/dev/shm/x/cache"), 3, 4);
        assert_eq!(f.path, PathBuf::from("/dev/shm/x/cache.3"));
        assert_eq!((f.core, f.cores), (3, 4));
    }

    #[test]
    fn a_clean_shutdown_brings_every_item_back() {
        let t = TempFile::new("roundtrip");
        let (mut s, start) = open_at(&t, 24 * MIB, T0);
        assert_eq!(start, WarmStart::New);
        // Several classes: 10-byte to 50 KB values.
        let mut expected = Vec::new();
        for i in 0..600u32 {
            let key = format!("key:{i}").into_bytes();
            let len = [10, 100, 1000, 5000, 50_000][i as usize % 5];
            let value = vec![b'a' + (i % 26) as u8; len];
            let expiry = if i % 3 == 0 { T0 + 1000 } else { 0 };
            store(&mut s, &key, i * 7, expiry, &value, T0);
            expected.push(key);
        }
        // Some deletes and an in-place rewrite, so free chunks are in the mix.
        for i in (0..600).step_by(7) {
            assert!(s.delete(&expected[i], key_hash(&expected[i]), T0));
        }
        store(&mut s, b"key:1", 99, 0, b"rewritten", T0);
        check_invariants(&s);
        let before: Vec<_> = expected.iter().map(|k| get(&mut s, k, T0)).collect();
        let stats = s.stats();
        let cas_before = s.cas_last;
        assert!(s.close().unwrap());

        let (mut s, start) = open_at(&t, 24 * MIB, T0 + 5);
        let items = match start {
            WarmStart::Restored { items } => items,
            other => panic!("not restored: {other:?}"),
        };
        assert_eq!(items, stats.curr_items);
        let after = s.stats();
        assert_eq!(
            (after.curr_items, after.bytes, after.total_pages),
            (stats.curr_items, stats.bytes, stats.total_pages)
        );
        for (k, was) in expected.iter().zip(&before) {
            assert_eq!(
                &get(&mut s, k, T0 + 5),
                was,
                "{}",
                String::from_utf8_lossy(k)
            );
        }
        assert_eq!(get(&mut s, b"key:1", T0 + 5).unwrap().0, b"rewritten");
        check_invariants(&s);
        // CAS keeps increasing; the freed chunks are reused.
        store(&mut s, b"new", 0, 0, b"v", T0 + 5);
        assert!(get(&mut s, b"new", T0 + 5).unwrap().2 > cas_before);
        for i in 0..200u32 {
            store(
                &mut s,
                format!("more:{i}").as_bytes(),
                0,
                0,
                &[b'x'; 1000],
                T0 + 5,
            );
        }
        check_invariants(&s);
        // The restored items are evictable like any other.
        for i in 0..6000u32 {
            store(
                &mut s,
                format!("fill:{i}").as_bytes(),
                0,
                0,
                &[b'y'; 5000],
                T0 + 6,
            );
        }
        assert!(s.stats().evictions > 0);
        check_invariants(&s);
        assert!(s.close().unwrap());
        let (_, start) = open_at(&t, 24 * MIB, T0 + 7);
        assert!(matches!(start, WarmStart::Restored { .. }));
    }

    #[test]
    fn items_lodged_in_a_larger_class_come_back_as_guests() {
        let t = TempFile::new("guests");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        let (sparse, keys) = crate::storage::tests::lend_a_sparse_page(&mut s, T0);
        assert_eq!(s.slabs.classes[sparse].guests, 200);
        assert!(s.close().unwrap());
        let (mut s, start) = open_at(&t, 4 * MIB, T0);
        assert!(matches!(start, WarmStart::Restored { .. }), "{start:?}");
        assert_eq!(s.slabs.classes[sparse].guests, 200);
        for k in &keys {
            assert_eq!(get(&mut s, k, T0).unwrap().0, vec![b's'; 100]);
        }
        check_invariants(&s);
    }

    #[test]
    fn a_restored_shard_past_half_full_counts_every_item_restored() {
        let t = TempFile::new("sketch");
        let (mut s, _) = open_at(&t, 8 * MIB, T0);
        // Two classes' items until more than half the pages are in use.
        let mut keys = Vec::new();
        let mut i = 0;
        while s.slabs.pages_in_use * 2 <= s.slabs.max_pages {
            let key = format!("key:{i}").into_bytes();
            let len = [1000, 20_000][i % 2];
            store(&mut s, &key, 0, 0, &vec![b'v'; len], T0);
            keys.push(key);
            i += 1;
        }
        assert!(s.close().unwrap());
        let (s, start) = open_at(&t, 8 * MIB, T0);
        assert!(matches!(start, WarmStart::Restored { .. }), "{start:?}");
        assert!(
            s.stats().sketch_bytes > 0,
            "restored past half full: counting"
        );
        for k in &keys {
            assert!(
                s.policy.frequency(key_hash(k)) >= 1,
                "{} restored unseen",
                String::from_utf8_lossy(k)
            );
        }
    }

    #[test]
    fn a_file_not_marked_clean_is_discarded() {
        let t = TempFile::new("crash");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        store(&mut s, b"k", 1, 0, b"v", T0);
        drop(s); // a crash: no close
        let (mut s, start) = open_at(&t, 4 * MIB, T0);
        assert!(empty_reason(start).contains("did not shut down cleanly"));
        assert_eq!(get(&mut s, b"k", T0), None);
        assert_eq!(s.stats().curr_items, 0);
        // A restored file is marked in use again until the next close.
        store(&mut s, b"k", 1, 0, b"v", T0);
        s.close().unwrap();
        let (s, start) = open_at(&t, 4 * MIB, T0);
        assert_eq!(start, WarmStart::Restored { items: 1 });
        drop(s);
        let (_, start) = open_at(&t, 4 * MIB, T0);
        assert!(empty_reason(start).contains("did not shut down cleanly"));
    }

    #[test]
    fn a_version_or_geometry_mismatch_is_discarded() {
        let t = TempFile::new("mismatch");
        let fill = |mem: usize| {
            let (mut s, _) = open_at(&t, mem, T0);
            store(&mut s, b"k", 1, 0, b"v", T0);
            s.close().unwrap();
        };
        fill(4 * MIB);
        {
            let f = OpenOptions::new().write(true).open(&t.file.path).unwrap();
            f.write_all_at(&(FORMAT_VERSION + 1).to_le_bytes(), O_VERSION as u64)
                .unwrap();
        }
        let (mut s, start) = open_at(&t, 4 * MIB, T0);
        assert!(empty_reason(start).contains("format version"));
        assert_eq!(get(&mut s, b"k", T0), None);
        drop(s);

        fill(4 * MIB);
        let (_, start) = open_at(&t, 8 * MIB, T0);
        let reason = empty_reason(start);
        assert!(
            reason.contains("geometry") && reason.contains("pages"),
            "{reason}"
        );

        fill(4 * MIB);
        let mut c = config(4 * MIB);
        c.growth_factor = 1.5;
        let (_, start) = Shard::open(c, &t.file, T0).unwrap();
        assert!(empty_reason(start).contains("growth factor"));

        fill(4 * MIB);
        let other_cores = MemoryFile {
            cores: 2,
            ..t.file.clone()
        };
        let (_, start) = Shard::open(config(4 * MIB), &other_cores, T0).unwrap();
        assert!(empty_reason(start).contains("cores"));

        fill(4 * MIB);
        std::fs::write(&t.file.path, [b'x'; 4096]).unwrap();
        let (_, start) = open_at(&t, 4 * MIB, T0);
        assert!(empty_reason(start).contains("magic"));
    }

    #[test]
    fn expired_items_do_not_come_back() {
        let t = TempFile::new("expired");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        store(&mut s, b"short", 0, T0 + 10, b"v", T0);
        store(&mut s, b"long", 0, T0 + 1000, b"v", T0);
        store(&mut s, b"never", 0, 0, b"v", T0);
        s.close().unwrap();
        let (mut s, start) = open_at(&t, 4 * MIB, T0 + 20);
        assert_eq!(start, WarmStart::Restored { items: 2 });
        assert_eq!(get(&mut s, b"short", T0 + 20), None);
        assert!(get(&mut s, b"long", T0 + 20).is_some());
        assert!(get(&mut s, b"never", T0 + 20).is_some());
        // The TTL heap was rebuilt: the reaper frees "long" when it expires.
        assert_eq!(s.reap_expired(T0 + 2000, 10), 1);
        check_invariants(&s);
    }

    #[test]
    fn flushed_items_do_not_come_back() {
        let t = TempFile::new("flushed");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        store(&mut s, b"old", 0, 0, b"v", T0);
        s.flush_all(T0, T0);
        store(&mut s, b"new", 0, 0, b"v", T0);
        // A delayed flush that comes due while the server is down.
        s.flush_all(T0 + 100, T0);
        store(&mut s, b"newer", 0, 0, b"v", T0);
        s.close().unwrap();

        let (mut s, start) = open_at(&t, 4 * MIB, T0 + 50);
        assert_eq!(start, WarmStart::Restored { items: 2 });
        assert_eq!(get(&mut s, b"old", T0 + 50), None);
        assert!(get(&mut s, b"new", T0 + 50).is_some());
        s.close().unwrap();
        // The pending flush was saved too.
        let (mut s, start) = open_at(&t, 4 * MIB, T0 + 200);
        assert_eq!(start, WarmStart::Restored { items: 0 });
        assert_eq!(get(&mut s, b"newer", T0 + 200), None);
    }

    #[test]
    fn a_corrupt_item_discards_the_file() {
        let t = TempFile::new("corrupt");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        store(&mut s, b"k", 0, 0, b"value", T0);
        s.close().unwrap();
        // The first chunk of the first page: set its key length to 0.
        let g_header = (FIXED + TABLE_ENTRY * 4).next_multiple_of(HEADER_ALIGN);
        {
            let f = OpenOptions::new().write(true).open(&t.file.path).unwrap();
            f.write_all_at(&[0], (g_header + item::KEY_LEN) as u64)
                .unwrap();
        }
        let (mut s, start) = open_at(&t, 4 * MIB, T0);
        assert!(empty_reason(start).contains("inconsistent"));
        assert_eq!(get(&mut s, b"k", T0), None);
    }

    #[test]
    fn the_limit_cannot_grow_past_the_file() {
        let t = TempFile::new("limit");
        let (mut s, _) = open_at(&t, 4 * MIB, T0);
        assert!(!s.set_memory_limit(8 * MIB));
        assert_eq!(s.stats().memory_limit, 4 * MIB as u64);
        assert!(s.set_memory_limit(2 * MIB));
        assert!(s.set_memory_limit(4 * MIB));
        check_invariants(&s);
    }

    #[test]
    fn a_file_in_use_cannot_be_opened_twice() {
        let t = TempFile::new("locked");
        let (_s, _) = open_at(&t, 4 * MIB, T0);
        let err = Shard::open(config(4 * MIB), &t.file, T0).err().unwrap();
        assert!(err.to_string().contains("another process"), "{err}");
    }

    #[test]
    fn an_anonymous_shard_has_nothing_to_close() {
        let s = Shard::new(config(4 * MIB)).unwrap();
        assert!(!s.close().unwrap());
    }
}
