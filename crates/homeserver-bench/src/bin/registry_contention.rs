//! Contention on the device registry and the profile store of a running
//! homeserver, as the devices-and-profiles issue states its figures:
//! - N concurrent `PATCH`es of one device with the same `If-Match` must give
//!   exactly one 200 and N−1 412s, every round;
//! - N concurrent profile creations with distinct names must give N × 201;
//! - `POST /api/v1/devices/rescan` latency (discovery + one transaction).
//!
//! Prints one JSON line on stdout (per-round counts, medians) and a summary
//! on stderr; exits 1 when any round misses its figure. Cleans up the
//! profiles it made and restores the device's alias.

#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark binary reports on stdout/stderr")]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

/// Registry and profile contention benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:8080 (loopback only).
    #[arg(long)]
    url: String,
    /// An admin token.
    #[arg(long, env = "HOMESERVER_TOKEN", hide_env_values = true)]
    token: String,
    /// Rounds of each figure.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Concurrent requests per round.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("registry_contention: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    homeserver_bench::ensure_loopback(&args.url)?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", args.token).parse()?);
    let client =
        reqwest::Client::builder().default_headers(headers).pool_max_idle_per_host(args.concurrency).build()?;
    let base = args.url.trim_end_matches('/').to_owned();

    // Rescan latency (warm: the first call also warms the page cache).
    let mut rescan_ms = Vec::new();
    for _ in 0..=args.rounds {
        let t = Instant::now();
        let r = client.post(format!("{base}/api/v1/devices/rescan")).send().await?;
        if r.status() != 200 {
            bail!("rescan answered {}", r.status());
        }
        rescan_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    rescan_ms.remove(0);

    let devices: Value = client.get(format!("{base}/api/v1/devices?per_page=100")).send().await?.json().await?;
    let device = devices["items"].as_array().and_then(|a| a.first()).context("the registry is empty")?.clone();
    let id = device["id"].as_str().context("device id")?.to_owned();
    let url = format!("{base}/api/v1/devices/{id}");

    let mut ok = true;
    let mut patch_rounds = Vec::new();
    let mut patch_ms = Vec::new();
    for round in 0..args.rounds {
        let tag = client.get(&url).send().await?.headers().get("etag").context("ETag")?.to_str()?.to_owned();
        let t = Instant::now();
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|i| {
                let body = if round % 2 == 0 { json!({"alias": "bench"}) } else { json!({"alias": format!("b{i}")}) };
                let req = client.patch(&url).header("if-match", &tag).json(&body);
                tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await??);
        }
        patch_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let wins = codes.iter().filter(|c| **c == 200).count();
        let refused = codes.iter().filter(|c| **c == 412).count();
        ok &= wins == 1 && refused == args.concurrency - 1;
        patch_rounds.push(json!({"200": wins, "412": refused, "other": args.concurrency - wins - refused}));
    }
    let restore = json!({"alias": device["alias"].clone()});
    client.patch(&url).json(&restore).send().await?;

    let mut create_rounds = Vec::new();
    let mut create_ms = Vec::new();
    for round in 0..args.rounds {
        let t = Instant::now();
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|i| {
                let body = json!({"name": format!("bench-{round}-{i}"), "config": {"memory_limit_bytes": 64 << 20}});
                let req = client.post(format!("{base}/api/v1/profiles")).json(&body);
                tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            created += usize::from(t.await?? == 201);
        }
        create_ms.push(t.elapsed().as_secs_f64() * 1e3);
        ok &= created == args.concurrency;
        create_rounds.push(created);
        for i in 0..args.concurrency {
            client.delete(format!("{base}/api/v1/profiles/bench-{round}-{i}")).send().await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    let report = json!({
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "rescan_ms_median": median(rescan_ms.clone()),
        "rescan_ms_max": rescan_ms.iter().copied().fold(0.0, f64::max),
        "patch_rounds": patch_rounds,
        "patch_round_ms_median": median(patch_ms),
        "profile_creations": create_rounds,
        "create_round_ms_median": median(create_ms),
        "all_met": ok,
    });
    println!("{report}");
    eprintln!(
        "rescan median {:.2} ms; {} rounds of {} PATCHes with one If-Match and of {} creations: {}",
        report["rescan_ms_median"].as_f64().unwrap_or(f64::NAN),
        args.rounds,
        args.concurrency,
        args.concurrency,
        if ok { "every round met its figure" } else { "SOME ROUND MISSED" }
    );
    Ok(ok)
}
