//! `/api/v1/system*`: the latest snapshot, host facts and history.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use homeserver_domain::{FieldError, HistoryError, HistoryMetric, HistoryQuery, HistoryService, Metric, UnixMillis};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{self, HistoryDto, MetricDto, MetricListDto, SnapshotDto, SystemInfoDto};
use super::error::{ApiError, ErrorCode, Problem};
use super::extract::ApiQuery;
use crate::auth::{Scope, scoped};
use crate::state::{AppState, Shared};

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Read, routes!(get_system)))
        .routes(scoped(Scope::Read, routes!(get_system_info)))
        .routes(scoped(Scope::Read, routes!(get_history)))
        .routes(scoped(Scope::Read, routes!(list_history_metrics)))
}

/// The latest host snapshot, as the sampler took it.
///
/// Served from the sampler's last tick (never collected per request), so
/// it is at most one sampling interval old.
#[utoipa::path(get, path = "/system", tag = "system", operation_id = "get_system",
    responses(
        (status = 200, description = "The latest snapshot", body = SnapshotDto),
        (status = 503, description = "No snapshot taken yet (just started)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_system(State(state): State<Shared>) -> Result<Response, ApiError> {
    let published = state.hub.latest().ok_or_else(|| {
        ApiError::new(ErrorCode::ServiceUnavailable, "no snapshot has been taken yet; retry in a second")
    })?;
    let mut response = published.json.clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Static facts about the host.
#[utoipa::path(get, path = "/system/info", tag = "system", operation_id = "get_system_info",
    responses((status = 200, description = "Host facts", body = SystemInfoDto)))]
async fn get_system_info(State(state): State<Shared>) -> axum::Json<SystemInfoDto> {
    axum::Json(SystemInfoDto::new(&state.host_info, state.clock.now()))
}

/// Query of `GET /api/v1/system/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Comma-separated metric names (see `/api/v1/system/history/metrics`).
    #[param(example = "cpu.usage_percent,memory.used_bytes")]
    metrics: Option<String>,
    /// Start, RFC 3339 or Unix milliseconds (default: one hour before `to`).
    from: Option<String>,
    /// End, RFC 3339 or Unix milliseconds (default: now).
    to: Option<String>,
    /// Most points per series, 1..=2000 (default 300).
    #[param(minimum = 1, maximum = 2000)]
    points: Option<String>,
}

/// Parses `from`/`to`: RFC 3339 or Unix ms; anything else is a 400 naming the field.
pub(crate) fn parse_range(
    from: Option<&str>,
    to: Option<&str>,
    now: UnixMillis,
) -> Result<(UnixMillis, UnixMillis), ApiError> {
    let parse = |field: &str, v: &str| {
        dto::parse_instant(v)
            .ok_or_else(|| ApiError::bad_request(field, "expected an RFC 3339 time or Unix milliseconds"))
    };
    let to = match to {
        Some(v) => parse("to", v)?,
        None => now,
    };
    let from = match from {
        Some(v) => parse("from", v)?,
        None => to.add_millis(-UnixMillis::HOUR),
    };
    Ok((from, to))
}

/// Aggregated history of host metrics.
///
/// The range is cut into at most `points` buckets; each point is
/// `[t_ms, avg, min, max]` over its bucket. The storage tier that fits the
/// bucket width is read: raw samples, one-minute or one-hour roll-ups.
#[utoipa::path(get, path = "/system/history", tag = "system", operation_id = "get_system_history",
    params(HistoryParams),
    responses(
        (status = 200, description = "One series per metric", body = HistoryDto),
        (status = 400, description = "Malformed `from`, `to` or `points`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown metric, empty range or `points` out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History is disabled or its store is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_history(
    State(state): State<Shared>,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<axum::Json<HistoryDto>, ApiError> {
    let history = history_service(&state)?;
    let (from, to) = parse_range(params.from.as_deref(), params.to.as_deref(), state.clock.now())?;
    let points = parse_points(params.points.as_deref())?;
    let metrics = parse_metrics::<Metric>(params.metrics.as_deref().unwrap_or(""))?;
    let query = HistoryQuery::new(metrics, from, to, points).map_err(ApiError::validation)?;
    let result = history.query(&query).await.map_err(history_error)?;
    Ok(axum::Json(HistoryDto::from(&result)))
}

/// The history service, or the 503 every history route answers when
/// history is off.
pub(crate) fn history_service(state: &AppState) -> Result<&HistoryService, ApiError> {
    state
        .history
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::ServiceUnavailable, "history is disabled (`history.enabled = false`)"))
}

/// Parses `points` (default 300); anything but a whole number is a 400, the
/// range is checked by [`HistoryQuery::new`].
pub(crate) fn parse_points(points: Option<&str>) -> Result<u32, ApiError> {
    match points {
        None => Ok(300),
        Some(p) => p.parse::<u32>().map_err(|_| ApiError::bad_request("points", "expected a whole number")),
    }
}

/// Parses a comma-separated list of metric names of one set (the host's or
/// the containers'); unknown names are a 422.
pub(crate) fn parse_metrics<M: HistoryMetric>(list: &str) -> Result<Vec<M>, ApiError> {
    let mut metrics = Vec::new();
    let mut errors = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name.parse::<M>() {
            Ok(m) => metrics.push(m),
            Err(e) => errors.push(FieldError::new("metrics", e.to_string())),
        }
    }
    if metrics.is_empty() && errors.is_empty() {
        errors.push(FieldError::new("metrics", "name at least one metric"));
    }
    if errors.is_empty() { Ok(metrics) } else { Err(ApiError::validation(errors)) }
}

pub(crate) fn history_error(e: HistoryError) -> ApiError {
    match e {
        HistoryError::Invalid(errors) => ApiError::validation(errors),
        HistoryError::Repository(homeserver_domain::RepositoryError::Unavailable(why)) => ApiError::unavailable(why),
        HistoryError::Repository(e) => ApiError::internal(e),
    }
}

/// The metrics history keeps, with their units.
#[utoipa::path(get, path = "/system/history/metrics", tag = "system", operation_id = "list_history_metrics",
    responses((status = 200, description = "Every metric", body = MetricListDto)))]
async fn list_history_metrics() -> axum::Json<MetricListDto> {
    axum::Json(MetricListDto { items: Metric::ALL.iter().copied().map(MetricDto::from).collect() })
}
