//! Bad input gets problem+json with the failing field and a request id.

use e2e::spawn_app;

async fn problem(r: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let echoed = r.headers().get("x-request-id").cloned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].is_string() && body["title"].is_string() && body["detail"].is_string());
    assert_eq!(body["request_id"].as_str(), echoed.as_ref().map(|h| h.to_str().unwrap()));
    body
}

#[tokio::test]
async fn malformed_and_out_of_range_history_queries() {
    let app = spawn_app().await;
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.usage_percent&points=many").await, 400).await;
    assert_eq!((b["code"].as_str(), b["errors"][0]["field"].as_str()), (Some("BAD_REQUEST"), Some("points")));
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.usage_percent&points=2001").await, 422).await;
    assert_eq!((b["code"].as_str(), b["errors"][0]["field"].as_str()), (Some("VALIDATION_FAILED"), Some("points")));
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.nope").await, 422).await;
    assert_eq!(b["errors"][0]["field"], "metrics");
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.load1&from=yesterday").await, 400).await;
    assert_eq!(b["errors"][0]["field"], "from");
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.load1&from=2000&to=1000").await, 422).await;
    assert_eq!(b["errors"][0]["field"], "from");
    let b = problem(app.get("/api/history?resolution=7h").await, 400).await;
    assert_eq!(b["errors"][0]["field"], "resolution");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_and_request_ids_echo() {
    let app = spawn_app().await;
    let b = problem(app.get("/api/v1/nothing-here").await, 404).await;
    assert_eq!(b["code"], "NOT_FOUND");
    let r = app.client.delete(format!("{}/api/v1/system", app.address)).send().await.unwrap();
    let b = problem(r, 405).await;
    assert_eq!(b["code"], "METHOD_NOT_ALLOWED");
    let r = app
        .client
        .get(format!("{}/health/live", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-me-42");
    let r = app
        .client
        .get(format!("{}/api/v1/nope", app.address))
        .header("x-request-id", "trace-me-43")
        .send()
        .await
        .unwrap();
    let b = problem(r, 404).await;
    assert_eq!(b["request_id"], "trace-me-43");
    // Without one, a fresh id is made.
    let r = app.get("/health/live").await;
    assert!(r.headers()["x-request-id"].len() >= 32);
    app.stop().await;
}

#[tokio::test]
async fn history_disabled_answers_503_not_500() {
    let app = e2e::spawn_app_with(|s| s.history.enabled = false).await;
    let b = problem(app.get("/api/v1/system/history?metrics=cpu.load1").await, 503).await;
    assert_eq!(b["code"], "SERVICE_UNAVAILABLE");
    app.stop().await;
}
