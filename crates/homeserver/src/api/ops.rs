//! Health, version and Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Scope, public, scoped};
use crate::state::{AppState, Shared};

pub(crate) fn routes(metrics_public: bool) -> OpenApiRouter<Shared> {
    let metrics = if metrics_public {
        public(routes!(prometheus_metrics))
    } else {
        scoped(Scope::Read, routes!(prometheus_metrics))
    };
    OpenApiRouter::new()
        .routes(public(routes!(live)))
        .routes(public(routes!(ready)))
        .routes(public(routes!(version)))
        .routes(metrics)
}

/// Liveness.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LiveDto {
    /// Always `ok`.
    pub status: String,
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "operations", operation_id = "health_live",
    responses((status = 200, description = "Alive", body = LiveDto)))]
async fn live() -> Json<LiveDto> {
    Json(LiveDto { status: "ok".to_owned() })
}

/// One dependency's health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckDto {
    /// `ok`, `degraded`, `unavailable` or `disabled`.
    pub status: String,
    /// What is wrong, when something is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// For a runtime whose event stream keeps homeserver current (Docker):
    /// `connected`, or `disconnected` while homeserver reconnects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
}

/// Readiness and the checks behind it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadyDto {
    /// `ready`, `degraded` (an optional dependency is down) or `unavailable`.
    pub status: String,
    /// `database`, `sampler`, `docker`, `lxc`.
    pub checks: BTreeMap<String, CheckDto>,
}

fn check(ok: bool, detail: Option<String>) -> CheckDto {
    CheckDto { status: if ok { "ok" } else { "unavailable" }.to_owned(), detail, events: None }
}

/// The service can serve: the database answers and the sampler is sampling.
///
/// Container runtimes are optional: when one is missing the status is
/// `degraded` and the answer still 200.
#[utoipa::path(get, path = "/health/ready", tag = "operations", operation_id = "health_ready",
    responses(
        (status = 200, description = "Ready or degraded", body = ReadyDto),
        (status = 503, description = "A required dependency is down", body = ReadyDto),
    ))]
async fn ready(State(state): State<Shared>) -> Response {
    let mut checks = BTreeMap::new();
    let db = state.database.check().await;
    let db_ok = db.is_ok();
    checks.insert("database".to_owned(), check(db_ok, db.err()));

    let interval = state.settings.sampling.interval_ms as i64;
    let now = state.clock.now();
    let sampler_ok = match state.sampler.last_success() {
        // Three missed intervals (plus a second of slack for the first one) is a stall.
        Some(t) => now.as_millis() - t.as_millis() <= 3 * interval + 1_000,
        None => state.hub.latest().is_none() && state.sampler.failures() == 0,
    };
    let sampler_detail = (!sampler_ok)
        .then(|| format!("no good sample recently ({} consecutive failures)", state.sampler.consecutive_failures()));
    checks.insert("sampler".to_owned(), check(sampler_ok, sampler_detail));
    for kind in homeserver_domain::RuntimeKind::ALL {
        let check = match state.containers.as_ref().filter(|c| c.runtime(kind).is_ok()) {
            None => CheckDto { status: "disabled".to_owned(), detail: None, events: None },
            Some(service) => {
                let (status, detail) =
                    match tokio::time::timeout(std::time::Duration::from_secs(2), service.ping(kind)).await {
                        Ok(Ok(())) => ("ok", None),
                        Ok(Err(e)) => ("unavailable", Some(e.to_string())),
                        Err(_) => {
                            // As a failed ping does (the ping was cut short).
                            service.invalidate(kind);
                            ("unavailable", Some("no answer within 2 s".to_owned()))
                        }
                    };
                let events = service.watched(kind).map(|c| if c { "connected" } else { "disconnected" }.to_owned());
                CheckDto { status: status.to_owned(), detail, events }
            }
        };
        checks.insert(kind.as_str().to_owned(), check);
    }
    // A missing container runtime degrades the service; it does not stop it.
    let degraded = checks.values().any(|c| c.status == "unavailable");
    let (code, status) = match (db_ok && sampler_ok, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    (code, Json(ReadyDto { status: status.to_owned(), checks })).into_response()
}

/// Build facts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionDto {
    /// `homeserver`.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// Commit built from (`unknown` outside a git checkout).
    pub git_sha: String,
    /// When the binary was built (RFC 3339).
    pub build_time: String,
    /// `v1`.
    pub api_version: String,
}

/// Which build this is.
#[utoipa::path(get, path = "/version", tag = "operations", operation_id = "version",
    responses((status = 200, description = "Build facts", body = VersionDto)))]
async fn version() -> Json<VersionDto> {
    Json(crate::build_info())
}

