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
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use crate::filter::Filter;
use crate::json;

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
    /// The header names the spec line gave (set by [`RequestDefaults::apply`]): a host
    /// profile's header of the same name does not replace them.
    pub(crate) own: Vec<HeaderName>,
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
            own: Vec::new(),
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

/// An absolute `http` or `https` URL with a host, or why not. A control character (a TAB, a
/// CR) anywhere in it is refused: the URL parser would silently drop it. The message never
/// quotes the text (it may hold a password).
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    if let Some((at, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "the URL contains a control character (U+{:04X}) at byte {at}",
            u32::from(c)
        ));
    }
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
        let own: Vec<HeaderName> = request.headers.keys().cloned().collect();
        for name in &own {
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
            own,
            ..request
        }
    }
}

/// Why a spec line is not a request: the kind of error, the message, and the id when the spec
/// got far enough to have one (so the error record can still be matched up). The message
/// says where the problem is (a key, a header name, a line and column), never what the value
/// was: it may be a credential.
#[derive(Debug, Clone)]
pub(crate) struct SpecError {
    pub invalid_url: bool,
    pub message: String,
    pub url: Option<String>,
    pub id: Option<Value>,
}

/// The keys of a JSON object in order, each with its value as written; a key given twice is
/// refused (JSON leaves its meaning open, and a spec line must say one thing).
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!(
                            "{DUPLICATE}: {}",
                            shown_key(&key)
                        )));
                    }
                    let value = map.next_value::<Box<RawValue>>()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// An object's fields, parsed within the depth limit. `what` names the object in messages,
/// which never quote a value.
fn fields(text: &str, what: &str) -> Result<Fields, String> {
    json::parse::<Fields>(text.as_bytes(), json::MAX_DEPTH + 1).map_err(|e| match e {
        json::Refused::TooDeep => format!("{what} nests deeper than {} levels", json::MAX_DEPTH),
        // Syntax messages name a position, never a value.
        json::Refused::Invalid(e) if e.is_syntax() || e.is_eof() => {
            format!("{what} is not valid JSON: {e}")
        }
        // Ours (a duplicate key) names the key the way `shown_key` does.
        json::Refused::Invalid(e) if e.to_string().starts_with(DUPLICATE) => format!("{what}: {e}"),
        // A type error would quote the value.
        json::Refused::Invalid(_) => format!("{what} must be a JSON object"),
    })
}

/// The start of the message for a key given twice.
const DUPLICATE: &str = "a key is given twice";

/// A key as named in a message: quoted when it is a simple name (letters, digits, `_`, `-`,
/// at most 40), else not at all (a mistyped line may have put a credential where a key goes).
fn shown_key(key: &str) -> String {
    let simple = (1..=40).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if simple {
        format!("\"{key}\"")
    } else {
        "(a key that is not a simple name; not shown)".to_owned()
    }
}

/// What kind of JSON value `raw` is, from its first byte.
fn is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

fn is_number(raw: &RawValue) -> bool {
    raw.get()
        .starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// The text of a JSON string value (checked with [`is_string`]).
fn string(raw: &RawValue) -> String {
    serde_json::from_str(raw.get()).unwrap_or_default()
}

/// Parse a JSON spec line: an object with `url` (required), `method`, `headers`, `body` or
/// `json`, and `id`. A key given twice, an unknown key or a value of the wrong type is
/// refused; `null` means "not given", except for `json`, where it is the body `null`.
pub(crate) fn parse_spec(text: &str) -> Result<Request, SpecError> {
    let fail = |message: String| SpecError {
        invalid_url: false,
        message,
        url: None,
        id: None,
    };
    let Fields(fields) = fields(text, "the spec line").map_err(fail)?;
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, v)| k == key && !is_null(v))
            .map(|(_, v)| v.as_ref())
    };
    // The url and id first, for the error record if the rest of the spec is wrong.
    let url = get("url").filter(|v| is_string(v)).map(string);
    let id = match get("id") {
        None => None,
        Some(v) if is_string(v) || is_number(v) => serde_json::from_str::<Value>(v.get()).ok(),
        Some(_) => {
            return Err(SpecError {
                url,
                ..fail("\"id\" must be a string or a number".into())
            });
        }
    };
    let fail = |message: String| SpecError {
        invalid_url: false,
        message,
        url: url.clone(),
        id: id.clone(),
    };
    if let Some((key, _)) = fields
        .iter()
        .find(|(k, _)| !SPEC_KEYS.contains(&k.as_str()))
    {
        return Err(fail(format!(
            "unknown key {} (expected {})",
            shown_key(key),
            SPEC_KEYS.join(", ")
        )));
    }
    for key in ["url", "method", "body", "next", "next_param"] {
        if get(key).is_some_and(|v| !is_string(v)) {
            return Err(fail(format!("\"{key}\" must be a string")));
        }
    }
    let Some(url_text) = &url else {
        return Err(fail("\"url\" is required".into()));
    };
    let parsed = parse_url(url_text.trim()).map_err(|message| SpecError {
        invalid_url: true,
        ..fail(message)
    })?;
    let method = get("method")
        .map(|v| crate::header::parse_method(&string(v)))
        .transpose()
        .map_err(|e| fail(format!("\"method\": {e}")))?;
    let headers = match get("headers") {
        None => HeaderMap::new(),
        Some(v) => spec_headers(v).map_err(fail)?,
    };
    let body = match (get("body"), fields.iter().find(|(k, _)| k == "json")) {
        (Some(_), Some(_)) => {
            return Err(fail("\"body\" and \"json\" cannot both be given".into()));
        }
        (Some(b), None) => Some(Body::Raw(Bytes::from(string(b)))),
        // The JSON as written (`null` included): numbers, key order and all.
        (None, Some((_, j))) => Some(Body::Json(Bytes::copy_from_slice(j.get().as_bytes()))),
        (None, None) => None,
    };
    let paging = spec_paging(&get).map_err(fail)?;
    Ok(Request {
        url: parsed,
        method,
        headers,
        body,
        id,
        paging,
        own: Vec::new(),
    })
}

