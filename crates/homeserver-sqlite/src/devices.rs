//! The device registry: the [`DeviceRepository`] implementation of
//! [`SqliteStore`].
//!
//! Race-freedom: [`DeviceRepository::apply_scan`] reads, plans and writes in
//! one `BEGIN IMMEDIATE` transaction (the write lock is taken before the
//! read, so no lock upgrade can fail and no other writer slips in between);
//! [`DeviceRepository::replace`] and [`DeviceRepository::delete`] are single
//! conditional statements (`… WHERE id = ? AND revision = ?`) whose
//! `rows_affected` says whether the guard held.

use async_trait::async_trait;
use homeserver_domain::{
    Device, DeviceKind, DeviceRepository, DiscoveredDevice, RepositoryError, ScanReport, UnixMillis,
};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Sqlite, SqliteConnection};

use crate::SqliteStore;
use crate::error::{ctx, is_unique_violation};
use crate::rows::{from_json, get, json, revision_from_sql, revision_to_sql};

const DEVICE_COLUMNS: &str = "id, kind, name, alias, vendor, model, serial, path, enabled, present, labels, attributes, \
                              first_seen, last_seen, revision";

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments>;

fn device_from_row(row: &SqliteRow) -> Result<Device, RepositoryError> {
    let kind: String = get(row, "kind")?;
    Ok(Device {
        id: get(row, "id")?,
        kind: kind.parse::<DeviceKind>().map_err(RepositoryError::internal)?,
        name: get(row, "name")?,
        alias: get(row, "alias")?,
        vendor: get(row, "vendor")?,
        model: get(row, "model")?,
        serial: get(row, "serial")?,
        path: get(row, "path")?,
        enabled: get::<i64>(row, "enabled")? != 0,
        present: get::<i64>(row, "present")? != 0,
        labels: from_json(&get::<String>(row, "labels")?)?,
        attributes: from_json(&get::<String>(row, "attributes")?)?,
        first_seen: UnixMillis(get(row, "first_seen")?),
        last_seen: UnixMillis(get(row, "last_seen")?),
        revision: revision_from_sql(get(row, "revision")?)?,
    })
}

/// Binds every column but `id`, `first_seen` and `last_seen`, in the order
/// of [`SET_COLUMNS`].
fn bind_facts<'q>(q: Query<'q>, d: &'q Device) -> Result<Query<'q>, RepositoryError> {
    Ok(q.bind(d.kind.as_str())
        .bind(&d.name)
        .bind(d.alias.as_deref())
        .bind(d.vendor.as_deref())
        .bind(d.model.as_deref())
        .bind(d.serial.as_deref())
        .bind(d.path.as_deref())
        .bind(i64::from(d.enabled))
        .bind(i64::from(d.present))
        .bind(json(&d.labels)?)
        .bind(json(&d.attributes)?)
        .bind(revision_to_sql(d.revision)?))
}

/// The columns [`bind_facts`] binds, as `SET` assignments.
const SET_COLUMNS: &str = "kind = ?, name = ?, alias = ?, vendor = ?, model = ?, serial = ?, path = ?, enabled = ?, \
                           present = ?, labels = ?, attributes = ?, revision = ?";

/// Devices sorted as the port promises: by kind (the domain's order of
/// [`DeviceKind`]), then name, then id.
fn sorted(mut devices: Vec<Device>) -> Vec<Device> {
    devices.sort_by(|a, b| (a.kind, &a.name, &a.id).cmp(&(b.kind, &b.name, &b.id)));
    devices
}

async fn read_all(conn: &mut SqliteConnection) -> Result<Vec<Device>, RepositoryError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id")))
        .fetch_all(&mut *conn)
        .await
        .map_err(ctx("reading the device registry"))?;
    rows.iter().map(device_from_row).collect()
}

