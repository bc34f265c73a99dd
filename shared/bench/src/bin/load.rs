//! `costream-load`: the load generator of `scripts/bench-serve.sh`.
//!
//! Replays the scripted life of `--rooms` rooms (`costream_bench::room_script`) against a running
//! `costream serve` over `--connections` keep-alive HTTP/1.1 connections: each connection takes
//! the next room and sends its callbacks one after another (a room's callbacks never overlap, as
//! when ARTC delivers them in order), so up to `--connections` rooms are in flight at once.
//! Latency is measured on the client, from sending a request to its whole answer.
//!
//! Afterwards it reads `GET /_sim/tasks` and checks that every room ended where its script says
//! (its host's MixMode 0 task with the expected number of Updates, or no task), so a run that
//! measured errors or lost events fails. It exits non-zero on any non-2xx answer, transport error
//! or misplaced room.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use costream_bench::{room_script, Expected, RoomPlan, RoomScript};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(
    name = "costream-load",
    about = "Replay many rooms' ARTC callbacks against costream serve"
)]
struct Args {
    /// `costream serve`'s address, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The callback path secret (`POST /artc/{secret}`).
    #[arg(long, default_value = costream_bench::LOCAL_ARTC_SECRET)]
    secret: String,
    /// The app id serve runs with.
    #[arg(long, default_value = costream_bench::LOCAL_APP_ID)]
    app: String,
    /// Rooms.
    #[arg(long, default_value_t = 2000)]
    rooms: usize,
    /// Co-streaming cycles per room (7 callbacks each).
    #[arg(long, default_value_t = 5)]
    cycles: u32,
    /// Every Nth room's host leaves at the end (0: none).
    #[arg(long, default_value_t = 4)]
    host_leaves_every: usize,
    /// Concurrent keep-alive connections (= rooms in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Threads of the load generator's runtime (it shares the machine with serve).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Clock ticks per second of /proc/self/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// By HTTP status.
    statuses: BTreeMap<u16, u64>,
    /// By the answer's `result` (`converged`, `no_change`, …).
    results: BTreeMap<String, u64>,
    /// The first few non-2xx answers.
    samples: Vec<String>,
    transport_errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.results {
            *self.results.entry(k).or_default() += v;
        }
        self.samples.extend(
            other
                .samples
                .into_iter()
                .take(5 - self.samples.len().min(5)),
        );
        self.transport_errors += other.transport_errors;
    }
}

async fn connect(addr: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when its sender is dropped; an error shows on the next request.
        let _ended = conn.await;
    });
    Ok(sender)
}

/// The `result` field of an ARTC answer, found without parsing the JSON (the generator shares
/// the CPUs with serve, so it does as little as it can).
fn result_of(body: &[u8]) -> &str {
    const KEY: &[u8] = b"\"result\":\"";
    body.windows(KEY.len())
        .position(|w| w == KEY)
        .and_then(|i| {
            let rest = &body[i + KEY.len()..];
            let end = rest.iter().position(|b| *b == b'"')?;
            std::str::from_utf8(&rest[..end]).ok()
        })
        .unwrap_or("?")
}

async fn worker(
    addr: String,
    path: Arc<str>,
    rooms: Arc<Vec<Vec<Bytes>>>,
    next: Arc<AtomicUsize>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender = match connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            tally.transport_errors += 1;
            tally.samples.push(format!("{e:#}"));
            return tally;
        }
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(room) = rooms.get(i) else {
            return tally;
        };
        for body in room {
            let request = Request::builder()
                .method(Method::POST)
                .uri(&*path)
                .header(header::HOST, &addr)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            let request = match request {
                Ok(r) => r,
                Err(e) => {
                    tally.transport_errors += 1;
                    tally.samples.push(e.to_string());
                    return tally;
                }
            };
            let started = Instant::now();
            let answer = async {
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                anyhow::Ok((status, body))
            }
            .await;
            let took = started.elapsed();
            match answer {
                Ok((status, body)) => {
                    tally
                        .latencies_us
                        .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    *tally.statuses.entry(status).or_default() += 1;
                    if (200..300).contains(&status) {
                        *tally
                            .results
                            .entry(result_of(&body).to_owned())
                            .or_default() += 1;
                    } else if tally.samples.len() < 5 {
                        tally.samples.push(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ));
                    }
                }
                Err(e) => {
                    // The connection is unusable: count it and stop this worker.
                    tally.transport_errors += 1;
                    tally.samples.push(format!("transport: {e:#}"));
                    return tally;
                }
            }
        }
    }
}