/// The keys a spec line may have.
const SPEC_KEYS: [&str; 10] = [
    "url",
    "method",
    "headers",
    "body",
    "json",
    "id",
    "follow_next",
    "next",
    "next_param",
    "max_pages",
];

/// A spec's pagination keys (`follow_next`, `next`, `next_param`, `max_pages`), each checked
/// for its type; the `next` filter is compiled here, once per line.
fn spec_paging<'a>(get: &impl Fn(&str) -> Option<&'a RawValue>) -> Result<SpecPaging, String> {
    let follow_next = match get("follow_next") {
        None => None,
        Some(v) => Some(
            serde_json::from_str::<bool>(v.get())
                .map_err(|_| "\"follow_next\" must be true or false".to_owned())?,
        ),
    };
    let next = get("next")
        .map(|v| Filter::new(&string(v)))
        .transpose()
        .map_err(|e| format!("\"next\": {e}"))?;
    let next_param = get("next_param").map(string);
    if next_param.is_some() && next.is_none() {
        return Err("\"next_param\" needs \"next\"".into());
    }
    let max_pages = match get("max_pages") {
        None => None,
        Some(v) => Some(
            serde_json::from_str::<NonZeroU32>(v.get())
                .map_err(|_| "\"max_pages\" must be a whole number above zero".to_owned())?,
        ),
    };
    Ok(SpecPaging {
        follow_next,
        next,
        next_param,
        max_pages,
    })
}

