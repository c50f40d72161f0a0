//! The HTTP and WebSocket API: routes, the layers every route passes
//! through, and the OpenAPI document generated from them.

pub mod audit;
pub mod container_history;
pub mod containers;
pub mod devices;
pub mod dto;
pub mod error;
mod etag;
pub mod extract;
pub mod operations;
pub mod ops;
pub mod profiles;
pub mod seed;
pub mod system;
pub mod tokens;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, Caller, OpenAccess, Security};
use crate::state::{AppState, Shared};
use crate::telemetry::HttpMetrics;

/// Header carrying the request id, echoed when the client sent one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("hs_<64 hex digits>")
            .description(Some(
                "An API token: `Authorization: Bearer hs_…`. WebSocket upgrades also accept `?access_token=`. \
                 Scopes: read < operate < admin; each includes the ones before.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(auth::SECURITY_SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "homeserver",
        description = "Monitor and manage a Linux host: live metrics, history, containers, devices and profiles.\n\nErrors are RFC 9457 `application/problem+json` documents (schema `Problem`) with a stable `code`. Every operation that needs a token names its scope in `x-required-scope` and its security requirement.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "system", description = "Live host snapshot, host facts and history"),
        (name = "operations", description = "Health, version and metrics"),
        (name = "streams", description = "WebSocket streams"),
        (name = "tokens", description = "API tokens and the audit log"),
        (name = "containers", description = "Docker and LXC containers, and the operations acting on them"),
        (name = "devices", description = "The host's device registry"),
        (name = "profiles", description = "Reusable container settings"),
        (name = "seed", description = "Routes compatible with clients of the original homeserver (camelCase)"),
    ),
    components(schemas(error::Problem, error::ErrorCode, error::ProblemField))
)]
struct ApiDoc;

fn openapi_router(metrics_public: bool) -> OpenApiRouter<Shared> {
    let v1 = OpenApiRouter::new()
        .merge(system::routes())
        .merge(ws::routes())
        .merge(tokens::routes())
        .merge(audit::routes())
        .merge(containers::routes())
        .merge(container_history::routes())
        .merge(devices::routes())
        .merge(profiles::routes())
        .merge(operations::routes());
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .merge(ops::routes(metrics_public))
        .merge(seed::routes())
}

/// The OpenAPI document of every route (as configured by default).
pub fn openapi() -> OpenApiDoc {
    let (_, doc) = openapi_router(false).split_for_parts();
    doc
}

fn routes_and_docs(state: &AppState) -> Router<Shared> {
    // Install the metrics recorder before the first request is counted.
    let _ = crate::telemetry::prometheus();
    let (routes, doc) = openapi_router(state.settings.metrics.public).split_for_parts();
    routes
        .fallback(|| async { StatusCode::NOT_FOUND })
        .merge(SwaggerUi::new("/docs").url("/api-docs/openapi.json", doc))
}

/// The edge of every request, in one middleware (one boxed future instead
/// of five layers): the request id (the client's, or a fresh UUID, echoed in
/// `x-request-id`), the trace span every log line of the request carries
/// (path only, never the query, which may hold `access_token`),
/// problem+json for every error, `nosniff` everywhere and `no-store` on
/// everything but the static docs, and the request counter and latency
/// histogram.
async fn edge(
    axum::extract::State(metrics): axum::extract::State<Arc<HttpMetrics>>,
    mut request: Request,
    next: Next,
) -> Response {
    let start = std::time::Instant::now();
    let request_id = match request.headers().get(REQUEST_ID_HEADER) {
        Some(id) => id.clone(),
        None => {
            let mut buf = uuid::Uuid::encode_buffer();
            let id = HeaderValue::from_str(uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
            request.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
            id
        }
    };
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id.to_str().unwrap_or("-"),
    );
    let cacheable = request.uri().path().starts_with("/docs");
    let method = request.method().clone();
    let route = request.extensions().get::<axum::extract::MatchedPath>().cloned();
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let mut response = error::finish_problem(response, Some(&request_id));
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID_HEADER, request_id);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !cacheable {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let elapsed = start.elapsed();
    metrics.record(route.as_ref().map(|r| r.as_str()), &method, status, elapsed);
    span.in_scope(|| tracing::debug!(status, latency_us = elapsed.as_micros() as u64, "answered"));
    response
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                HeaderName::from_static(REQUEST_ID_HEADER),
            ])
            .expose_headers([
                HeaderName::from_static(REQUEST_ID_HEADER),
                header::ETAG,
                header::LOCATION,
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(600))
    })
}

/// The whole application: routes, docs and the layers around them.
///
/// Layer order, outermost first: edge (request id, trace span, problem
/// rendering, security headers, metrics) → CORS → timeout →
/// body limit → authentication, rate limit and audit → per-route scope
/// check → handler.
pub fn router(state: AppState, security: Arc<Security>) -> Router {
    let state: Shared = Arc::new(state);
    let settings = Arc::clone(&state.settings);
    let app = routes_and_docs(&state)
        .layer(axum::middleware::from_fn_with_state(security, auth::authenticate))
        .with_state(state);
    app.layer(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(Arc::new(HttpMetrics::default()), edge))
            .option_layer(cors(&settings.server.cors_origins))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(settings.server.request_timeout_secs),
            ))
            .layer(RequestBodyLimitLayer::new(settings.server.max_body_bytes)),
    )
}

/// The routes with none of the layers (no request id, metrics, problems
/// rendering, authentication, rate limit or audit): every caller acts as an
/// administrator. Only for measuring what the layers cost; never served.
#[doc(hidden)]
pub fn bare_router(state: AppState) -> Router {
    let state: Shared = Arc::new(state);
    let caller = Caller(OpenAccess::default().authenticate_any(), None);
    routes_and_docs(&state).layer(axum::Extension(caller)).with_state(state)
}
