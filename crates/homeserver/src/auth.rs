//! Authentication, authorization and abuse limits: the layer every route
//! passes through.
//!
//! - [`authenticate`] (middleware, every request) asks the [`Authenticator`]
//!   who is calling, applies the per-token (or, unauthenticated, per-address)
//!   rate limit and stores the [`Caller`] in the request's extensions.
//! - [`scoped`] registers a route with the [`Scope`] it needs, declared once
//!   beside the route: the handlers refuse smaller callers (401/403) and the
//!   OpenAPI operation carries the bearer security requirement and
//!   `x-required-scope`. [`public`] registers a route that needs nobody.
//! - Failed authentication is counted per client address and answered 429
//!   once `auth.max_failures_per_minute` is spent, before the general budget.
//! - [`WsSlot`] caps WebSocket connections per token.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
pub use homeserver_domain::Scope;
use homeserver_domain::TokenId;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::api::error::{ApiError, ErrorCode};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name for logs and the audit log (never a secret).
    pub name: String,
    /// Largest scope granted.
    pub scope: Scope,
    /// The token, when the caller presented one.
    pub token_id: Option<TokenId>,
}

impl Principal {
    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        match &self.token_id {
            Some(id) => format!("{} ({id})", self.name),
            None => self.name.clone(),
        }
    }
}

/// Why a request has no principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A token that is unknown, malformed, expired or revoked.
    Invalid,
}

/// Decides who a request comes from; must be cheap (it runs on every request).
pub trait Authenticator: Send + Sync {
    /// The principal of a request, `Ok(None)` when it carries no credentials.
    fn authenticate(&self, parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure>;
}

/// The outcome of authentication, stored in every request's extensions
/// (with the layer that decided it, for the scope check and WebSocket caps).
#[derive(Clone)]
pub struct Caller(pub Result<Option<Arc<Principal>>, AuthFailure>, pub Option<Arc<Security>>);

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Caller").field(&self.0).finish()
    }
}

impl Caller {
    /// The principal, if authentication succeeded.
    pub fn principal(&self) -> Option<&Arc<Principal>> {
        self.0.as_ref().ok().and_then(Option::as_ref)
    }
}

/// Limits of the security layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained requests per second per token (or per address when unauthenticated).
    pub per_second: u32,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Failed authentications per minute per address before 429.
    pub max_failures_per_minute: u32,
    /// WebSocket connections per token.
    pub max_ws_per_token: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Token(TokenId),
    Addr(IpAddr),
    Unknown,
}

/// Where mutating requests are recorded.
#[derive(Clone)]
pub struct AuditSink {
    /// The audit log.
    pub repository: Arc<dyn homeserver_domain::AuditRepository>,
    /// Its clock.
    pub clock: Arc<dyn homeserver_domain::Clock>,
}

/// The security layer's state: authenticator, limiters, WebSocket counts,
/// audit log.
pub struct Security {
    authenticator: Arc<dyn Authenticator>,
    audit: Option<AuditSink>,
    requests: DefaultKeyedRateLimiter<Key>,
    failures: DefaultKeyedRateLimiter<Key>,
    ws: Mutex<HashMap<TokenId, usize>>,
    max_ws_per_token: usize,
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

impl Security {
    /// The layer with `authenticator` and `limits`.
    pub fn new(authenticator: Arc<dyn Authenticator>, limits: Limits) -> Self {
        let requests = RateLimiter::keyed(Quota::per_second(nz(limits.per_second)).allow_burst(nz(limits.burst)));
        let failures = RateLimiter::keyed(
            Quota::per_minute(nz(limits.max_failures_per_minute)).allow_burst(nz(limits.max_failures_per_minute)),
        );
        Self {
            authenticator,
            audit: None,
            requests,
            failures,
            ws: Mutex::new(HashMap::new()),
            max_ws_per_token: limits.max_ws_per_token.max(1),
        }
    }

    /// Records every mutating request in `sink`.
    pub fn with_audit(mut self, sink: AuditSink) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Forgets limiter state of keys idle long enough to be full again.
    pub fn housekeeping(&self) {
        self.requests.retain_recent();
        self.failures.retain_recent();
        self.requests.shrink_to_fit();
        self.failures.shrink_to_fit();
    }

    fn wait_time(&self, result: Result<(), governor::NotUntil<governor::clock::QuantaInstant>>) -> Option<Duration> {
        // The limiter's own clock: building a new one probes the CPU each time.
        result.err().map(|not_until| not_until.wait_time_from(self.requests.clock().now()))
    }

