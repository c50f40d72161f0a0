//! The authentication seam every route passes through, and the scope each
//! route declares beside its registration.
//!
//! [`authenticate`] runs before every route and stores the caller's
//! [`Principal`] in the request's extensions; [`scoped`] wraps a route's
//! handlers with the check of its [`Scope`] and records that scope in the
//! OpenAPI operation (`x-required-scope`). Routes registered with [`public`]
//! need no principal. The [`Authenticator`] decides who the caller is: this
//! build ships [`OpenAccess`], which lets every caller act as a local admin;
//! the token layer replaces it without touching any route.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::api::error::{ApiError, ErrorCode};

/// What a caller may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every GET and WebSocket stream.
    Read,
    /// Container lifecycle, exec, cancelling operations, device rescans.
    Operate,
    /// Tokens, webhooks, alert rules, profile/device/config writes, audit.
    Admin,
}

impl Scope {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Name for logs and the audit log (never a secret).
    pub name: String,
    /// Largest scope granted.
    pub scope: Scope,
}

/// Why a request has no principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials, or credentials that are not valid.
    Unauthenticated(&'static str),
}

/// Decides who a request comes from.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The principal of a request, `Ok(None)` when it carries no credentials.
    async fn authenticate(&self, parts: &Parts) -> Result<Option<Principal>, AuthFailure>;
}

/// Every caller is a local administrator (the build without tokens).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenAccess;

#[async_trait]
impl Authenticator for OpenAccess {
    async fn authenticate(&self, _parts: &Parts) -> Result<Option<Principal>, AuthFailure> {
        Ok(Some(Principal { name: "local".to_owned(), scope: Scope::Admin }))
    }
}

/// The outcome of authentication, stored in every request's extensions.
#[derive(Debug, Clone)]
pub struct Caller(pub Result<Option<Principal>, AuthFailure>);

/// Middleware: resolves the caller once per request.
pub async fn authenticate(State(auth): State<Arc<dyn Authenticator>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = auth.authenticate(&parts).await;
    parts.extensions.insert(Caller(caller));
    next.run(Request::from_parts(parts, body)).await
}

async fn require(scope: Scope, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    match caller {
        Some(Ok(Some(p))) if p.scope >= scope => next.run(request).await,
        Some(Ok(Some(_))) => {
            ApiError::new(ErrorCode::Forbidden, format!("this route needs the `{}` scope", scope.as_str()))
                .into_response()
        }
        Some(Err(AuthFailure::Unauthenticated(why))) => ApiError::new(ErrorCode::Unauthorized, why).into_response(),
        // No authentication middleware ran, or no credentials: refuse.
        Some(Ok(None)) | None => ApiError::new(ErrorCode::Unauthorized, "a bearer token is required").into_response(),
    }
}

/// Registers a route that needs `scope`: the handlers refuse callers below
/// it, and the OpenAPI operations say so.
pub fn scoped<S>(scope: Scope, (schemas, mut paths, router): UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    for item in paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in operations.into_iter().flatten() {
            let ext = ExtensionsBuilder::new().add("x-required-scope", scope.as_str()).build();
            match &mut op.extensions {
                Some(existing) => existing.merge(ext),
                None => op.extensions = Some(ext),
            }
        }
    }
    let router =
        router.route_layer(axum::middleware::from_fn(move |req: Request, next: Next| require(scope, req, next)));
    (schemas, paths, router)
}

/// Registers a route anyone may call (health, version, docs).
pub fn public<S>(route: UtoipaMethodRouter<S>) -> UtoipaMethodRouter<S> {
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered() {
        assert!(Scope::Read < Scope::Operate && Scope::Operate < Scope::Admin);
        assert_eq!(Scope::Admin.as_str(), "admin");
    }
}
