//! Input: turn lines of text into jobs, lazily and with bounded memory.
//!
//! Lines end at LF, CR LF or a lone CR; a UTF-8 byte-order mark at the start of the input is
//! dropped. Each line is classified on its bytes before anything decodes it: surrounding
//! whitespace is trimmed; blank lines and comments (`#` after optional whitespace, whatever
//! the encoding or length of the rest) are skipped and get no `seq`. A line starting with `{`
//! is a JSON request spec (parsed by `request`). Every other line becomes exactly one
//! [`Line`]: a request, or the reason it cannot be one (an `invalid_url` or `invalid_spec`
//! record downstream), its text echoed with secrets masked on the raw text (`redact`) and cut
//! to at most 512 bytes. Reading stops at the channel: when the pipeline is busy, the reader
//! waits, so a huge file is never held in memory; no line keeps more than 64 KiB
//! ([`LineReader`], which `--resume` and the progress count use too). This module does not
//! fetch and does not decide ordering.

use std::io::{self, BufRead, Seek, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader, ReadBuf};
use tokio::sync::mpsc;

use crate::json::Shape;
use crate::record::{ErrorKind, Record};
use crate::redact::{Redactor, bounded};
use crate::request::{self, Request};

/// Longest input line kept; a longer line becomes an `invalid_url` record, the rest of it is
/// read and dropped so memory stays bounded whatever the input.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// The `url` of an `invalid_spec` record whose line names no URL (the line itself is not
/// echoed: it may carry credentials in its headers).
pub(crate) const SPEC_WITHOUT_URL: &str = "{...}";

/// How much of a bad line is echoed back in its record's `url` field, in bytes.
pub(crate) const ECHO_BYTES: usize = 512;

/// The UTF-8 byte-order mark, dropped from the start of the input.
const BOM: &[u8] = b"\xEF\xBB\xBF";

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

/// One line as read: at most `max` of its bytes, and whether they are all of it.
#[derive(Debug)]
pub(crate) struct RawLine {
    /// The line's first bytes, without its line break.
    pub bytes: Vec<u8>,
    /// Whether `bytes` is the whole line (it was not longer than the bound).
    pub complete: bool,
    /// Whether the line ended with a line break (not at the end of the input).
    pub terminated: bool,
    max: usize,
    /// Bytes of the line seen, kept or not.
    seen: u64,
    /// With [`RawLine::with_shape`], the shape of all of the line's bytes, kept or not.
    pub shape: Option<Shape>,
}

impl RawLine {
    /// A line buffer keeping at most `max` bytes of each line.
    pub(crate) fn new(max: usize) -> RawLine {
        RawLine {
            bytes: Vec::with_capacity(256),
            complete: true,
            terminated: false,
            max,
            seen: 0,
            shape: None,
        }
    }

    /// Also check the shape of every line as one JSON object (see [`Shape`]).
    pub(crate) fn with_shape(mut self) -> RawLine {
        self.shape = Some(Shape::default());
        self
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.complete = true;
        self.terminated = false;
        self.seen = 0;
        if let Some(shape) = &mut self.shape {
            *shape = Shape::default();
        }
    }

    fn keep(&mut self, data: &[u8]) {
        let room = self.max.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.complete = false;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
        self.seen += data.len() as u64;
        if let Some(shape) = &mut self.shape {
            shape.feed(data);
        }
    }
}

/// Splits a byte stream into lines with a bound on each: the one line reader for every input
/// fetchall reads (the URL list, `--resume`, the progress count). LF, CR LF and a lone CR
/// each end a line; a UTF-8 byte-order mark at the very start is dropped.
#[derive(Debug)]
pub(crate) struct LineReader {
    /// The last line ended with CR: a LF right after it belongs to that line break.
    after_cr: bool,
    /// No line has been read yet.
    first: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader {
            after_cr: false,
            first: true,
        }
    }
}

