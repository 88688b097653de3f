//! Header and method checks for user input: every header name, value and method a user gives
//! (flags, spec lines, config) goes through here before anything is sent.
//!
//! A CR or LF in a value is refused, so a value can never smuggle in another header line or a
//! second request; other control characters are refused too (RFC 9110 §5.5). It also holds the
//! one rule for which headers carry credentials ([`is_credential_header`]): those are dropped
//! when a redirect leaves the request's origin and masked by `fetchall config`. This module
//! does not decide which headers a request carries (that is `request`).

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};

/// Header names whose values are credentials, whatever else they say.
const CREDENTIAL_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "cookie2"];
/// Words that make any header name a credential's (`X-Api-Key`, `X-Auth-Token`,
/// `X-Session-Id`, `X-Amz-Security-Token`).
const CREDENTIAL_WORDS: [&str; 9] = [
    "auth",
    "credential",
    "key",
    "passwd",
    "password",
    "secret",
    "session",
    "signature",
    "token",
];

/// Whether a header named `name` carries a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Cookie2`, any name containing one of the words `auth`,
/// `credential`, `key`, `passwd`, `password`, `secret`, `session`, `signature` or `token`
/// (any case), or one of the names in `marked` (`--credential-header`). Such headers are sent
/// only to the request's own origin (a redirect elsewhere drops them) and shown as `****` by
/// `fetchall config`. The rule errs on the safe side: `Idempotency-Key` counts too.
pub fn is_credential_header(name: &str, marked: &[HeaderName]) -> bool {
    let name = name.trim().to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&name.as_str())
        || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
        || marked.iter().any(|m| m.as_str() == name)
}

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
    // The name is not quoted either: a mistyped line may have put a credential there.
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        "not a valid header name (letters, digits and !#$%&'*+-.^_`|~ only)".to_owned()
    })?;
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
/// The error does not quote the text (in a spec line, any value may be a mistyped secret).
pub fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes()).map_err(|_| {
        "not an HTTP method (one word of letters, digits and !#$%&'*+-.^_`|~)".to_owned()
    })
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
    fn credential_headers_by_name_word_or_mark() {
        for name in [
            "Authorization",
            "cookie",
            "X-Api-Key",
            "X-Auth-Token",
            "x-session-id",
        ] {
            assert!(is_credential_header(name, &[]), "{name}");
        }
        for name in ["Accept", "Content-Type", "X-Tenant", "Referer"] {
            assert!(!is_credential_header(name, &[]), "{name}");
        }
        let marked = [HeaderName::from_static("x-tenant")];
        assert!(is_credential_header("X-Tenant", &marked));
    }

    #[test]
    fn methods_are_upper_cased_tokens() {
        assert_eq!(parse_method("post").unwrap(), Method::POST);
        assert!(parse_method("GE T").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]

        /// `Name: value` round-trips (trimmed, name lower-cased) for every token name and
        /// visible value; anything else is refused with a message that never quotes the value.
        #[test]
        fn header_lines_round_trip_or_are_refused_without_the_value(
            name in "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}",
            value in "[ -~\t\r\n\x00\x7f]{0,30}",
        ) {
            let marked = format!("Sx{value}Qz");
            match parse_header(&format!("{name}: {marked}")) {
                Ok((n, v)) => {
                    proptest::prop_assert_eq!(n.as_str(), name.to_ascii_lowercase());
                    proptest::prop_assert_eq!(v.to_str().unwrap(), marked.trim());
                    proptest::prop_assert!(!marked.contains(['\r', '\n', '\0', '\x7f']));
                }
                Err(e) => proptest::prop_assert!(!e.contains(&marked), "{}", e),
            }
        }

        #[test]
        fn any_text_is_a_header_or_an_error(line in "\\PC{0,60}") {
            let _ = parse_header(&line);
            let _ = parse_method(&line);
        }
    }
}
