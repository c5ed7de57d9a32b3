//! The Kubernetes CRI log: the init's output written, besides nook's own json-file log, at
//! the path the CRI client gave, one line per entry: `<RFC3339Nano> stdout|stderr F|P <text>`
//! (`F`: the line ends here, `P`: a piece of a longer line, continued by the next entry of
//! the stream). crictl and the kubelet read the file themselves; `ReopenContainerLog` (after
//! the kubelet rotated it) opens the path again.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

/// An open CRI log.
pub(super) struct CriLog {
    path: PathBuf,
    max_line: usize,
    file: Mutex<Option<std::io::BufWriter<File>>>,
}

fn open(path: &PathBuf) -> std::io::Result<std::io::BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(std::io::BufWriter::with_capacity(64 << 10, f))
}

impl CriLog {
    /// Opens (creates) the log at `path`; lines longer than `max_line` bytes are cut into
    /// `P` pieces (0: no limit).
    pub(super) fn open(path: PathBuf, max_line: usize) -> std::io::Result<CriLog> {
        let f = open(&path)?;
        Ok(CriLog {
            path,
            max_line,
            file: Mutex::new(Some(f)),
        })
    }

    /// Opens the path again (the old file was moved away by a log rotation).
    pub(super) fn reopen(&self) -> std::io::Result<()> {
        let f = open(&self.path)?;
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.as_mut() {
            let _ = old.flush();
        }
        *g = Some(f);
        Ok(())
    }

    /// Writes entries of one stream read at `time`; `last_full`: the last entry ends a line
    /// even without a newline (the stream ended there).
    pub(super) fn write(&self, stream: &str, time: &str, entries: &[&[u8]], last_full: bool) {
        let mut text = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let full_eof = last_full && i + 1 == entries.len();
            format(stream, time, e, full_eof, self.max_line, &mut text);
        }
        let mut g = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = g.as_mut() {
            if let Err(e) = f.write_all(&text).and_then(|_| f.flush()) {
                eprintln!(
                    "nook-shim: writing the CRI log {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// One entry as CRI log lines: a newline-terminated entry (or `eof`) ends with `F`, a piece of
/// a longer line is `P`; entries longer than `max_line` are cut into `P` pieces first.
pub fn format(
    stream: &str,
    time: &str,
    entry: &[u8],
    eof: bool,
    max_line: usize,
    out: &mut Vec<u8>,
) {
    let (body, full) = match entry.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (entry, eof),
    };
    let max = if max_line == 0 { usize::MAX } else { max_line };
    let mut pieces: Vec<&[u8]> = body.chunks(max).collect();
    if pieces.is_empty() {
        pieces.push(b"");
    }
    let n = pieces.len();
    for (i, p) in pieces.into_iter().enumerate() {
        let tag = if i + 1 == n && full { "F" } else { "P" };
        out.extend_from_slice(format!("{time} {stream} {tag} ").as_bytes());
        out.extend_from_slice(p);
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::format;

    fn f(entry: &[u8], eof: bool, max: usize) -> String {
        let mut out = Vec::new();
        format("stdout", "T", entry, eof, max, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_and_pieces() {
        assert_eq!(f(b"hello\n", false, 0), "T stdout F hello\n");
        assert_eq!(f(b"\n", false, 0), "T stdout F \n");
        assert_eq!(f(b"part", false, 0), "T stdout P part\n");
        assert_eq!(f(b"last", true, 0), "T stdout F last\n");
        assert_eq!(f(b"abcdef\n", false, 4), "T stdout P abcd\nT stdout F ef\n");
        assert_eq!(
            f(b"abcdefgh", false, 4),
            "T stdout P abcd\nT stdout P efgh\n"
        );
    }
}
