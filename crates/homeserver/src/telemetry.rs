//! Logs (tracing) and service metrics (the `metrics` facade rendered by the
//! Prometheus exporter).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use axum::http::Method;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global log subscriber (stderr). `RUST_LOG` wins over the
/// configured level. Safe to call twice: the second call does nothing.
pub fn init_tracing(settings: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // An already installed subscriber (tests, embedding) is fine.
    drop(result);
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
///
/// The `metrics` facade has one global recorder per process; several
/// applications in one process (tests) share it.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".to_owned()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
            );
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "could not install the metrics recorder; service metrics are off");
                    None
                }
            }
        })
        .as_ref()
}

/// Per-route request counters and latency histograms, with their handles
/// cached so a request costs two atomic updates, not a registry lookup.
#[derive(Default)]
pub struct HttpMetrics {
    handles: Mutex<HashMap<(usize, Method, u16), Handles>>,
}

struct Handles {
    route: Box<str>,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpMetrics {
    /// Counts one answered request.
    pub fn record(&self, route: Option<&str>, method: &Method, status: u16, elapsed: std::time::Duration) {
        let route = route.unwrap_or("unmatched");
        // Route templates live in the router for its whole life: their
        // address is a cheap key; the stored text guards against reuse.
        let key = (route.as_ptr() as usize, method.clone(), status);
        let mut handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = match handles.get(&key) {
            Some(h) if *h.route == *route => h,
            _ => {
                let labels = [
                    ("method", method.as_str().to_owned()),
                    ("route", route.to_owned()),
                    ("status", status.to_string()),
                ];
                let fresh = Handles {
                    route: route.into(),
                    requests: metrics::counter!("http_requests_total", &labels),
                    duration: metrics::histogram!("http_request_duration_seconds", &labels[..2]),
                };
                handles.insert(key.clone(), fresh);
                match handles.get(&key) {
                    Some(h) => h,
                    None => return,
                }
            }
        };
        entry.requests.increment(1);
        entry.duration.record(elapsed.as_secs_f64());
    }
}
