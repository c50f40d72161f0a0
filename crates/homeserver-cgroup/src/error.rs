//! What went wrong reading a process's cgroup, with the file it happened on.

use std::io;
use std::path::{Path, PathBuf};

/// Reading one process's resource use failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// The process no longer exists (or never did): its container stopped.
    #[error("process {pid} is gone")]
    Gone {
        /// The process id asked for.
        pid: u32,
    },
    /// A file exists but could not be read (permissions, I/O error), or a
    /// root given to [`CgroupReader::new`](crate::CgroupReader::new) is not
    /// a readable directory.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// A file was read but does not have the format the kernel documents.
    #[error("cannot parse {}: {what}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: &'static str,
    },
}

impl CgroupError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }

    pub(crate) fn parse(path: &Path, what: &'static str) -> Self {
        Self::Parse { path: path.to_owned(), what }
    }
}
