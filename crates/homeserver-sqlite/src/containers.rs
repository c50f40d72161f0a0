//! Container records and operations: the [`ContainerRepository`] and
//! [`OperationRepository`] implementations of [`SqliteStore`]. Lists and
//! configs are JSON text columns, read and written whole; only the
//! `profiles` array is looked into, by the profile repository (`json_each`,
//! see `profiles.rs`), to find and rename references.

use async_trait::async_trait;
use homeserver_domain::{
    BulkItem, ContainerConfig, ContainerRecord, ContainerRepository, Failure, Operation, OperationFilter,
    OperationOutput, OperationRepository, OperationStatus, Page, Paged, RepositoryError, RuntimeKind, UnixMillis,
};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;

use crate::SqliteStore;
use crate::error::{code, ctx, sqlite_code};
use crate::rows::{from_json, get, json};

fn record_from_row(row: &SqliteRow) -> Result<ContainerRecord, RepositoryError> {
    let runtime: String = get(row, "runtime")?;
    Ok(ContainerRecord {
        id: get(row, "id")?,
        runtime: runtime.parse::<RuntimeKind>().map_err(|e| RepositoryError::internal(e.message))?,
        runtime_id: get(row, "runtime_id")?,
        name: get(row, "name")?,
        image: get(row, "image")?,
        template: get(row, "template")?,
        managed: get::<i64>(row, "managed")? != 0,
        profiles: from_json(&get::<String>(row, "profiles")?)?,
        config: from_json::<ContainerConfig>(&get::<String>(row, "config")?)?,
        created_at: UnixMillis(get(row, "created_at")?),
        updated_at: UnixMillis(get(row, "updated_at")?),
    })
}

const RECORD_COLUMNS: &str =
    "id, runtime, runtime_id, name, image, template, managed, profiles, config, created_at, updated_at";

#[async_trait]
impl ContainerRepository for SqliteStore {
    async fn insert(&self, r: &ContainerRecord) -> Result<(), RepositoryError> {
        let done = sqlx::query(
            "INSERT INTO containers (id, runtime, runtime_id, name, image, template, managed, profiles, config, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(r.runtime.as_str())
        .bind(&r.runtime_id)
        .bind(&r.name)
        .bind(r.image.as_deref())
        .bind(r.template.as_deref())
        .bind(i64::from(r.managed))
        .bind(json(&r.profiles)?)
        .bind(json(&r.config)?)
        .bind(r.created_at.as_millis())
        .bind(r.updated_at.as_millis())
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(e) if sqlite_code(&e) == Some(code::CONSTRAINT) => Err(RepositoryError::AlreadyExists),
            Err(e) => Err(ctx("storing a container")(e)),
        }
    }