/// Prometheus text exposition of host, container and service metrics.
///
/// Needs a `read` token unless `metrics.public = true`.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4")))]
async fn prometheus_metrics(State(state): State<Shared>) -> Response {
    let mut out = String::with_capacity(8 * 1024);
    render_host(&state, &mut out);
    render_service(&state, &mut out);
    crate::telemetry::render_http(&mut out);
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A metric family: name, help and how to read the value from an item.
type Family<T, V> = (&'static str, &'static str, fn(&T) -> V);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_host(state: &AppState, out: &mut String) {
    let Some(p) = state.hub.latest() else { return };
    let s = &p.snapshot;
    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        family(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    };
    gauge(out, "homeserver_cpu_usage_percent", "Busy share of all cores (0-100).", s.cpu.usage_percent);
    family(out, "homeserver_cpu_core_usage_percent", "gauge", "Busy share per logical core (0-100).");
    for (i, v) in s.cpu.per_core_percent.iter().enumerate() {
        let _ = writeln!(out, "homeserver_cpu_core_usage_percent{{core=\"{i}\"}} {v}");
    }
    gauge(out, "homeserver_load1", "One-minute load average.", s.cpu.load_average.one);
    gauge(out, "homeserver_load5", "Five-minute load average.", s.cpu.load_average.five);
    gauge(out, "homeserver_load15", "Fifteen-minute load average.", s.cpu.load_average.fifteen);
    gauge(out, "homeserver_memory_total_bytes", "MemTotal.", s.memory.total_bytes as f64);
    gauge(out, "homeserver_memory_used_bytes", "MemTotal - MemAvailable.", s.memory.used_bytes as f64);
    gauge(out, "homeserver_memory_available_bytes", "MemAvailable.", s.memory.available_bytes as f64);
    gauge(out, "homeserver_swap_total_bytes", "SwapTotal.", s.memory.swap_total_bytes as f64);
    gauge(out, "homeserver_swap_used_bytes", "SwapTotal - SwapFree.", s.memory.swap_used_bytes as f64);
    gauge(out, "homeserver_uptime_seconds", "Seconds since boot.", s.system.uptime_secs as f64);
    gauge(out, "homeserver_processes", "Processes alive.", s.system.process_count as f64);
    let disk_gauges: [Family<homeserver_domain::DiskStats, f64>; 5] = [
        ("homeserver_filesystem_size_bytes", "File system size.", |d| d.total_bytes as f64),
        ("homeserver_filesystem_used_bytes", "File system space used.", |d| d.used_bytes as f64),
        ("homeserver_filesystem_available_bytes", "File system space available.", |d| d.available_bytes as f64),
        ("homeserver_filesystem_read_bytes_per_second", "Read rate of the backing device.", |d| d.read_bytes_per_sec),
        ("homeserver_filesystem_write_bytes_per_second", "Write rate of the backing device.", |d| {
            d.write_bytes_per_sec
        }),
    ];
    for (name, help, f) in disk_gauges {
        family(out, name, "gauge", help);
        for d in &s.disks {
            let _ = writeln!(
                out,
                "{name}{{device=\"{}\",mountpoint=\"{}\"}} {}",
                label(&d.name),
                label(&d.mount_point),
                f(d)
            );
        }
    }
    let net_counters: [Family<homeserver_domain::NetworkStats, u64>; 6] = [
        ("homeserver_network_receive_bytes_total", "Bytes received.", |n| n.rx_bytes_total),
        ("homeserver_network_transmit_bytes_total", "Bytes sent.", |n| n.tx_bytes_total),
        ("homeserver_network_receive_packets_total", "Packets received.", |n| n.rx_packets_total),
        ("homeserver_network_transmit_packets_total", "Packets sent.", |n| n.tx_packets_total),
        ("homeserver_network_receive_errors_total", "Receive errors.", |n| n.rx_errors_total),
        ("homeserver_network_transmit_errors_total", "Send errors.", |n| n.tx_errors_total),
    ];
    for (name, help, f) in net_counters {
        family(out, name, "counter", help);
        for n in &s.networks {
            let _ = writeln!(out, "{name}{{interface=\"{}\"}} {}", label(&n.interface), f(n));
        }
    }
    let container_gauges: [Family<homeserver_domain::ContainerStats, f64>; 4] = [
        ("homeserver_container_cpu_percent", "Container CPU use; 100 is one core.", |c| c.cpu_percent),
        ("homeserver_container_memory_bytes", "Container memory in use.", |c| c.memory_bytes as f64),
        ("homeserver_container_network_receive_bytes", "Container bytes received.", |c| c.network_rx_bytes as f64),
        ("homeserver_container_pids", "Container processes and threads.", |c| c.pids as f64),
    ];
    for (name, help, f) in container_gauges {
        family(out, name, "gauge", help);
        for c in &s.containers {
            let _ = writeln!(
                out,
                "{name}{{id=\"{}\",name=\"{}\",runtime=\"{}\"}} {}",
                label(&c.id),
                label(&c.name),
                label(&c.runtime),
                f(c)
            );
        }
    }
}

fn render_service(state: &AppState, out: &mut String) {
    family(out, "homeserver_websocket_clients", "gauge", "Connected WebSocket clients.");
    let _ = writeln!(out, "homeserver_websocket_clients {}", state.hub.clients());
    family(out, "homeserver_samples_total", "counter", "Host samples taken.");
    let _ = writeln!(out, "homeserver_samples_total {}", state.sampler.samples());
    family(out, "homeserver_sample_failures_total", "counter", "Host samples that failed.");
    let _ = writeln!(out, "homeserver_sample_failures_total {}", state.sampler.failures());
    family(out, "homeserver_sampler_skipped_ticks_total", "counter", "Ticks skipped because a sample overran.");
    let _ = writeln!(out, "homeserver_sampler_skipped_ticks_total {}", state.sampler.skipped_ticks());
    if let Some(w) = &state.writer {
        family(out, "homeserver_snapshots_saved_total", "counter", "Samples written to history.");
        let _ = writeln!(out, "homeserver_snapshots_saved_total {}", w.saved());
        family(out, "homeserver_snapshots_pruned_total", "counter", "History rows pruned, all tiers.");
        let _ = writeln!(out, "homeserver_snapshots_pruned_total {}", w.pruned());
        family(
            out,
            "homeserver_history_flush_failures_total",
            "counter",
            "History flushes that failed and were retried.",
        );
        let _ = writeln!(out, "homeserver_history_flush_failures_total {}", w.flush_failures());
    }
}
