//! Redirects, followed by fetchall itself (the client's own following is off).
//!
//! reqwest's redirect policy can only follow, stop or fail a hop: it cannot drop headers, so
//! it forwards `X-Api-Key` and any other custom credential header to whatever origin a
//! redirect names, adds a `Referer` with the full URL, and (through tower-http) hands back
//! the 3xx itself as the response when the `Location` is a `data:` or `file:` URL it cannot
//! represent. Following here makes the rules one readable function:
//!
//! - 301, 302, 303, 307 and 308 with a `Location` are followed, up to `--max-redirects`
//!   (0: not at all, the 3xx is the response); a 3xx without `Location` is the response.
//! - 303, and 301/302 after a POST, continue as GET without the body (as browsers and curl
//!   do); 307 and 308 repeat the method and the body.
//! - Once a hop leaves the request's origin (scheme, host and port), every credential header
//!   ([`crate::is_credential_header`]: `Authorization`, `Cookie`, `X-Api-Key`, ...) and any
//!   `Host` header is dropped for the rest of the chain. No `Referer` is ever added.
//! - A host profile's headers (`[hosts."pattern"]`) are not part of the chain at all: each
//!   hop gets those of the profile for its own host, if any (see `Hop::build`).
//! - A `Location` that is not a URL, a target that is not http(s), or one redirect too many
//!   (a loop ends this way) end the request with kind `redirect` (never `ok: true`).

use std::borrow::Cow;

use bytes::Bytes;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderMap, HeaderName, LOCATION,
    TRANSFER_ENCODING,
};
use reqwest::{Method, StatusCode};
use url::Url;

use super::client::Clients;
use crate::redact::{Redactor, bounded};
use crate::request::Request;
use crate::settings::Settings;

/// One request of a redirect chain. The first hop borrows the request's URL and headers
/// (most requests are never redirected, and a copy per request is measurable on a fast
/// run); a followed hop owns what it changed.
#[derive(Debug, Clone)]
pub(super) struct Hop<'r> {
    pub url: Cow<'r, Url>,
    pub method: Method,
    pub headers: Cow<'r, HeaderMap>,
    pub body: Option<Bytes>,
    /// The spec line's header names: a host profile's headers do not replace them.
    pub own: Cow<'r, [HeaderName]>,
}

