//! `/api/v1/containers`: one API over Docker and LXC.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use homeserver_domain::{
    Action, BulkItem, ConfigPatch, ContainerConfig, ContainerError, ContainerName, ContainerService, ContainerView,
    ExecRequest, Failure, FieldError, LogQuery, NewContainer, OperationKind, OperationOutput, RestartPolicy,
    RuntimeKind, Scope,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{ContainerStatsDto, parse_instant, rfc3339};
use super::error::{ApiError, ErrorCode, Problem};
use super::extract::{ApiJson, ApiQuery};
use super::operations::accepted;
use crate::auth::scoped;
use crate::state::{AppState, Shared};

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Read, routes!(list_containers)))
        .routes(scoped(Scope::Operate, routes!(create_container)))
        .routes(scoped(Scope::Read, routes!(get_container)))
        .routes(scoped(Scope::Operate, routes!(update_container)))
        .routes(scoped(Scope::Operate, routes!(delete_container)))
        .routes(scoped(Scope::Operate, routes!(container_action)))
        .routes(scoped(Scope::Read, routes!(container_logs)))
        .routes(scoped(Scope::Operate, routes!(container_exec)))
        .routes(scoped(Scope::Read, routes!(container_stats)))
        .routes(scoped(Scope::Operate, routes!(bulk_action)))
}

/// Container settings, the same for every runtime.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfigDto {
    /// CPUs (fractional), 0 < cpu_limit ≤ host cores.
    pub cpu_limit: Option<f64>,
    /// Memory limit, at least 6 MiB.
    pub memory_limit_bytes: Option<u64>,
    /// Most processes and threads.
    pub pids_limit: Option<u64>,
    /// Environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Command (default: the image's or template's).
    pub command: Option<Vec<String>>,
    /// `no`, `on-failure`, `always`, `unless-stopped`.
    #[serde(default = "default_policy")]
    pub restart_policy: String,
    /// Host devices passed through (`/dev/ttyUSB0`).
    #[serde(default)]
    pub devices: Vec<String>,
}

fn default_policy() -> String {
    "no".to_owned()
}

impl From<&ContainerConfig> for ContainerConfigDto {
    fn from(c: &ContainerConfig) -> Self {
        Self {
            cpu_limit: c.cpu_limit,
            memory_limit_bytes: c.memory_limit_bytes,
            pids_limit: c.pids_limit,
            env: c.env.clone(),
            labels: c.labels.clone(),
            command: c.command.clone(),
            restart_policy: c.restart_policy.as_str().to_owned(),
            devices: c.devices.clone(),
        }
    }
}

/// A container (Docker or LXC).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerDto {
    /// Stable id (UUID), kept across restarts.
    pub id: String,
    /// Name.
    pub name: String,
    /// `docker` or `lxc`.
    pub runtime: String,
    /// The runtime's own id.
    pub runtime_id: String,
    /// Docker image.
    pub image: Option<String>,
    /// LXC template.
    pub template: Option<String>,
    /// The runtime's real state.
    pub state: String,
    /// Created through homeserver.
    pub managed: bool,
    /// Profiles applied at creation.
    pub profiles: Vec<String>,
    /// Effective settings.
    pub config: ContainerConfigDto,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, when running.
    pub started_at: Option<String>,
}

impl From<&ContainerView> for ContainerDto {
    fn from(v: &ContainerView) -> Self {
        let r = &v.record;
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            runtime: r.runtime.as_str().to_owned(),
            runtime_id: r.runtime_id.clone(),
            image: r.image.clone(),
            template: r.template.clone(),
            state: v.state.as_str().to_owned(),
            managed: r.managed,
            profiles: r.profiles.clone(),
            config: (&r.config).into(),
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            started_at: v.started_at.map(rfc3339),
        }
    }
}

fn etag(v: &ContainerView) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("\"{}-{}\"", v.record.updated_at.as_millis(), v.state.as_str())).ok()
}

/// `If-Match` holds `*` or the container's current `ETag` (in a list too).
fn if_match(v: &ContainerView, header: &HeaderValue) -> bool {
    let current = etag(v);
    let current = current.as_ref().and_then(|t| t.to_str().ok()).unwrap_or_default();
    header
        .to_str()
        .is_ok_and(|h| h.split(',').map(str::trim).any(|t| t == "*" || (!current.is_empty() && t == current)))
}

