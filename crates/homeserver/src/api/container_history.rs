//! `GET /api/v1/containers/{id}/history`: one container's tiered history,
//! answered in the shape of `GET /api/v1/system/history` (same DTO, same
//! parameters, same tier choice).

use axum::extract::{Path, State};
use homeserver_domain::{ContainerMetric, HistoryQuery};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::containers::container_error;
use super::dto::HistoryDto;
use super::error::{ApiError, ErrorCode, Problem};
use super::extract::ApiQuery;
use super::system::{history_error, history_service, parse_metrics, parse_points, parse_range};
use crate::auth::{Scope, scoped};
use crate::state::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(scoped(Scope::Read, routes!(get_container_history)))
}

/// Query of `GET /api/v1/containers/{id}/history`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContainerHistoryParams {
    /// Comma-separated metric names: `cpu_percent`, `memory_bytes`, `pids`,
    /// `network_rx_bytes_per_sec`, `network_tx_bytes_per_sec`,
    /// `block_read_bytes_per_sec`, `block_write_bytes_per_sec`.
    #[param(example = "cpu_percent,memory_bytes")]
    metrics: Option<String>,
    /// Start, RFC 3339 or Unix milliseconds (default: one hour before `to`).
    from: Option<String>,
    /// End, RFC 3339 or Unix milliseconds (default: now).
    to: Option<String>,
    /// Most points per series, 1..=2000 (default 300).
    #[param(minimum = 1, maximum = 2000)]
    points: Option<String>,
}

/// Aggregated history of one container.
///
/// The same shape as `GET /api/v1/system/history`: the range is cut into at
/// most `points` buckets, each point is `[t_ms, avg, min, max]`, and the
/// storage tier that fits the bucket width is read (raw samples, one-minute
/// or one-hour roll-ups). Rows exist for the samples the container was
/// running or paused; rates (`*_per_sec`) come from consecutive samples of
/// its cumulative counters and have no value on its first sample after a
/// start or a counter reset.
#[utoipa::path(get, path = "/containers/{id}/history", tag = "containers", operation_id = "get_container_history",
    params(("id" = String, Path, description = "Container id"), ContainerHistoryParams),
    responses(
        (status = 200, description = "One series per metric", body = HistoryDto),
        (status = 400, description = "Malformed `from`, `to` or `points`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown metric, empty range or `points` out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "History is disabled, its store is unavailable, or no container runtime is configured", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_container_history(
    State(state): State<Shared>,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<ContainerHistoryParams>,
) -> Result<axum::Json<HistoryDto>, ApiError> {
    let history = history_service(&state)?;
    let containers = state
        .containers
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::RuntimeUnavailable, "no container runtime is configured"))?;
    // The record, not the runtime: a container whose engine is down still
    // has its history.
    let record = containers.record(&id).await.map_err(container_error)?;
    let (from, to) = parse_range(params.from.as_deref(), params.to.as_deref(), state.clock.now())?;
    let points = parse_points(params.points.as_deref())?;
    let metrics = parse_metrics::<ContainerMetric>(params.metrics.as_deref().unwrap_or(""))?;
    let query = HistoryQuery::new(metrics, from, to, points).map_err(ApiError::validation)?;
    let result = history.query_container(&record.id, &query).await.map_err(history_error)?;
    Ok(axum::Json(HistoryDto::from(&result)))
}
