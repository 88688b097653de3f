//! Counting ahead: how many records a run over a file will write, for a progress bar's total.
//!
//! The count is for display: it reads the file once more, on the caller's thread, while the
//! run reads it too. It does not fetch, and the run never waits for it.

use std::io;
use std::path::Path;

use crate::input::{LineReader, MAX_LINE_BYTES, RawLine, is_skipped, parse_line};
use crate::redact::Redactor;
use crate::resume::Done;
use crate::settings::Settings;
use crate::shard::Shard;

/// How many records a run with `settings` over the file at `path` will write: its URL lines
/// (not blank, not a `#` comment) of this process's shard (`settings.shard`), less those the
/// earlier output named by `settings.resume` already has ok. Lines are split and classified exactly as the run does. Blocking: call it
/// off the async runtime (`spawn_blocking`). A `--resume` file that cannot be read counts as
/// empty.
pub fn count_records(path: &Path, settings: &Settings) -> io::Result<u64> {
    let redactor = Redactor::new(&settings.mask_params);
    let done = match &settings.resume {
        Some(resume) => Done::read(resume, redactor.clone())
            .ok()
            .map(|(done, _)| done),
        None => None,
    };
    count(path, settings.shard.as_ref(), done.as_ref(), &redactor)
}

/// Count the lines of `path` that get a record (of `shard`, when sharded), less those `done`
/// has ok, in one pass with bounded memory (the input's own line reader).
fn count(
    path: &Path,
    shard: Option<&Shard>,
    done: Option<&Done>,
    redactor: &Redactor,
) -> io::Result<u64> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut lines = LineReader::default();
    let mut line = RawLine::new(MAX_LINE_BYTES);
    let (mut seq, mut left_out) = (0u64, 0u64);
    while lines.next_blocking(&mut reader, &mut line)? {
        if is_skipped(&line.bytes) {
            continue;
        }
        // Only a sharded or resumed run needs the URL itself.
        if shard.is_some() || done.is_some() {
            let request = parse_line(&line.bytes, line.complete, redactor);
            let url = request
                .as_ref()
                .and_then(|r| r.as_ref().ok())
                .map(|r| &r.url);
            let other_shard = shard.is_some_and(|s| !s.owns_url(url));
            if other_shard || url.is_some_and(|url| done.is_some_and(|d| d.contains(seq, url))) {
                left_out += 1;
            }
        }
        seq += 1;
    }
    Ok(seq - left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_lines_that_get_records() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("urls.txt");
        std::fs::write(
            &path,
            b"\xEF\xBB\xBFa\n\n  # c\r  b  \r\n\xff\n \t\n# \xff\n\xc2\xa0\nlast",
        )
        .unwrap();
        assert_eq!(count(&path, None, None, &Redactor::default()).unwrap(), 4);
    }

    /// With `--shard K/N` the total is this shard's lines only: those whose host key hashes
    /// to K, and a line that is not a request in shard 0; the shards' totals add up to all.
    #[test]
    fn counts_only_this_shards_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("urls.txt");
        let mut input = String::from("# c\nnot a url\n");
        for i in 0..30 {
            input.push_str(&format!("http://h{i}.test/a\nhttp://H{i}.test:80/b\n"));
        }
        std::fs::write(&path, input).unwrap();
        let mut sum = 0;
        for k in 0..3 {
            let shard = Shard::new(k, 3).unwrap();
            let hosts = (0..30)
                .filter(|i| shard.owns(Some(&format!("http://h{i}.test:80"))))
                .count() as u64;
            let expected = 2 * hosts + u64::from(k == 0);
            let counted = count(&path, Some(&shard), None, &Redactor::default()).unwrap();
            assert_eq!(counted, expected, "shard {shard}");
            assert!(counted < 61, "shard {shard} counts only its part");
            sum += counted;
        }
        assert_eq!(sum, 61);
    }

    /// Lines an earlier run got ok (same seq and url) are left out of the total; a failed
    /// one, or an ok one whose line moved, is not.
    #[test]
    fn leaves_out_resumed_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let input = dir.join("urls.txt");
        let previous = dir.join("previous.jsonl");
        std::fs::write(
            &input,
            "# c\nhttp://a.test/0\nhttp://a.test/1\nbad\nhttp://a.test/3\nhttp://a.test/4\n",
        )
        .unwrap();
        std::fs::write(
            &previous,
            concat!(
                r#"{"seq":0,"url":"http://a.test/0","ok":true}"#,
                "\n",
                r#"{"seq":1,"url":"http://a.test/1","ok":false}"#,
                "\n",
                r#"{"seq":3,"url":"http://a.test/3","ok":true}"#,
                "\n",
                r#"{"seq":3,"url":"http://a.test/4","ok":true}"#,
                "\n",
            ),
        )
        .unwrap();
        let (done, skipped) = Done::read(&previous, Redactor::default()).unwrap();
        assert_eq!(skipped.unreadable, 0);
        assert_eq!(count(&input, None, None, &Redactor::default()).unwrap(), 5);
        assert_eq!(
            count(&input, None, Some(&done), &Redactor::default()).unwrap(),
            3
        );
    }
}
