//! Reading the end of a console log file without loading all of it, and
//! following it as it grows.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use homeserver_domain::{LogFollower, LogLine, LogStream, RuntimeError};

use crate::error::{LxcError, join_error};

/// How often a followed console log is looked at.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Most bytes read from a followed log per look.
const FOLLOW_CHUNK: u64 = 256 * 1024;

/// A line longer than this is handed on in pieces (a console without newlines).
const MAX_LINE: usize = 64 * 1024;

/// Most bytes read from the end of the console log files for one request.
pub(crate) const MAX_LOG_WINDOW: u64 = 2 << 20;

/// The last lines of the console log at `path` (and of its rotated
/// `<path>.1` when the current file holds fewer than `tail` lines), reading
/// at most `window` bytes in all. `tail: None` keeps every line in the
/// window. A missing file has no lines. Blocking.
pub(crate) fn read_tail(path: &Path, tail: Option<u32>, window: u64) -> Result<Vec<String>, LxcError> {
    let want = tail.map(|t| t as usize);
    let (mut lines, used) = read_window(path, window)?;
    if want.is_some_and(|w| lines.len() < w) && used < window {
        let mut rotated = PathBuf::from(path.as_os_str().to_owned());
        rotated.as_mut_os_string().push(".1");
        let (mut older, _) = read_window(&rotated, window - used)?;
        older.append(&mut lines);
        lines = older;
    }
    if let Some(w) = want {
        let skip = lines.len().saturating_sub(w);
        lines.drain(..skip);
    }
    Ok(lines)
}

/// The complete lines in the last `window` bytes of `path`, and how many
/// bytes were read. A line cut by the window's start is dropped; an
/// unfinished last line (no newline yet) is kept.
fn read_window(path: &Path, window: u64) -> Result<(Vec<String>, u64), LxcError> {
    let ctx = |e| LxcError::io(format!("reading console log {}", path.display()), e);
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(ctx(e)),
    };
    let len = file.metadata().map_err(ctx)?.len();
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start)).map_err(ctx)?;
    let mut bytes = Vec::with_capacity(window.min(len) as usize);
    file.take(window).read_to_end(&mut bytes).map_err(ctx)?;
    let used = bytes.len() as u64;
    let mut text: &[u8] = &bytes;
    if start > 0 {
        text = match text.iter().position(|b| *b == b'\n') {
            Some(i) => &text[i + 1..],
            None => &[],
        };
    }
    let mut lines: Vec<String> = text
        .split(|b| *b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    Ok((lines, used))
}

/// The last `tail` complete lines of `path` (within `window` bytes, the
/// rotated `<path>.1` filling in when the file holds fewer), and the offset
/// just after them where following starts (an unfinished last line is left
/// to the follower), with the file's inode. A missing file: no lines,
/// offset 0. Blocking.
pub(crate) fn tail_for_follow(
    path: &Path,
    tail: Option<u32>,
    window: u64,
) -> Result<(Vec<String>, u64, Option<u64>), LxcError> {
    use std::os::unix::fs::MetadataExt as _;
    let ctx = |e| LxcError::io(format!("reading console log {}", path.display()), e);
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0, None)),
        Err(e) => return Err(ctx(e)),
    };
    let meta = file.metadata().map_err(ctx)?;
    let (len, inode) = (meta.len(), meta.ino());
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start)).map_err(ctx)?;
    let mut bytes = Vec::new();
    file.take(len - start).read_to_end(&mut bytes).map_err(ctx)?;
    let end = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => start + i as u64 + 1,
        None => start,
    };
    let complete = &bytes[..usize::try_from(end - start).unwrap_or(bytes.len())];
    let mut text: &[u8] = complete;
    if start > 0 {
        text = match text.iter().position(|b| *b == b'\n') {
            Some(i) => &text[i + 1..],
            None => &[],
        };
    }
    let mut lines: Vec<String> = text.split(|b| *b == b'\n').map(line_text).collect();
    lines.pop(); // after the last newline
    let want = tail.map(|t| t as usize);
    if start == 0 && want.is_some_and(|w| lines.len() < w) && window > len {
        let mut rotated = PathBuf::from(path.as_os_str().to_owned());
        rotated.as_mut_os_string().push(".1");
        let (mut older, _) = read_window(&rotated, window - len)?;
        older.append(&mut lines);
        lines = older;
    }
    if let Some(w) = want {
        let skip = lines.len().saturating_sub(w);
        lines.drain(..skip);
    }
    Ok((lines, end, Some(inode)))
}

