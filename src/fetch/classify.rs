//! Error classification: a reqwest error becomes an [`ErrorKind`] and a one-line message.
//!
//! reqwest's own flags are coarse (a reset mid-body is a "decode" error, a refused connection
//! and a failed TLS handshake are both "connect"), so the kind comes from walking the error's
//! source chain. Messages have the URL's credentials masked.

use std::error::Error as StdError;
use std::time::{Duration, Instant};

use url::Url;

use super::resolve::DnsError;
use crate::record::{ErrorKind, RecordError};
use crate::redact::Redactor;
use crate::settings::Settings;
use crate::units::HumanDuration;

/// Classify a reqwest error and give it a one-line message, with the secrets of `urls` (the
/// request's URL, and the hop that failed) masked.
pub(super) fn describe(
    err: &reqwest::Error,
    settings: &Settings,
    started: Instant,
    urls: &[&Url],
    redactor: &Redactor,
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
    RecordError::new(kind, redactor.message(message, urls))
}

/// The error of an attempt whose `--timeout` ran out between two requests of its chain.
pub(super) fn timed_out(settings: &Settings, when: &str) -> RecordError {
    RecordError::new(
        ErrorKind::Timeout,
        format!(
            "no complete response within --timeout {} ({when})",
            HumanDuration(settings.timeout)
        ),
    )
}

/// Walk the source chain: reqwest's own flags are coarse (a reset mid-body is a "decode"
/// error, a refused connection and a failed TLS handshake are both "connect").
pub(crate) fn classify(err: &reqwest::Error) -> ErrorKind {
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
    // Below hyper, an I/O error of kind InvalidData/InvalidInput is the HTTP framing that
    // broke (a bad chunk size line): the peer did not speak valid HTTP. (A decompressor's
    // complaint never has hyper above it.)
    let mut under_hyper = false;
    for e in chain(err) {
        if e.is::<hyper::Error>() {
            under_hyper = true;
        } else if under_hyper
            && let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        {
            return ErrorKind::Protocol;
        }
    }
    for e in chain(err) {
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
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

/// The error and its causes on one line, without repeating a cause already in its parent's
/// text (reqwest and hyper often embed their source's message).
pub(super) fn chain_message(err: &(dyn StdError + 'static)) -> String {
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
