//! One end-to-end test binary: the real server on a real port, real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod container_history;
mod containers;
mod devices;
mod docs;
mod errors;
mod health;
mod history;
mod kernel;
mod lifecycle;
mod profiles_applied;
mod security;
mod seed;
mod streams;

/// Reads a `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}
