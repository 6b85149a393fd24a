//! Instance output: stdout and stderr go to one append-only file per instance (not a pipe, so a
//! child outlives a restart of the runtime without dying of SIGPIPE), kept under a size bound by
//! dropping the oldest half when it grows past it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Opens (creating, truncating) the output file for a new instance, in append mode so the
/// runtime can trim it under the child's feet.
pub(super) fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    OpenOptions::new().append(true).open(path)
}

/// The last `max_bytes` of the file (fewer when it is shorter).
fn read_tail_bytes(path: &Path, max_bytes: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.take(max_bytes).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The last `lines` lines of the output (at most `max_bytes` are read). A missing file is empty.
pub(super) fn tail(path: &Path, lines: u32, max_bytes: u64) -> io::Result<String> {
    let bytes = match read_tail_bytes(path, max_bytes) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    Ok(last_lines(&String::from_utf8_lossy(&bytes), lines))
}

/// The last `lines` lines of `text`, each with its newline.
pub(super) fn last_lines(text: &str, lines: u32) -> String {
    if lines == 0 {
        return String::new();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let want = usize::try_from(lines).unwrap_or(usize::MAX);
    let start = body
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .nth(want - 1)
        .unwrap_or(0);
    text[start..].to_owned()
}

/// When the file exceeds `limit` bytes, keeps only its last `limit / 2`. Output the child writes
/// while this runs may be lost; the bound matters more than those lines.
pub(super) fn trim(path: &Path, limit: u64) -> io::Result<()> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if len <= limit {
        return Ok(());
    }
    let keep = read_tail_bytes(path, limit / 2)?;
    let mut file = OpenOptions::new().append(true).open(path)?;
    file.set_len(0)?;
    file.write_all(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc\n", 10), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 0), "");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn trim_keeps_the_newest_half() {
        let dir = std::env::temp_dir().join(format!("fctf-output-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("out.log");
        let mut file = create(&path).expect("create");
        for i in 0..100 {
            writeln!(file, "line {i:03}").expect("write");
        }
        trim(&path, 400).expect("trim");
        let kept = std::fs::read_to_string(&path).expect("read");
        assert!(kept.len() <= 200, "{} bytes kept", kept.len());
        assert!(kept.ends_with("line 099\n"));
        // The child's handle keeps appending after the trim.
        writeln!(file, "after").expect("write");
        assert!(tail(&path, 1, 1 << 20).expect("tail").starts_with("after"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