/// `GET /_sim/tasks` as JSON.
async fn sim_tasks(addr: &str) -> anyhow::Result<Vec<Value>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ended = conn.await;
    });
    let request = Request::builder()
        .method(Method::GET)
        .uri("/_sim/tasks")
        .header(header::HOST, addr)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "GET /_sim/tasks answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Checks every room against the simulator's tasks; returns how many rooms are rightly live and
/// rightly off, and the problems found.
fn check(app: &str, scripts: &[RoomScript], tasks: &[Value]) -> (usize, usize, Vec<String>) {
    let mut by_channel: HashMap<&str, Vec<&Value>> = HashMap::new();
    for task in tasks.iter().filter(|t| t["app_id"] == app) {
        if let Some(channel) = task["channel_id"].as_str() {
            by_channel.entry(channel).or_default().push(task);
        }
    }
    let mut problems = Vec::new();
    let (mut live, mut off) = (0, 0);
    for script in scripts {
        let found = by_channel
            .get(script.channel.as_str())
            .map_or(&[][..], Vec::as_slice);
        let ok = match (&script.expected, found) {
            (Expected::Off, []) => {
                off += 1;
                true
            }
            (Expected::Single { host, updates }, [task]) => {
                let ok = task["mix_mode"] == 0
                    && task["users"] == serde_json::json!([host])
                    && task["updates"] == *updates;
                live += usize::from(ok);
                ok
            }
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "{}: expected {:?}, found {}",
                script.channel,
                script.expected,
                serde_json::to_string(found).unwrap_or_default()
            ));
        }
    }
    (live, off, problems)
}

/// This process's CPU time (user + system) from /proc/self/stat, if readable.
fn cpu_time(clk_tck: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / clk_tck.max(1)))
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let plan = RoomPlan {
        cycles: args.cycles,
        host_leaves_every: args.host_leaves_every,
    };
    // Stamped a little in the past, as callbacks are; a room's script spans 2 + 8 × cycles s.
    let t0 = now - 60 - 8 * u64::from(args.cycles);
    let run_id = format!("run{now}");
    let scripts: Vec<RoomScript> = (0..args.rooms)
        .map(|i| room_script(&args.app, &run_id, i, t0, plan))
        .collect();
    let bodies: Arc<Vec<Vec<Bytes>>> = Arc::new(
        scripts
            .iter()
            .map(|s| s.callbacks.iter().cloned().map(Bytes::from).collect())
            .collect(),
    );
    let total: usize = bodies.iter().map(Vec::len).sum();
    let path: Arc<str> = format!("/artc/{}", args.secret).into();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time(args.clk_tck);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            tokio::spawn(worker(
                args.addr.clone(),
                path.clone(),
                bodies.clone(),
                next.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await?);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time(args.clk_tck)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));

    let tasks = sim_tasks(&args.addr).await?;
    let (live, off, problems) = check(&args.app, &scripts, &tasks);

    let mut lat = std::mem::take(&mut tally.latencies_us);
    lat.sort_unstable();
    let answered = lat.len();
    let ok: u64 = tally
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    let not_ok = answered as u64 - ok;
    let rate = answered as f64 / elapsed.as_secs_f64();
    let results: Vec<String> = tally
        .results
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let statuses: Vec<String> = tally
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "rooms:             {} ({} cycles each, {})",
        args.rooms,
        args.cycles,
        match args.host_leaves_every {
            0 => "no host leaves".to_owned(),
            n => format!("the host leaves in 1 room of {n}"),
        }
    );
    println!(
        "connections:       {} (load generator threads: {})",
        args.connections, args.threads
    );
    println!("callbacks:         {answered} answered of {total} in {elapsed:.2?}");
    println!("throughput:        {rate:.0} callbacks/s");
    println!(
        "latency (ms):      p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        percentile(&lat, 100.0)
    );
    println!("http statuses:     {}", statuses.join(" "));
    println!("results:           {}", results.join(" "));
    println!(
        "non-2xx:           {not_ok}   transport errors: {}",
        tally.transport_errors
    );
    if let Some(cpu) = cpu {
        println!(
            "load generator cpu: {cpu:.2?} ({:.0}% of one core)",
            100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    println!(
        "rooms checked:     {} ({live} live with the expected task, {off} ended), {} wrong",
        scripts.len(),
        problems.len()
    );
    for sample in &tally.samples {
        println!("  error sample: {sample}");
    }
    for problem in problems.iter().take(5) {
        println!("  wrong room: {problem}");
    }
    Ok(not_ok == 0 && tally.transport_errors == 0 && answered == total && problems.is_empty())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    if runtime.block_on(run(args))? {
        Ok(())
    } else {
        bail!("the load test saw errors or rooms that ended in the wrong place (see above)")
    }
}
