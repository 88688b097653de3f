//! `fetchall merge FILE...`: shard outputs back into one stream in input order.
//!
//! Each file must be a run's output written with `--ordered` (its records ascending by
//! `round` where records have one (polling writes round after round), then `seq`, then
//! `page` where a record has one). The merge is a k-way merge with a
//! heap holding one line per file, so memory is bounded by the number of files (and the
//! longest line), not by their length. Lines are copied through as they are, byte for byte.
//!
//! What it checks, on stderr, with exit status 1: a *duplicate* is a second record with the
//! same (`round`, `seq`, `page`) (the first is kept, the others dropped); a *gap* is a `seq`
//! missing among 0 ..= the largest `seq` seen in its round, over all files together (shards skip each
//! other's lines, so one shard alone has gaps; all shards together must not). A line missing
//! after the largest `seq` cannot be seen from the outputs alone. A file that is not in order,
//! a line that is not a record, or a file that cannot be read stop the merge (exit 2). This
//! module does not fetch or change records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::exit::{Exit, Message, report};

/// Most duplicate or gap lines written to stderr; the rest are counted.
const MAX_REPORTED: u64 = 20;

/// Where a record goes in the merged order: `round` (an `--ordered` polling run writes its
/// rounds one after another), then `seq`, then `page` (a record without `round` or `page`
/// sorts before one with them). The derived order is the fields' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
struct Key {
    #[serde(default)]
    round: Option<u64>,
    seq: u64,
    #[serde(default)]
    page: Option<u64>,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = self.round {
            write!(f, "round {r} ")?;
        }
        write!(f, "seq {}", self.seq)?;
        if let Some(p) = self.page {
            write!(f, " page {p}")?;
        }
        Ok(())
    }
}

/// One input file, read a line at a time.
struct Source {
    name: String,
    reader: Box<dyn BufRead>,
    line_no: u64,
    last: Option<Key>,
}

/// The next record of a source: its key and the line as read (newline stripped).
struct Next {
    key: Key,
    line: Vec<u8>,
}

impl Source {
    /// The next non-blank line and its key; `None` at the end. A line that is not a record
    /// or comes before the previous one is an error naming the file and line.
    fn next(&mut self) -> Result<Option<Next>, String> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("cannot read {}: {e}", self.name))?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        let key: Key = serde_json::from_slice(&line).map_err(|e| {
            format!(
                "{}:{}: not a fetchall record with a seq ({e})",
                self.name, self.line_no
            )
        })?;
        if self.last.is_some_and(|last| key <= last) {
            return Err(format!(
                "{}:{}: {key} comes after {}: not in input order (write each shard's output \
                 with --ordered)",
                self.name,
                self.line_no,
                self.last.map(|k| k.to_string()).unwrap_or_default()
            ));
        }
        self.last = Some(key);
        Ok(Some(Next { key, line }))
    }
}

/// What the merge found wrong, besides what stopped it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Problems {
    /// Records dropped because one with the same key came first.
    duplicates: u64,
    /// Seqs missing below the largest seen.
    missing: u64,
    /// Lines written to stderr so far (bounded by [`MAX_REPORTED`]).
    reported: u64,
}

impl Problems {
    fn say(&mut self, errors: &mut dyn Write, text: fmt::Arguments<'_>) {
        if self.reported < MAX_REPORTED {
            let _ = writeln!(errors, "fetchall merge: {text}");
        }
        self.reported += 1;
    }
}

