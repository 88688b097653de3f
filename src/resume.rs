//! Resume: which input lines an earlier run already fetched successfully (`--resume`).
//!
//! The earlier output is read once, line by line, at start-up. Only ok records count, and a
//! line matches only when both its `seq` and its URL are the same, so a list that was edited
//! between the runs (lines inserted, removed, reordered) is never mismatched: a line whose
//! seq now holds another URL is fetched again. Memory stays small whatever the size of the
//! earlier output: one 64-bit hash of (seq, url) per ok record. Lines that do not parse (a
//! line cut short when the earlier run was killed) are skipped. This module does not read
//! the input list or decide what to fetch next.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::redact::display_url;

/// The (seq, url) pairs that have an ok record in an earlier run's output.
#[derive(Debug)]
pub(crate) struct Done {
    path: PathBuf,
    keys: HashSet<u64>,
}

/// The fields of a record that resume looks at.
#[derive(Deserialize)]
struct Seen {
    seq: u64,
    url: String,
    ok: bool,
}

impl Done {
    /// Read an earlier run's output (JSON lines as fetchall writes them).
    pub(crate) fn load(path: &Path) -> io::Result<Done> {
        let (done, unreadable) = Done::read(path)?;
        if unreadable > 0 {
            tracing::warn!(
                "resume: {unreadable} lines of {} are not records; ignored",
                path.display()
            );
        }
        Ok(done)
    }

    /// [`Done::load`] without a word about it: the set, and how many lines were not records.
    pub(crate) fn read(path: &Path) -> io::Result<(Done, u64)> {
        let file = std::fs::File::open(path)?;
        let mut done = Done {
            path: path.to_owned(),
            keys: HashSet::new(),
        };
        let mut unreadable = 0u64;
        for line in BufReader::with_capacity(64 * 1024, file).split(b'\n') {
            let line = line?;
            match serde_json::from_slice::<Seen>(&line) {
                Ok(seen) if seen.ok => {
                    done.keys.insert(key(seen.seq, &seen.url));
                }
                Ok(_) => {}
                Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
                Err(_) => unreadable += 1,
            }
        }
        Ok((done, unreadable))
    }

    /// Whether input line `seq` with `url` already has an ok record.
    pub(crate) fn contains(&self, seq: u64, url: &Url) -> bool {
        // Records hold the URL as displayed (credentials masked), so compare that form.
        self.keys.contains(&key(seq, &display_url(url)))
    }

    /// How many ok records were loaded.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The file the records came from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// SipHash with fixed keys: the same (seq, url) gives the same key in every run of this
/// build; 64 bits make a false match between two different lines vanishingly unlikely
/// (about n²/2⁶⁵ for n records).
fn key(seq: u64, url: &str) -> u64 {
    let mut h = DefaultHasher::new();
    seq.hash(&mut h);
    url.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_records_with_the_same_seq_and_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prev.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"seq":0,"line":1,"url":"http://a.test/","ok":true}"#,
                "\n",
                r#"{"seq":1,"line":2,"url":"http://b.test/","ok":false,"error":{"kind":"timeout","message":"x"}}"#,
                "\n",
                r#"{"seq":2,"line":3,"url":"http://u:****@c.test/","ok":true}"#,
                "\n",
                r#"{"seq":3,"line":4,"url":"http://d.te"#,
            ),
        )
        .unwrap();
        let done = Done::load(&path).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains(0, &url("http://a.test/")));
        assert!(!done.contains(1, &url("http://a.test/")), "seq must match");
        assert!(
            !done.contains(1, &url("http://b.test/")),
            "failed records do not count"
        );
        assert!(done.contains(2, &url("http://u:secret@c.test/")));
    }
}
