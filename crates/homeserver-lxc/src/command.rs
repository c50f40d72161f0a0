//! Running one `lxc-*` tool: argv building, a hard timeout that kills the
//! child, and errors that carry the command line and its stderr.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use homeserver_domain::{RuntimeError, RuntimeKind};
use tokio::process::Command;

use crate::error::LxcError;

/// Most characters of a tool's stderr kept in an error message.
const STDERR_IN_ERROR: usize = 2_000;

/// A tool invocation: the program name (`lxc-start`) and its arguments.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    program: &'static str,
    args: Vec<OsString>,
}

impl Invocation {
    /// `program` with no arguments yet.
    pub(crate) fn new(program: &'static str) -> Self {
        Self { program, args: Vec::new() }
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The program name.
    pub(crate) fn program(&self) -> &'static str {
        self.program
    }

    /// The arguments.
    pub(crate) fn arguments(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as a human reads it (for logs and errors).
    pub(crate) fn display(&self) -> String {
        let mut s = self.program.to_owned();
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
                s.push('\'');
                s.push_str(&a.replace('\'', r"'\''"));
                s.push('\'');
            } else {
                s.push_str(&a);
            }
        }
        s
    }
}

/// What a finished tool printed.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The command line.
    pub(crate) command: String,
    /// Its exit status.
    pub(crate) status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub(crate) stdout: String,
    /// Standard error (lossy UTF-8).
    pub(crate) stderr: String,
}

impl Finished {
    /// Exit status 0.
    pub(crate) fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, if the tool exited rather than being killed.
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// An error naming the command, its status and the end of its stderr.
    pub(crate) fn failure(&self) -> LxcError {
        LxcError::Command {
            command: self.command.clone(),
            status: self.status.to_string(),
            stderr: tail_chars(self.stderr.trim(), STDERR_IN_ERROR),
        }
    }
}

/// The last `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn tail_chars(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_owned();
    }
    let skip = count - max;
    let mut out = String::from("…");
    out.extend(s.chars().skip(skip));
    out
}

/// Finds and runs the `lxc-*` tools.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    bin_dir: Option<PathBuf>,
}

impl Tools {
    /// Tools from `bin_dir`, or from `PATH` when `None`.
    pub(crate) fn new(bin_dir: Option<PathBuf>) -> Self {
        Self { bin_dir }
    }

    /// The path (or bare name, looked up in `PATH`) of `program`.
    pub(crate) fn resolve(&self, program: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        }
    }

    /// Whether `program` is an executable file in `bin_dir`, or in a
    /// folder of `PATH` when there is none: what spawning it would find.
    /// Blocking (a few `stat`s).
    pub(crate) fn installed(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let executable =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        match &self.bin_dir {
            Some(dir) => executable(&dir.join(program)),
            None => std::env::var_os("PATH")
                .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| executable(&dir.join(program)))),
        }
    }

    /// A `tokio` command for `inv`, run from `/` with the environment of
    /// this process (the `lxc-*` tools need none of their own).
    pub(crate) fn command(&self, inv: &Invocation) -> Command {
        let mut cmd = Command::new(self.resolve(inv.program()));
        cmd.args(inv.arguments()).current_dir(Path::new("/")).kill_on_drop(true);
        cmd
    }

    /// Runs `inv` to completion with stdin closed, killing it after
    /// `timeout` ([`RuntimeError::Timeout`]).
    ///
    /// A missing tool is [`RuntimeError::Unavailable`]; a non-zero exit is
    /// *not* an error here: callers look at the status and stderr.
    pub(crate) async fn run(&self, inv: &Invocation, timeout: Duration) -> Result<Finished, RuntimeError> {
        let command = inv.display();
        let mut cmd = self.command(inv);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, so a timeout also kills what it started
        // (lxc-create's template script and its children).
        cmd.process_group(0);
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| spawn_error(inv.program(), &command, e))?;
        let pgid = child.id();
        // Dropping the `wait_with_output` future at the timeout drops the
        // child, and `kill_on_drop` sends it SIGKILL (tokio reaps it).
        let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => return Err(LxcError::io(format!("waiting for `{command}`"), e).into()),
            Err(_) => {
                kill_group(pgid);
                tracing::warn!(%command, ?timeout, "lxc tool timed out; killed");
                return Err(RuntimeError::Timeout(format!(
                    "`{command}` did not finish within {:.1} s and was killed",
                    timeout.as_secs_f64()
                )));
            }
        };
        let finished = Finished {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        tracing::debug!(
            command = %finished.command,
            status = %finished.status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "lxc tool finished"
        );
        Ok(finished)
    }

    /// [`Tools::run`], then a non-zero exit becomes an error.
    pub(crate) async fn run_ok(&self, inv: &Invocation, timeout: Duration) -> Result<Finished, RuntimeError> {
        let finished = self.run(inv, timeout).await?;
        if finished.success() { Ok(finished) } else { Err(finished.failure().into()) }
    }
}

