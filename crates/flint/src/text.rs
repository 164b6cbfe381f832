//! Text input and output: `text_file`'s byte-range splits of a file, a directory or a
//! glob (computed on the driver as Hadoop's `FileInputFormat` does), reading one split's
//! lines, and the file names of `save_as_text_file`.
//!
//! A line belongs to the split in which it starts: a split that does not start at 0
//! skips the partial line it begins in (unless the byte before it is a newline), and
//! reads every line that starts before its end, past the end if need be. So every line
//! is read by exactly one split. `\n` ends a line; a `\r` before it is dropped; bytes
//! that are not UTF-8 are replaced (U+FFFD), as Spark's `textFile` does.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entry::Partition;
use crate::wire::TaskError;
use crate::Error;

/// Hadoop's block size of the local file system: splits are at most this long.
const BLOCK_SIZE: u64 = 32 << 20;
/// A remainder up to 10% over the split size stays in the last split.
const SPLIT_SLOP: f64 = 1.1;

/// One split: bytes `start..end` of `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TextSplit {
    pub path: String,
    pub start: u64,
    pub end: u64,
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.starts_with('_'))
}

fn files_of_dir(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut found = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if !hidden(&p) && p.is_file() {
            found.push(p);
        }
    }
    found.sort();
    out.extend(found);
    Ok(())
}

/// The input files `path` names: the file, the visible files of the directory, or the
/// files (and visible files of the directories) matching the glob, in name order.
pub(crate) fn input_files(path: &str) -> Result<Vec<PathBuf>, Error> {
    let p = Path::new(path);
    let mut files = Vec::new();
    if p.is_file() {
        files.push(p.to_path_buf());
    } else if p.is_dir() {
        files_of_dir(p, &mut files)?;
    } else if path.contains(['*', '?', '[']) {
        let matches = glob::glob(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "text_file: {path:?} is not a valid glob pattern: {e}"
            ))
        })?;
        let mut matched: Vec<PathBuf> = matches.flatten().collect();
        matched.sort();
        if matched.is_empty() {
            return Err(Error::PathNotFound {
                path: path.to_string(),
                reason: "the pattern matches no file".into(),
            });
        }
        for m in matched {
            if m.is_dir() {
                files_of_dir(&m, &mut files)?;
            } else if !hidden(&m) {
                files.push(m);
            }
        }
    } else {
        return Err(Error::PathNotFound {
            path: path.to_string(),
            reason: "no such file or directory".into(),
        });
    }
    Ok(files)
}

/// The splits of `path` for at least about `min_partitions` partitions.
pub(crate) fn splits(path: &str, min_partitions: u32) -> Result<Vec<TextSplit>, Error> {
    let files = input_files(path)?;
    let mut sized = Vec::with_capacity(files.len());
    for f in files {
        let len = std::fs::metadata(&f)
            .map_err(|e| Error::Io {
                path: f.display().to_string(),
                reason: e.to_string(),
            })?
            .len();
        sized.push((f, len));
    }
    let total: u64 = sized.iter().map(|(_, l)| l).sum();
    let goal = total / u64::from(min_partitions.max(1));
    let split_size = goal.clamp(1, BLOCK_SIZE);
    let mut out = Vec::new();
    for (f, len) in sized {
        let path = f.display().to_string();
        if len == 0 {
            out.push(TextSplit {
                path,
                start: 0,
                end: 0,
            });
            continue;
        }
        let mut start = 0;
        while (len - start) as f64 / split_size as f64 > SPLIT_SLOP {
            out.push(TextSplit {
                path: path.clone(),
                start,
                end: start + split_size,
            });
            start += split_size;
        }
        out.push(TextSplit {
            path,
            start,
            end: len,
        });
    }
    Ok(out)
}

/// The lines of one split, read lazily.
pub(crate) fn read_split(s: &TextSplit) -> Result<Partition<String>, TaskError> {
    let io =
        |e: std::io::Error| TaskError::Io(format!("reading {} at byte {}: {e}", s.path, s.start));
    let mut file = File::open(&s.path).map_err(io)?;
    let mut pos = s.start;
    if s.start > 0 {
        file.seek(SeekFrom::Start(s.start - 1)).map_err(io)?;
        let mut prev = [0u8; 1];
        file.read_exact(&mut prev).map_err(io)?;
        let mut reader = BufReader::new(file);
        if prev[0] != b'\n' {
            // The split begins inside a line that the previous split reads.
            let mut skipped = Vec::new();
            pos += reader.read_until(b'\n', &mut skipped).map_err(io)? as u64;
        }
        return Ok(Partition::new(Lines {
            reader,
            buf: Vec::new(),
            pos,
            end: s.end,
            path: s.path.clone(),
        }));
    }
    Ok(Partition::new(Lines {
        reader: BufReader::new(file),
        buf: Vec::new(),
        pos,
        end: s.end,
        path: s.path.clone(),
    }))
}

