//! Fetch: make one request and describe what happened as a [`Record`].
//!
//! A failure of one URL is data, not control flow: every outcome, good or bad, comes back as a
//! record, with the error classified into an [`ErrorKind`] by walking the error's source chain.
//! This module makes one attempt; it does not decide when a request may start or whether to
//! try again (that is `limit`/`scheduler` and `retry`).

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use crate::config::Settings;
use crate::input::Request;
use crate::record::{ErrorKind, Record, RecordError, Saved, encode_body};
use crate::resolve::{DnsError, SystemResolver};
use crate::units::HumanDuration;

/// Build the one HTTP client a run shares (connection pool, timeouts, redirects, TLS, proxy).
///
/// Redirects: reqwest drops `Authorization`, `Cookie` and `Proxy-Authorization` when a
/// redirect leaves the origin (a different scheme, host or port), so credentials never follow
/// a redirect to another host (`reqwest::redirect::remove_sensitive_headers`; tested in
/// `tests/cli/security.rs`).
pub fn client(settings: &Settings) -> Result<reqwest::Client, crate::Error> {
    let user_agent = header_value("User-Agent", &settings.user_agent)?;
    if settings.insecure {
        tracing::warn!(
            "--insecure: TLS certificates are NOT verified; anyone on the path can read and change these requests"
        );
    }
    // --max-redirects 0 turns following off: the 3xx itself is the response.
    let redirect = match settings.max_redirects {
        0 => reqwest::redirect::Policy::none(),
        n => reqwest::redirect::Policy::limited(n as usize),
    };
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.read_timeout)
        .pool_max_idle_per_host(settings.concurrency.get())
        .redirect(redirect)
        // fetchall retries by its own rules (retry.rs), each retry paced by the gate; reqwest's
        // own retry layer (HTTP/2 refusals, with a budget to keep) would retry behind its back.
        .retry(reqwest::retry::never())
        .tcp_nodelay(true)
        .danger_accept_invalid_certs(settings.insecure)
        .dns_resolver(Arc::new(SystemResolver));
    // Without --proxy, reqwest reads HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY itself;
    // an explicit proxy replaces those, but NO_PROXY still applies to it (as with curl).
    if let Some(proxy) = &settings.proxy {
        let proxy = reqwest::Proxy::all(proxy.as_str())
            .map_err(|e| crate::Error::Usage(format!("--proxy {proxy}: {}", chain_message(&e))))?
            .no_proxy(reqwest::NoProxy::from_env());
        builder = builder.proxy(proxy);
    }
    Ok(builder.build()?)
}

/// The reqwest request for `request`, already completed by the flags' template (its method,
/// headers and body are final). Every attempt, the first and each retry, builds it here.
pub fn build_request(client: &reqwest::Client, request: &Request) -> reqwest::RequestBuilder {
    let mut builder = client
        .request(method(request), request.url.clone())
        .headers(request.headers.clone());
    if let Some(body) = &request.body {
        builder = builder.body(body.bytes());
    }
    builder
}

/// A header value from user input, or why it cannot be sent. CR and LF are refused here,
/// before anything is sent, so a value can never smuggle in another header line; other
/// control characters are refused too (RFC 9110 §5.5). Every user-supplied header goes
/// through this function.
pub fn header_value(name: &str, value: &str) -> Result<HeaderValue, crate::Error> {
    if value.contains(['\r', '\n']) {
        return Err(crate::Error::Header(format!(
            "the {name} header value contains a line break (CR or LF)"
        )));
    }
    HeaderValue::from_str(value).map_err(|_| {
        crate::Error::Header(format!(
            "the {name} header value contains a control character"
        ))
    })
}

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

/// The method a request is sent with (the retry policy depends on it): the spec's or the
/// flags' (the template fills it in), GET when neither says.
pub(crate) fn method(request: &Request) -> Method {
    request.method.clone().unwrap_or(Method::GET)
}

