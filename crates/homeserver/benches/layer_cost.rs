//! What the security and operations layer costs, and whether a flood of bad
//! tokens hurts good clients (issue figures: ≤ 5 % of `GET /api/v1/system`
//! throughput; good clients' p99 < 10 ms during 10,000 bad-token requests).
//!
//! First, in process (no network): the whole edge and the bare router
//! (`api::bare_router`) called in batches, interleaved; ns per request.
//! Then one process serves the same state three times: with every layer
//! (the edge: request id and its log scope, route table, authentication,
//! rate limit, scope check, body limit, timeout, audit, problems, headers,
//! metrics), with none (the bare router), and with none but the two safety
//! headers (`nosniff`, `no-store`), i.e. without exactly the layer the
//! issue names. `wrk` (Debian) loads each once per round in a rotating
//! order; medians, the median of the rounds' pairs and CPU per request of
//! server and wrk are printed as Markdown.
//!
//! `cargo bench -p homeserver --bench layer_cost 2>/dev/null` (env: ROUNDS,
//! SECS, CONNS; LOG: the log level, `info` as the product's default, `off`
//! for no subscriber; HOLD=1 prints the addresses and a token and serves
//! until killed; INPROC=1 stops after the in-process part, with BATCH and
//! INPROC_ONLY=on|off for instruction counts under callgrind, see
//! `run_batch`).
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
    let app = homeserver::api::router(state.clone(), security).unwrap();
    let bare_app = homeserver::api::bare_router(state);
    let token = secret.token.clone();
    in_process(app.clone(), bare_app.clone(), &token).await;
    if std::env::var_os("INPROC").is_some() {
        return;
    }

    let full = serve(app).await;
    let bare = serve(bare_app.clone()).await;
    let bare_safe = serve(with_safety_headers(bare_app)).await;
    let auth = format!("Authorization: Bearer {}", secret.token);
    let (d, c, t) = (format!("{secs}s"), conns.to_string(), "2".to_owned());
    if std::env::var_os("HOLD").is_some() {
        // For profiling by hand: serve every variant until killed.
        println!(
            "on http://{full}/api/v1/system\noff http://{bare}/api/v1/system\n{auth}\n\
             off+headers http://{bare_safe}/api/v1/system"
        );
        std::future::pending::<()>().await;
    }

    // Every round measures each variant once, in a rotating order.
    let variants =
        [("every layer on", full), ("no layer (`bare_router`)", bare), ("no layer, safety headers", bare_safe)];
    let mut windows: Vec<Vec<Window>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds as usize {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            let url = format!("http://{}/api/v1/system", variants[v].1);
            let before = Cpu::now();
            let r = wrk(&["-t", &t, "-c", &c, "-d", &d, "--latency", "-H", &auth, &url]);
            let spent = Cpu::now().since(&before);
            assert_eq!(r.non_2xx, 0, "every request must succeed ({url})");
            let per = |us: f64| us / r.requests.max(1) as f64;
            windows[v].push(Window { rps: r.rps, p99_ms: r.p99_ms, server_us: per(spent.0), wrk_us: per(spent.1) });
        }
    }
    println!("### Security and operations layer: cost on `GET /api/v1/system`\n");
    println!(
        "wrk -t2 -c{conns} -d{secs}s on the same 2 cores, {rounds} rounds (each variant once per round, \
         rotating order); medians. CPU per request from `/proc/self/stat` (server: this process; wrk: its \
         children).\n"
    );
    println!("| variant | req/s | p99 ms | server µs/req | wrk µs/req |\n|---|---:|---:|---:|---:|");
    for (v, (name, _)) in variants.iter().enumerate() {
        let w = &windows[v];
        let m = |f: fn(&Window) -> f64| median(w.iter().map(f).collect());
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} |",
            m(|w| w.rps),
            m(|w| w.p99_ms),
            m(|w| w.server_us),
            m(|w| w.wrk_us)
        );
    }
    // Each round's runs are seconds apart, so their ratio cancels the
    // slow drift of a shared machine that the medians of each side keep.
    let pairs = |off: usize| -> (f64, f64, f64, f64) {
        let on = &windows[0];
        let cost: Vec<f64> = on.iter().zip(&windows[off]).map(|(a, b)| 1.0 - a.rps / b.rps).collect();
        let server = median(on.iter().zip(&windows[off]).map(|(a, b)| a.server_us - b.server_us).collect());
        let wrk = median(on.iter().zip(&windows[off]).map(|(a, b)| a.wrk_us - b.wrk_us).collect());
        (median(cost.clone()), spread(&cost), server, wrk)
    };
    for (off, what) in [
        (1, "the whole edge (against the bare router)"),
        (
            2,
            "the layer the issue names — auth, rate limit, request id, metrics (against the bare router that also sends `nosniff` and `no-store`)",
        ),
    ] {
        let (cost, se, server, wrk) = pairs(off);
        println!(
            "\nCost of {what}: **{:.1} %** of throughput by the median of the rounds' pairs (± {:.1} % standard \
             error), {:.1} % by the medians; +{server:.2} µs server CPU and +{wrk:.2} µs wrk CPU per request \
             (target ≤ 5 %).",
            cost * 100.0,
            se * 100.0,
            (1.0 - median(windows[0].iter().map(|w| w.rps).collect())
                / median(windows[off].iter().map(|w| w.rps).collect()))
                * 100.0,
        );
    }
    println!();

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

