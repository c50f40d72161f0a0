//! Authentication, authorization and abuse limits: the layer every route
//! passes through.
//!
//! - [`Security::admit`] (called by the edge, `api::edge`, for every
//!   request) asks the [`Authenticator`] who is calling, applies the
//!   per-token (or, unauthenticated, per-address) rate limit, checks the
//!   route's [`Need`] and returns the [`Caller`] stored in the request.
//! - [`scoped`] registers a route with the [`Scope`] it needs, declared once
//!   beside the route: the OpenAPI operation carries the bearer security
//!   requirement and `x-required-scope`, and the edge enforces exactly what
//!   the document says. [`public`] registers a route that needs nobody.
//! - Failed authentication is counted per client address and answered 429
//!   once `auth.max_failures_per_minute` is spent, before the general budget.
//! - [`WsSlot`] caps WebSocket connections per token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
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
#[derive(Debug, Clone)]
pub struct Principal {
    /// Name for logs and the audit log (never a secret).
    pub name: String,
    /// Largest scope granted.
    pub scope: Scope,
    /// The token, when the caller presented one.
    pub token_id: Option<TokenId>,
    /// The token's request budget, when the authenticator keeps one per
    /// token (otherwise the layer keeps it in a map keyed by token id).
    pub budget: Option<Arc<Budget>>,
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.scope, &self.token_id) == (&other.name, other.scope, &other.token_id)
    }
}

impl Eq for Principal {}

impl Principal {
    /// A principal without a budget of its own.
    pub fn new(name: impl Into<String>, scope: Scope, token_id: Option<TokenId>) -> Self {
        Self { name: name.into(), scope, token_id, budget: None }
    }

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

/// The outcome of authentication, stored in every request's extensions;
/// on a WebSocket upgrade also the layer that decided it (for [`WsSlot`]'s
/// per-token connection cap), `None` otherwise.
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
    /// Budget of one request, and the burst, for [`Budget`]s (nanoseconds).
    emission_ns: u64,
    tolerance_ns: u64,
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
        let emission_ns = 1_000_000_000 / u64::from(limits.per_second.max(1));
        Self {
            authenticator,
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(limits.burst.max(1))),
            audit: None,
            requests,
            failures,
            ws: Mutex::new(HashMap::new()),
            max_ws_per_token: limits.max_ws_per_token.max(1),
        }
    }

    /// Where mutating requests are recorded, if anywhere.
    pub fn audit(&self) -> Option<&AuditSink> {
        self.audit.as_ref()
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
}

#[cold]
#[inline(never)]
fn too_many(wait: Duration, detail: &str) -> Response {
    let mut response = ApiError::new(ErrorCode::RateLimited, detail).into_response();
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// What a route needs of its caller, read from the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone (health, version, the docs).
    Public,
    /// A token with this scope or a larger one.
    Scope(Scope),
}

impl Security {
    /// Decides one request: who calls (stored in the returned [`Caller`]),
    /// whether their budget allows it (429 with `Retry-After` otherwise),
    /// and whether they may call a route that needs `need` (401, 403, or
    /// 429 once the address has spent its failed-authentication budget).
    /// `now` is when the request arrived.
    pub fn admit(
        self: &Arc<Self>,
        parts: &Parts,
        peer: Option<IpAddr>,
        need: Need,
        now: quanta::Instant,
    ) -> Result<Caller, Box<Refusal>> {
        let who = self.authenticator.authenticate(parts);
        let key = |peer: Option<IpAddr>| peer.map_or(Key::Unknown, Key::Addr);
        let spent = match &who {
            Ok(Some(p)) => match (&p.budget, &p.token_id) {
                (Some(budget), Some(_)) => budget.take(monotonic_ns(now), self.emission_ns, self.tolerance_ns),
                (None, Some(id)) => self.spend_keyed(Key::Token(id.clone())),
                (_, None) => self.spend_keyed(key(peer)),
            },
            _ => self.spend_keyed(key(peer)),
        };
        if let Some(wait) = spent {
            return Err(Box::new(Refusal {
                response: too_many(wait, "request rate limit reached; retry later"),
                caller: None,
            }));
        }
        let why = match (&who, need) {
            (_, Need::Public) => None,
            (Ok(Some(p)), Need::Scope(scope)) if p.scope.grants(scope) => None,
            (Ok(Some(_)), Need::Scope(scope)) => {
                return Err(Box::new(Refusal { response: forbidden(scope), caller: Some(Caller(who, None)) }));
            }
            (Err(AuthFailure::Malformed), _) => Some("the Authorization header must be `Bearer <token>`"),
            (Err(AuthFailure::Invalid), _) => Some("the token is invalid, expired or revoked"),
            (Ok(None), _) => Some("a bearer token is required"),
        };
        // The edge adds the layer itself for WebSocket upgrades (their
        // connection cap), see [`Caller`].
        let caller = Caller(who, None);
        let Some(why) = why else { return Ok(caller) };
        // Failed authentication spends the address's failure budget first.
        if let Some(wait) = self.wait_time(self.failures.check_key(&key(peer))) {
            let response = too_many(wait, "too many failed authentication attempts; retry later");
            return Err(Box::new(Refusal { response, caller: None }));
        }
        Err(Box::new(Refusal { response: unauthorized(why), caller: Some(caller) }))
    }

