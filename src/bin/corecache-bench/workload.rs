//! Workloads: what requests to send. A [`Workload`] is plain data (named profiles
//! plus command-line overrides); a [`Generator`] turns it into a stream of
//! operations for one client thread.

use std::fmt;
use std::str::FromStr;

/// Small, fast PRNG (xoshiro256**), seeded through splitmix64. Statistical quality
/// is ample for picking keys; no dependency needed.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (multiply-shift; bias is negligible for n << 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Zipf distribution over ranks 1..=n with exponent `s` > 0, sampled in O(1) by
/// rejection-inversion (Hörmann & Derflinger 1996, as in Apache Commons and
/// rand_distr). Rank 1 is the most popular.
#[derive(Clone, Debug)]
pub struct Zipf {
    s: f64,
    t: f64,
    q: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(n >= 1 && s > 0.0, "zipf needs n >= 1 and s > 0");
        let n = n as f64;
        let (q, t) = if s != 1.0 {
            let q = 1.0 / (1.0 - s);
            (q, (n.powf(1.0 - s) - s) * q)
        } else {
            (0.0, 1.0 + n.ln())
        };
        Zipf { s, t, q }
    }

    fn inv_cdf(&self, p: f64) -> f64 {
        let pt = p * self.t;
        if pt <= 1.0 {
            pt
        } else if self.s != 1.0 {
            (pt * (1.0 - self.s) + self.s).powf(self.q)
        } else {
            (pt - 1.0).exp()
        }
    }

    /// A rank in 1..=n.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let inv_b = self.inv_cdf(rng.f64());
            let x = (inv_b + 1.0).floor();
            let mut ratio = x.powf(-self.s);
            if x > 1.0 {
                ratio *= inv_b.powf(self.s);
            }
            if rng.f64() < ratio {
                return x as u64;
            }
        }
    }
}

/// How keys are picked from the key space [0, keys).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum KeyDist {
    Uniform,
    /// Zipf with this exponent; key id = rank - 1, so low ids are hot.
    Zipf(f64),
    /// `ops` of the operations go to the first `keys` fraction of the key space.
    Hotspot {
        keys: f64,
        ops: f64,
    },
}

impl FromStr for KeyDist {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<f64, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("{s}: missing parameter"))?
                .parse::<f64>()
                .map_err(|e| format!("{s}: {e}"))
        };
        match parts[0] {
            "uniform" if parts.len() == 1 => Ok(KeyDist::Uniform),
            "zipf" if parts.len() <= 2 => {
                let e = if parts.len() == 2 { num(1)? } else { 0.99 };
                if e <= 0.0 {
                    return Err("zipf exponent must be > 0".into());
                }
                Ok(KeyDist::Zipf(e))
            }
            "hotspot" if parts.len() <= 3 => {
                let (keys, ops) = if parts.len() == 3 {
                    (num(1)?, num(2)?)
                } else {
                    (0.2, 0.8)
                };
                if !(0.0..=1.0).contains(&keys) || !(0.0..=1.0).contains(&ops) {
                    return Err("hotspot fractions must be in [0, 1]".into());
                }
                Ok(KeyDist::Hotspot { keys, ops })
            }
            _ => Err(format!(
                "unknown key distribution {s:?} (uniform | zipf[:EXP] | hotspot[:KEYFRAC:OPFRAC])"
            )),
        }
    }
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Uniform => write!(f, "uniform"),
            KeyDist::Zipf(e) => write!(f, "zipf:{e}"),
            KeyDist::Hotspot { keys, ops } => write!(f, "hotspot:{keys}:{ops}"),
        }
    }
}

/// Value sizes in bytes: fixed, or uniform in an inclusive range (`MIN-MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl FromStr for ValueSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = |x: &str| x.trim().parse::<usize>().map_err(|e| format!("{s}: {e}"));
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (p(a)?, p(b)?),
            None => (p(s)?, p(s)?),
        };
        if min == 0 || min > max {
            return Err(format!("{s}: need 0 < MIN <= MAX"));
        }
        Ok(ValueSize { min, max })
    }
}

impl fmt::Display for ValueSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// `SETS:GETS`, e.g. `1:10` (memtier's convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Ratio {
    pub sets: u32,
    pub gets: u32,
}

