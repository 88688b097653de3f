//! Input: turn lines of text into jobs, lazily and with bounded memory.
//!
//! One URL per line; surrounding whitespace is trimmed; blank lines and lines starting with `#`
//! are skipped and get no `seq`. Every other line becomes exactly one [`Job`]: a request, or the
//! reason it cannot be one (which becomes an `invalid_url` record downstream). Reading stops at
//! the channel: when the pipeline is busy, the reader waits, so a huge file is never held in
//! memory. This module does not fetch and does not decide ordering.

use std::io;
use std::path::Path;
use std::pin::Pin;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use url::Url;

/// Longest input line kept; a longer line becomes an `invalid_url` record, the rest of it is
/// read and dropped so memory stays bounded whatever the input.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// How much of a bad line is echoed back in its record's `url` field.
const ECHO_BYTES: usize = 512;

/// One URL line of input.
#[derive(Debug)]
pub struct Job {
    /// 0-based index among URL lines.
    pub seq: u64,
    /// 1-based line number.
    pub line: u64,
    /// The request to make, or why the line is not one.
    pub request: Result<Request, InvalidLine>,
}

/// What to fetch.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: Url,
}

/// A line that is not a request: the text to echo and what is wrong with it.
#[derive(Debug, Clone)]
pub struct InvalidLine {
    pub text: String,
    pub reason: String,
}

/// A boxed async byte source: a file, stdin, or anything a library user passes in.
pub type Source = Pin<Box<dyn AsyncRead + Send>>;

/// Open the input named on the command line: `None` or `-` is stdin.
pub async fn open(path: Option<&Path>) -> io::Result<Source> {
    match path {
        None => Ok(Box::pin(tokio::io::stdin())),
        Some(p) if p.as_os_str() == "-" => Ok(Box::pin(tokio::io::stdin())),
        Some(p) => {
            let file = tokio::fs::File::open(p).await?;
            if file.metadata().await?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ));
            }
            Ok(Box::pin(file))
        }
    }
}

/// Read `source` to the end, sending one job per URL line. Returns early (Ok) when the
/// receiver is gone: nobody wants more jobs.
pub async fn read_jobs(source: Source, jobs: mpsc::Sender<Job>) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut buf = Vec::with_capacity(256);
    let mut line_no = 0u64;
    let mut seq = 0u64;
    loop {
        buf.clear();
        let (read, complete) = read_line_bounded(&mut reader, &mut buf).await?;
        if read == 0 {
            return Ok(());
        }
        line_no += 1;
        let Some(request) = parse_line(&buf, complete) else {
            continue;
        };
        let job = Job {
            seq,
            line: line_no,
            request,
        };
        seq += 1;
        if jobs.send(job).await.is_err() {
            return Ok(());
        }
    }
}

/// Read one line (without its `\n`) into `buf`, keeping at most [`MAX_LINE_BYTES`].
/// Returns the number of bytes consumed (0 at end of input) and whether the whole line fit.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut complete = true;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok((consumed, complete));
        }
        let (take, done) = match memchr(chunk) {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let data = &chunk[..if done { take - 1 } else { take }];
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        if data.len() > room {
            complete = false;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, complete));
        }
    }
}

fn memchr(haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == b'\n')
}

/// Classify one raw line: `None` for lines that are skipped (blank, comment), otherwise the
/// request or the reason it is invalid. Never panics, whatever the bytes.
pub fn parse_line(raw: &[u8], complete: bool) -> Option<Result<Request, InvalidLine>> {
    let invalid = |reason: String| {
        let text = String::from_utf8_lossy(&raw[..raw.len().min(ECHO_BYTES)])
            .trim()
            .to_owned();
        Some(Err(InvalidLine { text, reason }))
    };
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(_) if !complete => return invalid(format!("line longer than {MAX_LINE_BYTES} bytes")),
        Err(_) => return invalid("line is not valid UTF-8".to_owned()),
    };
    let text = text.trim();
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    if !complete {
        return invalid(format!("line longer than {MAX_LINE_BYTES} bytes"));
    }
    Some(
        parse_url(text)
            .map(|url| Request { url })
            .map_err(|reason| InvalidLine {
                text: masked(text).chars().take(ECHO_BYTES).collect(),
                reason,
            }),
    )
}

/// A refused line as echoed in its record: if it parses as a URL of any scheme
/// (`ftp://user:pw@host/`), its credentials are masked like a fetched URL's.
fn masked(text: &str) -> std::borrow::Cow<'_, str> {
    match Url::parse(text) {
        Ok(url) if url.password().is_some() || !url.username().is_empty() => {
            crate::fetch::display_url(&url).into()
        }
        _ => text.into(),
    }
}

/// An absolute `http` or `https` URL with a host, or why not.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "not an absolute URL (expected http:// or https://)".to_owned()
        }
        e => format!("not a valid URL: {e}"),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported scheme `{other}` (only http and https)"
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host".to_owned());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Result<String, String>> {
        text.split('\n')
            .filter_map(|l| parse_line(l.as_bytes(), true))
            .map(|r| r.map(|r| r.url.to_string()).map_err(|e| e.reason))
            .collect()
    }

    #[test]
    fn lines() {
        let got =
            kinds("  http://a.test/x  \n\n# comment\n   # indented comment\nftp://a/\nnope\n");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok("http://a.test/x".to_owned()));
        assert!(got[1].as_ref().unwrap_err().contains("scheme"));
        assert!(got[2].as_ref().unwrap_err().contains("absolute"));
    }

    #[test]
    fn refused_lines_mask_credentials() {
        let Some(Err(bad)) = parse_line(b"ftp://user:hunter22@example.test/x", true) else {
            panic!("ftp is refused");
        };
        assert_eq!(bad.text, "ftp://user:****@example.test/x");
    }

    #[tokio::test]
    async fn long_lines_are_bounded() {
        let mut data = vec![b'a'; MAX_LINE_BYTES * 3];
        data.extend_from_slice(b"\nhttp://ok.test/\n");
        let (tx, mut rx) = mpsc::channel(8);
        read_jobs(Box::pin(std::io::Cursor::new(data)), tx)
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        assert!(first.request.unwrap_err().reason.contains("longer"));
        let second = rx.recv().await.unwrap();
        assert_eq!((second.seq, second.line), (1, 2));
        assert!(second.request.is_ok());
    }
}
