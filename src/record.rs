//! The record: one JSON object per input line, the only thing fetchall writes to stdout.
//!
//! This module owns the shape of a record and how a response body is represented in it.
//! The contract is documented in `docs/output.md` and `docs/record.schema.json`; change all
//! three together. It does not decide *what* happened to a request (that is `fetch`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json;

/// One line of output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Record {
    /// 0-based index among URL lines (blank and comment lines do not count).
    pub seq: u64,
    /// 1-based line number in the input.
    pub line: u64,
    /// The URL as requested (credentials masked), or the offending line for `invalid_url`.
    pub url: String,
    /// True when a response arrived with a status below 400 and its body was read.
    pub ok: bool,
    /// The HTTP status of the last response, when one arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// When the request started, in milliseconds since the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<f64>,
    /// From request start to the last body byte (or the failure), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<f64>,
    /// Body bytes received (after decompression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The response's `Content-Type` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The response body, as `body_encoding` says (absent with `--body none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// How `body` holds the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<BodyEncoding>,
    /// Why a body that was expected to be JSON (by its content type, or `--body json`) is
    /// text or base64 instead: it is not valid JSON, or it nests deeper than 256 levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_note: Option<String>,
    /// Why the record is not ok; absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordError>,
    /// Requests made for this line, retries included (absent when none was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The pace limiting the host after this response (requests per second), while one
    /// does: the slower of `--adaptive`'s rate and the pace from the host's quota headers
    /// (0 while the host is paused for a spent budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rate: Option<f64>,
    /// The spec line's `id` (a string or a number), echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// Response headers (`--headers`): lower-case name -> every value, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// Where the body was written (`--save-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved: Option<Saved>,
    /// When polling (`--every`, `--rounds`, `--state`): the round, 0-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// When polling: when the request started (the record was made, for a bad line), RFC 3339
    /// UTC with milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// When polling: whether the outcome differs from the one stored for this request (ok,
    /// status, error kind, body sha256; a 304 is unchanged; a request not seen before is
    /// changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// When polling: whether the server answered 304 Not Modified to a conditional request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_modified: Option<bool>,
    /// `--extract NAME=FILTER`: each name with its filter's first output on the body (null
    /// when it yields nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<BTreeMap<String, Value>>,
    /// With pagination: the page's number among its line's pages, 0-based (the line's own
    /// URL is page 0). Every page has its own record, with the line's `seq` and `line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// With `--shard K/N`: K, the shard that fetched this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// In-process only (never written): another page of this line follows this record.
    #[serde(skip)]
    pub more_pages: bool,
}

/// A body written to `--save-dir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Saved {
    /// The file's path (`--save-dir` joined with the file name).
    pub path: String,
    /// Bytes written.
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes written.
    pub sha256: String,
}

impl Record {
    /// A record for a line that never became a request.
    pub(crate) fn input_error(
        seq: u64,
        line: u64,
        url: String,
        kind: ErrorKind,
        message: String,
    ) -> Record {
        Record {
            seq,
            line,
            url,
            ok: false,
            status: None,
            started_ms: None,
            elapsed_ms: None,
            bytes: None,
            content_type: None,
            body: None,
            body_encoding: None,
            body_note: None,
            error: Some(RecordError::new(kind, message)),
            attempts: None,
            id: None,
            headers: None,
            saved: None,
            host_rate: None,
            round: None,
            at: None,
            changed: None,
            not_modified: None,
            extract: None,
            page: None,
            shard: None,
            more_pages: false,
        }
    }
}

/// Why a record is not ok.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct RecordError {
    /// The failure class (see `docs/output.md`).
    pub kind: ErrorKind,
    /// What went wrong, on one line, credentials masked.
    pub message: String,
    /// Whether this kind of failure (with this status) is one fetchall retries. On a final
    /// record, `true` means the retries ran out, were not allowed for the method, the server
    /// asked to wait longer than `--max-retry-wait`, or the run was stopping.
    #[serde(default)]
    pub retryable: bool,
    /// The errors of earlier attempts, oldest first (at most four).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousError>,
}