    /// Spends one request of `key`'s budget in the keyed limiter (callers
    /// without a token's own budget: addresses, and tokens without one).
    #[inline(never)]
    fn spend_keyed(&self, key: Key) -> Option<Duration> {
        self.wait_time(self.requests.check_key(&key))
    }
}

#[cold]
#[inline(never)]
fn forbidden(scope: Scope) -> Response {
    ApiError::new(ErrorCode::Forbidden, format!("this route needs the `{}` scope", scope.as_str())).into_response()
}

#[cold]
#[inline(never)]
fn unauthorized(why: &str) -> Response {
    ApiError::new(ErrorCode::Unauthorized, why).into_response()
}

/// A request the security layer refused.
pub struct Refusal {
    /// The answer (401, 403 or 429 problem+json).
    pub response: Response,
    /// Who was refused, for the audit log (absent for rate-limit refusals,
    /// which are never audited: a flood must not fill the log).
    pub caller: Option<Caller>,
}

/// The value of header `name`. Requests carry few headers: for them a scan
/// comparing names (a standard name against another is one byte compare)
/// is cheaper than hashing `name` for a lookup, which is what the edge pays
/// on every request.
pub(crate) fn header<'a>(headers: &'a axum::http::HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() > 16 {
        return headers.get(name);
    }
    headers.iter().find_map(|(n, value)| (n == name).then_some(value))
}

/// A token's request budget: the generic cell rate algorithm on one atomic
/// (the theoretical arrival time, in nanoseconds of [`monotonic_ns`]), so
/// the per-token limit costs a load and a compare-and-swap, not a map lookup.
#[derive(Debug, Default)]
pub struct Budget(AtomicU64);

impl Budget {
    /// Spends one request; `Some(wait)` when the budget is empty.
    fn take(&self, now: u64, emission_ns: u64, tolerance_ns: u64) -> Option<Duration> {
        let mut tat = self.0.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(emission_ns);
            let ahead = next - now;
            if ahead > tolerance_ns {
                return Some(Duration::from_nanos(ahead - tolerance_ns));
            }
            match self.0.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return None,
                Err(current) => tat = current,
            }
        }
    }
}

