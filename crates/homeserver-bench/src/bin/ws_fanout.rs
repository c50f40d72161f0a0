//! Opens many `/api/v1/ws` subscribers and checks that every one of them
//! receives every snapshot, while metering the server's CPU and memory.
//!
//! Prints one JSON line on stdout and a human summary on stderr; exits 1 if
//! fewer than `--clients` connected or any client missed a snapshot.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures_util::StreamExt;
use homeserver_bench::{Meter, check_seqs, ensure_loopback, small_client_config, snapshot_seq, subscribe};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// WebSocket fan-out benchmark for `/api/v1/ws`.
#[derive(Debug, Parser)]
struct Args {
    /// WebSocket URL, e.g. ws://127.0.0.1:8080/api/v1/ws (loopback only).
    #[arg(long)]
    url: String,
    /// Subscribers to open.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Length of the measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// API token, sent as `Authorization: Bearer` on every upgrade.
    #[arg(long, env = "HOMESERVER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PID of the server, metered through /proc.
    #[arg(long)]
    pid: u32,
    /// Connections opened concurrently while ramping up.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Pause between the ramp-up and the window, seconds.
    #[arg(long, default_value_t = 3)]
    settle_secs: u64,
    /// After the window, how long the last tick may take to reach every client, ms.
    #[arg(long, default_value_t = 2_000)]
    grace_ms: u64,
    /// Per-connection read buffer, bytes.
    #[arg(long, default_value_t = 4 * 1024)]
    read_buffer: usize,
    /// Deadline for one connect + subscribe + first snapshot, seconds.
    #[arg(long, default_value_t = 20)]
    connect_timeout_secs: u64,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Outcome {
    subscribed: bool,
    /// `(seq, arrival)` of every `snapshots` frame.
    frames: Vec<(u64, Instant)>,
    /// Why the connection failed or ended before the stop signal.
    error: Option<String>,
}

struct Client {
    url: Arc<str>,
    token: Option<Arc<str>>,
    config: WebSocketConfig,
    connect_timeout: Duration,
    ready: mpsc::Sender<bool>,
    stop: watch::Receiver<bool>,
    max_seq: Arc<AtomicU64>,
}

impl Client {
    async fn run(mut self) -> Outcome {
        let mut outcome = Outcome::default();
        outcome.frames.reserve(64);
        // Ready = subscribed and holding a first snapshot, so that the
        // window's first tick is known once every client is ready.
        let started = async {
            let mut ws = subscribe(&self.url, self.token.as_deref(), self.config, self.connect_timeout).await?;
            loop {
                match ws.next().await.context("connection ended before the first snapshot")?? {
                    Message::Text(text) => {
                        if let Some(seq) = snapshot_seq(text.as_str()) {
                            outcome.frames.push((seq, Instant::now()));
                            self.max_seq.fetch_max(seq, Ordering::Relaxed);
                            return anyhow::Ok(ws);
                        }
                    }
                    Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
                    _ => {}
                }
            }
        };
        let mut ws = match tokio::time::timeout(self.connect_timeout, started).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                outcome.error = Some(format!("{e:#}"));
                let _ = self.ready.send(false).await;
                return outcome;
            }
            Err(_) => {
                outcome.error = Some("timed out waiting for the first snapshot".to_owned());
                let _ = self.ready.send(false).await;
                return outcome;
            }
        };
        outcome.subscribed = true;
        let _ = self.ready.send(true).await;
        loop {
            tokio::select! {
                _ = self.stop.wait_for(|stop| *stop) => break,
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(seq) = snapshot_seq(text.as_str()) {
                            outcome.frames.push((seq, Instant::now()));
                            self.max_seq.fetch_max(seq, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        outcome.error = Some(format!("server closed the connection: {frame:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        outcome.error = Some(format!("read error: {e}"));
                        break;
                    }
                    None => {
                        outcome.error = Some("connection ended".to_owned());
                        break;
                    }
                },
            }
        }
        outcome
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(rank).copied().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode> {
    let mut args = Args::parse();
    args.token = args.token.filter(|t| !t.is_empty());
    ensure_loopback(&args.url)?;
    if args.clients == 0 || args.batch == 0 || args.secs == 0 {
        bail!("--clients, --batch and --secs must be positive");
    }

    let (ready_tx, mut ready_rx) = mpsc::channel(args.batch);
    let (stop_tx, stop_rx) = watch::channel(false);
    let max_seq = Arc::new(AtomicU64::new(0));
    let url: Arc<str> = Arc::from(args.url.as_str());
    let token: Option<Arc<str>> = args.token.as_deref().map(Arc::from);
    let mut tasks = Vec::with_capacity(args.clients);
    let (mut connected, mut failed) = (0usize, 0usize);

    let ramp = Instant::now();
    let mut started = 0;
    while started < args.clients {
        let batch = args.batch.min(args.clients - started);
        for _ in 0..batch {
            let client = Client {
                url: url.clone(),
                token: token.clone(),
                config: small_client_config(args.read_buffer),
                connect_timeout: Duration::from_secs(args.connect_timeout_secs),
                ready: ready_tx.clone(),
                stop: stop_rx.clone(),
                max_seq: max_seq.clone(),
            };
            tasks.push(tokio::spawn(client.run()));
        }
        for _ in 0..batch {
            match ready_rx.recv().await.context("clients vanished")? {
                true => connected += 1,
                false => failed += 1,
            }
        }
        started += batch;
    }
    let ramp_secs = ramp.elapsed().as_secs_f64();
    eprintln!("ws_fanout: {connected}/{} subscribed in {ramp_secs:.1} s ({failed} failed)", args.clients);
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;

    // Measurement window: ticks lo..=hi are the ones first seen inside it.
    let lo = max_seq.load(Ordering::SeqCst) + 1;
    let mut server = Meter::start(args.pid, false)?;
    let mut me = Meter::start(std::process::id(), false)?;
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.tick().await;
    for _ in 0..args.secs {
        every_second.tick().await;
        server.sample()?;
        me.sample()?;
    }
    let hi = max_seq.load(Ordering::SeqCst);
    let server = server.finish()?;
    let me = me.finish()?;
    tokio::time::sleep(Duration::from_millis(args.grace_ms)).await;
    stop_tx.send(true).context("stopping clients")?;

    let ticks = if hi >= lo { hi - lo + 1 } else { 0 };
    let (mut clients_with_gaps, mut missing, mut repeated, mut incomplete, mut dropped) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut frames_in_window = 0u64;
    let mut arrivals: HashMap<u64, (Instant, Instant)> = HashMap::new();
    let mut errors: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        let outcome = task.await.context("a client task panicked")?;
        if let Some(e) = &outcome.error {
            *errors.entry(e.clone()).or_default() += 1;
        }
        if !outcome.subscribed {
            continue;
        }
        if outcome.error.is_some() {
            dropped += 1;
        }
        let check = check_seqs(outcome.frames.iter().map(|&(seq, _)| seq));
        if check.missing > 0 {
            clients_with_gaps += 1;
            missing += check.missing;
        }
        repeated += check.repeated;
        let mut seen = 0u64;
        let mut prev = None;
        for &(seq, at) in &outcome.frames {
            if (lo..=hi).contains(&seq) && prev != Some(seq) {
                seen += 1;
                let span = arrivals.entry(seq).or_insert((at, at));
                span.0 = span.0.min(at);
                span.1 = span.1.max(at);
            }
            prev = Some(seq);
        }
        frames_in_window += seen;
        if seen != ticks {
            incomplete += 1;
        }
    }
    let mut spreads: Vec<f64> = arrivals.values().map(|(a, b)| (*b - *a).as_secs_f64() * 1000.0).collect();
    spreads.sort_by(f64::total_cmp);
    let frames_expected = connected as u64 * ticks;
    let ok = connected == args.clients && ticks > 0 && clients_with_gaps == 0 && incomplete == 0;

    let summary = serde_json::json!({
        "ok": ok,
        "clients": args.clients,
        "connected": connected,
        "connect_failures": failed,
        "ramp_secs": ramp_secs,
        "window_secs": server.secs,
        "ticks": ticks,
        "frames": frames_in_window,
        "frames_expected": frames_expected,
        "clients_with_gaps": clients_with_gaps,
        "missing_frames": missing,
        "repeated_frames": repeated,
        "clients_incomplete": incomplete,
        "clients_dropped": dropped,
        "fanout_spread_ms_p50": percentile(&spreads, 0.5),
        "fanout_spread_ms_max": percentile(&spreads, 1.0),
        "server": server,
        "client": me,
        "errors": errors,
    });
    println!("{summary}");
    eprintln!(
        "ws_fanout: {connected}/{} clients, {ticks} ticks in {:.1} s, {frames_in_window}/{frames_expected} frames, \
         {clients_with_gaps} clients with gaps ({missing} missing), {incomplete} incomplete, {dropped} dropped; \
         server {:.1}% of one core, RSS avg {:.1} MiB max {:.1} MiB (HWM {:.1}); client {:.1}% CPU, {:.1} MiB; \
         fan-out spread p50 {:.0} ms max {:.0} ms: {}",
        args.clients,
        server.secs,
        server.cpu_pct,
        server.rss_avg_mib,
        server.rss_max_mib,
        server.hwm_mib,
        me.cpu_pct,
        me.rss_max_mib,
        percentile(&spreads, 0.5),
        percentile(&spreads, 1.0),
        if ok { "PASS" } else { "FAIL" },
    );
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
