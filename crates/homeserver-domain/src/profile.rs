//! Reusable container settings: [`Profile`]s, the partial settings they hold
//! ([`ConfigOverlay`]), how overlays merge into a container's effective
//! [`ContainerConfig`], and the [`ProfileRepository`] port.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::container::{ContainerConfig, RestartPolicy};
use crate::error::{FieldError, RepositoryError};
use crate::time::UnixMillis;

/// The profile every store starts with.
pub const DEFAULT_PROFILE: &str = "default";
/// Names a profile cannot take: `POST /api/v1/profiles/validate` would
/// shadow a profile of that name.
pub const RESERVED_NAMES: [&str; 1] = ["validate"];
/// Longest profile description.
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// A validated profile name: `^[a-z0-9][a-z0-9_-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileName(String);

impl ProfileName {
    /// Validates `name`; the error names `field`.
    pub fn parse_field(name: &str, field: &str) -> Result<Self, FieldError> {
        if RESERVED_NAMES.contains(&name) {
            return Err(FieldError::new(field, format!("`{name}` is reserved")));
        }
        let mut chars = name.chars();
        let ok = name.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(FieldError::new(field, "must match ^[a-z0-9][a-z0-9_-]{0,63}$"))
        }
    }

    /// Validates `name` (errors name the field `name`).
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        Self::parse_field(name, "name")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Container settings where anything may be left unset: what a profile
/// holds and what a creation request adds on top.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ConfigOverlay {
    /// CPUs.
    pub cpu_limit: Option<f64>,
    /// Memory limit.
    pub memory_limit_bytes: Option<u64>,
    /// Process limit.
    pub pids_limit: Option<u64>,
    /// Environment, merged key by key.
    pub env: BTreeMap<String, String>,
    /// Labels, merged key by key.
    pub labels: BTreeMap<String, String>,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Restart policy.
    pub restart_policy: Option<RestartPolicy>,
    /// Devices: `/dev/…` paths or registry device ids, appended in order
    /// without repeats.
    pub devices: Vec<String>,
}

impl ConfigOverlay {
    /// Lays this overlay over `base`: set scalars win, maps merge key by
    /// key, devices are appended unless already there.
    pub fn apply_to(&self, base: &mut ContainerConfig) {
        if self.cpu_limit.is_some() {
            base.cpu_limit = self.cpu_limit;
        }
        if self.memory_limit_bytes.is_some() {
            base.memory_limit_bytes = self.memory_limit_bytes;
        }
        if self.pids_limit.is_some() {
            base.pids_limit = self.pids_limit;
        }
        base.env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        base.labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        if self.command.is_some() {
            base.command.clone_from(&self.command);
        }
        if let Some(policy) = self.restart_policy {
            base.restart_policy = policy;
        }
        for d in &self.devices {
            if !base.devices.contains(d) {
                base.devices.push(d.clone());
            }
        }
    }

    /// The overlay with `other`'s settings laid over it (for `PATCH`).
    pub fn merged(&self, other: &ConfigOverlay) -> ConfigOverlay {
        ConfigOverlay {
            cpu_limit: other.cpu_limit.or(self.cpu_limit),
            memory_limit_bytes: other.memory_limit_bytes.or(self.memory_limit_bytes),
            pids_limit: other.pids_limit.or(self.pids_limit),
            env: self.env.iter().chain(&other.env).map(|(k, v)| (k.clone(), v.clone())).collect(),
            labels: self.labels.iter().chain(&other.labels).map(|(k, v)| (k.clone(), v.clone())).collect(),
            command: other.command.clone().or_else(|| self.command.clone()),
            restart_policy: other.restart_policy.or(self.restart_policy),
            devices: if other.devices.is_empty() { self.devices.clone() } else { other.devices.clone() },
        }
    }

    /// Field-level problems of the settings themselves (limits, keys);
    /// device entries are checked against the registry by the service.
    pub fn validate(&self, host_cores: u32) -> Vec<FieldError> {
        let mut as_config = ContainerConfig::default();
        self.apply_to(&mut as_config);
        // Device ids are not paths; the service resolves and checks them.
        as_config.devices.clear();
        as_config.validate(host_cores)
    }
}

/// A profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Name (unique).
    pub name: ProfileName,
    /// Free text.
    pub description: String,
    /// The settings.
    pub config: ConfigOverlay,
    /// New containers get it when they name no profiles.
    pub is_default: bool,
    /// Created.
    pub created_at: UnixMillis,
    /// Last changed.
    pub updated_at: UnixMillis,
    /// Bumped by every change; the `ETag`.
    pub revision: u64,
}

