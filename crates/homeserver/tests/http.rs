//! HTTP tests of the router with mock ports: every error path, no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use homeserver::auth::{AuthFailure, Authenticator, Limits, OpenAccess, Principal, Scope, Security};
use homeserver::config::Settings;
use homeserver::live::LiveHub;
use homeserver::state::{AppState, Probe};
use homeserver::tokens::TokenAdmin;
use homeserver_domain::{
    HistoryService, HostInfo, MockAuditRepository, MockClock, MockSnapshotRepository, MockTokenRepository,
    RepositoryError, RetentionPolicy, SamplerHealth, Snapshot, SnapshotPublisher, TokenId, TokenService, UnixMillis,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

const NOW: i64 = 1_800_000_000_000;

struct FixedProbe(Result<(), String>);

#[async_trait]
impl Probe for FixedProbe {
    async fn check(&self) -> Result<(), String> {
        self.0.clone()
    }
}

fn clock() -> Arc<MockClock> {
    let mut c = MockClock::new();
    c.expect_now().return_const(UnixMillis(NOW));
    Arc::new(c)
}

/// `Bearer read|operate|admin` is a principal with that scope; anything else is invalid.
struct ScopeNamedTokens;

impl Authenticator for ScopeNamedTokens {
    fn authenticate(&self, parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
        let Some(h) = parts.headers.get("authorization") else { return Ok(None) };
        let token = h.to_str().unwrap().strip_prefix("Bearer ").ok_or(AuthFailure::Malformed)?;
        let scope = token.parse::<Scope>().map_err(|_| AuthFailure::Invalid)?;
        Ok(Some(Arc::new(Principal::new(token, scope, Some(TokenId::new(token))))))
    }
}

fn generous() -> Limits {
    Limits { per_second: 10_000, burst: 10_000, max_failures_per_minute: 10_000, max_ws_per_token: 10 }
}

struct Harness {
    hub: Arc<LiveHub>,
    repo: Option<MockSnapshotRepository>,
    db: Result<(), String>,
    sampler: Arc<SamplerHealth>,
    tokens: MockTokenRepository,
    audit: MockAuditRepository,
    authenticator: Arc<dyn Authenticator>,
    limits: Limits,
    body_limit: Option<usize>,
    containers: Option<Arc<homeserver_domain::ContainerService>>,
    ops: homeserver_domain::MockOperationRepository,
    /// The device registry; `None`: an empty one.
    device_repo: Option<homeserver_domain::MockDeviceRepository>,
    /// The profile store; `None`: only an empty `default` profile.
    profile_repo: Option<homeserver_domain::MockProfileRepository>,
}

fn empty_registry() -> homeserver_domain::MockDeviceRepository {
    let mut repo = homeserver_domain::MockDeviceRepository::new();
    repo.expect_list().returning(|| Ok(vec![]));
    repo
}

fn default_profile_only() -> homeserver_domain::MockProfileRepository {
    let mut repo = homeserver_domain::MockProfileRepository::new();
    repo.expect_list().returning(|| {
        Ok(vec![homeserver_domain::Profile {
            name: homeserver_domain::ProfileName::parse("default").unwrap(),
            description: String::new(),
            config: homeserver_domain::ConfigOverlay::default(),
            is_default: true,
            created_at: UnixMillis(NOW),
            updated_at: UnixMillis(NOW),
            revision: 1,
        }])
    });
    repo.expect_usage().returning(|| Ok(Default::default()));
    repo
}

impl Harness {
    fn new() -> Self {
        let mut audit = MockAuditRepository::new();
        audit.expect_record().returning(|_| Ok(()));
        Self {
            hub: Arc::new(LiveHub::new(4)),
            repo: Some(MockSnapshotRepository::new()),
            db: Ok(()),
            sampler: Arc::default(),
            tokens: MockTokenRepository::new(),
            audit,
            authenticator: Arc::new(OpenAccess::default()),
            limits: generous(),
            body_limit: None,
            containers: None,
            ops: homeserver_domain::MockOperationRepository::new(),
            device_repo: None,
            profile_repo: None,
        }
    }

    fn with_scoped_tokens() -> Self {
        Self { authenticator: Arc::new(ScopeNamedTokens), ..Self::new() }
    }

    fn router(self) -> homeserver::api::App {
        let mut settings = Settings::defaults().unwrap();
        if let Some(limit) = self.body_limit {
            settings.server.max_body_bytes = limit;
        }
        let history =
            self.repo.map(|r| Arc::new(HistoryService::new(Arc::new(r), clock(), RetentionPolicy::DEFAULT, 1_000)));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let audit: Arc<dyn homeserver_domain::AuditRepository> = Arc::new(self.audit);
        let devices = Arc::new(homeserver_domain::DeviceService::new(
            Arc::new(homeserver_domain::MockDeviceInventory::new()),
            Arc::new(self.device_repo.unwrap_or_else(empty_registry)),
            clock(),
        ));
        let state = AppState {
            hub: self.hub,
            history,
            host_info: Arc::new(HostInfo { hostname: "box".into(), ..Default::default() }),
            database: Arc::new(FixedProbe(self.db)),
            sampler: self.sampler,
            writer: None,
            settings: Arc::new(settings),
            clock: clock(),
            tokens: Arc::new(TokenAdmin::new(TokenService::new(Arc::new(self.tokens), clock()), None)),
            audit: audit.clone(),
            containers: self.containers,
            devices: devices.clone(),
            profiles: Arc::new(homeserver_domain::ProfileService::new(
                Arc::new(self.profile_repo.unwrap_or_else(default_profile_only)),
                devices,
                clock(),
                4,
            )),
            operations: homeserver::operations::OperationRunner::new(Arc::new(self.ops), clock(), 1),
            shutdown,
        };
        let security = Security::new(self.authenticator, self.limits)
            .with_audit(homeserver::auth::AuditSink { repository: audit, clock: clock() });
        homeserver::api::router(state, Arc::new(security)).unwrap()
    }
}

async fn call(router: homeserver::api::App, uri: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = router.oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

fn assert_problem(status: StatusCode, headers: &axum::http::HeaderMap, body: &serde_json::Value, code: &str) {
    assert_eq!(headers["content-type"], "application/problem+json", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["request_id"].as_str(), headers.get("x-request-id").map(|h| h.to_str().unwrap()));
}

#[tokio::test]
async fn system_is_503_until_the_first_snapshot_then_200() {
    let h = Harness::new();
    let hub = h.hub.clone();
    let router = h.router();
    let (status, headers, body) = call(router.clone(), "/api/v1/system").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_problem(status, &headers, &body, "SERVICE_UNAVAILABLE");

    let mut s = Snapshot { timestamp: UnixMillis(NOW), ..Default::default() };
    s.memory.total_bytes = 4096;
    hub.publish(Arc::new(s));
    let (status, headers, body) = call(router, "/api/v1/system").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["memory"]["total_bytes"], 4096);
}

#[tokio::test]
async fn a_store_that_is_busy_is_503_and_a_broken_one_500_without_leaking() {
    let mut h = Harness::new();
    let mut repo = MockSnapshotRepository::new();
    repo.expect_query().times(1).returning(|_, _| Err(RepositoryError::Unavailable("database is locked".into())));
    h.repo = Some(repo);
    let (status, headers, body) = call(h.router(), "/api/v1/system/history?metrics=cpu.load1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_problem(status, &headers, &body, "SERVICE_UNAVAILABLE");

    let mut h = Harness::new();
    let mut repo = MockSnapshotRepository::new();
    repo.expect_query()
        .times(1)
        .returning(|_, _| Err(RepositoryError::internal("secret path /var/lib/x: disk I/O error")));
    h.repo = Some(repo);
    let (status, headers, body) = call(h.router(), "/api/v1/system/history?metrics=cpu.load1").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_problem(status, &headers, &body, "INTERNAL");
    assert!(!body.to_string().contains("secret"), "5xx must not leak: {body}");
}

#[tokio::test]
async fn history_validation_never_reaches_the_store() {
    for (uri, status, field) in [
        ("/api/v1/system/history", StatusCode::UNPROCESSABLE_ENTITY, "metrics"),
        ("/api/v1/system/history?metrics=cpu.load1&points=0", StatusCode::UNPROCESSABLE_ENTITY, "points"),
        ("/api/v1/system/history?metrics=cpu.load1&points=-3", StatusCode::BAD_REQUEST, "points"),
        ("/api/v1/system/history?metrics=cpu.load1&to=soon", StatusCode::BAD_REQUEST, "to"),
        ("/api/v1/system/history?metrics=cpu.load1,x.y", StatusCode::UNPROCESSABLE_ENTITY, "metrics"),
    ] {
        let mut h = Harness::new();
        let mut repo = MockSnapshotRepository::new();
        repo.expect_query().never();
        h.repo = Some(repo);
        let (got, headers, body) = call(h.router(), uri).await;
        assert_eq!(got, status, "{uri}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{uri}");
        assert_problem(got, &headers, &body, body["code"].as_str().unwrap());
    }
}

#[tokio::test]
async fn history_answers_with_the_planned_step_and_series() {
    let mut h = Harness::new();
    let mut repo = MockSnapshotRepository::new();
    repo.expect_query().times(1).returning(|plan, metrics| {
        Ok(metrics
            .iter()
            .map(|m| homeserver_domain::Series {
                metric: *m,
                points: vec![homeserver_domain::Point { t: plan.from, avg: 2.0, min: 1.0, max: 3.0 }],
            })
            .collect())
    });
    h.repo = Some(repo);
    let from = NOW - 3_600_000;
    let (status, _, body) =
        call(h.router(), &format!("/api/v1/system/history?metrics=cpu.usage_percent&from={from}&to={NOW}&points=300"))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["step_ms"], 12_000);
    assert_eq!(body["series"][0]["metric"], "cpu.usage_percent");
    assert_eq!(body["series"][0]["unit"], "percent");
    assert_eq!(body["series"][0]["points"][0], serde_json::json!([from, 2.0, 1.0, 3.0]));
}

#[tokio::test]
async fn readiness_is_503_when_the_database_fails_or_the_sampler_stalls() {
    let mut h = Harness::new();
    h.db = Err("unable to open database file".into());
    let (status, _, body) = call(h.router(), "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"]["status"], "unavailable");

    // A sampler that has published before but failed ever since.
    let h = Harness::new();
    let hub = h.hub.clone();
    hub.publish(Arc::new(Snapshot::default()));
    let (status, _, body) = call(h.router(), "/health/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["sampler"]["status"], "unavailable");
}

#[tokio::test]
async fn wrong_methods_unknown_paths_and_non_upgrades_are_problems() {
    let router = Harness::new().router();
    let r = router.clone().oneshot(Request::post("/api/v1/system").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let (status, headers, body) = call(router.clone(), "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(status, &headers, &body, "NOT_FOUND");
    // A plain GET on a WebSocket route is not an upgrade.
    let (status, headers, body) = call(router, "/api/v1/ws").await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(headers["content-type"], "application/problem+json", "{body}");
}

#[tokio::test]
async fn every_documented_operation_declares_its_scope_or_is_public() {
    let doc = serde_json::to_value(homeserver::api::openapi()).unwrap();
    let public = ["/health/live", "/health/ready", "/version"];
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let scope = op.get("x-required-scope").and_then(|s| s.as_str());
            if public.contains(&path.as_str()) {
                assert!(scope.is_none(), "{method} {path} is public");
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path} says it is public");
            } else {
                assert!(matches!(scope, Some("read" | "operate" | "admin")), "{method} {path} lacks a scope");
            }
        }
    }
}

