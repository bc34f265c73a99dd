//! The live view of `costream serve` (`GET /`, `GET /_local/view`) in a real headless Chromium:
//! the seed flow over HTTP, and after each step the page's DOM (dumped by Chromium after the
//! page's own JavaScript fetched and drew the view) shows the applied layout to scale. A
//! screenshot of the two-pane state is kept in `target/test-output/view/two-panes.png`.
//!
//! Chromium is required, never skipped: `/usr/bin/chromium` (Debian's `chromium` package), or
//! the executable named by `CHROMIUM`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{fixture, Server};
use serde_json::Value;

/// Starts `costream serve --listen <ip>:<free port>` (see `common::start_on`).
fn start(ip: &str) -> Server {
    common::start_on(ip, &[], &[])
}

async fn post(http: &reqwest::Client, server: &Server, name: &str) {
    let res = http
        .post(format!("{}/artc/s3cret-path", server.base))
        .header("content-type", "application/json")
        .body(fixture(name))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), 200, "{name}");
}

/// Where the test keeps its screenshot and DOM dumps: `<target>/test-output/view`, `<target>`
/// being `CARGO_TARGET_DIR` when set (absolute), else the directory above the binary's profile.
fn output_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_costream"))
                .parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("test-output").join("view");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The Chromium executable: `CHROMIUM`, else `/usr/bin/chromium`. Missing is a failure.
fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let runs = Command::new(&path)
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        runs,
        "the live view test needs a headless Chromium and {} does not run: \
         install it with `apt-get install chromium` (Debian/Ubuntu), or set CHROMIUM to a \
         Chromium or Chrome executable",
        path.display()
    );
    path
}

/// Runs headless Chromium on `url` with `extra` arguments, in a fresh profile, killed after
/// 60 s. Returns its standard output (the DOM with `--dump-dom`).
fn run_chromium(url: &str, extra: &[String]) -> String {
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let profile = output_dir().join(format!(
        "profile-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _fresh = std::fs::remove_dir_all(&profile);
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--mute-audio",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _read = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _read = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _kill = child.kill();
            let _wait = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let _cleanup = std::fs::remove_dir_all(&profile);
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("chromium failed ({s}) on {url}: {}", tail(&err)),
        None => panic!(
            "chromium did not finish within 60 s on {url}: {}",
            tail(&err)
        ),
    }
}

fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(2000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    &s[start..]
}

/// A pane of the page's SVG, as its `data-*` attributes say (pixels).
#[derive(Debug, Clone, PartialEq)]
struct Pane {
    user: String,
    z: u32,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// The value of attribute `name` in the tag `tag` (its text from `<` to `>`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// The opening tags named `name` in `html` (`<name ...>`), in document order.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let Some(len) = rest[i..].find('>') else {
            break;
        };
        found.push(&rest[i..=i + len]);
        rest = &rest[i + len..];
    }
    found
}

/// What the page shows for `channel`: the svg's `data-mix-mode` and its panes in document
/// order, or `None` if the room has no drawn layout.
fn drawn(dom: &str, channel: &str) -> Option<(String, Vec<Pane>)> {
    let marker = format!("data-channel=\"{channel}\"");
    let svg_at = tags(dom, "svg")
        .into_iter()
        .find(|t| t.contains(&marker))
        .and_then(|t| dom.find(t))?;
    let end = svg_at + dom[svg_at..].find("</svg>")?;
    let svg = &dom[svg_at..end];
    let mode = attr(tags(svg, "svg").first()?, "data-mix-mode")?.to_owned();
    let num = |t: &str, n: &str| -> f64 {
        attr(t, n)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{n} in {t}"))
    };
    let panes = tags(svg, "rect")
        .into_iter()
        .filter(|t| attr(t, "class") == Some("pane"))
        .map(|t| Pane {
            user: attr(t, "data-user").expect("data-user").to_owned(),
            z: attr(t, "data-z")
                .and_then(|v| v.parse().ok())
                .expect("data-z"),
            x: num(t, "data-x"),
            y: num(t, "data-y"),
            w: num(t, "data-w"),
            h: num(t, "data-h"),
        })
        .collect();
    Some((mode, panes))
}