/// Keeps profiles. Every method is one transaction.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ProfileRepository: Send + Sync {
    /// Every profile, by name.
    async fn list(&self) -> Result<Vec<Profile>, RepositoryError>;
    /// One profile.
    async fn get(&self, name: &str) -> Result<Option<Profile>, RepositoryError>;
    /// Ids of the containers whose records name the profile.
    async fn used_by(&self, name: &str) -> Result<Vec<String>, RepositoryError>;
    /// Profile name → ids of the containers naming it, for every profile
    /// in use (one query for a whole list).
    async fn usage(&self) -> Result<BTreeMap<String, Vec<String>>, RepositoryError>;
    /// Stores a new profile (`AlreadyExists` when the name is taken). When
    /// `profile.is_default`, it becomes the only default.
    async fn insert(&self, profile: &Profile) -> Result<(), RepositoryError>;
    /// Replaces the profile of the same name only if its stored revision is
    /// still `expected` (`Stale` otherwise, `NotFound` when gone). The
    /// default flag is not changed by this call.
    async fn replace(&self, profile: &Profile, expected: u64) -> Result<(), RepositoryError>;
    /// Renames `from` to `to` and rewrites every container record's
    /// reference in the same transaction; `expected` guards the revision
    /// (any when `None`). `NotFound`, `Stale`, or `AlreadyExists` when `to`
    /// is taken. Returns the renamed profile (revision bumped).
    async fn rename(
        &self,
        from: &str,
        to: &ProfileName,
        expected: Option<u64>,
        at: UnixMillis,
    ) -> Result<Profile, RepositoryError>;
    /// Makes `name` the only default (`NotFound` when absent); returns it.
    async fn activate(&self, name: &str, at: UnixMillis) -> Result<Profile, RepositoryError>;
    /// Deletes a profile; refuses with `InUse` (the container ids) when a
    /// container names it and `Conflict` when it is the default, checked in
    /// the same transaction; `expected` guards the revision (any when
    /// `None`): `NotFound`, `Stale`.
    async fn delete(&self, name: &str, expected: Option<u64>) -> Result<(), RepositoryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        for ok in ["default", "gpu-box", "a_1", "0", &"x".repeat(64)] {
            assert!(ProfileName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Web", "-a", "_a", "a.b", "a b", "é", "validate", &"x".repeat(65)] {
            assert_eq!(ProfileName::parse(bad).unwrap_err().field, "name", "{bad}");
        }
        assert_eq!(ProfileName::parse_field("X", "new_name").unwrap_err().field, "new_name");
    }

    #[test]
    fn overlays_merge_in_order_scalars_win_maps_merge_devices_append() {
        let base = ConfigOverlay {
            cpu_limit: Some(1.0),
            memory_limit_bytes: Some(64 << 20),
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "1".into())]),
            restart_policy: Some(RestartPolicy::Always),
            devices: vec!["/dev/ttyS0".into()],
            ..Default::default()
        };
        let gpu = ConfigOverlay {
            memory_limit_bytes: Some(128 << 20),
            env: BTreeMap::from([("B".into(), "2".into())]),
            devices: vec!["/dev/dri/card0".into(), "/dev/ttyS0".into()],
            ..Default::default()
        };
        let mut cfg = ContainerConfig::default();
        base.apply_to(&mut cfg);
        gpu.apply_to(&mut cfg);
        assert_eq!(cfg.cpu_limit, Some(1.0));
        assert_eq!(cfg.memory_limit_bytes, Some(128 << 20));
        assert_eq!(cfg.env["A"], "1");
        assert_eq!(cfg.env["B"], "2");
        assert_eq!(cfg.restart_policy, RestartPolicy::Always);
        assert_eq!(cfg.devices, ["/dev/ttyS0", "/dev/dri/card0"]);

        let patched = base.merged(&ConfigOverlay { cpu_limit: Some(0.5), ..Default::default() });
        assert_eq!((patched.cpu_limit, patched.memory_limit_bytes), (Some(0.5), Some(64 << 20)));
        assert_eq!(patched.devices, ["/dev/ttyS0"]);
    }

    #[test]
    fn overlay_validation_reuses_the_container_rules_but_not_on_device_ids() {
        let bad = ConfigOverlay {
            memory_limit_bytes: Some(1),
            cpu_limit: Some(64.0),
            devices: vec!["disk-0123456789abcdef".into()],
            ..Default::default()
        };
        let fields: Vec<_> = bad.validate(4).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["config.cpu_limit", "config.memory_limit_bytes"]);
    }
}
