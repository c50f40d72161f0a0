//! Who may do what: scopes, API tokens, the audit log, and their ports and
//! use cases.
//!
//! The domain never sees a token's secret: the edge generates it, shows it
//! once and hands the domain only its hash ([`TokenHash`]).

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;

use crate::error::{FieldError, RepositoryError};
use crate::page::{Page, Paged};
use crate::time::UnixMillis;

/// What a caller may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Scope {
    /// Every read and live stream.
    Read,
    /// Container lifecycle, exec, cancelling operations, device rescans.
    Operate,
    /// Tokens, webhooks, alert rules, profile/device/config writes, audit.
    Admin,
}

impl Scope {
    /// Every scope, smallest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Admin];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }

    /// This scope grants `needed`.
    pub fn grants(self, needed: Scope) -> bool {
        self >= needed
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (expected read, operate or admin)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// Identity of a token (not its secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TokenId(String);

impl TokenId {
    /// A token id from its text.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hex SHA-256 of a token's secret: what is stored and looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    /// Wraps a lowercase hex digest of 64 characters.
    pub fn from_hex(hex: impl Into<String>) -> Option<Self> {
        let hex = hex.into();
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(Self(hex))
    }

    /// The hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An API token as stored (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Identity.
    pub id: TokenId,
    /// Name chosen by its creator.
    pub name: String,
    /// Scopes granted (sorted, no duplicates); the largest one counts.
    pub scopes: Vec<Scope>,
    /// When it was made.
    pub created_at: UnixMillis,
    /// When it stops working, if ever.
    pub expires_at: Option<UnixMillis>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<UnixMillis>,
}

impl ApiToken {
    /// The largest scope granted.
    pub fn scope(&self) -> Scope {
        self.scopes.iter().copied().max().unwrap_or(Scope::Read)
    }

    /// Not revoked and not expired at `now`.
    pub fn is_active(&self, now: UnixMillis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;

/// A token to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Identity, chosen by the caller.
    pub id: TokenId,
    /// Name.
    pub name: String,
    /// Scopes (sorted, deduplicated by [`NewToken::new`]).
    pub scopes: Vec<Scope>,
    /// Expiry, if any.
    pub expires_at: Option<UnixMillis>,
    /// Hash of the secret.
    pub hash: TokenHash,
    /// Creation time.
    pub created_at: UnixMillis,
}

impl NewToken {
    /// Validates a token to create at `now`; every failing field is reported.
    pub fn new(
        id: TokenId,
        name: &str,
        mut scopes: Vec<Scope>,
        expires_at: Option<UnixMillis>,
        hash: TokenHash,
        now: UnixMillis,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME {
            errors.push(FieldError::new("name", format!("must be 1 to {MAX_TOKEN_NAME} characters")));
        } else if name.chars().any(char::is_control) {
            errors.push(FieldError::new("name", "must not contain control characters"));
        }
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            errors.push(FieldError::new("scopes", "grant at least one scope"));
        }
        if expires_at.is_some_and(|e| e <= now) {
            errors.push(FieldError::new("expires_at", "must be in the future"));
        }
        if errors.is_empty() {
            Ok(Self { id, name: name.to_owned(), scopes, expires_at, hash, created_at: now })
        } else {
            Err(errors)
        }
    }
}

/// Stores tokens.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TokenRepository: Send + Sync {
    /// Stores a new token.
    async fn create(&self, token: &NewToken) -> Result<ApiToken, RepositoryError>;

    /// Every token, newest first.
    async fn list(&self) -> Result<Vec<ApiToken>, RepositoryError>;

    /// Every token with its hash, for an in-memory lookup table.
    async fn all_with_hashes(&self) -> Result<Vec<(TokenHash, ApiToken)>, RepositoryError>;

    /// Marks a token revoked at `at` (`NotFound` if there is no such token);
    /// revoking twice keeps the first time.
    async fn revoke(&self, id: &TokenId, at: UnixMillis) -> Result<ApiToken, RepositoryError>;

    /// A number that changes whenever any token is created or revoked, by
    /// this process or another one sharing the store.
    async fn revision(&self) -> Result<i64, RepositoryError>;
}

/// How a mutating request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum AuditOutcome {
    /// 2xx.
    Success,
    /// Refused before it ran: 401, 403, 429.
    Denied,
    /// Any other error.
    Failure,
}

