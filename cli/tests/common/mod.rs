//! What the `costream serve` tests share: starting the binary on a free port and the ARTC
//! callback fixtures. (Each test file uses what it needs.)
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `costream serve`, stopped when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Best effort: the test is over either way.
        let _kill = self.child.kill();
        let _wait = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts `costream serve --listen <ip>:<free port> <args>` with only `env` set (plus the app
/// id `9qb1abcd` and callback secret `s3cret-path`) and waits until it accepts connections on
/// 127.0.0.1 (`ip` is 127.0.0.1, or 0.0.0.0, which answers there too).
pub fn start_on(ip: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_costream"))
        .args(["serve", "--listen", &format!("{ip}:{port}")])
        .args(args)
        .env_clear()
        .env("COSTREAM_APP_ID", "9qb1abcd")
        .env("COSTREAM_ARTC_CALLBACK_SECRET", "s3cret-path")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn costream serve");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "costream serve did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// An ARTC callback body from `tests/fixtures/artc/`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/artc/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
