//! The configuration secrets at cold start, against moto's Secrets Manager (the same server as
//! the DynamoDB tests): each function reads only its own secrets, all at once, and how long that
//! takes. Prints the medians (`cargo test --test it secrets_cold_start -- --nocapture`).
//!
//! What a cold start waits for, measured here with a fresh SDK configuration (a new HTTP client,
//! so a new connection) per run, as a new Lambda container has:
//! - `sdk config`: `aws_config` with the runtime's timeouts (no network: credentials and region
//!   come from the configuration, as on Lambda from the environment);
//! - `1 secret (before)`: the single all-keys secret every function read before the split;
//! - `3 secrets, sequential` / `3 secrets, concurrent`: cdn-ingest's three secrets read one after
//!   the other, and as `secret_lookup` reads them (all requests in flight at once);
//! - `1 HTTP client build`: one `reqwest::Client` (it loads and parses the platform's TLS roots);
//!   `3 secrets, then 2 clients` / `3 secrets || 2 clients`: a shell function's secrets followed by
//!   its two HTTP clients (Live API, webhooks), and the same with the clients built meanwhile;
//! - `status init` / `shell init`: the whole init of room-status and of a shell function
//!   (secrets, configuration, clients), from a fresh SDK configuration.
//!
//! moto answers on loopback without TLS, and `scripts/moto_server_atomic.py` handles one request
//! at a time, so the absolute numbers are far below Lambda's (a TLS handshake to Secrets Manager
//! in-region) and concurrency can only overlap the client side and the connections: the ratios are
//! the result, not the milliseconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use costream_runtime::aws::{fetch_secrets, secret_lookup, secrets_client, SecretError};
use costream_runtime::init::{lambda_services_from, status_services_from, InitError};

/// A fresh SDK configuration against moto: what a new container builds (own HTTP client).
async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(integration_tests::dynamodb_endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_millis(1_500))
                .operation_timeout(Duration::from_secs(4))
                .build(),
        )
        .load()
        .await
}

/// Creates a secret holding `keys` as JSON, under a name unique to this run; its ARN.
async fn create_secret(sdk: &SdkConfig, name: &str, keys: &[(&str, &str)]) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let body: HashMap<&str, &str> = keys.iter().copied().collect();
    let out = secrets_client(sdk)
        .create_secret()
        .name(format!("costream-it/{name}-{nanos}"))
        .secret_string(serde_json::to_string(&body).expect("json"))
        .send()
        .await
        .expect("create the secret on moto");
    out.arn().expect("an ARN").to_owned()
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&'static str, String> = vars.into_iter().collect();
    move |k| map.get(k).cloned()
}

