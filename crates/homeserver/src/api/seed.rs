//! Routes compatible with clients of the original homeserver: camelCase
//! field names exactly as that service sent them.
//!
//! - `/ws/cpu` and `/ws/ram` push one object every
//!   `publishing.cpu_stats_frequency_ms` / `ram_stats_frequency_ms`.
//! - `/ws/system` sends `{"type":"info","systemInfo":{…}}` first, then each
//!   snapshot.
//! - `GET /api/info` and `GET /api/history` answer over plain HTTP.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, Stream, StreamExt};
use homeserver_domain::{ContainerStats, HistoryQuery, HostInfo, Metric, Snapshot, UnixMillis};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorCode, Problem};
use super::extract::ApiQuery;
use super::system::{history_error, parse_range};
use super::ws::{SessionLimits, configure, send};
use crate::auth::{Scope, WsSlot, scoped};
use crate::live::Published;
use crate::state::Shared;

/// Most snapshots one `/api/history` call returns.
pub const MAX_SEED_POINTS: u32 = 10_000;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Read, routes!(ws_cpu)))
        .routes(scoped(Scope::Read, routes!(ws_ram)))
        .routes(scoped(Scope::Read, routes!(ws_system)))
        .routes(scoped(Scope::Read, routes!(api_info)))
        .routes(scoped(Scope::Read, routes!(api_history)))
}

/// `/ws/cpu` object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedCpu {
    /// Processor model.
    pub model: String,
    /// Physical cores (0 when unknown).
    pub physical_cores: u32,
    /// Logical cores.
    pub logical_cores: u32,
    /// Busy share of all cores, 0..100.
    pub usage_percent: f64,
    /// Hottest CPU sensor in °C, null without sensors.
    pub temperature: Option<f64>,
    /// Busy share per logical core.
    pub core_usages: Vec<f64>,
}

impl From<&Snapshot> for SeedCpu {
    fn from(s: &Snapshot) -> Self {
        Self {
            model: s.cpu.model.clone(),
            physical_cores: s.cpu.physical_cores.unwrap_or(0),
            logical_cores: s.cpu.logical_cores,
            usage_percent: s.cpu.usage_percent,
            temperature: s.cpu.temperature_celsius,
            core_usages: s.cpu.per_core_percent.clone(),
        }
    }
}

/// `/ws/ram` object (bytes).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedRam {
    /// `MemTotal`.
    pub total: u64,
    /// `MemTotal - MemAvailable`.
    pub used: u64,
    /// `MemAvailable`.
    pub available: u64,
    /// `used / total * 100`.
    pub usage_percent: f64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// Swap in use.
    pub swap_used: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

impl From<&Snapshot> for SeedRam {
    fn from(s: &Snapshot) -> Self {
        let m = &s.memory;
        Self {
            total: m.total_bytes,
            used: m.used_bytes,
            available: m.available_bytes,
            usage_percent: m.usage_percent,
            swap_total: m.swap_total_bytes,
            swap_used: m.swap_used_bytes,
            swap_free: m.swap_total_bytes.saturating_sub(m.swap_used_bytes),
        }
    }
}

/// A mounted file system.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedPartition {
    /// Mount point.
    pub mount: String,
    /// Device.
    pub name: String,
    /// File system type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub total_space: u64,
    /// Used bytes.
    pub used_space: u64,
    /// Available bytes.
    pub available_space: u64,
    /// Used share, 0..100.
    pub usage_percent: f64,
}

/// A whole disk.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedDisk {
    /// Kernel name.
    pub name: String,
    /// Model, empty when unknown.
    pub model: String,
    /// Capacity in bytes.
    pub size: u64,
    /// Bytes read since boot.
    pub read_bytes: u64,
    /// Bytes written since boot.
    pub write_bytes: u64,
}

/// Storage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeedStorage {
    /// File systems.
    pub partitions: Vec<SeedPartition>,
    /// Disks.
    pub disks: Vec<SeedDisk>,
}