/// 412 unless the request's `If-Match` (if any) matches the container now.
async fn check_if_match(svc: &ContainerService, id: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(want) = headers.get(header::IF_MATCH) {
        let view = svc.get(id).await.map_err(container_error)?;
        if !if_match(&view, want) {
            return Err(ApiError::new(ErrorCode::PreconditionFailed, "the container changed since that ETag"));
        }
    }
    Ok(())
}

fn with_etag(view: &ContainerView) -> Response {
    let mut response = axum::Json(ContainerDto::from(view)).into_response();
    if let Some(tag) = etag(view) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// Maps container failures to the API's codes.
pub(crate) fn container_error(e: ContainerError) -> ApiError {
    match e {
        ContainerError::Invalid(errors) => ApiError::validation(errors),
        ContainerError::NotFound => ApiError::not_found("no such container"),
        ContainerError::NameTaken(name) => {
            ApiError::new(ErrorCode::Conflict, format!("the name `{name}` is taken in that runtime"))
        }
        ContainerError::Running => {
            ApiError::new(ErrorCode::ContainerRunning, "the container is running; stop it first or pass force=true")
        }
        ContainerError::InvalidState(s) => ApiError::new(ErrorCode::Conflict, format!("the container is {s}")),
        ContainerError::RuntimeUnavailable(k) => {
            ApiError::new(ErrorCode::RuntimeUnavailable, format!("the {k} runtime is unavailable; try again later"))
        }
        ContainerError::SourceNotFound(s) => {
            ApiError::validation(vec![FieldError::new("image", format!("no such image or template `{s}`"))])
        }
        ContainerError::Runtime(e) => ApiError::internal(e),
        ContainerError::Repository(e) => ApiError::internal(e),
    }
}

fn failure(e: &ContainerError) -> Failure {
    Failure::new(e.code(), e.to_string())
}

fn service(state: &AppState) -> Result<Arc<ContainerService>, ApiError> {
    state
        .containers
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::RuntimeUnavailable, "no container runtime is configured"))
}

/// `GET /api/v1/containers` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// `docker` or `lxc`.
    runtime: Option<String>,
    /// Only this state.
    state: Option<String>,
    /// Names containing this.
    name: Option<String>,
    /// `key=value`.
    label: Option<String>,
    /// Only containers made with this profile.
    profile: Option<String>,
    /// `name` (default), `-name`, `created_at`, `-created_at`.
    sort: Option<String>,
    /// Page, from 1.
    page: Option<u32>,
    /// 1..=100 (default 20).
    per_page: Option<u32>,
}

/// A page of containers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContainerListDto {
    /// Containers on this page.
    pub items: Vec<ContainerDto>,
    /// Matching containers in all.
    pub total: u64,
    /// Page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// Every container of every runtime, real state included; containers made
