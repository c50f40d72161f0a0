//! What the security and operations layer costs, and whether a flood of bad
//! tokens hurts good clients (issue figures: ≤ 5 % of `GET /api/v1/system`
//! throughput; good clients' p99 < 10 ms during 10,000 bad-token requests).
//!
//! One process serves the same state twice: port A with every layer
//! (the edge: request id and its log scope, route table, authentication,
//! rate limit, scope check, body limit, timeout, audit, problems, headers,
//! metrics), port B with none (`api::bare_router`: the same router). `wrk`
//! (Debian) loads each in turn, several rounds, interleaved; medians and
//! the median of each round's pair are printed as Markdown.
//!
//! `cargo bench -p homeserver --bench layer_cost 2>/dev/null` (env: ROUNDS,
//! SECS, CONNS; LOG: the log level, `info` as the product's default, `off`
//! for no subscriber; HOLD=1 prints both addresses and a token and serves
//! until killed).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use homeserver::auth::{Limits, Security};
use homeserver::clock::SystemClock;
use homeserver::config::Settings;
use homeserver::live::LiveHub;
use homeserver::state::{AppState, Probe};
use homeserver::tokens::{TokenAdmin, TokenTable};
use homeserver_domain::{Clock, Scope, SnapshotPublisher, SnapshotSource, TokenService};
use homeserver_sqlite::{SqliteStore, StoreOptions};
use homeserver_sysinfo::{SourceConfig, SysinfoSource};

struct Up;

