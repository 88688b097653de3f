//! Requests: what to send for one input line, from the flags and from JSON spec lines.
//!
//! The flags (`-X`, `-H`, `-d`, `--json`) make a [`Template`], checked once when the run
//! starts. An input line starting with `{` is a [`Spec`] (`{"url", "method", "headers", "body"
//! or "json", "id"}`) that overrides the template field by field. Header names and values are
//! validated here (a CR or LF in a value is refused, so a line cannot smuggle a second header
//! or a second request). This module does not send anything (that is `fetch`).

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::RequestOptions;

/// What to fetch: a plain URL line has only `url`; a spec line may set the rest.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: Url,
    /// `None`: the template's method (GET, or POST when there is a body).
    pub method: Option<Method>,
    /// Headers of the spec; each name given here replaces the template's values for it.
    pub headers: HeaderMap,
    /// `None`: the template's body.
    pub body: Option<Body>,
    /// The spec's `id` (a string or a number), echoed in the record.
    pub id: Option<Value>,
}

impl Request {
    /// A plain GET of `url`, everything else from the template.
    pub fn get(url: Url) -> Request {
        Request {
            url,
            method: None,
            headers: HeaderMap::new(),
            body: None,
            id: None,
        }
    }
}

/// A request body: raw bytes, or JSON (which sets the content type when none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Raw(Bytes),
    Json(Bytes),
}

impl Body {
    pub fn bytes(&self) -> Bytes {
        match self {
            Body::Raw(b) | Body::Json(b) => b.clone(),
        }
    }
}

/// The request defaults the flags give, checked.
#[derive(Debug, Clone, Default)]
pub struct Template {
    method: Option<Method>,
    headers: HeaderMap,
    body: Option<Body>,
}

impl Template {
    /// Check the request flags: method token, `Name: value` headers without CR/LF, `@file`
    /// bodies readable, `--json` parses. The error is one line for stderr.
    pub fn from_options(o: &RequestOptions) -> Result<Template, String> {
        let method = o
            .method
            .as_deref()
            .map(|m| parse_method(m).map_err(|e| format!("--method: {e}")))
            .transpose()?;
        let mut headers = HeaderMap::new();
        for h in &o.headers {
            let (name, value) = parse_header_line(h).map_err(|e| format!("--header: {e}"))?;
            headers.append(name, value);
        }
        let body = match (&o.data, &o.json) {
            (Some(_), Some(_)) => return Err("--data and --json cannot be used together".into()),
            (Some(d), None) => Some(Body::Raw(read_arg(d).map_err(|e| format!("--data: {e}"))?)),
            (None, Some(j)) => {
                let bytes = read_arg(j).map_err(|e| format!("--json: {e}"))?;
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| format!("--json: not valid JSON: {e}"))?;
                Some(Body::Json(bytes))
            }
            (None, None) => None,
        };
        Ok(Template {
            method,
            headers,
            body,
        })
    }

    /// Fill in what `request` leaves open. Afterwards `method` is always set and `headers`
    /// holds every header to send.
    pub fn apply(&self, mut request: Request) -> Request {
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

/// `@path` reads the file; anything else is the text itself.
fn read_arg(arg: &str) -> Result<Bytes, String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(Bytes::copy_from_slice(arg.as_bytes())),
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    // Methods are case-sensitive tokens; users type `-X post` and mean POST.
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{text}` is not an HTTP method"))
}

/// `Name: value` (curl's `-H`). The value may be empty; CR and LF are refused.
pub fn parse_header_line(line: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| format!("`{line}` is not `Name: value`"))?;
    header(name.trim(), value.trim())
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    // The one check every user-supplied header value goes through (CR/LF, control chars).
    let value = crate::fetch::header_value(name.as_str(), value).map_err(|e| e.to_string())?;
    Ok((name, value))
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
}

/// Why a spec line is not a request: the kind of error, the message, and the id when the spec
/// got far enough to have one (so the error record can still be matched up).
#[derive(Debug, Clone)]
pub struct SpecError {
    pub invalid_url: bool,
    pub message: String,
    pub url: Option<String>,
    pub id: Option<Value>,
}

/// Parse a JSON spec line.
pub fn parse_spec(text: &str) -> Result<Request, SpecError> {
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
    let url = crate::input::parse_url(spec.url.trim()).map_err(|message| SpecError {
        invalid_url: true,
        ..fail(message)
    })?;
    let method = spec
        .method
        .as_deref()
        .map(parse_method)
        .transpose()
        .map_err(|e| fail(format!("\"method\": {e}")))?;
    let mut headers = HeaderMap::new();
    for (name, value) in spec.headers.iter().flatten() {
        let values = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| fail(format!("\"headers\": {name}: values must be strings")))?,
            _ => {
                return Err(fail(format!(
                    "\"headers\": {name}: a string or a list of strings"
                )));
            }
        };
        for v in values {
            // A spec's header value is taken as is (no trimming): JSON can say exactly what
            // it means.
            let (name, value) = header(name, v).map_err(|e| fail(format!("\"headers\": {e}")))?;
            headers.append(name, value);
        }
    }
    let body = match (spec.body, spec.json) {
        (Some(_), Some(_)) => {
            return Err(fail("\"body\" and \"json\" cannot both be given".into()));
        }
        (Some(b), None) => Some(Body::Raw(Bytes::from(b))),
        (None, Some(j)) => Some(Body::Json(Bytes::from(j.to_string()))),
        (None, None) => None,
    };
    Ok(Request {
        url,
        method,
        headers,
        body,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines() {
        let (n, v) = parse_header_line("X-Token:  abc ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-token", "abc"));
        assert!(parse_header_line("X-A: a\r\nX-B: b").is_err());
        assert!(parse_header_line("X-A: a\nb").is_err());
        assert!(parse_header_line("no colon").is_err());
        assert!(parse_header_line("bad name: x").is_err());
    }

    #[test]
    fn spec_overrides_template() {
        let t = Template::from_options(&RequestOptions {
            method: None,
            headers: vec!["A: 1".into(), "B: 2".into()],
            data: Some("flag".into()),
            json: None,
        })
        .unwrap();
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
    fn bad_specs() {
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