/// The plain (non-secret) variables template.yaml sets on every function.
fn plain_env(arns: &[&String]) -> Vec<(&'static str, String)> {
    vec![
        ("COSTREAM_APP_ID", "9qb1abcd".to_owned()),
        ("COSTREAM_TABLE", "costream-cold-start".to_owned()),
        ("COSTREAM_PUSH_DOMAIN", "push.example.com".to_owned()),
        ("COSTREAM_PLAY_DOMAIN", "play.example.com".to_owned()),
        ("COSTREAM_MAX_IDLE_TIME", "120".to_owned()),
        (
            "COSTREAM_NOTIFY_URL",
            "https://backend.example.com/hooks".to_owned(),
        ),
        (
            "COSTREAM_SECRET_ARN",
            arns.iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]
}

const ACCESS_KEY_SECRET: &str = "ak-secret-value-0123456789";

struct Secrets {
    /// The layout before the split: one secret with every key.
    all: String,
    mpu: String,
    backend: String,
    playback: String,
    cdn: String,
}

async fn secrets(sdk: &SdkConfig) -> Secrets {
    let mpu = [
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI0123456789"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET),
        ("COSTREAM_PUSH_AUTH_KEY", "push-key-value"),
    ];
    let backend = [("COSTREAM_NOTIFY_SECRET", "backend-hmac-value-0123")];
    let playback = [("COSTREAM_PLAY_AUTH_KEY", "play-key-value")];
    let cdn = [("COSTREAM_CDN_NOTIFY_AUTH_KEY", "cdnnotifykey0123456789")];
    let mut all: Vec<(&str, &str)> = Vec::new();
    all.extend(mpu);
    all.extend(backend);
    all.extend(playback);
    all.extend(cdn);
    all.extend([
        (
            "COSTREAM_ARTC_CALLBACK_SECRET",
            "artc-path-value-0123456789abcdef",
        ),
        ("COSTREAM_ARTC_APP_KEY", "artc-app-key-value"),
    ]);
    Secrets {
        all: create_secret(sdk, "all", &all).await,
        mpu: create_secret(sdk, "mpu", &mpu).await,
        backend: create_secret(sdk, "backend", &backend).await,
        playback: create_secret(sdk, "playback", &playback).await,
        cdn: create_secret(sdk, "cdn", &cdn).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_reads_only_its_secrets_and_the_lookup_prefers_the_environment() {
    let setup = sdk().await;
    let s = secrets(&setup).await;

    // cdn-ingest: the MPU, backend and CDN secrets, read at once and merged.
    let mut env = plain_env(&[&s.mpu, &s.backend, &s.cdn]);
    env.push(("COSTREAM_PUSH_AUTH_KEY", "from-the-environment".to_owned()));
    let get = secret_lookup(&sdk().await, lookup(env))
        .await
        .expect("three secrets");
    assert_eq!(
        get("ALIBABA_CLOUD_ACCESS_KEY_SECRET").as_deref(),
        Some(ACCESS_KEY_SECRET)
    );
    assert_eq!(
        get("COSTREAM_CDN_NOTIFY_AUTH_KEY").as_deref(),
        Some("cdnnotifykey0123456789")
    );
    // The environment comes first (a variable set by hand wins over the secret).
    assert_eq!(
        get("COSTREAM_PUSH_AUTH_KEY").as_deref(),
        Some("from-the-environment")
    );
    // Not given to this function: not there.
    assert_eq!(get("COSTREAM_PLAY_AUTH_KEY"), None);

    // room-status starts from its two secrets, with no AccessKey at all...
    let status_env = || lookup(plain_env(&[&s.playback, &s.backend]));
    let status = status_services_from(&sdk().await, status_env())
        .await
        .expect("room-status starts without the AccessKey");
    assert!(status.config.playback.play_auth_key.is_some());
    assert!(status.config.backend_secret.is_some());
    // ...while a shell function given the same secrets refuses to start, naming the variable.
    let Err(err) = lambda_services_from(&sdk().await, status_env()).await else {
        panic!("a shell function started without the AccessKey");
    };
    assert!(
        matches!(err, InitError::Credentials(_)) && err.to_string().contains("ACCESS_KEY_ID"),
        "{err}"
    );

    // A key in two secrets is refused (each value has one home), naming the key, not the value.
    let err = fetch_secrets(&secrets_client(&setup), &[s.all.clone(), s.mpu.clone()])
        .await
        .expect_err("the AccessKey is in both");
    assert!(matches!(err, SecretError::Duplicate { .. }), "{err}");
    // A secret that is not there: the error names it and shows no value.
    let missing = s.mpu.replace("costream-it/mpu", "costream-it/gone");
    let err = fetch_secrets(
        &secrets_client(&setup),
        &[s.backend.clone(), missing.clone()],
    )
    .await
    .expect_err("missing");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&missing), "{shown}");
    for value in [ACCESS_KEY_SECRET, "backend-hmac-value-0123"] {
        assert!(!shown.contains(value), "{shown}");
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What building one HTTP client costs: reqwest loads and parses the platform's TLS roots at
/// every `build()` (the Live API client and the webhook notifier each build one at init).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("an HTTP client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_secret_timings() {
    const RUNS: usize = 21;
    let setup = sdk().await;
    let s = secrets(&setup).await;
    let three = [s.mpu.clone(), s.backend.clone(), s.cdn.clone()];
    // moto builds its Secrets Manager backend on the first request: not part of any run.
    fetch_secrets(&secrets_client(&setup), &three)
        .await
        .expect("warm moto");

    let names = [
        "sdk config",
        "1 secret (before), cold",
        "1 secret, warm connection",
        "3 secrets, sequential",
        "3 secrets, concurrent",
        "1 HTTP client build",
        "3 secrets, then 2 clients",
        "3 secrets || 2 clients",
        "status init (2 secrets)",
        "shell init (3 secrets)",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(RUNS); names.len()];
    for _ in 0..RUNS {
        // Interleaved, so drift on a shared machine hits every variant alike.
        let t = Instant::now();
        let fresh = sdk().await;
        samples[0].push(t.elapsed());

        let client = secrets_client(&fresh);
        let t = Instant::now();
        fetch_secrets(&client, std::slice::from_ref(&s.all))
            .await
            .expect("one");
        samples[1].push(t.elapsed());
        let t = Instant::now();
        fetch_secrets(&client, std::slice::from_ref(&s.all))
            .await
            .expect("one, again");
        samples[2].push(t.elapsed());

        let client = secrets_client(&sdk().await);
        let t = Instant::now();
        for arn in &three {
            fetch_secrets(&client, std::slice::from_ref(arn))
                .await
                .expect("one of three");
        }
        samples[3].push(t.elapsed());

        let client = secrets_client(&sdk().await);
        let t = Instant::now();
        fetch_secrets(&client, &three).await.expect("three");
        samples[4].push(t.elapsed());

        let t = Instant::now();
        drop(http_client());
        samples[5].push(t.elapsed());

        // A shell function's init today: the secrets, then the Live API client and the notifier.
        let client = secrets_client(&sdk().await);
        let t = Instant::now();
        fetch_secrets(&client, &three).await.expect("three");
        drop((http_client(), http_client()));
        samples[6].push(t.elapsed());

        // The same with the two clients built while the secrets are in flight (what the runtime
        // could do if the Live API client and the notifier took a prebuilt HTTP client).
        let client = secrets_client(&sdk().await);
        let t = Instant::now();
        let (secrets, clients) = tokio::join!(
            fetch_secrets(&client, &three),
            tokio::task::spawn_blocking(|| (http_client(), http_client()))
        );
        secrets.expect("three");
        drop(clients.expect("two clients"));
        samples[7].push(t.elapsed());

        let t = Instant::now();
        let fresh = sdk().await;
        status_services_from(&fresh, lookup(plain_env(&[&s.playback, &s.backend])))
            .await
            .expect("status init");
        samples[8].push(t.elapsed());

        let t = Instant::now();
        let fresh = sdk().await;
        lambda_services_from(&fresh, lookup(plain_env(&[&s.mpu, &s.backend, &s.cdn])))
            .await
            .expect("shell init");
        samples[9].push(t.elapsed());
    }
    println!("cold start against moto, median of {RUNS} runs:");
    let medians: Vec<Duration> = samples.iter_mut().map(|s| median(s)).collect();
    for (name, m) in names.iter().zip(&medians) {
        println!("  {name:<28} {:>8.2} ms", ms(*m));
    }
    println!(
        "  3 secrets: sequential {:.2}x, concurrent {:.2}x the time of 1",
        ms(medians[3]) / ms(medians[1]),
        ms(medians[4]) / ms(medians[1]),
    );
    // Not a timing test: only that nothing took absurdly long (a hung connection, a retry loop).
    for (name, m) in names.iter().zip(&medians) {
        assert!(*m < Duration::from_secs(2), "{name}: {m:?}");
    }
}
