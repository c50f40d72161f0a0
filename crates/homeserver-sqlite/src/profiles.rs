//! Container profiles: the [`ProfileRepository`] implementation of
//! [`SqliteStore`].
//!
//! Every method that reads before it writes runs in one `BEGIN IMMEDIATE`
//! transaction: the write lock is taken first, so what was read still holds
//! when the write lands (no other writer in between, and no read-to-write
//! lock upgrade that could fail with SQLITE_BUSY). `replace` is one
//! conditional `UPDATE … WHERE name = ? AND revision = ?`.
//!
//! References from containers are the names in each container record's
//! `profiles` JSON array; they are found and rewritten in SQL with
//! `json_each`, inside the same transaction as the profile change.
//!
//! The settings are stored as the JSON of [`OverlayRow`], owned here (not
//! the domain's serde shape): snake_case keys, unset scalars left out (and
//! read back as unset when absent or `null`), maps and lists always written.

use std::collections::BTreeMap;

use async_trait::async_trait;
use homeserver_domain::{ConfigOverlay, Profile, ProfileName, ProfileRepository, RepositoryError, UnixMillis};
use serde::{Deserialize, Serialize};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;

use crate::SqliteStore;
use crate::error::{ctx, is_unique_violation};
use crate::rows::{from_json, get, json, revision_from_sql, revision_to_sql};

/// The stored JSON of a [`ConfigOverlay`].
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct OverlayRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_limit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids_limit: Option<u64>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    /// `no`, `on-failure`, `always`, `unless-stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<String>,
    devices: Vec<String>,
}

fn overlay_row(c: &ConfigOverlay) -> OverlayRow {
    OverlayRow {
        cpu_limit: c.cpu_limit,
        memory_limit_bytes: c.memory_limit_bytes,
        pids_limit: c.pids_limit,
        env: c.env.clone(),
        labels: c.labels.clone(),
        command: c.command.clone(),
        restart_policy: c.restart_policy.map(|p| p.as_str().to_owned()),
        devices: c.devices.clone(),
    }
}

fn overlay_from_row(r: OverlayRow) -> Result<ConfigOverlay, RepositoryError> {
    Ok(ConfigOverlay {
        cpu_limit: r.cpu_limit,
        memory_limit_bytes: r.memory_limit_bytes,
        pids_limit: r.pids_limit,
        env: r.env,
        labels: r.labels,
        command: r.command,
        restart_policy: r
            .restart_policy
            .map(|p| p.parse().map_err(|e: homeserver_domain::FieldError| RepositoryError::internal(e.message)))
            .transpose()?,
        devices: r.devices,
    })
}

const PROFILE_COLUMNS: &str = "name, description, config, is_default, created_at, updated_at, revision";

fn profile_from_row(row: &SqliteRow) -> Result<Profile, RepositoryError> {
    let name: String = get(row, "name")?;
    Ok(Profile {
        name: ProfileName::parse(&name).map_err(|e| {
            RepositoryError::internal(format!("stored profile name {name:?} is invalid: {}", e.message))
        })?,
        description: get(row, "description")?,
        config: overlay_from_row(from_json(&get::<String>(row, "config")?)?)?,
        is_default: get::<i64>(row, "is_default")? != 0,
        created_at: UnixMillis(get(row, "created_at")?),
        updated_at: UnixMillis(get(row, "updated_at")?),
        revision: revision_from_sql(get(row, "revision")?)?,
    })
}

async fn read_one(conn: &mut SqliteConnection, name: &str) -> Result<Option<Profile>, RepositoryError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE name = ?")))
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ctx("reading a profile"))?;
    row.as_ref().map(profile_from_row).transpose()
}

