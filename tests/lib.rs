//! Helpers shared by the integration tests (see `it/`) and the CLI's tests.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What to do when no DynamoDB endpoint can be had: the one command that sets everything up.
pub const HOW_TO_RUN: &str = "the DynamoDB tests need moto: run `bash scripts/test-all.sh` \
    (it installs moto into .venv-tools and starts it), or set AWS_ENDPOINT_URL_DYNAMODB to a \
    running moto_server";

/// The DynamoDB endpoint the tests use: `AWS_ENDPOINT_URL_DYNAMODB` when set (the test script
/// starts moto and exports it); otherwise a moto server this process starts on a free loopback
/// port — `scripts/moto_server_atomic.py` with `.venv-tools`'s Python (moto with DynamoDB's
/// atomic conditional writes), else `moto_server` from `PATH` — stopped when the test process
/// exits.
/// Panics at once with [`HOW_TO_RUN`] when neither exists.
pub fn dynamodb_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
            return url;
        }
        let Some(moto) = moto_server() else {
            panic!("{HOW_TO_RUN}");
        };
        start_moto(&moto).unwrap_or_else(|e| panic!("starting {moto}: {e}; {HOW_TO_RUN}"))
    })
}

/// The command that starts moto (its arguments follow).
fn moto_server() -> Option<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv-tools/bin/python");
    let atomic = root.join("scripts/moto_server_atomic.py");
    if python.is_file() && atomic.is_file() {
        return Some(format!("'{}' '{}'", python.display(), atomic.display()));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("moto_server"))
            .find(|p| p.is_file())
            .map(|p| format!("'{}'", p.display()))
    })
}

fn start_moto(moto: &str) -> Result<String, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    // A watchdog shell owns the server and stops it once this test process is gone, so no
    // moto_server outlives the tests.
    let script = format!(
        "{moto} -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
         while kill -0 {parent} 2>/dev/null; do sleep 1; done; kill $m",
        parent = std::process::id()
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("moto_server did not listen within 20 s".into())
}