/// Dumps the page's DOM until `check` accepts it (the page polls every second), for up to
/// ~20 s; fails with the last DOM otherwise. Returns the accepted DOM.
fn dom_until(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    for dumps in 1.. {
        let dom = run_chromium(url, &["--dump-dom".to_owned()]);
        if check(&dom) {
            eprintln!("{what}: shown in dump {dumps}");
            return dom;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {what}; last DOM:\n{dom}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    unreachable!("the loop returns or fails")
}

fn pane(user: &str, z: u32, x: f64, y: f64, w: f64, h: f64) -> Pane {
    Pane {
        user: user.into(),
        z,
        x,
        y,
        w,
        h,
    }
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 1024 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_draws_the_seed_flow_in_headless_chromium() {
    let browser = chromium();
    eprintln!("using {}", browser.display());
    let server = start("127.0.0.1");
    let http = reqwest::Client::new();
    let page = format!("{}/", server.base);
    let out = output_dir();
    let room = "room-1001";

    // Before any room: the page renders (its poll ran) and says so.
    let dom = tokio::task::block_in_place(|| {
        dom_until(&page, "the empty view", |d| d.contains("data-polls=\""))
    });
    assert!(dom.contains("No rooms yet"), "{dom}");

    // The host publishes: MixMode 0, one pane filling the 720×1280 canvas.
    post(&http, &server, "01_host_publish.json").await;
    let one = |dom: &str| {
        drawn(dom, room)
            == Some((
                "0".into(),
                vec![pane("host_u1", 0, 0.0, 0.0, 720.0, 1280.0)],
            ))
    };
    let dom = tokio::task::block_in_place(|| dom_until(&page, "the host's single pane", one));
    for shown in [
        "LIVE",
        "host_u1",
        "viewBox=\"0 0 720 1280\"",
        "start room-1001_",
    ] {
        assert!(dom.contains(shown), "{shown} missing from\n{dom}");
    }

    // A co-streamer publishes: MixMode 1, the portrait canvas's two stacked halves.
    post(&http, &server, "02_guest_publish.json").await;
    let two = |dom: &str| {
        drawn(dom, room).is_some_and(|(mode, panes)| {
            let mut sorted = panes.clone();
            sorted.sort_by(|a, b| a.y.total_cmp(&b.y));
            mode == "1"
                && sorted
                    == vec![
                        pane("host_u1", sorted[0].z, 0.0, 0.0, 720.0, 640.0),
                        pane("guest_u2", sorted[1].z, 0.0, 640.0, 720.0, 640.0),
                    ]
                // Document order is the z-order, bottom first.
                && panes.windows(2).all(|w| w[0].z <= w[1].z)
        })
    };
    let dom = tokio::task::block_in_place(|| dom_until(&page, "two stacked panes", two));
    for shown in [
        "host_u1, guest_u2",
        "update room-1001_",
        "users=[host_u1,guest_u2]",
    ] {
        assert!(dom.contains(shown), "{shown} missing from\n{dom}");
    }
    std::fs::write(out.join("two-panes.html"), &dom).expect("keep the DOM");
    let shot = out.join("two-panes.png");
    let _old = std::fs::remove_file(&shot);
    tokio::task::block_in_place(|| {
        run_chromium(
            &page,
            &[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,1000".to_owned(),
            ],
        )
    });
    assert!(
        is_png(&shot),
        "no screenshot (a PNG over 1 KB) at {}",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
    // Still two panes after the screenshot: it shows the state checked above.
    let view: Value = http
        .get(format!("{}/_local/view", server.base))
        .send()
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    assert_eq!(
        view["rooms"][0]["layout"]["panes"].as_array().map(Vec::len),
        Some(2)
    );

    // The co-streamer leaves: back to the host's single pane.
    post(&http, &server, "03_guest_leave.json").await;
    tokio::task::block_in_place(|| dom_until(&page, "the single pane again", one));
}

#[tokio::test]
async fn the_page_is_self_contained_and_the_data_is_the_applied_layout() {
    let server = start("127.0.0.1");
    let http = reqwest::Client::new();
    let res = http
        .get(format!("{}/", server.base))
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), 200);
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = res.text().await.expect("html");
    assert!(html.contains("/_local/view"), "the page polls the data");
    let lower = html.to_ascii_lowercase();
    for asset in ["src=", "<link", "@import", "url(", "href="] {
        assert!(!lower.contains(asset), "the page references {asset}");
    }
    // The only absolute URL is the SVG namespace (an identifier, never fetched).
    let without_ns = html.replace("'http://www.w3.org/2000/svg'", "");
    assert!(
        !without_ns.contains("http://") && !without_ns.contains("https://"),
        "the page names an external URL"
    );

    // The data: the task's applied layout in 1/10000 of the canvas, the last calls.
    post(&http, &server, "01_host_publish.json").await;
    post(&http, &server, "02_guest_publish.json").await;
    let view: Value = http
        .get(format!("{}/_local/view", server.base))
        .send()
        .await
        .expect("view")
        .json()
        .await
        .expect("json");
    let room = &view["rooms"][0];
    assert_eq!(room["channel_id"], "room-1001");
    assert_eq!(room["mix_mode"], 1);
    assert_eq!(room["layout"]["mix_mode"], 1);
    assert_eq!(
        room["layout"]["canvas"],
        serde_json::json!({"width": 720, "height": 1280})
    );
    assert_eq!(room["layout"]["units"], 10_000);
    assert_eq!(
        room["layout"]["panes"][1],
        serde_json::json!({"user": "guest_u2", "x": 0, "y": 5000, "width": 10000,
                           "height": 5000, "z_order": 0, "source": "camera"})
    );
    assert!(room["task"]
        .as_str()
        .is_some_and(|t| t.starts_with("room-1001_")));
    let calls = room["calls"].as_array().expect("calls");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(view["generated_at_ms"].as_u64().is_some());

    // Addressed to another host name (a DNS-rebinding page): refused.
    let rebound = http
        .get(format!("{}/_local/view", server.base))
        .header("host", "attacker.example:8080")
        .send()
        .await
        .expect("view");
    assert_eq!(rebound.status(), 403);
}

#[tokio::test]
async fn the_view_is_only_served_on_a_loopback_listen_address() {
    let server = start("0.0.0.0");
    let http = reqwest::Client::new();
    for path in ["/", "/_local/view"] {
        let res = http
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), 404, "{path}");
        let body = res.text().await.expect("body");
        assert!(body.contains("loopback"), "{path}: {body}");
    }
    // The rest of the server answers as usual.
    let tasks = http
        .get(format!("{}/_sim/tasks", server.base))
        .send()
        .await
        .expect("tasks");
    assert_eq!(tasks.status(), 200);
}
