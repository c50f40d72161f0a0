//! `/api/v1/tokens`: create (secret shown once), list, revoke.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use homeserver_domain::{ApiToken, Page, Scope, TokenError, TokenId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::dto::{parse_instant, rfc3339};
use super::error::{ApiError, ErrorCode, Problem};
use super::extract::{ApiJson, ApiQuery};
use crate::auth::scoped;
use crate::state::Shared;

pub(crate) fn routes() -> OpenApiRouter<Shared> {
    OpenApiRouter::new()
        .routes(scoped(Scope::Admin, routes!(create_token, list_tokens)))
        .routes(scoped(Scope::Admin, routes!(revoke_token)))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// A name for people (1..=64 characters).
    #[schema(example = "grafana")]
    pub name: String,
    /// Scopes granted: `read`, `operate`, `admin` (each includes the ones before).
    #[schema(example = json!(["read"]))]
    pub scopes: Vec<String>,
    /// Expiry (RFC 3339), omitted for a token that does not expire.
    pub expires_at: Option<String>,
}

/// A token, never with its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenDto {
    /// Id (for revocation).
    pub id: String,
    /// Name.
    pub name: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
}

impl From<&ApiToken> for TokenDto {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// A new token with its secret, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenCreatedDto {
    /// The token.
    #[serde(flatten)]
    pub info: TokenDto,
    /// The secret: send it as `Authorization: Bearer <token>`. It is stored
    /// only as a hash and cannot be shown again.
    pub token: String,
}

/// A page of tokens.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenListDto {
    /// Tokens on this page, newest first.
    pub items: Vec<TokenDto>,
    /// Tokens in all.
    pub total: u64,
    /// Page number.
    pub page: u32,
    /// Page size.
    pub per_page: u32,
}

/// `?page=&per_page=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page, from 1 (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Items per page, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub per_page: Option<u32>,
}

impl PageParams {
    /// The validated page (422 naming the field when out of range).
    pub fn page(&self) -> Result<Page, ApiError> {
        Page::new(self.page.unwrap_or(1), self.per_page.unwrap_or(20)).map_err(ApiError::validation)
    }
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid(errors) => ApiError::validation(errors),
        TokenError::NotFound => ApiError::not_found("no token with that id"),
        TokenError::Repository(e) => ApiError::internal(e),
    }
}

/// Creates a token; its secret is in the answer and nowhere else.
#[utoipa::path(post, path = "/tokens", tag = "tokens", operation_id = "create_token",
    request_body = TokenCreateRequest,
    responses(
        (status = 201, description = "Created; `Location` names it", body = TokenCreatedDto),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not `application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name, scopes or expiry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_token(
    State(state): State<Shared>,
    ApiJson(req): ApiJson<TokenCreateRequest>,
) -> Result<Response, ApiError> {
    let mut errors = Vec::new();
    let mut scopes = Vec::new();
    for (i, s) in req.scopes.iter().enumerate() {
        match s.parse::<Scope>() {
            Ok(scope) => scopes.push(scope),
            Err(e) => errors.push(homeserver_domain::FieldError::new(format!("scopes[{i}]"), e.to_string())),
        }
    }
    let expires_at = match req.expires_at.as_deref().map(|t| (t, parse_instant(t))) {
        None => None,
        Some((_, Some(t))) => Some(t),
        Some((raw, None)) => {
            errors.push(homeserver_domain::FieldError::new("expires_at", format!("{raw:?} is not an RFC 3339 time")));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let secret = crate::tokens::generate().map_err(ApiError::internal)?;
    let token = state
        .tokens
        .create(crate::tokens::new_id(), &req.name, scopes, expires_at, secret.hash)
        .await
        .map_err(token_error)?;
    let body = TokenCreatedDto { info: TokenDto::from(&token), token: secret.token };
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/tokens/{}", token.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Lists tokens (never their secrets), newest first.
#[utoipa::path(get, path = "/tokens", tag = "tokens", operation_id = "list_tokens",
    params(PageParams),
    responses(
        (status = 200, description = "A page of tokens", body = TokenListDto),
        (status = 422, description = "`page` or `per_page` out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_tokens(
    State(state): State<Shared>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<axum::Json<TokenListDto>, ApiError> {
    let page = params.page()?;
    let all = state.tokens.list().await.map_err(token_error)?;
    let items = all
        .iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(page.per_page() as usize)
        .map(TokenDto::from)
        .collect();
    Ok(axum::Json(TokenListDto { items, total: all.len() as u64, page: page.page(), per_page: page.per_page() }))
}

/// Revokes a token; the next request with it gets 401.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", operation_id = "revoke_token",
    params(("id" = String, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_token(State(state): State<Shared>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::new(ErrorCode::NotFound, "no token with that id"));
    }
    state.tokens.revoke(&TokenId::new(id)).await.map_err(token_error)?;
    Ok(StatusCode::NO_CONTENT)
}
