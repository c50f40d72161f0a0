//! API token secrets at the edge: generation, hashing, and the in-memory
//! lookup table every request is authenticated against.
//!
//! A token is `hs_` followed by 64 hex digits (256 random bits). Only its
//! SHA-256 is stored; the secret is shown once, at creation. Lookups never
//! touch the database: the table is reloaded when this process creates or
//! revokes a token, and within a second when another process (the CLI) does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    if let Some(value) = crate::auth::header(&parts.headers, &AUTHORIZATION) {
        // Visible ASCII, spaces and tabs only: `trim_ascii` trims what `trim` would.
        let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
        return match value.split_at_checked(7) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer ") => Ok(Some(token.trim_ascii())),
            _ => Err(AuthFailure::Malformed),
        };
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
///
/// Every worker thread also remembers the last few tokens it accepted
/// (compared in constant time), so a client that sends the same token on
/// every request costs no SHA-256 and no shared lock; any reload (a create
/// or revoke) invalidates those memories at once.
pub struct TokenTable {
    repository: Arc<dyn TokenRepository>,
    clock: Arc<dyn Clock>,
    table: RwLock<Table>,
    /// Distinguishes tables in one process (tests run several).
    id: u64,
    /// Moves on every reload; remembered tokens of older generations are forgotten.
    generation: AtomicU64,
}

/// Length of a well-formed token.
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + SECRET_HEX_LEN;
/// Tokens each worker thread remembers.
const REMEMBERED: usize = 4;

struct Remembered {
    table: u64,
    generation: u64,
    token: [u8; TOKEN_LEN],
    expires_at: Option<homeserver_domain::UnixMillis>,
    principal: Arc<Principal>,
}

thread_local! {
    static ACCEPTED: RefCell<(usize, [Option<Remembered>; REMEMBERED])> = const { RefCell::new((0, [const { None }; REMEMBERED])) };
}

/// Equal bytes, in time that depends only on the length.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[derive(Default)]
struct Table {
    revision: i64,
    by_hash: HashMap<TokenHash, (ApiToken, Arc<Principal>)>,
}

impl TokenTable {
    /// Loads every token from `repository`.
    pub async fn load(repository: Arc<dyn TokenRepository>, clock: Arc<dyn Clock>) -> Result<Self, RepositoryError> {
        static TABLES: AtomicU64 = AtomicU64::new(1);
        let me = Self {
            repository,
            clock,
            table: RwLock::new(Table::default()),
            id: TABLES.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        };
        me.reload().await?;
        Ok(me)
    }

