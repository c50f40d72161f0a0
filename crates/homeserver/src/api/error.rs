//! One table of error codes, one problem+json renderer (RFC 9457).
//!
//! Handlers return [`ApiError`]. Its response carries the [`Problem`] as an
//! extension; [`finish_problem`] (called by the edge middleware every route
//! passes through) fills in the request id and writes the body, and also
//! turns the bare error responses of lower layers (404 fallback, 405, 408,
//! 413) into problems.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use homeserver_domain::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

/// Media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

macro_rules! codes {
    ($( $variant:ident => $status:ident, $title:literal; )+) => {
        /// Stable error identifiers, one per failure kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum ErrorCode { $( #[doc = $title] $variant, )+ }

        impl ErrorCode {
            /// Every code, for documentation and tests.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// HTTP status answered with this code.
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)+ }
            }

            /// Short human title.
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title,)+ }
            }
        }
    };
}

codes! {
    BadRequest => BAD_REQUEST, "Malformed request";
    Unauthorized => UNAUTHORIZED, "Authentication required";
    Forbidden => FORBIDDEN, "Scope too small";
    NotFound => NOT_FOUND, "Not found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "Method not allowed";
    RequestTimeout => REQUEST_TIMEOUT, "Request timed out";
    Conflict => CONFLICT, "Conflict";
    ContainerRunning => CONFLICT, "Container is running";
    ProfileInUse => CONFLICT, "Profile is in use";
    PreconditionFailed => PRECONDITION_FAILED, "Precondition failed";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "Payload too large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "Unsupported media type";
    ValidationFailed => UNPROCESSABLE_ENTITY, "Validation failed";
    RateLimited => TOO_MANY_REQUESTS, "Too many requests";
    Internal => INTERNAL_SERVER_ERROR, "Internal error";
    RuntimeUnavailable => SERVICE_UNAVAILABLE, "Container runtime unavailable";
    ServiceUnavailable => SERVICE_UNAVAILABLE, "Service unavailable";
}

impl ErrorCode {
    /// The identifier as sent (`NOT_FOUND`).
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }

    /// The code a bare error status from a lower layer maps to.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::BAD_REQUEST => Self::BadRequest,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::CONFLICT => Self::Conflict,
            StatusCode::PRECONDITION_FAILED => Self::PreconditionFailed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Self::ValidationFailed,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

/// A failing field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProblemField {
    /// Path of the field (`points`, `config.memory_limit_bytes`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl From<FieldError> for ProblemField {
    fn from(e: FieldError) -> Self {
        Self { field: e.field, message: e.message }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"type": "https://homeserver.dev/problems/validation-failed", "title": "Validation failed", "status": 422, "detail": "the request has invalid fields", "code": "VALIDATION_FAILED", "request_id": "3f7c1a4e-8d2b-4a51-9d7e-0c6f5b2a9e11", "errors": [{"field": "points", "message": "must be between 1 and 2000"}]}))]
pub struct Problem {
    /// URI naming the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Stable error identifier.
    pub code: ErrorCode,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
    /// Failing fields, for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

/// An error a handler answers with.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
    errors: Vec<ProblemField>,
}

impl ApiError {
    /// An error with a code and a detail for the client.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into(), errors: Vec::new() }
    }

    /// 400 naming the malformed field.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code: ErrorCode::BadRequest,
            detail: format!("{field}: {message}"),
            errors: vec![ProblemField { field: field.to_owned(), message }],
        }
    }

    /// 422 with every failing field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            code: ErrorCode::ValidationFailed,
            detail: "the request has invalid fields".to_owned(),
            errors: errors.into_iter().map(Into::into).collect(),
        }
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    /// 5xx: the cause is logged here (inside the request's span, with its
    /// request id) and never shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "an internal error occurred; the request id locates it in the logs")
    }

    /// 503 for a dependency that is down.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(ErrorCode::ServiceUnavailable, "a dependency is unavailable; try again later")
    }

    /// The code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    fn problem(&self, request_id: Option<String>) -> Problem {
        Problem {
            kind: problem_type(self.code),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            request_id,
            errors: self.errors.clone(),
        }
    }
}

fn problem_type(code: ErrorCode) -> String {
    format!("https://homeserver.dev/problems/{}", code.as_str().to_ascii_lowercase().replace('_', "-"))
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem(None);
        let mut response = (self.code.status(), Json(&problem)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.code == ErrorCode::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response.extensions_mut().insert(problem);
        response
    }
}

/// Turns an error response into problem+json carrying `request_id`:
/// handlers' [`ApiError`]s get the id filled in; bare or plain-text errors of
/// lower layers (router fallback, 405, timeout, body limit) become problems.
/// Success responses and handlers' own JSON documents pass untouched.
pub fn finish_problem(response: Response, request_id: Option<&HeaderValue>) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let own_document = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if own_document && response.extensions().get::<Problem>().is_none() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut problem = match parts.extensions.remove::<Problem>() {
        Some(p) => p,
        None => {
            let code = ErrorCode::for_status(status);
            let detail = match code {
                ErrorCode::NotFound => "no such route".to_owned(),
                ErrorCode::MethodNotAllowed => "this route does not accept that method".to_owned(),
                ErrorCode::RequestTimeout => "the request took too long".to_owned(),
                ErrorCode::PayloadTooLarge => "the request body is over the size limit".to_owned(),
                _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
            };
            drop(body);
            let mut p = ApiError::new(code, detail).problem(None);
            p.status = status.as_u16();
            p
        }
    };
    problem.request_id = request_id.and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_screaming_snake_case_and_statuses_are_errors() {
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(!s.is_empty() && s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
        assert_eq!(ErrorCode::ValidationFailed.as_str(), "VALIDATION_FAILED");
        assert_eq!(ErrorCode::ContainerRunning.status(), StatusCode::CONFLICT);
    }

    #[test]
    fn bare_statuses_map_to_their_codes() {
        assert_eq!(ErrorCode::for_status(StatusCode::PAYLOAD_TOO_LARGE), ErrorCode::PayloadTooLarge);
        assert_eq!(ErrorCode::for_status(StatusCode::IM_A_TEAPOT), ErrorCode::BadRequest);
        assert_eq!(ErrorCode::for_status(StatusCode::BAD_GATEWAY), ErrorCode::Internal);
    }
}
