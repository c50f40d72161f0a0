//! The HTTP and WebSocket API: routes, the layers every route passes
//! through, and the OpenAPI document generated from them.

pub mod dto;
pub mod error;
pub mod extract;
pub mod ops;
pub mod seed;
pub mod system;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, StatusCode};
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, Authenticator};
use crate::state::AppState;

/// Header carrying the request id, echoed when the client sent one.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The document's fixed parts; paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "homeserver",
        description = "Monitor and manage a Linux host: live metrics, history, containers, devices and profiles.\n\nErrors are RFC 9457 `application/problem+json` documents (schema `Problem`) with a stable `code`.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "system", description = "Live host snapshot, host facts and history"),
        (name = "operations", description = "Health, version and metrics"),
        (name = "streams", description = "WebSocket streams"),
        (name = "seed", description = "Routes compatible with clients of the original homeserver (camelCase)"),
    ),
    components(schemas(error::Problem, error::ErrorCode, error::ProblemField))
)]
struct ApiDoc;

fn openapi_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new().merge(system::routes()).merge(ws::routes());
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1).merge(ops::routes()).merge(seed::routes())
}

/// The OpenAPI document of every route.
pub fn openapi() -> OpenApiDoc {
    let (_, doc) = openapi_router().split_for_parts();
    doc
}

/// The whole application: routes, docs and the layers around them.
///
/// Layer order, outermost first: request id → trace span (with the id) →
/// problem rendering → metrics → timeout → body limit → authentication →
/// per-route scope check → handler.
pub fn router(state: AppState, authenticator: Arc<dyn Authenticator>) -> Router {
    // Install the metrics recorder before the first request is counted.
    let _ = crate::telemetry::prometheus();
    let (routes, doc) = openapi_router().split_for_parts();
    let settings = Arc::clone(&state.settings);
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let app = routes
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/api-docs/openapi.json", doc));
    app.layer(axum::middleware::from_fn_with_state(authenticator, auth::authenticate)).layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), uri = %req.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(axum::middleware::from_fn(error::render_problems))
            .layer(axum::middleware::from_fn(crate::telemetry::track_http))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(settings.server.request_timeout_secs),
            ))
            .layer(RequestBodyLimitLayer::new(settings.server.max_body_bytes)),
    )
}
