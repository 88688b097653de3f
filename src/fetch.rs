//! Fetch: make one request and describe what happened as a [`Record`].
//!
//! A failure of one URL is data, not control flow: every outcome, good or bad, comes back as a
//! record, with the error classified into an [`ErrorKind`] by walking the error's source chain.
//! This module does not decide when a request may start (that is `limit`/`scheduler`).

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};

use crate::config::Settings;
use crate::input::Request;
use crate::record::{ErrorKind, Record, RecordError, encode_body};
use crate::resolve::{DnsError, SystemResolver};

/// Build the one HTTP client a run shares (connection pool, timeouts, redirects).
pub fn client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_max_idle_per_host(settings.concurrency.get())
        .redirect(reqwest::redirect::Policy::limited(10))
        .tcp_nodelay(true)
        .dns_resolver(Arc::new(SystemResolver))
        .build()
}

/// What one attempt produced, before it becomes a record.
struct Outcome {
    status: Option<u16>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    bytes: Option<u64>,
    error: Option<RecordError>,
    /// The response's `Retry-After` header, for host pushback.
    retry_after: Option<String>,
}

/// Fetch `request` and describe it. `run_start` anchors `started_ms`.
pub async fn fetch(
    client: &reqwest::Client,
    settings: &Settings,
    run_start: Instant,
    seq: u64,
    line: u64,
    request: &Request,
) -> Record {
    fetch_with_retry_after(client, settings, run_start, seq, line, request)
        .await
        .0
}

/// [`fetch`], also returning the response's `Retry-After` header (the gate pauses a host
/// that answers 429 or 503 with one).
pub async fn fetch_with_retry_after(
    client: &reqwest::Client,
    settings: &Settings,
    run_start: Instant,
    seq: u64,
    line: u64,
    request: &Request,
) -> (Record, Option<String>) {
    let started = Instant::now();
    let mut outcome = attempt(client, settings, request).await;
    let retry_after = outcome.retry_after.take();
    let elapsed = started.elapsed();
    let body = outcome
        .body
        .as_deref()
        .and_then(|b| encode_body(settings.body, outcome.content_type.as_deref(), b));
    let (body, body_encoding) = body.map_or((None, None), |(v, e)| (Some(v), Some(e)));
    let record = Record {
        seq,
        line,
        url: display_url(&request.url),
        ok: outcome.error.is_none(),
        status: outcome.status,
        started_ms: Some(millis(started.saturating_duration_since(run_start))),
        elapsed_ms: Some(millis(elapsed)),
        bytes: outcome.bytes,
        content_type: outcome.content_type,
        body,
        body_encoding,
        error: outcome.error,
        host_rate: None,
    };
    (record, retry_after)
}

async fn attempt(client: &reqwest::Client, settings: &Settings, request: &Request) -> Outcome {
    let mut outcome = Outcome {
        status: None,
        content_type: None,
        body: None,
        bytes: None,
        error: None,
        retry_after: None,
    };
    let mut response = match client.get(request.url.clone()).send().await {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(describe(&e));
            return outcome;
        }
    };
    let status = response.status();
    outcome.status = Some(status.as_u16());
    outcome.content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    outcome.retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // A declared length over the limit fails without reading (only when the body is not
    // compressed: a compressed body's declared length says nothing about its decoded size).
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > settings.max_body
        && response
            .headers()
            .get(reqwest::header::CONTENT_ENCODING)
            .is_none()
    {
        outcome.error = Some(RecordError {
            kind: ErrorKind::TooLarge,
            message: format!(
                "body of {len} bytes is over --max-body {}",
                settings.max_body
            ),
        });
        return outcome;
    }

    let mut body =
        Vec::with_capacity(declared.unwrap_or(0).min(settings.max_body).min(1 << 20) as usize);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() as u64 + chunk.len() as u64 > settings.max_body {
                    outcome.bytes = Some(body.len() as u64 + chunk.len() as u64);
                    outcome.error = Some(RecordError {
                        kind: ErrorKind::TooLarge,
                        message: format!(
                            "body is over --max-body {} bytes; reading stopped",
                            settings.max_body
                        ),
                    });
                    return outcome;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                outcome.bytes = Some(body.len() as u64);
                outcome.error = Some(describe(&e));
                return outcome;
            }
        }
    }
    outcome.bytes = Some(body.len() as u64);
    outcome.body = Some(body);
    if status.as_u16() >= 400 {
        outcome.error = Some(RecordError {
            kind: ErrorKind::HttpStatus,
            message: format!("HTTP {status}"),
        });
    }
    outcome
}

/// Classify a reqwest error and give it a one-line message.
fn describe(err: &reqwest::Error) -> RecordError {
    // reqwest's own top line repeats the URL (which the record already has, masked); the
    // causes below it say what went wrong.
    let message = match err.source() {
        Some(cause) => chain_message(cause),
        None => err.to_string(),
    };
    RecordError {
        kind: classify(err),
        message,
    }
}

/// Walk the source chain: reqwest's own flags are coarse (a reset mid-body is a "decode"
/// error, a refused connection and a failed TLS handshake are both "connect").
pub fn classify(err: &reqwest::Error) -> ErrorKind {
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    if err.is_redirect() {
        return ErrorKind::Redirect;
    }
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if e.is::<DnsError>() {
            return ErrorKind::Dns;
        }
        if e.is::<rustls::Error>() {
            return ErrorKind::Tls;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return ErrorKind::Protocol;
            }
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
            if h.is_incomplete_message() || h.is_body_write_aborted() {
                return ErrorKind::Body;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::TimedOut => return ErrorKind::Timeout,
                Io::InvalidData if err.is_decode() => return ErrorKind::Decode,
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::UnexpectedEof
                | Io::BrokenPipe
                    if !err.is_connect() =>
                {
                    return ErrorKind::Body;
                }
                _ => {}
            }
        }
        source = e.source();
    }
    if err.is_dns() {
        ErrorKind::Dns
    } else if err.is_connect() {
        ErrorKind::Connect
    } else if err.is_decode() {
        ErrorKind::Decode
    } else if err.is_body() {
        ErrorKind::Body
    } else {
        ErrorKind::Protocol
    }
}

/// The error and its causes on one line, without repeating a cause already in its parent's
/// text (reqwest and hyper often embed their source's message).
fn chain_message(err: &(dyn StdError + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = e.source();
    }
    message
}

/// The URL as shown in records and logs: any password is masked.
pub fn display_url(url: &url::Url) -> String {
    if url.password().is_some() {
        let mut masked = url.clone();
        let _ = masked.set_password(Some("****"));
        masked.to_string()
    } else {
        url.to_string()
    }
}

pub(crate) fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
