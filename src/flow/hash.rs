//! Hashing: the Fx hash for reducers' maps, and the partition of a key.
//!
//! [`FxHasher`] and [`FxBuildHasher`] are the `rustc-hash` crate's (the compiler's own
//! hash, kept by the Rust project), re-exported so that a reducer can key its map
//! with them (`HashMap<K, V, FxBuildHasher>`) without another dependency: much faster
//! than std's SipHash for short keys such as words, and not resistant to adversarial
//! keys.
//!
//! [`default_partition`] is the partition of a key in both layers: Flow's
//! [`partition`](crate::flow::Flow::partition) and
//! [`partition_by`](crate::flow::Flow::partition_by), and the stage layer's
//! [`PartitionDispatcher::new`](crate::dispatcher::PartitionDispatcher::new).

pub use rustc_hash::{FxBuildHasher, FxHasher};

/// The partition [`Flow::partition`](crate::flow::Flow::partition),
/// [`Flow::partition_by`](crate::flow::Flow::partition_by) and
/// [`PartitionDispatcher::new`](crate::dispatcher::PartitionDispatcher::new) give
/// `key` among `stages` partitions (what Elixir's `:erlang.phash2(key, stages)` is to
/// Flow); useful to predict where events go.
///
/// It is deterministic: no random seed, the same partition in every run and every
/// process of the same build (but it may change with a new version of stageflow).
///
/// ```
/// use stageflow::flow::default_partition;
/// assert!(default_partition(&"word", 4) < 4);
/// assert_eq!(default_partition(&42u64, 1), 0);
/// assert_eq!(default_partition(&"word", 4), default_partition(&"word".to_string(), 4));
/// ```
pub fn default_partition<K: std::hash::Hash + ?Sized>(key: &K, stages: usize) -> usize {
    partition_of(key, stages)
}

/// The default partition of `key` among `n` partitions (see
/// `stage::dispatcher::partition_of`, where the stage layer keeps it).
#[inline]
pub(crate) fn partition_of<K: std::hash::Hash + ?Sized>(key: &K, n: usize) -> usize {
    crate::stage::dispatcher::partition_of(key, n)
}
