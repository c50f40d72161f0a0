//! # homeserver (the application)
//!
//! Wires the adapters (sysinfo, SQLite) into the use cases of
//! `homeserver-domain` and serves them over HTTP and WebSocket with a
//! generated OpenAPI document.
//!
//! ## What it owns
//! - [`config`]: layered settings and their validation.
//! - [`cli`]: the command line.
//! - [`startup`]: building the [`startup::Application`] and running it until
//!   a signal, with an orderly shutdown that flushes history.
//! - [`api`]: routes, wire DTOs (v1 snake_case and seed camelCase), the
//!   problem+json error table, WebSocket sessions, OpenAPI.
//! - [`auth`]: the authentication seam and per-route scopes.
//! - [`live`]: the hub that serialises each snapshot once and fans it out.
//! - [`telemetry`]: logs and service metrics.
//!
//! ## What it must not know
//! SQL, `/proc` parsing or any engine's wire format: those stay in the
//! adapter crates. Domain types never reach the wire directly; [`api::dto`]
//! converts them.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod container_stats;
pub mod devices;
pub mod live;
pub mod operations;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod tokens;

/// `homeserver --version` text: version, commit and build time.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HOMESERVER_GIT_SHA"),
    ", built ",
    env!("HOMESERVER_BUILD_TIME"),
    ")"
);

/// Facts about this build.
pub fn build_info() -> api::ops::VersionDto {
    api::ops::VersionDto {
        name: "homeserver".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        git_sha: env!("HOMESERVER_GIT_SHA").to_owned(),
        build_time: env!("HOMESERVER_BUILD_TIME").to_owned(),
        api_version: "v1".to_owned(),
    }
}
