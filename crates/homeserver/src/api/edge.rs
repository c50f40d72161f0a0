//! The edge every request passes through, as one hand-written service
//! around the router instead of a stack of middleware layers (axum applies
//! `Router::layer` to every route and clones each layer's boxed service per
//! request; here a request pays for one boxed future).
//!
//! In order, for each request: the request id (the client's `x-request-id`,
//! or a fresh UUID-shaped id), which every log line of the request carries
//! (set for the thread around each poll, [`telemetry::request_scope`]; the
//! debug lines log the path only, never the query, which may hold
//! `access_token`), the
//! route template and what it needs (from a table built once from the
//! OpenAPI document: an undocumented route cannot be reached at all),
//! authentication, rate limit and scope check ([`Security::admit`]), the
//! body limit (413) and timeout (408), the audit record of a mutating
//! request, then on the way out problem+json for every error, `nosniff`,
//! `no-store` on everything but the static docs, and the request counter
//! and latency histogram.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use tower::Service;
use utoipa::openapi::OpenApi as OpenApiDoc;

use super::REQUEST_ID_HEADER;
use super::error::{self, ApiError, ErrorCode};
use crate::auth::{Need, Scope, Security};
use crate::telemetry::{self, RouteMetrics, route_metrics};

/// [`REQUEST_ID_HEADER`] as a header name made once (a `&str` key is parsed
/// on every lookup).
const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Paths served outside the OpenAPI document, to anyone: the interactive
/// docs and the document itself.
const PUBLIC_UNDOCUMENTED: [&str; 4] = ["/docs", "/docs/", "/docs/{*rest}", "/api-docs/openapi.json"];

/// One route template and what each of its methods needs.
struct RouteEntry {
    /// The path template (`/api/v1/devices/{id}`), as the audit log names it.
    template: Box<str>,
    /// `Some` for a path whose every method is public (the docs).
    any: Option<Need>,
    methods: Vec<(Method, Need)>,
    /// A WebSocket route (its document answers 101): an upgrade to it
    /// carries the security layer along for the per-token connection cap.
    websocket: bool,
    /// `Allow` for a 405.
    allow: HeaderValue,
    metrics: &'static RouteMetrics,
}

impl RouteEntry {
    fn need(&self, method: &Method) -> Option<Need> {
        if let Some(need) = self.any {
            return Some(need);
        }
        let find = |m: &Method| self.methods.iter().find(|(x, _)| x == m).map(|(_, n)| *n);
        // axum answers HEAD with the GET handler.
        find(method).or_else(|| (method == Method::HEAD).then(|| find(&Method::GET)).flatten())
    }
}

/// Every route the application serves, from the OpenAPI document.
pub(crate) struct RouteTable {
    paths: matchit::Router<usize>,
    entries: Vec<RouteEntry>,
    unmatched: &'static RouteMetrics,
}

/// An operation of the document that declares neither a scope nor `public`.
#[derive(Debug, thiserror::Error)]
#[error("{method} {path}: {why}")]
pub struct UndeclaredRoute {
    method: String,
    path: String,
    why: String,
}

