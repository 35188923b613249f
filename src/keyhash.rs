//! The key hash and the ownership function.
//!
//! Both are part of corecache's public contract: a smart client computes
//! `owner(key)` to send each key straight to the core that owns it
//! (docs/architecture.md, "Ownership"). Changing either is a breaking change.

use xxhash_rust::xxh3::xxh3_64;

/// The 64-bit hash of a key: XXH3-64 with seed 0 over the raw key bytes.
///
/// The same value picks the owning core and indexes the shard's hash table;
/// the core that reads a request computes it once per key (`server::core`,
/// `Route`); a request forwarded to the owning core carries it there.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// Spreads a 64-bit value over all bits (the splitmix64 finalizer, a bijection).
/// Inside a shard, where `owner` already chose the keys, structures that slice
/// the key hash into bits (the sketch, the index) use `mix(hash)` or, keyed with
/// a secret, `mix(hash ^ seed)`.
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The core (0..cores) that owns a key with hash `hash`: jump consistent hash
/// (Lamping & Veach, 2014) of the key hash over the core count.
///
/// Jump hash moves only 1/n of the keys when a core is added, which keeps a
/// replica with a different core count cheap to feed.
#[inline]
pub fn owner(hash: u64, cores: usize) -> usize {
    debug_assert!(cores > 0);
    let mut key = hash;
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < cores as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1i64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_xxh3_with_seed_zero() {
        // Reference values from the XXH3 specification's test vectors.
        assert_eq!(key_hash(b""), 0x2D06800538D394C2);
        assert_eq!(key_hash(b"a"), 0xE6C632B61E964E1F);
    }

    #[test]
    fn owner_with_one_core_is_zero() {
        for key in [&b"a"[..], b"foo", b"user:42"] {
            assert_eq!(owner(key_hash(key), 1), 0);
        }
    }

    #[test]
    fn owner_spreads_keys_evenly_and_moves_few_on_growth() {
        let n = 20_000;
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for i in 0..n {
            let h = key_hash(format!("key:{i}").as_bytes());
            let four = owner(h, 4);
            counts[four] += 1;
            if owner(h, 5) != four {
                moved += 1;
            }
        }
        for c in counts {
            assert!((4_000..6_000).contains(&c), "uneven spread {counts:?}");
        }
        // Growing 4 -> 5 cores moves about 1/5 of the keys, all of them to core 4.
        assert!((3_000..5_000).contains(&moved), "moved {moved}");
    }

    #[test]
    fn owner_values_are_pinned() {
        // Pinned outputs: smart clients in other languages compute the same
        // numbers, so any change here is a breaking change of the contract.
        assert_eq!(owner(256, 1024), 520);
        assert_eq!(key_hash(b"foo"), 0xab6e5f64077e7d8a);
        let owners: Vec<usize> = ["a", "foo", "user:42", "key:1"]
            .iter()
            .map(|k| owner(key_hash(k.as_bytes()), 8))
            .collect();
        assert_eq!(owners, [1, 2, 1, 1]);
    }
}
