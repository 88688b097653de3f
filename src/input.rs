//! Input: turn lines of text into jobs, lazily and with bounded memory.
//!
//! One URL per line; surrounding whitespace is trimmed; blank lines and lines starting with `#`
//! are skipped and get no `seq`. A line starting with `{` is a JSON request spec (parsed by
//! `request`). Every other line becomes exactly one [`Line`]: a request, or the reason it cannot
//! be one (which becomes an `invalid_url` or `invalid_spec` record downstream). Reading stops at
//! the channel: when the pipeline is busy, the reader waits, so a huge file is never held in
//! memory. This module does not fetch and does not decide ordering.

use std::io::{self, Seek, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};
use tokio::sync::mpsc;

use crate::record::{ErrorKind, Record};
use crate::request::{self, Request};

/// Longest input line kept; a longer line becomes an `invalid_url` record, the rest of it is
/// read and dropped so memory stays bounded whatever the input.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// The `url` of an `invalid_spec` record whose line names no URL (the line itself is not
/// echoed: it may carry credentials in its headers).
pub(crate) const SPEC_WITHOUT_URL: &str = "{...}";

/// How much of a bad line is echoed back in its record's `url` field.
const ECHO_BYTES: usize = 512;

/// One URL line of input.
#[derive(Debug)]
pub(crate) struct Line {
    /// 0-based index among URL lines.
    pub seq: u64,
    /// 1-based line number.
    pub line: u64,
    /// The request to make, or why the line is not one.
    pub request: Result<Request, InvalidLine>,
}

/// A line that is not a request: the text to echo and what is wrong with it.
#[derive(Debug, Clone)]
pub(crate) struct InvalidLine {
    pub text: String,
    pub reason: String,
    /// `InvalidUrl`, or `InvalidSpec` for a spec line that is not a valid request.
    pub kind: ErrorKind,
    /// A spec's `id`, when it could be read.
    pub id: Option<serde_json::Value>,
}

impl InvalidLine {
    /// The record of line `line` (the `seq`-th URL line), which never became a request.
    pub(crate) fn into_record(self, seq: u64, line: u64) -> Record {
        let mut record = Record::input_error(seq, line, self.text, self.kind, self.reason);
        record.id = self.id;
        record
    }
}

/// A boxed async byte source: a file, stdin, or anything a library user passes in.
pub type Source = Pin<Box<dyn AsyncRead + Send>>;

/// What a run reads. A [`Input::File`] is opened again for every round, so lines added or
/// removed between rounds take effect; a [`Input::Reader`] is read once, and when the run has
/// more than one round it is copied to a temporary file as it is read, and later rounds replay
/// that file (nothing is held in memory).
pub enum Input {
    /// A file of URL lines, opened at the start of each round.
    File(PathBuf),
    /// A stream of URL lines (stdin, a socket, a cursor).
    Reader(Source),
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::File(path) => f.debug_tuple("File").field(path).finish(),
            Input::Reader(_) => f.write_str("Reader"),
        }
    }
}

impl From<Source> for Input {
    fn from(source: Source) -> Input {
        Input::Reader(source)
    }
}

/// The input of each round in turn.
pub(crate) enum Rounds {
    File(PathBuf),
    /// Not read yet; spooled to a temporary file when `replay` says later rounds need it.
    Reader {
        source: Option<Source>,
        replay: bool,
    },
    /// Read once, into this (deleted-on-close) temporary file.
    Spooled(std::fs::File),
}

impl Rounds {
    /// `replay`: the run may have more than one round.
    pub(crate) fn new(input: Input, replay: bool) -> Rounds {
        match input {
            Input::File(path) => Rounds::File(path),
            Input::Reader(source) => Rounds::Reader {
                source: Some(source),
                replay,
            },
        }
    }

    /// The source of the next round.
    pub(crate) async fn next(&mut self) -> io::Result<Source> {
        match self {
            Rounds::File(path) => {
                let file = tokio::fs::File::open(&*path).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                })?;
                Ok(Box::pin(file))
            }
            Rounds::Reader { source, replay } => {
                let Some(source) = source.take() else {
                    return Err(io::Error::other("the input was already read"));
                };
                if !*replay {
                    return Ok(source);
                }
                let spool = tokio::task::spawn_blocking(tempfile::tempfile)
                    .await
                    .map_err(io::Error::other)??;
                let writer = spool.try_clone()?;
                *self = Rounds::Spooled(spool);
                Ok(Box::pin(Tee {
                    source,
                    spool: io::BufWriter::with_capacity(64 * 1024, writer),
                }))
            }
            Rounds::Spooled(spool) => {
                let mut file = spool.try_clone()?;
                file.rewind()?;
                Ok(Box::pin(tokio::fs::File::from_std(file)))
            }
        }
    }
}