#[async_trait::async_trait]
impl Probe for Up {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Wrk {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
}

fn wrk(args: &[&str]) -> Wrk {
    let out = Command::new("wrk").args(args).output().expect("wrk is installed (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()));
    let rps = field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let p99 = field("99%").map(|v| parse_latency(&v)).unwrap_or(f64::NAN);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let non_2xx = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    Wrk { rps, p99_ms: p99, requests, non_2xx }
}

fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    if let Some(n) = v.strip_suffix("us") {
        n.parse::<f64>().unwrap_or(f64::NAN) / 1000.0
    } else if let Some(n) = v.strip_suffix("ms") {
        n.parse().unwrap_or(f64::NAN)
    } else if let Some(n) = v.strip_suffix('s') {
        n.parse::<f64>().unwrap_or(f64::NAN) * 1000.0
    } else {
        f64::NAN
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

async fn serve<S>(app: S) -> SocketAddr
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let make = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(app);
    tokio::spawn(async move {
        axum::serve(listener, make).await.unwrap();
    });
    addr
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run());
}

async fn run() {
    let rounds = env("ROUNDS", 5);
    let secs = env("SECS", 5);
    let conns = env("CONNS", 64);
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.database.path = dir.path().join("bench.db");
    // The product's log subscriber at the product's default level (what
    // the layer logs per request is part of its cost), to stderr;
    // `LOG=off` runs without one.
    settings.logging.level = std::env::var("LOG").unwrap_or_else(|_| "info".to_owned());
    if settings.logging.level != "off" {
        homeserver::telemetry::init_tracing(&settings.logging);
    }
    let settings = Arc::new(settings);

    let store = Arc::new(SqliteStore::open(StoreOptions::new(&settings.database.path)).await.unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let table = Arc::new(TokenTable::load(store.clone(), clock.clone()).await.unwrap());
    let tokens = Arc::new(TokenAdmin::new(TokenService::new(store.clone(), clock.clone()), Some(table.clone())));
    let secret = homeserver::tokens::generate().unwrap();
    tokens.create(homeserver::tokens::new_id(), "bench", vec![Scope::Read], None, secret.hash.clone()).await.unwrap();

    let hub = Arc::new(LiveHub::new(16));
    let source = SysinfoSource::new(SourceConfig::default()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.publish(Arc::new(source.sample(clock.now()).await.unwrap()));
    let host_info = Arc::new(source.host_info().await.unwrap());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let devices = Arc::new(homeserver_domain::DeviceService::new(
        Arc::new(homeserver::devices::inventory(&settings)),
        store.clone(),
        clock.clone(),
    ));
    let profiles =
        Arc::new(homeserver_domain::ProfileService::new(store.clone(), Arc::clone(&devices), clock.clone(), 2));
    let state = AppState {
        hub,
        history: None,
        host_info,
        database: Arc::new(Up),
        sampler: Arc::default(),
        writer: None,
        settings: settings.clone(),
        clock: clock.clone(),
        tokens,
        audit: store.clone(),
        containers: None,
        devices,
        profiles,
        operations: homeserver::operations::OperationRunner::new(store.clone(), clock.clone(), 1),
        shutdown,
    };
    // Limits as a deployment for one heavy client would set them: high enough
    // that wrk measures the layer's cost, not its refusals.
    let security = Arc::new(
        Security::new(
            table,
            Limits { per_second: 1_000_000, burst: 1_000_000, max_failures_per_minute: 10, max_ws_per_token: 32 },
        )
        .with_audit(homeserver::auth::AuditSink { repository: store.clone(), clock: clock.clone() }),
    );
    let full = serve(homeserver::api::router(state.clone(), security).unwrap()).await;
    let bare = serve(homeserver::api::bare_router(state)).await;
    let auth = format!("Authorization: Bearer {}", secret.token);
    let (d, c, t) = (format!("{secs}s"), conns.to_string(), "2".to_owned());
    if std::env::var_os("HOLD").is_some() {
        // For profiling by hand: serve both until killed.
        println!("on http://{full}/api/v1/system\noff http://{bare}/api/v1/system\n{auth}");
        std::future::pending::<()>().await;
    }

    let (mut on, mut off, mut on_p99, mut off_p99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let url_on = format!("http://{full}/api/v1/system");
        let url_off = format!("http://{bare}/api/v1/system");
        let order: [(bool, &str); 2] =
            if round % 2 == 0 { [(true, &url_on), (false, &url_off)] } else { [(false, &url_off), (true, &url_on)] };
        for (layered, url) in order {
            let r = wrk(&["-t", &t, "-c", &c, "-d", &d, "--latency", "-H", &auth, url]);
            assert_eq!(r.non_2xx, 0, "every request must succeed ({url})");
            if layered {
                on.push(r.rps);
                on_p99.push(r.p99_ms);
            } else {
                off.push(r.rps);
                off_p99.push(r.p99_ms);
            }
        }
    }
    let (on_m, off_m) = (median(on.clone()), median(off.clone()));
    println!("### Security and operations layer: cost on `GET /api/v1/system`\n");
    println!(
        "wrk -t2 -c{conns} -d{secs}s, {rounds} interleaved rounds, medians (per-round req/s: on {on:?}, off {off:?}).\n"
    );
    println!("| build | req/s | p99 ms |\n|---|---:|---:|");
    println!("| every layer on | {on_m:.0} | {:.2} |", median(on_p99));
    println!("| no layer (`bare_router`) | {off_m:.0} | {:.2} |", median(off_p99));
    // Each round's two runs are seconds apart, so their ratio cancels the
    // slow drift of a shared machine that the medians of each side keep.
    let paired = median(on.iter().zip(&off).map(|(a, b)| 1.0 - a / b).collect());
    println!(
        "\nLayer cost: {:.1} % of throughput by the medians, {:.1} % by the median of the rounds' pairs \
         (target ≤ 5 %).\n",
        (1.0 - on_m / off_m) * 100.0,
        paired * 100.0
    );

    // Flood: bad tokens at 32 connections while a good client at 4 measures p99.
    println!("### A flood of bad tokens next to good clients\n");
    println!(
        "| round | bad-token requests | bad answered 401/429 | good req/s | good p99 ms |\n|---:|---:|---:|---:|---:|"
    );
    let mut good_p99 = Vec::new();
    for round in 0..rounds.min(3) {
        let url = format!("http://{full}/api/v1/system");
        let bad_url = url.clone();
        let bad = std::thread::spawn(move || {
            wrk(&[
                "-t",
                "1",
                "-c",
                "32",
                "-d",
                "4s",
                "-H",
                &format!("Authorization: Bearer hs_{}", "0".repeat(64)),
                &bad_url,
            ])
        });
        std::thread::sleep(Duration::from_millis(300));
        let good = wrk(&["-t", "1", "-c", "4", "-d", "3s", "--latency", "-H", &auth, &url]);
        let bad = bad.join().unwrap();
        assert_eq!(good.non_2xx, 0, "good clients are never refused");
        assert_eq!(bad.non_2xx, bad.requests, "every bad-token request is refused");
        println!("| {round} | {} | {} | {:.0} | {:.2} |", bad.requests, bad.non_2xx, good.rps, good.p99_ms);
        good_p99.push(good.p99_ms);
    }
    println!("\nGood clients' p99 during the flood: median {:.2} ms (target < 10 ms).", median(good_p99));
}
