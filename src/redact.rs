//! Redaction: what of a URL may be shown in records and logs.
//!
//! A password in a URL's userinfo, or a user name standing alone (the way tokens are often
//! passed: `https://TOKEN@host/`), is shown as `****`. Every place that echoes a URL or an
//! error message that may quote one goes through this module. It knows nothing of requests or
//! records.

use std::borrow::Cow;

use url::Url;

/// The mask that stands in for a secret.
pub(crate) const MASK: &str = "****";

/// The URL as shown in records and logs, its secret masked.
pub(crate) fn display_url(url: &Url) -> String {
    let mut masked = url.clone();
    if url.password().is_some() {
        let _ = masked.set_password(Some(MASK));
    } else if !url.username().is_empty() {
        let _ = masked.set_username(MASK);
    } else {
        return url.to_string();
    }
    masked.to_string()
}

/// Text that may be a URL of any scheme (`ftp://user:pw@host/`), as echoed in a record for a
/// line that was refused: masked like a fetched URL's when it parses.
pub(crate) fn display_text(text: &str) -> Cow<'_, str> {
    match Url::parse(text) {
        Ok(url) if secret(&url).is_some() => display_url(&url).into(),
        _ => text.into(),
    }
}

/// At most `max` bytes of `text`, cut on a character boundary, the cut marked with `…`.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// The secret part of a URL's userinfo: the password, or a user name alone.
fn secret(url: &Url) -> Option<&str> {
    match url.password() {
        Some(p) => Some(p),
        None if !url.username().is_empty() => Some(url.username()),
        None => None,
    }
}

/// Mask the URL's secret wherever it appears in `message`, as written in the URL and
/// percent-decoded (a cause's text may quote the URL or a value built from it).
pub(crate) fn mask_secrets(message: String, url: &Url) -> String {
    let Some(secret) = secret(url) else {
        return message;
    };
    let mut message = message.replace(secret, MASK);
    let decoded: String = url::form_urlencoded::parse(format!("s={secret}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .collect();
    if !decoded.is_empty() && decoded != secret {
        message = message.replace(&decoded, MASK);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_lone_user_names_are_masked() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(
            display_url(&url("http://u:p%40ss@a.test/")),
            "http://u:****@a.test/"
        );
        assert_eq!(
            display_url(&url("https://TOKEN@a.test/x")),
            "https://****@a.test/x"
        );
        assert_eq!(display_url(&url("http://a.test/")), "http://a.test/");
        assert_eq!(
            display_text("ftp://user:hunter22@example.test/x"),
            "ftp://user:****@example.test/x"
        );
        assert_eq!(
            mask_secrets(
                "failed for p@ss and p%40ss".into(),
                &url("http://u:p%40ss@a.test/")
            ),
            "failed for **** and ****"
        );
    }
}