async fn send(
    router: homeserver::api::App,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = router.oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

fn post_json(uri: &str, auth: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("authorization", format!("Bearer {auth}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn token_creation_refuses_bad_bodies_with_the_right_codes() {
    let cases: [(Request<Body>, StatusCode, Option<&str>); 6] = [
        (post_json("/api/v1/tokens", "admin", "{not json"), StatusCode::BAD_REQUEST, None),
        (
            Request::post("/api/v1/tokens")
                .header("authorization", "Bearer admin")
                .header("content-type", "text/plain")
                .body(Body::from(r#"{"name":"x","scopes":["read"]}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
        ),
        (
            post_json("/api/v1/tokens", "admin", r#"{"name":"x","scopes":["root"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("scopes[0]"),
        ),
        (
            post_json("/api/v1/tokens", "admin", r#"{"name":"","scopes":["read"]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("name"),
        ),
        (
            post_json("/api/v1/tokens", "admin", r#"{"name":"x","scopes":["read"],"expires_at":"soon"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("expires_at"),
        ),
        (post_json("/api/v1/tokens", "admin", r#"{"name":"x"}"#), StatusCode::UNPROCESSABLE_ENTITY, None),
    ];
    for (req, want, field) in cases {
        let mut h = Harness::with_scoped_tokens();
        h.tokens.expect_create().never();
        let (status, headers, body) = send(h.router(), req).await;
        assert_eq!(status, want, "{body}");
        assert_problem(status, &headers, &body, body["code"].as_str().unwrap());
        if let Some(field) = field {
            assert_eq!(body["errors"][0]["field"], field, "{body}");
        }
    }
}

#[tokio::test]
async fn token_creation_returns_the_secret_once_and_a_location() {
    let mut h = Harness::with_scoped_tokens();
    h.tokens.expect_create().times(1).returning(|t| {
        assert!(!t.hash.as_str().starts_with("hs_"), "only the hash reaches the store");
        Ok(homeserver_domain::ApiToken {
            id: t.id.clone(),
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: None,
        })
    });
    let (status, headers, body) =
        send(h.router(), post_json("/api/v1/tokens", "admin", r#"{"name":"ci","scopes":["operate"]}"#)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(headers["location"].to_str().unwrap(), format!("/api/v1/tokens/{}", body["id"].as_str().unwrap()));
    assert!(body["token"].as_str().unwrap().starts_with("hs_"));
    assert_eq!(body["scopes"], serde_json::json!(["operate"]));
}

#[tokio::test]
async fn token_store_failures_are_500_and_unknown_revocations_404() {
    let mut h = Harness::with_scoped_tokens();
    h.tokens.expect_create().returning(|_| Err(RepositoryError::internal("disk full at /secret")));
    let (status, _, body) =
        send(h.router(), post_json("/api/v1/tokens", "admin", r#"{"name":"ci","scopes":["read"]}"#)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains("secret"));

    let mut h = Harness::with_scoped_tokens();
    h.tokens.expect_revoke().returning(|_, _| Err(RepositoryError::NotFound));
    let req =
        Request::delete("/api/v1/tokens/nope").header("authorization", "Bearer admin").body(Body::empty()).unwrap();
    let (status, headers, body) = send(h.router(), req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(status, &headers, &body, "NOT_FOUND");
}

#[tokio::test]
async fn scopes_are_enforced_401_then_403() {
    let get = |auth: Option<&str>| {
        let mut b = Request::get("/api/v1/tokens");
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::empty()).unwrap()
    };
    for (auth, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("Bearer bogus"), StatusCode::UNAUTHORIZED),
        (Some("Basic YTpi"), StatusCode::UNAUTHORIZED),
        (Some("Bearer read"), StatusCode::FORBIDDEN),
        (Some("Bearer operate"), StatusCode::FORBIDDEN),
    ] {
        let (status, headers, body) = send(Harness::with_scoped_tokens().router(), get(auth)).await;
        assert_eq!(status, want, "{auth:?}: {body}");
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(headers["www-authenticate"], "Bearer");
        }
    }
    let mut h = Harness::with_scoped_tokens();
    h.tokens.expect_list().returning(|| Ok(vec![]));
    let (status, _, body) = send(h.router(), get(Some("Bearer admin"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"items": [], "total": 0, "page": 1, "per_page": 20}));
    // Public routes need nothing.
    let (status, _, _) =
        send(Harness::with_scoped_tokens().router(), Request::get("/health/live").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let mut h = Harness::with_scoped_tokens();
    h.limits = Limits { per_second: 1, burst: 2, ..generous() };
    let router = h.router();
    let get = || {
        Request::get("/api/v1/system/history/metrics")
            .header("authorization", "Bearer read")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(router.clone(), get()).await.0, StatusCode::OK);
    assert_eq!(send(router.clone(), get()).await.0, StatusCode::OK);
    let (status, headers, body) = send(router.clone(), get()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_problem(status, &headers, &body, "RATE_LIMITED");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // Another token has its own budget.
    let other = Request::get("/api/v1/system/history/metrics")
        .header("authorization", "Bearer admin")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(router, other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn failed_authentication_is_throttled_before_the_general_budget() {
    let mut h = Harness::with_scoped_tokens();
    h.limits = Limits { max_failures_per_minute: 3, ..generous() };
    let router = h.router();
    let bad = || Request::get("/api/v1/system").header("authorization", "Bearer wrong").body(Body::empty()).unwrap();
    for _ in 0..3 {
        assert_eq!(send(router.clone(), bad()).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, _) = send(router.clone(), bad()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    // A good token is not held back by someone else's failures.
    let good = Request::get("/api/v1/system/history/metrics")
        .header("authorization", "Bearer read")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(router, good).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let mut h = Harness::with_scoped_tokens();
    h.body_limit = Some(64);
    h.tokens.expect_create().never();
    let big = format!(r#"{{"name":"{}","scopes":["read"]}}"#, "x".repeat(200));
    let (status, headers, body) = send(h.router(), post_json("/api/v1/tokens", "admin", &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_problem(status, &headers, &body, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn mutating_requests_are_audited_with_actor_and_outcome() {
    let mut h = Harness::with_scoped_tokens();
    let mut audit = MockAuditRepository::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    audit.expect_record().returning(move |r| {
        s2.lock().unwrap().push(r.clone());
        Ok(())
    });
    h.audit = audit;
    h.tokens.expect_revoke().returning(|_, _| Err(RepositoryError::NotFound));
    h.tokens.expect_list().returning(|| Ok(vec![]));
    let router = h.router();
    let del = |auth: &str| {
        Request::delete("/api/v1/tokens/abc?access_token=hs_leak")
            .header("authorization", format!("Bearer {auth}"))
            .body(Body::empty())
            .unwrap()
    };
    send(router.clone(), del("admin")).await;
    send(router.clone(), del("read")).await;
    send(router, Request::get("/api/v1/tokens").header("authorization", "Bearer admin").body(Body::empty()).unwrap())
        .await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "GETs are not audited");
    assert_eq!(seen[0].actor, "admin (admin)");
    assert_eq!(seen[0].action, "DELETE /api/v1/tokens/{id}");
    assert_eq!(seen[0].target, "/api/v1/tokens/abc");
    assert_eq!((seen[0].status, seen[0].outcome), (404, homeserver_domain::AuditOutcome::Failure));
    assert_eq!((seen[1].status, seen[1].outcome), (403, homeserver_domain::AuditOutcome::Denied));
    assert!(seen.iter().all(|r| !format!("{r:?}").contains("hs_leak")), "no query string in the audit log");
}

#[tokio::test]
async fn api_responses_carry_nosniff_and_no_store() {
    let (_, headers, _) =
        send(Harness::new().router(), Request::get("/health/live").body(Body::empty()).unwrap()).await;
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], "no-store");
}

mod containers {
    use super::*;
    use homeserver_domain::{
        ContainerConfig, ContainerRecord, ContainerService, ContainerState, MockContainerRepository,
        MockContainerRuntime, RuntimeContainer, RuntimeError, RuntimeKind,
    };

    fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            runtime: RuntimeKind::Docker,
            runtime_id: format!("d-{id}"),
            name: name.into(),
            image: Some("img".into()),
            template: None,
            managed: true,
            profiles: vec![],
            config: ContainerConfig::default(),
            created_at: UnixMillis(1),
            updated_at: UnixMillis(1),
        }
    }

    fn live(state: ContainerState) -> RuntimeContainer {
        RuntimeContainer {
            runtime_id: "d-a".into(),
            name: "web".into(),
            image: Some("img".into()),
            state,
            config: ContainerConfig::default(),
            created_at: None,
            started_at: None,
        }
    }

    fn service(rt: MockContainerRuntime, repo: MockContainerRepository) -> Arc<ContainerService> {
        let ids: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| "new-id".to_owned());
        Arc::new(ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids, 2))
    }

    fn docker() -> MockContainerRuntime {
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt
    }

    fn harness(rt: MockContainerRuntime, repo: MockContainerRepository) -> Harness {
        let mut h = Harness::with_scoped_tokens();
        h.containers = Some(service(rt, repo));
        h
    }

    #[tokio::test]
    async fn create_refuses_bad_fields_with_422_naming_them_and_never_calls_the_engine() {
        let mut rt = docker();
        rt.expect_create().never();
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![]));
        let body =
            r#"{"name":"-bad","runtime":"docker","image":"img","config":{"memory_limit_bytes":1024,"cpu_limit":64}}"#;
        let (status, headers, body) =
            send(harness(rt, repo).router(), post_json("/api/v1/containers", "operate", body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_problem(status, &headers, &body, "VALIDATION_FAILED");
        let fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["name"], "the name fails first: {body}");
        let body2 =
            r#"{"name":"ok","runtime":"docker","image":"img","config":{"memory_limit_bytes":1024,"cpu_limit":64}}"#;
        let mut rt = docker();
        rt.expect_create().never();
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![]));
        let (status, _, body) =
            send(harness(rt, repo).router(), post_json("/api/v1/containers", "operate", body2)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["config.cpu_limit", "config.memory_limit_bytes"]);
    }

    #[tokio::test]
    async fn a_taken_name_is_409_and_an_unknown_runtime_422() {
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![record("a", "web")]));
        let (status, headers, body) = send(
            harness(docker(), repo).router(),
            post_json("/api/v1/containers", "operate", r#"{"name":"web","runtime":"docker","image":"img"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_problem(status, &headers, &body, "CONFLICT");
        let (status, _, body) = send(
            harness(docker(), MockContainerRepository::new()).router(),
            post_json("/api/v1/containers", "operate", r#"{"name":"web","runtime":"podman","image":"img"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "runtime");
    }

    #[tokio::test]
    async fn create_is_202_with_a_location_to_the_operation() {
        let mut repo = MockContainerRepository::new();
        repo.expect_list().returning(|| Ok(vec![]));
        repo.expect_insert().returning(|_| Ok(()));
        let mut rt = docker();
        rt.expect_ping().returning(|| Ok(()));
        rt.expect_create().returning(|_| Ok("d-new".into()));
        let mut h = harness(rt, repo);
        h.ops.expect_insert().returning(|_| Ok(()));
        h.ops.expect_get().returning(|_| Ok(None));
        h.ops.expect_update().returning(|_| Ok(()));
        let (status, headers, body) = send(
            h.router(),
            post_json("/api/v1/containers", "operate", r#"{"name":"web","runtime":"docker","image":"img"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            headers["location"].to_str().unwrap(),
            format!("/api/v1/operations/{}", body["id"].as_str().unwrap())
        );
        assert_eq!(body["kind"], "container.create");
        assert_eq!(body["status"], "pending");
    }

    #[tokio::test]
    async fn deleting_a_running_container_without_force_is_409_container_running() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        let mut rt = docker();
        rt.expect_inspect().returning(|_| Ok(live(ContainerState::Running)));
        rt.expect_remove().never();
        let req = Request::delete("/api/v1/containers/a")
            .header("authorization", "Bearer operate")
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = send(harness(rt, repo).router(), req).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_problem(status, &headers, &body, "CONTAINER_RUNNING");
    }

    #[tokio::test]
    async fn exec_in_a_stopped_container_is_409_and_unknown_ids_404() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|id| Ok((id == "a").then(|| record("a", "web"))));
        let mut rt = docker();
        rt.expect_inspect().returning(|_| Ok(live(ContainerState::Stopped)));
        rt.expect_exec().never();
        let router = harness(rt, repo).router();
        let (status, _, body) =
            send(router.clone(), post_json("/api/v1/containers/a/exec", "operate", r#"{"command":["true"]}"#)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        let (status, _, _) =
            send(router.clone(), post_json("/api/v1/containers/zz/exec", "operate", r#"{"command":["true"]}"#)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, body) =
            send(router, post_json("/api/v1/containers/a/exec", "operate", r#"{"command":["true"],"timeout_secs":0}"#))
                .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "timeout_secs");
    }

    #[tokio::test]
    async fn a_down_engine_is_503_runtime_unavailable() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        let mut rt = docker();
        rt.expect_inspect()
            .returning(|_| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "no socket".into() }));
        let req =
            Request::get("/api/v1/containers/a").header("authorization", "Bearer read").body(Body::empty()).unwrap();
        let (status, headers, body) = send(harness(rt, repo).router(), req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_problem(status, &headers, &body, "RUNTIME_UNAVAILABLE");
    }

    /// Docker down: what would queue an operation is refused at once with
    /// 503 (no operation is made), the list of Docker alone is 503, the
    /// whole list still answers with the container `unknown`.
    #[tokio::test]
    async fn a_down_engine_refuses_operations_before_queueing_them_and_the_whole_list_carries_on() {
        let down = || RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "no socket".into() };
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        repo.expect_list().returning(|| Ok(vec![record("a", "web")]));
        repo.expect_delete().never();
        let mut rt = docker();
        rt.expect_ping().returning(move || Err(down()));
        rt.expect_list().returning(move || Err(down()));
        rt.expect_create().never();
        rt.expect_start().never();
        rt.expect_remove().never();
        let mut h = harness(rt, repo);
        h.ops.expect_insert().never();
        let router = h.router();
        let get = |uri: &str| Request::get(uri).header("authorization", "Bearer read").body(Body::empty()).unwrap();
        for req in [
            post_json("/api/v1/containers", "operate", r#"{"name":"new","runtime":"docker","image":"img"}"#),
            post_json("/api/v1/containers/a/start", "operate", "{}"),
            post_json("/api/v1/containers/a/stop", "operate", "{}"),
            Request::delete("/api/v1/containers/a?force=true")
                .header("authorization", "Bearer operate")
                .body(Body::empty())
                .unwrap(),
            get("/api/v1/containers?runtime=docker"),
        ] {
            let what = format!("{} {}", req.method(), req.uri());
            let (status, headers, body) = send(router.clone(), req).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
            assert_problem(status, &headers, &body, "RUNTIME_UNAVAILABLE");
        }
        let (status, _, body) = send(router.clone(), get("/api/v1/containers")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!((body["total"].as_u64(), body["items"][0]["state"].as_str()), (Some(1), Some("unknown")));
        // A runtime that is not configured at all is unavailable too.
        let (status, _, _) = send(router, get("/api/v1/containers?runtime=lxc")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn bulk_and_action_inputs_are_validated() {
        let router = harness(docker(), MockContainerRepository::new()).router();
        let (status, _, body) = send(
            router.clone(),
            post_json("/api/v1/containers/bulk", "operate", r#"{"action":"explode","ids":[],"max_parallel":99}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["action", "ids", "max_parallel"]);
        let (status, _, _) = send(router.clone(), post_json("/api/v1/containers/a/explode", "operate", "{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, _) =
            send(router, post_json("/api/v1/containers/a/stop?timeout_secs=9999", "operate", "{}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn read_tokens_cannot_change_containers() {
        let (status, _, _) = send(
            harness(docker(), MockContainerRepository::new()).router(),
            post_json("/api/v1/containers", "read", r#"{"name":"web","runtime":"docker","image":"img"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn unknown_operations_are_404_and_bad_filters_422() {
        let mut h = Harness::with_scoped_tokens();
        h.ops.expect_get().returning(|_| Ok(None));
        let router = h.router();
        let get = |uri: &str| Request::get(uri).header("authorization", "Bearer read").body(Body::empty()).unwrap();
        assert_eq!(send(router.clone(), get("/api/v1/operations/nope")).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            send(router.clone(), get("/api/v1/operations/nope/wait?timeout_secs=1")).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(router.clone(), get("/api/v1/operations?status=sleeping")).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let del = Request::delete("/api/v1/operations/nope")
            .header("authorization", "Bearer operate")
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(router, del).await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn logs_and_stats_answer_404_400_and_503_as_documented() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|id| Ok((id == "a").then(|| record("a", "web"))));
        let mut rt = docker();
        rt.expect_inspect()
            .returning(|_| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "down".into() }));
        rt.expect_logs().never();
        let router = harness(rt, repo).router();
        let get = |uri: &str| Request::get(uri).header("authorization", "Bearer read").body(Body::empty()).unwrap();
        let (status, _, body) = send(router.clone(), get("/api/v1/containers/zz/logs")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _, body) = send(router.clone(), get("/api/v1/containers/a/logs?since=yesterday")).await;
        assert_eq!((status, body["errors"][0]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("since")));
        let (status, _, _) = send(router.clone(), get("/api/v1/containers/zz/stats")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, headers, body) = send(router, get("/api/v1/containers/a/stats")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_problem(status, &headers, &body, "RUNTIME_UNAVAILABLE");
    }

    fn patch_req(uri: &str, auth: &str, if_match: Option<&str>, body: &str) -> Request<Body> {
        let mut req = Request::patch(uri).header("authorization", format!("Bearer {auth}"));
        req = req.header("content-type", "application/json");
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        req.body(Body::from(body.to_owned())).unwrap()
    }

    fn running_docker() -> MockContainerRuntime {
        let mut rt = docker();
        rt.expect_inspect().returning(|_| Ok(live(ContainerState::Running)));
        rt.expect_ping().returning(|| Ok(()));
        rt
    }

    #[tokio::test]
    async fn patch_changes_limits_and_answers_with_a_new_etag() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|id| Ok((id == "a").then(|| record("a", "web"))));
        repo.expect_update()
            .withf(|r| r.config.memory_limit_bytes == Some(128 << 20) && r.updated_at == UnixMillis(NOW))
            .times(1)
            .returning(|_| Ok(()));
        let mut rt = running_docker();
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_update()
            .withf(|id, p| id == "d-a" && p.memory_limit_bytes == Some(Some(128 << 20)) && p.pids_limit.is_none())
            .times(1)
            .returning(|_, _| Ok(()));
        let router = harness(rt, repo).router();
        let old_tag = "\"1-running\"";
        let (status, headers, body) = send(
            router,
            patch_req(
                "/api/v1/containers/a",
                "operate",
                Some(old_tag),
                r#"{"config":{"memory_limit_bytes":134217728}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["config"]["memory_limit_bytes"], 128 << 20);
        assert_eq!(headers["etag"], format!("\"{NOW}-running\"").as_str(), "a new ETag");
    }

    #[tokio::test]
    async fn patch_with_a_stale_if_match_is_412_and_changes_nothing() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        repo.expect_update().never();
        let mut rt = running_docker();
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_update().never();
        let (status, headers, body) = send(
            harness(rt, repo).router(),
            patch_req("/api/v1/containers/a", "operate", Some("\"0-stopped\""), r#"{"config":{"pids_limit":5}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
        assert_problem(status, &headers, &body, "PRECONDITION_FAILED");
    }

    #[tokio::test]
    async fn patch_names_every_field_it_cannot_take_with_422() {
        let mut rt = docker();
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_update().never();
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        let router = harness(rt, repo).router();
        let body = r#"{"name":"x","colour":"red","config":{"env":{"A":"b"},"command":["sh"],"memory_limit_bytes":-1,
            "cpu_limit":"lots","restart_policy":"sometimes","labels":{"a":1},"size":3}}"#;
        let (status, headers, body) =
            send(router.clone(), patch_req("/api/v1/containers/a", "operate", None, body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_problem(status, &headers, &body, "VALIDATION_FAILED");
        let mut fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "colour",
                "config.command",
                "config.cpu_limit",
                "config.env",
                "config.labels.a",
                "config.memory_limit_bytes",
                "config.restart_policy",
                "config.size",
                "name"
            ]
        );
        let (status, _, _) = send(router.clone(), patch_req("/api/v1/containers/a", "operate", None, "[1]")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let plain = Request::patch("/api/v1/containers/a")
            .header("authorization", "Bearer operate")
            .header("content-type", "text/plain")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(send(router.clone(), plain).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (status, _, _) = send(router, patch_req("/api/v1/containers/a", "read", None, "{}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "changing limits needs operate");
    }

    #[tokio::test]
    async fn patch_refuses_what_the_runtime_cannot_change_and_values_out_of_range() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        repo.expect_update().never();
        let mut rt = docker();
        rt.expect_check_update().returning(|p| {
            if p.memory_limit_bytes == Some(None) {
                vec![homeserver_domain::FieldError::new("config.memory_limit_bytes", "docker cannot remove it")]
            } else {
                vec![]
            }
        });
        rt.expect_update().never();
        let router = harness(rt, repo).router();
        let (status, _, body) = send(
            router.clone(),
            patch_req("/api/v1/containers/a", "operate", None, r#"{"config":{"memory_limit_bytes":null}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["errors"][0]["field"], "config.memory_limit_bytes");
        let (status, _, body) = send(
            router,
            patch_req(
                "/api/v1/containers/a",
                "operate",
                None,
                r#"{"config":{"memory_limit_bytes":1024,"cpu_limit":64}}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let fields: Vec<&str> =
            body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert_eq!(fields, ["config.cpu_limit", "config.memory_limit_bytes"]);
    }

    #[tokio::test]
    async fn patch_of_an_unknown_container_is_404_and_a_down_engine_503() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|id| Ok((id == "a").then(|| record("a", "web"))));
        let mut rt = docker();
        rt.expect_check_update().returning(|_| vec![]);
        rt.expect_ping()
            .returning(|| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "down".into() }));
        rt.expect_update().never();
        rt.expect_inspect()
            .returning(|_| Err(RuntimeError::Unavailable { runtime: RuntimeKind::Docker, reason: "down".into() }));
        let router = harness(rt, repo).router();
        let (status, headers, body) =
            send(router.clone(), patch_req("/api/v1/containers/zz", "operate", None, r#"{"config":{"pids_limit":5}}"#))
                .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_problem(status, &headers, &body, "NOT_FOUND");
        let (status, headers, body) =
            send(router.clone(), patch_req("/api/v1/containers/a", "operate", None, r#"{"config":{"pids_limit":5}}"#))
                .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_problem(status, &headers, &body, "RUNTIME_UNAVAILABLE");
        // With If-Match the container must be read first: 503 as well.
        let (status, _, _) =
            send(router, patch_req("/api/v1/containers/a", "operate", Some("*"), r#"{"config":{"pids_limit":5}}"#))
                .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn delete_honours_if_match_too() {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(|_| Ok(Some(record("a", "web"))));
        let mut rt = running_docker();
        rt.expect_remove().never();
        let req = Request::delete("/api/v1/containers/a?force=true")
            .header("authorization", "Bearer operate")
            .header("if-match", "\"7-stopped\"")
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = send(harness(rt, repo).router(), req).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body}");
    }
}

#[tokio::test]
async fn device_store_and_scan_failures_are_500_without_leaking() {
    let mut repo = homeserver_domain::MockDeviceRepository::new();
    repo.expect_list().returning(|| Err(RepositoryError::internal("disk I/O error at /var/lib/secret.db")));
    repo.expect_get().returning(|_| Err(RepositoryError::internal("disk I/O error at /var/lib/secret.db")));
    let mut h = Harness::new();
    h.device_repo = Some(repo);
    let router = h.router();
    for uri in ["/api/v1/devices", "/api/v1/devices/disk-0000000000000000"] {
        let (status, headers, body) = call(router.clone(), uri).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        assert_problem(status, &headers, &body, "INTERNAL");
        assert!(!body.to_string().contains("secret"), "{body}");
    }
    // The inventory is a mock with no expectations: a rescan reaching it
    // would panic, so this proves a bad kind filter never scans or reads.
    let (status, headers, body) = call(router.clone(), "/api/v1/devices?kind=tape").await;
    assert_problem(status, &headers, &body, "VALIDATION_FAILED");
    assert_eq!(body["errors"][0]["field"], "kind");
}

#[tokio::test]
async fn profile_refusals_map_to_the_contract_codes() {
    let mut repo = default_profile_only();
    repo.expect_delete().returning(|name, _| match name {
        "used" => Err(RepositoryError::InUse(vec!["c-1".into(), "c-2".into()])),
        "default" => Err(RepositoryError::Conflict("default".into())),
        _ => Err(RepositoryError::NotFound),
    });
    let mut h = Harness::new();
    h.profile_repo = Some(repo);
    let router = h.router();
    let delete = |name: &str| Request::delete(format!("/api/v1/profiles/{name}")).body(Body::empty()).unwrap();
    let (status, headers, body) = send(router.clone(), delete("used")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_problem(status, &headers, &body, "PROFILE_IN_USE");
    assert!(body["detail"].as_str().unwrap().contains("c-1"), "{body}");
    let (status, headers, body) = send(router.clone(), delete("default")).await;
    assert_problem(status, &headers, &body, "CONFLICT");
    let (status, headers, body) = send(router.clone(), delete("nope")).await;
    assert_problem(status, &headers, &body, "NOT_FOUND");
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn container_creation_refuses_unknown_profiles_and_devices_before_any_operation() {
    // No container runtime and no operation store expectations: a request
    // that got as far as an operation would panic in the mock.
    let mut registry = homeserver_domain::MockDeviceRepository::new();
    registry.expect_list().returning(|| Ok(vec![]));
    let mut h = Harness::new();
    h.device_repo = Some(registry);
    h.containers = Some(Arc::new(homeserver_domain::ContainerService::new(
        vec![],
        Arc::new(homeserver_domain::MockContainerRepository::new()),
        clock(),
        Arc::new(|| "id".to_owned()),
        4,
    )));
    let router = h.router();
    let body = r#"{"name":"web","runtime":"docker","image":"busybox","profiles":["default","nope"],
                   "config":{"devices":["usb-0000000000000000"],"restart_policy":"never"}}"#;
    let (status, headers, body) = send(router.clone(), post_json("/api/v1/containers", "admin", body)).await;
    assert_problem(status, &headers, &body, "VALIDATION_FAILED");
    assert_eq!(body["errors"][0]["field"], "config.restart_policy", "{body}");
    let body = r#"{"name":"web","runtime":"docker","image":"busybox","profiles":["default","nope"]}"#;
    let (status, headers, body) = send(router.clone(), post_json("/api/v1/containers", "admin", body)).await;
    assert_problem(status, &headers, &body, "VALIDATION_FAILED");
    assert_eq!(body["errors"][0]["field"], "profiles[1]", "{body}");
    let body = r#"{"name":"web","runtime":"docker","image":"busybox","config":{"devices":["usb-0000000000000000"]}}"#;
    let (status, headers, body) = send(router, post_json("/api/v1/containers", "admin", body)).await;
    assert_problem(status, &headers, &body, "VALIDATION_FAILED");
    assert_eq!(body["errors"][0]["field"], "config.devices[0]", "{body}");
}

/// `GET /api/v1/containers/{id}/history`: the system history's shape and
/// errors, for one container known to the container records.
mod container_history {
    use super::*;
    use homeserver_domain::{
        ContainerConfig, ContainerMetric, ContainerRecord, ContainerService, MockContainerRepository,
        MockContainerRuntime, Point, RuntimeKind, Series, Tier,
    };

    fn record(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            runtime: RuntimeKind::Docker,
            runtime_id: format!("d-{id}"),
            name: "web".into(),
            image: Some("img".into()),
            template: None,
            managed: false,
            profiles: vec![],
            config: ContainerConfig::default(),
            created_at: UnixMillis(1),
            updated_at: UnixMillis(1),
        }
    }

    /// Containers where only `known` exists; the engine is never asked (it
    /// may be down: history comes from the records and the store).
    fn harness(known: &'static str, history: Option<MockSnapshotRepository>) -> Harness {
        let mut repo = MockContainerRepository::new();
        repo.expect_get().returning(move |id| Ok((id == known).then(|| record(known))));
        let mut rt = MockContainerRuntime::new();
        rt.expect_kind().return_const(RuntimeKind::Docker);
        rt.expect_inspect().never();
        rt.expect_stats().never();
        let ids: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(|| "new-id".to_owned());
        let mut h = Harness::with_scoped_tokens();
        h.containers = Some(Arc::new(ContainerService::new(vec![Arc::new(rt)], Arc::new(repo), clock(), ids, 2)));
        h.repo = history;
        h
    }

    fn untouched_store() -> MockSnapshotRepository {
        let mut repo = MockSnapshotRepository::new();
        repo.expect_query().never();
        repo.expect_query_container().never();
        repo
    }

    fn get(uri: &str, token: Option<&str>) -> Request<Body> {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn answers_in_the_shape_of_the_system_history_from_the_planned_tier() {
        let mut repo = MockSnapshotRepository::new();
        repo.expect_query_container()
            .withf(|id, plan, metrics| {
                id == "c-1"
                    && plan.tier == Tier::Raw
                    && plan.step_ms == 12_000
                    && metrics == [ContainerMetric::CpuPercent, ContainerMetric::MemoryBytes]
            })
            .times(1)
            .returning(|_, plan, metrics| {
                Ok(metrics
                    .iter()
                    .map(|m| Series { metric: *m, points: vec![Point { t: plan.from, avg: 2.0, min: 1.0, max: 3.0 }] })
                    .collect())
            });
        repo.expect_query().times(1).returning(|plan, metrics| {
            Ok(metrics
                .iter()
                .map(|m| Series { metric: *m, points: vec![Point { t: plan.from, avg: 2.0, min: 1.0, max: 3.0 }] })
                .collect())
        });
        let router = harness("c-1", Some(repo)).router();
        let from = NOW - 3_600_000;
        let range = format!("from={from}&to={NOW}&points=300");
        let (status, headers, body) = send(
            router.clone(),
            get(&format!("/api/v1/containers/c-1/history?metrics=memory_bytes,cpu_percent&{range}"), Some("read")),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(body["step_ms"], 12_000);
        assert_eq!(body["from"], "2027-01-15T07:00:00Z");
        assert_eq!(body["series"][0]["metric"], "cpu_percent");
        assert_eq!(body["series"][0]["unit"], "percent");
        assert_eq!(body["series"][1]["metric"], "memory_bytes");
        assert_eq!(body["series"][1]["unit"], "bytes");
        assert_eq!(body["series"][1]["points"], serde_json::json!([[from, 2.0, 1.0, 3.0]]));

        // The system history answers the same query with the same keys.
        let (_, _, system) =
            send(router, get(&format!("/api/v1/system/history?metrics=cpu.load1&{range}"), Some("read"))).await;
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&body), keys(&system));
        assert_eq!(keys(&body["series"][0]), keys(&system["series"][0]));
        assert_eq!(
            (body["from"].clone(), body["to"].clone(), body["step_ms"].clone()),
            (system["from"].clone(), system["to"].clone(), system["step_ms"].clone())
        );
    }

    #[tokio::test]
    async fn an_unknown_container_is_404_before_anything_is_read() {
        let router = harness("c-1", Some(untouched_store())).router();
        for uri in [
            "/api/v1/containers/nope/history?metrics=cpu_percent",
            "/api/v1/containers/nope/history?metrics=bogus&points=0",
        ] {
            let (status, headers, body) = send(router.clone(), get(uri, Some("read"))).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
            assert_problem(status, &headers, &body, "NOT_FOUND");
        }
    }

    #[tokio::test]
    async fn bad_metrics_ranges_and_points_are_field_errors_that_never_reach_the_store() {
        let router = harness("c-1", Some(untouched_store())).router();
        for (query, status, fields) in [
            ("", StatusCode::UNPROCESSABLE_ENTITY, vec!["metrics"]),
            ("metrics=cpu_percent,bogus", StatusCode::UNPROCESSABLE_ENTITY, vec!["metrics"]),
            // The host's names are not a container's.
            ("metrics=cpu.usage_percent", StatusCode::UNPROCESSABLE_ENTITY, vec!["metrics"]),
            ("metrics=pids&points=0", StatusCode::UNPROCESSABLE_ENTITY, vec!["points"]),
            ("metrics=pids&points=2001", StatusCode::UNPROCESSABLE_ENTITY, vec!["points"]),
            ("metrics=pids&from=2000&to=1000", StatusCode::UNPROCESSABLE_ENTITY, vec!["from"]),
            ("metrics=pids&from=1000&to=1000&points=0", StatusCode::UNPROCESSABLE_ENTITY, vec!["from", "points"]),
            ("metrics=pids&points=many", StatusCode::BAD_REQUEST, vec!["points"]),
            ("metrics=pids&from=yesterday", StatusCode::BAD_REQUEST, vec!["from"]),
        ] {
            let uri = format!("/api/v1/containers/c-1/history?{query}");
            let (got, headers, body) = send(router.clone(), get(&uri, Some("read"))).await;
            assert_eq!(got, status, "{uri}: {body}");
            assert_problem(got, &headers, &body, body["code"].as_str().unwrap());
            let named: Vec<&str> =
                body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
            assert_eq!(named, fields, "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn disabled_history_is_503_and_a_missing_token_401() {
        let (status, headers, body) =
            send(harness("c-1", None).router(), get("/api/v1/containers/c-1/history?metrics=pids", Some("read"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_problem(status, &headers, &body, "SERVICE_UNAVAILABLE");
        assert!(body["detail"].as_str().unwrap().contains("history is disabled"), "{body}");

        let (status, _, _) = send(
            harness("c-1", Some(untouched_store())).router(),
            get("/api/v1/containers/c-1/history?metrics=pids", None),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn without_a_container_runtime_it_is_503_runtime_unavailable() {
        let mut h = Harness::with_scoped_tokens();
        h.repo = Some(untouched_store());
        let (status, headers, body) =
            send(h.router(), get("/api/v1/containers/c-1/history?metrics=pids", Some("read"))).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_problem(status, &headers, &body, "RUNTIME_UNAVAILABLE");
    }

    #[tokio::test]
    async fn a_busy_store_is_503_and_a_broken_one_500_without_leaking() {
        for (error, status, code) in [
            (
                RepositoryError::Unavailable("database is locked".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
            ),
            (
                RepositoryError::internal("secret path /var/lib/x: disk I/O error"),
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
            ),
        ] {
            let mut repo = MockSnapshotRepository::new();
            let error = std::sync::Mutex::new(Some(error));
            repo.expect_query_container().times(1).returning(move |_, _, _| Err(error.lock().unwrap().take().unwrap()));
            let (got, headers, body) = send(
                harness("c-1", Some(repo)).router(),
                get("/api/v1/containers/c-1/history?metrics=pids", Some("read")),
            )
            .await;
            assert_eq!(got, status);
            assert_problem(got, &headers, &body, code);
            assert!(!body.to_string().contains("secret"), "5xx must not leak: {body}");
        }
    }
}
