//! Configuration: built-in defaults → TOML file → `HOMESERVER__SECTION__KEY`
//! environment variables, then validation that names the failing key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The built-in defaults: `config/default.toml`, compiled in.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Environment variable naming a configuration file.
pub const CONFIG_ENV: &str = "HOMESERVER_CONFIG";

/// Prefix of per-key environment overrides (`HOMESERVER__SERVER__PORT`).
pub const ENV_PREFIX: &str = "HOMESERVER__";

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[sampling]`.
    pub sampling: SamplingSettings,
    /// `[host]`.
    pub host: HostSettings,
    /// `[history]`.
    pub history: HistorySettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[rate_limit]`.
    pub rate_limit: RateLimitSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[retention]`.
    pub retention: RetentionSettings,
    /// `[publishing]`.
    pub publishing: PublishingSettings,
    /// `[websocket]`.
    pub websocket: WebSocketSettings,
    /// `[containers]`.
    pub containers: ContainerSettings,
    /// `[docker]`.
    pub docker: DockerSettings,
    /// `[lxc]`.
    pub lxc: LxcSettings,
    /// `[devices]`.
    pub devices: DeviceSettings,
    /// `[logging]`.
    pub logging: LoggingSettings,
}

/// `[containers]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSettings {
    /// Operation workers.
    pub workers: usize,
}

/// `[devices]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSettings {
    /// Seconds between device rescans.
    pub rescan_interval_secs: u64,
    /// Root of `/dev` (for containers and tests).
    pub dev_root: PathBuf,
}

/// `[docker]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSettings {
    /// Manage Docker.
    pub enabled: bool,
    /// Engine socket.
    pub socket: PathBuf,
    /// Per-call timeout.
    pub timeout_secs: u64,
}

/// `[lxc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LxcSettings {
    /// Manage LXC.
    pub enabled: bool,
    /// Container folder; empty for LXC's default.
    pub lxcpath: PathBuf,
    /// `lxc-create -f` file; empty for none.
    pub config: PathBuf,
    /// Per-command timeout.
    pub timeout_secs: u64,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub host: IpAddr,
    /// Listen port (0: any free port).
    pub port: u16,
    /// Request timeout.
    pub request_timeout_secs: u64,
    /// Body size limit.
    pub max_body_bytes: usize,
    /// Drain time on shutdown.
    pub shutdown_grace_secs: u64,
    /// CORS allow-list.
    pub cors_origins: Vec<String>,
    /// TLS certificate chain (PEM); empty for plain HTTP.
    pub tls_cert: PathBuf,
    /// TLS private key (PEM); empty for plain HTTP.
    pub tls_key: PathBuf,
}

impl ServerSettings {
    /// Certificate and key, when TLS is configured.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        (!self.tls_cert.as_os_str().is_empty()).then_some((self.tls_cert.as_path(), self.tls_key.as_path()))
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Failed authentications per minute per address before 429.
    pub max_failures_per_minute: u32,
}

/// `[rate_limit]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Burst above it.
    pub burst: u32,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `/metrics` needs no token.
    pub public: bool,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// SQLite file.
    pub path: PathBuf,
    /// Pool size.
    pub max_connections: u32,
}

/// `[sampling]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSettings {
    /// Sampling period.
    pub interval_ms: u64,
}

/// `[host]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// Where `/proc` is.
    pub proc_root: PathBuf,
    /// Where `/sys` is.
    pub sys_root: PathBuf,
    /// Inventory refresh period.
    pub inventory_refresh_secs: u64,
}

/// `[history]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// Keep history at all.
    pub enabled: bool,
    /// Flush period.
    pub flush_interval_secs: u64,
    /// Prune period.
    pub prune_interval_secs: u64,
    /// In-memory buffer bound.
    pub buffer_capacity: usize,
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Raw tier, hours.
    pub raw_hours: u64,
    /// Minute tier, days.
    pub minute_days: u64,
    /// Hour tier, days.
    pub hour_days: u64,
    /// Audit log, days.
    pub audit_days: u64,
}

/// `[publishing]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishingSettings {
    /// `/ws/cpu` period.
    pub cpu_stats_frequency_ms: u64,
    /// `/ws/ram` period.
    pub ram_stats_frequency_ms: u64,
}

