//! Extractors whose rejections use the API's problem format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// A query string; a malformed one is a 400 naming the field when it can.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Self(q.0)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let text = e.body_text();
                let detail = text.strip_prefix("Failed to deserialize query string: ").unwrap_or(&text);
                match detail.split_once(": ") {
                    Some((field, message)) if !field.contains(' ') => Err(ApiError::bad_request(field, message)),
                    _ => Err(ApiError::new(ErrorCode::BadRequest, detail.to_owned())),
                }
            }
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}

/// A JSON body: wrong content type → 415, bad syntax → 400, wrong shape →
/// 422, over the limit → 413.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(j) => Ok(Self(j.0)),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::new(ErrorCode::UnsupportedMediaType, "send the body as `application/json`"))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                let detail =
                    text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(&text);
                let (field, message) = detail.split_once(": ").unwrap_or(("body", detail));
                Err(ApiError::validation(vec![homeserver_domain::FieldError::new(field, message)]))
            }
            Err(JsonRejection::BytesRejection(e)) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(ErrorCode::PayloadTooLarge, "the request body is over the size limit"))
            }
            Err(e) => Err(ApiError::new(ErrorCode::BadRequest, e.body_text())),
        }
    }
}
