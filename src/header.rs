//! Header and method checks for user input: every header name, value and method a user gives
//! (flags, spec lines, config) goes through here before anything is sent.
//!
//! A CR or LF in a value is refused, so a value can never smuggle in another header line or a
//! second request; other control characters are refused too (RFC 9110 §5.5). This module does
//! not decide which headers a request carries (that is `request`).

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};

/// A header value from user input, or why it cannot be sent (a CR, LF or other control
/// character). The message names the header, never the value (it may be a credential).
pub fn parse_header_value(name: &str, value: &str) -> Result<HeaderValue, String> {
    if value.contains(['\r', '\n']) {
        return Err(format!(
            "the {name} header value contains a line break (CR or LF)"
        ));
    }
    HeaderValue::from_str(value)
        .map_err(|_| format!("the {name} header value contains a control character"))
}

/// A header from a name and a value as given (no trimming: JSON says exactly what it means).
pub(crate) fn pair(name: &str, val: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let val = parse_header_value(name.as_str(), val)?;
    Ok((name, val))
}

/// `Name: value` (curl's `-H`); whitespace around both is trimmed, the value may be empty.
pub fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| "expected `Name: value`".to_owned())?;
    pair(name.trim(), value.trim())
}

/// An HTTP method token. Methods are case-sensitive, but users type `-X post` and mean POST.
pub fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{}` is not an HTTP method", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_are_split_trimmed_and_checked() {
        let (n, v) = parse_header("X-Token:  abc ").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-token", "abc"));
        assert!(parse_header("X-A: a\r\nX-B: b").is_err());
        assert!(parse_header("X-A: a\nb").is_err());
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: x").is_err());
        assert!(parse_header_value("X-Ok", "fine\tvalue").is_ok());
        assert!(parse_header_value("X-Bad", "a\u{7f}b").is_err());
    }

    #[test]
    fn header_errors_never_quote_the_value() {
        let e = parse_header("Authorization: Bearer s3cret\u{1}").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn methods_are_upper_cased_tokens() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert!(parse_method("GE T").is_err());
    }
}
