//! One attempt at one request: send it, follow its redirects, read the body within
//! `--max-body`, and describe what came back as an [`Outcome`]. Whether to try again is not
//! decided here (that is `retry`).

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use reqwest::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, LAST_MODIFIED,
    RETRY_AFTER,
};
use reqwest::{Method, StatusCode};

use super::classify::{describe, timed_out};
use super::client::Clients;
use super::redirect::{self, Hop, Next};
use crate::limit::{Budget, budget};
use crate::record::{ErrorKind, RecordError};
use crate::redact::Redactor;
use crate::request::Request;
use crate::settings::Settings;

/// What one attempt produced, before it becomes a record.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: Option<u16>,
    /// Response headers, with `--headers`.
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    pub bytes: Option<u64>,
    pub error: Option<RecordError>,
    /// The response's `Retry-After` header, for the retry policy.
    pub retry_after: Option<String>,
    /// When polling: the response's `ETag` and `Last-Modified`, for the state.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The host's budget, as the response's quota headers announce it (when they are read).
    pub budget: Option<Budget>,
    /// The response's `Link` header values, joined with commas (for pagination).
    pub link: Option<String>,
}

/// A response header's value, when it is text.
fn header(response: &reqwest::Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_owned)
}

impl Outcome {
    /// What the response's status line and headers say, before the body is read.
    fn of_head(response: &reqwest::Response, settings: &Settings) -> Outcome {
        let with_headers = settings.response_headers;
        let validator = |name| settings.polling().then(|| header(response, name)).flatten();
        Outcome {
            status: Some(response.status().as_u16()),
            headers: with_headers.then(|| header_map(response.headers())),
            content_type: header(response, CONTENT_TYPE),
            body: None,
            bytes: None,
            error: None,
            retry_after: header(response, RETRY_AFTER),
            etag: validator(ETAG),
            last_modified: validator(LAST_MODIFIED),
            budget: (settings.quota_headers && may_hold_budget(response.headers()))
                .then(|| budget(response.headers(), SystemTime::now()))
                .flatten(),
            link: link(response.headers()),
        }
    }

    pub(crate) fn failed(error: RecordError) -> Outcome {
        Outcome {
            status: None,
            headers: None,
            content_type: None,
            body: None,
            bytes: None,
            error: Some(error),
            retry_after: None,
            etag: None,
            last_modified: None,
            budget: None,
            link: None,
        }
    }
}

/// Whether any header's name could be a quota header: every one `budget` reads starts with
/// `ratelimit` or `x-ratelimit` (names are lower case here). Most responses have none, and
/// skip the parsing (several name lookups and allocations) and the clock.
fn may_hold_budget(headers: &reqwest::header::HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("ratelimit") || name.starts_with("x-ratelimit")
    })
}

/// Every `Link` header value that is text, joined with commas (RFC 8288 allows either form).
fn link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Response headers as lower-case name -> values (in the order received); a repeated header
/// such as Set-Cookie keeps every value. A value that is not UTF-8 is shown lossily.
fn header_map(headers: &reqwest::header::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        map.entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    map
}

/// Make one attempt at `request`: send it, follow its redirects (see `redirect`), read the
/// body. `--timeout` covers the whole attempt, every hop and the body. `last`: no other
/// request to its host is known to come, so its connection is not kept (see `Hop::build`).
pub(crate) async fn attempt(
    client: &Clients,
    settings: &Settings,
    redactor: &Redactor,
    request: &Request,
    last: bool,
) -> Outcome {
    let started = Instant::now();
    let mut hop = Hop::first(request);
    let mut followed = 0u32;
    let mut response = loop {
        let remaining = settings.timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Outcome::failed(timed_out(settings, "after a redirect"));
        }
        let sent = hop.build(client, last).timeout(remaining).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                let urls = [&request.url, &*hop.url];
                return Outcome::failed(describe(&e, settings, started, &urls, redactor));
            }
        };
        match redirect::next(&response, &hop, &request.url, followed, settings, redactor) {
            Next::Done => break response,
            Next::Follow(next) => {
                hop = *next;
                followed += 1;
            }
            Next::Refuse(message) => {
                let mut outcome = Outcome::of_head(&response, settings);
                outcome.error = Some(RecordError::new(ErrorKind::Redirect, message));
                return outcome;
            }
        }
    };
    let status = response.status();
    let mut outcome = Outcome::of_head(&response, settings);
    // HEAD, 1xx, 204 and 304 have no body, whatever their Content-Length says: nothing to
    // limit, and `bytes` is 0.
    let bodiless = hop.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // A declared length over the limit fails without reading (only when the body is not
    // compressed: a compressed body's declared length says nothing about its decoded size).
    let declared = header(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && !bodiless
        && len > settings.max_body
        && response.headers().get(CONTENT_ENCODING).is_none()
    {
        outcome.error = Some(RecordError::new(
            ErrorKind::TooLarge,
            format!(
                "body of {len} bytes is over --max-body {}",
                settings.max_body
            ),
        ));
        return outcome;
    }
    let declared = declared.filter(|_| !bodiless);

    match read_body(&mut response, declared, settings.max_body).await {
        Ok(body) => {
            outcome.bytes = Some(body.len() as u64);
            outcome.body = Some(body);
        }
        Err((bytes, BodyError::TooLarge)) => {
            outcome.bytes = Some(bytes);
            outcome.error = Some(RecordError::new(
                ErrorKind::TooLarge,
                format!(
                    "body is over --max-body {} bytes (after decompression); reading stopped",
                    settings.max_body
                ),
            ));
            return outcome;
        }
        Err((bytes, BodyError::Failed(e))) => {
            outcome.bytes = Some(bytes);
            let urls = [&request.url, &*hop.url];
            outcome.error = Some(describe(&e, settings, started, &urls, redactor));
            return outcome;
        }
    }
    if status.as_u16() >= 400 {
        outcome.error = Some(RecordError::new(
            ErrorKind::HttpStatus,
            format!("HTTP {status}"),
        ));
    }
    outcome
}

/// Why a body was not read to its end.
enum BodyError {
    /// It is over `--max-body`.
    TooLarge,
    /// The connection or the decoder failed.
    Failed(reqwest::Error),
}

/// Read the body, at most `max` bytes. On failure, how many bytes had arrived, and why.
///
/// reqwest decompresses inside the body stream, so every chunk counted here is decoded bytes:
/// a small gzip that inflates to gigabytes stops at `max`, holding at most `max` plus one
/// decoder chunk.
async fn read_body(
    response: &mut reqwest::Response,
    declared: Option<u64>,
    max: u64,
) -> Result<Vec<u8>, (u64, BodyError)> {
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max).min(1 << 20) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let total = body.len() as u64 + chunk.len() as u64;
                if total > max {
                    return Err((total, BodyError::TooLarge));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err((body.len() as u64, BodyError::Failed(e))),
        }
    }
}