    fn too_many(wait: Duration, detail: &str) -> Response {
        let mut response = ApiError::new(ErrorCode::RateLimited, detail).into_response();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn client_key(extensions: &axum::http::Extensions) -> Key {
    extensions.get::<ConnectInfo<SocketAddr>>().map_or(Key::Unknown, |c| Key::Addr(c.0.ip()))
}

/// Middleware: authenticates, rate-limits, records the caller, and writes
/// the audit record of a mutating request once its answer is known (one
/// middleware, so a request pays for one layer here, not two).
pub async fn authenticate(State(security): State<Arc<Security>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = security.authenticator.authenticate(&parts);
    let key = match &caller {
        Ok(Some(p)) => p.token_id.clone().map_or_else(|| client_key(&parts.extensions), Key::Token),
        _ => client_key(&parts.extensions),
    };
    if let Some(wait) = security.wait_time(security.requests.check_key(&key)) {
        return Security::too_many(wait, "request rate limit reached; retry later");
    }
    let caller = Caller(caller, Some(Arc::clone(&security)));
    let pending = security.audit.as_ref().and_then(|sink| crate::api::audit::Pending::capture(sink, &parts, &caller));
    parts.extensions.insert(caller);
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(pending) = pending {
        pending.finish(response.status().as_u16()).await;
    }
    response
}

async fn require(scope: Scope, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    let security = request.extensions().get::<Caller>().and_then(|c| c.1.clone());
    let why = match caller {
        Some(Ok(Some(p))) if p.scope.grants(scope) => return next.run(request).await,
        Some(Ok(Some(_))) => {
            return ApiError::new(ErrorCode::Forbidden, format!("this route needs the `{}` scope", scope.as_str()))
                .into_response();
        }
        Some(Err(AuthFailure::Malformed)) => "the Authorization header must be `Bearer <token>`",
        Some(Err(AuthFailure::Invalid)) => "the token is invalid, expired or revoked",
        Some(Ok(None)) | None => "a bearer token is required",
    };
    // Failed authentication spends the address's failure budget first.
    if let Some(security) = security
        && let Some(wait) = security.wait_time(security.failures.check_key(&client_key(request.extensions())))
    {
        return Security::too_many(wait, "too many failed authentication attempts; retry later");
    }
    ApiError::new(ErrorCode::Unauthorized, why).into_response()
}

/// Name of the bearer security scheme in the OpenAPI document.
pub const SECURITY_SCHEME: &str = "bearer";

/// Registers a route that needs `scope`: the handlers refuse callers below
/// it, and the OpenAPI operations say so.
pub fn scoped<S>(scope: Scope, (schemas, mut paths, router): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            let ext = ExtensionsBuilder::new().add("x-required-scope", scope.as_str()).build();
            match &mut op.extensions {
                Some(existing) => existing.merge(ext),
                None => op.extensions = Some(ext),
            }
            op.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, [scope.as_str()])]);
        }
    }
    let router =
        router.route_layer(axum::middleware::from_fn(move |req: Request, next: Next| require(scope, req, next)));
    (schemas, paths, router)
}

/// Registers a route anyone may call (health, version).
pub fn public<S>(route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    route
}

/// One of a token's WebSocket connections; frees its place when dropped.
pub struct WsSlot {
    security: Arc<Security>,
    token: Option<TokenId>,
}

impl<S: Send + Sync> FromRequestParts<S> for WsSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let security = parts
            .extensions
            .get::<Caller>()
            .and_then(|c| c.1.clone())
            .ok_or_else(|| ApiError::internal("the security layer did not run"))?;
        let token = parts.extensions.get::<Caller>().and_then(|c| c.principal()).and_then(|p| p.token_id.clone());
        if let Some(id) = &token {
            let mut counts = security.ws.lock().unwrap_or_else(PoisonError::into_inner);
            let n = counts.entry(id.clone()).or_insert(0);
            if *n >= security.max_ws_per_token {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!("this token already holds {} WebSocket connections", security.max_ws_per_token),
                ));
            }
            *n += 1;
        }
        Ok(Self { security, token })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        if let Some(id) = &self.token {
            let mut counts = self.security.ws.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = counts.get_mut(id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(id);
                }
            }
        }
    }
}

/// Lets every caller act as a local administrator. For in-process
/// benchmarks and tests of the layers above authentication only: the
/// application never installs it.
#[derive(Debug, Clone)]
pub struct OpenAccess(Arc<Principal>);

impl Default for OpenAccess {
    fn default() -> Self {
        Self(Arc::new(Principal { name: "local".to_owned(), scope: Scope::Admin, token_id: None }))
    }
}

impl OpenAccess {
    /// The local administrator.
    pub fn authenticate_any(&self) -> Result<Option<Arc<Principal>>, AuthFailure> {
        Ok(Some(Arc::clone(&self.0)))
    }
}

impl Authenticator for OpenAccess {
    fn authenticate(&self, _parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
        Ok(Some(Arc::clone(&self.0)))
    }
}
