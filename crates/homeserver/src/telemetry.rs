//! Logs (tracing) and the HTTP service metrics (`http_requests_total`,
//! `http_request_duration_seconds`), counted on plain atomics and rendered
//! in the Prometheus text format by `GET /metrics`.
//!
//! Why not the `metrics` facade: a request took a mutex and a hashed lookup
//! for its handles, and its histograms need periodic upkeep. Here every
//! documented route owns its counters, found once when the router is built,
//! and every worker thread counts in its own copy (summed when rendered):
//! a request costs three uncontended relaxed stores.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingSettings};

/// Installs the global log subscriber (stderr). `RUST_LOG` wins over the
/// configured level. Safe to call twice: the second call does nothing.
/// Every line logged while a request is handled carries its request id
/// ([`RequestIdFormat`]).
pub fn init_tracing(settings: &LoggingSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match settings.format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(RequestIdFormat::json())
            .try_init(),
        LogFormat::Text => builder.event_format(RequestIdFormat::text()).try_init(),
    };
    // An already installed subscriber (tests, embedding) is fine.
    drop(result);
}

/// The id of the request a thread works on, copied inline (homeserver's own
/// ids are 36 bytes), so entering a scope allocates nothing and the
/// thread-local holds no value with a destructor (cloning a `HeaderValue`
/// would allocate the first time; a destructor would make every access
/// check its registration). `len` 0: no request; [`LONG`]: the id is longer
/// than [`INLINE_ID`] and sits in `LONG_ID`.
#[derive(Clone, Copy)]
struct ScopeId {
    bytes: [u8; INLINE_ID],
    len: u8,
}

/// Longest request id kept inline.
const INLINE_ID: usize = 40;

/// `ScopeId::len` of an id kept in `LONG_ID`.
const LONG: u8 = u8::MAX;

impl ScopeId {
    const NONE: Self = Self { bytes: [0; INLINE_ID], len: 0 };
}

thread_local! {
    /// The id of the request this thread is working on, if any.
    static REQUEST_ID: std::cell::Cell<ScopeId> = const { std::cell::Cell::new(ScopeId::NONE) };
    /// A request id too long to keep inline (clients may send any).
    static LONG_ID: std::cell::RefCell<Option<HeaderValue>> = const { std::cell::RefCell::new(None) };
}

/// Makes `id` the current request's id on this thread until the guard is
/// dropped (which restores the one before). The edge holds one around
/// every poll of a request's future: a few nanoseconds, where a tracing
/// span per request cost about a microsecond with the fmt subscriber.
pub(crate) fn request_scope(id: &HeaderValue) -> RequestScope {
    let bytes = id.as_bytes();
    let mut scoped = ScopeId::NONE;
    let long = if let Some(inline) = scoped.bytes.get_mut(..bytes.len()) {
        inline.copy_from_slice(bytes);
        // `bytes.len() <= INLINE_ID < LONG`.
        scoped.len = u8::try_from(bytes.len()).unwrap_or(LONG);
        None
    } else {
        scoped.len = LONG;
        Some(LONG_ID.replace(Some(id.clone())))
    };
    RequestScope { before: REQUEST_ID.replace(scoped), long }
}

/// See [`request_scope`].
pub(crate) struct RequestScope {
    before: ScopeId,
    /// `LONG_ID` before this scope, when this scope replaced it.
    long: Option<Option<HeaderValue>>,
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        REQUEST_ID.set(self.before);
        if let Some(long) = self.long.take() {
            LONG_ID.set(long);
        }
    }
}

/// The current request's id as text (`-` for one that is not UTF-8).
fn current_request_id() -> Option<String> {
    let id = REQUEST_ID.get();
    let text = |bytes: &[u8]| std::str::from_utf8(bytes).unwrap_or("-").to_owned();
    match id.len {
        0 => None,
        LONG => LONG_ID.with_borrow(|long| long.as_ref().map(|v| text(v.as_bytes()))),
        len => Some(text(&id.bytes[..usize::from(len)])),
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside [`request_scope`]: what a request's boxed
    /// futures (those writing an audit record) run in, since a guard held
    /// across an `.await` would stay on the thread it was made on.
    pub(crate) struct InRequest<F> {
        id: HeaderValue,
        #[pin]
        inner: F,
    }
}

impl<F> InRequest<F> {
    pub(crate) fn new(id: HeaderValue, inner: F) -> Self {
        Self { id, inner }
    }
}

impl<F: std::future::Future> std::future::Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _scope = request_scope(this.id);
        this.inner.poll(cx)
    }
}

