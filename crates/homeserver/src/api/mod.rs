//! The HTTP and WebSocket API: routes, the layers every route passes
//! through, and the OpenAPI document generated from them.

pub mod audit;
pub mod container_history;
pub mod containers;
pub mod devices;
pub mod dto;
pub mod edge;
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
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tower::Layer as _;
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{self, Caller, OpenAccess, Security};
use crate::state::{AppState, Shared};

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

/// Every route and the docs, with their document (as configured).
fn routes_and_docs(state: Shared) -> (Router, OpenApiDoc) {
    let (routes, doc) = openapi_router(state.settings.metrics.public).split_for_parts();
    let router = routes
        .fallback(|| async { StatusCode::NOT_FOUND })
        .merge(SwaggerUi::new("/docs").url("/api-docs/openapi.json", doc.clone()))
        .with_state(state);
    (router, doc)
}

/// The whole application as one service: routes and docs behind the edge
/// ([`edge::Edge`]), with CORS outside it when origins are configured (so
/// preflights need no token).
#[derive(Clone)]
pub struct App(tower::util::Either<Cors<edge::Edge>, edge::Edge>);

impl<B> tower::Service<axum::http::Request<B>> for App
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <tower::util::Either<Cors<edge::Edge>, edge::Edge> as tower::Service<axum::http::Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<axum::http::Request<B>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        self.0.call(request)
    }
}

/// Builds the application.
///
/// # Errors
/// When a documented operation declares neither a scope nor `public`
/// (see [`crate::auth::scoped`]): such a route must not be served.
pub fn router(state: AppState, security: Arc<Security>) -> Result<App, edge::UndeclaredRoute> {
    let state: Shared = Arc::new(state);
    let settings = Arc::clone(&state.settings);
    let (app, doc) = routes_and_docs(state);
    let table = edge::RouteTable::from_openapi(&doc)?;
    let edge = edge::Edge::new(
        app,
        edge::EdgeState {
            routes: table,
            security,
            timeout: Duration::from_secs(settings.server.request_timeout_secs),
            max_body_bytes: settings.server.max_body_bytes,
        },
    );
    Ok(App(match cors(&settings.server.cors_origins) {
        Some(cors) => tower::util::Either::Left(cors.layer(edge)),
        None => tower::util::Either::Right(edge),
    }))
}

/// The routes with none of the edge (no request id, metrics, problem
/// rendering, authentication, rate limit or audit): every caller acts as an
/// administrator. Only for measuring what the edge costs; never served.
#[doc(hidden)]
pub fn bare_router(state: AppState) -> axum::middleware::AddExtension<Router, Caller> {
    let state: Shared = Arc::new(state);
    let caller = Caller(OpenAccess::default().authenticate_any(), None);
    let (router, _) = routes_and_docs(state);
    tower::Layer::layer(&axum::Extension(caller), router)
}