fn line_text(l: &[u8]) -> String {
    String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned()
}

/// What one look at a followed log found.
#[derive(Debug)]
enum Look {
    /// New bytes, from `from` (0 after a rotation or truncation).
    Data { from: u64, bytes: Vec<u8>, inode: u64 },
    /// Nothing new.
    Nothing,
    /// The container is gone.
    Gone,
}

/// Reads what `path` holds past `pos` (from 0 if it was replaced or cut),
/// or tells that the container (its `config`) is gone. Blocking.
fn look(path: &Path, config: &Path, pos: u64, inode: Option<u64>) -> Result<Look, LxcError> {
    use std::os::unix::fs::MetadataExt as _;
    let ctx = |e| LxcError::io(format!("following console log {}", path.display()), e);
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(if config.exists() { Look::Nothing } else { Look::Gone });
        }
        Err(e) => return Err(ctx(e)),
    };
    let meta = file.metadata().map_err(ctx)?;
    let from = if inode.is_some_and(|i| i != meta.ino()) || meta.len() < pos { 0 } else { pos };
    if meta.len() == from {
        return Ok(if config.exists() { Look::Nothing } else { Look::Gone });
    }
    file.seek(SeekFrom::Start(from)).map_err(ctx)?;
    let mut bytes = Vec::new();
    file.take(FOLLOW_CHUNK).read_to_end(&mut bytes).map_err(ctx)?;
    Ok(Look::Data { from, bytes, inode: meta.ino() })
}

/// A followed console log: looks at the file every [`FOLLOW_POLL`] for what
/// was appended (starting again from the top after a rotation or a
/// truncation), and ends once the container is destroyed. Lines carry no
/// timestamp, like the console log itself.
#[derive(Debug)]
pub(crate) struct ConsoleFollower {
    path: PathBuf,
    config: PathBuf,
    pos: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
    ready: VecDeque<String>,
    ended: bool,
}

impl ConsoleFollower {
    /// Follows `path` (the file `inode`, if it exists) from `pos`, after
    /// handing out `first`; `config` is the container's config file (its
    /// removal ends the log).
    pub(crate) fn new(path: PathBuf, config: PathBuf, first: Vec<String>, pos: u64, inode: Option<u64>) -> Self {
        Self { path, config, pos, inode, partial: Vec::new(), ready: first.into(), ended: false }
    }

    fn take(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            self.ready.push_back(line_text(&line[..line.len() - 1]));
        }
        if self.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.ready.push_back(line_text(&line));
        }
    }
}