/// A reader that copies what it reads into the spool file. The copy is a plain write into a
/// 64 KiB buffer, so the runtime thread makes one write call per 64 KiB into a temporary
/// file (the page cache), never a wait on the reader's pace.
struct Tee {
    source: Source,
    spool: io::BufWriter<std::fs::File>,
}

impl AsyncRead for Tee {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        ready!(this.source.as_mut().poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        let spooled = if new.is_empty() {
            this.spool.flush()
        } else {
            this.spool.write_all(new)
        };
        Poll::Ready(
            spooled.map_err(|e| io::Error::new(e.kind(), format!("spooling the input: {e}"))),
        )
    }
}

/// Read `source` to the end, sending one [`Line`] per URL line. Returns early (Ok) when the
/// receiver is gone: nobody wants more jobs.
pub(crate) async fn read_lines(source: Source, lines: mpsc::Sender<Line>) -> io::Result<()> {
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
        let line = Line {
            seq,
            line: line_no,
            request,
        };
        seq += 1;
        if lines.send(line).await.is_err() {
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
        let (take, done) = match memchr::memchr(b'\n', chunk) {
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

/// Classify one raw line: `None` for lines that are skipped (blank, comment), otherwise the
/// request or the reason it is invalid. Never panics, whatever the bytes.
pub(crate) fn parse_line(raw: &[u8], complete: bool) -> Option<Result<Request, InvalidLine>> {
    let invalid = |reason: String| {
        let text = String::from_utf8_lossy(&raw[..raw.len().min(ECHO_BYTES)])
            .trim()
            .to_owned();
        Some(Err(InvalidLine {
            text,
            reason,
            kind: ErrorKind::InvalidUrl,
            id: None,
        }))
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
    if text.starts_with('{') {
        return Some(request::parse_spec(text).map_err(|e| {
            InvalidLine {
                // The spec's url, never the whole line: its headers may carry credentials.
                text: match &e.url {
                    Some(url) => {
                        crate::redact::bounded(&crate::redact::display_text(url), ECHO_BYTES)
                            .into_owned()
                    }
                    None => SPEC_WITHOUT_URL.to_owned(),
                },
                reason: e.message,
                kind: if e.invalid_url {
                    ErrorKind::InvalidUrl
                } else {
                    ErrorKind::InvalidSpec
                },
                id: e.id,
            }
        }));
    }
    Some(
        request::parse_url(text)
            .map(Request::get)
            .map_err(|reason| InvalidLine {
                text: crate::redact::bounded(&crate::redact::display_text(text), ECHO_BYTES)
                    .into_owned(),
                reason,
                kind: ErrorKind::InvalidUrl,
                id: None,
            }),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn kinds(text: &str) -> Vec<Result<String, String>> {
        text.split('\n')
            .filter_map(|l| parse_line(l.as_bytes(), true))
            .map(|r| r.map(|r| r.url.to_string()).map_err(|e| e.reason))
            .collect()
    }

    #[test]
    fn lines_are_urls_refusals_or_skipped() {
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
    async fn a_long_line_is_refused_and_the_next_line_keeps_its_number() {
        let mut data = vec![b'a'; MAX_LINE_BYTES * 3];
        data.extend_from_slice(b"\nhttp://ok.test/\n");
        let (tx, mut rx) = mpsc::channel(8);
        read_lines(Box::pin(std::io::Cursor::new(data)), tx)
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        assert!(first.request.unwrap_err().reason.contains("longer"));
        let second = rx.recv().await.unwrap();
        assert_eq!((second.seq, second.line), (1, 2));
        assert!(second.request.is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_are_a_request_an_error_or_skipped(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            complete in any::<bool>(),
        ) {
            match parse_line(&raw, complete) {
                None => {
                    let text = String::from_utf8_lossy(&raw);
                    let t = text.trim();
                    prop_assert!(t.is_empty() || t.starts_with('#'));
                }
                Some(Ok(request)) => {
                    prop_assert!(matches!(request.url.scheme(), "http" | "https"));
                    prop_assert!(complete);
                }
                Some(Err(bad)) => {
                    prop_assert!(!bad.reason.is_empty());
                    prop_assert!(bad.text.len() <= 4 * ECHO_BYTES);
                }
            }
        }

        #[test]
        fn url_like_lines_are_http_urls_with_a_host_or_refused_with_a_reason(
            scheme in "(http|https|ftp|file|data|HTTP|)",
            rest in "[ -~]{0,80}",
        ) {
            let line = format!("{scheme}://{rest}");
            match parse_line(line.as_bytes(), true) {
                None => prop_assert!(line.trim().is_empty() || line.trim().starts_with('#')),
                Some(Ok(request)) => {
                    prop_assert!(matches!(request.url.scheme(), "http" | "https"));
                    prop_assert!(request.url.host_str().is_some_and(|h| !h.is_empty()));
                }
                Some(Err(bad)) => prop_assert!(!bad.reason.is_empty()),
            }
        }
    }
}