    async fn update(&self, r: &ContainerRecord) -> Result<(), RepositoryError> {
        let done = sqlx::query(
            "UPDATE containers SET runtime_id = ?, name = ?, image = ?, template = ?, managed = ?, profiles = ?, \
             config = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&r.runtime_id)
        .bind(&r.name)
        .bind(r.image.as_deref())
        .bind(r.template.as_deref())
        .bind(i64::from(r.managed))
        .bind(json(&r.profiles)?)
        .bind(json(&r.config)?)
        .bind(r.updated_at.as_millis())
        .bind(&r.id)
        .execute(&self.pool)
        .await
        .map_err(ctx("updating a container"))?;
        if done.rows_affected() == 0 { Err(RepositoryError::NotFound) } else { Ok(()) }
    }

    async fn get(&self, id: &str) -> Result<Option<ContainerRecord>, RepositoryError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RECORD_COLUMNS} FROM containers WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading a container"))?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RepositoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {RECORD_COLUMNS} FROM containers ORDER BY name")))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing containers"))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn delete(&self, id: &str) -> Result<(), RepositoryError> {
        sqlx::query("DELETE FROM containers WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(ctx("deleting a container"))?;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct ItemRow {
    id: String,
    succeeded: bool,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OutputRow {
    None,
    Container(String),
    Items(Vec<ItemRow>),
}

fn output_row(o: &OperationOutput) -> OutputRow {
    match o {
        OperationOutput::None => OutputRow::None,
        OperationOutput::Container { id } => OutputRow::Container(id.clone()),
        OperationOutput::Bulk(items) => OutputRow::Items(
            items
                .iter()
                .map(|i| ItemRow {
                    id: i.id.clone(),
                    succeeded: i.succeeded,
                    code: i.error.as_ref().map(|e| e.code.clone()),
                    message: i.error.as_ref().map(|e| e.message.clone()),
                })
                .collect(),
        ),
    }
}

fn output_from_row(o: OutputRow) -> OperationOutput {
    match o {
        OutputRow::None => OperationOutput::None,
        OutputRow::Container(id) => OperationOutput::Container { id },
        OutputRow::Items(items) => OperationOutput::Bulk(
            items
                .into_iter()
                .map(|i| BulkItem {
                    id: i.id,
                    succeeded: i.succeeded,
                    error: i.code.map(|c| Failure { code: c, message: i.message.unwrap_or_default() }),
                })
                .collect(),
        ),
    }
}

fn operation_from_row(row: &SqliteRow) -> Result<Operation, RepositoryError> {
    let kind: String = get(row, "kind")?;
    let status: String = get(row, "status")?;
    let code: Option<String> = get(row, "error_code")?;
    let message: Option<String> = get(row, "error_message")?;
    Ok(Operation {
        id: get(row, "id")?,
        kind: kind.parse().map_err(|e: homeserver_domain::FieldError| RepositoryError::internal(e.message))?,
        status: status.parse().map_err(|e: homeserver_domain::FieldError| RepositoryError::internal(e.message))?,
        progress_percent: u8::try_from(get::<i64>(row, "progress_percent")?).unwrap_or(0),
        message: get(row, "message")?,
        containers: from_json(&get::<String>(row, "containers")?)?,
        output: output_from_row(from_json(&get::<String>(row, "output")?)?),
        error: code.map(|c| Failure { code: c, message: message.unwrap_or_default() }),
        may_cancel: get::<i64>(row, "may_cancel")? != 0,
        created_at: UnixMillis(get(row, "created_at")?),
        started_at: get::<Option<i64>>(row, "started_at")?.map(UnixMillis),
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(UnixMillis),
    })
}

const OP_COLUMNS: &str = "id, kind, status, progress_percent, message, containers, output, error_code, error_message, \
                          may_cancel, created_at, started_at, finished_at";

#[async_trait]
impl OperationRepository for SqliteStore {
    async fn insert(&self, op: &Operation) -> Result<(), RepositoryError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO operations ({OP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(&op.id)
        .bind(op.kind.as_str())
        .bind(op.status.as_str())
        .bind(i64::from(op.progress_percent))
        .bind(&op.message)
        .bind(json(&op.containers)?)
        .bind(json(&output_row(&op.output))?)
        .bind(op.error.as_ref().map(|e| e.code.as_str()))
        .bind(op.error.as_ref().map(|e| e.message.as_str()))
        .bind(i64::from(op.may_cancel))
        .bind(op.created_at.as_millis())
        .bind(op.started_at.map(UnixMillis::as_millis))
        .bind(op.finished_at.map(UnixMillis::as_millis))
        .execute(&self.pool)
        .await
        .map_err(ctx("storing an operation"))?;
        Ok(())
    }

    async fn update(&self, op: &Operation) -> Result<(), RepositoryError> {
        let done = sqlx::query(
            "UPDATE operations SET status = ?, progress_percent = ?, message = ?, containers = ?, output = ?, \
             error_code = ?, error_message = ?, may_cancel = ?, started_at = ?, finished_at = ? WHERE id = ?",
        )
        .bind(op.status.as_str())
        .bind(i64::from(op.progress_percent))
        .bind(&op.message)
        .bind(json(&op.containers)?)
        .bind(json(&output_row(&op.output))?)
        .bind(op.error.as_ref().map(|e| e.code.as_str()))
        .bind(op.error.as_ref().map(|e| e.message.as_str()))
        .bind(i64::from(op.may_cancel))
        .bind(op.started_at.map(UnixMillis::as_millis))
        .bind(op.finished_at.map(UnixMillis::as_millis))
        .bind(&op.id)
        .execute(&self.pool)
        .await
        .map_err(ctx("updating an operation"))?;
        if done.rows_affected() == 0 { Err(RepositoryError::NotFound) } else { Ok(()) }
    }

    async fn get(&self, id: &str) -> Result<Option<Operation>, RepositoryError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {OP_COLUMNS} FROM operations WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading an operation"))?;
        row.as_ref().map(operation_from_row).transpose()
    }

    async fn list(&self, filter: &OperationFilter, page: Page) -> Result<Paged<Operation>, RepositoryError> {
        const WHERE: &str = "WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR kind = ?2)";
        let status = filter.status.map(OperationStatus::as_str);
        let kind = filter.kind.map(|k| k.as_str());
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM operations {WHERE}")))
            .bind(status)
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .map_err(ctx("counting operations"))?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {OP_COLUMNS} FROM operations {WHERE} ORDER BY created_at DESC, id LIMIT ?3 OFFSET ?4"
        )))
        .bind(status)
        .bind(kind)
        .bind(i64::from(page.per_page()))
        .bind(i64::try_from(page.offset()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("listing operations"))?;
        let items = rows.iter().map(operation_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok(Paged { items, total: u64::try_from(total).unwrap_or(0), page })
    }

    async fn interrupt_unfinished(&self, now: UnixMillis) -> Result<u64, RepositoryError> {
        let done = sqlx::query(
            "UPDATE operations SET status = 'failed', may_cancel = 0, finished_at = ?, error_code = 'INTERRUPTED', \
             error_message = 'homeserver stopped while the operation was running', \
             message = 'interrupted by a restart' WHERE status IN ('pending', 'running')",
        )
        .bind(now.as_millis())
        .execute(&self.pool)
        .await
        .map_err(ctx("interrupting operations"))?;
        Ok(done.rows_affected())
    }
}