/// A log line format (the fmt crate's text or JSON one) that adds the
/// current request's id to every line logged while a request is handled:
/// ` request_id=…` at the end of a text line, a `"request_id"` key in a
/// JSON one. Lines outside requests are the inner format's, unchanged;
/// lines inside are formatted into a buffer first, so they come without
/// ANSI colours (the fmt crate offers no public way to make a colouring
/// writer over a buffer).
pub struct RequestIdFormat<F> {
    inner: F,
    json: bool,
}

impl RequestIdFormat<tracing_subscriber::fmt::format::Format> {
    /// Around the default text format.
    pub fn text() -> Self {
        Self { inner: tracing_subscriber::fmt::format(), json: false }
    }
}

impl RequestIdFormat<tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>> {
    /// Around the JSON format (with the current span, without the list).
    pub fn json() -> Self {
        let inner = tracing_subscriber::fmt::format().json().with_current_span(true).with_span_list(false);
        Self { inner, json: true }
    }
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for RequestIdFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let id = id.as_str();
        let mut line = String::new();
        self.inner.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        match body.strip_suffix('}') {
            Some(object) if self.json => {
                let id = serde_json::to_string(id).map_err(|_| std::fmt::Error)?;
                writeln!(writer, "{object},\"request_id\":{id}}}")
            }
            _ if id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) => {
                writeln!(writer, "{body} request_id={id}")
            }
            _ => writeln!(writer, "{body} request_id={id:?}"),
        }
    }
}

/// Upper bounds of the latency histogram, in microseconds (0.5 ms … 10 s).
const BUCKETS_US: [u64; 13] =
    [500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 10_000_000];

/// Status codes with a counter of their own (sorted); others share a map.
const STATUSES: [u16; 36] = [
    101, 200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413,
    414, 415, 416, 422, 426, 428, 429, 431, 500, 501, 502, 503, 504,
];

/// Methods with counters of their own; the last slot is every other method.
const METHODS: [Method; 7] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

fn method_slot(method: &Method) -> usize {
    METHODS.iter().position(|m| m == method).unwrap_or(METHODS.len())
}

fn method_name(slot: usize) -> &'static str {
    METHODS.get(slot).map_or("OTHER", Method::as_str)
}