/// A network interface.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedInterface {
    /// Interface name.
    pub name: String,
    /// Display name (the interface name on Linux).
    pub display_name: String,
    /// MAC address, empty when none.
    pub mac_address: String,
    /// IPv4 addresses.
    pub ipv4: Vec<String>,
    /// IPv6 addresses.
    pub ipv6: Vec<String>,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_recv: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received.
    pub packets_recv: u64,
    /// Link speed in bits per second (0 when unknown).
    pub speed: u64,
    /// Receive rate.
    pub received_bytes_per_sec: f64,
    /// Send rate.
    pub transmitted_bytes_per_sec: f64,
    /// Link is up.
    pub is_up: bool,
}

/// Network.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeedNetwork {
    /// Interfaces.
    pub interfaces: Vec<SeedInterface>,
}

/// Host-wide figures.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSystem {
    /// Seconds since boot.
    pub uptime_secs: u64,
    /// Processes.
    pub process_count: u64,
    /// Threads.
    pub thread_count: u64,
    /// One-minute load.
    pub load_avg1: f64,
    /// Five-minute load.
    pub load_avg5: f64,
    /// Fifteen-minute load.
    pub load_avg15: f64,
}

/// A container.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedContainer {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// CPU use; 100 is one core.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_usage_bytes: u64,
    /// Memory limit (0 when none).
    pub memory_limit_bytes: u64,
    /// State.
    pub state: String,
    /// Bytes received.
    pub network_rx_bytes: u64,
    /// Bytes sent.
    pub network_tx_bytes: u64,
    /// Bytes read.
    pub block_read_bytes: u64,
    /// Bytes written.
    pub block_write_bytes: u64,
    /// Processes.
    pub pids: u64,
}

impl From<&ContainerStats> for SeedContainer {
    fn from(c: &ContainerStats) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            cpu_percent: c.cpu_percent,
            memory_usage_bytes: c.memory_bytes,
            memory_limit_bytes: c.memory_limit_bytes.unwrap_or(0),
            state: c.state.clone(),
            network_rx_bytes: c.network_rx_bytes,
            network_tx_bytes: c.network_tx_bytes,
            block_read_bytes: c.block_read_bytes,
            block_write_bytes: c.block_write_bytes,
            pids: c.pids,
        }
    }
}

/// One snapshot as `/ws/system` and `/api/history` send it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeedSnapshot {
    /// Unix milliseconds.
    pub timestamp: i64,
    /// Processor.
    pub cpu: SeedCpu,
    /// Memory.
    pub ram: SeedRam,
    /// Containers.
    pub containers: Vec<SeedContainer>,
    /// Storage.
    pub storage: SeedStorage,
    /// Network.
    pub network: SeedNetwork,
    /// Host-wide figures.
    pub system: SeedSystem,
}

impl From<&Snapshot> for SeedSnapshot {
    fn from(s: &Snapshot) -> Self {
        Self {
            timestamp: s.timestamp.as_millis(),
            cpu: s.into(),
            ram: s.into(),
            containers: s.containers.iter().map(Into::into).collect(),
            storage: SeedStorage {
                partitions: s
                    .disks
                    .iter()
                    .map(|d| SeedPartition {
                        mount: d.mount_point.clone(),
                        name: d.name.clone(),
                        kind: d.file_system.clone(),
                        total_space: d.total_bytes,
                        used_space: d.used_bytes,
                        available_space: d.available_bytes,
                        usage_percent: d.usage_percent,
                    })
                    .collect(),
                disks: s
                    .block_devices
                    .iter()
                    .map(|b| SeedDisk {
                        name: b.name.clone(),
                        model: b.model.clone().unwrap_or_default(),
                        size: b.size_bytes,
                        read_bytes: b.read_bytes_total,
                        write_bytes: b.write_bytes_total,
                    })
                    .collect(),
            },
            network: SeedNetwork {
                interfaces: s
                    .networks
                    .iter()
                    .map(|n| SeedInterface {
                        name: n.interface.clone(),
                        display_name: n.interface.clone(),
                        mac_address: n.mac_address.clone().unwrap_or_default(),
                        ipv4: n.ipv4.clone(),
                        ipv6: n.ipv6.clone(),
                        bytes_sent: n.tx_bytes_total,
                        bytes_recv: n.rx_bytes_total,
                        packets_sent: n.tx_packets_total,
                        packets_recv: n.rx_packets_total,
                        speed: n.speed_mbps.unwrap_or(0).saturating_mul(1_000_000),
                        received_bytes_per_sec: n.rx_bytes_per_sec,
                        transmitted_bytes_per_sec: n.tx_bytes_per_sec,
                        is_up: n.is_up,
                    })
                    .collect(),
            },
            system: SeedSystem {
                uptime_secs: s.system.uptime_secs,
                process_count: s.system.process_count,
                thread_count: s.system.thread_count,
                load_avg1: s.cpu.load_average.one,
                load_avg5: s.cpu.load_average.five,
                load_avg15: s.cpu.load_average.fifteen,
            },
        }
    }
}