    /// Re-reads every token (after a create or revoke).
    pub async fn reload(&self) -> Result<(), RepositoryError> {
        let revision = self.repository.revision().await?;
        let all = self.repository.all_with_hashes().await?;
        let mut guard = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let mut table = Table { revision, ..Table::default() };
        for (hash, token) in all {
            // A token keeps its rate budget across reloads.
            let budget = guard.by_hash.get(&hash).and_then(|(_, p)| p.budget.clone()).unwrap_or_default();
            let principal = Arc::new(Principal {
                name: token.name.clone(),
                scope: token.scope(),
                token_id: Some(token.id.clone()),
                budget: Some(budget),
            });
            table.by_hash.insert(hash, (token, principal));
        }
        *guard = table;
        self.generation.fetch_add(1, Ordering::Release);
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

impl TokenTable {
    /// A token this thread accepted since the last reload.
    fn remembered(
        &self,
        token: &[u8],
        generation: u64,
    ) -> Option<(Arc<Principal>, Option<homeserver_domain::UnixMillis>)> {
        ACCEPTED.with_borrow(|(_, slots)| {
            slots.iter().flatten().find_map(|r| {
                (r.table == self.id && r.generation == generation && constant_time_eq(&r.token, token))
                    .then(|| (Arc::clone(&r.principal), r.expires_at))
            })
        })
    }

    fn remember(
        &self,
        token: &[u8],
        generation: u64,
        principal: &Arc<Principal>,
        expires_at: Option<homeserver_domain::UnixMillis>,
    ) {
        let Ok(token) = <[u8; TOKEN_LEN]>::try_from(token) else { return };
        ACCEPTED.with_borrow_mut(|(next, slots)| {
            // Replace a stale memory of this table first, else round-robin.
            let slot = slots
                .iter()
                .position(|s| s.as_ref().is_none_or(|r| r.table == self.id && r.generation != generation))
                .unwrap_or(*next % REMEMBERED);
            *next = slot + 1;
            // A copy of this thread's own: the reference count of a shared
            // `Arc` would bounce between cores on every request (the
            // budget inside stays shared, as it must).
            let principal = Arc::new(Principal::clone(principal));
            slots[slot] = Some(Remembered { table: self.id, generation, token, expires_at, principal });
        });
    }
}

impl Authenticator for TokenTable {
    fn authenticate(&self, parts: &Parts) -> Result<Option<Arc<Principal>>, AuthFailure> {
        let generation = self.generation.load(Ordering::Acquire);
        let known = |remembered: Option<(Arc<Principal>, Option<homeserver_domain::UnixMillis>)>| {
            remembered.map(|(principal, expires_at)| match expires_at {
                Some(at) if self.clock.now() >= at => Err(AuthFailure::Invalid),
                _ => Ok(Some(principal)),
            })
        };
        // The usual request, `Bearer <a token this thread accepted before>`,
        // is recognised from the header's bytes (a remembered token is
        // well-formed, so the value needs no parsing).
        if let Some(value) = crate::auth::header(&parts.headers, &AUTHORIZATION)
            && let Some((scheme, token)) = value.as_bytes().split_at_checked(7)
            && token.len() == TOKEN_LEN
            && scheme.eq_ignore_ascii_case(b"bearer ")
            && let Some(answer) = known(self.remembered(token, generation))
        {
            return answer;
        }
        let Some(token) = credentials(parts)? else { return Ok(None) };
        if token.len() == TOKEN_LEN
            && let Some(answer) = known(self.remembered(token.as_bytes(), generation))
        {
            return answer;
        }
        let hash = hash_token(token).ok_or(AuthFailure::Invalid)?;
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let (stored, principal) = table.by_hash.get(&hash).ok_or(AuthFailure::Invalid)?;
        if !stored.is_active(self.clock.now()) {
            return Err(AuthFailure::Invalid);
        }
        self.remember(token.as_bytes(), generation, principal, stored.expires_at);
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
        for malformed in ["Bearer", "Bearerhs_abc", "Bearer\ths_abc", "Bear hs_abc", "hs_abc", ""] {
            let p = parts(axum::http::Request::get("/x").header("authorization", malformed).body(()).unwrap());
            assert_eq!(credentials(&p), Err(AuthFailure::Malformed), "{malformed:?}");
        }
        let p = parts(axum::http::Request::get("/x").header("authorization", "BEARER \ths_abc\t").body(()).unwrap());
        assert_eq!(credentials(&p), Ok(Some("hs_abc")));
        let p = parts(axum::http::Request::get("/x?access_token=hs_q").body(()).unwrap());
        assert_eq!(credentials(&p), Ok(None), "not an upgrade");
        let p = parts(
            axum::http::Request::get("/ws?a=1&access_token=hs_q").header("upgrade", "websocket").body(()).unwrap(),
        );
        assert_eq!(credentials(&p), Ok(Some("hs_q")));
    }

    mod remembered {
        use std::sync::Mutex;
        use std::sync::atomic::AtomicI64;

        use homeserver_domain::{MockClock, MockTokenRepository, Scope, UnixMillis};

        use super::*;

        fn token(id: &str, expires_at: Option<i64>, revoked: bool) -> ApiToken {
            ApiToken {
                id: TokenId::new(id),
                name: id.to_owned(),
                scopes: vec![Scope::Operate],
                created_at: UnixMillis(0),
                expires_at: expires_at.map(UnixMillis),
                revoked_at: revoked.then_some(UnixMillis(1)),
            }
        }

        /// A table over a repository whose tokens the test changes, and a
        /// clock it moves.
        async fn table(tokens: Arc<Mutex<Vec<(TokenHash, ApiToken)>>>, now: Arc<AtomicI64>) -> TokenTable {
            let mut repo = MockTokenRepository::new();
            repo.expect_revision().returning(|| Ok(1));
            repo.expect_all_with_hashes().returning(move || Ok(tokens.lock().unwrap().clone()));
            let mut clock = MockClock::new();
            clock.expect_now().returning(move || UnixMillis(now.load(Ordering::Relaxed)));
            TokenTable::load(Arc::new(repo), Arc::new(clock)).await.unwrap()
        }

        fn bearer(token: &str) -> Parts {
            parts(axum::http::Request::get("/x").header("authorization", format!("Bearer {token}")).body(()).unwrap())
        }

        #[tokio::test]
        async fn a_remembered_token_is_forgotten_on_revocation_and_refused_after_expiry() {
            let (a, b) = (generate().unwrap(), generate().unwrap());
            let tokens = Arc::new(Mutex::new(vec![
                (a.hash.clone(), token("a", None, false)),
                (b.hash.clone(), token("b", Some(5_000), false)),
            ]));
            let now = Arc::new(AtomicI64::new(1_000));
            let table = table(tokens.clone(), now.clone()).await;
            for _ in 0..3 {
                let p = table.authenticate(&bearer(&a.token)).unwrap().unwrap();
                assert_eq!((p.name.as_str(), p.scope), ("a", Scope::Operate));
                assert_eq!(table.authenticate(&bearer(&b.token)).unwrap().unwrap().name, "b");
            }
            // The same length and prefix, other bits: refused, never confused with a remembered one.
            let mut wrong = a.token.clone();
            wrong.replace_range(10..11, if &a.token[10..11] == "0" { "1" } else { "0" });
            assert_eq!(table.authenticate(&bearer(&wrong)), Err(AuthFailure::Invalid));

            now.store(5_000, Ordering::Relaxed);
            assert_eq!(table.authenticate(&bearer(&b.token)), Err(AuthFailure::Invalid), "expired while remembered");

            let budget = table.authenticate(&bearer(&a.token)).unwrap().unwrap().budget.clone().unwrap();
            tokens.lock().unwrap()[0].1 = token("a", None, true);
            tokens.lock().unwrap().push((generate().unwrap().hash, token("c", None, false)));
            table.reload().await.unwrap();
            assert_eq!(table.authenticate(&bearer(&a.token)), Err(AuthFailure::Invalid), "revoked while remembered");
            // Another token's reload keeps a live token's budget.
            tokens.lock().unwrap()[0].1 = token("a", None, false);
            table.reload().await.unwrap();
            let again = table.authenticate(&bearer(&a.token)).unwrap().unwrap().budget.clone().unwrap();
            assert!(Arc::ptr_eq(&budget, &again));
        }

        #[tokio::test]
        async fn two_tables_in_one_thread_do_not_share_memories() {
            let a = generate().unwrap();
            let now = Arc::new(AtomicI64::new(0));
            let with = table(Arc::new(Mutex::new(vec![(a.hash.clone(), token("a", None, false))])), now.clone()).await;
            let without = table(Arc::new(Mutex::new(Vec::new())), now).await;
            assert!(with.authenticate(&bearer(&a.token)).unwrap().is_some());
            assert_eq!(without.authenticate(&bearer(&a.token)), Err(AuthFailure::Invalid));
        }

        #[test]
        fn constant_time_eq_compares_every_byte() {
            assert!(constant_time_eq(b"hs_abc", b"hs_abc"));
            assert!(!constant_time_eq(b"hs_abc", b"hs_abd"));
            assert!(!constant_time_eq(b"xs_abc", b"hs_abc"));
            assert!(!constant_time_eq(b"hs_ab", b"hs_abc"));
        }
    }
}
