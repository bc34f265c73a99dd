//! costream's library.
pub mod alibaba;
pub mod app;
pub mod aws;
pub mod domain;
pub mod mpu;
pub mod ports;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