/// Inside a transaction holding the write lock: inserts `d`.
async fn insert(conn: &mut SqliteConnection, d: &Device) -> Result<(), RepositoryError> {
    let q = sqlx::query(
        "INSERT INTO devices (kind, name, alias, vendor, model, serial, path, enabled, present, labels, attributes, \
         revision, id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    let done = bind_facts(q, d)?
        .bind(&d.id)
        .bind(d.first_seen.as_millis())
        .bind(d.last_seen.as_millis())
        .execute(&mut *conn)
        .await;
    match done {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => Err(RepositoryError::AlreadyExists),
        Err(e) => Err(ctx("storing a device")(e)),
    }
}

/// Inside a transaction holding the write lock: overwrites the record of
/// `d.id` with `d`.
async fn overwrite(conn: &mut SqliteConnection, d: &Device) -> Result<(), RepositoryError> {
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE devices SET {SET_COLUMNS}, first_seen = ?, last_seen = ? WHERE id = ?"
    )));
    let done = bind_facts(q, d)?
        .bind(d.first_seen.as_millis())
        .bind(d.last_seen.as_millis())
        .bind(&d.id)
        .execute(&mut *conn)
        .await
        .map_err(ctx("updating a scanned device"))?;
    if done.rows_affected() == 0 { Err(RepositoryError::NotFound) } else { Ok(()) }
}

impl SqliteStore {
    /// After a guarded write changed nothing: `Stale` when the device is
    /// still there (its revision moved), `NotFound` when it is gone.
    async fn device_guard_failed(&self, id: &str) -> RepositoryError {
        let exists = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM devices WHERE id = ?")
            .bind(id)
            .fetch_one(&self.pool)
            .await;
        match exists {
            Ok(0) => RepositoryError::NotFound,
            Ok(_) => RepositoryError::Stale,
            Err(e) => ctx("reading a device's revision")(e),
        }
    }
}

#[async_trait]
impl DeviceRepository for SqliteStore {
    async fn list(&self) -> Result<Vec<Device>, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(ctx("listing devices"))?;
        read_all(&mut conn).await.map(sorted)
    }

    async fn get(&self, id: &str) -> Result<Option<Device>, RepositoryError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(ctx("reading a device"))?;
        row.as_ref().map(device_from_row).transpose()
    }

    #[tracing::instrument(name = "sqlite.devices.apply_scan", skip_all, fields(found = found.len()))]
    async fn apply_scan(&self, found: &[DiscoveredDevice], at: UnixMillis) -> Result<ScanReport, RepositoryError> {
        // IMMEDIATE: the write lock comes first, so the registry cannot change
        // between the read and the writes, and no read-to-write upgrade can
        // fail with SQLITE_BUSY.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a device scan"))?;
        let known = read_all(&mut tx).await?;
        let plan = homeserver_domain::plan_scan(&known, found, at);
        for d in &plan.insert {
            insert(&mut tx, d).await?;
        }
        for d in &plan.update {
            overwrite(&mut tx, d).await?;
        }
        // Every present device is one the scan found; those outside the plan
        // only get `last_seen` moved (their revision stays: nothing the
        // operator would guard changed).
        sqlx::query("UPDATE devices SET last_seen = ?1 WHERE present = 1 AND last_seen <> ?1")
            .bind(at.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(ctx("moving last_seen of present devices"))?;
        tx.commit().await.map_err(ctx("committing a device scan"))?;
        tracing::debug!(
            added = plan.report.added.len(),
            removed = plan.report.removed.len(),
            updated = plan.report.updated.len(),
            "device scan applied"
        );
        Ok(plan.report)
    }

    async fn replace(&self, device: &Device, expected: u64) -> Result<(), RepositoryError> {
        // `first_seen` stays the registry's (set once, by the scan that first
        // saw the device); `last_seen` never moves back: a scan may have moved
        // it since the caller read the device, without a new revision.
        let q = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE devices SET {SET_COLUMNS}, last_seen = max(last_seen, ?) WHERE id = ? AND revision = ?"
        )));
        let done = bind_facts(q, device)?
            .bind(device.last_seen.as_millis())
            .bind(&device.id)
            .bind(revision_to_sql(expected)?)
            .execute(&self.pool)
            .await
            .map_err(ctx("replacing a device"))?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.device_guard_failed(&device.id).await) }
    }

    async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), RepositoryError> {
        let done = sqlx::query("DELETE FROM devices WHERE id = ?1 AND (?2 IS NULL OR revision = ?2)")
            .bind(id)
            .bind(expected.map(revision_to_sql).transpose()?)
            .execute(&self.pool)
            .await
            .map_err(ctx("forgetting a device"))?;
        if done.rows_affected() == 1 { Ok(()) } else { Err(self.device_guard_failed(id).await) }
    }
}