/// One route's requests with one method, as one worker thread counted
/// them (single writer: a relaxed load and store, no locked instruction,
/// no cache line shared between cores).
struct MethodCounters {
    statuses: [AtomicU64; STATUSES.len()],
    other_statuses: Mutex<BTreeMap<u16, u64>>,
    /// Non-cumulative bucket counts; the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for MethodCounters {
    fn default() -> Self {
        Self {
            statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            other_statuses: Mutex::default(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Adds to a counter only its owning thread writes.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The counters of one route template (`/api/v1/containers/{id}`), or of
/// `unmatched` for requests no route answers: one [`MethodCounters`] per
/// method and worker thread that served it.
pub struct RouteMetrics {
    route: Box<str>,
    /// Position in the registry: the index of this route's slots in each
    /// thread's table.
    index: usize,
    shards: Mutex<Vec<(usize, Arc<MethodCounters>)>>,
}

thread_local! {
    /// This thread's counters, by `route index * slots + method slot`.
    static MINE: RefCell<Vec<Option<Arc<MethodCounters>>>> = const { RefCell::new(Vec::new()) };
}

const SLOTS: usize = METHODS.len() + 1;

impl RouteMetrics {
    /// Counts one answered request.
    pub fn record(&self, method: &Method, status: u16, elapsed: Duration) {
        let slot = method_slot(method);
        MINE.with_borrow_mut(|mine| {
            let at = self.index * SLOTS + slot;
            if mine.len() <= at {
                mine.resize(at + 1, None);
            }
            let counters = mine[at].get_or_insert_with(|| {
                let fresh = Arc::new(MethodCounters::default());
                self.shards.lock().unwrap_or_else(PoisonError::into_inner).push((slot, Arc::clone(&fresh)));
                fresh
            });
            match STATUSES.binary_search(&status) {
                Ok(i) => bump(&counters.statuses[i], 1),
                Err(_) => {
                    *counters
                        .other_statuses
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(status)
                        .or_insert(0) += 1;
                }
            }
            let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            bump(&counters.buckets[BUCKETS_US.partition_point(|&b| b < us)], 1);
            bump(&counters.sum_us, us);
        });
    }

    /// Sums of every thread's counters, per method slot that counted.
    fn totals(&self) -> Vec<SlotTotals> {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for slot in 0..SLOTS {
            let mut statuses = BTreeMap::new();
            let mut buckets = vec![0u64; BUCKETS_US.len() + 1];
            let mut sum = 0u64;
            let mut any = false;
            for (_, c) in shards.iter().filter(|(s, _)| *s == slot) {
                any = true;
                for (i, n) in c.statuses.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n > 0 {
                        *statuses.entry(STATUSES[i]).or_insert(0) += n;
                    }
                }
                for (status, n) in c.other_statuses.lock().unwrap_or_else(PoisonError::into_inner).iter() {
                    *statuses.entry(*status).or_insert(0) += n;
                }
                for (b, n) in buckets.iter_mut().zip(&c.buckets) {
                    *b += n.load(Ordering::Relaxed);
                }
                sum += c.sum_us.load(Ordering::Relaxed);
            }
            if any {
                out.push(SlotTotals { slot, statuses, buckets, sum_us: sum });
            }
        }
        out
    }
}

/// One method's counts of one route, summed over threads.
struct SlotTotals {
    slot: usize,
    statuses: BTreeMap<u16, u64>,
    /// Non-cumulative, `+Inf` last.
    buckets: Vec<u64>,
    sum_us: u64,
}

/// Every route's counters, process-wide (several applications in one
/// process, as in tests, share them, like a global metrics recorder).
/// Entries are never removed, so each lives for the whole process: one per
/// route template, a bounded set fixed by the code.
fn registry() -> &'static Mutex<BTreeMap<Box<str>, &'static RouteMetrics>> {
    static REGISTRY: OnceLock<Mutex<BTreeMap<Box<str>, &'static RouteMetrics>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// The counters of `route` (a template, or `unmatched`), created on first
/// use and kept for the life of the process (so a request holds them
/// without touching a reference count).
pub fn route_metrics(route: &str) -> &'static RouteMetrics {
    let mut all = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let index = all.len();
    all.entry(route.into())
        .or_insert_with(|| Box::leak(Box::new(RouteMetrics { route: route.into(), index, shards: Mutex::default() })))
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends `http_requests_total` and `http_request_duration_seconds` in the
/// Prometheus text format (only series that counted something).
pub fn render_http(out: &mut String) {
    let all: Vec<&'static RouteMetrics> =
        registry().lock().unwrap_or_else(PoisonError::into_inner).values().copied().collect();
    let totals: Vec<(String, Vec<SlotTotals>)> = all.iter().map(|r| (label(&r.route), r.totals())).collect();
    out.push_str("# HELP http_requests_total HTTP requests answered, by method, route template and status.\n");
    out.push_str("# TYPE http_requests_total counter\n");
    for (route, slots) in &totals {
        for t in slots {
            let method = method_name(t.slot);
            for (status, n) in &t.statuses {
                let _ = writeln!(
                    out,
                    "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
    }
    out.push_str("# HELP http_request_duration_seconds Time to answer HTTP requests, by method and route template.\n");
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for (route, slots) in &totals {
        for t in slots {
            let method = method_name(t.slot);
            let mut cumulative = 0;
            for (i, n) in t.buckets.iter().enumerate() {
                cumulative += n;
                let le = BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |us| (*us as f64 / 1e6).to_string());
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = t.sum_us as f64 / 1e6;
            let _ = writeln!(out, "http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\"}} {sum}");
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}} {cumulative}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines written by a subscriber, for the assertions.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A client's id: longer than the inline ones, with characters to quote.
    const LONG_ID: &str = "a client's id with \"quotes\", longer than forty bytes";

    fn logged_in_and_out_of_requests(json: bool) -> Vec<String> {
        let lines = Lines::default();
        let sink = lines.clone();
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(move || sink.clone());
        let subscriber: Box<dyn tracing::Subscriber + Send + Sync> = if json {
            Box::new(
                builder
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(RequestIdFormat::json())
                    .finish(),
            )
        } else {
            Box::new(builder.event_format(RequestIdFormat::text()).finish())
        };
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            {
                let _outer = request_scope(&HeaderValue::from_static("req-1"));
                tracing::warn!(detail = "x", "inside");
                {
                    let _inner = request_scope(&HeaderValue::from_static(LONG_ID));
                    tracing::info!("nested");
                }
                tracing::info!("back");
            }
            tracing::info!("after");
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn every_text_line_of_a_request_names_it_and_no_other_line_does() {
        let lines = logged_in_and_out_of_requests(false);
        assert_eq!(lines.len(), 5, "{lines:?}");
        assert!(lines[0].ends_with("outside"), "{lines:?}");
        assert!(lines[1].contains("inside") && lines[1].ends_with(" request_id=req-1"), "{lines:?}");
        assert!(lines[2].ends_with(&format!(" request_id={LONG_ID:?}")), "{lines:?}");
        assert!(lines[3].ends_with("back request_id=req-1"), "{lines:?}");
        assert!(!lines[4].contains("request_id"), "{lines:?}");
    }

    #[test]
    fn every_json_line_of_a_request_has_its_id_as_a_key() {
        let lines = logged_in_and_out_of_requests(true);
        let parsed: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        let ids: Vec<Option<&str>> = parsed.iter().map(|v| v["request_id"].as_str()).collect();
        assert_eq!(ids, [None, Some("req-1"), Some(LONG_ID), Some("req-1"), None], "{lines:?}");
        assert_eq!(parsed[1]["fields"]["detail"], "x", "{lines:?}");
    }

    #[test]
    fn requests_are_counted_by_method_and_status_and_timed_in_cumulative_buckets() {
        let m = route_metrics("/test/telemetry/{id}");
        m.record(&Method::GET, 200, Duration::from_micros(300));
        m.record(&Method::GET, 200, Duration::from_millis(3));
        m.record(&Method::GET, 299, Duration::from_millis(20));
        // Another thread's counts add up with this one's.
        std::thread::spawn(|| {
            let m = route_metrics("/test/telemetry/{id}");
            m.record(&Method::from_bytes(b"PURGE").unwrap(), 404, Duration::from_secs(20));
            m.record(&Method::GET, 200, Duration::from_micros(300));
        })
        .join()
        .unwrap();
        let mut out = String::new();
        render_http(&mut out);
        let line = |needle: &str| out.lines().find(|l| l.starts_with(needle)).map(str::to_owned);
        let route = "route=\"/test/telemetry/{id}\"";
        assert_eq!(
            line(&format!("http_requests_total{{method=\"GET\",{route},status=\"200\"}}")).unwrap().rsplit(' ').next(),
            Some("3")
        );
        assert!(line(&format!("http_requests_total{{method=\"GET\",{route},status=\"299\"}} 1")).is_some(), "{out}");
        assert!(line(&format!("http_requests_total{{method=\"OTHER\",{route},status=\"404\"}} 1")).is_some());
        for (le, n) in [("0.0005", 2), ("0.001", 2), ("0.005", 3), ("0.025", 4), ("+Inf", 4)] {
            assert!(
                line(&format!("http_request_duration_seconds_bucket{{method=\"GET\",{route},le=\"{le}\"}} {n}"))
                    .is_some(),
                "le {le}: {out}"
            );
        }
        assert!(line(&format!("http_request_duration_seconds_count{{method=\"GET\",{route}}} 4")).is_some());
        assert!(
            line(&format!("http_request_duration_seconds_bucket{{method=\"OTHER\",{route},le=\"10\"}} 0")).is_some()
        );
        let sum: f64 = line(&format!("http_request_duration_seconds_sum{{method=\"GET\",{route}}}"))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.0236).abs() < 1e-9, "{sum}");
    }
}
