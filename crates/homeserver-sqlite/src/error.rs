//! Translation of sqlx errors into the domain's [`RepositoryError`].

use homeserver_domain::RepositoryError;

/// SQLite primary result codes this crate tells apart.
pub(crate) mod code {
    /// `SQLITE_PERM`: access permission denied.
    pub(crate) const PERM: i32 = 3;
    /// `SQLITE_BUSY`: the database file is locked by another connection.
    pub(crate) const BUSY: i32 = 5;
    /// `SQLITE_LOCKED`: a table is locked within this process.
    pub(crate) const LOCKED: i32 = 6;
    /// `SQLITE_READONLY`: attempt to write a read-only database.
    pub(crate) const READONLY: i32 = 8;
    /// `SQLITE_IOERR`: a disk I/O error.
    pub(crate) const IOERR: i32 = 10;
    /// `SQLITE_CORRUPT`: the database disk image is malformed.
    pub(crate) const CORRUPT: i32 = 11;
    /// `SQLITE_CONSTRAINT`: a UNIQUE, CHECK or NOT NULL constraint failed.
    pub(crate) const CONSTRAINT: i32 = 19;
    /// `SQLITE_CANTOPEN`: unable to open the database file.
    pub(crate) const CANTOPEN: i32 = 14;
    /// `SQLITE_AUTH`: authorization denied.
    pub(crate) const AUTH: i32 = 23;
    /// `SQLITE_NOTADB`: file is not a database.
    pub(crate) const NOTADB: i32 = 26;
}

/// The primary SQLite result code of `e`, if it came from SQLite.
pub(crate) fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        // sqlx reports the extended code; its low byte is the primary code.
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff),
        _ => None,
    }
}

/// Whether `e` is a PRIMARY KEY or UNIQUE violation (and not a CHECK or
/// NOT NULL one, which share the primary code [`code::CONSTRAINT`]).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    /// `SQLITE_CONSTRAINT_PRIMARYKEY` and `SQLITE_CONSTRAINT_UNIQUE`.
    const UNIQUE_CODES: [i32; 2] = [1555, 2067];
    match e {
        sqlx::Error::Database(db) => {
            db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| UNIQUE_CODES.contains(&c))
        }
        _ => false,
    }
}

/// A failed statement and what the store was doing when it failed.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {cause}")]
pub(crate) struct SqlError {
    context: &'static str,
    cause: sqlx::Error,
}

/// Translates `e`, raised while doing `context`, for the domain: contention
/// and an exhausted or closed pool are [`RepositoryError::Unavailable`]
/// (worth retrying), anything else is [`RepositoryError::Internal`].
pub(crate) fn repository_error(context: &'static str, e: sqlx::Error) -> RepositoryError {
    let transient = matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed)
        || matches!(sqlite_code(&e), Some(code::BUSY | code::LOCKED));
    if transient {
        RepositoryError::Unavailable(format!("{context}: {e}"))
    } else {
        RepositoryError::internal(SqlError { context, cause: e })
    }
}

/// `.map_err(ctx("doing x"))` for sqlx results.
pub(crate) fn ctx(context: &'static str) -> impl FnOnce(sqlx::Error) -> RepositoryError {
    move |e| repository_error(context, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_timeouts_are_unavailable_and_others_internal_with_context() {
        let e = repository_error("saving samples", sqlx::Error::PoolTimedOut);
        assert!(matches!(&e, RepositoryError::Unavailable(m) if m.starts_with("saving samples: ")), "{e}");
        let e = repository_error("reading history", sqlx::Error::RowNotFound);
        assert!(matches!(e, RepositoryError::Internal(_)));
        assert!(e.to_string().starts_with("reading history: "), "{e}");
    }
}
