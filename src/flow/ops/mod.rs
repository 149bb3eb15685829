//! Operators that need more than a fused batch function: reducers, departition and
//! take_sort, joins.

pub(crate) mod departition;
pub(crate) mod join;
pub(crate) mod reduce;
pub(crate) mod stages;