impl LineReader {
    /// Take the current line's bytes from `chunk` into `line`: how many bytes of `chunk` were
    /// used, and whether the line ended in them.
    fn feed(&mut self, chunk: &[u8], line: &mut RawLine) -> (usize, bool) {
        let mut start = 0;
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                start = 1;
            }
        }
        let rest = &chunk[start..];
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(i) => {
                line.keep(&rest[..i]);
                self.after_cr = rest[i] == b'\r';
                line.terminated = true;
                (start + i + 1, true)
            }
            None => {
                line.keep(rest);
                (chunk.len(), false)
            }
        }
    }

    /// Whether a line was read (`false` at the end of the input), after the last chunk.
    fn done(&mut self, line: &mut RawLine, ended: bool) -> bool {
        if std::mem::take(&mut self.first) && line.bytes.starts_with(BOM) {
            line.bytes.drain(..BOM.len());
        }
        ended || line.seen > 0
    }

    /// Read the next line into `line`; `false` at the end of the input.
    pub(crate) async fn next<R: AsyncBufRead + Unpin>(
        &mut self,
        reader: &mut R,
        line: &mut RawLine,
    ) -> io::Result<bool> {
        line.clear();
        loop {
            let chunk = reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(self.done(line, false));
            }
            let (used, ended) = self.feed(chunk, line);
            reader.consume(used);
            if ended {
                return Ok(self.done(line, true));
            }
        }
    }

    /// [`LineReader::next`] on a blocking reader.
    pub(crate) fn next_blocking<R: BufRead>(
        &mut self,
        reader: &mut R,
        line: &mut RawLine,
    ) -> io::Result<bool> {
        line.clear();
        loop {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                return Ok(self.done(line, false));
            }
            let (used, ended) = self.feed(chunk, line);
            reader.consume(used);
            if ended {
                return Ok(self.done(line, true));
            }
        }
    }
}

