//! corecache: a memcached-compatible cache server, thread-per-core on io_uring.
//!
//! The crate is layered so each layer can be read and tested on its own:
//! - [`protocol`]: parsing and encoding of the memcached text protocol; no I/O.
//! - [`storage`]: one shard (arena, slab classes, index, TTL heap, eviction); no I/O.
//! - [`server`]: the per-core io_uring event loop that wires the two together.
//! - [`keyhash`]: the documented key hash and `owner(key)` function shared by all.

pub mod config;
pub mod keyhash;
pub mod protocol;
pub mod server;
pub mod storage;