impl FromStr for Ratio {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("{s}: expected SETS:GETS"))?;
        let sets = a.parse().map_err(|e| format!("{s}: {e}"))?;
        let gets = b.parse().map_err(|e| format!("{s}: {e}"))?;
        if sets == 0 && gets == 0 {
            return Err("ratio 0:0 sends nothing".into());
        }
        Ok(Ratio { sets, gets })
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.sets, self.gets)
    }
}

/// Everything that decides which requests are sent (not how fast or from where).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Workload {
    pub name: String,
    /// Total connections, over all client threads.
    pub conns: usize,
    pub ratio: Ratio,
    pub keys: u64,
    pub dist: KeyDist,
    pub value: ValueSize,
    /// Keys per get (1 = plain get; >1 = multi-get / MGET).
    pub multiget: usize,
    /// Fraction of the key space written before the run, lowest key ids (the
    /// hottest under zipf and hotspot) first.
    pub prefill: f64,
    /// Cache-aside: every key a get misses is set right after (the reply arrives).
    pub cache_aside: bool,
    pub key_prefix: String,
}

impl Workload {
    pub const PROFILES: &'static [&'static str] = &["default", "multiget10", "seed"];

    /// Named profiles.
    /// - `default`: 50 conns, 1:10 set:get, 100-byte values, 100k keys, uniform, prefilled.
    /// - `multiget10`: `default` with 10 keys per get.
    /// - `seed`: the design article's example scaled to one machine: 20:1 reads:writes,
    ///   ~2 KB values, zipf(0.99) over 200k keys (about 400 MB of data, so at `-m 256`
    ///   the cache holds the hot part only), the hottest half prefilled, cache-aside.
    pub fn profile(name: &str) -> Result<Workload, String> {
        let default = Workload {
            name: "default".into(),
            conns: 50,
            ratio: Ratio { sets: 1, gets: 10 },
            keys: 100_000,
            dist: KeyDist::Uniform,
            value: ValueSize { min: 100, max: 100 },
            multiget: 1,
            prefill: 1.0,
            cache_aside: false,
            key_prefix: "cb:".into(),
        };
        match name {
            "default" => Ok(default),
            "multiget10" => Ok(Workload {
                name: name.into(),
                multiget: 10,
                ..default
            }),
            "seed" => Ok(Workload {
                name: name.into(),
                ratio: Ratio { sets: 1, gets: 20 },
                keys: 200_000,
                dist: KeyDist::Zipf(0.99),
                value: ValueSize {
                    min: 1800,
                    max: 2200,
                },
                prefill: 0.5,
                cache_aside: true,
                ..default
            }),
            _ => Err(format!(
                "unknown profile {name:?} (known: {})",
                Workload::PROFILES.join(", ")
            )),
        }
    }

    /// Bytes of key `id`: prefix + zero-padded decimal id (fixed width, so every
    /// key of a run has the same length).
    pub fn key(&self, id: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.key_prefix.as_bytes());
        let width = digits(self.keys.saturating_sub(1));
        let mut tmp = [b'0'; 20];
        let mut n = id;
        for i in (0..width).rev() {
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&tmp[..width]);
    }

    /// Number of keys prefilled.
    pub fn prefill_keys(&self) -> u64 {
        ((self.keys as f64) * self.prefill.clamp(0.0, 1.0)).round() as u64
    }
}

fn digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// One operation to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

/// Per-thread source of operations and key ids.
pub struct Generator {
    pub rng: Rng,
    zipf: Option<Zipf>,
    wl: Workload,
    /// Shared buffer of value bytes; a value is a slice of it.
    values: Vec<u8>,
}

impl Generator {
    pub fn new(wl: &Workload, seed: u64) -> Generator {
        let zipf = match wl.dist {
            KeyDist::Zipf(e) => Some(Zipf::new(wl.keys, e)),
            _ => None,
        };
        // Printable, non-constant bytes (some servers compress or dedupe constant data).
        let mut rng = Rng::new(seed ^ 0x5eed);
        let values = (0..wl.value.max)
            .map(|_| b'a' + rng.below(26) as u8)
            .collect();
        Generator {
            rng: Rng::new(seed),
            zipf,
            wl: wl.clone(),
            values,
        }
    }

    pub fn op(&mut self) -> Op {
        let r = self.wl.ratio;
        if self.rng.below((r.sets + r.gets) as u64) < r.sets as u64 {
            Op::Set
        } else {
            Op::Get
        }
    }