/// Turn the last attempt's outcome into the line's record. `first_start` is when the first
/// attempt started; `elapsed_ms` runs from there to the end of the last attempt.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    settings: &Settings,
    run_start: Instant,
    first_start: Instant,
    seq: u64,
    line: u64,
    request: &Request,
    outcome: Outcome,
    attempts: u32,
    saved: Option<Saved>,
) -> Record {
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
        started_ms: Some(millis(first_start.saturating_duration_since(run_start))),
        elapsed_ms: Some(millis(first_start.elapsed())),
        bytes: outcome.bytes,
        content_type: outcome.content_type,
        body,
        body_encoding,
        error: outcome.error,
        attempts: Some(attempts),
        id: request.id.clone(),
        headers: outcome.headers,
        saved,
        host_rate: None,
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

/// Classify a reqwest error and give it a one-line message, with the URL's credentials masked.
fn describe(
    err: &reqwest::Error,
    settings: &Settings,
    started: Instant,
    request: &Request,
) -> RecordError {
    let kind = classify(err);
    // reqwest's own top line repeats the URL (which the record already has, masked); the
    // causes below it say what went wrong.
    let mut message = match err.source() {
        Some(cause) => chain_message(cause),
        None => err.to_string(),
    };
    if kind == ErrorKind::Timeout {
        // Both timeouts look alike in reqwest; the time taken tells them apart.
        let which = if started.elapsed() + Duration::from_millis(50) >= settings.timeout {
            format!(
                "no complete response within --timeout {}",
                HumanDuration(settings.timeout)
            )
        } else {
            format!(
                "no data for --read-timeout {}",
                HumanDuration(settings.read_timeout)
            )
        };
        message = format!("{which} ({message})");
    }
    RecordError::new(kind, mask_secrets(message, &request.url))
}

/// Walk the source chain: reqwest's own flags are coarse (a reset mid-body is a "decode"
/// error, a refused connection and a failed TLS handshake are both "connect").
pub fn classify(err: &reqwest::Error) -> ErrorKind {
    // Markers that settle the kind wherever they sit in the chain.
    for e in chain(err) {
        if e.is::<DnsError>() {
            return ErrorKind::Dns;
        }
        if e.is::<rustls::Error>() {
            return ErrorKind::Tls;
        }
    }
    if err.is_redirect() {
        return ErrorKind::Redirect;
    }
    // Refused, unreachable, or the connect timeout: no connection was made.
    if err.is_connect() {
        return ErrorKind::Connect;
    }
    if err.is_timeout() {
        return ErrorKind::Timeout;
    }
    for e in chain(err) {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return ErrorKind::Protocol;
            }
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
            if h.is_incomplete_message() || h.is_body_write_aborted() || h.is_canceled() {
                return ErrorKind::Body;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as Io;
            match io.kind() {
                Io::TimedOut => return ErrorKind::Timeout,
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::UnexpectedEof
                | Io::BrokenPipe => return ErrorKind::Body,
                _ => {}
            }
        }
    }
    if err.is_decode() {
        // What is left of a decode error is the decompressor refusing the bytes.
        ErrorKind::Decode
    } else if err.is_body() {
        ErrorKind::Body
    } else {
        ErrorKind::Protocol
    }
}

/// The error and every cause below it. `io::Error::source` skips the error it wraps (it
/// returns that error's source), so a wrapped error is visited explicitly: that is where
/// rustls, hyper and the resolver put theirs.
fn chain(err: &reqwest::Error) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    let mut next: Option<&(dyn StdError + 'static)> = err.source();
    let mut pending_inner: Option<&(dyn StdError + 'static)> = None;
    std::iter::from_fn(move || {
        let current = pending_inner.take().or_else(|| next.take())?;
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            let inner: &(dyn StdError + 'static) = inner;
            pending_inner = Some(inner);
            next = None;
        } else {
            next = current.source();
        }
        Some(current)
    })
}

/// The secret part of a URL's userinfo: the password, or a user name alone (the way tokens
/// are often passed: `https://TOKEN@host/`).
fn secret(url: &url::Url) -> Option<&str> {
    match url.password() {
        Some(p) => Some(p),
        None if !url.username().is_empty() => Some(url.username()),
        None => None,
    }
}

/// Mask the URL's secret wherever it appears in `message`, as written in the URL and
/// percent-decoded (a cause's text may quote the URL or a value built from it).
fn mask_secrets(message: String, url: &url::Url) -> String {
    let Some(secret) = secret(url) else {
        return message;
    };
    let mut message = message.replace(secret, "****");
    let decoded: String = url::form_urlencoded::parse(format!("s={secret}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect();
    if !decoded.is_empty() && decoded != secret {
        message = message.replace(&decoded, "****");
    }
    message
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

/// The URL as shown in records and logs: a password, or a user name standing alone (a
/// token), is masked as `****`.
pub fn display_url(url: &url::Url) -> String {
    let mut masked = url.clone();
    if url.password().is_some() {
        let _ = masked.set_password(Some("****"));
    } else if !url.username().is_empty() {
        let _ = masked.set_username("****");
    } else {
        return url.to_string();
    }
    masked.to_string()
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
