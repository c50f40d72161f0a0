//! The audit log: the record of every mutating request (written by the
//! edge through [`Pending`]), and `GET /api/v1/audit`.

use axum::extract::State;
use axum::http::Method;
use axum::http::request::Parts;
use homeserver_domain::{AuditFilter, AuditOutcome, AuditRecord, NewAuditRecord, Scope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::rfc3339;
use super::error::{ApiError, Problem};
use super::extract::ApiQuery;
use crate::auth::{AuditSink, Caller, scoped};
use crate::state::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new().routes(scoped(Scope::Admin, routes!(list_audit)))
}

/// A mutating request whose audit record is written once its answer is
/// known. Query strings are never recorded (they may carry an
/// `access_token`).
pub(crate) struct Pending {
    sink: AuditSink,
    actor: String,
    action: String,
    target: String,
    request_id: Option<String>,
    client_ip: Option<String>,
}

impl Pending {
    /// Starts the record of a POST, PUT, PATCH or DELETE; `None` for others.
    pub(crate) fn capture(
        sink: &AuditSink,
        parts: &Parts,
        caller: &Caller,
        route: &str,
        request_id: &axum::http::HeaderValue,
        client: Option<std::net::IpAddr>,
    ) -> Option<Self> {
        if !matches!(parts.method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
            return None;
        }
        Some(Self {
            sink: sink.clone(),
            actor: caller.principal().map_or_else(|| "anonymous".to_owned(), |p| p.actor()),
            action: format!("{} {route}", parts.method),
            target: parts.uri.path().to_owned(),
            request_id: request_id.to_str().ok().map(str::to_owned),
            client_ip: client.map(|ip| ip.to_string()),
        })
    }

    /// Writes the record with the answer's status.
    pub(crate) async fn finish(self, status: u16) {
        let entry = NewAuditRecord {
            timestamp: self.sink.clock.now(),
            actor: self.actor,
            action: self.action,
            target: self.target,
            outcome: AuditOutcome::from_status(status),
            status,
            request_id: self.request_id,
            client_ip: self.client_ip,
        };
        if let Err(e) = self.sink.repository.record(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "could not write the audit record");
        }
    }
}

/// One audit record.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditDto {
    /// Sequence number.
    pub id: i64,
    /// When (RFC 3339).
    pub timestamp: String,
    /// Who: token name and id, or `anonymous`.
    pub actor: String,
    /// Method and route (`DELETE /api/v1/tokens/{id}`).
    pub action: String,
    /// The path acted on.
    pub target: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// HTTP status answered.
    pub status: u16,
    /// The request's id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_ip: Option<String>,
}

impl From<&AuditRecord> for AuditDto {
    fn from(r: &AuditRecord) -> Self {
        let e = &r.record;
        Self {
            id: r.id,
            timestamp: rfc3339(e.timestamp),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            outcome: e.outcome.as_str().to_owned(),
            status: e.status,
            request_id: e.request_id.clone(),
            client_ip: e.client_ip.clone(),
        }
    }
}

/// A page of audit records.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditListDto {
    /// Records, newest first.
    pub items: Vec<AuditDto>,
    /// Matching records in all.
    pub total: u64,
    /// Page number.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// `GET /api/v1/audit` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Page, from 1.
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
    /// Only this actor (exact).
    actor: Option<String>,
    /// Only actions starting with this (`POST`, `DELETE /api/v1/tokens`).
    action: Option<String>,
}

/// The audit log of mutating requests, newest first.
#[utoipa::path(get, path = "/audit", tag = "tokens", operation_id = "list_audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of records", body = AuditListDto),
        (status = 422, description = "`page` or `per_page` out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_audit(
    State(state): State<Shared>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<axum::Json<AuditListDto>, ApiError> {
    let page = super::tokens::PageParams { page: params.page, per_page: params.per_page }.page()?;
    let filter = AuditFilter { actor: params.actor, action: params.action };
    let paged = state.audit.list(&filter, page).await.map_err(ApiError::internal)?;
    Ok(axum::Json(AuditListDto {
        items: paged.items.iter().map(AuditDto::from).collect(),
        total: paged.total,
        page: page.page(),
        per_page: page.per_page(),
    }))
}