impl<'r> Hop<'r> {
    /// The first hop: the request itself (its defaults already applied).
    pub(super) fn first(request: &'r Request) -> Hop<'r> {
        Hop {
            url: Cow::Borrowed(&request.url),
            method: request.method(),
            headers: Cow::Borrowed(&request.headers),
            body: request.body.as_ref().map(|b| b.bytes()),
            own: Cow::Borrowed(&request.own),
        }
    }

    /// The reqwest request for this hop. A URL's user information becomes Basic auth for
    /// that hop only (reqwest moves it into an `Authorization` header).
    /// The request for this hop. `close`: nothing else for its host is known to come, so ask
    /// for the connection to be closed after the response (`Connection: close`, HTTP/1; hyper
    /// drops the header on HTTP/2): it does not sit idle in the pool with its socket and TLS
    /// state. A `Connection` header of the request's own is left as it is.
    ///
    /// The headers of the profile for this hop's host (`Clients::profile_for`) are added here,
    /// per hop, never carried to the next: a redirect to a host the profile does not match
    /// does not see them, a redirect into a matching host gets them.
    pub(super) fn build(&self, client: &Clients, close: bool) -> reqwest::RequestBuilder {
        let profile = client.profile_for(&self.url);
        // The client of this hop's host's proxy (see `Clients`).
        let client = client.for_url(&self.url);
        let mut builder = client.request(self.method.clone(), Url::clone(&self.url));
        // A request without headers of its own (a plain URL line) copies no header map.
        match profile {
            None if self.headers.is_empty() => {}
            None => builder = builder.headers(HeaderMap::clone(&self.headers)),
            Some(p) => {
                let mut headers = HeaderMap::clone(&self.headers);
                p.add_headers(&mut headers, &self.own);
                builder = builder.headers(headers);
            }
        }
        if close && !self.headers.contains_key(reqwest::header::CONNECTION) {
            builder = builder.header(
                reqwest::header::CONNECTION,
                reqwest::header::HeaderValue::from_static("close"),
            );
        }
        if let Some(body) = &self.body {
            builder = builder.body(body.clone());
        }
        builder
    }
}

/// What to do after a response.
#[derive(Debug)]
pub(super) enum Next<'r> {
    /// The response is the answer.
    Done,
    /// Follow the redirect with this hop.
    Follow(Box<Hop<'r>>),
    /// The redirect cannot be followed; the message says why.
    Refuse(String),
}

/// Whether `a` and `b` are one origin: scheme, host and port.
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Decide what follows `response` to `hop`. `followed`: redirects followed so far;
/// `origin`: the request's own URL.
pub(super) fn next<'r>(
    response: &reqwest::Response,
    hop: &Hop<'r>,
    origin: &Url,
    followed: u32,
    settings: &Settings,
    redactor: &Redactor,
) -> Next<'r> {
    let status = response.status();
    let redirect = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !redirect || settings.max_redirects == 0 {
        return Next::Done;
    }
    let Some(location) = response.headers().get(LOCATION) else {
        return Next::Done;
    };
    let Ok(location) = std::str::from_utf8(location.as_bytes()) else {
        return Next::Refuse(format!(
            "HTTP {status}: its Location header is not valid UTF-8"
        ));
    };
    let shown = |url: &Url| bounded(&redactor.url(url), 200).into_owned();
    let target = match hop.url.join(location.trim()) {
        Ok(url) => url,
        Err(e) => {
            return Next::Refuse(format!(
                "HTTP {status}: its Location is not a valid URL ({e})"
            ));
        }
    };
    if !matches!(target.scheme(), "http" | "https") {
        return Next::Refuse(format!(
            "HTTP {status} to {}: refused, only http and https redirects are followed",
            shown(&target)
        ));
    }
    if target.host_str().is_none_or(str::is_empty) {
        return Next::Refuse(format!("HTTP {status}: its Location has no host"));
    }
    if followed >= settings.max_redirects {
        return Next::Refuse(format!(
            "more than --max-redirects {} redirects (the next was to {})",
            settings.max_redirects,
            shown(&target)
        ));
    }
    let mut next = Hop {
        url: Cow::Owned(target),
        method: hop.method.clone(),
        headers: hop.headers.clone(),
        body: hop.body.clone(),
        own: hop.own.clone(),
    };
    let to_get = status == StatusCode::SEE_OTHER && hop.method != Method::HEAD
        || matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && hop.method == Method::POST;
    if to_get {
        next.method = Method::GET;
    }
    if to_get || status == StatusCode::SEE_OTHER {
        next.body = None;
        let headers = next.headers.to_mut();
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
    }
    if !same_origin(&next.url, origin) {
        let mut own = next.own.into_owned();
        leave_origin(next.headers.to_mut(), &mut own, settings);
        next.own = Cow::Owned(own);
    }
    Next::Follow(Box::new(next))
}

/// Drop from `headers` what must not leave the request's origin: every credential header
/// and any `Host`. The dropped names leave `own` (the spec line's names) too, so that a host
/// profile's header of that name applies again on the hosts it matches.
pub(crate) fn leave_origin(
    headers: &mut HeaderMap,
    own: &mut Vec<HeaderName>,
    settings: &Settings,
) {
    let dropped: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            *n == HOST
                || crate::header::is_credential_header(n.as_str(), &settings.credential_headers)
        })
        .cloned()
        .collect();
    for name in &dropped {
        headers.remove(name);
    }
    own.retain(|n| !dropped.contains(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&u("http://a.test/x"), &u("http://a.test:80/y")));
        assert!(!same_origin(&u("http://a.test/"), &u("https://a.test/")));
        assert!(!same_origin(
            &u("http://a.test/"),
            &u("http://a.test:8080/")
        ));
        assert!(!same_origin(&u("http://a.test/"), &u("http://b.test/")));
    }
}