#[async_trait]
impl LogFollower for ConsoleFollower {
    async fn next_line(&mut self) -> Option<Result<LogLine, RuntimeError>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(LogLine { timestamp: None, stream: LogStream::Console, line }));
            }
            if self.ended {
                return None;
            }
            let (path, config, pos, inode) = (self.path.clone(), self.config.clone(), self.pos, self.inode);
            let looked = tokio::task::spawn_blocking(move || look(&path, &config, pos, inode)).await;
            match looked {
                Ok(Ok(Look::Data { from, bytes, inode })) => {
                    if from < self.pos {
                        // A new file: what was half a line belongs to the old one.
                        self.partial.clear();
                    }
                    self.pos = from + bytes.len() as u64;
                    self.inode = Some(inode);
                    self.take(&bytes);
                }
                Ok(Ok(Look::Nothing)) => tokio::time::sleep(FOLLOW_POLL).await,
                Ok(Ok(Look::Gone)) => {
                    self.ended = true;
                    if !self.partial.is_empty() {
                        let line = std::mem::take(&mut self.partial);
                        self.ready.push_back(line_text(&line));
                    }
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e.into()));
                }
                Err(e) => {
                    self.ended = true;
                    return Some(Err(join_error("following the console log", e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_reads_console_lines_without_carriage_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "one\r\ntwo\r\n\r\nthree\r\nfour").unwrap();
        assert_eq!(read_tail(&path, None, MAX_LOG_WINDOW).unwrap(), ["one", "two", "", "three", "four"]);
        assert_eq!(read_tail(&path, Some(2), MAX_LOG_WINDOW).unwrap(), ["three", "four"]);
        assert_eq!(read_tail(&path, Some(0), MAX_LOG_WINDOW).unwrap(), Vec::<String>::new());
        assert!(read_tail(&dir.path().join("missing"), Some(5), MAX_LOG_WINDOW).unwrap().is_empty());
        std::fs::write(&path, "").unwrap();
        assert!(read_tail(&path, None, MAX_LOG_WINDOW).unwrap().is_empty());
    }

    #[test]
    fn big_files_are_read_from_the_end_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!("line {i:05}\n"));
        }
        std::fs::write(&path, &text).unwrap();
        // 11 bytes per line: a 100-byte window holds 9 complete lines after a cut one.
        let lines = read_tail(&path, None, 100).unwrap();
        assert_eq!(lines.len(), 9);
        assert_eq!(lines.last().unwrap(), "line 09999");
        assert_eq!(read_tail(&path, Some(3), 100).unwrap(), ["line 09997", "line 09998", "line 09999"]);
    }

    #[test]
    fn the_rotated_file_fills_in_older_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(dir.path().join("console.log.1"), "old 1\nold 2\n").unwrap();
        std::fs::write(&path, "new 1\n").unwrap();
        assert_eq!(read_tail(&path, Some(2), MAX_LOG_WINDOW).unwrap(), ["old 2", "new 1"]);
        assert_eq!(read_tail(&path, Some(1), MAX_LOG_WINDOW).unwrap(), ["new 1"]);
        assert_eq!(read_tail(&path, None, MAX_LOG_WINDOW).unwrap(), ["new 1"]);
    }

    #[test]
    fn following_starts_after_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "a\nb\nc\npart").unwrap();
        let (lines, pos, inode) = tail_for_follow(&path, Some(2), MAX_LOG_WINDOW).unwrap();
        assert_eq!((lines, pos), (vec!["b".to_owned(), "c".to_owned()], 6));
        assert!(inode.is_some());
        let (lines, pos, _) = tail_for_follow(&path, Some(0), MAX_LOG_WINDOW).unwrap();
        assert_eq!((lines.len(), pos), (0, 6));
        assert_eq!(tail_for_follow(&dir.path().join("none"), Some(5), MAX_LOG_WINDOW).unwrap(), (vec![], 0, None));
    }

    async fn next(f: &mut ConsoleFollower) -> String {
        tokio::time::timeout(Duration::from_secs(5), f.next_line()).await.unwrap().unwrap().unwrap().line
    }

    #[tokio::test]
    async fn a_followed_log_yields_appended_lines_survives_rotation_and_ends_with_the_container() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let config = dir.path().join("config");
        std::fs::write(&config, "").unwrap();
        std::fs::write(&path, "old\nhalf").unwrap();
        let (first, pos, inode) = tail_for_follow(&path, Some(1), MAX_LOG_WINDOW).unwrap();
        let mut f = ConsoleFollower::new(path.clone(), config.clone(), first, pos, inode);
        assert_eq!(next(&mut f).await, "old");
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b" line\r\nnew\n").unwrap();
        assert_eq!(next(&mut f).await, "half line");
        assert_eq!(next(&mut f).await, "new");
        // Rotation: the file is moved away and a new one begins.
        std::fs::rename(&path, dir.path().join("console.log.1")).unwrap();
        std::fs::write(&path, "after rotation\n").unwrap();
        assert_eq!(next(&mut f).await, "after rotation");
        // Truncation starts over too.
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(next(&mut f).await, "x");
        std::fs::remove_file(&config).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), f.next_line()).await.unwrap();
        assert!(end.is_none(), "the log ends with the container");
    }
}
