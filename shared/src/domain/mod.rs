//! The pure room core.
