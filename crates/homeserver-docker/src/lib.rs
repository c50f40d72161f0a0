//! # homeserver-docker
//!
//! The Docker adapter of homeserver: [`DockerRuntime`] implements the
//! domain's [`ContainerRuntime`](homeserver_domain::ContainerRuntime) port
//! over the Docker Engine API with [bollard](https://docs.rs/bollard).
//!
//! ## What this crate owns
//! The mapping between the Docker Engine API and the domain: container
//! states (`exited` → stopped, `dead` → error, `removing` → stopping),
//! settings (memory, `NanoCpus`, pids limit, env, labels, command, restart
//! policy, devices), log frames, exec output, stats and container events,
//! and the translation of Docker's errors into
//! [`RuntimeError`](homeserver_domain::RuntimeError):
//!
//! | Docker says | `RuntimeError` |
//! |---|---|
//! | socket missing, connection refused or dropped | `Unavailable { runtime: Docker, .. }` |
//! | `404` on a container call | `NotFound` |
//! | `404` "No such image" on create (never pulls) | `SourceNotFound(image)` |
//! | `409` "already in use" on create | `NameTaken` |
//! | `409` (and old daemons' `500` "is not running/paused") on a container | `InvalidState(current state)`, or `Rejected(msg)` if the state cannot be read |
//! | `304` (already started/stopped) | success |
//! | other `4xx`/`5xx` | `Rejected(message)` |
//! | no answer within [`DockerOptions::timeout`] | `Timeout` |
//! | anything else (bad JSON, ...) | `Internal`, with the call and target as context |
//!
//! ## What it must not know
//! No HTTP routes, no SQL, no domain use cases. bollard models never leave
//! this crate: they are neither exposed in its API nor stored anywhere;
//! the only public types besides the runtime are [`DockerOptions`] and the
//! domain-free [`DockerEvent`].
//!
//! ## Behaviour worth knowing
//! - [`DockerRuntime::connect`] never fails: the client is made lazily and
//!   rebuilt after transport failures, so calls return `Unavailable` while
//!   the daemon is down and work again once it is back.
//! - `list` is one `GET /containers/json?all=true`, no inspect per
//!   container; limits, env and restart policy are unknown there (defaults),
//!   `inspect` has them.
//! - `exec` caps each stream at `output_cap_bytes` (reading on and dropping
//!   the rest); at `timeout_ms` it stops waiting and kills the process tree
//!   from the host (only possible when homeserver shares the daemon's pid
//!   namespace with the right to signal it; otherwise the process keeps
//!   running and a warning is logged).
//! - `stats` reads the container's cgroup files through `homeserver-cgroup`
//!   from its init pid (`State.Pid`, cached for 3 s; reads run in
//!   `spawn_blocking`), keeping a CPU meter per container. When those files
//!   cannot be read (homeserver in another pid or cgroup namespace), it
//!   falls back on Docker's `one_shot` stats API with CPU deltas between our
//!   own samples. Either way a container without a recent sample is read
//!   twice, 250 ms apart, so the first CPU figure is real; a stopped
//!   container reports zeros. The state in a stats answer may lag by up to
//!   the 3 s cache for a running container.
//!   [`DockerRuntime::with_cgroup_stats`]`(false)` forces the API (which
//!   costs about 1 s per call on Docker 20.10, `one_shot` or not).
//! - [`DockerRuntime::events`] ends after its first error; reconnecting
//!   (and reconciling what was missed) is the caller's job.
#![forbid(unsafe_code)]

mod convert;
mod error;
mod events;
mod exec;
mod runtime;
mod stats;

pub use events::{CONTAINER_ACTIONS, DockerEvent};
pub use runtime::{DockerOptions, DockerRuntime};
