//! The Flow layer (under construction).
