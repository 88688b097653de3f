//! Fetch: make one request and describe what happened as a [`Record`].
//!
//! A failure of one URL is data, not control flow: every outcome, good or bad, comes back as a
//! record, with the error classified into an [`ErrorKind`] by walking the error's source chain.
//! This module does not decide when a request may start (that is `limit`/`scheduler`).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::config::Settings;
use crate::input::Request;
use crate::record::{ErrorKind, Record, RecordError, encode_body};
use crate::resolve::{DnsError, SystemResolver};
use crate::save;

/// Build the one HTTP client a run shares (connection pool, timeouts, redirects, TLS, proxy).
pub fn client(settings: &Settings) -> Result<reqwest::Client, reqwest::Error> {
    let redirect = match settings.max_redirects {
        0 => reqwest::redirect::Policy::none(),
        n => reqwest::redirect::Policy::limited(n as usize),
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .pool_max_idle_per_host(settings.concurrency.get())
        .redirect(redirect)
        .tcp_nodelay(true)
        .danger_accept_invalid_certs(settings.insecure)
        .dns_resolver(Arc::new(SystemResolver));
    // Without --proxy, reqwest reads HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY itself;
    // an explicit proxy replaces those, but NO_PROXY still applies to it (as with curl).
    if let Some(proxy) = &settings.proxy {
        builder = builder
            .proxy(reqwest::Proxy::all(proxy.as_str())?.no_proxy(reqwest::NoProxy::from_env()));
    }
    builder.build()
}

/// The reqwest request for `request` (already completed by the template: its method and
/// headers are final). Kept apart from sending so a retry can build the same request again.
pub fn build_request(client: &reqwest::Client, request: &Request) -> reqwest::RequestBuilder {
    let method = request.method.clone().unwrap_or(reqwest::Method::GET);
    let mut builder = client
        .request(method, request.url.clone())
        .headers(request.headers.clone());
    if let Some(body) = &request.body {
        builder = builder.body(body.bytes());
    }
    builder
}

/// What one attempt produced, before it becomes a record.
struct Outcome {
    status: Option<u16>,
    headers: Option<BTreeMap<String, Vec<String>>>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    bytes: Option<u64>,
    error: Option<RecordError>,
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
    let started = Instant::now();
    let mut outcome = attempt(client, settings, request).await;
    let elapsed = started.elapsed();
    let mut saved = None;
    if let (Some(dir), Some(bytes)) = (&settings.save_dir, &outcome.body) {
        match save::write(dir, seq, request.id.as_ref(), bytes).await {
            Ok(s) => saved = Some(s),
            Err(e) => {
                // A body we could not keep is a failed record even when the response was
                // fine: the user asked for the file.
                outcome.error.get_or_insert(RecordError {
                    kind: ErrorKind::Save,
                    message: e,
                });
            }
        }
    }
    let body = outcome
        .body
        .as_deref()
        .and_then(|b| encode_body(settings.body, outcome.content_type.as_deref(), b));
    let (body, body_encoding) = body.map_or((None, None), |(v, e)| (Some(v), Some(e)));
    Record {
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
        id: request.id.clone(),
        headers: outcome.headers,
        saved,
    }
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

async fn attempt(client: &reqwest::Client, settings: &Settings, request: &Request) -> Outcome {
    let mut outcome = Outcome {
        status: None,
        headers: None,
        content_type: None,
        body: None,
        bytes: None,
        error: None,
    };
    let mut response = match build_request(client, request).send().await {
        Ok(r) => r,
        Err(e) => {
            outcome.error = Some(describe(&e));
            return outcome;
        }
    };
    let status = response.status();
    outcome.status = Some(status.as_u16());
    if settings.response_headers {
        outcome.headers = Some(header_map(response.headers()));
    }
    outcome.content_type = response
        .headers()
        .get(CONTENT_TYPE)
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
            // An io::Error's `source()` skips the error it wraps: look inside it, or a failed
            // certificate check (rustls, wrapped in io::Error by the connector) reads as
            // `connect`.
            if wraps_tls_error(io) {
                return ErrorKind::Tls;
            }
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

/// Whether a rustls error hides inside `io` (hyper-rustls wraps it in an io::Error that
/// another io::Error wraps in turn; `source()` walks past both wrappers' payloads).
fn wraps_tls_error(io: &std::io::Error) -> bool {
    let mut inner: Option<&(dyn StdError + 'static)> = io.get_ref().map(|e| e as _);
    while let Some(e) = inner {
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|e| e as _),
            None => e.source(),
        };
    }
    false
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

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