/// The `systemInfo` object.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSystemInfo {
    /// Kernel family (`Linux`).
    pub os_family: String,
    /// Distribution name.
    pub os_manufacturer: String,
    /// Distribution version and kernel release.
    pub os_version: String,
    /// System vendor from DMI, empty when unknown.
    pub system_manufacturer: String,
    /// System model from DMI, empty when unknown.
    pub system_model: String,
    /// Processor model.
    pub processor_name: String,
}

impl From<&HostInfo> for SeedSystemInfo {
    fn from(h: &HostInfo) -> Self {
        Self {
            os_family: h.os_family.clone(),
            os_manufacturer: h.os_name.clone(),
            os_version: format!("{} (kernel {})", h.os_version, h.kernel_version),
            system_manufacturer: h.system_manufacturer.clone().unwrap_or_default(),
            system_model: h.system_model.clone().unwrap_or_default(),
            processor_name: h.cpu_model.clone(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InfoFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    system_info: &'a SeedSystemInfo,
}

/// CPU figures every `publishing.cpu_stats_frequency_ms` (WebSocket).
///
/// Each message is a `SeedCpu` object.
#[utoipa::path(get, path = "/ws/cpu", tag = "seed", operation_id = "seed_ws_cpu",
    responses((status = 101, description = "Switching to the WebSocket protocol; messages are `SeedCpu`")))]
async fn ws_cpu(State(state): State<Shared>, slot: WsSlot, ws: WebSocketUpgrade) -> Response {
    watch_feed(state.clone(), slot, ws, state.hub.subscribe_cpu())
}

/// Memory figures every `publishing.ram_stats_frequency_ms` (WebSocket).
///
/// Each message is a `SeedRam` object.
#[utoipa::path(get, path = "/ws/ram", tag = "seed", operation_id = "seed_ws_ram",
    responses((status = 101, description = "Switching to the WebSocket protocol; messages are `SeedRam`")))]
async fn ws_ram(State(state): State<Shared>, slot: WsSlot, ws: WebSocketUpgrade) -> Response {
    watch_feed(state.clone(), slot, ws, state.hub.subscribe_ram())
}

fn watch_feed(
    state: Shared,
    slot: WsSlot,
    ws: WebSocketUpgrade,
    mut feed: watch::Receiver<Option<Utf8Bytes>>,
) -> Response {
    let limits = SessionLimits::from_state(&state);
    configure(ws).on_upgrade(move |socket: WebSocket| async move {
        let _slot = slot;
        let _guard = state.hub.client_guard();
        let (sink, stream) = socket.split();
        feed.mark_unchanged();
        let next = move || {
            let mut feed = feed.clone();
            async move {
                feed.changed().await.ok()?;
                let frame = feed.borrow_and_update().clone();
                Some(frame)
            }
        };
        run_feed(sink, stream, None, next, limits, state.shutdown.clone()).await;
    })
}

/// Host facts, then every snapshot (WebSocket).
///
/// The first message is `{"type":"info","systemInfo":SeedSystemInfo}`; each
/// following message is a `SeedSnapshot`.
#[utoipa::path(get, path = "/ws/system", tag = "seed", operation_id = "seed_ws_system",
    responses((status = 101, description = "Switching to the WebSocket protocol; messages as described")))]