/// How many earlier attempts' errors a record keeps.
pub(crate) const MAX_PREVIOUS: usize = 4;

impl RecordError {
    /// An error that is not retryable, with no earlier attempts. The message is put on one
    /// line (CR, LF and other control characters escaped).
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> RecordError {
        let message = message.into();
        RecordError {
            kind,
            message: crate::redact::one_line(&message).into_owned(),
            retryable: false,
            previous: Vec::new(),
        }
    }
}

/// An earlier attempt's failure, kept in the final record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct PreviousError {
    /// The failure class.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// The HTTP status, when the attempt got a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The failure classes a record can carry; documented one by one in `docs/output.md`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input line is not an absolute http(s) URL.
    InvalidUrl,
    /// The host name did not resolve.
    Dns,
    /// No TCP connection (refused, unreachable, connect timeout).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The whole-request timeout expired.
    Timeout,
    /// The server answered with a status of 400 or more.
    HttpStatus,
    /// A redirect that is not followed: more than `--max-redirects`, a loop, a `Location`
    /// that is not a URL, or a target that is not http(s) (`file:`, `data:`, `ftp:`).
    Redirect,
    /// The peer did not speak valid HTTP.
    Protocol,
    /// The connection failed while the body was being read.
    Body,
    /// The body could not be decompressed.
    Decode,
    /// The body is larger than `--max-body`.
    TooLarge,
    /// The run was stopped before this request finished.
    Cancelled,
    /// A JSON spec line is not a valid request (bad JSON, unknown key, bad header).
    InvalidSpec,
    /// The body could not be written to `--save-dir`.
    Save,
    /// `--assert`'s filter yielded false, null or nothing on the body.
    Assertion,
    /// A jq filter (`--extract`, `--body-filter`, `--assert`, `--next`) failed on the body, or
    /// the body is not JSON.
    Filter,
    /// Pagination led back to a URL the line already fetched (a page loop).
    PageLoop,
}

impl ErrorKind {
    /// The kind's name as records spell it (`invalid_url`, `too_large`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// How `body` holds the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BodyEncoding {
    /// `body` is the parsed JSON value of the response.
    Json,
    /// `body` is the response text (it was valid UTF-8).
    Text,
    /// `body` is the standard base64 of the raw bytes.
    Base64,
}

/// What to put in `body` (`--body`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantNames,
    strum::Display,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
#[non_exhaustive]
pub enum BodyMode {
    /// JSON when the response is JSON, text when it is UTF-8, base64 otherwise.
    #[default]
    Auto,
    /// Parsed JSON; a body that does not parse falls back to text or base64.
    Json,
    /// Text when UTF-8, base64 otherwise.
    Text,
    /// Always base64.
    Base64,
    /// Leave the body out (its size is still in `bytes`).
    None,
}

impl BodyMode {
    /// The mode's name, as `--body` takes it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A response body as a record holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncodedBody {
    pub value: Value,
    pub encoding: BodyEncoding,
    /// Why a body expected to be JSON is not embedded as JSON.
    pub note: Option<String>,
}

