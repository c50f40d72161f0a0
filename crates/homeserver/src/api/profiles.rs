//! `/api/v1/profiles`: reusable container settings.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use homeserver_domain::{
    ConfigOverlay, FieldError, Profile, ProfileError, ProfileInput, ProfilePatch, ProfileView, RestartPolicy, Scope,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::rfc3339;
use super::error::{ApiError, ErrorCode, Problem};
use super::etag::{if_match, with_tag};
use super::extract::{ApiJson, ApiQuery};
use crate::auth::scoped;
use crate::state::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Read, routes!(list_profiles)))
        .routes(scoped(Scope::Admin, routes!(create_profile)))
        .routes(scoped(Scope::Read, routes!(get_profile)))
        .routes(scoped(Scope::Admin, routes!(replace_profile, patch_profile, delete_profile)))
        .routes(scoped(Scope::Admin, routes!(duplicate_profile)))
        .routes(scoped(Scope::Admin, routes!(rename_profile)))
        .routes(scoped(Scope::Admin, routes!(activate_profile)))
        .routes(scoped(Scope::Read, routes!(validate_profile)))
}

/// Container settings where anything may be left out: a profile's
/// settings, or what a creation request lays over its profiles. Set
/// scalars win over earlier layers, `env` and `labels` merge key by key,
/// `devices` append.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverlayDto {
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
    /// Command.
    pub command: Option<Vec<String>>,
    /// `no`, `on-failure`, `always` or `unless-stopped`.
    pub restart_policy: Option<String>,
    /// Host devices: `/dev/…` paths or device ids from `/api/v1/devices`
    /// (resolved to their node when a container is created; a disabled or
    /// absent device is refused then).
    #[serde(default)]
    pub devices: Vec<String>,
}

impl ConfigOverlayDto {
    /// The domain overlay; `prefix` names fields in errors (`config`).
    pub(crate) fn into_domain(self, prefix: &str) -> Result<ConfigOverlay, FieldError> {
        let restart_policy = self
            .restart_policy
            .as_deref()
            .map(str::parse::<RestartPolicy>)
            .transpose()
            .map_err(|e| FieldError::new(format!("{prefix}.restart_policy"), e.message))?;
        Ok(ConfigOverlay {
            cpu_limit: self.cpu_limit,
            memory_limit_bytes: self.memory_limit_bytes,
            pids_limit: self.pids_limit,
            env: self.env,
            labels: self.labels,
            command: self.command,
            restart_policy,
            devices: self.devices,
        })
    }
}

impl From<&ConfigOverlay> for ConfigOverlayDto {
    fn from(c: &ConfigOverlay) -> Self {
        Self {
            cpu_limit: c.cpu_limit,
            memory_limit_bytes: c.memory_limit_bytes,
            pids_limit: c.pids_limit,
            env: c.env.clone(),
            labels: c.labels.clone(),
            command: c.command.clone(),
            restart_policy: c.restart_policy.map(|p| p.as_str().to_owned()),
            devices: c.devices.clone(),
        }
    }
}

/// A profile.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileDto {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The settings.
    pub config: ConfigOverlayDto,
    /// New containers that name no profile get this one.
    pub is_default: bool,
    /// Ids of the containers made with it.
    pub used_by: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl ProfileDto {
    fn new(p: &Profile, used_by: Vec<String>) -> Self {
        Self {
            name: p.name.to_string(),
            description: p.description.clone(),
            config: (&p.config).into(),
            is_default: p.is_default,
            used_by,
            created_at: rfc3339(p.created_at),
            updated_at: rfc3339(p.updated_at),
        }
    }
}

impl From<&ProfileView> for ProfileDto {
    fn from(v: &ProfileView) -> Self {
        Self::new(&v.profile, v.used_by.clone())
    }
}

/// Maps profile failures to the API's codes.
pub(crate) fn profile_error(e: ProfileError) -> ApiError {
    match e {
        ProfileError::Invalid(errors) => ApiError::validation(errors),
        ProfileError::NotFound => ApiError::not_found("no such profile"),
        ProfileError::NameTaken(name) => ApiError::new(ErrorCode::Conflict, format!("a profile named `{name}` exists")),
        ProfileError::InUse(ids) => ApiError::new(
            ErrorCode::ProfileInUse,
            format!("the profile is used by {} container(s): {}", ids.len(), ids.join(", ")),
        ),
        ProfileError::IsDefault => {
            ApiError::new(ErrorCode::Conflict, "the default profile cannot be deleted; activate another profile first")
        }
        ProfileError::PreconditionFailed => {
            ApiError::new(ErrorCode::PreconditionFailed, "the profile changed since that ETag; read it again")
        }
        ProfileError::Repository(e) => ApiError::internal(e),
    }
}

