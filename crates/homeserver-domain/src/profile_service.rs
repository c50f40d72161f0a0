//! The profile use cases: CRUD with optimistic concurrency, duplicate,
//! rename (references follow), activate (one default), dry-run validation,
//! and composing a new container's effective config from its profiles.

use std::sync::Arc;

use crate::container::ContainerConfig;
use crate::device_service::{DeviceError, DeviceService};
use crate::error::{FieldError, RepositoryError};
use crate::ports::Clock;
use crate::profile::{ConfigOverlay, DEFAULT_PROFILE, MAX_DESCRIPTION_LEN, Profile, ProfileName, ProfileRepository};

/// How often a write without `If-Match` retries after losing a race.
const MAX_RETRIES: usize = 8;

/// Why a profile use case failed.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Invalid input.
    #[error("invalid profile request")]
    Invalid(Vec<FieldError>),
    /// No such profile.
    #[error("no such profile")]
    NotFound,
    /// The name is taken.
    #[error("a profile named `{0}` exists")]
    NameTaken(String),
    /// Containers use it.
    #[error("the profile is used by {} container(s)", .0.len())]
    InUse(Vec<String>),
    /// The default profile cannot be deleted.
    #[error("the default profile cannot be deleted; activate another one first")]
    IsDefault,
    /// `If-Match` names another revision.
    #[error("the profile changed since the given ETag")]
    PreconditionFailed,
    /// The store failed.
    #[error("profile store failed")]
    Repository(#[source] RepositoryError),
}

impl From<RepositoryError> for ProfileError {
    fn from(e: RepositoryError) -> Self {
        match e {
            RepositoryError::NotFound => Self::NotFound,
            RepositoryError::Stale => Self::PreconditionFailed,
            RepositoryError::InUse(ids) => Self::InUse(ids),
            RepositoryError::Conflict(_) => Self::IsDefault,
            other => Self::Repository(other),
        }
    }
}

impl From<DeviceError> for ProfileError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Invalid(errors) => Self::Invalid(errors),
            DeviceError::Repository(e) => Self::Repository(e),
            other => Self::Repository(RepositoryError::internal(other.to_string())),
        }
    }
}

/// A profile and the containers naming it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    /// The profile.
    pub profile: Profile,
    /// Ids of the containers naming it.
    pub used_by: Vec<String>,
}

/// The writable part of a profile (`POST`, `PUT`, `validate`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileInput {
    /// Name (as sent; validated by the service).
    pub name: String,
    /// Free text.
    pub description: String,
    /// Settings.
    pub config: ConfigOverlay,
}

/// A partial change (`PATCH`): `None` leaves a field alone; `config` is
/// laid over the stored one ([`ConfigOverlay::merged`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfilePatch {
    /// New description.
    pub description: Option<String>,
    /// Settings to lay over the stored ones.
    pub config: Option<ConfigOverlay>,
}

/// The profile use cases.
pub struct ProfileService {
    repository: Arc<dyn ProfileRepository>,
    devices: Arc<DeviceService>,
    clock: Arc<dyn Clock>,
    host_cores: u32,
}

impl ProfileService {
    /// The service.
    pub fn new(
        repository: Arc<dyn ProfileRepository>,
        devices: Arc<DeviceService>,
        clock: Arc<dyn Clock>,
        host_cores: u32,
    ) -> Self {
        Self { repository, devices, clock, host_cores }
    }