/// One wrk window of one variant.
#[derive(Clone)]
struct Window {
    rps: f64,
    p99_ms: f64,
    server_us: f64,
    wrk_us: f64,
}

/// Standard error of the median of `v` (1.2533 σ/√n).
fn spread(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    1.2533 * sd / n.sqrt()
}

/// CPU time of this process and of its waited-for children, in µs.
struct Cpu(f64, f64);

impl Cpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Fields after the command's closing parenthesis, 3-based.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<f64> = rest.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
        let tick_us = 1e6 / 100.0; // USER_HZ
        Self((f[11] + f[12]) * tick_us, (f[13] + f[14]) * tick_us)
    }

    fn since(&self, before: &Self) -> (f64, f64) {
        (self.0 - before.0, self.1 - before.1)
    }
}

/// The bare router with the two safety headers the edge adds besides the
/// request id (`nosniff`, `no-store`), without a boxed future: what the
/// product would still send with the layer the issue names taken away.
fn with_safety_headers<S>(
    service: S,
) -> tower::util::MapResponse<S, fn(axum::response::Response) -> axum::response::Response>
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response>,
{
    fn add(mut r: axum::response::Response) -> axum::response::Response {
        let h = r.headers_mut();
        h.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
        h.insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
        r
    }
    tower::ServiceExt::<axum::extract::Request>::map_response(service, add as fn(_) -> _)
}

/// CPU per request without the network: each service called in this
/// thread with the request wrk sends (token, peer address), the answer's
/// body read to the end; batches of each, interleaved; medians in ns.
async fn in_process<A, B>(mut on: A, mut off: B, token: &str)
where
    A: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>,
    B: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>,
{
    let request = || {
        let mut r = axum::http::Request::builder()
            .uri("/api/v1/system")
            .header("host", "127.0.0.1:1")
            .header("authorization", format!("Bearer {token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        r.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40_000))));
        r
    };
    let batch = u32::try_from(env("BATCH", 20_000)).unwrap();
    // `INPROC_ONLY=on|off`: that variant alone (for instruction counts
    // under `valgrind --tool=callgrind --toggle-collect='*in_process*'`).
    let only = std::env::var("INPROC_ONLY").ok();
    let (mut on_ns, mut off_ns) = (Vec::new(), Vec::new());
    for round in 0..env("ROUNDS", 15) * 2 {
        let layered = round % 2 == 0;
        if only.as_deref().is_some_and(|o| (o == "on") != layered) {
            continue;
        }
        let t = std::time::Instant::now();
        if layered {
            run_batch(&mut on, batch, &request)
        } else {
            run_batch(&mut off, batch, &request)
        }
        let ns = t.elapsed().as_nanos() as f64 / f64::from(batch);
        if layered { on_ns.push(ns) } else { off_ns.push(ns) }
    }
    let paired = median(on_ns.iter().zip(&off_ns).map(|(a, b)| a - b).collect());
    println!(
        "in process, ns per request (medians of {} batches of {batch}): on {:.0}, off {:.0}, layer {paired:.0} by pairs",
        on_ns.len(),
        median(on_ns.clone()),
        median(off_ns.clone())
    );
}

/// `n` requests to `service`, each answer read to its end. Polled here, on
/// this thread (every future involved is ready at once), in a function of
/// its own, so that `valgrind --tool=callgrind --collect-atstart=no
/// --toggle-collect='layer_cost::run_batch*'` counts these instructions only.
#[inline(never)]
fn run_batch<S>(service: &mut S, n: u32, request: &dyn Fn() -> axum::extract::Request)
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>,
{
    use http_body_util::BodyExt as _;
    futures::executor::block_on(async {
        for _ in 0..n {
            let response = service.call(request()).await.unwrap();
            assert!(response.status().is_success());
            std::hint::black_box(response.into_body().collect().await.unwrap());
        }
    });
}