/// Merge `sources` (name, reader) into `out`; duplicates and gaps are reported on `errors`.
fn merge(
    sources: Vec<(String, Box<dyn BufRead>)>,
    out: &mut dyn Write,
    errors: &mut dyn Write,
) -> Result<Problems, Box<dyn std::error::Error + Send + Sync>> {
    let mut sources: Vec<Source> = sources
        .into_iter()
        .map(|(name, reader)| Source {
            name,
            reader,
            line_no: 0,
            last: None,
        })
        .collect();
    // One entry per file that has lines left: (key, file index); the line waits in `heads`.
    let mut heap = BinaryHeap::with_capacity(sources.len());
    let mut heads: Vec<Vec<u8>> = vec![Vec::new(); sources.len()];
    for (i, source) in sources.iter_mut().enumerate() {
        if let Some(next) = source.next()? {
            heap.push(Reverse((next.key, i)));
            heads[i] = next.line;
        }
    }
    let mut problems = Problems::default();
    let mut previous: Option<(Key, usize)> = None;
    // The seq expected next in the current round (every round has every line).
    let mut next_seq = 0u64;
    let mut round = None;
    while let Some(Reverse((key, i))) = heap.pop() {
        let line = std::mem::take(&mut heads[i]);
        match previous {
            Some((prev, from)) if prev == key => {
                problems.duplicates += 1;
                let (first, again) = (&sources[from].name, &sources[i].name);
                problems.say(
                    errors,
                    format_args!(
                        "duplicate {key}: in {first} and again in {again} (kept the first)"
                    ),
                );
            }
            _ => {
                if key.round != round {
                    round = key.round;
                    next_seq = 0;
                }
                if key.seq > next_seq {
                    problems.missing += key.seq - next_seq;
                    let range = if key.seq - next_seq == 1 {
                        format!("seq {next_seq}")
                    } else {
                        format!("seqs {next_seq}..={}", key.seq - 1)
                    };
                    let of = key
                        .round
                        .map(|r| format!(" of round {r}"))
                        .unwrap_or_default();
                    problems.say(errors, format_args!("gap: {range}{of} in no file"));
                }
                next_seq = next_seq.max(key.seq.saturating_add(1));
                out.write_all(&line)?;
                out.write_all(b"\n")?;
                previous = Some((key, i));
            }
        }
        if let Some(next) = sources[i].next()? {
            heap.push(Reverse((next.key, i)));
            heads[i] = next.line;
        }
    }
    out.flush()?;
    if problems.reported > MAX_REPORTED {
        let more = problems.reported - MAX_REPORTED;
        let _ = writeln!(errors, "fetchall merge: ... and {more} more problems");
    }
    Ok(problems)
}

