//! The OpenAPI document, the offline API browser and /metrics.

use e2e::spawn_app;

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc = app.get_json("/api-docs/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/system",
        "/api/v1/system/info",
        "/api/v1/system/history",
        "/api/v1/system/history/metrics",
        "/api/v1/ws",
        "/health/live",
        "/health/ready",
        "/version",
        "/metrics",
        "/ws/cpu",
        "/ws/ram",
        "/ws/system",
        "/api/info",
        "/api/history",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    // The served document is the one `homeserver openapi` prints.
    assert_eq!(doc, serde_json::to_value(homeserver::api::openapi()).unwrap());
    app.stop().await;
}

#[tokio::test]
async fn docs_page_loads_without_any_network() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/docs/", app.address)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(!html.contains("https://"), "no CDN: {html}");
    // Every script and stylesheet the page names is served by us.
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-initializer.js"]
    {
        assert!(html.contains(asset), "page names {asset}");
        let r = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status(), 200, "{asset}");
        assert!(r.bytes().await.unwrap().len() > 100);
    }
    let init = app.get("/docs/swagger-initializer.js").await.text().await.unwrap();
    assert!(init.contains("/api-docs/openapi.json"));
    app.stop().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_matching_the_kernel() {
    let app = spawn_app().await;
    app.wait_for_snapshot().await;
    app.get("/api/v1/system").await;
    let r = app.get("/metrics").await;
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let mut families = std::collections::HashSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            assert!(matches!(parts.next(), Some("gauge" | "counter" | "histogram" | "summary")), "{line}");
            assert!(families.insert(name.to_owned()), "family {name} declared twice");
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // name{labels} value
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf" || value == "NaN", "{line}");
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{line}");
    }
    let total: u64 =
        text.lines().find_map(|l| l.strip_prefix("homeserver_memory_total_bytes ")).unwrap().parse().unwrap();
    assert_eq!(total, crate::meminfo("MemTotal"));
    assert!(text.contains("http_requests_total{method=\"GET\",route=\"/api/v1/system\",status=\"200\"}"), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("homeserver_samples_total"));
    app.stop().await;
}
