//! Meters a process's CPU (% of one core) and memory over a window, while
//! optionally polling an HTTP URL once a second and holding one `/api/v1/ws`
//! subscriber, so that homeserver and its peers are measured the same way.
//!
//! Prints one JSON object on stdout; exits 1 if a poll failed or the
//! subscriber missed a snapshot.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use homeserver_bench::{Meter, check_seqs, ensure_loopback, small_client_config, snapshot_seq, subscribe};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

/// Process meter with optional client load.
#[derive(Debug, Parser)]
struct Args {
    /// Process to meter.
    #[arg(long)]
    pid: u32,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Also meter the descendants of --pid (for services that run plugins
    /// as child processes, such as netdata).
    #[arg(long)]
    tree: bool,
    /// URL to GET once a second (loopback only); the body is read in full.
    #[arg(long)]
    poll_url: Option<String>,
    /// `/api/v1/ws` URL to hold one `snapshots` subscriber on (loopback only).
    #[arg(long)]
    ws_url: Option<String>,
    /// API token, sent as `Authorization: Bearer` with every poll and the
    /// WebSocket upgrade.
    #[arg(long, env = "HOMESERVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Load runs this long before the window starts, seconds.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Deadline of one poll, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    poll_timeout_ms: u64,
}

#[derive(Debug, Default, Serialize)]
struct PollStats {
    ok: u64,
    errors: u64,
    avg_bytes: f64,
    avg_ms: f64,
    max_ms: f64,
    last_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct WsStats {
    frames: u64,
    missing: u64,
    repeated: u64,
    error: Option<String>,
}

async fn poll(
    url: String,
    token: Option<String>,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<PollStats> {
    let client = reqwest::Client::builder().no_proxy().timeout(timeout).build().context("building the HTTP client")?;
    let mut stats = PollStats::default();
    let (mut bytes, mut total_ms) = (0u64, 0.0);
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            _ = every_second.tick() => {}
        }
        let started = Instant::now();
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let result = async { request.send().await?.error_for_status()?.bytes().await }.await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(body) => {
                stats.ok += 1;
                bytes += body.len() as u64;
                total_ms += ms;
                stats.max_ms = stats.max_ms.max(ms);
            }
            Err(e) => {
                stats.errors += 1;
                stats.last_error = Some(e.to_string());
            }
        }
    }
    if stats.ok > 0 {
        stats.avg_bytes = bytes as f64 / stats.ok as f64;
        stats.avg_ms = total_ms / stats.ok as f64;
    }
    Ok(stats)
}

async fn hold_subscriber(url: String, token: Option<String>, mut stop: watch::Receiver<bool>) -> WsStats {
    let mut stats = WsStats::default();
    let mut ws = match subscribe(&url, token.as_deref(), small_client_config(4 * 1024), Duration::from_secs(10)).await {
        Ok(ws) => ws,
        Err(e) => {
            stats.error = Some(format!("{e:#}"));
            return stats;
        }
    };
    let mut seqs = Vec::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => seqs.extend(snapshot_seq(text.as_str())),
                Some(Ok(_)) => {}
                Some(Err(e)) => { stats.error = Some(e.to_string()); break; }
                None => { stats.error = Some("connection ended".to_owned()); break; }
            },
        }
    }
    let check = check_seqs(seqs.iter().copied());
    stats.frames = seqs.len() as u64;
    stats.missing = check.missing;
    stats.repeated = check.repeated;
    stats
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<ExitCode> {
    let mut args = Args::parse();
    args.token = args.token.filter(|t| !t.is_empty());
    for url in args.poll_url.iter().chain(&args.ws_url) {
        ensure_loopback(url)?;
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let poller = args.poll_url.clone().map(|url| {
        tokio::spawn(poll(url, args.token.clone(), Duration::from_millis(args.poll_timeout_ms), stop_rx.clone()))
    });
    let subscriber =
        args.ws_url.clone().map(|url| tokio::spawn(hold_subscriber(url, args.token.clone(), stop_rx.clone())));
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let mut meter = Meter::start(args.pid, args.tree)?;
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.tick().await;
    for _ in 0..args.secs {
        every_second.tick().await;
        meter.sample()?;
    }
    let report = meter.finish()?;
    stop_tx.send(true).context("stopping the load")?;

    let poll = match poller {
        Some(task) => Some(task.await.context("the poller panicked")??),
        None => None,
    };
    let ws = match subscriber {
        Some(task) => Some(task.await.context("the subscriber panicked")?),
        None => None,
    };
    let poll_ok = poll.as_ref().is_none_or(|p| p.errors == 0 && p.ok > 0);
    let ws_ok = ws.as_ref().is_none_or(|w| w.error.is_none() && w.missing == 0 && w.frames > 0);
    let ok = poll_ok && ws_ok;
    println!(
        "{}",
        serde_json::json!({
            "ok": ok,
            "meter": report,
            "poll_url": args.poll_url,
            "poll": poll,
            "ws_url": args.ws_url,
            "ws": ws,
        })
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
