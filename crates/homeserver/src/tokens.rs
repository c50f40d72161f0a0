//! API token secrets at the edge: generation, hashing, and the in-memory
//! lookup table every request is authenticated against.
//!
//! A token is `hs_` followed by 64 hex digits (256 random bits). Only its
//! SHA-256 is stored; the secret is shown once, at creation. Lookups never
//! touch the database: the table is reloaded when this process creates or
//! revokes a token, and within a second when another process (the CLI) does.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use homeserver_domain::{ApiToken, Clock, RepositoryError, TokenHash, TokenId, TokenRepository};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::auth::{AuthFailure, Authenticator, Principal};

/// Every token starts with this, so scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "hs_";
const SECRET_HEX_LEN: usize = 64;

/// A freshly generated secret and its hash.
pub struct NewSecret {
    /// The token to show once.
    pub token: String,
    /// What is stored.
    pub hash: TokenHash,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret").field("token", &"<redacted>").finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Generates a token from 256 bits of the operating system's randomness.
pub fn generate() -> anyhow::Result<NewSecret> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let hash = hash_token(&token).ok_or_else(|| anyhow::anyhow!("generated token failed its own format check"))?;
    Ok(NewSecret { token, hash })
}

/// A new token id (not secret).
pub fn new_id() -> TokenId {
    TokenId::new(uuid::Uuid::new_v4().to_string())
}

/// The stored hash of a well-formed token, `None` for anything else.
pub fn hash_token(token: &str) -> Option<TokenHash> {
    let secret = token.strip_prefix(TOKEN_PREFIX)?;
    if secret.len() != SECRET_HEX_LEN || !secret.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    TokenHash::from_hex(hex(&Sha256::digest(token.as_bytes())))
}

/// The credentials a request carries: `Authorization: Bearer …`, or for a
/// WebSocket upgrade also `?access_token=…`.
fn credentials(parts: &Parts) -> Result<Option<&str>, AuthFailure> {
    if let Some(value) = parts.headers.get(AUTHORIZATION) {
        let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Malformed);
        }
        return Ok(Some(token.trim()));
    }
    let is_upgrade = parts
        .headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade && let Some(query) = parts.uri.query() {
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("access_token=") {
                return Ok(Some(token));
            }
        }
    }
    Ok(None)
}

/// The in-memory token table and the authenticator over it.
pub struct TokenTable {
    repository: Arc<dyn TokenRepository>,
    clock: Arc<dyn Clock>,
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    revision: i64,
    by_hash: HashMap<TokenHash, (ApiToken, Arc<Principal>)>,
}

impl TokenTable {
    /// Loads every token from `repository`.
    pub async fn load(repository: Arc<dyn TokenRepository>, clock: Arc<dyn Clock>) -> Result<Self, RepositoryError> {
        let me = Self { repository, clock, table: RwLock::new(Table::default()) };
        me.reload().await?;
        Ok(me)
    }

    /// Re-reads every token (after a create or revoke).
    pub async fn reload(&self) -> Result<(), RepositoryError> {
        let revision = self.repository.revision().await?;
        let all = self.repository.all_with_hashes().await?;
        let mut table = Table { revision, ..Table::default() };
        for (hash, token) in all {
            let principal = Arc::new(Principal {
                name: token.name.clone(),
                scope: token.scope(),
                token_id: Some(token.id.clone()),
            });
            table.by_hash.insert(hash, (token, principal));
        }
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        Ok(())
    }

    /// Reloads whenever the store's revision moves (another process created
    /// or revoked a token), checking every `every`, until `shutdown` changes.
    pub async fn follow(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {}
            }
            let known = self.table.read().unwrap_or_else(PoisonError::into_inner).revision;
            match self.repository.revision().await {
                Ok(r) if r != known => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "could not reload tokens");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not check tokens for changes"),
            }
        }
    }
}