async fn ws_system(State(state): State<Shared>, slot: WsSlot, ws: WebSocketUpgrade) -> Response {
    let limits = SessionLimits::from_state(&state);
    let info = SeedSystemInfo::from(state.host_info.as_ref());
    let first = serde_json::to_string(&InfoFrame { kind: "info", system_info: &info }).unwrap_or_default();
    let rx = state.hub.subscribe();
    configure(ws).on_upgrade(move |socket: WebSocket| async move {
        let _slot = slot;
        let _guard = state.hub.client_guard();
        let (sink, stream) = socket.split();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let next = move || {
            let rx = Arc::clone(&rx);
            async move { next_published(&mut *rx.lock().await).await.map(|p| Some(p.seed_system_frame())) }
        };
        run_feed(sink, stream, Some(Utf8Bytes::from(first)), next, limits, state.shutdown.clone()).await;
    })
}

async fn next_published(rx: &mut broadcast::Receiver<Arc<Published>>) -> Option<Arc<Published>> {
    loop {
        match rx.recv().await {
            Ok(p) => return Some(p),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Pushes frames from `next` until it ends, the client leaves or the server
/// stops; `Some(None)` from `next` means "nothing to send this time".
async fn run_feed<S, R, E, F, Fut>(
    mut sink: S,
    mut stream: R,
    first: Option<Utf8Bytes>,
    mut next: F,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Option<Utf8Bytes>>>,
{
    if let Some(first) = first
        && !send(&mut sink, Message::Text(first), &limits).await
    {
        return;
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + limits.ping_every, limits.ping_every);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        let message = tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let _ = send(&mut sink, Message::Close(None), &limits).await;
                return;
            }
            incoming = stream.next() => {
                last_heard = tokio::time::Instant::now();
                match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => continue,
                }
            }
            frame = next() => match frame {
                None => return,
                Some(None) => continue,
                Some(Some(f)) => Message::Text(f),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.ping_every * 3 {
                    return;
                }
                Message::Ping(bytes::Bytes::new())
            }
        };
        if !send(&mut sink, message, &limits).await {
            return;
        }
    }
}

/// Host facts in the seed format.
#[utoipa::path(get, path = "/api/info", tag = "seed", operation_id = "seed_info",
    responses((status = 200, description = "The `systemInfo` object", body = SeedSystemInfo)))]
async fn api_info(State(state): State<Shared>) -> Json<SeedSystemInfo> {
    Json(SeedSystemInfo::from(state.host_info.as_ref()))
}

/// Query of `GET /api/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeedHistoryParams {
    /// Start, Unix milliseconds (RFC 3339 also accepted; default one hour before `to`).
    from: Option<String>,
    /// End, Unix milliseconds (default now).
    to: Option<String>,
    /// `1s`, `30s`, `1m`, `5m`, or a number of seconds up to 3600 (default `1m`).
    resolution: Option<String>,
}

fn parse_resolution(r: &str) -> Result<i64, ApiError> {
    let secs = match r {
        "1s" => 1,
        "30s" => 30,
        "1m" => 60,
        "5m" => 300,
        other => other
            .parse::<i64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .ok_or_else(|| ApiError::bad_request("resolution", "expected 1s, 30s, 1m, 5m or 1..=3600 seconds"))?,
    };
    Ok(secs * 1000)
}