impl AuditOutcome {
    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }

    /// The outcome an HTTP status stands for.
    pub fn from_status(status: u16) -> Self {
        match status {
            200..=399 => Self::Success,
            401 | 403 | 429 => Self::Denied,
            _ => Self::Failure,
        }
    }
}

impl FromStr for AuditOutcome {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Success, Self::Denied, Self::Failure].into_iter().find(|o| o.as_str() == s).ok_or(())
    }
}

/// One mutating request, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditRecord {
    /// When it was answered.
    pub timestamp: UnixMillis,
    /// Who: a token's name and id, or `anonymous`.
    pub actor: String,
    /// What: method and route template (`DELETE /api/v1/tokens/{id}`).
    pub action: String,
    /// On what: the request path.
    pub target: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// HTTP status answered.
    pub status: u16,
    /// The request's id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_ip: Option<String>,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Sequence number.
    pub id: i64,
    /// The record.
    pub record: NewAuditRecord,
}

/// Which audit records to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor (exact).
    pub actor: Option<String>,
    /// Only actions starting with this (`POST`, `DELETE /api/v1/tokens`).
    pub action: Option<String>,
}

/// Stores the audit log.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait AuditRepository: Send + Sync {
    /// Appends a record.
    async fn record(&self, record: &NewAuditRecord) -> Result<(), RepositoryError>;

    /// Records matching `filter`, newest first, one page of them.
    async fn list(&self, filter: &AuditFilter, page: Page) -> Result<Paged<AuditRecord>, RepositoryError>;

    /// Removes records older than `before`; how many went.
    async fn prune(&self, before: UnixMillis) -> Result<u64, RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> TokenHash {
        TokenHash::from_hex("a".repeat(64)).unwrap()
    }

    #[test]
    fn scopes_order_and_parse() {
        assert!(Scope::Admin.grants(Scope::Operate) && Scope::Operate.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Operate));
        assert_eq!("operate".parse::<Scope>(), Ok(Scope::Operate));
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn token_hash_accepts_only_lowercase_sha256_hex() {
        assert!(TokenHash::from_hex("0".repeat(64)).is_some());
        assert!(TokenHash::from_hex("A".repeat(64)).is_none());
        assert!(TokenHash::from_hex("0".repeat(63)).is_none());
    }

    #[test]
    fn new_token_validation_names_every_field() {
        let now = UnixMillis(1_000);
        let errs = NewToken::new(TokenId::new("t"), "  ", vec![], Some(UnixMillis(1_000)), hash(), now).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "scopes", "expires_at"]);
        let long = "x".repeat(MAX_TOKEN_NAME + 1);
        assert!(NewToken::new(TokenId::new("t"), &long, vec![Scope::Read], None, hash(), now).is_err());
        let ok =
            NewToken::new(TokenId::new("t"), " ci ", vec![Scope::Admin, Scope::Read, Scope::Read], None, hash(), now)
                .unwrap();
        assert_eq!((ok.name.as_str(), ok.scopes.as_slice()), ("ci", &[Scope::Read, Scope::Admin][..]));
    }

    #[test]
    fn activity_honours_revocation_and_the_expiry_instant() {
        let mut t = ApiToken {
            id: TokenId::new("t"),
            name: "n".into(),
            scopes: vec![Scope::Read, Scope::Operate],
            created_at: UnixMillis(0),
            expires_at: Some(UnixMillis(100)),
            revoked_at: None,
        };
        assert_eq!(t.scope(), Scope::Operate);
        assert!(t.is_active(UnixMillis(99)));
        assert!(!t.is_active(UnixMillis(100)));
        t.expires_at = None;
        t.revoked_at = Some(UnixMillis(5));
        assert!(!t.is_active(UnixMillis(1)));
    }

    #[test]
    fn outcomes_follow_status() {
        assert_eq!(AuditOutcome::from_status(201), AuditOutcome::Success);
        assert_eq!(AuditOutcome::from_status(403), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::from_status(429), AuditOutcome::Denied);
        assert_eq!(AuditOutcome::from_status(409), AuditOutcome::Failure);
    }
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The input is invalid.
    #[error("invalid token request")]
    Invalid(Vec<FieldError>),
    /// No token with that id.
    #[error("no such token")]
    NotFound,
    /// The store failed.
    #[error("token store failed")]
    Repository(#[from] RepositoryError),
}