/// Turn raw body bytes into the record's `body`, `body_encoding` and `body_note` fields. JSON
/// is embedded up to [`json::MAX_DEPTH`] levels deep; a deeper document is kept as text
/// (or base64), with a note saying why.
pub(crate) fn encode_body(
    mode: BodyMode,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Option<EncodedBody> {
    let try_json = match mode {
        BodyMode::None => return None,
        BodyMode::Auto => content_type.is_some_and(is_json_type),
        BodyMode::Json => true,
        BodyMode::Text | BodyMode::Base64 => false,
    };
    let mut note = None;
    if try_json {
        match json::parse::<Value>(bytes, json::MAX_DEPTH) {
            Ok(value) => {
                return Some(EncodedBody {
                    value,
                    encoding: BodyEncoding::Json,
                    note: None,
                });
            }
            Err(json::Refused::TooDeep) => {
                note = Some(format!(
                    "the JSON nests deeper than {} levels; kept as",
                    json::MAX_DEPTH
                ));
            }
            Err(json::Refused::Invalid(e)) => {
                note = Some(format!("not valid JSON ({e}); kept as"));
            }
        }
    }
    let noted = |kind: &str| note.as_ref().map(|n| format!("{n} {kind}"));
    if mode != BodyMode::Base64
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return Some(EncodedBody {
            value: Value::String(text.to_owned()),
            encoding: BodyEncoding::Text,
            note: noted("text"),
        });
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    Some(EncodedBody {
        value: Value::String(b64),
        encoding: BodyEncoding::Base64,
        note: noted("base64"),
    })
}

/// `application/json`, `application/problem+json`, `text/json`, with or without parameters.
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_text_or_base64_as_the_mode_says() {
        let json = br#"{"a": [1, 2]}"#;
        let enc = |mode, ct, bytes| {
            let e = encode_body(mode, ct, bytes).unwrap();
            (e.value, e.encoding, e.note)
        };
        let (v, e, n) = enc(
            BodyMode::Auto,
            Some("application/json; charset=utf-8"),
            json,
        );
        assert_eq!((e, n), (BodyEncoding::Json, None));
        assert_eq!(v["a"][1], 2);
        let (v, e, n) = enc(BodyMode::Auto, Some("text/plain"), json);
        assert_eq!((e, n), (BodyEncoding::Text, None));
        assert_eq!(v, Value::String(r#"{"a": [1, 2]}"#.into()));
        let (_, e, _) = enc(BodyMode::Auto, None, &[0xff, 0x00]);
        assert_eq!(e, BodyEncoding::Base64);
        let (v, e, n) = enc(BodyMode::Json, Some("application/json"), b"{nope");
        assert_eq!((v, e), (Value::String("{nope".into()), BodyEncoding::Text));
        assert!(n.unwrap().starts_with("not valid JSON"));
        assert!(encode_body(BodyMode::None, None, b"x").is_none());
        assert!(is_json_type("application/problem+json"));
        assert_eq!("base64".parse::<BodyMode>().unwrap(), BodyMode::Base64);
    }

    #[test]
    fn deep_json_is_embedded_to_the_limit_then_kept_as_text_with_a_note() {
        let doc = |levels: usize| format!("{}0{}", "[".repeat(levels), "]".repeat(levels));
        let ok = encode_body(
            BodyMode::Auto,
            Some("application/json"),
            doc(200).as_bytes(),
        )
        .unwrap();
        assert_eq!((ok.encoding, ok.note), (BodyEncoding::Json, None));
        let deep = encode_body(
            BodyMode::Auto,
            Some("application/json"),
            doc(100_000).as_bytes(),
        )
        .unwrap();
        assert_eq!(deep.encoding, BodyEncoding::Text);
        assert!(deep.note.unwrap().contains("deeper than 256"));
        let big = encode_body(
            BodyMode::Json,
            None,
            b"{\"n\": 123456789012345678901234567890}",
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&big.value).unwrap(),
            r#"{"n":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn messages_are_one_line() {
        let e = RecordError::new(ErrorKind::Protocol, "bad\r\nX-Evil: 1");
        assert_eq!(e.message, "bad\\r\\nX-Evil: 1");
    }

    #[test]
    fn error_kind_names_match_their_serde_names() {
        use strum::VariantArray;
        for kind in ErrorKind::VARIANTS {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json.as_str().unwrap(), kind.as_str());
            assert_eq!(kind.as_str().parse::<ErrorKind>().unwrap(), *kind);
        }
    }
}
