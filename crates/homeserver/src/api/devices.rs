//! `/api/v1/devices`: the host's device registry.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use homeserver_domain::{Device, DeviceError, DeviceFilter, DeviceKind, DevicePatch, FieldError, Scope};
use serde::{Deserialize, Deserializer, Serialize};
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
        .routes(scoped(Scope::Read, routes!(list_devices)))
        .routes(scoped(Scope::Read, routes!(get_device)))
        .routes(scoped(Scope::Admin, routes!(patch_device)))
        .routes(scoped(Scope::Admin, routes!(forget_device)))
        .routes(scoped(Scope::Operate, routes!(rescan_devices)))
}

/// A device of the host.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceDto {
    /// Stable id: the same hardware keeps it across rescans and restarts.
    pub id: String,
    /// `disk`, `partition`, `network`, `usb`, `gpu`, `serial`, `input` or `other`.
    pub kind: String,
    /// Kernel name (`sda`, `eth0`, `card0`).
    pub name: String,
    /// The operator's name for it.
    pub alias: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Serial number (MAC address for interfaces).
    pub serial: Option<String>,
    /// Device node (`/dev/sda`), if it has one.
    pub path: Option<String>,
    /// Monitored and assignable to containers.
    pub enabled: bool,
    /// Seen by the last scan.
    pub present: bool,
    /// The operator's labels.
    pub labels: BTreeMap<String, String>,
    /// Discovery facts (`size_bytes`, `driver`, `bus_path` …).
    pub attributes: BTreeMap<String, String>,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
}

impl From<&Device> for DeviceDto {
    fn from(d: &Device) -> Self {
        Self {
            id: d.id.clone(),
            kind: d.kind.as_str().to_owned(),
            name: d.name.clone(),
            alias: d.alias.clone(),
            vendor: d.vendor.clone(),
            model: d.model.clone(),
            serial: d.serial.clone(),
            path: d.path.clone(),
            enabled: d.enabled,
            present: d.present,
            labels: d.labels.clone(),
            attributes: d.attributes.clone(),
            first_seen: rfc3339(d.first_seen),
            last_seen: rfc3339(d.last_seen),
        }
    }
}

/// Maps device failures to the API's codes.
pub(crate) fn device_error(e: DeviceError) -> ApiError {
    match e {
        DeviceError::Invalid(errors) => ApiError::validation(errors),
        DeviceError::NotFound => ApiError::not_found("no such device"),
        DeviceError::PreconditionFailed => {
            ApiError::new(ErrorCode::PreconditionFailed, "the device changed since that ETag; read it again")
        }
        DeviceError::Scan(e) => ApiError::internal(e),
        DeviceError::Repository(e) => ApiError::internal(e),
    }
}

/// `GET /api/v1/devices` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListParams {
    /// Only this kind.
    kind: Option<String>,
    /// Only present (`true`) or absent (`false`) devices.
    present: Option<bool>,
    /// Only enabled (`true`) or disabled (`false`) devices.
    enabled: Option<bool>,
    /// Page, from 1.
    page: Option<u32>,
    /// 1..=100 (default 20).
    per_page: Option<u32>,
}

/// A page of devices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceListDto {
    /// Devices on this page, by kind then name.
    pub items: Vec<DeviceDto>,
    /// Matching devices in all.
    pub total: u64,
    /// Page.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// The registry's devices, present or not.
#[utoipa::path(get, path = "/devices", tag = "devices", operation_id = "list_devices",
    params(DeviceListParams),
    responses(
        (status = 200, description = "A page of devices", body = DeviceListDto),
        (status = 422, description = "Bad filter or page", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_devices(
    State(state): State<Shared>,
    ApiQuery(p): ApiQuery<DeviceListParams>,
) -> Result<axum::Json<DeviceListDto>, ApiError> {
    let page = super::tokens::PageParams { page: p.page, per_page: p.per_page }.page()?;
    let kind = p
        .kind
        .as_deref()
        .map(str::parse::<DeviceKind>)
        .transpose()
        .map_err(|e| ApiError::validation(vec![FieldError::new("kind", e.to_string())]))?;
    let filter = DeviceFilter { kind, present: p.present, enabled: p.enabled };
    let devices = state.devices.list(filter).await.map_err(device_error)?;
    let items = devices
        .iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(page.per_page() as usize)
        .map(DeviceDto::from)
        .collect();
    Ok(axum::Json(DeviceListDto { items, total: devices.len() as u64, page: page.page(), per_page: page.per_page() }))
}

/// One device; `ETag` for conditional writes.
#[utoipa::path(get, path = "/devices/{id}", tag = "devices", operation_id = "get_device",
    params(("id" = String, Path, description = "Device id")),
    responses(
        (status = 200, description = "The device", body = DeviceDto),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_device(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let device = state.devices.get(&id).await.map_err(device_error)?;
    Ok(with_tag(axum::Json(DeviceDto::from(&device)).into_response(), device.revision))
}

/// Body of `PATCH /api/v1/devices/{id}`: only the fields sent change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatchRequest {
    /// A name for people (at most 64 characters); `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub alias: Option<Option<String>>,
    /// `false` leaves the device out of monitoring and containers.
    pub enabled: Option<bool>,
    /// Replaces every label (at most 64; keys ≤ 128, values ≤ 512 characters).
    pub labels: Option<BTreeMap<String, String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes a device's alias, labels or `enabled`. A disabled disk or
/// interface leaves snapshots, history and `/metrics` from the next sample.
#[utoipa::path(patch, path = "/devices/{id}", tag = "devices", operation_id = "patch_device",
    params(("id" = String, Path, description = "Device id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    request_body = DevicePatchRequest,
    responses(
        (status = 200, description = "The changed device, with its new `ETag`", body = DeviceDto),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn patch_device(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<DevicePatchRequest>,
) -> Result<Response, ApiError> {
    let patch = DevicePatch { alias: req.alias, enabled: req.enabled, labels: req.labels };
    let device = state.devices.patch(&id, &patch, if_match(&headers)).await.map_err(device_error)?;
    Ok(with_tag(axum::Json(DeviceDto::from(&device)).into_response(), device.revision))
}

/// Forgets a device; one still present returns as new on the next scan.
#[utoipa::path(delete, path = "/devices/{id}", tag = "devices", operation_id = "forget_device",
    params(("id" = String, Path, description = "Device id"),
        ("If-Match" = Option<String>, Header, description = "The `ETag` read before; 412 when it changed since")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "`If-Match` does not match", body = Problem, content_type = "application/problem+json"),
    ))]
async fn forget_device(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.devices.forget(&id, if_match(&headers)).await.map_err(device_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a rescan changed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RescanDto {
    /// Ids newly present (new, forgotten before, or back).
    pub added: Vec<String>,
    /// Ids no longer present.
    pub removed: Vec<String>,
    /// Ids whose facts changed.
    pub updated: Vec<String>,
}

/// Scans the host's devices now.
#[utoipa::path(post, path = "/devices/rescan", tag = "devices", operation_id = "rescan_devices",
    responses(
        (status = 200, description = "What changed", body = RescanDto),
    ))]
async fn rescan_devices(State(state): State<Shared>) -> Result<axum::Json<RescanDto>, ApiError> {
    let report = state.devices.rescan().await.map_err(device_error)?;
    Ok(axum::Json(RescanDto { added: report.added, removed: report.removed, updated: report.updated }))
}