/// Splits shorter than this are read whole to sample them: below it the full read
/// costs little and positions would often pick the same lines.
pub(crate) const SAMPLE_BY_POSITION_MIN: u64 = 1 << 20;

/// Bytes read per step while looking for a sampled line's start and end.
const SAMPLE_WINDOW: usize = 4 * 1024;

/// A sample of about `m` lines of split `s` read at random positions instead of
/// reading the split whole (as Hadoop's TeraSort samples its input), and an
/// estimate of how many lines the split holds; `None` when the split should be read
/// whole instead (shorter than `min_len`, a position sample would read more bytes
/// than the split holds — very long lines — or no position found a line).
///
/// Each of `m` positions `x`, uniform over the split and drawn from `seed`, picks
/// the first line starting at or after `x` that belongs to the split (the rule of
/// [`read_split`]); positions past the split's last line start pick nothing. A line
/// is so picked with probability proportional to the length of the line before it,
/// which does not depend on its own content. The estimate is the split's length over
/// the mean length of the picked lines (newline included).
pub(crate) fn sample_split(
    s: &TextSplit,
    m: usize,
    seed: u64,
    min_len: u64,
) -> Result<Option<(Vec<String>, f64)>, TaskError> {
    use std::os::unix::fs::FileExt;
    let len = s.end.saturating_sub(s.start);
    if len < min_len.max(1) || m == 0 {
        return Ok(None);
    }
    let io =
        |at: u64, e: std::io::Error| TaskError::Io(format!("reading {} at byte {at}: {e}", s.path));
    let file = File::open(&s.path).map_err(|e| io(s.start, e))?;
    let mut state = seed | 1;
    let mut positions: Vec<u64> = (0..m)
        .map(|_| {
            // xorshift64*, then a multiply-shift onto the split
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            s.start + ((u128::from(r) * u128::from(len)) >> 64) as u64
        })
        .collect();
    positions.sort_unstable();
    let mut lines = Vec::with_capacity(m);
    let mut line_bytes = 0u64;
    // Bytes looked at (not merely read), against the split's length.
    let mut scanned = 0u64;
    let mut window = vec![0u8; SAMPLE_WINDOW];
    let mut line: Vec<u8> = Vec::new();
    'positions: for x in positions {
        // Find the first line start at or after x (x itself if it is 0 or follows a
        // newline): the byte after the first newline at or after x - 1.
        let mut at = x.saturating_sub(1);
        let mut found = x == 0;
        let mut rest = 0..0; // the line's first bytes, in `window`
        while !found {
            if scanned > len {
                return Ok(None);
            }
            if at >= s.end {
                continue 'positions; // no line of this split starts after x
            }
            let n = file.read_at(&mut window, at).map_err(|e| io(at, e))?;
            if n == 0 {
                continue 'positions;
            }
            match memchr::memchr(b'\n', &window[..n]) {
                Some(i) => {
                    scanned += i as u64 + 1;
                    at += i as u64 + 1;
                    rest = i + 1..n;
                    found = true;
                }
                None => {
                    scanned += n as u64;
                    at += n as u64;
                }
            }
        }
        if at >= s.end {
            continue;
        }
        // The line from `at` to its newline (or the end of the file).
        line.clear();
        let mut ended = false;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &window[rest.clone()]) {
                line.extend_from_slice(&window[rest.start..rest.start + i]);
                ended = true;
                break;
            }
            line.extend_from_slice(&window[rest.clone()]);
            if scanned + line.len() as u64 > len {
                return Ok(None);
            }
            let next = at + line.len() as u64;
            let n = file.read_at(&mut window, next).map_err(|e| io(next, e))?;
            if n == 0 {
                break;
            }
            rest = 0..n;
        }
        scanned += line.len() as u64 + u64::from(ended);
        line_bytes += line.len() as u64 + u64::from(ended);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        lines.push(match std::str::from_utf8(&line) {
            Ok(t) => t.to_owned(),
            Err(_) => String::from_utf8_lossy(&line).into_owned(),
        });
    }
    if lines.is_empty() || line_bytes == 0 {
        return Ok(None);
    }
    let mean = line_bytes as f64 / lines.len() as f64;
    Ok(Some((lines, len as f64 / mean)))
}