impl RouteTable {
    /// The table of `doc`: every operation must carry `x-required-scope` (from
    /// [`crate::auth::scoped`]) or an empty security requirement (from
    /// [`crate::auth::public`]).
    pub(crate) fn from_openapi(doc: &OpenApiDoc) -> Result<Self, UndeclaredRoute> {
        let mut table =
            Self { paths: matchit::Router::new(), entries: Vec::new(), unmatched: route_metrics("unmatched") };
        for (path, item) in &doc.paths.paths {
            let ops = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::OPTIONS, &item.options),
                (Method::HEAD, &item.head),
                (Method::PATCH, &item.patch),
                (Method::TRACE, &item.trace),
            ];
            let mut methods = Vec::new();
            let mut websocket = false;
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let fail = |why: String| UndeclaredRoute { method: method.to_string(), path: path.clone(), why };
                let declared = op.extensions.as_ref().and_then(|e| e.get("x-required-scope"));
                let need = match (declared, &op.security) {
                    (Some(scope), _) => {
                        let scope = scope
                            .as_str()
                            .and_then(|s| s.parse::<Scope>().ok())
                            .ok_or_else(|| fail(format!("x-required-scope {scope} is not a scope")))?;
                        Need::Scope(scope)
                    }
                    (None, Some(requirements)) if requirements.is_empty() => Need::Public,
                    (None, _) => {
                        return Err(fail("declares neither a scope (auth::scoped) nor public (auth::public)".into()));
                    }
                };
                websocket |= op.responses.responses.contains_key("101");
                methods.push((method, need));
            }
            let allow = methods.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ");
            table.insert(
                path,
                RouteEntry {
                    template: path.as_str().into(),
                    any: None,
                    allow: HeaderValue::from_str(&allow).unwrap_or_else(|_| HeaderValue::from_static("GET")),
                    methods,
                    websocket,
                    metrics: route_metrics(path),
                },
            )?;
        }
        for path in PUBLIC_UNDOCUMENTED {
            table.insert(
                path,
                RouteEntry {
                    template: path.into(),
                    any: Some(Need::Public),
                    methods: Vec::new(),
                    websocket: false,
                    allow: HeaderValue::from_static("GET"),
                    metrics: route_metrics(if path == "/api-docs/openapi.json" { path } else { "/docs" }),
                },
            )?;
        }
        Ok(table)
    }

    fn insert(&mut self, path: &str, entry: RouteEntry) -> Result<(), UndeclaredRoute> {
        self.paths.insert(path, self.entries.len()).map_err(|e| UndeclaredRoute {
            method: "*".to_owned(),
            path: path.to_owned(),
            why: format!("cannot be routed: {e}"),
        })?;
        self.entries.push(entry);
        Ok(())
    }

    fn find(&self, path: &str) -> Option<&RouteEntry> {
        self.paths.at(path).ok().and_then(|m| self.entries.get(*m.value))
    }
}

/// Request ids: per thread, a random version-4 UUID whose last 12 hex
/// digits (48 bits) then count up, kept as text so the next id changes a
/// digit or two in place: unique (74 random bits per thread, a 48-bit
/// counter), without a shared atomic, a random draw or formatting per
/// request.
fn next_request_id() -> HeaderValue {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<Option<[u8; 36]>> = const { Cell::new(None) };
    }
    let mut text = NEXT.get().unwrap_or_else(random_request_id);
    count_up(&mut text);
    NEXT.set(Some(text));
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Adds one to the last 12 hex digits of `text` (the counter), with carry,
/// wrapping within those 12 after 2^48 ids of one thread.
fn count_up(text: &mut [u8; 36]) {
    for c in text[24..].iter_mut().rev() {
        let (next, carry) = match *c {
            b'9' => (b'a', false),
            b'f' => (b'0', true),
            d => (d + 1, false),
        };
        *c = next;
        if !carry {
            break;
        }
    }
}

/// A random version-4 UUID as text (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-…`).
#[cold]
#[inline(never)]
fn random_request_id() -> [u8; 36] {
    let mut bytes = [0u8; 16];
    // Without the OS's randomness, time and the process still make ids
    // unique enough to correlate log lines.
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (t.as_nanos() ^ (u128::from(std::process::id()) << 64)).to_be_bytes();
    }
    // Version 4, variant 10.
    let id = (u128::from_be_bytes(bytes) & !(0xf000 << 64) & !(0xc000 << 48)) | (0x4000 << 64) | (0x8000 << 48);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut nibble = 32;
    for (i, c) in text.iter_mut().enumerate() {
        if !matches!(i, 8 | 13 | 18 | 23) {
            nibble -= 1;
            *c = HEX[((id >> (nibble * 4)) & 0xf) as usize];
        }
    }
    text
}

/// What the edge needs, shared by every request.
pub(crate) struct EdgeState {
    pub(crate) routes: RouteTable,
    pub(crate) security: Arc<Security>,
    pub(crate) timeout: Duration,
    pub(crate) max_body_bytes: usize,
}

