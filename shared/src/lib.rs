//! costream's library.
pub mod alibaba;
pub mod domain;