/// Sends SIGKILL to the process group `pgid` (a tool started with
/// `process_group(0)` and everything it started that stayed in its group;
/// for `lxc-attach`, the command running inside the container).
pub(crate) fn kill_group(pgid: Option<u32>) {
    let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw) else {
        return;
    };
    match rustix::process::kill_process_group(pid, rustix::process::Signal::KILL) {
        Ok(()) => tracing::debug!(pgid = pid.as_raw_nonzero().get(), "killed process group"),
        Err(e) => tracing::debug!(pgid = pid.as_raw_nonzero().get(), error = %e, "could not kill process group"),
    }
}

/// Maps a spawn failure: a missing tool means LXC is not installed.
pub(crate) fn spawn_error(program: &str, command: &str, e: std::io::Error) -> RuntimeError {
    if e.kind() == std::io::ErrorKind::NotFound {
        RuntimeError::Unavailable {
            runtime: RuntimeKind::Lxc,
            reason: format!("`{program}` not found (is Debian's `lxc` package installed?)"),
        }
    } else if e.kind() == std::io::ErrorKind::PermissionDenied {
        RuntimeError::Unavailable { runtime: RuntimeKind::Lxc, reason: format!("cannot run `{command}`: {e}") }
    } else {
        LxcError::io(format!("spawning `{command}`"), e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let inv = Invocation::new("lxc-attach").args(["-n", "web", "--", "sh", "-c", "echo 'hi' there", ""]);
        assert_eq!(inv.display(), r"lxc-attach -n web -- sh -c 'echo '\''hi'\'' there' ''");
    }

    #[test]
    fn tail_chars_keeps_the_end() {
        assert_eq!(tail_chars("abcdef", 10), "abcdef");
        assert_eq!(tail_chars("abcdef", 3), "…def");
        assert_eq!(tail_chars("ääää", 2), "…ää");
    }

    #[tokio::test]
    async fn a_tool_past_its_timeout_is_killed_with_what_it_started() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let tool = dir.path().join("lxc-create");
        std::fs::write(&tool, format!("#!/bin/sh\n(sleep 2; touch {}) &\nsleep 30\n", marker.display())).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools::new(Some(dir.path().to_owned()));
        let t0 = Instant::now();
        let err =
            tools.run(&Invocation::new("lxc-create").arg("-n").arg("x"), Duration::from_millis(300)).await.unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        match err {
            RuntimeError::Timeout(msg) => assert!(msg.contains("lxc-create -n x"), "{msg}"),
            other => panic!("expected Timeout, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!marker.exists(), "the tool's child was killed too");
    }

    #[tokio::test]
    async fn failures_carry_the_command_line_and_stderr() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("lxc-start");
        std::fs::write(&tool, "#!/bin/sh\necho 'lxc-start: web: Failed to start' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools::new(Some(dir.path().to_owned()));
        let err = tools.run_ok(&Invocation::new("lxc-start").args(["-n", "web", "-d"]), Duration::from_secs(5)).await;
        let msg = err.unwrap_err().to_string();
        assert!(msg.contains("`lxc-start -n web -d` failed") && msg.contains("Failed to start"), "{msg}");
    }

    #[tokio::test]
    async fn a_missing_tool_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools::new(Some(dir.path().to_owned()));
        let err = tools.run(&Invocation::new("lxc-ls").arg("--version"), Duration::from_secs(5)).await.unwrap_err();
        match err {
            RuntimeError::Unavailable { runtime: RuntimeKind::Lxc, reason } => {
                assert!(reason.contains("lxc-ls"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}