    pub fn key_id(&mut self) -> u64 {
        let n = self.wl.keys;
        match self.wl.dist {
            KeyDist::Uniform => self.rng.below(n),
            KeyDist::Zipf(_) => self.zipf.as_ref().unwrap().sample(&mut self.rng) - 1,
            KeyDist::Hotspot { keys, ops } => {
                let hot = ((n as f64 * keys) as u64).clamp(1, n);
                if self.rng.f64() < ops || hot == n {
                    self.rng.below(hot)
                } else {
                    hot + self.rng.below(n - hot)
                }
            }
        }
    }

    pub fn value(&mut self) -> &[u8] {
        let v = self.wl.value;
        let len = v.min + self.rng.below((v.max - v.min + 1) as u64) as usize;
        &self.values[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harmonic(n: u64, s: f64) -> f64 {
        (1..=n).map(|k| (k as f64).powf(-s)).sum()
    }

    /// Empirical rank frequencies match k^-s / H(n, s) for the head ranks, and the
    /// sampler never leaves [1, n].
    #[test]
    fn zipf_matches_theory() {
        for &(n, s) in &[(1000u64, 0.99f64), (1000, 1.0), (50_000, 1.2), (100, 0.5)] {
            let z = Zipf::new(n, s);
            let mut rng = Rng::new(42);
            let samples = 400_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..samples {
                let x = z.sample(&mut rng);
                assert!((1..=n).contains(&x), "sample {x} out of range");
                counts[x as usize] += 1;
            }
            let h = harmonic(n, s);
            for k in 1..=5u64 {
                let p = (k as f64).powf(-s) / h;
                let got = counts[k as usize] as f64 / samples as f64;
                // ~5 standard deviations of a binomial proportion.
                let tol = 5.0 * (p * (1.0 - p) / samples as f64).sqrt();
                assert!(
                    (got - p).abs() < tol,
                    "n={n} s={s} rank {k}: got {got:.5}, want {p:.5}"
                );
            }
            // Monotone on average: the top decile of ranks gets more than the bottom.
            let dec = (n / 10) as usize;
            let top: u64 = counts[1..=dec].iter().sum();
            let bottom: u64 = counts[n as usize - dec + 1..].iter().sum();
            assert!(top > bottom);
        }
    }

    #[test]
    fn uniform_and_hotspot_ranges() {
        let mut wl = Workload::profile("default").unwrap();
        wl.keys = 1000;
        wl.dist = "hotspot:0.1:0.9".parse().unwrap();
        let mut g = Generator::new(&wl, 7);
        let n = 100_000;
        let hot = (0..n).filter(|_| g.key_id() < 100).count() as f64 / n as f64;
        assert!((hot - 0.9).abs() < 0.01, "hot share {hot}");
        wl.dist = KeyDist::Uniform;
        let mut g = Generator::new(&wl, 7);
        assert!((0..n).all(|_| g.key_id() < 1000));
    }

    #[test]
    fn ratio_and_values() {
        let mut wl = Workload::profile("default").unwrap();
        wl.value = "10-20".parse().unwrap();
        let mut g = Generator::new(&wl, 1);
        let n = 110_000;
        let sets = (0..n).filter(|_| g.op() == Op::Set).count();
        assert!((9_000..11_000).contains(&sets), "sets {sets}");
        for _ in 0..1000 {
            let l = g.value().len();
            assert!((10..=20).contains(&l));
        }
    }

    #[test]
    fn parsing_and_keys() {
        assert_eq!("zipf:1.1".parse::<KeyDist>(), Ok(KeyDist::Zipf(1.1)));
        assert_eq!("zipf".parse::<KeyDist>(), Ok(KeyDist::Zipf(0.99)));
        assert!("zipf:-1".parse::<KeyDist>().is_err());
        assert!("normal".parse::<KeyDist>().is_err());
        assert_eq!("1:10".parse::<Ratio>(), Ok(Ratio { sets: 1, gets: 10 }));
        assert_eq!(
            "100".parse::<ValueSize>(),
            Ok(ValueSize { min: 100, max: 100 })
        );
        assert!("20-10".parse::<ValueSize>().is_err());
        let wl = Workload::profile("default").unwrap();
        let mut k = Vec::new();
        wl.key(42, &mut k);
        assert_eq!(k, b"cb:00042");
        wl.key(99_999, &mut k);
        assert_eq!(k, b"cb:99999");
        assert_eq!(Workload::profile("seed").unwrap().prefill_keys(), 100_000);
    }
}
