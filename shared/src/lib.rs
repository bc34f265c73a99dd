//! costream's library.
pub mod alibaba;
pub mod app;
pub mod aws;
pub mod config;
pub mod domain;
pub mod handlers;
pub mod inbound;
pub mod init;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod mpu;
pub mod ports;
pub mod sim;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
