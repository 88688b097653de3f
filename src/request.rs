//! Requests: what to send for one input line, from the settings and from JSON spec lines.
//!
//! The settings' [`RequestDefaults`] (the flags `-X`, `-H`, `-d`, `--json`) apply to every
//! line. An input line starting with `{` is a spec (`{"url", "method", "headers", "body" or
//! "json", "id"}`) that overrides them field by field. Which URLs may be requested
//! ([`parse_url`]) is decided here too. Header names and values are checked by `header` (a CR or
//! LF in a value is refused, so a line cannot smuggle a second header or a second request).
//! This module does not send anything (that is `fetch`).

use std::num::NonZeroU32;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::filter::Filter;

/// What to fetch: a plain URL line has only `url`; a spec line may set the rest.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) url: Url,
    /// `None`: the defaults' method (GET, or POST when there is a body).
    pub(crate) method: Option<Method>,
    /// Headers of the spec; each name given here replaces the defaults' values for it.
    pub(crate) headers: HeaderMap,
    /// `None`: the defaults' body.
    pub(crate) body: Option<Body>,
    /// The spec's `id` (a string or a number), echoed in the record.
    pub(crate) id: Option<Value>,
    /// The spec's pagination keys; what it leaves out comes from the settings.
    pub(crate) paging: SpecPaging,
}

/// A spec line's `follow_next`, `next`, `next_param`, `max_pages`.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecPaging {
    pub(crate) follow_next: Option<bool>,
    pub(crate) next: Option<Filter>,
    pub(crate) next_param: Option<String>,
    pub(crate) max_pages: Option<NonZeroU32>,
}

impl Request {
    /// A plain GET of `url`, everything else from the defaults.
    pub(crate) fn get(url: Url) -> Request {
        Request {
            url,
            method: None,
            headers: HeaderMap::new(),
            body: None,
            id: None,
            paging: SpecPaging::default(),
        }
    }

    /// The method it is sent with: the spec's or the defaults' (once applied), else GET.
    pub(crate) fn method(&self) -> Method {
        self.method.clone().unwrap_or(Method::GET)
    }
}

/// A request body: raw bytes, or JSON (which sets the content type when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Body {
    /// Sent as is; a form (`application/x-www-form-urlencoded`) unless a header says
    /// otherwise, as with curl's `-d`.
    Raw(Bytes),
    /// Sent as is, with `Content-Type` and `Accept` set to `application/json` unless given.
    Json(Bytes),
}

impl Body {
    /// The bytes to send.
    pub fn bytes(&self) -> Bytes {
        match self {
            Body::Raw(b) | Body::Json(b) => b.clone(),
        }
    }
}

/// An absolute `http` or `https` URL with a host, or why not.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "not an absolute URL (expected http:// or https://)".to_owned()
        }
        e => format!("not a valid URL: {e}"),
    })?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported scheme `{}` (only http and https)",
                crate::redact::bounded(other, 32)
            ));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host".to_owned());
    }
    Ok(url)
}

/// The request defaults for every line (curl's `-X`, `-H`, `-d`, `--json`); a spec line
/// overrides them field by field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestDefaults {
    /// `None`: GET, or POST when there is a body.
    pub method: Option<Method>,
    /// Sent with every request; a spec's header of the same name replaces these values.
    pub headers: HeaderMap,
    /// Sent with every request that has no body of its own.
    pub body: Option<Body>,
}

impl RequestDefaults {
    /// Fill in what `request` leaves open. Afterwards `method` is always set and `headers`
    /// holds every header to send.
    pub(crate) fn apply(&self, mut request: Request) -> Request {
        let mut headers = self.headers.clone();
        for name in request.headers.keys() {
            headers.remove(name);
        }
        // `drain` names a header once, then yields its further values with `None`.
        let mut last = None;
        for (name, value) in request.headers.drain() {
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                headers.append(name.clone(), value);
            }
        }
        let body = request.body.take().or_else(|| self.body.clone());
        match body {
            Some(Body::Json(_)) => {
                let json = HeaderValue::from_static("application/json");
                headers.entry(CONTENT_TYPE).or_insert(json.clone());
                headers.entry(ACCEPT).or_insert(json);
            }
            // As curl's -d: a form, unless a Content-Type header says otherwise.
            Some(Body::Raw(_)) => {
                headers
                    .entry(CONTENT_TYPE)
                    .or_insert(HeaderValue::from_static(
                        "application/x-www-form-urlencoded",
                    ));
            }
            None => {}
        }
        let method = request
            .method
            .take()
            .or_else(|| self.method.clone())
            .unwrap_or(if body.is_some() {
                Method::POST
            } else {
                Method::GET
            });
        Request {
            method: Some(method),
            headers,
            body,
            ..request
        }
    }
}

/// The JSON form of a spec line, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    follow_next: Option<bool>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    next_param: Option<String>,
    #[serde(default)]
    max_pages: Option<NonZeroU32>,
}

/// Why a spec line is not a request: the kind of error, the message, and the id when the spec
/// got far enough to have one (so the error record can still be matched up).
#[derive(Debug, Clone)]
pub(crate) struct SpecError {
    pub invalid_url: bool,
    pub message: String,
    pub url: Option<String>,
    pub id: Option<Value>,
}