/// The application as a service: the edge around the router.
#[derive(Clone)]
pub struct Edge {
    router: Router,
    state: Arc<EdgeState>,
}

impl Edge {
    pub(crate) fn new(router: Router, state: EdgeState) -> Self {
        Self { router, state: Arc::new(state) }
    }
}

// The paths every request takes are kept short and together; refusals,
// problems, audited requests and debug lines are functions of their own,
// out of line, so they do not spread the common path over more cache lines.

#[cold]
#[inline(never)]
fn problem(code: ErrorCode, detail: &str) -> Response {
    ApiError::new(code, detail).into_response()
}

#[cold]
#[inline(never)]
fn finish_problem(response: Response, request_id: &HeaderValue) -> Response {
    error::finish_problem(response, Some(request_id))
}

#[inline(never)]
fn log_request(request: &Request) {
    tracing::debug!(method = %request.method(), path = %request.uri().path(), "request");
}

#[inline(never)]
fn log_answer(status: u16, elapsed: Duration) {
    tracing::debug!(status, latency_us = elapsed.as_micros() as u64, "answered");
}

/// A request answered at the edge with a problem (`allow`: the methods of
/// a 405); the request is dropped here, out of the common path.
#[cold]
#[inline(never)]
fn answered(post: Post, request: Request, code: ErrorCode, detail: &str, allow: Option<HeaderValue>) -> EdgeFuture {
    drop(request);
    let mut response = problem(code, detail);
    if let Some(allow) = allow {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    EdgeFuture::Done { response: Some(post.finish(response)) }
}

/// A refused request: its answer, after its audit record when it has one.
#[cold]
#[inline(never)]
fn refused(post: Post, refusal: crate::auth::Refusal, pending: Option<super::audit::Pending>) -> EdgeFuture {
    match pending {
        None => EdgeFuture::Done { response: Some(post.finish(refusal.response)) },
        Some(pending) => EdgeFuture::Audited {
            inner: Box::pin(telemetry::InRequest::new(post.request_id.clone(), async move {
                pending.finish(refusal.response.status().as_u16()).await;
                post.finish(refusal.response)
            })),
        },
    }
}

/// A mutating request: the router's answer (within the time left), then
/// its audit record, then the way out.
#[inline(never)]
fn audited(
    post: Post,
    inner: axum::routing::future::RouteFuture<Infallible>,
    pending: super::audit::Pending,
    timeout: Duration,
) -> EdgeFuture {
    let start = post.start;
    EdgeFuture::Audited {
        inner: Box::pin(telemetry::InRequest::new(post.request_id.clone(), async move {
            let left = timeout.saturating_sub(start.elapsed());
            let response = match tokio::time::timeout(left, inner).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => problem(ErrorCode::RequestTimeout, "the request took too long"),
            };
            pending.finish(response.status().as_u16()).await;
            post.finish(response)
        })),
    }
}

/// What the way out needs: the answer's headers, the metrics.
struct Post {
    start: quanta::Instant,
    request_id: HeaderValue,
    method: Method,
    metrics: &'static RouteMetrics,
    cacheable: bool,
}