/// History as an array of seed snapshots, one per `resolution` bucket.
///
/// Rebuilt from the stored history metrics: CPU usage, memory, swap in use,
/// load averages, process count, and the total network rate (as one
/// interface named `all`). Per-core figures, partitions, disks and
/// containers are not kept in history and come back empty.
#[utoipa::path(get, path = "/api/history", tag = "seed", operation_id = "seed_history",
    params(SeedHistoryParams),
    responses(
        (status = 200, description = "Snapshots, oldest first", body = Vec<SeedSnapshot>),
        (status = 400, description = "Malformed `from`, `to` or `resolution`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty range or too many points", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History is disabled or unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn api_history(
    State(state): State<Shared>,
    ApiQuery(params): ApiQuery<SeedHistoryParams>,
) -> Result<Json<Vec<SeedSnapshot>>, ApiError> {
    let history = state.history.as_ref().ok_or_else(|| {
        ApiError::new(ErrorCode::ServiceUnavailable, "history is disabled (`history.enabled = false`)")
    })?;
    let (from, to) = parse_range(params.from.as_deref(), params.to.as_deref(), state.clock.now())?;
    let step = parse_resolution(params.resolution.as_deref().unwrap_or("1m"))?;
    let query =
        HistoryQuery::with_step(Metric::ALL.to_vec(), from, to, step, MAX_SEED_POINTS).map_err(ApiError::validation)?;
    let result = history.query(&query).await.map_err(history_error)?;
    Ok(Json(rebuild(&result, &state.host_info)))
}

/// Seed snapshots from history series (every series has the same buckets).
fn rebuild(result: &homeserver_domain::HistoryResult, host: &HostInfo) -> Vec<SeedSnapshot> {
    use std::collections::BTreeMap;
    let mut by_time: BTreeMap<i64, [f64; homeserver_domain::METRIC_COUNT]> = BTreeMap::new();
    for series in &result.series {
        for p in &series.points {
            by_time.entry(p.t.as_millis()).or_insert([0.0; homeserver_domain::METRIC_COUNT])[series.metric.index()] =
                p.avg;
        }
    }
    by_time
        .into_iter()
        .map(|(t, v)| {
            let get = |m: Metric| v[m.index()];
            let used = get(Metric::MemoryUsedBytes).round() as u64;
            let available = get(Metric::MemoryAvailableBytes).round() as u64;
            let mut s = Snapshot { timestamp: UnixMillis(t), ..Default::default() };
            s.cpu.model = host.cpu_model.clone();
            s.cpu.logical_cores = host.logical_cores;
            s.cpu.physical_cores = host.physical_cores;
            s.cpu.usage_percent = get(Metric::CpuUsagePercent);
            s.cpu.load_average.one = get(Metric::CpuLoad1);
            s.cpu.load_average.five = get(Metric::CpuLoad5);
            s.cpu.load_average.fifteen = get(Metric::CpuLoad15);
            s.memory.used_bytes = used;
            s.memory.available_bytes = available;
            s.memory.total_bytes = used + available;
            s.memory.usage_percent = get(Metric::MemoryUsagePercent);
            s.memory.swap_used_bytes = get(Metric::SwapUsedBytes).round() as u64;
            s.system.process_count = get(Metric::ProcessCount).round() as u64;
            s.networks.push(homeserver_domain::NetworkStats {
                interface: "all".to_owned(),
                rx_bytes_per_sec: get(Metric::NetworkRxBytesPerSec),
                tx_bytes_per_sec: get(Metric::NetworkTxBytesPerSec),
                is_up: true,
                ..Default::default()
            });
            SeedSnapshot::from(&s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_parse_and_refuse_out_of_range() {
        assert_eq!(parse_resolution("1s").unwrap(), 1_000);
        assert_eq!(parse_resolution("5m").unwrap(), 300_000);
        assert_eq!(parse_resolution("3600").unwrap(), 3_600_000);
        assert_eq!(parse_resolution("3601").unwrap_err().code(), ErrorCode::BadRequest);
        assert_eq!(parse_resolution("0").unwrap_err().code(), ErrorCode::BadRequest);
        assert!(parse_resolution("1h").is_err());
    }

    #[test]
    fn seed_names_are_camel_case_exactly() {
        let mut s = Snapshot::default();
        s.memory.swap_total_bytes = 10;
        s.memory.swap_used_bytes = 4;
        let v = serde_json::to_value(SeedSnapshot::from(&s)).unwrap();
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&v), ["containers", "cpu", "network", "ram", "storage", "system", "timestamp"]);
        assert_eq!(
            keys(&v["cpu"]),
            ["coreUsages", "logicalCores", "model", "physicalCores", "temperature", "usagePercent"]
        );
        assert_eq!(
            keys(&v["ram"]),
            ["available", "swapFree", "swapTotal", "swapUsed", "total", "usagePercent", "used"]
        );
        assert_eq!(v["ram"]["swapFree"], 6);
        assert_eq!(
            keys(&v["system"]),
            ["loadAvg1", "loadAvg15", "loadAvg5", "processCount", "threadCount", "uptimeSecs"]
        );
    }
}
