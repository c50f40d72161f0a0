//! `/api/v1/operations`: follow, wait for and cancel long-running work.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use homeserver_domain::{Operation, OperationFilter, OperationKind, OperationOutput, OperationStatus, Scope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::rfc3339;
use super::error::{ApiError, ErrorCode, Problem};
use super::extract::ApiQuery;
use crate::auth::scoped;
use crate::operations::CancelError;
use crate::state::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Read, routes!(list_operations)))
        .routes(scoped(Scope::Read, routes!(get_operation)))
        .routes(scoped(Scope::Operate, routes!(cancel_operation)))
        .routes(scoped(Scope::Read, routes!(wait_operation)))
}

/// A failure: stable code and message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailureDto {
    /// SCREAMING_SNAKE_CASE code (`SOURCE_NOT_FOUND`, `INTERRUPTED`, …).
    pub code: String,
    /// What happened.
    pub message: String,
}

/// Containers an operation touches.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResourcesDto {
    /// Container ids.
    pub containers: Vec<String>,
}

/// One item of a bulk result.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkItemDto {
    /// Container id.
    pub id: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<FailureDto>,
}

/// What an operation produced.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationResultDto {
    /// The created container (create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// One result per id (bulk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<BulkItemDto>>,
}

/// An operation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationDto {
    /// Id.
    pub id: String,
    /// `container.create`, `container.start`, …, `container.bulk`.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// 0..100.
    pub progress_percent: u8,
    /// What it is doing or did.
    pub message: String,
    /// What it touches.
    pub resources: ResourcesDto,
    /// What it produced, once finished.
    pub result: Option<OperationResultDto>,
    /// Why it failed.
    pub error: Option<FailureDto>,
    /// `DELETE` can still cancel it.
    pub may_cancel: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub finished_at: Option<String>,
}

impl From<&Operation> for OperationDto {
    fn from(op: &Operation) -> Self {
        let result = match &op.output {
            OperationOutput::None => None,
            OperationOutput::Container { id } => Some(OperationResultDto { container: Some(id.clone()), items: None }),
            OperationOutput::Bulk(items) => Some(OperationResultDto {
                container: None,
                items: Some(
                    items
                        .iter()
                        .map(|i| BulkItemDto {
                            id: i.id.clone(),
                            status: if i.succeeded { "succeeded" } else { "failed" }.to_owned(),
                            error: i
                                .error
                                .as_ref()
                                .map(|e| FailureDto { code: e.code.clone(), message: e.message.clone() }),
                        })
                        .collect(),
                ),
            }),
        };
        Self {
            id: op.id.clone(),
            kind: op.kind.as_str().to_owned(),
            status: op.status.as_str().to_owned(),
            progress_percent: op.progress_percent,
            message: op.message.clone(),
            resources: ResourcesDto { containers: op.containers.clone() },
            result,
            error: op.error.as_ref().map(|e| FailureDto { code: e.code.clone(), message: e.message.clone() }),
            may_cancel: op.may_cancel,
            created_at: rfc3339(op.created_at),
            started_at: op.started_at.map(rfc3339),
            finished_at: op.finished_at.map(rfc3339),
        }
    }
}

/// `202 Accepted` with `Location: /api/v1/operations/{id}` and the operation.
pub fn accepted(op: &Operation) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(OperationDto::from(op))).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/operations/{}", op.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// A page of operations.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationListDto {
    /// Operations, newest first.
    pub items: Vec<OperationDto>,
    /// Matching operations in all.
    pub total: u64,
    /// Page number.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// `GET /api/v1/operations` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationParams {
    /// Only this status.
    status: Option<String>,
    /// Only this kind.
    kind: Option<String>,
    /// Page, from 1.
    page: Option<u32>,
    /// 1..=100 (default 20).
    per_page: Option<u32>,
}

/// Operations, newest first.
#[utoipa::path(get, path = "/operations", tag = "containers", operation_id = "list_operations",
    params(OperationParams),
    responses(
        (status = 200, description = "A page of operations", body = OperationListDto),
        (status = 422, description = "Unknown status or kind, page out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_operations(
    State(state): State<Shared>,
    ApiQuery(p): ApiQuery<OperationParams>,
) -> Result<axum::Json<OperationListDto>, ApiError> {
    let page = super::tokens::PageParams { page: p.page, per_page: p.per_page }.page()?;
    let mut errors = Vec::new();
    let status = p.status.as_deref().map(str::parse::<OperationStatus>).transpose().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let kind = p.kind.as_deref().map(str::parse::<OperationKind>).transpose().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let paged = state
        .operations
        .repository()
        .list(&OperationFilter { status, kind }, page)
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(OperationListDto {
        items: paged.items.iter().map(OperationDto::from).collect(),
        total: paged.total,
        page: page.page(),
        per_page: page.per_page(),
    }))
}

/// One operation.
#[utoipa::path(get, path = "/operations/{id}", tag = "containers", operation_id = "get_operation",
    params(("id" = String, Path, description = "Operation id")),
    responses(
        (status = 200, description = "The operation", body = OperationDto),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_operation(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<OperationDto>, ApiError> {
    let op = state.operations.repository().get(&id).await.map_err(ApiError::internal)?;
    op.map(|o| axum::Json(OperationDto::from(&o))).ok_or_else(|| ApiError::not_found("no such operation"))
}

/// `?timeout_secs=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Longest wait, 0..=300 seconds (default 30).
    #[param(maximum = 300)]
    timeout_secs: Option<u64>,
}

/// Waits until the operation ends (or the timeout), then answers it.
#[utoipa::path(get, path = "/operations/{id}/wait", tag = "containers", operation_id = "wait_operation",
    params(("id" = String, Path, description = "Operation id"), WaitParams),
    responses(
        (status = 200, description = "The operation, finished or as it is at the timeout", body = OperationDto),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`timeout_secs` above 300", body = Problem, content_type = "application/problem+json"),
    ))]
async fn wait_operation(
    State(state): State<Shared>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<WaitParams>,
) -> Result<axum::Json<OperationDto>, ApiError> {
    let secs = p.timeout_secs.unwrap_or(30);
    if secs > 300 {
        return Err(ApiError::validation(vec![homeserver_domain::FieldError::new("timeout_secs", "at most 300")]));
    }
    // Never outlive the request timeout: answer what there is just before it.
    let limit = state.settings.server.request_timeout_secs.saturating_sub(1).max(1);
    let op = state.operations.wait(&id, Duration::from_secs(secs.min(limit))).await.map_err(ApiError::internal)?;
    op.map(|o| axum::Json(OperationDto::from(&o))).ok_or_else(|| ApiError::not_found("no such operation"))
}

/// Cancels a pending or running operation.
#[utoipa::path(delete, path = "/operations/{id}", tag = "containers", operation_id = "cancel_operation",
    params(("id" = String, Path, description = "Operation id")),
    responses(
        (status = 200, description = "Cancelled", body = OperationDto),
        (status = 404, description = "No such operation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Finished already, or not cancellable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_operation(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<OperationDto>, ApiError> {
    match state.operations.cancel(&id).await {
        Ok(op) => Ok(axum::Json(OperationDto::from(&op))),
        Err(CancelError::NotFound) => Err(ApiError::not_found("no such operation")),
        Err(CancelError::NotCancellable) => {
            Err(ApiError::new(ErrorCode::Conflict, "the operation has finished or cannot be cancelled"))
        }
        Err(CancelError::Repository(e)) => Err(ApiError::internal(e)),
    }
}