/// `fetchall merge [-o OUT] FILE...` (to stdout without `-o`): 0 when clean, 1 with duplicates
/// or gaps, 2 when a file cannot be read or is not an ordered output. Every input is opened
/// before the output is created, and the output may not be one of the inputs.
pub(crate) fn run(output: Option<&Path>, files: &[PathBuf]) -> Exit {
    let mut sources: Vec<(String, Box<dyn BufRead>)> = Vec::with_capacity(files.len());
    for path in files {
        match std::fs::File::open(path) {
            Ok(f) => sources.push((
                path.display().to_string(),
                Box::new(io::BufReader::with_capacity(64 * 1024, f)),
            )),
            Err(e) => {
                return report(&Message(format!(
                    "merge: cannot read {}: {e}",
                    path.display()
                )));
            }
        }
    }
    let sink: Box<dyn Write> = match output {
        Some(path) => {
            if files.iter().any(|f| same_file(f, path)) {
                let shown = path.display();
                return report(&Message(format!(
                    "merge: -o {shown} is one of the inputs; writing would erase it"
                )));
            }
            match std::fs::File::create(path) {
                Ok(f) => Box::new(f),
                Err(e) => {
                    return report(&Message(format!(
                        "merge: cannot create {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        None => Box::new(io::stdout().lock()),
    };
    let mut out = io::BufWriter::with_capacity(64 * 1024, sink);
    match merge(sources, &mut out, &mut io::stderr()) {
        Ok(p) if p.duplicates == 0 && p.missing == 0 => Exit::Ok,
        Ok(p) => {
            let _ = writeln!(
                io::stderr(),
                "fetchall merge: {} duplicate records dropped, {} seqs missing",
                p.duplicates,
                p.missing
            );
            Exit::SomeFailed
        }
        Err(e) => match e.downcast::<io::Error>() {
            Ok(io) => report(&*io),
            Err(e) => report(&Message(format!("merge: {e}"))),
        },
    }
}

/// Whether `a` and `b` are one existing file (same device and inode: a hard link or a symlink
/// counts), as `run`'s file checks decide it.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(files: &[&str]) -> (String, String, Result<Problems, String>) {
        let sources = files
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let reader: Box<dyn BufRead> = Box::new(io::Cursor::new(text.as_bytes().to_vec()));
                (format!("shard{i}.jsonl"), reader)
            })
            .collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = merge(sources, &mut out, &mut err).map_err(|e| e.to_string());
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            result,
        )
    }

    fn seqs(out: &str) -> Vec<u64> {
        out.lines()
            .map(|l| serde_json::from_str::<Key>(l).unwrap().seq)
            .collect()
    }

    #[test]
    fn merges_shards_into_input_order_byte_for_byte() {
        let a = "{\"seq\":0,\"shard\":0}\n{\"seq\":3,\"shard\":0}\n";
        let b = "{\"seq\":1,\"shard\":1}\n\n{\"seq\":2, \"shard\":1}\n{\"seq\":4,\"shard\":1}\n";
        let (out, err, result) = merged(&[a, b]);
        assert_eq!(result.unwrap(), Problems::default());
        assert_eq!(err, "");
        assert_eq!(seqs(&out), [0, 1, 2, 3, 4]);
        assert!(out.contains("{\"seq\":2, \"shard\":1}\n"), "{out}");
    }

    #[test]
    fn pages_and_rounds_order_within_a_seq() {
        let a = "{\"seq\":0,\"page\":0}\n{\"seq\":0,\"page\":2}\n{\"seq\":1}\n";
        let b = "{\"seq\":0,\"page\":1}\n";
        let (out, _, result) = merged(&[a, b]);
        assert_eq!(result.unwrap().duplicates, 0);
        let pages: Vec<Option<u64>> = out
            .lines()
            .map(|l| serde_json::from_str::<Key>(l).unwrap().page)
            .collect();
        assert_eq!(pages, [Some(0), Some(1), Some(2), None]);
    }

    #[test]
    fn polled_outputs_merge_round_after_round() {
        // Two shards' --ordered outputs of a two-round polling run.
        let a = "{\"seq\":0,\"round\":0}\n{\"seq\":2,\"round\":0}\n{\"seq\":0,\"round\":1}\n{\"seq\":2,\"round\":1}\n";
        let b = "{\"seq\":1,\"round\":0}\n{\"seq\":1,\"round\":1}\n";
        let (out, err, result) = merged(&[a, b]);
        assert_eq!(result.unwrap(), Problems::default(), "{err}");
        let keys: Vec<(Option<u64>, u64)> = out
            .lines()
            .map(|l| serde_json::from_str::<Key>(l).unwrap())
            .map(|k| (k.round, k.seq))
            .collect();
        let want: Vec<(Option<u64>, u64)> = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
            .into_iter()
            .map(|(r, s)| (Some(r), s))
            .collect();
        assert_eq!(keys, want);
        // A line missing from one round is a gap of that round.
        let (_, err, result) = merged(&[a]);
        assert_eq!(result.unwrap().missing, 2);
        assert!(err.contains("gap: seq 1 of round 1 in no file"), "{err}");
    }

    #[test]
    fn reports_duplicates_and_gaps() {
        let a = "{\"seq\":0}\n{\"seq\":1}\n{\"seq\":5}\n";
        let b = "{\"seq\":1}\n{\"seq\":3}\n";
        let (out, err, result) = merged(&[a, b]);
        let p = result.unwrap();
        assert_eq!((p.duplicates, p.missing), (1, 2));
        assert_eq!(seqs(&out), [0, 1, 3, 5]);
        assert!(
            err.contains("duplicate seq 1: in shard0.jsonl and again in shard1.jsonl"),
            "{err}"
        );
        assert!(err.contains("gap: seq 2 in no file"), "{err}");
        assert!(err.contains("gap: seq 4 in no file"), "{err}");
    }

    #[test]
    fn refuses_unordered_files_and_lines_that_are_not_records() {
        let (_, _, result) = merged(&["{\"seq\":2}\n{\"seq\":1}\n"]);
        assert!(
            result
                .unwrap_err()
                .contains("shard0.jsonl:2: seq 1 comes after seq 2")
        );
        let (_, _, result) = merged(&["{\"seq\":0}\nnot json\n"]);
        assert!(
            result
                .unwrap_err()
                .contains("shard0.jsonl:2: not a fetchall record")
        );
    }
}
