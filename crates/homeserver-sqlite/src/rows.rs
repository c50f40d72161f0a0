//! Helpers shared by the row mappings: JSON text columns and typed column
//! reads with context.

use homeserver_domain::RepositoryError;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::ctx;

/// A value as the JSON text stored in a column.
pub(crate) fn json<T: Serialize + ?Sized>(v: &T) -> Result<String, RepositoryError> {
    serde_json::to_string(v).map_err(RepositoryError::internal)
}

/// A JSON text column read back.
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, RepositoryError> {
    serde_json::from_str(s).map_err(RepositoryError::internal)
}

/// Column `col` of `row`.
pub(crate) fn get<T>(row: &SqliteRow, col: &str) -> Result<T, RepositoryError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(col).map_err(ctx("reading a row"))
}

/// A domain revision (`u64`) as the INTEGER column stores it.
pub(crate) fn revision_to_sql(revision: u64) -> Result<i64, RepositoryError> {
    i64::try_from(revision).map_err(|_| RepositoryError::internal(format!("revision {revision} is out of range")))
}

/// A stored revision for the domain.
pub(crate) fn revision_from_sql(revision: i64) -> Result<u64, RepositoryError> {
    u64::try_from(revision).map_err(|_| RepositoryError::internal(format!("stored revision {revision} is negative")))
}
