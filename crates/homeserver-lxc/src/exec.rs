//! Running a command through `lxc-attach`: stdin, capped output on both
//! streams read concurrently, and a timeout that kills what was started.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use homeserver_domain::{ExecResult, RuntimeError};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;

use crate::command::{Invocation, Tools, kill_group, spawn_error};
use crate::error::LxcError;

/// How long output readers may take to see end-of-file once the command is
/// gone (or killed) before whatever was read is returned.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Bytes kept from one stream.
#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Shared between a reader task and the caller, so a reader that never sees
/// end-of-file can be abandoned without losing what it read.
type SharedCapture = Arc<Mutex<Capture>>;

fn take(capture: &SharedCapture) -> Capture {
    std::mem::take(&mut *capture.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Reads `reader` to its end, keeping the first `cap` bytes and dropping
/// (but still reading, so the writer never blocks) the rest.
fn spawn_reader<R>(reader: Option<R>, cap: usize) -> (SharedCapture, JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let capture = SharedCapture::default();
    let shared = Arc::clone(&capture);
    let task = tokio::spawn(async move {
        let Some(mut reader) = reader else { return };
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut c = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let keep = cap.saturating_sub(c.bytes.len()).min(n);
                    c.bytes.extend_from_slice(&buf[..keep]);
                    if keep < n {
                        c.truncated = true;
                    }
                }
            }
        }
    });
    (capture, task)
}

/// Waits for a reader until `deadline`; `false` when it is still running.
async fn join_until(task: &mut JoinHandle<()>, deadline: tokio::time::Instant) -> bool {
    tokio::time::timeout_at(deadline, task).await.is_ok()
}

/// Runs `inv` (an `lxc-attach … -- command`) in its own process group.
///
/// `stdin` is written then closed; stdout and stderr are read concurrently,
/// each capped at `cap` bytes. At `timeout` the whole process group is
/// killed, `exit_code` is `None` and `truncated` is set. A command that
/// exits while something it started in the background keeps its output
/// open is given the rest of the timeout, then killed the same way.
pub(crate) async fn run_exec(
    tools: &Tools,
    inv: &Invocation,
    stdin: Option<&str>,
    timeout: Duration,
    cap: usize,
) -> Result<ExecResult, RuntimeError> {
    let command = inv.display();
    let mut cmd = tools.command(inv);
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut child = cmd.spawn().map_err(|e| spawn_error(inv.program(), &command, e))?;
    let pgid = child.id();
    tracing::debug!(%command, pid = ?pgid, "exec started");

    let (out, mut out_task) = spawn_reader(child.stdout.take(), cap);
    let (err, mut err_task) = spawn_reader(child.stderr.take(), cap);
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        let input = input.to_owned();
        tokio::spawn(async move {
            // A command that does not read its input closes the pipe: not an error.
            let _ = pipe.write_all(input.as_bytes()).await;
            let _ = pipe.shutdown().await;
        });
    }

    let mut timed_out = false;
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            kill_group(pgid);
            return Err(LxcError::io(format!("waiting for `{command}`"), e).into());
        }
        Err(_) => {
            timed_out = true;
            kill_group(pgid);
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };

    let mut abandoned = false;
    let reader_deadline = if timed_out { tokio::time::Instant::now() + DRAIN_GRACE } else { deadline };
    if !(join_until(&mut out_task, reader_deadline).await && join_until(&mut err_task, reader_deadline).await) {
        // Something in the container still holds the output open.
        kill_group(pgid);
        let grace = tokio::time::Instant::now() + DRAIN_GRACE;
        if !(join_until(&mut out_task, grace).await && join_until(&mut err_task, grace).await) {
            out_task.abort();
            err_task.abort();
        }
        abandoned = true;
    }

    let (out, err) = (take(&out), take(&err));
    let exit_code = status.and_then(|s| {
        use std::os::unix::process::ExitStatusExt as _;
        s.code().map(i64::from).or_else(|| s.signal().map(|sig| 128 + i64::from(sig)))
    });
    if timed_out {
        tracing::info!(%command, ?timeout, "exec timed out; killed");
    }
    Ok(ExecResult {
        exit_code: if timed_out { None } else { exit_code },
        stdout: String::from_utf8_lossy(&out.bytes).into_owned(),
        stderr: String::from_utf8_lossy(&err.bytes).into_owned(),
        duration_ms: started.elapsed().as_millis() as u64,
        truncated: timed_out || abandoned || out.truncated || err.truncated,
    })
}

#[cfg(test)]
mod tests {
    //! The mechanics, with `sh` standing in for `lxc-attach` (a fake tool
    //! directory); the real thing is covered in `tests/lxc.rs`.
    use super::*;

    fn fake_attach(script: &str) -> (tempfile::TempDir, Tools) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lxc-attach");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools::new(Some(dir.path().to_owned()));
        (dir, tools)
    }

    #[tokio::test]
    async fn streams_exit_code_and_stdin() {
        let (_dir, tools) = fake_attach("read line; echo \"got $line\"; echo oops >&2; exit 3");
        let r = run_exec(&tools, &Invocation::new("lxc-attach"), Some("hello\n"), Duration::from_secs(10), 1024)
            .await
            .unwrap();
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str(), r.truncated),
            (Some(3), "got hello\n", "oops\n", false)
        );
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_drained_and_dropped() {
        // 1 MiB on stdout: far beyond a pipe buffer, so a reader that stopped reading would hang it.
        let (_dir, tools) = fake_attach("head -c 1048576 /dev/zero | tr '\\0' x; echo done >&2");
        let r = run_exec(&tools, &Invocation::new("lxc-attach"), None, Duration::from_secs(20), 10).await.unwrap();
        assert_eq!(r.stdout, "xxxxxxxxxx");
        assert_eq!(r.stderr, "done\n");
        assert_eq!(r.exit_code, Some(0));
        assert!(r.truncated);
    }

    #[tokio::test]
    async fn the_timeout_kills_the_whole_group() {
        let marker = tempfile::NamedTempFile::new().unwrap();
        let script = format!("echo started; (sleep 3; echo survived > {}) & sleep 30", marker.path().display());
        let (_dir, tools) = fake_attach(&script);
        let t0 = Instant::now();
        let r = run_exec(&tools, &Invocation::new("lxc-attach"), None, Duration::from_millis(500), 1024).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!(r.exit_code, None);
        assert!(r.truncated);
        assert_eq!(r.stdout, "started\n");
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(std::fs::read_to_string(marker.path()).unwrap(), "", "the background child was killed too");
    }

    #[tokio::test]
    async fn a_background_child_holding_the_output_does_not_hang_exec() {
        let (_dir, tools) = fake_attach("echo main; sleep 30 & exit 0");
        let t0 = Instant::now();
        let r = run_exec(&tools, &Invocation::new("lxc-attach"), None, Duration::from_millis(800), 1024).await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.stdout, "main\n");
        assert!(r.truncated, "stopped reading before end of file");
    }
}