/// Creates, lists and revokes API tokens.
pub struct TokenService {
    repository: std::sync::Arc<dyn TokenRepository>,
    clock: std::sync::Arc<dyn crate::ports::Clock>,
}

impl TokenService {
    /// A token service over `repository`.
    pub fn new(
        repository: std::sync::Arc<dyn TokenRepository>,
        clock: std::sync::Arc<dyn crate::ports::Clock>,
    ) -> Self {
        Self { repository, clock }
    }

    /// Validates and stores a token whose secret hashes to `hash`.
    #[tracing::instrument(name = "tokens.create", skip(self, hash), fields(id = %id))]
    pub async fn create(
        &self,
        id: TokenId,
        name: &str,
        scopes: Vec<Scope>,
        expires_at: Option<UnixMillis>,
        hash: TokenHash,
    ) -> Result<ApiToken, TokenError> {
        let new = NewToken::new(id, name, scopes, expires_at, hash, self.clock.now()).map_err(TokenError::Invalid)?;
        Ok(self.repository.create(&new).await?)
    }

    /// Every token, newest first.
    #[tracing::instrument(name = "tokens.list", skip(self))]
    pub async fn list(&self) -> Result<Vec<ApiToken>, TokenError> {
        Ok(self.repository.list().await?)
    }

    /// Revokes a token now; revoking a revoked token is not an error.
    #[tracing::instrument(name = "tokens.revoke", skip(self))]
    pub async fn revoke(&self, id: &TokenId) -> Result<ApiToken, TokenError> {
        match self.repository.revoke(id, self.clock.now()).await {
            Ok(t) => Ok(t),
            Err(RepositoryError::NotFound) => Err(TokenError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// No token was ever created: the first start must make an admin token.
    pub async fn is_empty(&self) -> Result<bool, TokenError> {
        Ok(self.repository.list().await?.is_empty())
    }
}

#[cfg(test)]
mod service_tests {
    use super::*;
    use crate::ports::MockClock;
    use std::sync::Arc;

    fn clock() -> Arc<MockClock> {
        let mut c = MockClock::new();
        c.expect_now().return_const(UnixMillis(10_000));
        Arc::new(c)
    }

    #[tokio::test]
    async fn invalid_requests_never_reach_the_store() {
        let mut repo = MockTokenRepository::new();
        repo.expect_create().never();
        let svc = TokenService::new(Arc::new(repo), clock());
        let hash = TokenHash::from_hex("b".repeat(64)).unwrap();
        let err = svc.create(TokenId::new("x"), "", vec![Scope::Read], Some(UnixMillis(5)), hash).await.unwrap_err();
        assert!(matches!(err, TokenError::Invalid(ref e) if e.len() == 2));
    }

    #[tokio::test]
    async fn revoking_an_unknown_token_is_not_found() {
        let mut repo = MockTokenRepository::new();
        repo.expect_revoke().returning(|_, _| Err(RepositoryError::NotFound));
        let svc = TokenService::new(Arc::new(repo), clock());
        assert!(matches!(svc.revoke(&TokenId::new("nope")).await, Err(TokenError::NotFound)));
    }
}
