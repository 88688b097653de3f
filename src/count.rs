//! Counting ahead: how many records a run over a file will write, for a progress bar's total.
//!
//! The count is for display: it reads the file once more, on the caller's thread, while the
//! run reads it too. It does not fetch, and the run never waits for it.

use std::io::{self, BufRead};
use std::path::Path;

use crate::resume::Done;

/// How many records a run over the file at `path` will write: its URL lines (not blank, not
/// a `#` comment), less those an earlier run's output (`--resume`) already has ok. Blocking:
/// call it off the async runtime (`spawn_blocking`). A `resume` file that cannot be read
/// counts as empty.
pub fn count_records(path: &Path, resume: Option<&Path>) -> io::Result<u64> {
    let total = count_url_lines(path)?;
    let resumed = match resume.map(Done::read) {
        Some(Ok((done, _))) => count_resumed(path, &done)?,
        _ => 0,
    };
    Ok(total.saturating_sub(resumed))
}

/// Count the lines of `path` that fetchall will turn into records (not blank, not starting
/// with `#`), reading the file once in fixed-size chunks: memory stays flat however long a
/// line is. (A line of only non-ASCII whitespace counts here but gets no record: the total is
/// for display.)
fn count_url_lines(path: &Path) -> io::Result<u64> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut count = 0;
    // The first byte of the current line that is not ASCII whitespace, once seen.
    let mut first: Option<u8> = None;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(count + u64::from(first.is_some_and(|b| b != b'#')));
        }
        for &b in chunk {
            if b == b'\n' {
                count += u64::from(first.is_some_and(|b| b != b'#'));
                first = None;
            } else if first.is_none() && !b.is_ascii_whitespace() {
                first = Some(b);
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// How many URL lines of `path` an earlier run already fetched (`--resume`): they get no
/// record, so the total leaves them out. Lines are numbered as the input reader numbers them.
fn count_resumed(path: &Path, done: &Done) -> io::Result<u64> {
    let reader = io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut seq = 0u64;
    let mut resumed = 0;
    for line in reader.split(b'\n') {
        let Some(parsed) = crate::input::parse_line(&line?, true) else {
            continue;
        };
        if let Ok(request) = parsed
            && done.contains(seq, &request.url)
        {
            resumed += 1;
        }
        seq += 1;
    }
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_lines_that_get_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urls.txt");
        std::fs::write(&path, b"a\n\n  # c\n  b  \n\xff\n \t\nlast").unwrap();
        assert_eq!(count_url_lines(&path).unwrap(), 4);
    }

    /// Lines an earlier run got ok (same seq and url) are left out of the total; a failed
    /// one, or an ok one whose line moved, is not.
    #[test]
    fn leaves_out_resumed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("urls.txt");
        let previous = dir.path().join("previous.jsonl");
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
        let (done, unreadable) = Done::read(&previous).unwrap();
        assert_eq!(unreadable, 0);
        assert_eq!(count_url_lines(&input).unwrap(), 5);
        assert_eq!(count_resumed(&input, &done).unwrap(), 2);
    }
}