/// A spec's `headers`: an object of names, each with a string or a list of strings. A value
/// is taken as is (no trimming: JSON can say exactly what it means). The error names the
/// header, never its value.
fn spec_headers(raw: &RawValue) -> Result<HeaderMap, String> {
    if !raw.get().starts_with('{') {
        return Err("\"headers\" must be an object of names and values".to_owned());
    }
    let Fields(headers) = fields(raw.get(), "\"headers\"")?;
    let mut map = HeaderMap::new();
    for (name, value) in &headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            // Not quoted: `"Authorization: Bearer ..."` written as a name would echo a token.
            return Err(
                "\"headers\": a name is not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)"
                    .to_owned(),
            );
        }
        let shown = format!("\"{}\"", crate::redact::bounded(name, 60));
        let values: Vec<String> = if is_string(value) {
            vec![string(value)]
        } else if value.get().starts_with('[') {
            let items: Vec<Box<RawValue>> = serde_json::from_str(value.get())
                .map_err(|_| format!("\"headers\": {shown}: not a list"))?;
            if !items.iter().all(|v| is_string(v)) {
                return Err(format!("\"headers\": {shown}: values must be strings"));
            }
            items.iter().map(|v| string(v)).collect()
        } else {
            return Err(format!(
                "\"headers\": {shown}: a string or a list of strings"
            ));
        };
        for v in values {
            let (name, value) =
                crate::header::pair(name, &v).map_err(|e| format!("\"headers\": {e}"))?;
            map.append(name, value);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

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
            (r#"{"url":"http://a.test/","url":"http://b.test/"}"#, false),
            (
                r#"{"url":"http://a.test/","headers":{"A":"1","A":"2"}}"#,
                false,
            ),
            (r#"{"url":"http://a.test/\tx"}"#, true),
            (r#"{"method":"GET"}"#, false),
        ] {
            let e = parse_spec(text).unwrap_err();
            assert_eq!(e.invalid_url, url_kind, "{text}: {e:?}");
        }
    }

    /// A wrong type, a bad header, a mistyped key: the message says where, and no value of
    /// the line ever shows in it.
    #[test]
    fn spec_errors_never_quote_a_value() {
        for text in [
            r#"{"url":"http://a.test/","headers":"Authorization: Bearer SECRETVALUE"}"#,
            r#"{"url":"http://a.test/","headers":{"Authorization":5,"x":"SECRETVALUE"}}"#,
            r#"{"url":"http://a.test/","headers":{"Authorization":["Bearer SECRETVALUE",1]}}"#,
            r#"{"url":"http://a.test/","headers":{"Authorization: Bearer SECRETVALUE":"x"}}"#,
            r#"{"url":"http://a.test/","headers":{"Authorization":"Bearer SECRETVALUE\u0001"}}"#,
            r#"{"url":"http://a.test/","Authorization: Bearer SECRETVALUE":1}"#,
            r#"{"url":"http://a.test/","body":{"password":"SECRETVALUE"}}"#,
            r#"{"url":"http://a.test/","method":"SECRETVALUE GET"}"#,
            r#"{"url":"http://a.test/","id":{"SECRETVALUE":1}}"#,
            r#"{"url":["SECRETVALUE"]}"#,
            r#"{"url":"http://a.test/","json":{"a":"SECRETVALUE"},"json":1}"#,
            r#"{"url":"http://a.test/","headers":{"X":"SECRETVALUE"}"#,
        ] {
            let e = parse_spec(text).unwrap_err();
            assert!(!e.message.contains("SECRETVALUE"), "{text}: {}", e.message);
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
        let e = parse_spec(r#"{"url":"http://a.test/","jsno":1}"#).unwrap_err();
        assert!(e.message.contains(r#""jsno""#), "{}", e.message);
        let e = parse_spec(r#"{"url":"http://a.test/","id":1,"id":2}"#).unwrap_err();
        assert!(
            e.message.contains("twice") && e.message.contains(r#""id""#),
            "{}",
            e.message
        );
    }

    #[test]
    fn json_null_is_a_body_and_big_ids_are_exact() {
        let r = parse_spec(r#"{"url":"http://a.test/","json":null}"#).unwrap();
        assert_eq!(r.body, Some(Body::Json(Bytes::from("null"))));
        let r = parse_spec(
            r#"{"url":"http://a.test/","json":{"n":123456789012345678901234567890, "n2": 1.50}}"#,
        )
        .unwrap();
        assert_eq!(
            r.body.unwrap().bytes(),
            Bytes::from(r#"{"n":123456789012345678901234567890, "n2": 1.50}"#),
            "the body as written"
        );
        let r =
            parse_spec(r#"{"url":"http://a.test/","id":123456789012345678901234567890}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&r.id).unwrap(),
            "123456789012345678901234567890"
        );
        // `null` elsewhere means "not given".
        let r =
            parse_spec(r#"{"url":"http://a.test/","body":null,"id":null,"headers":null}"#).unwrap();
        assert!(r.body.is_none() && r.id.is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// A spec built from any id, method, header and body parses back to what was written.
        #[test]
        fn specs_round_trip(
            path in "[a-z0-9/]{0,20}",
            id in proptest::option::of(proptest::prop_oneof![
                "\\PC{0,20}".prop_map(serde_json::Value::from),
                proptest::num::i64::ANY.prop_map(serde_json::Value::from),
            ]),
            method in proptest::option::of("(GET|POST|put|DELETE|PATCH)"),
            header in proptest::option::of(("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,20}")),
            body in proptest::option::of("\\PC{0,30}"),
        ) {
            use proptest::prop_assert_eq;
            let mut spec = serde_json::Map::new();
            spec.insert("url".into(), format!("http://a.test/{path}").into());
            if let Some(id) = &id { spec.insert("id".into(), id.clone()); }
            if let Some(m) = &method { spec.insert("method".into(), m.clone().into()); }
            if let Some((n, v)) = &header {
                spec.insert("headers".into(), serde_json::json!({ n.clone(): v.clone() }));
            }
            if let Some(b) = &body { spec.insert("body".into(), b.clone().into()); }
            let text = serde_json::Value::Object(spec).to_string();
            let r = parse_spec(&text).unwrap();
            prop_assert_eq!(r.url.as_str(), format!("http://a.test/{path}"));
            prop_assert_eq!(&r.id, &id);
            prop_assert_eq!(r.method.map(|m| m.to_string()), method.map(|m| m.to_ascii_uppercase()));
            if let Some((n, v)) = &header {
                prop_assert_eq!(r.headers.get(n.as_str()).unwrap().as_bytes(), v.as_bytes());
            }
            prop_assert_eq!(r.body, body.map(|b| Body::Raw(Bytes::from(b))));
        }

        /// Any text starting with `{` is a request or a refusal; never a panic, never a
        /// message with a line break.
        #[test]
        fn any_spec_text_is_a_request_or_a_refusal(rest in "\\PC{0,80}") {
            if let Err(e) = parse_spec(&format!("{{{rest}")) {
                proptest::prop_assert!(!e.message.is_empty() && !e.message.contains('\n'));
            }
        }
    }
}
