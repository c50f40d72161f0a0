//! Reading the end of a console log file without loading all of it.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::LxcError;

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
}
