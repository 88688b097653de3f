//! Resume: which input lines an earlier run already fetched successfully (`--resume`).
//!
//! The earlier output is read once, line by line, at start-up. Only ok records count, and a
//! line matches only when both its `seq` and its URL are the same, so a list that was edited
//! between the runs (lines inserted, removed, reordered) is never mismatched: a line whose
//! seq now holds another URL is fetched again. Memory stays small whatever the size of the
//! earlier output: one 64-bit hash of (seq, url) per ok record, and one line buffer of at most
//! [`KEPT_BYTES`]. Lines are read with the input's bounded line reader; a record longer than
//! that (a large body) is read from its first bytes, where fetchall writes `seq`, `url` and
//! `ok`, and counts only if the whole line is one JSON object ending in a line break. Lines
//! that are not records (a line cut short when the earlier run was killed) are skipped with a
//! warning. This module does not read the input list or decide what to fetch next.

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use url::Url;

use crate::input::{LineReader, RawLine};
use crate::redact::Redactor;

/// The most of one line of the earlier output kept in memory (the rest is only scanned).
pub(crate) const KEPT_BYTES: usize = 1 << 20;

/// The (seq, url) pairs that have an ok record in an earlier run's output.
#[derive(Debug)]
pub(crate) struct Done {
    path: PathBuf,
    keys: HashSet<u64>,
    /// How records show URLs (the same masking as this run's), to compare like with like.
    redactor: Redactor,
}

/// The fields of a record that resume looks at.
#[derive(Debug, Deserialize)]
struct Seen {
    seq: u64,
    url: String,
    ok: bool,
}

/// What reading the earlier output found besides ok records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Lines that are not records.
    pub unreadable: u64,
    /// Of those, lines longer than [`KEPT_BYTES`] that are not one whole record.
    pub too_long: u64,
}

impl Done {
    /// Read an earlier run's output (JSON lines as fetchall writes them), warning about the
    /// lines that are not records.
    pub(crate) fn load(path: &Path, redactor: Redactor) -> io::Result<Done> {
        let (done, skipped) = Done::read(path, redactor)?;
        if skipped.unreadable > 0 {
            let long = match skipped.too_long {
                0 => String::new(),
                n => format!(" ({n} of them longer than {KEPT_BYTES} bytes and not whole records)"),
            };
            tracing::warn!(
                "resume: {} lines of {} are not records{long}; ignored",
                skipped.unreadable,
                path.display()
            );
        }
        Ok(done)
    }

    /// [`Done::load`] without a word about it: the set, and what was skipped.
    pub(crate) fn read(path: &Path, redactor: Redactor) -> io::Result<(Done, Skipped)> {
        let mut reader = BufReader::with_capacity(64 * 1024, std::fs::File::open(path)?);
        let mut done = Done {
            path: path.to_owned(),
            keys: HashSet::new(),
            redactor,
        };
        let mut skipped = Skipped::default();
        let mut lines = LineReader::default();
        let mut line = RawLine::new(KEPT_BYTES).with_shape();
        while lines.next_blocking(&mut reader, &mut line)? {
            if line.complete && line.bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let seen = if line.complete {
                serde_json::from_slice::<Seen>(&line.bytes).ok()
            } else {
                // Too long to keep: the fields come first, and the whole line must be one
                // record that ended (not a line cut short, or two glued together).
                let whole = line.terminated && line.shape.as_ref().is_some_and(|s| s.complete());
                if !whole {
                    skipped.too_long += 1;
                }
                whole.then(|| leading_fields(&line.bytes)).flatten()
            };
            match seen {
                Some(seen) if seen.ok => {
                    done.keys.insert(key(seen.seq, &seen.url));
                }
                Some(_) => {}
                None => skipped.unreadable += 1,
            }
        }
        Ok((done, skipped))
    }

