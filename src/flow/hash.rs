//! A small, fast, non-cryptographic hasher (the "Fx" hash of rustc and Firefox).
//!
//! Flow uses it to pick partitions; it is public so reducers can use it for their maps
//! (`HashMap<K, V, FxBuildHasher>`), which is much faster than std's SipHash for short
//! keys such as words. It is not resistant to adversarial keys.

use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// The Fx hasher: `h = (h.rotate_left(5) ^ word) * K` over 8-byte words.
///
/// ```
/// use std::collections::HashMap;
/// use stageflow::flow::FxBuildHasher;
///
/// let mut counts: HashMap<&str, u32, FxBuildHasher> = HashMap::default();
/// *counts.entry("word").or_default() += 1;
/// assert_eq!(counts["word"], 1);
/// ```
#[derive(Default, Clone, Copy, Debug)]
pub struct FxHasher {
    hash: u64,
}

/// `BuildHasher` for [`FxHasher`].
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        while bytes.len() >= 8 {
            self.add(u64::from_le_bytes(bytes[..8].try_into().unwrap()));
            bytes = &bytes[8..];
        }
        // The tail in one word: two overlapping 4-byte reads for 4..=7 bytes, three
        // byte reads for 1..=3 (words are short; a byte loop costs more than the hash).
        let n = bytes.len();
        if n >= 4 {
            let lo = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as u64;
            let hi = u32::from_le_bytes(bytes[n - 4..].try_into().unwrap()) as u64;
            self.add(lo | (hi << 32));
        } else if n > 0 {
            let v = bytes[0] as u64 | (bytes[n / 2] as u64) << 8 | (bytes[n - 1] as u64) << 16;
            self.add(v);
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The partition [`Flow::partition`](crate::flow::Flow::partition) and
/// [`Flow::partition_by`](crate::flow::Flow::partition_by) give `key` among `stages`
/// partitions (what Elixir's `:erlang.phash2(key, stages)` is to Flow); useful to
/// predict where events go.
///
/// ```
/// use stageflow::flow::default_partition;
/// assert!(default_partition(&"word", 4) < 4);
/// assert_eq!(default_partition(&42u64, 1), 0);
/// ```
pub fn default_partition<K: std::hash::Hash + ?Sized>(key: &K, stages: usize) -> usize {
    partition_of(key, stages)
}

/// The default partition of `key` among `n` partitions.
///
/// The hasher starts from a different state than a map's so that partitioning does not
/// correlate with the reducer's own hash table (which also uses the high bits); the
/// range reduction is a multiply-shift on the high 32 bits.
#[inline]
pub(crate) fn partition_of<K: std::hash::Hash + ?Sized>(key: &K, n: usize) -> usize {
    let mut h = FxHasher {
        hash: 0x2545_f491_4f6c_dd1d,
    };
    key.hash(&mut h);
    // Fx ends with a multiplication, so consecutive integer keys form a Weyl sequence
    // in the high bits: taking the range from them spreads small key sets evenly.
    let x = h.finish();
    (((x >> 32) * n as u64) >> 32) as usize
}