/// outside homeserver appear with `managed: false`.
///
/// A runtime that is down does not fail the list: its known containers are
/// listed with state `unknown`. Asking for that runtime alone
/// (`?runtime=docker`) answers 503 `RUNTIME_UNAVAILABLE`.
#[utoipa::path(get, path = "/containers", tag = "containers", operation_id = "list_containers",
    params(ListParams),
    responses(
        (status = 200, description = "A page of containers", body = ContainerListDto),
        (status = 422, description = "Bad filter, sort or page", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The runtime named by `runtime` is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_containers(
    State(state): State<Shared>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<axum::Json<ContainerListDto>, ApiError> {
    let page = super::tokens::PageParams { page: p.page, per_page: p.per_page }.page()?;
    let mut errors = Vec::new();
    let runtime = p.runtime.as_deref().map(str::parse::<RuntimeKind>).transpose().unwrap_or_else(|e| {
        errors.push(e);
        None
    });
    let wanted_state =
        p.state.as_deref().map(str::parse::<homeserver_domain::ContainerState>).transpose().unwrap_or_else(|e| {
            errors.push(e);
            None
        });
    let label = match p.label.as_deref().map(|l| l.split_once('=')) {
        None => None,
        Some(Some((k, v))) => Some((k.to_owned(), v.to_owned())),
        Some(None) => {
            errors.push(FieldError::new("label", "expected key=value"));
            None
        }
    };
    let sort = p.sort.as_deref().unwrap_or("name");
    if !matches!(sort, "name" | "-name" | "created_at" | "-created_at") {
        errors.push(FieldError::new("sort", "expected name, -name, created_at or -created_at"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let mut views = match (&state.containers, runtime) {
        (Some(svc), runtime) => svc.list_in(runtime).await.map_err(container_error)?,
        (None, Some(kind)) => return Err(container_error(ContainerError::RuntimeUnavailable(kind))),
        (None, None) => Vec::new(),
    };
    views.retain(|v| {
        runtime.is_none_or(|r| v.record.runtime == r)
            && wanted_state.is_none_or(|s| v.state == s)
            && p.name.as_deref().is_none_or(|n| v.record.name.contains(n))
            && label.as_ref().is_none_or(|(k, val)| v.record.config.labels.get(k) == Some(val))
            && p.profile.as_deref().is_none_or(|pr| v.record.profiles.iter().any(|x| x == pr))
    });
    match sort {
        "-name" => views.sort_by(|a, b| b.record.name.cmp(&a.record.name)),
        "created_at" => views.sort_by_key(|v| v.record.created_at),
        "-created_at" => views.sort_by_key(|v| std::cmp::Reverse(v.record.created_at)),
        _ => views.sort_by(|a, b| a.record.name.cmp(&b.record.name)),
    }
    let total = views.len() as u64;
    let items = views
        .iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(page.per_page() as usize)
        .map(ContainerDto::from)
        .collect();
    Ok(axum::Json(ContainerListDto { items, total, page: page.page(), per_page: page.per_page() }))
}

/// Body of `POST /api/v1/containers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContainerRequest {
    /// `^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`, unique per runtime.
    pub name: String,
    /// `docker` or `lxc`.
    pub runtime: String,
    /// Docker image (required for docker).
    pub image: Option<String>,
    /// LXC template (required for lxc).
    pub template: Option<String>,
    /// LXC template options.
    #[serde(default)]
    pub template_options: Vec<String>,
    /// Profiles applied in order; omitted: the default profile; `[]`: none.
    pub profiles: Option<Vec<String>>,
    /// Settings laid over the profiles' (set fields win, `env` and
    /// `labels` merge, `devices` append); the container shows the result.
    #[serde(default)]
    pub config: super::profiles::ConfigOverlayDto,
    /// Start once created (default false).
    #[serde(default)]
    pub start: bool,
}

/// Creates a container as an operation.
///
/// Answers 202 with the operation; its `result.container` holds the new id.
#[utoipa::path(post, path = "/containers", tag = "containers", operation_id = "create_container",
    request_body = CreateContainerRequest,
    responses(
        (status = 202, description = "Accepted; `Location` names the operation", body = super::operations::OperationDto),
        (status = 409, description = "The name is taken in that runtime", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_container(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<CreateContainerRequest>,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let mut errors = Vec::new();
    let name = ContainerName::parse(&req.name).map_err(|e| errors.push(e)).ok();
    let runtime = req.runtime.parse::<RuntimeKind>().map_err(|e| errors.push(e)).ok();
    let overlay = req.config.into_domain("config").map_err(|e| errors.push(e)).ok();
    let source = match runtime {
        Some(RuntimeKind::Docker) => req.image.clone().unwrap_or_default(),
        Some(RuntimeKind::Lxc) => req.template.clone().unwrap_or_default(),
        None => String::new(),
    };
    if runtime == Some(RuntimeKind::Docker) && req.template.is_some() {
        errors.push(FieldError::new("template", "docker containers take an image, not a template"));
    }
    if runtime == Some(RuntimeKind::Lxc) && req.image.is_some() {
        errors.push(FieldError::new("image", "lxc containers take a template, not an image"));
    }
    let (Some(name), Some(runtime), Some(overlay)) = (name, runtime, overlay) else {
        return Err(ApiError::validation(errors));
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let (profiles, config) =
        state.profiles.compose(req.profiles.as_deref(), &overlay).await.map_err(super::profiles::profile_error)?;
    let new = NewContainer {
        runtime,
        name,
        source,
        template_options: req.template_options,
        profiles,
        config,
        start: req.start,
    };
    svc.validate(&new).await.map_err(container_error)?;
    let op = state
        .operations
        .submit(OperationKind::ContainerCreate, vec![], move |progress| async move {
            progress.set(10, "creating").await;
            match svc.create(&new).await {
                Ok(record) => Ok(OperationOutput::Container { id: record.id }),
                Err(e) => Err(failure(&e)),
            }
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(accepted(&op))
}

/// One container, real state included.
#[utoipa::path(get, path = "/containers/{id}", tag = "containers", operation_id = "get_container",
    params(("id" = String, Path, description = "Container id")),
    responses(
        (status = 200, description = "The container; `ETag` for conditional requests", body = ContainerDto),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_container(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = service(&state)?.get(&id).await.map_err(container_error)?;
    Ok(with_etag(&view))
}

/// The settings `PATCH` may change (each optional; absent ones stay).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the body; the handler reads the JSON itself to name every bad field")]
pub struct ContainerConfigPatchDto {
    /// CPUs (fractional), 0 < cpu_limit ≤ host cores; `null` removes the limit (LXC only).
    pub cpu_limit: Option<f64>,
    /// At least 6 MiB; `null` removes the limit (LXC only).
    pub memory_limit_bytes: Option<u64>,
    /// At least 1; `null` removes the limit.
    pub pids_limit: Option<u64>,
    /// `no`, `on-failure`, `always`, `unless-stopped`.
    pub restart_policy: Option<String>,
    /// The new labels (the whole map; `null` or `{}` clears them).
    pub labels: Option<BTreeMap<String, String>>,
}

/// Body of `PATCH /api/v1/containers/{id}` (a merge patch of the container).
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code, reason = "documents the body; the handler reads the JSON itself to name every bad field")]
pub struct ContainerPatchRequest {
    /// What to change.
    pub config: Option<ContainerConfigPatchDto>,
}

/// Fields of the container resource that exist but cannot be patched.
const FIXED_FIELDS: [&str; 12] = [
    "id",
    "name",
    "runtime",
    "runtime_id",
    "image",
    "template",
    "state",
    "managed",
    "profiles",
    "created_at",
    "updated_at",
    "started_at",
];

/// Reads a `PATCH` body as a merge patch: what it can use, and every field
/// that is wrong (only a body that is no object at all fails at once).
fn parse_patch(body: &serde_json::Value) -> Result<(ConfigPatch, Vec<FieldError>), ApiError> {
    use serde_json::Value;
    let mut errors = Vec::new();
    let mut patch = ConfigPatch::default();
    let Some(top) = body.as_object() else {
        return Err(ApiError::validation(vec![FieldError::new("body", "expected a JSON object")]));
    };
    for key in top.keys() {
        match key.as_str() {
            "config" => {}
            k if FIXED_FIELDS.contains(&k) => errors.push(FieldError::new(k, "cannot be changed")),
            k => errors.push(FieldError::new(k, "unknown field")),
        }
    }
    let config = match top.get("config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(_) => {
            errors.push(FieldError::new("config", "expected an object"));
            None
        }
    };
    for (key, value) in config.into_iter().flatten() {
        let field = format!("config.{key}");
        let limit = |errors: &mut Vec<FieldError>| match value {
            Value::Null => Some(None),
            v => match v.as_u64() {
                Some(n) => Some(Some(n)),
                None => {
                    errors.push(FieldError::new(&field, "must be a whole number of at least 0, or null"));
                    None
                }
            },
        };
        match key.as_str() {
            "cpu_limit" => match value {
                Value::Null => patch.cpu_limit = Some(None),
                v => match v.as_f64() {
                    Some(n) => patch.cpu_limit = Some(Some(n)),
                    None => errors.push(FieldError::new(&field, "must be a number of CPUs, or null")),
                },
            },
            "memory_limit_bytes" => patch.memory_limit_bytes = limit(&mut errors),
            "pids_limit" => patch.pids_limit = limit(&mut errors),
            "restart_policy" => match value.as_str().map(str::parse::<RestartPolicy>) {
                Some(Ok(p)) => patch.restart_policy = Some(p),
                Some(Err(e)) => errors.push(e),
                None => errors.push(FieldError::new(&field, "must be no, on-failure, always or unless-stopped")),
            },
            "labels" => match value {
                Value::Null => patch.labels = Some(BTreeMap::new()),
                Value::Object(map) => {
                    let mut labels = BTreeMap::new();
                    for (k, v) in map {
                        match v.as_str() {
                            Some(v) => {
                                labels.insert(k.clone(), v.to_owned());
                            }
                            None => errors.push(FieldError::new(format!("config.labels.{k}"), "must be a string")),
                        }
                    }
                    patch.labels = Some(labels);
                }
                _ => errors.push(FieldError::new(&field, "must be an object of strings, or null")),
            },
            "env" | "command" | "devices" => errors.push(FieldError::new(
                &field,
                "cannot be changed on an existing container; create a new one with the new value",
            )),
            _ => errors.push(FieldError::new(&field, "unknown field")),
        }
    }
    Ok((patch, errors))
}

/// Changes a container's settings: limits and restart policy at once
/// (the running container's cgroup, and for its next start), labels in
/// homeserver's record (and LXC's metadata file; Docker's own labels cannot
/// change after creation).
///
/// A merge patch: absent fields stay, `null` removes a limit. Docker cannot
/// remove a CPU or memory limit from an existing container, and no runtime
/// can change `env`, `command` or `devices` without recreating it: those
/// give 422 naming the field, and nothing changes. Honours `If-Match`
/// (412 when the container changed); answers with the new `ETag`.
#[utoipa::path(patch, path = "/containers/{id}", tag = "containers", operation_id = "update_container",
    params(
        ("id" = String, Path, description = "Container id"),
        ("If-Match" = Option<String>, Header, description = "Only if the container's `ETag` is still this (or `*`)"),
    ),
    request_body(content = ContainerPatchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The container as it now is; `ETag` for the next conditional request", body = ContainerDto),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or fields the runtime cannot change", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_container(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let (patch, mut errors) = parse_patch(&body)?;
    errors.extend(svc.check_update(&id, &patch).await.map_err(container_error)?);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    // The `If-Match` check and the change are one step: PATCHes run one at
    // a time (they are rare; a lock per container would not pay for its
    // bookkeeping), so of concurrent PATCHes sent with one ETag, one wins
    // and the others see the ETag it moved and get 412.
    static PATCHING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = PATCHING.lock().await;
    check_if_match(&svc, &id, &headers).await?;
    let view = svc.update(&id, &patch).await.map_err(container_error)?;
    Ok(with_etag(&view))
}

/// `?force=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Remove even when running.
    force: Option<bool>,
}

/// Deletes a container as an operation.
#[utoipa::path(delete, path = "/containers/{id}", tag = "containers", operation_id = "delete_container",
    params(("id" = String, Path, description = "Container id"), DeleteParams),
    responses(
        (status = 202, description = "Accepted", body = super::operations::OperationDto),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`CONTAINER_RUNNING` without `force=true`", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_container(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<DeleteParams>,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let force = p.force.unwrap_or(false);
    check_if_match(&svc, &id, &headers).await?;
    svc.check_delete(&id, force).await.map_err(container_error)?;
    let target = id.clone();
    let op = state
        .operations
        .submit(OperationKind::ContainerDelete, vec![id], move |_| async move {
            svc.delete(&target, force).await.map(|()| OperationOutput::None).map_err(|e| failure(&e))
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(accepted(&op))
}

/// `?timeout_secs=` for stop and restart.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionParams {
    /// Seconds before a stop kills (default 10, at most 600).
    timeout_secs: Option<u32>,
}

fn parse_action(action: &str, timeout_secs: u32) -> Option<(Action, OperationKind)> {
    Some(match action {
        "start" => (Action::Start, OperationKind::ContainerStart),
        "stop" => (Action::Stop { timeout_secs }, OperationKind::ContainerStop),
        "restart" => (Action::Restart { timeout_secs }, OperationKind::ContainerRestart),
        "pause" => (Action::Pause, OperationKind::ContainerPause),
        "unpause" => (Action::Unpause, OperationKind::ContainerUnpause),
        _ => return None,
    })
}

/// Starts, stops, restarts, pauses or unpauses a container as an operation.
#[utoipa::path(post, path = "/containers/{id}/{action}", tag = "containers", operation_id = "container_action",
    params(
        ("id" = String, Path, description = "Container id"),
        ("action" = String, Path, description = "`start`, `stop`, `restart`, `pause` or `unpause`"),
        ActionParams,
    ),
    responses(
        (status = 202, description = "Accepted", body = super::operations::OperationDto),
        (status = 404, description = "No such container or action", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`timeout_secs` above 600", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn container_action(
    State(state): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    ApiQuery(p): ApiQuery<ActionParams>,
) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let timeout = p.timeout_secs.unwrap_or(10);
    if timeout > 600 {
        return Err(ApiError::validation(vec![FieldError::new("timeout_secs", "at most 600")]));
    }
    let (action, kind) =
        parse_action(&action, timeout).ok_or_else(|| ApiError::not_found(format!("no action `{action}`")))?;
    svc.check_act(&id).await.map_err(container_error)?;
    let target = id.clone();
    let op = state
        .operations
        .submit(kind, vec![id], move |_| async move {
            svc.act(&target, action).await.map(|()| OperationOutput::None).map_err(|e| failure(&e))
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(accepted(&op))
}

/// `GET …/logs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Last N lines (default 100, at most 10000).
    tail: Option<u32>,
    /// RFC 3339 or Unix ms.
    since: Option<String>,
    /// Include timestamps (default true).
    timestamps: Option<bool>,
}

/// A log line.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLineDto {
    /// RFC 3339, when known.
    pub timestamp: Option<String>,
    /// `stdout`, `stderr` or `console`.
    pub stream: String,
    /// The text.
    pub line: String,
}

/// Log lines.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogsDto {
    /// Oldest first.
    pub lines: Vec<LogLineDto>,
}

/// The container's recent output.
#[utoipa::path(get, path = "/containers/{id}/logs", tag = "containers", operation_id = "container_logs",
    params(("id" = String, Path, description = "Container id"), LogParams),
    responses(
        (status = 200, description = "Log lines", body = LogsDto),
        (status = 400, description = "Malformed `since`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn container_logs(
    State(state): State<Shared>,
    Path(id): Path<String>,
    ApiQuery(p): ApiQuery<LogParams>,
) -> Result<axum::Json<LogsDto>, ApiError> {
    let since = match p.since.as_deref() {
        None => None,
        Some(s) => {
            Some(parse_instant(s).ok_or_else(|| ApiError::bad_request("since", "expected RFC 3339 or Unix ms"))?)
        }
    };
    let timestamps = p.timestamps.unwrap_or(true);
    let query = LogQuery { tail: Some(p.tail.unwrap_or(100).min(10_000)), since, timestamps };
    let lines = service(&state)?.logs(&id, query).await.map_err(container_error)?;
    Ok(axum::Json(LogsDto {
        lines: lines
            .into_iter()
            .map(|l| LogLineDto {
                timestamp: if timestamps { l.timestamp.map(rfc3339) } else { None },
                stream: l.stream.as_str().to_owned(),
                line: l.line,
            })
            .collect(),
    }))
}

/// Body of `POST …/exec`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequestDto {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Seconds before the command is abandoned (default 30, at most 600).
    pub timeout_secs: Option<u64>,
    /// Standard input.
    pub stdin: Option<String>,
}

/// What the command produced.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecResultDto {
    /// Exit code; null when the timeout hit.
    pub exit_code: Option<i64>,
    /// Standard output (capped).
    pub stdout: String,
    /// Standard error (capped).
    pub stderr: String,
    /// Wall time.
    pub duration_ms: u64,
    /// Output was cut at the cap, or the timeout hit.
    pub truncated: bool,
}

/// Most bytes of each stream an exec keeps.
pub const EXEC_OUTPUT_CAP: usize = 1 << 20;

/// Runs a command in a running container.
#[utoipa::path(post, path = "/containers/{id}/exec", tag = "containers", operation_id = "container_exec",
    params(("id" = String, Path, description = "Container id")),
    request_body = ExecRequestDto,
    responses(
        (status = 200, description = "Finished (or timed out)", body = ExecResultDto),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The container is not running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty command or bad timeout", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn container_exec(
    State(state): State<Shared>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequestDto>,
) -> Result<axum::Json<ExecResultDto>, ApiError> {
    let timeout = req.timeout_secs.unwrap_or(30);
    if timeout == 0 || timeout > 600 {
        return Err(ApiError::validation(vec![FieldError::new("timeout_secs", "must be 1 to 600")]));
    }
    let request = ExecRequest {
        command: req.command,
        env: req.env,
        workdir: req.workdir,
        stdin: req.stdin,
        timeout_ms: timeout * 1000,
        output_cap_bytes: EXEC_OUTPUT_CAP,
    };
    let r = service(&state)?.exec(&id, &request).await.map_err(container_error)?;
    Ok(axum::Json(ExecResultDto {
        exit_code: r.exit_code,
        stdout: r.stdout,
        stderr: r.stderr,
        duration_ms: r.duration_ms,
        truncated: r.truncated,
    }))
}

/// Resource use, from the container's cgroup.
#[utoipa::path(get, path = "/containers/{id}/stats", tag = "containers", operation_id = "container_stats",
    params(("id" = String, Path, description = "Container id")),
    responses(
        (status = 200, description = "As in a snapshot's `containers`", body = ContainerStatsDto),
        (status = 404, description = "No such container", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Its runtime is unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn container_stats(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<axum::Json<ContainerStatsDto>, ApiError> {
    let stats = service(&state)?.stats(&id).await.map_err(container_error)?;
    Ok(axum::Json(ContainerStatsDto::from(&stats)))
}

/// Body of `POST /api/v1/containers/bulk`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// `start`, `stop`, `restart` or `delete`.
    pub action: String,
    /// Container ids (1..=500).
    pub ids: Vec<String>,
    /// At most this many at once (default 4, 1..=32).
    pub max_parallel: Option<usize>,
}

/// One action on many containers, as one operation with a result per id.
///
/// Containers of a runtime that is down fail one by one (their item's
/// `error.code` is `RUNTIME_UNAVAILABLE`); the others go ahead.
#[utoipa::path(post, path = "/containers/bulk", tag = "containers", operation_id = "bulk_action",
    request_body = BulkRequest,
    responses(
        (status = 202, description = "Accepted; `result.items` has one entry per id", body = super::operations::OperationDto),
        (status = 422, description = "Unknown action, no ids, or max_parallel out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn bulk_action(State(state): State<Shared>, ApiJson(req): ApiJson<BulkRequest>) -> Result<Response, ApiError> {
    let svc = service(&state)?;
    let mut errors = Vec::new();
    if !matches!(req.action.as_str(), "start" | "stop" | "restart" | "delete") {
        errors.push(FieldError::new("action", "expected start, stop, restart or delete"));
    }
    if req.ids.is_empty() || req.ids.len() > 500 {
        errors.push(FieldError::new("ids", "give 1 to 500 ids"));
    }
    let parallel = req.max_parallel.unwrap_or(4);
    if !(1..=32).contains(&parallel) {
        errors.push(FieldError::new("max_parallel", "must be 1 to 32"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let action = req.action;
    let ids = req.ids;
    let op = state
        .operations
        .submit(OperationKind::ContainerBulk, ids.clone(), move |progress| async move {
            let total = ids.len();
            let done = std::sync::atomic::AtomicUsize::new(0);
            let items: Vec<BulkItem> = futures_util::stream::iter(ids.into_iter().map(|id| {
                let svc = Arc::clone(&svc);
                let action = action.clone();
                let progress = progress.clone();
                let done = &done;
                async move {
                    let result = match action.as_str() {
                        "delete" => svc.delete(&id, true).await,
                        other => match parse_action(other, 10) {
                            Some((a, _)) => svc.act(&id, a).await,
                            None => Err(ContainerError::Invalid(vec![])),
                        },
                    };
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    progress.set(u8::try_from(n * 100 / total.max(1)).unwrap_or(100), format!("{n} of {total}")).await;
                    BulkItem { id, succeeded: result.is_ok(), error: result.err().map(|e| failure(&e)) }
                }
            }))
            .buffered(parallel)
            .collect()
            .await;
            Ok(OperationOutput::Bulk(items))
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(accepted(&op))
}
