//! HTTP tests of the router with mock ports: every error path, no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use homeserver::auth::OpenAccess;
use homeserver::config::Settings;
use homeserver::live::LiveHub;
use homeserver::state::{AppState, Probe};
use homeserver_domain::{
    HistoryService, HostInfo, MockClock, MockSnapshotRepository, RepositoryError, RetentionPolicy, SamplerHealth,
    Snapshot, SnapshotPublisher, UnixMillis,
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

struct Harness {
    hub: Arc<LiveHub>,
    repo: Option<MockSnapshotRepository>,
    db: Result<(), String>,
    sampler: Arc<SamplerHealth>,
}

impl Harness {
    fn new() -> Self {
        Self {
            hub: Arc::new(LiveHub::new(4)),
            repo: Some(MockSnapshotRepository::new()),
            db: Ok(()),
            sampler: Arc::default(),
        }
    }

    fn router(self) -> axum::Router {
        let settings = Settings::defaults().unwrap();
        let history =
            self.repo.map(|r| Arc::new(HistoryService::new(Arc::new(r), clock(), RetentionPolicy::DEFAULT, 1_000)));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let state = AppState {
            hub: self.hub,
            history,
            host_info: Arc::new(HostInfo { hostname: "box".into(), ..Default::default() }),
            database: Arc::new(FixedProbe(self.db)),
            sampler: self.sampler,
            writer: None,
            settings: Arc::new(settings),
            clock: clock(),
            shutdown,
        };
        homeserver::api::router(state, Arc::new(OpenAccess))
    }
}

async fn call(router: axum::Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
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
            } else {
                assert!(matches!(scope, Some("read" | "operate" | "admin")), "{method} {path} lacks a scope");
            }
        }
    }
}
