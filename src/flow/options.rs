//! [`Options`]: a layer's stage count, demand and window, and how they resolve.

use std::fmt;

use super::error::invalid;
use super::{FlowError, Window};

/// Options of a layer: its stage count, demand and window.
///
/// Defaults, as in Elixir Flow: `stages` = rayon's thread count, `max_demand`
/// 1000, `min_demand` = `max_demand / 2`; a stage handles at most
/// `max_demand - min_demand` events at a time (500 by default); window: global.
///
/// A layer made by [`Flow::partition`](super::Flow::partition) or [`Flow::partition_by`](super::Flow::partition_by) sends each event to
/// the stage [`default_partition`](super::default_partition) gives its key: a fixed-seed hash (rustc-hash's Fx,
/// then a multiply mix), so the same key goes to the same stage in every run and every
/// process, and to the same partition as in a stage layer's
/// [`PartitionDispatcher::new`](crate::dispatcher::PartitionDispatcher::new).
///
/// ```
/// use stageflow::flow::{Options, Window};
/// let opts = Options::<u64>::new().stages(4).max_demand(10).min_demand(0)
///     .window(Window::count(5));
/// # let _ = opts;
/// ```
pub struct Options<T> {
    stages: Option<usize>,
    min_demand: Option<usize>,
    max_demand: Option<usize>,
    window: Option<Window<T>>,
}

impl<T> Clone for Options<T> {
    fn clone(&self) -> Self {
        Options {
            stages: self.stages,
            min_demand: self.min_demand,
            max_demand: self.max_demand,
            window: self.window.clone(),
        }
    }
}

impl<T> fmt::Debug for Options<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("stages", &self.stages)
            .field("min_demand", &self.min_demand)
            .field("max_demand", &self.max_demand)
            .field("window", &self.window)
            .finish()
    }
}

impl<T> Default for Options<T> {
    fn default() -> Self {
        Options {
            stages: None,
            min_demand: None,
            max_demand: None,
            window: None,
        }
    }
}

pub(crate) struct Resolved<T> {
    pub stages: usize,
    pub batch_size: usize,
    pub window: Window<T>,
    pub window_given: bool,
}

impl<T> Options<T> {
    /// Default options.
    ///
    /// ```
    /// let _ = stageflow::flow::Options::<u8>::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of stages (lanes) of the layer; must be positive.
    ///
    /// ```
    /// let _ = stageflow::flow::Options::<u8>::new().stages(2);
    /// ```
    pub fn stages(mut self, n: usize) -> Self {
        self.stages = Some(n);
        self
    }
    /// GenStage's `max_demand` for the layer's stages; must be positive.
    ///
    /// ```
    /// let _ = stageflow::flow::Options::<u8>::new().max_demand(5);
    /// ```
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = Some(n);
        self
    }
    /// GenStage's `min_demand`; must be below `max_demand`.
    ///
    /// ```
    /// let _ = stageflow::flow::Options::<u8>::new().max_demand(5).min_demand(0);
    /// ```
    pub fn min_demand(mut self, n: usize) -> Self {
        self.min_demand = Some(n);
        self
    }
    /// The layer's window (default [`Window::global`]).
    ///
    /// ```
    /// use stageflow::flow::{Options, Window};
    /// let _ = Options::<u8>::new().window(Window::count(10));
    /// ```
    pub fn window(mut self, w: Window<T>) -> Self {
        self.window = Some(w);
        self
    }

    pub(crate) fn resolve(self) -> Result<Resolved<T>, FlowError> {
        let stages = self.stages.unwrap_or_else(rayon::current_num_threads);
        if stages == 0 {
            return Err(invalid("stages", stages, "expected a positive integer"));
        }
        let max = self.max_demand.unwrap_or(1000);
        if max == 0 {
            return Err(invalid("max_demand", max, "expected a positive integer"));
        }
        let min = self.min_demand.unwrap_or(max / 2);
        if min >= max {
            return Err(invalid(
                "min_demand",
                min,
                "expected an integer below :max_demand (the stage handles max_demand - min_demand events at a time)",
            ));
        }
        let window_given = self.window.is_some();
        let window = self.window.unwrap_or_else(Window::global);
        if let Some(e) = &window.error {
            return Err(e.clone());
        }
        Ok(Resolved {
            stages,
            batch_size: max - min,
            window,
            window_given,
        })
    }
}
