//! Load generators and process meters for benchmarking homeserver and its
//! peers (prometheus-node-exporter, glances, netdata).
//!
//! This crate owns:
//! - reading a process's CPU time and memory from `/proc/<pid>` ([`Meter`]),
//! - a small-buffer WebSocket subscriber for the `/api/v1/ws` protocol
//!   ([`subscribe`], [`snapshot_seq`]),
//! - the guard that keeps every benchmark on loopback ([`ensure_loopback`]).
//!
//! It must not know product internals: it talks to the service only through
//! HTTP and WebSocket, exactly as any client would, and observes it only
//! through `/proc/<pid>`. It therefore depends on no homeserver crate.

#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The message that subscribes to the `snapshots` topic.
pub const SUBSCRIBE: &str = r#"{"op":"subscribe","topics":["snapshots"]}"#;

const KIB_PER_MIB: f64 = 1024.0;

/// Fails unless `url` points at 127.0.0.1, `localhost` or `[::1]`:
/// benchmarks never load another machine.
pub fn ensure_loopback(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    match host {
        "127.0.0.1" | "localhost" | "::1" => Ok(()),
        other => bail!("refusing to benchmark `{other}`: only loopback addresses are allowed ({url})"),
    }
}

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/<pid>/stat`.
///
/// Asks `getconf CLK_TCK` (calling `sysconf` directly would need `unsafe`);
/// falls back to 100, the value on Linux x86_64 and arm64.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// What the benches read of `/proc/<pid>/stat`.
struct Stat {
    ppid: u32,
    /// `utime + stime`, clock ticks.
    ticks: u64,
    /// `cutime + cstime` (children that exited and were waited for), clock ticks.
    reaped: u64,
}

fn read_stat(pid: u32) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may contain spaces and parentheses: parse
    // after the last ')'. Then field 3 (state) is index 0, so field N is N-3.
    let (_, after) = text.rsplit_once(')').with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("{path}: no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("{path}: field {n} is not a number"))
    };
    let ppid = u32::try_from(field(4)?).with_context(|| format!("{path}: ppid out of range"))?;
    Ok(Stat { ppid, ticks: field(14)? + field(15)?, reaped: field(16)? + field(17)? })
}

/// CPU time (user + system, all threads) of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    Ok(read_stat(pid)?.ticks)
}

/// CPU time of `pid`'s children that exited and were waited for
/// (`cutime + cstime`), in clock ticks: the cost of short-lived helper
/// processes (`lxc-ls`, ...) that [`cpu_ticks`] does not see.
pub fn reaped_children_ticks(pid: u32) -> Result<u64> {
    Ok(read_stat(pid)?.reaped)
}

/// Pids of the processes whose `comm` (the kernel's 15-character name)
/// starts with `prefix`.
pub fn pids_named(prefix: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end().starts_with(prefix)))
        .collect()
}

/// Memory figures of one process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemKib {
    /// `VmRSS`: resident set now.
    pub rss: u64,
    /// `VmHWM`: peak resident set since start.
    pub hwm: u64,
}

/// `VmRSS` and `VmHWM` of `pid` from `/proc/<pid>/status`.
pub fn mem_kib(pid: u32) -> Result<MemKib> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut mem = MemKib::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            mem.rss = parse_kib(v).with_context(|| format!("{path}: VmRSS"))?;
        } else if let Some(v) = line.strip_prefix("VmHWM:") {
            mem.hwm = parse_kib(v).with_context(|| format!("{path}: VmHWM"))?;
        }
    }
    Ok(mem)
}

/// `Pss` of `pid` in KiB from `/proc/<pid>/smaps_rollup`, when readable.
/// Unlike RSS, PSS splits shared pages between the processes that map them,
/// so it can be summed over a process tree.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Pss:")).and_then(|v| parse_kib(v).ok())
}

fn parse_kib(value: &str) -> Result<u64> {
    let number = value.split_whitespace().next().context("empty value")?;
    number.parse::<u64>().with_context(|| format!("`{number}` is not a number"))
}

/// `root` and all its descendants that are alive now.
pub fn process_tree(root: u32) -> Result<Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        // Processes may exit while we scan: skip the ones that vanish.
        if let Ok(Stat { ppid, .. }) = read_stat(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut seen = HashSet::from([root]);
    let mut i = 0;
    while let Some(&pid) = tree.get(i) {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(child) {
                tree.push(child);
            }
        }
        i += 1;
    }
    Ok(tree)
}

/// What a [`Meter`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct MeterReport {
    /// Measured process (the root when a tree was measured).
    pub pid: u32,
    /// Whether descendants were included.
    pub tree: bool,
    /// Processes measured at the end.
    pub procs: usize,
    /// Wall time of the window.
    pub secs: f64,
    /// CPU time over wall time, in % of one core.
    pub cpu_pct: f64,
    /// Mean of the RSS samples (summed over the tree), MiB.
    pub rss_avg_mib: f64,
    /// Largest RSS sample, MiB.
    pub rss_max_mib: f64,
    /// Mean of the PSS samples (summed over the tree), MiB; 0 if unreadable.
    pub pss_avg_mib: f64,
    /// `VmHWM` of the root process at the end, MiB.
    pub hwm_mib: f64,
    /// Number of memory samples.
    pub samples: usize,
}

/// Measures CPU % of one core and resident memory of a process (optionally
/// with its descendants) between [`Meter::start`] and [`Meter::finish`];
/// call [`Meter::sample`] about once a second in between.
///
/// CPU of a descendant that starts and exits between two samples is missed
/// (its time goes to the parent's `cutime`, which is not counted).
#[derive(Debug)]
pub struct Meter {
    root: u32,
    tree: bool,
    ticks_per_sec: u64,
    started: Instant,
    base: HashMap<u32, u64>,
    last: HashMap<u32, u64>,
    rss_kib: Vec<u64>,
    pss_kib: Vec<u64>,
    procs: usize,
}

impl Meter {
    /// Starts measuring `root` (and its descendants if `tree`).
    pub fn start(root: u32, tree: bool) -> Result<Self> {
        let mut meter = Self {
            root,
            tree,
            ticks_per_sec: clock_ticks_per_sec(),
            started: Instant::now(),
            base: HashMap::new(),
            last: HashMap::new(),
            rss_kib: Vec::new(),
            pss_kib: Vec::new(),
            procs: 0,
        };
        for pid in meter.pids()? {
            if let Ok(ticks) = cpu_ticks(pid) {
                meter.base.insert(pid, ticks);
                meter.last.insert(pid, ticks);
            }
        }
        cpu_ticks(root).with_context(|| format!("process {root} is not running"))?;
        meter.started = Instant::now();
        Ok(meter)
    }

    fn pids(&self) -> Result<Vec<u32>> {
        if self.tree { process_tree(self.root) } else { Ok(vec![self.root]) }
    }

    /// Takes one CPU and memory sample; fails if the root process is gone.
    pub fn sample(&mut self) -> Result<()> {
        let pids = self.pids()?;
        let (mut rss, mut pss) = (0, 0);
        for &pid in &pids {
            let (Ok(ticks), Ok(mem)) = (cpu_ticks(pid), mem_kib(pid)) else {
                if pid == self.root {
                    bail!("process {pid} exited during the measurement");
                }
                continue;
            };
            // A process first seen now was born during the window.
            self.base.entry(pid).or_insert(0);
            self.last.insert(pid, ticks);
            rss += mem.rss;
            pss += pss_kib(pid).unwrap_or(0);
        }
        self.rss_kib.push(rss);
        self.pss_kib.push(pss);
        self.procs = pids.len();
        Ok(())
    }

    /// Takes a last sample and reports the window.
    pub fn finish(mut self) -> Result<MeterReport> {
        self.sample()?;
        let secs = self.started.elapsed().as_secs_f64();
        let ticks: u64 =
            self.last.iter().map(|(pid, &t)| t.saturating_sub(self.base.get(pid).copied().unwrap_or(0))).sum();
        let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
        let avg = |v: &[u64]| if v.is_empty() { 0.0 } else { mib(v.iter().sum::<u64>()) / v.len() as f64 };
        Ok(MeterReport {
            pid: self.root,
            tree: self.tree,
            procs: self.procs,
            secs,
            cpu_pct: ticks as f64 / self.ticks_per_sec as f64 / secs.max(f64::EPSILON) * 100.0,
            rss_avg_mib: avg(&self.rss_kib),
            rss_max_mib: mib(self.rss_kib.iter().copied().max().unwrap_or(0)),
            pss_avg_mib: avg(&self.pss_kib),
            hwm_mib: mib(mem_kib(self.root)?.hwm),
            samples: self.rss_kib.len(),
        })
    }
}

/// Client settings for many idle subscribers: a 4 KiB read buffer instead of
/// tungstenite's 128 KiB, and eager writes (clients only send one short
/// message).
pub fn small_client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Connects to `/api/v1/ws` (sending `Authorization: Bearer <token>` when
/// given), subscribes to `snapshots` and waits for the `subscribed` reply
/// (at most `timeout` in all).
pub async fn subscribe(url: &str, token: Option<&str>, config: WebSocketConfig, timeout: Duration) -> Result<Ws> {
    let mut request = url.into_client_request().with_context(|| format!("bad WebSocket URL {url}"))?;
    if let Some(token) = token {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token is not a valid header value")?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let go = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        ws.send(Message::text(SUBSCRIBE)).await.context("sending subscribe")?;
        while let Some(msg) = ws.next().await {
            if let Message::Text(text) = msg.context("reading the subscribe reply")? {
                match serde_json::from_str::<Frame<'_>>(text.as_str()).map(|f| f.topic) {
                    Ok("subscribed") => return Ok(ws),
                    Ok("error") | Err(_) => bail!("subscribe refused: {}", text.as_str()),
                    Ok(_) => {}
                }
            }
        }
        bail!("connection closed before the subscribe reply")
    };
    tokio::time::timeout(timeout, go).await.context("timed out subscribing")?
}

#[derive(Deserialize)]
struct Frame<'a> {
    topic: &'a str,
    #[serde(default)]
    seq: u64,
}

/// The `seq` of a `snapshots` frame; `None` for any other text.
pub fn snapshot_seq(text: &str) -> Option<u64> {
    serde_json::from_str::<Frame<'_>>(text).ok().filter(|f| f.topic == "snapshots").map(|f| f.seq)
}

/// How a received `seq` sequence deviates from "each one once, in order".
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SeqCheck {
    /// Sequence numbers skipped between consecutive frames.
    pub missing: u64,
    /// Frames whose seq was not greater than the previous one.
    pub repeated: u64,
}

/// Checks that `seqs` increase by exactly one each time.
pub fn check_seqs(seqs: impl IntoIterator<Item = u64>) -> SeqCheck {
    let mut check = SeqCheck::default();
    let mut prev: Option<u64> = None;
    for seq in seqs {
        match prev {
            Some(p) if seq <= p => {
                check.repeated += 1;
                continue;
            }
            Some(p) => check.missing += seq - p - 1,
            None => {}
        }
        prev = Some(seq);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(ensure_loopback("ws://127.0.0.1:8080/api/v1/ws").is_ok());
        assert!(ensure_loopback("http://localhost/metrics").is_ok());
        assert!(ensure_loopback("http://[::1]:9/x").is_ok());
        assert!(ensure_loopback("http://10.0.0.1:8080/").is_err());
        assert!(ensure_loopback("http://127.0.0.1.evil.com/").is_err());
    }

    #[test]
    fn seq_checks() {
        assert_eq!(check_seqs([3, 4, 5]), SeqCheck::default());
        assert_eq!(check_seqs([3, 5, 6, 9]), SeqCheck { missing: 3, repeated: 0 });
        assert_eq!(check_seqs([3, 3, 4]), SeqCheck { missing: 0, repeated: 1 });
    }

    #[test]
    fn frames() {
        assert_eq!(snapshot_seq(r#"{"topic":"snapshots","seq":7,"data":{"a":[1,2]}}"#), Some(7));
        assert_eq!(snapshot_seq(r#"{"topic":"subscribed","seq":0,"data":{}}"#), None);
        assert_eq!(snapshot_seq("nope"), None);
    }

    #[test]
    fn meters_this_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_ok());
        assert!(reaped_children_ticks(me).is_ok());
        assert!(pids_named("").contains(&me));
        let mem = mem_kib(me).unwrap();
        assert!(mem.rss > 0 && mem.hwm >= mem.rss);
        assert!(process_tree(me).unwrap().contains(&me));
        let mut meter = Meter::start(me, true).unwrap();
        meter.sample().unwrap();
        let report = meter.finish().unwrap();
        assert!(report.rss_max_mib > 0.0 && report.samples == 2);
    }
}