/// Read `source` to the end, sending one [`Line`] per URL line. Returns early (Ok) when the
/// receiver is gone: nobody wants more jobs.
pub(crate) async fn read_lines(
    source: Source,
    lines: mpsc::Sender<Line>,
    redactor: Arc<Redactor>,
) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, source);
    let mut splitter = LineReader::default();
    let mut raw = RawLine::new(MAX_LINE_BYTES);
    let mut line_no = 0u64;
    let mut seq = 0u64;
    while splitter.next(&mut reader, &mut raw).await? {
        line_no += 1;
        let Some(request) = parse_line(&raw.bytes, raw.complete, &redactor) else {
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
    Ok(())
}

/// Whether a line gets no record: blank, or a comment (`#` after optional whitespace). Decided
/// on the bytes, whatever the encoding or length of the rest (a line of only Unicode
/// whitespace is blank too).
pub(crate) fn is_skipped(raw: &[u8]) -> bool {
    let t = raw.trim_ascii();
    if t.is_empty() || t[0] == b'#' {
        return true;
    }
    if t[0].is_ascii() {
        // Not whitespace (trimmed) and not `#`: the line starts with something else.
        return false;
    }
    // Perhaps Unicode whitespace (a no-break space) before the `#` or the end; what follows
    // a `#` need not be valid UTF-8.
    let valid = match std::str::from_utf8(t) {
        Ok(text) => text,
        Err(e) => std::str::from_utf8(&t[..e.valid_up_to()]).unwrap_or_default(),
    };
    let rest = valid.trim_start();
    rest.starts_with('#') || (rest.is_empty() && valid.len() == t.len())
}

/// Classify one raw line: `None` for lines that are skipped (blank, comment), otherwise the
/// request or the reason it is invalid. `complete`: the line was not cut at
/// [`MAX_LINE_BYTES`]. Never panics, whatever the bytes.
pub(crate) fn parse_line(
    raw: &[u8],
    complete: bool,
    redactor: &Redactor,
) -> Option<Result<Request, InvalidLine>> {
    if is_skipped(raw) {
        return None;
    }
    let t = raw.trim_ascii();
    let spec = t[0] == b'{';
    let invalid = |reason: String| {
        // A spec line is never echoed: its headers may hold credentials.
        let text = if spec {
            SPEC_WITHOUT_URL.to_owned()
        } else {
            echo(&String::from_utf8_lossy(t), !complete, redactor)
        };
        Some(Err(InvalidLine {
            text,
            reason,
            kind: ErrorKind::InvalidUrl,
            id: None,
        }))
    };
    if !complete {
        return invalid(format!("line longer than {MAX_LINE_BYTES} bytes"));
    }
    let text = match std::str::from_utf8(t) {
        Ok(text) => text.trim(),
        Err(e) => {
            return invalid(format!(
                "line is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ));
        }
    };
    if spec {
        return Some(request::parse_spec(text).map_err(|e| InvalidLine {
            // The spec's url, never the whole line.
            text: match &e.url {
                Some(url) => echo(url, false, redactor),
                None => SPEC_WITHOUT_URL.to_owned(),
            },
            reason: e.message,
            kind: if e.invalid_url {
                ErrorKind::InvalidUrl
            } else {
                ErrorKind::InvalidSpec
            },
            id: e.id,
        }));
    }
    Some(
        request::parse_url(text)
            .map(Request::get)
            .map_err(|reason| InvalidLine {
                text: echo(text, false, redactor),
                reason,
                kind: ErrorKind::InvalidUrl,
                id: None,
            }),
    )
}

/// A refused line as echoed in its record: secrets masked on the raw text, then cut to
/// [`ECHO_BYTES`] bytes (masking first, so a cut never uncovers part of a secret).
fn echo(text: &str, truncated: bool, redactor: &Redactor) -> String {
    bounded(&redactor.text(text.trim(), truncated), ECHO_BYTES).into_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::redact::DEFAULT_MASKED_PARAMS;

    fn redactor() -> Redactor {
        Redactor::new(DEFAULT_MASKED_PARAMS)
    }

    fn parse(raw: &[u8]) -> Option<Result<Request, InvalidLine>> {
        parse_line(raw, true, &redactor())
    }

    fn kinds(text: &str) -> Vec<Result<String, String>> {
        text.split('\n')
            .filter_map(|l| parse(l.as_bytes()))
            .map(|r| r.map(|r| r.url.to_string()).map_err(|e| e.reason))
            .collect()
    }

    /// Every line of `data`, as the reader splits them (fed in chunks of `chunk` bytes).
    fn split(data: &[u8], chunk: usize) -> Vec<(Vec<u8>, bool)> {
        let mut reader = std::io::BufReader::with_capacity(chunk, data);
        let mut splitter = LineReader::default();
        let mut line = RawLine::new(8);
        let mut out = Vec::new();
        while splitter.next_blocking(&mut reader, &mut line).unwrap() {
            out.push((line.bytes.clone(), line.complete));
        }
        out
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
    fn line_breaks_are_lf_crlf_or_a_lone_cr_and_a_bom_is_dropped() {
        let data = b"\xEF\xBB\xBFa\r\nb\rc\n\r\nd\r";
        for chunk in [1, 2, 3, 64] {
            let lines: Vec<Vec<u8>> = split(data, chunk).into_iter().map(|l| l.0).collect();
            assert_eq!(
                lines,
                [&b"a"[..], b"b", b"c", b"", b"d"],
                "chunks of {chunk}"
            );
        }
        assert_eq!(split(b"", 4).len(), 0);
        assert_eq!(split(b"\n", 4).len(), 1);
        let long = split(b"0123456789\nok", 4);
        assert_eq!(long[0], (b"01234567".to_vec(), false));
        assert_eq!(long[1], (b"ok".to_vec(), true));
    }

    #[test]
    fn comments_are_skipped_whatever_their_bytes() {
        for raw in [
            &b"# caf\xe9 latin-1"[..],
            b"\t  #\xff\xfe",
            b"#",
            b"\xc2\xa0# after a no-break space",
            b"\xc2\xa0# then latin-1: caf\xe9",
            b"   ",
        ] {
            assert!(parse(raw).is_none(), "{raw:?}");
        }
        // A comment longer than the bound is skipped too, not refused.
        assert!(parse_line(b"# very long ...", false, &redactor()).is_none());
    }

    #[test]
    fn control_characters_inside_a_url_are_refused_not_removed() {
        for raw in [
            "http://a.test/a\tb",
            "http://a.te\x01st/",
            "http://a.test/\x7f",
        ] {
            let Some(Err(bad)) = parse(raw.as_bytes()) else {
                panic!("{raw:?} was accepted");
            };
            assert_eq!(bad.kind, ErrorKind::InvalidUrl);
            assert!(bad.reason.contains("control character"), "{}", bad.reason);
        }
    }

    #[test]
    fn refused_lines_mask_credentials() {
        for (raw, shown) in [
            (
                &b"ftp://user:hunter22@example.test/x"[..],
                "ftp://user:****@example.test/x",
            ),
            (
                b"http://u:hunter22@host:99999/",
                "http://u:****@host:99999/",
            ),
            (b"http://u:hunter22@/", "http://u:****@/"),
            (b"http://u:hunter22\xff@host:1x/", "http://u:****@host:1x/"),
        ] {
            let Some(Err(bad)) = parse(raw) else {
                panic!("{raw:?} is refused");
            };
            assert_eq!(bad.text, shown);
        }
    }

    #[test]
    fn echoes_are_at_most_512_bytes() {
        let raw = format!("http://a.test:99999/{}", "é".repeat(600));
        let Some(Err(bad)) = parse(raw.as_bytes()) else {
            panic!()
        };
        assert!(bad.text.len() <= ECHO_BYTES, "{}", bad.text.len());
        let raw = [b'\xff'; 600];
        let Some(Err(bad)) = parse(&raw) else {
            panic!()
        };
        assert!(bad.text.len() <= ECHO_BYTES, "{}", bad.text.len());
    }

    #[test]
    fn over_long_lines_echo_no_secret() {
        let mut raw = b"http://u:".to_vec();
        raw.extend(std::iter::repeat_n(b'S', MAX_LINE_BYTES));
        let Some(Err(bad)) = parse_line(&raw[..MAX_LINE_BYTES], false, &redactor()) else {
            panic!()
        };
        assert!(!bad.text.contains("SSSS"), "{}", bad.text);
        assert!(bad.reason.contains("longer"));
        // A long spec line is never echoed (its headers may hold a token).
        let spec = format!(
            r#"{{"headers":{{"Authorization":"Bearer t0ken"}},"x":"{}"#,
            "y".repeat(10)
        );
        let Some(Err(bad)) = parse_line(spec.as_bytes(), false, &redactor()) else {
            panic!()
        };
        assert_eq!(bad.text, SPEC_WITHOUT_URL);
    }

    #[tokio::test]
    async fn a_long_line_is_refused_and_the_next_line_keeps_its_number() {
        let mut data = vec![b'a'; MAX_LINE_BYTES * 3];
        data.extend_from_slice(b"\nhttp://ok.test/\n");
        let (tx, mut rx) = mpsc::channel(8);
        read_lines(
            Box::pin(std::io::Cursor::new(data)),
            tx,
            Arc::new(redactor()),
        )
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
            match parse_line(&raw, complete, &redactor()) {
                None => prop_assert!(is_skipped(&raw)),
                Some(Ok(request)) => {
                    prop_assert!(matches!(request.url.scheme(), "http" | "https"));
                    prop_assert!(complete);
                }
                Some(Err(bad)) => {
                    prop_assert!(!bad.reason.is_empty());
                    prop_assert!(bad.text.len() <= ECHO_BYTES);
                    prop_assert!(!bad.reason.contains('\n'));
                }
            }
        }

        #[test]
        fn url_like_lines_are_http_urls_with_a_host_or_refused_with_a_reason(
            scheme in "(http|https|ftp|file|data|HTTP|)",
            rest in "[ -~]{0,80}",
        ) {
            let line = format!("{scheme}://{rest}");
            match parse(line.as_bytes()) {
                None => prop_assert!(is_skipped(line.as_bytes())),
                Some(Ok(request)) => {
                    prop_assert!(matches!(request.url.scheme(), "http" | "https"));
                    prop_assert!(request.url.host_str().is_some_and(|h| !h.is_empty()));
                }
                Some(Err(bad)) => prop_assert!(!bad.reason.is_empty()),
            }
        }

        /// A line splits the same way whatever the chunks the bytes arrive in.
        #[test]
        fn splitting_does_not_depend_on_chunking(
            data in proptest::collection::vec(prop::sample::select(&b"ab\r\n#\xEF\xBB\xBF"[..]), 0..60),
            chunk in 1usize..9,
        ) {
            prop_assert_eq!(split(&data, chunk), split(&data, 64));
        }

        /// A refused line never echoes the password of the URL it holds, however it is
        /// broken (bad port, space, invalid byte) and wherever the line was cut.
        #[test]
        fn refused_lines_never_echo_the_password(
            password in "[A-Za-z0-9]{6,16}",
            breakage in prop::sample::select(vec![":99999", ":x", " ", "\u{1}", "%zz", "\\"]),
            cut in 0usize..80,
        ) {
            let password = format!("P{password}");
            let line = format!("http://user:{password}@host{breakage}/path");
            let end = cut.min(line.len());
            for (raw, complete) in [(line.as_bytes(), true), (&line.as_bytes()[..end], false)] {
                if let Some(Err(bad)) = parse_line(raw, complete, &redactor()) {
                    prop_assert!(!bad.text.contains(&password), "{} -> {}", line, bad.text);
                    prop_assert!(!bad.reason.contains(&password));
                }
            }
        }
    }
}
