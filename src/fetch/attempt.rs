//! One attempt at one request: send it, read the body within `--max-body`, and describe what
//! came back as an [`Outcome`]. Whether to try again is not decided here (that is `retry`).

use std::collections::BTreeMap;
use std::time::Instant;

use reqwest::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::classify::describe;
use crate::record::{ErrorKind, RecordError};
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
}

impl Outcome {
    pub(crate) fn failed(error: RecordError) -> Outcome {
        Outcome {
            status: None,
            headers: None,
            content_type: None,
            body: None,
            bytes: None,
            error: Some(error),
            retry_after: None,
        }
    }
}

/// The reqwest request for `request`, already completed by the flags' template (its method,
/// headers and body are final). Every attempt, the first and each retry, builds it here.
fn build_request(client: &reqwest::Client, request: &Request) -> reqwest::RequestBuilder {
    let mut builder = client
        .request(request.method(), request.url.clone())
        .headers(request.headers.clone());
    if let Some(body) = &request.body {
        builder = builder.body(body.bytes());
    }
    builder
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

/// Make one attempt at `request`.
pub(crate) async fn attempt(
    client: &reqwest::Client,
    settings: &Settings,
    request: &Request,
) -> Outcome {
    let started = Instant::now();
    let mut response = match build_request(client, request).send().await {
        Ok(r) => r,
        Err(e) => return Outcome::failed(describe(&e, settings, started, request)),
    };
    let status = response.status();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut outcome = Outcome {
        status: Some(status.as_u16()),
        headers: settings
            .response_headers
            .then(|| header_map(response.headers())),
        content_type: header(CONTENT_TYPE),
        body: None,
        bytes: None,
        error: None,
        retry_after: header(RETRY_AFTER),
    };

    // A declared length over the limit fails without reading (only when the body is not
    // compressed: a compressed body's declared length says nothing about its decoded size).
    let declared = header(CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
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

    // reqwest decompresses inside the body stream, so every chunk counted here is decoded
    // bytes: a small gzip that inflates to gigabytes stops at --max-body, holding at most
    // --max-body plus one decoder chunk.
    let mut body =
        Vec::with_capacity(declared.unwrap_or(0).min(settings.max_body).min(1 << 20) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > settings.max_body {
                    outcome.bytes = Some(body.len() as u64 + chunk.len() as u64);
                    outcome.error = Some(RecordError::new(
                        ErrorKind::TooLarge,
                        format!(
                            "body is over --max-body {} bytes (after decompression); reading stopped",
                            settings.max_body
                        ),
                    ));
                    return outcome;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                outcome.bytes = Some(body.len() as u64);
                outcome.error = Some(describe(&e, settings, started, request));
                return outcome;
            }
        }
    }
    outcome.bytes = Some(body.len() as u64);
    outcome.body = Some(body);
    if status.as_u16() >= 400 {
        outcome.error = Some(RecordError::new(
            ErrorKind::HttpStatus,
            format!("HTTP {status}"),
        ));
    }
    outcome
}