/// `[websocket]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// Ping period.
    pub ping_interval_secs: u64,
    /// Per-client queue.
    pub client_queue: usize,
    /// WebSocket connections per token.
    pub max_connections_per_token: usize,
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    /// EnvFilter directive.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// Values of the right type but out of range.
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Settings {
    /// Loads the layers: defaults, then `file` (or `HOMESERVER_CONFIG`), then
    /// `HOMESERVER__*` variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::from_figment(figment)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(DEFAULT_TOML)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
            ConfigError::Load(msgs.join("; "))
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every range; all failures are reported, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                errors.push(format!("`{key}` = {value} is out of range {min}..={max}"));
            }
        };
        range("server.request_timeout_secs", self.server.request_timeout_secs, 1, 3600);
        range("server.max_body_bytes", self.server.max_body_bytes as u64, 1, 1 << 30);
        range("server.shutdown_grace_secs", self.server.shutdown_grace_secs, 0, 300);
        range("database.max_connections", u64::from(self.database.max_connections), 1, 16);
        range("sampling.interval_ms", self.sampling.interval_ms, 100, 60_000);
        range("host.inventory_refresh_secs", self.host.inventory_refresh_secs, 1, 3600);
        range("history.flush_interval_secs", self.history.flush_interval_secs, 1, 3600);
        range("history.prune_interval_secs", self.history.prune_interval_secs, 60, 86_400);
        range("history.buffer_capacity", self.history.buffer_capacity as u64, 1, 1_000_000);
        range("retention.raw_hours", self.retention.raw_hours, 1, 8760);
        range("retention.minute_days", self.retention.minute_days, 1, 3650);
        range("retention.hour_days", self.retention.hour_days, 1, 36_500);
        range("publishing.cpu_stats_frequency_ms", self.publishing.cpu_stats_frequency_ms, 100, 60_000);
        range("publishing.ram_stats_frequency_ms", self.publishing.ram_stats_frequency_ms, 100, 60_000);
        range("websocket.ping_interval_secs", self.websocket.ping_interval_secs, 1, 3600);
        range("websocket.client_queue", self.websocket.client_queue as u64, 1, 4096);
        range("websocket.max_connections_per_token", self.websocket.max_connections_per_token as u64, 1, 100_000);
        range("auth.max_failures_per_minute", u64::from(self.auth.max_failures_per_minute), 1, 10_000);
        range("rate_limit.per_second", u64::from(self.rate_limit.per_second), 1, 1_000_000);
        range("rate_limit.burst", u64::from(self.rate_limit.burst), 1, 1_000_000);
        range("retention.audit_days", self.retention.audit_days, 1, 36_500);
        range("containers.workers", self.containers.workers as u64, 1, 64);
        range("devices.rescan_interval_secs", self.devices.rescan_interval_secs, 1, 86_400);
        range("docker.timeout_secs", self.docker.timeout_secs, 1, 3600);
        range("lxc.timeout_secs", self.lxc.timeout_secs, 1, 3600);
        for (i, origin) in self.server.cors_origins.iter().enumerate() {
            let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/')
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if !well_formed {
                errors.push(format!(
                    "`server.cors_origins[{i}]` = {origin:?} is not an origin like \"https://dash.example\""
                ));
            }
        }
        match (self.server.tls_cert.as_os_str().is_empty(), self.server.tls_key.as_os_str().is_empty()) {
            (true, true) => {}
            (false, false) => {
                for (key, path) in
                    [("server.tls_cert", &self.server.tls_cert), ("server.tls_key", &self.server.tls_key)]
                {
                    if !path.is_file() {
                        errors.push(format!("`{key}` = {} is not a readable file", path.display()));
                    }
                }
            }
            _ => errors.push("`server.tls_cert` and `server.tls_key` must be set together".to_owned()),
        }
        if self.database.path.as_os_str().is_empty() {
            errors.push("`database.path` must not be empty".to_owned());
        }
        if self.logging.level.trim().is_empty() || tracing_subscriber::EnvFilter::try_new(&self.logging.level).is_err()
        {
            errors.push(format!("`logging.level` = {:?} is not a valid log filter", self.logging.level));
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(errors)) }
    }

    /// The domain's retention policy.
    pub fn retention_policy(&self) -> homeserver_domain::RetentionPolicy {
        use homeserver_domain::UnixMillis;
        homeserver_domain::RetentionPolicy {
            raw_ms: self.retention.raw_hours as i64 * UnixMillis::HOUR,
            minute_ms: self.retention.minute_days as i64 * UnixMillis::DAY,
            hour_ms: self.retention.hour_days as i64 * UnixMillis::DAY,
        }
    }
}

/// One figment error as "`key`: what is wrong (where it came from)".
fn describe_figment_error(e: &figment::Error) -> String {
    let key = if e.path.is_empty() { String::from("(top level)") } else { e.path.join(".") };
    let origin = e.metadata.as_ref().map(|m| {
        let source = m.source.as_ref().map(|s| s.to_string()).unwrap_or_default();
        if source.is_empty() { m.name.to_string() } else { format!("{} {}", m.name, source) }
    });
    match origin {
        Some(o) => format!("`{key}`: {} (from {o})", e.kind),
        None => format!("`{key}`: {}", e.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(toml)))
    }

    #[test]
    fn defaults_serve_a_new_user() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.server.host.to_string(), "127.0.0.1");
        assert_eq!(s.server.port, 8080);
        assert_eq!(s.database.path, PathBuf::from("./data/homeserver.db"));
        assert_eq!(s.sampling.interval_ms, 1000);
        assert_eq!(s.retention.raw_hours, 168);
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let err = from("[sampling]\ninterval_ms = 5\n[retention]\nraw_hours = 0").unwrap_err().to_string();
        assert!(err.contains("sampling.interval_ms"), "{err}");
        assert!(err.contains("retention.raw_hours"), "{err}");
    }

    #[test]
    fn wrong_types_and_unknown_keys_name_their_key() {
        let err = from("[server]\nport = \"eighty\"").unwrap_err().to_string();
        assert!(err.contains("server.port"), "{err}");
        let err = from("[server]\nprot = 80").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = from("[logging]\nformat = \"xml\"").unwrap_err().to_string();
        assert!(err.contains("logging.format"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
    fn environment_overrides_use_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HOMESERVER__SERVER__PORT", "9091");
            jail.set_env("HOMESERVER__RETENTION__RAW_HOURS", "24");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 9091);
            assert_eq!(s.retention.raw_hours, 24);
            jail.set_env("HOMESERVER__SAMPLING__INTERVAL_MS", "nope");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("sampling.interval_ms"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail fixes the closure's error type")]
    fn file_layer_sits_between_defaults_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hs.toml", "[server]\nport = 7000\nhost = \"0.0.0.0\"")?;
            let s = Settings::load(Some(Path::new("hs.toml"))).map_err(|e| e.to_string())?;
            assert_eq!((s.server.port, s.server.host.to_string().as_str()), (7000, "0.0.0.0"));
            jail.set_env("HOMESERVER__SERVER__PORT", "7001");
            let s = Settings::load(Some(Path::new("hs.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 7001);
            assert!(Settings::load(Some(Path::new("missing.toml"))).is_err());
            Ok(())
        });
    }
}