impl Authenticator for TokenTable {
    fn authenticate(&self, parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
        let Some(token) = credentials(parts)? else { return Ok(None) };
        let hash = hash_token(token).ok_or(AuthFailure::Invalid)?;
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let (token, principal) = table.by_hash.get(&hash).ok_or(AuthFailure::Invalid)?;
        if !token.is_active(self.clock.now()) {
            return Err(AuthFailure::Invalid);
        }
        Ok(Some(Arc::clone(principal)))
    }
}

/// Token administration that keeps the lookup table current: a token
/// created or revoked here is usable (or refused) on the very next request.
pub struct TokenAdmin {
    service: homeserver_domain::TokenService,
    table: Option<Arc<TokenTable>>,
}

impl TokenAdmin {
    /// Administration over `service`, refreshing `table` after each change.
    pub fn new(service: homeserver_domain::TokenService, table: Option<Arc<TokenTable>>) -> Self {
        Self { service, table }
    }

    async fn refresh(&self) -> Result<(), homeserver_domain::TokenError> {
        if let Some(table) = &self.table {
            table.reload().await?;
        }
        Ok(())
    }

    /// Creates a token (see [`homeserver_domain::TokenService::create`]).
    pub async fn create(
        &self,
        id: TokenId,
        name: &str,
        scopes: Vec<homeserver_domain::Scope>,
        expires_at: Option<homeserver_domain::UnixMillis>,
        hash: TokenHash,
    ) -> Result<ApiToken, homeserver_domain::TokenError> {
        let token = self.service.create(id, name, scopes, expires_at, hash).await?;
        self.refresh().await?;
        Ok(token)
    }

    /// Every token.
    pub async fn list(&self) -> Result<Vec<ApiToken>, homeserver_domain::TokenError> {
        self.service.list().await
    }

    /// Revokes a token; refused from the next request on.
    pub async fn revoke(&self, id: &TokenId) -> Result<ApiToken, homeserver_domain::TokenError> {
        let token = self.service.revoke(id).await?;
        self.refresh().await?;
        Ok(token)
    }

    /// No token exists yet.
    pub async fn is_empty(&self) -> Result<bool, homeserver_domain::TokenError> {
        self.service.is_empty().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_unique_prefixed_and_hash_to_their_stored_form() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("hs_") && a.token.len() == 3 + 64);
        assert_eq!(hash_token(&a.token), Some(a.hash.clone()));
        assert_ne!(a.hash.as_str(), &a.token[3..], "the hash is not the secret");
        assert!(!format!("{a:?}").contains(&a.token[3..]), "Debug never shows the secret");
    }

    #[test]
    fn malformed_tokens_do_not_hash() {
        for bad in
            ["", "hs_", "hs_xyz", "xx_0000", &format!("hs_{}", "G".repeat(64)), &format!("hs_{}", "a".repeat(65))]
        {
            assert_eq!(hash_token(bad), None, "{bad}");
        }
    }

    fn parts(req: axum::http::Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn credentials_come_from_bearer_or_from_the_query_of_an_upgrade_only() {
        let p = parts(axum::http::Request::get("/x").header("authorization", "Bearer hs_abc").body(()).unwrap());
        assert_eq!(credentials(&p), Ok(Some("hs_abc")));
        let p = parts(axum::http::Request::get("/x").header("authorization", "bearer  hs_abc ").body(()).unwrap());
        assert_eq!(credentials(&p), Ok(Some("hs_abc")));
        let p = parts(axum::http::Request::get("/x").header("authorization", "Basic dXNlcg==").body(()).unwrap());
        assert_eq!(credentials(&p), Err(AuthFailure::Malformed));
        let p = parts(axum::http::Request::get("/x").header("authorization", "Bearer").body(()).unwrap());
        assert_eq!(credentials(&p), Err(AuthFailure::Malformed));
        let p = parts(axum::http::Request::get("/x?access_token=hs_q").body(()).unwrap());
        assert_eq!(credentials(&p), Ok(None), "not an upgrade");
        let p = parts(
            axum::http::Request::get("/ws?a=1&access_token=hs_q").header("upgrade", "websocket").body(()).unwrap(),
        );
        assert_eq!(credentials(&p), Ok(Some("hs_q")));
    }
}