struct Lines {
    reader: BufReader<File>,
    buf: Vec<u8>,
    pos: u64,
    end: u64,
    path: String,
}

impl Iterator for Lines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.pos >= self.end {
            return None;
        }
        // A line whole in the reader's buffer (the common case) is copied out once, at
        // its size; one that crosses the buffer's end is gathered in the reused
        // buffer first (growing a fresh vector would reallocate it several times).
        if let Ok(avail) = self.reader.fill_buf() {
            if let Some(at) = memchr::memchr(b'\n', avail) {
                let mut line = &avail[..at];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let out = match std::str::from_utf8(line) {
                    Ok(s) => s.to_owned(),
                    Err(_) => String::from_utf8_lossy(line).into_owned(),
                };
                self.reader.consume(at + 1);
                self.pos += at as u64 + 1;
                return Some(out);
            }
        }
        let buf = &mut self.buf;
        buf.clear();
        let n = match self.reader.read_until(b'\n', buf) {
            Ok(n) => n,
            // An iterator cannot return an error: the panic fails this task, naming the
            // file and offset, and the task is retried.
            Err(e) => panic!("reading {} at byte {}: {e}", self.path, self.pos),
        };
        if n == 0 {
            return None;
        }
        self.pos += n as u64;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        // Valid UTF-8 (the common case) is checked by the fast validator and copied
        // once; only a line that is not goes through the slower lossy decoder.
        Some(match std::str::from_utf8(buf) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(buf).into_owned(),
        })
    }
}

/// Where attempt `task_id` of `partition` writes before the driver commits it.
pub(crate) fn temporary_part(dir: &str, partition: u32, task_id: u64) -> PathBuf {
    Path::new(dir)
        .join("_temporary")
        .join(format!("part-{partition:05}-attempt-{task_id}"))
}

