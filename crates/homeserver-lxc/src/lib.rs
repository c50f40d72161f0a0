//! # homeserver-lxc
//!
//! The [`ContainerRuntime`](homeserver_domain::ContainerRuntime) adapter for
//! LXC. [`LxcRuntime`] drives Debian's `lxc-*` tools (LXC 5.0) through
//! `tokio::process`, and owns the container's LXC config file.
//!
//! ## What this crate owns
//! - Running `lxc-ls`, `lxc-info`, `lxc-create`, `lxc-start`, `lxc-wait`,
//!   `lxc-stop`, `lxc-freeze`, `lxc-unfreeze`, `lxc-destroy`, `lxc-attach`
//!   and `lxc-config`. Each call has a timeout, and a tool that overruns it
//!   is killed ([`RuntimeError::Timeout`](homeserver_domain::RuntimeError)).
//!   Errors name the command line and quote its stderr.
//! - Reading and writing `<lxcpath>/<name>/config`. homeserver keeps its
//!   own settings in one managed block at the end of the file, next to
//!   `homeserver.json` and the `homeserver-init` wrapper (see [`config`]
//!   for the keys, the wrapper and the metadata file).
//! - The console log as the container's log, and `lxc-attach` as exec.
//! - Per-container resource use read from the kernel through
//!   `homeserver-cgroup`, located by the container's init pid.
//!
//! ## What it must not know
//! HTTP routes, SQL, homeserver's container ids (UUIDs), profiles and
//! operations. The runtime id is the LXC name. This crate is not the
//! LXD/Incus `lxc` client, and it does not link liblxc.
//!
//! ## Behaviour worth knowing
//! - **Construction never fails.** Without LXC, every call returns
//!   `Unavailable { runtime: Lxc, .. }` (for example, `lxc-ls` is not found).
//!   Calls work as soon as LXC is installed. `lxcpath: None` asks
//!   `lxc-config lxc.lxcpath` on first use.
//! - **Blocking work stays off the runtime.** Tools run as child processes.
//!   File reads and writes run in `spawn_blocking`. Config edits are atomic
//!   (a temporary file, then rename).
//! - **States.** `STOPPED`→stopped, `STARTING`→starting,
//!   `RUNNING`/`THAWED`→running, `FROZEN`/`FREEZING`→paused,
//!   `STOPPING`→stopping, `ABORTING`→error, anything else→unknown. LXC has
//!   no "created" state, so a container that never started is `stopped`.
//! - **Idempotent lifecycle.** `start` on a running container, `stop` on a
//!   stopped one, `pause` on a paused one and `unpause` on a running one all
//!   succeed. `start` of a paused container, `pause` of a stopped one,
//!   `exec` outside `running`, and `remove` without `force` of a
//!   running/paused one return `InvalidState`. `stop(0)` kills at once
//!   (`lxc-stop -k`).
//! - **Logs.** The console log has no timestamps (`timestamp: None`, stream
//!   `console`) and `since` is ignored. `tail` reads only the end of the
//!   file (at most 2 MiB, including the rotated `.1` file). A container
//!   with no `lxc.console.logfile` has no lines.
//! - **Exec.** `lxc-attach --clear-env` means the command sees the
//!   container's `lxc.environment`, LXC's default `PATH` and the request's
//!   `env`, never the server's own environment. It runs in `/`. `workdir`
//!   goes through `/bin/sh -c 'cd "$1" && …'`, because lxc-attach has no
//!   working-directory option. At the timeout, the whole process group
//!   (lxc-attach and the command inside the container) is killed.
//! - **Create.** `source` is a template name (`/usr/share/lxc/templates/lxc-<name>`).
//!   Paths are refused. A missing template is `SourceNotFound`, checked
//!   before `lxc-create` runs. A taken name is `NameTaken`. Values a config
//!   line cannot hold, and missing devices, are `Rejected`. If writing the
//!   settings fails, the container is destroyed again.
#![forbid(unsafe_code)]

mod command;
pub mod config;
mod error;
mod exec;
mod logs;
mod parse;
mod runtime;
mod stats;

pub use config::CgroupVersion;
pub use runtime::{LxcOptions, LxcRuntime};