/// A profile answer with its `ETag`.
fn profile_response(status: StatusCode, p: &Profile, used_by: Vec<String>) -> Response {
    let mut response = (status, axum::Json(ProfileDto::new(p, used_by))).into_response();
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/v1/profiles/{}", p.name))
    {
        response.headers_mut().insert(header::LOCATION, location);
    }
    with_tag(response, p.revision)
}

/// `?page=&per_page=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProfileListParams {
    /// Page, from 1.
    page: Option<u32>,
    /// 1..=100 (default 20).
    per_page: Option<u32>,
}

/// A page of profiles.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileListDto {
    /// Profiles on this page, by name.
    pub items: Vec<ProfileDto>,
    /// Profiles in all.
    pub total: u64,
    /// Page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// Every profile, by name.
#[utoipa::path(get, path = "/profiles", tag = "profiles", operation_id = "list_profiles",
    params(ProfileListParams),
    responses(
        (status = 200, description = "A page of profiles", body = ProfileListDto),
        (status = 422, description = "Bad page", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_profiles(
    State(state): State<Shared>,
    ApiQuery(p): ApiQuery<ProfileListParams>,
) -> Result<axum::Json<ProfileListDto>, ApiError> {
    let page = super::tokens::PageParams { page: p.page, per_page: p.per_page }.page()?;
    let views = state.profiles.list().await.map_err(profile_error)?;
    let items = views
        .iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(page.per_page() as usize)
        .map(ProfileDto::from)
        .collect();
    Ok(axum::Json(ProfileListDto { items, total: views.len() as u64, page: page.page(), per_page: page.per_page() }))
}

/// Body of `POST /api/v1/profiles` and `POST /api/v1/profiles/validate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`, unique.
    pub name: String,
    /// Free text (at most 1024 characters).
    #[serde(default)]
    pub description: String,
    /// The settings.
    #[serde(default)]
    pub config: ConfigOverlayDto,
}

impl ProfileRequest {
    fn into_input(self) -> Result<ProfileInput, FieldError> {
        Ok(ProfileInput { name: self.name, description: self.description, config: self.config.into_domain("config")? })
    }
}

/// Creates a profile (not the default: activate it for that).
#[utoipa::path(post, path = "/profiles", tag = "profiles", operation_id = "create_profile",
    request_body = ProfileRequest,
    responses(
        (status = 201, description = "Created; `Location` names it", body = ProfileDto),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (name, limits, unknown device ids)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_profile(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<ProfileRequest>,
) -> Result<Response, ApiError> {
    let input = req.into_input().map_err(|e| ApiError::validation(vec![e]))?;
    let profile = state.profiles.create(&input).await.map_err(profile_error)?;
    Ok(profile_response(StatusCode::CREATED, &profile, Vec::new()))
}

/// One profile; `ETag` for conditional writes.
#[utoipa::path(get, path = "/profiles/{name}", tag = "profiles", operation_id = "get_profile",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "The profile", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_profile(State(state): State<Shared>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let view = state.profiles.get(&name).await.map_err(profile_error)?;
    Ok(profile_response(StatusCode::OK, &view.profile, view.used_by))
}

/// Body of `PUT /api/v1/profiles/{name}`: the whole writable profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileReplaceRequest {
    /// When sent, must be the path's name (rename with `…/rename`).
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The settings (replace the stored ones).
    #[serde(default)]
    pub config: ConfigOverlayDto,
}