/// Parse a JSON spec line.
pub(crate) fn parse_spec(text: &str) -> Result<Request, SpecError> {
    let fail = |message: String| SpecError {
        invalid_url: false,
        message,
        url: None,
        id: None,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("not valid JSON: {e}")))?;
    // Keep the url for the error record if the rest of the spec is wrong.
    let url = value.get("url").and_then(Value::as_str).map(str::to_owned);
    let spec: Spec = serde_json::from_value(value).map_err(|e| SpecError {
        url,
        ..fail(format!("not a valid request spec: {e}"))
    })?;
    let id = match spec.id {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => return Err(fail("\"id\" must be a string or a number".into())),
    };
    let fail = |message: String| SpecError {
        invalid_url: false,
        message,
        url: Some(spec.url.clone()),
        id: id.clone(),
    };
    let url = parse_url(spec.url.trim()).map_err(|message| SpecError {
        invalid_url: true,
        ..fail(message)
    })?;
    let method = spec
        .method
        .as_deref()
        .map(crate::header::parse_method)
        .transpose()
        .map_err(|e| fail(format!("\"method\": {e}")))?;
    let headers = spec_headers(spec.headers.as_ref()).map_err(fail)?;
    let body = match (spec.body, spec.json) {
        (Some(_), Some(_)) => {
            return Err(fail("\"body\" and \"json\" cannot both be given".into()));
        }
        (Some(b), None) => Some(Body::Raw(Bytes::from(b))),
        (None, Some(j)) => Some(Body::Json(Bytes::from(j.to_string()))),
        (None, None) => None,
    };
    let next = spec
        .next
        .as_deref()
        .map(Filter::new)
        .transpose()
        .map_err(|e| fail(format!("\"next\": {e}")))?;
    if spec.next_param.is_some() && next.is_none() {
        return Err(fail("\"next_param\" needs \"next\"".into()));
    }
    Ok(Request {
        url,
        method,
        headers,
        body,
        id,
        paging: SpecPaging {
            follow_next: spec.follow_next,
            next,
            next_param: spec.next_param,
            max_pages: spec.max_pages,
        },
    })
}

/// A spec's `headers`: each name with a string or a list of strings. A value is taken as is
/// (no trimming: JSON can say exactly what it means). The error names the header, never its
/// value.
fn spec_headers(headers: Option<&serde_json::Map<String, Value>>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.into_iter().flatten() {
        let values = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("\"headers\": {name}: values must be strings"))?,
            _ => {
                return Err(format!(
                    "\"headers\": {name}: a string or a list of strings"
                ));
            }
        };
        for v in values {
            let (name, value) =
                crate::header::pair(name, v).map_err(|e| format!("\"headers\": {e}"))?;
            map.append(name, value);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_overrides_the_defaults_field_by_field() {
        let mut t = RequestDefaults::default();
        for h in ["A: 1", "B: 2"] {
            let (name, value) = crate::header::parse_header(h).unwrap();
            t.headers.append(name, value);
        }
        t.body = Some(Body::Raw(Bytes::from("flag")));
        let r = t.apply(
            parse_spec(
                r#"{"url":"http://a.test/","headers":{"b":["x","y"]},"json":{"k":1},"id":7}"#,
            )
            .unwrap(),
        );
        assert_eq!(r.method, Some(Method::POST));
        assert_eq!(r.headers.get_all("b").iter().count(), 2);
        assert_eq!(r.headers["a"], "1");
        assert_eq!(r.headers[CONTENT_TYPE], "application/json");
        assert_eq!(r.body.unwrap().bytes(), Bytes::from(r#"{"k":1}"#));
        assert_eq!(r.id, Some(Value::from(7)));
        let r = t.apply(Request::get(Url::parse("http://a.test/").unwrap()));
        assert_eq!(r.body.unwrap().bytes(), Bytes::from("flag"));
        assert_eq!(
            r.headers[CONTENT_TYPE], "application/x-www-form-urlencoded",
            "a raw body is a form by default, as with curl -d"
        );
        let r = t.apply(
            parse_spec(r#"{"url":"http://a.test/","headers":{"content-type":"text/csv"}}"#)
                .unwrap(),
        );
        assert_eq!(r.headers[CONTENT_TYPE], "text/csv");
    }

    #[test]
    fn bad_specs_say_whether_the_url_or_the_spec_is_wrong() {
        for (text, url_kind) in [
            (r#"{"url": 5}"#, false),
            (r#"{"url":"http://a.test/","nope":1}"#, false),
            (r#"{"url":"ftp://a.test/","id":"x"}"#, true),
            (r#"{"url":"http://a.test/","headers":{"a":"b\nc"}}"#, false),
            (r#"{"url":"http://a.test/","body":"x","json":1}"#, false),
            (r#"{"url":"http://a.test/""#, false),
        ] {
            let e = parse_spec(text).unwrap_err();
            assert_eq!(e.invalid_url, url_kind, "{text}: {e:?}");
        }
    }
}
