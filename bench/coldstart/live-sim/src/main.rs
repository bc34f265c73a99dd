//! `live-sim [ADDR]`: serves costream-sim's signature-checking Live API gateway on ADDR
//! (default 127.0.0.1:0) and prints `http://HOST:PORT/` on stdout once it listens. Requests must
//! be signed with ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET (from the
//! environment). `GET /_sim/calls` and `GET /_sim/tasks` show what arrived.

use std::io::Write as _;
use std::sync::Arc;

use costream_alibaba::Credentials;
use costream_sim::{http, SimulatedLive};
use secrecy::SecretString;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let var = |name: &str| {
        std::env::var(name).map_err(|_| std::io::Error::other(format!("{name} is not set")))
    };
    let credentials = Credentials::new(
        var("ALIBABA_CLOUD_ACCESS_KEY_ID")?,
        SecretString::from(var("ALIBABA_CLOUD_ACCESS_KEY_SECRET")?),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut out = std::io::stdout();
    writeln!(out, "http://{}/", listener.local_addr()?)?;
    out.flush()?;
    let sim = Arc::new(SimulatedLive::default());
    http::serve(listener, http::router(sim, credentials)).await
}
