//! # homeserver-cgroup
//!
//! Per-container resource use read straight from the kernel: the cgroup
//! files (v1, hybrid and v2) and `/proc/<pid>/net/dev`, given one process of
//! the container (its init pid). Docker's stats API costs 1–2 s per
//! container; these files cost microseconds.
//!
//! ## What this crate owns
//! - Finding a process's cgroups (`/proc/<pid>/cgroup`) and reading CPU
//!   time, memory (minus inactive page cache, like `docker stats`), the
//!   memory limit, block I/O bytes and task count from them, plus the
//!   network bytes of the process's network namespace: [`CgroupReader`]
//!   returns a [`CgroupSample`].
//! - Turning successive CPU-time readings into a percent: [`CpuMeter`].
//! - The conversion to the domain's
//!   [`ContainerStats`](homeserver_domain::ContainerStats)
//!   ([`CgroupSample::to_stats`]).
//! - Pure parsers for every file format (private, unit-tested).
//!
//! Both roots are configurable ([`CgroupRoots`]), which is how the v2 code
//! is tested on a v1 host: tests build whole fake hosts in a temp folder.
//!
//! ## What it must not know
//! No Docker or LXC API, no HTTP, no SQL, no async runtime. It knows cgroup
//! naming conventions (`docker-<id>.scope`, `lxc.payload.<name>`) only to
//! find a container's top cgroup from a process inside it. Which container
//! has which pid, its id, name and state are the runtime adapters' business.
//!
//! ## Blocking and cost
//! Everything is plain, blocking `std::fs` I/O: async callers run
//! [`CgroupReader::read_pid`] and its kin inside
//! `tokio::task::spawn_blocking`. A fresh read opens about eight small
//! files into buffers reused between calls, with no regex. About 20 µs of
//! CPU per container on fixture files and 40 µs on this v1 host's real
//! files (`benches/read.rs`). [`CgroupReader::read_container`], for a
//! container read every second, keeps its files open and re-reads them
//! with `pread`: no path walk, open, close or `/proc/<pid>/cgroup`, about
//! half the cost. Kept files stay valid by the kernel's own rule: a
//! removed cgroup's files answer `ENODEV`, which ends the kept set.
//!
//! ```no_run
//! use std::time::Instant;
//! use homeserver_cgroup::{CgroupReader, CgroupRoots, CpuMeter};
//!
//! # fn demo(init_pid: u32) -> Result<(), homeserver_cgroup::CgroupError> {
//! let reader = CgroupReader::new(CgroupRoots::default())?;
//! let mut meter = CpuMeter::new();
//! let sample = reader.read_pid(init_pid)?;
//! let cpu_percent = meter.update(sample.cpu_usage_ns, Instant::now());
//! let mut stats = sample.to_stats(cpu_percent);
//! stats.name = "web".into();
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cpu;
mod error;
mod parse;
mod reader;
mod sample;

pub use cpu::CpuMeter;
pub use error::CgroupError;
pub use reader::{CgroupMode, CgroupReader, CgroupRoots};
pub use sample::CgroupSample;