    /// Whether input line `seq` with `url` already has an ok record.
    pub(crate) fn contains(&self, seq: u64, url: &Url) -> bool {
        // Records hold the URL as displayed (secrets masked), so compare that form.
        self.keys.contains(&key(seq, &self.redactor.url(url)))
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

/// `seq`, `url` and `ok` from the first bytes of a record too long to keep whole: read in
/// order until all three are known, whatever follows (it was cut off).
fn leading_fields(prefix: &[u8]) -> Option<Seen> {
    struct Leading<'a>(&'a mut Option<Seen>);
    impl<'de> Visitor<'de> for Leading<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a record")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (mut seq, mut url, mut ok) = (None, None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "seq" => seq = Some(map.next_value::<u64>()?),
                    "url" => url = Some(map.next_value::<String>()?),
                    "ok" => ok = Some(map.next_value::<bool>()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if let (Some(seq), Some(url), Some(ok)) = (seq, &url, ok) {
                    *self.0 = Some(Seen {
                        seq,
                        url: url.clone(),
                        ok,
                    });
                    // Stop here: the rest was not kept.
                    return Err(de::Error::custom("enough"));
                }
            }
            Ok(())
        }
    }
    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(prefix);
    let _ = de::Deserializer::deserialize_map(&mut de, Leading(&mut found));
    found
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
    use crate::redact::DEFAULT_MASKED_PARAMS;

    fn redactor() -> Redactor {
        Redactor::new(DEFAULT_MASKED_PARAMS)
    }

    /// A temporary directory, removed when the returned guard drops.
    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn only_ok_records_with_the_same_seq_and_url() {
        let tmp = scratch();
        let dir = tmp.path();
        let path = dir.join("prev.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"seq":0,"line":1,"url":"http://a.test/","ok":true}"#,
                "\n",
                r#"{"seq":1,"line":2,"url":"http://b.test/","ok":false,"error":{"kind":"timeout","message":"x"}}"#,
                "\n",
                r#"{"seq":2,"line":3,"url":"http://u:****@c.test/?token=****","ok":true}"#,
                "\n",
                r#"{"seq":3,"line":4,"url":"http://d.te"#,
            ),
        )
        .unwrap();
        let done = Done::load(&path, redactor()).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(done.len(), 2);
        assert!(done.contains(0, &url("http://a.test/")));
        assert!(!done.contains(1, &url("http://a.test/")), "seq must match");
        assert!(
            !done.contains(1, &url("http://b.test/")),
            "failed records do not count"
        );
        assert!(done.contains(2, &url("http://u:secret@c.test/?token=abc")));
    }

    /// A record longer than the line buffer counts when it is whole; a long line that was
    /// cut short or glued to another does not; memory holds one buffer, not the line.
    #[test]
    fn long_records_are_read_from_their_first_bytes() {
        let tmp = scratch();
        let dir = tmp.path();
        let path = dir.join("prev.jsonl");
        let body = "x".repeat(3 * KEPT_BYTES);
        let whole =
            format!(r#"{{"seq":0,"line":1,"url":"http://a.test/","ok":true,"body":"{body}"}}"#);
        let cut = format!(r#"{{"seq":1,"line":2,"url":"http://b.test/","ok":true,"body":"{body}"#);
        let glued = format!(
            r#"{{"seq":2,"line":3,"url":"http://c.test/","ok":true,"body":"{body}{{"seq":9,"url":"x","ok":true}}"#
        );
        let last =
            format!(r#"{{"seq":3,"line":4,"url":"http://d.test/","ok":true,"body":"{body}"}}"#);
        std::fs::write(&path, format!("{whole}\n{cut}\n{glued}\n{last}")).unwrap();
        let (done, skipped) = Done::read(&path, redactor()).unwrap();
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(done.contains(0, &url("http://a.test/")));
        assert!(!done.contains(1, &url("http://b.test/")));
        assert!(!done.contains(2, &url("http://c.test/")));
        assert!(
            !done.contains(3, &url("http://d.test/")),
            "no line break: the earlier run may have been killed mid-line"
        );
        assert_eq!(skipped.unreadable, 3);
    }
}