/// The committed file of `partition`.
pub(crate) fn final_part(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("part-{partition:05}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(path: &str, min_partitions: u32) -> Vec<String> {
        let mut out = Vec::new();
        for s in splits(path, min_partitions).unwrap() {
            out.extend(read_split(&s).unwrap());
        }
        out
    }

    proptest! {
        #[test]
        fn every_line_is_read_once_whatever_the_splits(
            lines in proptest::collection::vec("[a-z\r]{0,12}", 0..40),
            trailing_newline in any::<bool>(),
            parts in 1u32..20,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.txt");
            let mut text = lines.join("\n");
            if trailing_newline && !lines.is_empty() {
                text.push('\n');
            }
            std::fs::write(&path, &text).unwrap();
            // Lines followed by \n lose a \r before it; a last line without one keeps it.
            let strip = |l: &str| l.strip_suffix('\r').unwrap_or(l).to_string();
            let want: Vec<String> = if text.is_empty() {
                vec![]
            } else if let Some(body) = text.strip_suffix('\n') {
                body.split('\n').map(strip).collect()
            } else {
                let pieces: Vec<&str> = text.split('\n').collect();
                let (last, rest) = pieces.split_last().unwrap();
                rest.iter().map(|l| strip(l)).chain([last.to_string()]).collect()
            };
            prop_assert_eq!(read_all(path.to_str().unwrap(), parts), want);
        }
    }

    /// Valid lines (ASCII or not) come back as they are; a line that is not UTF-8 has
    /// its bad bytes replaced by U+FFFD, the rest of it kept.
    /// A file of `n` lines of 1–120 bytes (some ending `\r\n`), each line unique.
    fn varied_lines(path: &Path, n: usize) -> Vec<String> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut lines = Vec::with_capacity(n);
        let mut bytes = Vec::new();
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pad = (x % 110) as usize;
            let line = format!("{i:08}-{}", "x".repeat(pad));
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(if x.is_multiple_of(5) { b"\r\n" } else { b"\n" });
            lines.push(line);
        }
        std::fs::write(path, bytes).unwrap();
        lines
    }

    #[test]
    fn position_samples_are_lines_of_their_own_split_and_estimate_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("varied.txt");
        varied_lines(&path, 40_000);
        let parts = splits(path.to_str().unwrap(), 3).unwrap();
        assert_eq!(parts.len(), 3);
        for (i, s) in parts.iter().enumerate() {
            let own: std::collections::HashSet<String> = read_split(s).unwrap().collect();
            let (sample, estimate) = sample_split(s, 300, i as u64 + 7, 0)
                .unwrap()
                .expect("a split of many short lines is sampled by position");
            assert!(
                sample.len() >= 290,
                "{} of 300 positions found a line",
                sample.len()
            );
            for line in &sample {
                assert!(
                    own.contains(line),
                    "split {i} sampled {line:?}, not one of its lines"
                );
            }
            let error = (estimate - own.len() as f64).abs() / own.len() as f64;
            assert!(
                error < 0.15,
                "split {i}: estimated {estimate:.0} lines, holds {}",
                own.len()
            );
        }
        // Few long lines: many positions fall in a split's last line, whose next line
        // belongs to the next split and must not be taken. (Six positions a call keep
        // the bytes looked at under the split's length.)
        let long = dir.path().join("long-lines.txt");
        let lines: Vec<String> = (0..40)
            .map(|i| format!("{i:04}{}", "z".repeat(996)))
            .collect();
        std::fs::write(&long, lines.join("\n") + "\n").unwrap();
        let mut sampled = 0;
        for (i, s) in splits(long.to_str().unwrap(), 3)
            .unwrap()
            .iter()
            .enumerate()
        {
            let own: std::collections::HashSet<String> = read_split(s).unwrap().collect();
            for seed in 0..50 {
                let (sample, _) = sample_split(s, 6, seed, 0).unwrap().unwrap();
                for line in &sample {
                    assert!(
                        own.contains(line),
                        "split {i} sampled {:?}, not one of its lines",
                        &line[..4]
                    );
                }
                sampled += sample.len();
            }
        }
        assert!(sampled > 700, "{sampled} lines sampled");
    }

    #[test]
    fn short_splits_and_splits_without_line_starts_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("varied.txt");
        varied_lines(&path, 2_000);
        let whole = &splits(path.to_str().unwrap(), 1).unwrap()[0];
        // Shorter than the threshold: read whole.
        assert!(sample_split(whole, 50, 1, whole.end + 1).unwrap().is_none());
        assert!(sample_split(whole, 0, 1, 0).unwrap().is_none());
        // One long line: the second half of it starts no line.
        let long = dir.path().join("long.txt");
        std::fs::write(&long, format!("{}\n", "y".repeat(300_000))).unwrap();
        let tail = TextSplit {
            path: long.display().to_string(),
            start: 150_000,
            end: 300_001,
        };
        assert!(sample_split(&tail, 50, 1, 0).unwrap().is_none());
        assert_eq!(read_split(&tail).unwrap().count(), 0);
    }

    #[test]
    fn lines_that_are_not_utf8_are_replaced_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.txt");
        std::fs::write(
            &path,
            b"plain\nna\xc3\xafve \xe2\x82\xac\nbad \xff\xfe end\ncut \xe2\x82\n",
        )
        .unwrap();
        assert_eq!(
            read_all(path.to_str().unwrap(), 1),
            [
                "plain",
                "na\u{ef}ve \u{20ac}",
                "bad \u{fffd}\u{fffd} end",
                "cut \u{fffd}"
            ]
        );
    }

    #[test]
    fn splits_follow_hadoop_sizes_and_directories_skip_hidden_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "x".repeat(100)).unwrap();
        std::fs::write(dir.path().join("b.txt"), "").unwrap();
        std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
        std::fs::write(dir.path().join(".crc"), "zz").unwrap();
        let s = splits(dir.path().to_str().unwrap(), 4).unwrap();
        // goal 25 bytes: 25, 25, 25, 25 of a.txt, then b.txt's empty split.
        let ranges: Vec<(u64, u64)> = s.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(ranges, vec![(0, 25), (25, 50), (50, 75), (75, 100), (0, 0)]);
        assert!(s[4].path.ends_with("b.txt"));
        let g = format!("{}/*.txt", dir.path().display());
        assert_eq!(input_files(&g).unwrap().len(), 2);
    }

    #[test]
    fn missing_paths_and_empty_globs_name_the_path() {
        let e = splits("/nonexistent/flint/input.txt", 2).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/flint/input.txt"),
            "{e}"
        );
        let e = splits("/nonexistent/flint/*.txt", 2).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/flint/*.txt")
                && e.to_string().contains("matches no file"),
            "{e}"
        );
    }
}
