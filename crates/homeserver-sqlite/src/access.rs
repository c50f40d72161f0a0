//! API tokens and the audit log: the [`TokenRepository`] and
//! [`AuditRepository`] implementations of [`SqliteStore`].

use async_trait::async_trait;
use homeserver_domain::{
    ApiToken, AuditFilter, AuditOutcome, AuditRecord, AuditRepository, NewAuditRecord, NewToken, Page, Paged,
    RepositoryError, Scope, TokenHash, TokenId, TokenRepository, UnixMillis,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::SqliteStore;
use crate::error::{code, ctx, sqlite_code};

fn scopes_text(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn token_from_row(row: &SqliteRow) -> Result<ApiToken, RepositoryError> {
    let scopes: String = row.try_get("scopes").map_err(ctx("reading a token"))?;
    let scopes = scopes
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Scope>().map_err(RepositoryError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ApiToken {
        id: TokenId::new(row.try_get::<String, _>("id").map_err(ctx("reading a token"))?),
        name: row.try_get("name").map_err(ctx("reading a token"))?,
        scopes,
        created_at: UnixMillis(row.try_get("created_at").map_err(ctx("reading a token"))?),
        expires_at: row.try_get::<Option<i64>, _>("expires_at").map_err(ctx("reading a token"))?.map(UnixMillis),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at").map_err(ctx("reading a token"))?.map(UnixMillis),
    })
}

const TOKEN_COLUMNS: &str = "id, name, hash, scopes, created_at, expires_at, revoked_at";

#[async_trait]
impl TokenRepository for SqliteStore {
    async fn create(&self, token: &NewToken) -> Result<ApiToken, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(ctx("starting a token transaction"))?;
        let inserted = sqlx::query(
            "INSERT INTO api_tokens (id, name, hash, scopes, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(token.id.as_str())
        .bind(&token.name)
        .bind(token.hash.as_str())
        .bind(scopes_text(&token.scopes))
        .bind(token.created_at.as_millis())
        .bind(token.expires_at.map(UnixMillis::as_millis))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if sqlite_code(&e) == Some(code::CONSTRAINT) => return Err(RepositoryError::AlreadyExists),
            Err(e) => return Err(ctx("storing a token")(e)),
        }
        sqlx::query("UPDATE token_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(ctx("bumping the token revision"))?;
        tx.commit().await.map_err(ctx("committing a token"))?;
        Ok(ApiToken {
            id: token.id.clone(),
            name: token.name.clone(),
            scopes: token.scopes.clone(),
            created_at: token.created_at,
            expires_at: token.expires_at,
            revoked_at: None,
        })
    }

    async fn list(&self) -> Result<Vec<ApiToken>, RepositoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("listing tokens"))?;
        rows.iter().map(token_from_row).collect()
    }

    async fn all_with_hashes(&self) -> Result<Vec<(TokenHash, ApiToken)>, RepositoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens")))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("loading tokens"))?;
        rows.iter()
            .map(|row| {
                let hash: String = row.try_get("hash").map_err(ctx("reading a token"))?;
                let hash = TokenHash::from_hex(hash)
                    .ok_or_else(|| RepositoryError::internal("a stored token hash is malformed"))?;
                Ok((hash, token_from_row(row)?))
            })
            .collect()
    }

    async fn revoke(&self, id: &TokenId, at: UnixMillis) -> Result<ApiToken, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(ctx("starting a revocation"))?;
        let changed = sqlx::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
            .bind(at.as_millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(ctx("revoking a token"))?;
        if changed.rows_affected() == 0 {
            return Err(RepositoryError::NotFound);
        }
        sqlx::query("UPDATE token_revision SET revision = revision + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await
            .map_err(ctx("bumping the token revision"))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?")))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(ctx("reading a revoked token"))?;
        tx.commit().await.map_err(ctx("committing a revocation"))?;
        token_from_row(&row)
    }

    async fn revision(&self) -> Result<i64, RepositoryError> {
        sqlx::query_scalar("SELECT revision FROM token_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(ctx("reading the token revision"))
    }
}

#[async_trait]
impl AuditRepository for SqliteStore {
    async fn record(&self, r: &NewAuditRecord) -> Result<(), RepositoryError> {
        sqlx::query(
            "INSERT INTO audit_log (ts, actor, action, target, outcome, status, request_id, client_ip) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(r.timestamp.as_millis())
        .bind(&r.actor)
        .bind(&r.action)
        .bind(&r.target)
        .bind(r.outcome.as_str())
        .bind(i64::from(r.status))
        .bind(r.request_id.as_deref())
        .bind(r.client_ip.as_deref())
        .execute(&self.pool)
        .await
        .map_err(ctx("writing an audit record"))?;
        Ok(())
    }

    async fn list(&self, filter: &AuditFilter, page: Page) -> Result<Paged<AuditRecord>, RepositoryError> {
        // `?1 IS NULL OR …` keeps one statement for every filter combination.
        const WHERE: &str = "WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR substr(action, 1, length(?2)) = ?2)";
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log {WHERE}")))
            .bind(filter.actor.as_deref())
            .bind(filter.action.as_deref())
            .fetch_one(&self.pool)
            .await
            .map_err(ctx("counting audit records"))?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, ts, actor, action, target, outcome, status, request_id, client_ip FROM audit_log {WHERE} \
             ORDER BY id DESC LIMIT ?3 OFFSET ?4"
        )))
        .bind(filter.actor.as_deref())
        .bind(filter.action.as_deref())
        .bind(i64::from(page.per_page()))
        .bind(i64::try_from(page.offset()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("listing audit records"))?;
        let items = rows
            .iter()
            .map(|row| {
                let outcome: String = row.try_get("outcome").map_err(ctx("reading an audit record"))?;
                let status: i64 = row.try_get("status").map_err(ctx("reading an audit record"))?;
                Ok(AuditRecord {
                    id: row.try_get("id").map_err(ctx("reading an audit record"))?,
                    record: NewAuditRecord {
                        timestamp: UnixMillis(row.try_get("ts").map_err(ctx("reading an audit record"))?),
                        actor: row.try_get("actor").map_err(ctx("reading an audit record"))?,
                        action: row.try_get("action").map_err(ctx("reading an audit record"))?,
                        target: row.try_get("target").map_err(ctx("reading an audit record"))?,
                        outcome: outcome
                            .parse::<AuditOutcome>()
                            .map_err(|()| RepositoryError::internal(format!("unknown audit outcome {outcome:?}")))?,
                        status: u16::try_from(status).unwrap_or(0),
                        request_id: row.try_get("request_id").map_err(ctx("reading an audit record"))?,
                        client_ip: row.try_get("client_ip").map_err(ctx("reading an audit record"))?,
                    },
                })
            })
            .collect::<Result<Vec<_>, RepositoryError>>()?;
        Ok(Paged { items, total: u64::try_from(total).unwrap_or(0), page })
    }

    async fn prune(&self, before: UnixMillis) -> Result<u64, RepositoryError> {
        let done = sqlx::query("DELETE FROM audit_log WHERE ts < ?")
            .bind(before.as_millis())
            .execute(&self.pool)
            .await
            .map_err(ctx("pruning the audit log"))?;
        Ok(done.rows_affected())
    }
}