/// Ids of the containers whose `profiles` array names `name`, by id.
async fn containers_naming(conn: &mut SqliteConnection, name: &str) -> Result<Vec<String>, RepositoryError> {
    sqlx::query_scalar(
        "SELECT DISTINCT c.id FROM containers AS c, json_each(c.profiles) AS p \
         WHERE p.type = 'text' AND p.value = ? ORDER BY c.id",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await
    .map_err(ctx("finding the containers that use a profile"))
}

/// Inside a transaction holding the write lock: the current default, if
/// any, stops being it (its revision bumped, `updated_at` = `at`).
async fn demote_default(conn: &mut SqliteConnection, at: UnixMillis) -> Result<(), RepositoryError> {
    sqlx::query("UPDATE profiles SET is_default = 0, revision = revision + 1, updated_at = ? WHERE is_default = 1")
        .bind(at.as_millis())
        .execute(&mut *conn)
        .await
        .map_err(ctx("demoting the default profile"))?;
    Ok(())
}

/// Inside a transaction holding the write lock: the profile `name` after
/// its revision guard, or why not.
async fn guarded(conn: &mut SqliteConnection, name: &str, expected: Option<u64>) -> Result<Profile, RepositoryError> {
    let profile = read_one(conn, name).await?.ok_or(RepositoryError::NotFound)?;
    match expected {
        Some(rev) if rev != profile.revision => Err(RepositoryError::Stale),
        _ => Ok(profile),
    }
}

#[async_trait]
impl ProfileRepository for SqliteStore {
    async fn list(&self) -> Result<Vec<Profile>, RepositoryError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {PROFILE_COLUMNS} FROM profiles ORDER BY name")))
            .fetch_all(&self.pool)
            .await
            .map_err(ctx("listing profiles"))?;
        rows.iter().map(profile_from_row).collect()
    }

    async fn get(&self, name: &str) -> Result<Option<Profile>, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(ctx("reading a profile"))?;
        read_one(&mut conn, name).await
    }

    async fn used_by(&self, name: &str) -> Result<Vec<String>, RepositoryError> {
        let mut conn = self.pool.acquire().await.map_err(ctx("finding the containers that use a profile"))?;
        containers_naming(&mut conn, name).await
    }

    async fn usage(&self) -> Result<BTreeMap<String, Vec<String>>, RepositoryError> {
        let pairs: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT p.value, c.id FROM containers AS c, json_each(c.profiles) AS p \
             WHERE p.type = 'text' ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(ctx("reading profile usage"))?;
        let mut usage: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (profile, container) in pairs {
            usage.entry(profile).or_default().push(container);
        }
        Ok(usage)
    }

    #[tracing::instrument(name = "sqlite.profiles.insert", skip_all, fields(name = %profile.name))]
    async fn insert(&self, profile: &Profile) -> Result<(), RepositoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a profile insert"))?;
        if profile.is_default {
            demote_default(&mut tx, profile.updated_at).await?;
        }
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO profiles ({PROFILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(profile.name.as_str())
        .bind(&profile.description)
        .bind(json(&overlay_row(&profile.config))?)
        .bind(i64::from(profile.is_default))
        .bind(profile.created_at.as_millis())
        .bind(profile.updated_at.as_millis())
        .bind(revision_to_sql(profile.revision)?)
        .execute(&mut *tx)
        .await;
        match done {
            Ok(_) => {}
            // Dropping the transaction rolls the demotion back.
            Err(e) if is_unique_violation(&e) => return Err(RepositoryError::AlreadyExists),
            Err(e) => return Err(ctx("storing a profile")(e)),
        }
        tx.commit().await.map_err(ctx("committing a profile insert"))
    }

    async fn replace(&self, profile: &Profile, expected: u64) -> Result<(), RepositoryError> {
        // `created_at` and `is_default` stay as stored.
        let done = sqlx::query(
            "UPDATE profiles SET description = ?, config = ?, updated_at = ?, revision = ? \
             WHERE name = ? AND revision = ?",
        )
        .bind(&profile.description)
        .bind(json(&overlay_row(&profile.config))?)
        .bind(profile.updated_at.as_millis())
        .bind(revision_to_sql(profile.revision)?)
        .bind(profile.name.as_str())
        .bind(revision_to_sql(expected)?)
        .execute(&self.pool)
        .await
        .map_err(ctx("replacing a profile"))?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let exists = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM profiles WHERE name = ?")
            .bind(profile.name.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(ctx("reading a profile's revision"))?;
        Err(if exists == 0 { RepositoryError::NotFound } else { RepositoryError::Stale })
    }

    #[tracing::instrument(name = "sqlite.profiles.rename", skip_all, fields(from = from, to = %to))]
    async fn rename(
        &self,
        from: &str,
        to: &ProfileName,
        expected: Option<u64>,
        at: UnixMillis,
    ) -> Result<Profile, RepositoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a profile rename"))?;
        guarded(&mut tx, from, expected).await?;
        if from == to.as_str() {
            // The target name is taken, by the profile itself.
            return Err(RepositoryError::AlreadyExists);
        }
        let moved = sqlx::query("UPDATE profiles SET name = ?, revision = revision + 1, updated_at = ? WHERE name = ?")
            .bind(to.as_str())
            .bind(at.as_millis())
            .bind(from)
            .execute(&mut *tx)
            .await;
        match moved {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Err(RepositoryError::AlreadyExists),
            Err(e) => return Err(ctx("renaming a profile")(e)),
        }
        // Each naming container's array, rebuilt in its own order with the
        // new name in place of the old one.
        sqlx::query(
            "UPDATE containers SET updated_at = ?3, profiles = ( \
                 SELECT json_group_array(CASE WHEN p.type = 'text' AND p.value = ?1 THEN ?2 ELSE p.value END \
                                         ORDER BY p.key) \
                 FROM json_each(containers.profiles) AS p) \
             WHERE EXISTS (SELECT 1 FROM json_each(containers.profiles) AS p WHERE p.type = 'text' AND p.value = ?1)",
        )
        .bind(from)
        .bind(to.as_str())
        .bind(at.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(ctx("moving container references to a renamed profile"))?;
        let renamed = read_one(&mut tx, to.as_str()).await?.ok_or(RepositoryError::NotFound)?;
        tx.commit().await.map_err(ctx("committing a profile rename"))?;
        Ok(renamed)
    }

    #[tracing::instrument(name = "sqlite.profiles.activate", skip_all, fields(name = name))]
    async fn activate(&self, name: &str, at: UnixMillis) -> Result<Profile, RepositoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a profile activation"))?;
        let current = guarded(&mut tx, name, None).await?;
        if current.is_default {
            // Already the only default (the unique index admits no second).
            return Ok(current);
        }
        demote_default(&mut tx, at).await?;
        sqlx::query("UPDATE profiles SET is_default = 1, revision = revision + 1, updated_at = ? WHERE name = ?")
            .bind(at.as_millis())
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(ctx("activating a profile"))?;
        let active = read_one(&mut tx, name).await?.ok_or(RepositoryError::NotFound)?;
        tx.commit().await.map_err(ctx("committing a profile activation"))?;
        Ok(active)
    }

    #[tracing::instrument(name = "sqlite.profiles.delete", skip_all, fields(name = name))]
    async fn delete(&self, name: &str, expected: Option<u64>) -> Result<(), RepositoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(ctx("starting a profile delete"))?;
        let profile = guarded(&mut tx, name, expected).await?;
        let users = containers_naming(&mut tx, name).await?;
        if !users.is_empty() {
            return Err(RepositoryError::InUse(users));
        }
        if profile.is_default {
            return Err(RepositoryError::Conflict(format!(
                "profile `{name}` is the default; activate another profile before deleting it"
            )));
        }
        sqlx::query("DELETE FROM profiles WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(ctx("deleting a profile"))?;
        tx.commit().await.map_err(ctx("committing a profile delete"))
    }
}
