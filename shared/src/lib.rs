//! costream's library.
pub mod domain;