/// `at` in nanoseconds since the first call in this process.
fn monotonic_ns(at: quanta::Instant) -> u64 {
    static BASE: OnceLock<quanta::Instant> = OnceLock::new();
    let base = *BASE.get_or_init(quanta::Instant::now);
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// Name of the bearer security scheme in the OpenAPI document.
pub const SECURITY_SCHEME: &str = "bearer";

/// Registers a route that needs `scope`: its OpenAPI operations carry the
/// bearer security requirement and `x-required-scope`, and the edge (which
/// builds its route table from that document) refuses callers below it.
pub fn scoped<S>(scope: Scope, (schemas, mut paths, router): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in paths.paths.values_mut() {
        for op in operations(item) {
            let ext = ExtensionsBuilder::new().add("x-required-scope", scope.as_str()).build();
            match &mut op.extensions {
                Some(existing) => existing.merge(ext),
                None => op.extensions = Some(ext),
            }
            op.security = Some(vec![SecurityRequirement::new(SECURITY_SCHEME, [scope.as_str()])]);
        }
    }
    (schemas, paths, router)
}

/// Registers a route anyone may call (health, version): its OpenAPI
/// operations carry an empty security requirement (`security: []`), which
/// the edge reads as "public". An operation with neither this nor a scope
/// makes the application refuse to build.
pub fn public<S>((schemas, mut paths, router): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    for item in paths.paths.values_mut() {
        for op in operations(item) {
            op.security = Some(Vec::new());
        }
    }
    (schemas, paths, router)
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// One of a token's WebSocket connections; frees its place when dropped.
pub struct WsSlot {
    security: Option<Arc<Security>>,
    token: Option<TokenId>,
}

impl<S: Send + Sync> FromRequestParts<S> for WsSlot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let caller =
            parts.extensions.get::<Caller>().ok_or_else(|| ApiError::internal("the security layer did not run"))?;
        // The layer rides along only on upgrades; anything else is refused
        // by the upgrade extractor and holds no connection.
        let Some(security) = caller.1.clone() else { return Ok(Self { security: None, token: None }) };
        let token = caller.principal().and_then(|p| p.token_id.clone());
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
        Ok(Self { security: Some(security), token })
    }
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        if let (Some(id), Some(security)) = (&self.token, &self.security) {
            let mut counts = security.ws.lock().unwrap_or_else(PoisonError::into_inner);
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
        Self(Arc::new(Principal::new("local", Scope::Admin, None)))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_budget_allows_its_burst_then_refuses_until_time_refills_it() {
        let budget = Budget::default();
        // 10 per second, burst of 3.
        let (emission, tolerance) = (100_000_000, 300_000_000);
        let t0 = 1_000_000_000;
        for i in 0..3 {
            assert_eq!(budget.take(t0 + i, emission, tolerance), None);
        }
        let wait = budget.take(t0 + 10_000_000, emission, tolerance).unwrap();
        assert!(wait > Duration::from_millis(80) && wait <= Duration::from_millis(100), "{wait:?}");
        let later = t0 + 110_000_000;
        assert_eq!(budget.take(later, emission, tolerance), None);
        assert!(budget.take(later, emission, tolerance).is_some());
    }

    #[test]
    fn concurrent_takes_never_spend_more_than_the_budget() {
        let budget = Arc::new(Budget::default());
        // One per hour, burst of 100: exactly 100 of 8 x 50 attempts pass.
        let (emission, tolerance) = (3_600_000_000_000, 360_000_000_000_000);
        let passed: usize = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| budget.take(monotonic_ns(quanta::Instant::now()), emission, tolerance).is_none())
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(passed, 100);
    }

    struct Fixed(Result<Option<Arc<Principal>>, AuthFailure>);

    impl Authenticator for Fixed {
        fn authenticate(&self, _parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
            self.0.clone()
        }
    }

    fn parts() -> Parts {
        axum::http::Request::get("/x").body(()).unwrap().into_parts().0
    }

    fn security(who: Result<Option<Arc<Principal>>, AuthFailure>, per_second: u32, burst: u32) -> Arc<Security> {
        let limits = Limits { per_second, burst, max_failures_per_minute: 2, max_ws_per_token: 1 };
        Arc::new(Security::new(Arc::new(Fixed(who)), limits))
    }

    #[test]
    fn a_token_with_a_budget_of_its_own_is_limited_by_it() {
        let principal =
            Principal { budget: Some(Arc::default()), ..Principal::new("t", Scope::Read, Some(TokenId::new("t"))) };
        let s = security(Ok(Some(Arc::new(principal))), 1, 2);
        let need = Need::Scope(Scope::Read);
        assert!(s.admit(&parts(), None, need, quanta::Instant::now()).is_ok());
        assert!(s.admit(&parts(), None, need, quanta::Instant::now()).is_ok());
        let refused = s.admit(&parts(), None, need, quanta::Instant::now()).err().unwrap();
        assert_eq!(refused.response.status(), 429);
        assert_eq!(refused.response.headers()[header::RETRY_AFTER], "1");
        assert!(refused.caller.is_none(), "rate-limit refusals are not audited");
    }

    #[test]
    fn scope_and_credential_failures_are_refused_and_then_throttled_per_address() {
        let reader = Arc::new(Principal::new("r", Scope::Read, Some(TokenId::new("r"))));
        let s = security(Ok(Some(reader)), 1_000, 1_000);
        let refused = s.admit(&parts(), None, Need::Scope(Scope::Admin), quanta::Instant::now()).err().unwrap();
        assert_eq!(refused.response.status(), 403);
        assert!(refused.caller.is_some(), "a denied request is audited");
        assert!(s.admit(&parts(), None, Need::Public, quanta::Instant::now()).is_ok());

        let s = security(Err(AuthFailure::Invalid), 1_000, 1_000);
        let addr = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..2 {
            assert_eq!(
                s.admit(&parts(), addr, Need::Scope(Scope::Read), quanta::Instant::now())
                    .err()
                    .unwrap()
                    .response
                    .status(),
                401
            );
        }
        assert_eq!(
            s.admit(&parts(), addr, Need::Scope(Scope::Read), quanta::Instant::now()).err().unwrap().response.status(),
            429
        );
        // Another address has its own failure budget; public routes stay open.
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(
            s.admit(&parts(), other, Need::Scope(Scope::Read), quanta::Instant::now()).err().unwrap().response.status(),
            401
        );
        assert!(s.admit(&parts(), addr, Need::Public, quanta::Instant::now()).is_ok());
    }
}