    /// Creates the `default` profile (empty settings, the default) when the
    /// store has no profile at all: the first start.
    #[tracing::instrument(name = "profiles.ensure_default", skip(self))]
    pub async fn ensure_default(&self) -> Result<(), ProfileError> {
        if !self.repository.list().await?.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        let profile = Profile {
            name: ProfileName::parse(DEFAULT_PROFILE).map_err(|e| ProfileError::Invalid(vec![e]))?,
            description: "Applied to new containers that name no profile".to_owned(),
            config: ConfigOverlay::default(),
            is_default: true,
            created_at: now,
            updated_at: now,
            revision: 1,
        };
        match self.repository.insert(&profile).await {
            Ok(()) | Err(RepositoryError::AlreadyExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every profile with its users.
    pub async fn list(&self) -> Result<Vec<ProfileView>, ProfileError> {
        let mut usage = self.repository.usage().await?;
        let profiles = self.repository.list().await?;
        Ok(profiles
            .into_iter()
            .map(|profile| {
                let used_by = usage.remove(profile.name.as_str()).unwrap_or_default();
                ProfileView { profile, used_by }
            })
            .collect())
    }

    /// One profile with its users.
    pub async fn get(&self, name: &str) -> Result<ProfileView, ProfileError> {
        let profile = self.repository.get(name).await?.ok_or(ProfileError::NotFound)?;
        let used_by = self.repository.used_by(name).await?;
        Ok(ProfileView { profile, used_by })
    }

    /// Every field-level problem of `input` (empty when valid): the dry
    /// run behind `POST /profiles/validate`, and the check before writes.
    pub async fn validate(&self, input: &ProfileInput) -> Result<Vec<FieldError>, ProfileError> {
        let mut errors = Vec::new();
        if let Err(e) = ProfileName::parse(&input.name) {
            errors.push(e);
        }
        errors.extend(self.check_body(&input.description, &input.config).await?);
        Ok(errors)
    }

    async fn check_body(&self, description: &str, config: &ConfigOverlay) -> Result<Vec<FieldError>, ProfileError> {
        let mut errors = Vec::new();
        if description.chars().count() > MAX_DESCRIPTION_LEN {
            errors.push(FieldError::new("description", format!("must be at most {MAX_DESCRIPTION_LEN} characters")));
        }
        errors.extend(config.validate(self.host_cores));
        errors.extend(self.devices.check_known(&config.devices, "config.devices").await?);
        Ok(errors)
    }

    /// Creates a profile (never the default: use [`ProfileService::activate`]).
    #[tracing::instrument(name = "profiles.create", skip(self, input), fields(name = %input.name))]
    pub async fn create(&self, input: &ProfileInput) -> Result<Profile, ProfileError> {
        let errors = self.validate(input).await?;
        let name = match ProfileName::parse(&input.name) {
            Ok(name) if errors.is_empty() => name,
            _ => return Err(ProfileError::Invalid(errors)),
        };
        let now = self.clock.now();
        let profile = Profile {
            name,
            description: input.description.clone(),
            config: input.config.clone(),
            is_default: false,
            created_at: now,
            updated_at: now,
            revision: 1,
        };
        match self.repository.insert(&profile).await {
            Ok(()) => Ok(profile),
            Err(RepositoryError::AlreadyExists) => Err(ProfileError::NameTaken(input.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces description and settings (`PUT`).
    #[tracing::instrument(name = "profiles.replace", skip(self, description, config))]
    pub async fn replace(
        &self,
        name: &str,
        description: &str,
        config: &ConfigOverlay,
        if_match: Option<u64>,
    ) -> Result<Profile, ProfileError> {
        let errors = self.check_body(description, config).await?;
        if !errors.is_empty() {
            return Err(ProfileError::Invalid(errors));
        }
        self.write(name, if_match, |p| Profile { description: description.to_owned(), config: config.clone(), ..p })
            .await
    }

    /// Changes some fields (`PATCH`).
    #[tracing::instrument(name = "profiles.patch", skip(self, patch))]
    pub async fn patch(
        &self,
        name: &str,
        patch: &ProfilePatch,
        if_match: Option<u64>,
    ) -> Result<Profile, ProfileError> {
        let description_errors = self
            .check_body(patch.description.as_deref().unwrap_or_default(), &patch.config.clone().unwrap_or_default())
            .await?;
        if !description_errors.is_empty() {
            return Err(ProfileError::Invalid(description_errors));
        }
        self.write(name, if_match, |p| Profile {
            description: patch.description.clone().unwrap_or_else(|| p.description.clone()),
            config: patch.config.as_ref().map_or_else(|| p.config.clone(), |c| p.config.merged(c)),
            ..p
        })
        .await
    }

    /// Read, change, write guarded by the revision read; retried on a lost
    /// race unless the caller pinned a revision with `If-Match`.
    async fn write(
        &self,
        name: &str,
        if_match: Option<u64>,
        change: impl Fn(Profile) -> Profile,
    ) -> Result<Profile, ProfileError> {
        for _ in 0..MAX_RETRIES {
            let current = self.repository.get(name).await?.ok_or(ProfileError::NotFound)?;
            if if_match.is_some_and(|rev| rev != current.revision) {
                return Err(ProfileError::PreconditionFailed);
            }
            // Always a write, even when nothing changes: two clients sending
            // the same `If-Match` never both succeed.
            let mut next = change(current.clone());
            next.revision = current.revision + 1;
            next.updated_at = self.clock.now();
            match self.repository.replace(&next, current.revision).await {
                Ok(()) => return Ok(next),
                Err(RepositoryError::Stale) if if_match.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ProfileError::Repository(RepositoryError::Unavailable("the profile kept changing; try again".to_owned())))
    }

    /// Deletes a profile nobody uses (never the default).
    #[tracing::instrument(name = "profiles.delete", skip(self))]
    pub async fn delete(&self, name: &str, if_match: Option<u64>) -> Result<(), ProfileError> {
        Ok(self.repository.delete(name, if_match).await?)
    }

    /// Copies a profile under a new name (not the default).
    #[tracing::instrument(name = "profiles.duplicate", skip(self))]
    pub async fn duplicate(&self, name: &str, new_name: &str) -> Result<Profile, ProfileError> {
        let new_name = ProfileName::parse_field(new_name, "new_name").map_err(|e| ProfileError::Invalid(vec![e]))?;
        let source = self.repository.get(name).await?.ok_or(ProfileError::NotFound)?;
        let now = self.clock.now();
        let copy = Profile {
            name: new_name.clone(),
            is_default: false,
            created_at: now,
            updated_at: now,
            revision: 1,
            ..source
        };
        match self.repository.insert(&copy).await {
            Ok(()) => Ok(copy),
            Err(RepositoryError::AlreadyExists) => Err(ProfileError::NameTaken(new_name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames a profile; every container's reference follows atomically.
    #[tracing::instrument(name = "profiles.rename", skip(self))]
    pub async fn rename(&self, name: &str, new_name: &str, if_match: Option<u64>) -> Result<Profile, ProfileError> {
        let to = ProfileName::parse_field(new_name, "new_name").map_err(|e| ProfileError::Invalid(vec![e]))?;
        match self.repository.rename(name, &to, if_match, self.clock.now()).await {
            Err(RepositoryError::AlreadyExists) => Err(ProfileError::NameTaken(to.to_string())),
            other => Ok(other?),
        }
    }

    /// Makes a profile the default for new containers.
    #[tracing::instrument(name = "profiles.activate", skip(self))]
    pub async fn activate(&self, name: &str) -> Result<Profile, ProfileError> {
        Ok(self.repository.activate(name, self.clock.now()).await?)
    }

    /// The profiles a new container gets (`requested`, or the default when
    /// `None`) and its effective config: the profiles' settings in order,
    /// then `own`, with device ids resolved to nodes (unknown, disabled or
    /// absent devices refused).
    pub async fn compose(
        &self,
        requested: Option<&[String]>,
        own: &ConfigOverlay,
    ) -> Result<(Vec<String>, ContainerConfig), ProfileError> {
        let all = self.repository.list().await?;
        let mut errors = Vec::new();
        let chosen: Vec<&Profile> = match requested {
            None => all.iter().filter(|p| p.is_default).collect(),
            Some(names) => names
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let found = all.iter().find(|p| p.name.as_str() == n);
                    if found.is_none() {
                        errors.push(FieldError::new(format!("profiles[{i}]"), format!("no profile named `{n}`")));
                    }
                    found
                })
                .collect(),
        };
        if !errors.is_empty() {
            return Err(ProfileError::Invalid(errors));
        }
        let mut config = ContainerConfig::default();
        for p in &chosen {
            p.config.apply_to(&mut config);
        }
        own.apply_to(&mut config);
        config.devices = self.devices.resolve(&config.devices, "config.devices").await?;
        Ok((chosen.iter().map(|p| p.name.to_string()).collect(), config))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::device::{MockDeviceInventory, MockDeviceRepository};
    use crate::ports::MockClock;
    use crate::profile::MockProfileRepository;
    use crate::time::UnixMillis;

    fn profile(name: &str, is_default: bool, config: ConfigOverlay) -> Profile {
        Profile {
            name: ProfileName::parse(name).unwrap(),
            description: String::new(),
            config,
            is_default,
            created_at: UnixMillis(1),
            updated_at: UnixMillis(1),
            revision: 1,
        }
    }

    fn service(repo: MockProfileRepository) -> ProfileService {
        let mut clock = MockClock::new();
        clock.expect_now().return_const(UnixMillis(9));
        let clock = Arc::new(clock);
        let mut devices = MockDeviceRepository::new();
        devices.expect_list().returning(|| Ok(vec![]));
        let devices =
            Arc::new(DeviceService::new(Arc::new(MockDeviceInventory::new()), Arc::new(devices), clock.clone()));
        ProfileService::new(Arc::new(repo), devices, clock, 4)
    }

    #[tokio::test]
    async fn compose_uses_the_default_or_the_named_profiles_in_order_then_the_request() {
        let mut repo = MockProfileRepository::new();
        repo.expect_list().returning(|| {
            Ok(vec![
                profile("default", true, ConfigOverlay { pids_limit: Some(100), ..Default::default() }),
                profile(
                    "small",
                    false,
                    ConfigOverlay {
                        memory_limit_bytes: Some(64 << 20),
                        env: BTreeMap::from([("A".into(), "small".into())]),
                        ..Default::default()
                    },
                ),
                profile("big", false, ConfigOverlay { memory_limit_bytes: Some(1 << 30), ..Default::default() }),
            ])
        });
        let svc = service(repo);
        let own = ConfigOverlay { env: BTreeMap::from([("A".into(), "own".into())]), ..Default::default() };
        let (names, cfg) = svc.compose(None, &own).await.unwrap();
        assert_eq!((names, cfg.pids_limit, cfg.env["A"].as_str()), (vec!["default".to_owned()], Some(100), "own"));
        let (names, cfg) = svc.compose(Some(&["small".into(), "big".into()]), &ConfigOverlay::default()).await.unwrap();
        assert_eq!((names.len(), cfg.memory_limit_bytes, cfg.pids_limit), (2, Some(1 << 30), None));
        assert_eq!(cfg.env["A"], "small");
        let (names, _) = svc.compose(Some(&[]), &own).await.unwrap();
        assert!(names.is_empty());
        let Err(ProfileError::Invalid(errors)) = svc.compose(Some(&["big".into(), "nope".into()]), &own).await else {
            panic!("expected a field error")
        };
        assert_eq!(errors[0].field, "profiles[1]");
    }

    #[tokio::test]
    async fn validation_names_every_bad_field_and_create_maps_a_taken_name() {
        let mut repo = MockProfileRepository::new();
        repo.expect_insert().returning(|_| Err(RepositoryError::AlreadyExists));
        let svc = service(repo);
        let bad = ProfileInput {
            name: "Bad Name".into(),
            description: "x".repeat(2000),
            config: ConfigOverlay {
                memory_limit_bytes: Some(1),
                devices: vec!["disk-0000000000000000".into()],
                ..Default::default()
            },
        };
        let fields: Vec<_> = svc.validate(&bad).await.unwrap().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "description", "config.memory_limit_bytes", "config.devices[0]"]);
        assert!(matches!(svc.create(&bad).await, Err(ProfileError::Invalid(e)) if e.len() == 4));
        let good = ProfileInput { name: "web".into(), ..Default::default() };
        assert!(matches!(svc.create(&good).await, Err(ProfileError::NameTaken(n)) if n == "web"));
    }

    #[tokio::test]
    async fn patch_merges_config_and_honours_if_match() {
        let mut repo = MockProfileRepository::new();
        repo.expect_get().returning(|_| {
            Ok(Some(profile("web", false, ConfigOverlay { cpu_limit: Some(1.0), ..Default::default() })))
        });
        repo.expect_replace()
            .withf(|p, expected| *expected == 1 && p.revision == 2 && p.config.cpu_limit == Some(1.0))
            .times(1)
            .returning(|_, _| Ok(()));
        let svc = service(repo);
        let patch = ProfilePatch {
            description: Some("web servers".into()),
            config: Some(ConfigOverlay { pids_limit: Some(50), ..Default::default() }),
        };
        let p = svc.patch("web", &patch, Some(1)).await.unwrap();
        assert_eq!(
            (p.description.as_str(), p.config.pids_limit, p.updated_at),
            ("web servers", Some(50), UnixMillis(9))
        );
        assert!(matches!(svc.patch("web", &patch, Some(7)).await, Err(ProfileError::PreconditionFailed)));
    }

    #[tokio::test]
    async fn delete_and_rename_map_store_refusals() {
        let mut repo = MockProfileRepository::new();
        repo.expect_delete().returning(|name, _| match name {
            "used" => Err(RepositoryError::InUse(vec!["c1".into()])),
            "default" => Err(RepositoryError::Conflict("default".into())),
            _ => Err(RepositoryError::Stale),
        });
        repo.expect_rename().returning(|_, _, _, _| Err(RepositoryError::AlreadyExists));
        let svc = service(repo);
        assert!(matches!(svc.delete("used", None).await, Err(ProfileError::InUse(ids)) if ids == ["c1"]));
        assert!(matches!(svc.delete("default", None).await, Err(ProfileError::IsDefault)));
        assert!(matches!(svc.delete("x", Some(3)).await, Err(ProfileError::PreconditionFailed)));
        assert!(matches!(svc.rename("a", "b", None).await, Err(ProfileError::NameTaken(n)) if n == "b"));
        assert!(matches!(svc.rename("a", "B!", None).await, Err(ProfileError::Invalid(e)) if e[0].field == "new_name"));
    }

    #[tokio::test]
    async fn first_start_creates_the_default_profile_once() {
        let mut repo = MockProfileRepository::new();
        let mut calls = 0;
        repo.expect_list().returning(move || {
            calls += 1;
            if calls == 1 { Ok(vec![]) } else { Ok(vec![profile("default", true, ConfigOverlay::default())]) }
        });
        repo.expect_insert().withf(|p| p.is_default && p.name.as_str() == "default").times(1).returning(|_| Ok(()));
        let svc = service(repo);
        svc.ensure_default().await.unwrap();
        svc.ensure_default().await.unwrap();
    }
}