impl Post {
    fn finish(self, response: Response) -> Response {
        let status = response.status();
        let mut response = if status.is_client_error() || status.is_server_error() {
            finish_problem(response, &self.request_id)
        } else {
            response
        };
        let headers = response.headers_mut();
        // At most one growth of the map for the three below.
        headers.reserve(3);
        headers.insert(REQUEST_ID, self.request_id);
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if !self.cacheable {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        let elapsed = self.start.elapsed();
        self.metrics.record(&self.method, status.as_u16(), elapsed);
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            log_answer(status.as_u16(), elapsed);
        }
        response
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request. Most requests never allocate for it: an
    /// early refusal is ready at once, and a routed request polls the
    /// router's own future, arming the timeout only if the handler has to
    /// wait. Mutating requests, whose audit record is written once the
    /// answer is known, are one boxed future.
    #[project = EdgeProj]
    pub enum EdgeFuture {
        /// Answered without the router.
        Done { response: Option<Response> },
        /// In the router.
        Routed {
            #[pin]
            inner: axum::routing::future::RouteFuture<Infallible>,
            started: quanta::Instant,
            timeout: Duration,
            sleep: Option<Pin<Box<tokio::time::Sleep>>>,
            post: Option<Post>,
        },
        /// In the router, then in the audit log.
        Audited { inner: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl Future for EdgeFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EdgeProj::Done { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| ApiError::internal("an answer was polled twice").into_response()))),
            EdgeProj::Routed { inner, started, timeout, sleep, post } => {
                let scope = post.as_ref().map(|p| telemetry::request_scope(&p.request_id));
                let response = match inner.poll(cx) {
                    Poll::Ready(Ok(response)) => response,
                    Poll::Ready(Err(never)) => match never {},
                    Poll::Pending => {
                        // Armed only when the handler has to wait, counted from the request's arrival.
                        let left = timeout.saturating_sub(started.elapsed());
                        let sleep = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(left)));
                        match sleep.as_mut().poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(()) => problem(ErrorCode::RequestTimeout, "the request took too long"),
                        }
                    }
                };
                let response = match post.take() {
                    Some(post) => post.finish(response),
                    None => ApiError::internal("an answer was polled twice").into_response(),
                };
                drop(scope);
                Poll::Ready(Ok(response))
            }
            EdgeProj::Audited { inner } => inner.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<B> Service<axum::http::Request<B>> for Edge
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> EdgeFuture {
        let start = quanta::Instant::now();
        let request = request.map(Body::new);
        let request_id = match crate::auth::header(request.headers(), &REQUEST_ID) {
            Some(id) if !id.is_empty() => id.clone(),
            _ => next_request_id(),
        };
        // Nothing below logs above `debug` before the router's future is
        // polled (which runs in a scope of its own): a scope here is needed
        // only when debug lines are on.
        let _scope = tracing::level_enabled!(tracing::Level::DEBUG).then(|| {
            let scope = telemetry::request_scope(&request_id);
            log_request(&request);
            scope
        });
        let edge = &*self.state;
        let route = edge.routes.find(request.uri().path());
        let post = Post {
            start,
            request_id,
            method: request.method().clone(),
            metrics: route.map_or(edge.routes.unmatched, |r| r.metrics),
            cacheable: route.is_some_and(|r| r.any.is_some()),
        };
        let Some(route) = route else {
            return answered(post, request, ErrorCode::NotFound, "no such route", None);
        };
        let Some(need) = route.need(&post.method) else {
            let allow = Some(route.allow.clone());
            return answered(
                post,
                request,
                ErrorCode::MethodNotAllowed,
                "this route does not accept that method",
                allow,
            );
        };
        let peer: Option<IpAddr> = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let (mut parts, body) = request.into_parts();
        let audit = |caller: &crate::auth::Caller| {
            edge.security.audit().and_then(|sink| {
                super::audit::Pending::capture(sink, &parts, caller, &route.template, &post.request_id, peer)
            })
        };
        let mut caller = match edge.security.admit(&parts, peer, need, start) {
            Ok(caller) => caller,
            Err(refusal) => {
                let pending = refusal.caller.as_ref().and_then(audit);
                return refused(post, *refusal, pending);
            }
        };
        if route.websocket && parts.method == Method::GET && parts.headers.contains_key(header::UPGRADE) {
            caller.1 = Some(Arc::clone(&edge.security));
        }
        // hyper's body knows a declared length; other bodies may not.
        let declared = axum::body::HttpBody::size_hint(&body).exact().or_else(|| {
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        });
        if declared.is_some_and(|n| n > edge.max_body_bytes as u64) {
            let request = Request::from_parts(parts, body);
            return answered(
                post,
                request,
                ErrorCode::PayloadTooLarge,
                "the request body is over the size limit",
                None,
            );
        }
        let pending = audit(&caller);
        parts.extensions.insert(caller);
        // A body that may still come is read through the limit.
        let body = if axum::body::HttpBody::is_end_stream(&body) {
            body
        } else {
            Body::new(http_body_util::Limited::new(body, edge.max_body_bytes))
        };
        let timeout = edge.timeout;
        let inner = self.router.call(Request::from_parts(parts, body));
        match pending {
            None => EdgeFuture::Routed { inner, started: start, timeout, sleep: None, post: Some(post) },
            Some(pending) => audited(post, inner, pending, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use axum::http::StatusCode;
    use tower::ServiceExt as _;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    use super::*;
    use crate::auth::{AuthFailure, Authenticator, Limits, Principal, public, scoped};

    /// `Bearer read` is a read token, `Bearer admin` an admin one.
    struct Named;

    impl Authenticator for Named {
        fn authenticate(&self, parts: &axum::http::request::Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
            match parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap()) {
                None => Ok(None),
                Some("Bearer read") => Ok(Some(Arc::new(Principal::new("r", Scope::Read, None)))),
                Some("Bearer admin") => Ok(Some(Arc::new(Principal::new("a", Scope::Admin, None)))),
                Some(_) => Err(AuthFailure::Invalid),
            }
        }
    }

    /// Read.
    #[utoipa::path(get, path = "/things/{id}", params(("id" = String, Path)), responses((status = 200)))]
    async fn get_thing() -> &'static str {
        "thing"
    }

    /// Write.
    #[utoipa::path(put, path = "/things/{id}", params(("id" = String, Path)), responses((status = 204)))]
    async fn put_thing() -> StatusCode {
        StatusCode::NO_CONTENT
    }

    /// Anyone.
    #[utoipa::path(get, path = "/open", responses((status = 200)))]
    async fn open() -> &'static str {
        "open"
    }

    /// Not declared either way.
    #[utoipa::path(get, path = "/forgotten", responses((status = 200)))]
    async fn forgotten() -> &'static str {
        "forgotten"
    }

    fn edge(router: OpenApiRouter) -> Result<Edge, UndeclaredRoute> {
        let (router, doc) = router.split_for_parts();
        let limits = Limits { per_second: 1_000, burst: 1_000, max_failures_per_minute: 1_000, max_ws_per_token: 1 };
        Ok(Edge::new(
            router,
            EdgeState {
                routes: RouteTable::from_openapi(&doc)?,
                security: Arc::new(Security::new(Arc::new(Named), limits)),
                timeout: Duration::from_secs(5),
                max_body_bytes: 16,
            },
        ))
    }

    fn app() -> Edge {
        let router = OpenApiRouter::new()
            .routes(scoped(Scope::Read, routes!(get_thing)))
            .routes(scoped(Scope::Admin, routes!(put_thing)))
            .routes(public(routes!(open)))
            // Served by axum, absent from the document: must be unreachable.
            .route("/hidden", axum::routing::get(|| async { "hidden" }));
        edge(router).unwrap()
    }

    async fn status(app: &Edge, method: &str, uri: &str, auth: Option<&str>, body: &str) -> (StatusCode, Response) {
        let mut req = axum::http::Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {a}"));
        }
        let response = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        (response.status(), response)
    }

    #[tokio::test]
    async fn a_route_that_declares_nothing_makes_the_application_refuse_to_build() {
        let err = edge(OpenApiRouter::new().routes(routes!(forgotten))).err().unwrap();
        assert!(err.to_string().contains("GET /forgotten"), "{err}");
    }

    #[tokio::test]
    async fn the_document_decides_who_may_call_what() {
        let app = app();
        assert_eq!(status(&app, "GET", "/things/1", None, "").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "GET", "/things/1", Some("wrong"), "").await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "GET", "/things/1", Some("read"), "").await.0, StatusCode::OK);
        assert_eq!(status(&app, "HEAD", "/things/1", Some("read"), "").await.0, StatusCode::OK);
        assert_eq!(status(&app, "PUT", "/things/1", Some("read"), "").await.0, StatusCode::FORBIDDEN);
        assert_eq!(status(&app, "PUT", "/things/1", Some("admin"), "").await.0, StatusCode::NO_CONTENT);
        assert_eq!(status(&app, "GET", "/open", None, "").await.0, StatusCode::OK);
        // A bad token on a public route is ignored, as no token would be.
        assert_eq!(status(&app, "GET", "/open", Some("wrong"), "").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn undocumented_routes_and_methods_are_unreachable() {
        let app = app();
        for auth in [None, Some("admin")] {
            let (code, response) = status(&app, "GET", "/hidden", auth, "").await;
            assert_eq!(code, StatusCode::NOT_FOUND);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        }
        let (code, response) = status(&app, "DELETE", "/things/1", Some("admin"), "").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, PUT");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_before_the_handler() {
        let app = app();
        let (code, _) = status(&app, "PUT", "/things/1", Some("admin"), &"x".repeat(17)).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(&app, "PUT", "/things/1", Some("admin"), &"x".repeat(16)).await.0, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn every_answer_carries_a_request_id_and_the_safety_headers() {
        let app = app();
        let (_, a) = status(&app, "GET", "/things/1", Some("read"), "").await;
        let (_, b) = status(&app, "GET", "/nowhere", None, "").await;
        let id = |r: &Response| r.headers()[REQUEST_ID_HEADER].to_str().unwrap().to_owned();
        assert_ne!(id(&a), id(&b));
        assert!(uuid::Uuid::parse_str(&id(&a)).is_ok(), "{}", id(&a));
        assert_eq!(uuid::Uuid::parse_str(&id(&a)).unwrap().get_version_num(), 4);
        for r in [&a, &b] {
            assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        }
    }

    #[tokio::test]
    async fn a_client_request_id_is_echoed_and_an_empty_one_replaced() {
        let app = app();
        for (sent, echoed) in [(Some("trace-7"), Some("trace-7")), (Some(""), None), (None, None)] {
            let mut req = axum::http::Request::builder().uri("/open");
            if let Some(id) = sent {
                req = req.header(REQUEST_ID, id);
            }
            let response = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let id = response.headers()[REQUEST_ID].to_str().unwrap();
            match echoed {
                Some(e) => assert_eq!(id, e),
                None => assert!(uuid::Uuid::parse_str(id).is_ok(), "{sent:?} -> {id:?}"),
            }
        }
    }

    #[test]
    fn request_ids_do_not_repeat_and_look_like_uuids_v4() {
        let ids: std::collections::HashSet<HeaderValue> = (0..70_000).map(|_| next_request_id()).collect();
        assert_eq!(ids.len(), 70_000, "past a carry over four digits (0xffff)");
        for id in ids.iter().take(100) {
            let uuid = uuid::Uuid::parse_str(id.to_str().unwrap()).unwrap();
            assert_eq!(uuid.get_version_num(), 4, "{uuid}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{uuid}");
        }
        // Another thread starts from its own random base.
        let other = std::thread::spawn(next_request_id).join().unwrap();
        assert!(!ids.contains(&other));
        assert_ne!(other.as_bytes()[..24], next_request_id().as_bytes()[..24]);
    }

    #[test]
    fn the_counter_carries_through_hex_digits() {
        for (from, to) in [
            ("00000000-0000-4000-8000-00000000009f", "00000000-0000-4000-8000-0000000000a0"),
            ("00000000-0000-4000-8000-000000000009", "00000000-0000-4000-8000-00000000000a"),
            ("12345678-9abc-4def-8123-00ffffffffff", "12345678-9abc-4def-8123-010000000000"),
            ("12345678-9abc-4def-8123-ffffffffffff", "12345678-9abc-4def-8123-000000000000"),
        ] {
            let mut text: [u8; 36] = from.as_bytes().try_into().unwrap();
            count_up(&mut text);
            assert_eq!(std::str::from_utf8(&text).unwrap(), to);
        }
    }
}