/// Replaces a profile's description and settings. Containers made with it
/// keep the config they were created with.
#[utoipa::path(put, path = "/profiles/{name}", tag = "profiles", operation_id = "replace_profile",
    params(("name" = String, Path, description = "Profile name"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    request_body = ProfileReplaceRequest,
    responses(
        (status = 200, description = "The profile, with its new `ETag`", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn replace_profile(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ProfileReplaceRequest>,
) -> Result<Response, ApiError> {
    if req.name.as_deref().is_some_and(|n| n != name) {
        return Err(ApiError::validation(vec![FieldError::new(
            "name",
            "must be the name in the path; rename with POST /api/v1/profiles/{name}/rename",
        )]));
    }
    let config = req.config.into_domain("config").map_err(|e| ApiError::validation(vec![e]))?;
    let profile =
        state.profiles.replace(&name, &req.description, &config, if_match(&headers)).await.map_err(profile_error)?;
    let used_by = state.profiles.get(&name).await.map(|v| v.used_by).unwrap_or_default();
    Ok(profile_response(StatusCode::OK, &profile, used_by))
}

/// Body of `PATCH /api/v1/profiles/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatchRequest {
    /// New description.
    pub description: Option<String>,
    /// Settings laid over the stored ones (set fields win, maps merge,
    /// a non-empty `devices` replaces the list).
    pub config: Option<ConfigOverlayDto>,
}

/// Changes some of a profile's fields.
#[utoipa::path(patch, path = "/profiles/{name}", tag = "profiles", operation_id = "patch_profile",
    params(("name" = String, Path, description = "Profile name"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    request_body = ProfilePatchRequest,
    responses(
        (status = 200, description = "The profile, with its new `ETag`", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn patch_profile(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ProfilePatchRequest>,
) -> Result<Response, ApiError> {
    let config = req.config.map(|c| c.into_domain("config")).transpose().map_err(|e| ApiError::validation(vec![e]))?;
    let patch = ProfilePatch { description: req.description, config };
    let profile = state.profiles.patch(&name, &patch, if_match(&headers)).await.map_err(profile_error)?;
    let used_by = state.profiles.get(&name).await.map(|v| v.used_by).unwrap_or_default();
    Ok(profile_response(StatusCode::OK, &profile, used_by))
}

/// Deletes a profile no container uses (never the default).
#[utoipa::path(delete, path = "/profiles/{name}", tag = "profiles", operation_id = "delete_profile",
    params(("name" = String, Path, description = "Profile name"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`PROFILE_IN_USE`, or `CONFLICT` for the default profile", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_profile(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.profiles.delete(&name, if_match(&headers)).await.map_err(profile_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `…/duplicate` and `…/rename`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNameRequest {
    /// `^[a-z0-9][a-z0-9_-]{0,63}$`, not taken.
    pub new_name: String,
}

/// Copies a profile under a new name.
#[utoipa::path(post, path = "/profiles/{name}/duplicate", tag = "profiles", operation_id = "duplicate_profile",
    params(("name" = String, Path, description = "Profile to copy")),
    request_body = NewNameRequest,
    responses(
        (status = 201, description = "The copy; `Location` names it", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`new_name` is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `new_name`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn duplicate_profile(
    State(state): State<Shared>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewNameRequest>,
) -> Result<Response, ApiError> {
    let copy = state.profiles.duplicate(&name, &req.new_name).await.map_err(profile_error)?;
    Ok(profile_response(StatusCode::CREATED, &copy, Vec::new()))
}

/// Renames a profile; every container's reference follows in the same
/// transaction, and the default stays the default.
#[utoipa::path(post, path = "/profiles/{name}/rename", tag = "profiles", operation_id = "rename_profile",
    params(("name" = String, Path, description = "Profile to rename"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    request_body = NewNameRequest,
    responses(
        (status = 200, description = "The renamed profile", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`new_name` is taken", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `new_name`", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rename_profile(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewNameRequest>,
) -> Result<Response, ApiError> {
    let profile = state.profiles.rename(&name, &req.new_name, if_match(&headers)).await.map_err(profile_error)?;
    let used_by = state.profiles.get(profile.name.as_str()).await.map(|v| v.used_by).unwrap_or_default();
    Ok(profile_response(StatusCode::OK, &profile, used_by))
}

/// Makes a profile the default for new containers (the only one).
#[utoipa::path(post, path = "/profiles/{name}/activate", tag = "profiles", operation_id = "activate_profile",
    params(("name" = String, Path, description = "Profile name")),
    responses(
        (status = 200, description = "The new default", body = ProfileDto),
        (status = 404, description = "No such profile", body = Problem, content_type = "application/problem+json"),
    ))]
async fn activate_profile(State(state): State<Shared>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let profile = state.profiles.activate(&name).await.map_err(profile_error)?;
    let used_by = state.profiles.get(&name).await.map(|v| v.used_by).unwrap_or_default();
    Ok(profile_response(StatusCode::OK, &profile, used_by))
}

/// Dry-run result.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationDto {
    /// No errors.
    pub valid: bool,
    /// What is wrong, field by field.
    pub errors: Vec<super::error::ProblemField>,
}

/// Checks a profile without storing it: the same rules as create (the
/// name is not checked for being taken).
#[utoipa::path(post, path = "/profiles/validate", tag = "profiles", operation_id = "validate_profile",
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "Whether it is valid, with field-level errors", body = ValidationDto),
    ))]
async fn validate_profile(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<ProfileRequest>,
) -> Result<axum::Json<ValidationDto>, ApiError> {
    let errors = match req.into_input() {
        Ok(input) => state.profiles.validate(&input).await.map_err(profile_error)?,
        Err(e) => vec![e],
    };
    let errors: Vec<_> = errors.into_iter().map(super::error::ProblemField::from).collect();
    Ok(axum::Json(ValidationDto { valid: errors.is_empty(), errors }))
}
