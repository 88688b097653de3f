//! Redaction: what of a URL, or of text that may hold one, may be shown in records and logs.
//!
//! Two kinds of secret are masked as `****`:
//!
//! - a URL's user information: the password (`https://user:****@host/`), or a user name
//!   standing alone (the way tokens are often passed: `https://****@host/`);
//! - the values of query (and fragment) parameters whose names are on a list
//!   ([`DEFAULT_MASKED_PARAMS`], plus the user's `--mask-param` names), compared without
//!   regard to case: `?access_token=****&page=2`.
//!
//! A URL that parses is masked exactly ([`Redactor::url`]). Text that does not parse (a refused
//! input line: a bad port, an empty host, a space, invalid UTF-8, a line cut at 64 KiB) is
//! masked on the raw text *before* anything tries to parse it ([`Redactor::text`]); there the
//! masker cannot know where user information ends, so it masks generously: everything from
//! the start of the authority to the last `@` of the text, and for text that was cut short
//! everything after the authority's start. Every place that echoes a URL, or an error message
//! that may quote one, goes through this module. It knows nothing of requests or records.

use std::borrow::Cow;

use url::Url;

/// The mask that stands in for a secret.
pub(crate) const MASK: &str = "****";

/// Query parameters whose values are masked unless the caller replaces the list
/// (`Settings::mask_params`); compared without regard to case.
pub const DEFAULT_MASKED_PARAMS: &[&str] = &[
    "access_token",
    "api_key",
    "api-key",
    "apikey",
    "auth",
    "auth_token",
    "client_secret",
    "id_token",
    "jwt",
    "key",
    "passwd",
    "password",
    "pwd",
    "refresh_token",
    "secret",
    "session",
    "session_id",
    "sessionid",
    "sig",
    "signature",
    "token",
    "x-amz-credential",
    "x-amz-security-token",
    "x-amz-signature",
    "x-goog-credential",
    "x-goog-signature",
];

/// Shortest parameter value masked inside an error *message* (a URL's own parameters are
/// always masked): replacing every `1` of a message because `?key=1` would garble it.
const MIN_MESSAGE_SECRET: usize = 4;

/// Masks secrets in URLs and in text, with one run's list of parameter names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Lower-case parameter names whose values are masked.
    params: Vec<String>,
}

impl Redactor {
    /// A redactor masking the values of `params` (any case).
    pub(crate) fn new<S: AsRef<str>>(params: &[S]) -> Redactor {
        Redactor {
            params: params
                .iter()
                .map(|p| p.as_ref().to_ascii_lowercase())
                .collect(),
        }
    }

    /// The URL as shown in records and logs: user information and listed parameters masked.
    pub(crate) fn url(&self, url: &Url) -> String {
        let query = url.query().map(|q| self.pairs(q));
        let fragment = url.fragment().map(|f| self.pairs(f));
        let changed = matches!(&query, Some(Cow::Owned(_)))
            || matches!(&fragment, Some(Cow::Owned(_)))
            || secret(url).is_some();
        if !changed {
            return url.as_str().to_owned();
        }
        let mut masked = url.clone();
        if let Some(Cow::Owned(q)) = &query {
            masked.set_query(Some(q));
        }
        if let Some(Cow::Owned(f)) = &fragment {
            masked.set_fragment(Some(f));
        }
        mask_userinfo(&mut masked);
        masked.to_string()
    }

    /// Text that may be (or contain) a URL, as echoed for a line that was refused: masked on
    /// the raw text, whatever it is. `truncated`: the text is the start of something longer.
    pub(crate) fn text(&self, text: &str, truncated: bool) -> String {
        let text = raw_userinfo(text, truncated);
        self.pairs(&text).into_owned()
    }

    /// Mask the secrets of `urls` wherever they appear in `message`, as written in the URL
    /// and percent-decoded (a cause's text may quote a URL or a value built from it).
    pub(crate) fn message(&self, mut message: String, urls: &[&Url]) -> String {
        for url in urls {
            let mut secrets: Vec<&str> = secret(url).into_iter().collect();
            for part in [url.query(), url.fragment()].into_iter().flatten() {
                for (name, value) in split_pairs(part) {
                    if value.len() >= MIN_MESSAGE_SECRET && self.is_masked(name) {
                        secrets.push(value);
                    }
                }
            }
            for secret in secrets {
                message = message.replace(secret, MASK);
                let decoded = percent_decode(secret);
                if !decoded.is_empty() && decoded != secret {
                    message = message.replace(&decoded, MASK);
                }
            }
        }
        message
    }

    /// Whether the parameter `name` (as written, percent-encoded or not) is on the list.
    fn is_masked(&self, name: &str) -> bool {
        let name = percent_decode(name).to_ascii_lowercase();
        self.params.contains(&name)
    }

    /// `text` with the value of every listed `name=value` pair masked. Pairs start after `?`,
    /// `&`, `;` or `#` (or at the start) and end at `&`, `;` or `#`.
    fn pairs<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.params.is_empty() || !text.contains('=') {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut changed = false;
        let mut rest = text;
        loop {
            // One pair, up to the next delimiter.
            let end = rest.find(['&', ';', '#', '?']).unwrap_or(rest.len());
            let pair = &rest[..end];
            match pair.split_once('=') {
                Some((name, value)) if !value.is_empty() && self.is_masked(name.trim()) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(MASK);
                    changed = true;
                }
                _ => out.push_str(pair),
            }
            if end == rest.len() {
                break;
            }
            out.push_str(&rest[end..end + 1]);
            rest = &rest[end + 1..];
        }
        if changed {
            Cow::Owned(out)
        } else {
            Cow::Borrowed(text)
        }
    }
}

/// The URL as shown with only its user information masked (for a proxy URL).
pub(crate) fn display_url(url: &Url) -> String {
    if secret(url).is_none() {
        return url.to_string();
    }
    let mut masked = url.clone();
    mask_userinfo(&mut masked);
    masked.to_string()
}

fn mask_userinfo(url: &mut Url) {
    if url.password().is_some() {
        let _ = url.set_password(Some(MASK));
    } else if !url.username().is_empty() {
        let _ = url.set_username(MASK);
    }
}

/// The secret part of a URL's userinfo: the password, or a user name alone.
fn secret(url: &Url) -> Option<&str> {
    match url.password() {
        Some(p) => Some(p),
        None if !url.username().is_empty() => Some(url.username()),
        None => None,
    }
}

/// `name=value` pairs of a query or fragment, as written.
fn split_pairs(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(['&', ';'])
        .filter_map(|pair| pair.split_once('='))
}

fn percent_decode(text: &str) -> String {
    let plus_as_space = text.replace('+', " ");
    url::form_urlencoded::parse(format!("s={}", plus_as_space.replace('&', "%26")).as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default()
}

/// Where the authority of a URL-like text starts: after a leading `scheme:` and any slashes
/// or backslashes (`http:user:pw@host` parses too), else at the start (`TOKEN@host`, or junk
/// before a URL: masking from the start is the generous choice).
fn authority_start(text: &str) -> usize {
    let scheme_end = text
        .char_indices()
        .take_while(|&(i, c)| {
            c.is_ascii_alphabetic() || (i > 0 && (c.is_ascii_alphanumeric() || "+-.".contains(c)))
        })
        .last()
        .map(|(i, c)| i + c.len_utf8());
    match scheme_end {
        Some(end) if text[end..].starts_with(':') => skip_slashes(text, end + 1),
        _ => 0,
    }
}

fn skip_slashes(text: &str, from: usize) -> usize {
    from + text[from..]
        .bytes()
        .take_while(|b| matches!(b, b'/' | b'\\'))
        .count()
}

/// Mask what may be user information in raw text: from the authority's start to the last
/// `@` (keeping a plausible user name before a `:`), or, for text cut short, everything from
/// the authority's start (the `@` may lie beyond the cut).
fn raw_userinfo(text: &str, truncated: bool) -> Cow<'_, str> {
    let start = authority_start(text);
    let end = match text[start..].rfind('@') {
        Some(at) => start + at,
        None if truncated && start < text.len() => {
            return Cow::Owned(format!("{}{MASK}", &text[..start]));
        }
        None => return Cow::Borrowed(text),
    };
    let userinfo = &text[start..end];
    if userinfo.is_empty() {
        return Cow::Borrowed(text);
    }
    let shown_user = match userinfo.split_once(':') {
        Some((user, _))
            if !user.is_empty()
                && !user.contains(|c: char| "/\\?#@".contains(c) || c.is_whitespace()) =>
        {
            Some(user)
        }
        _ => None,
    };
    let tail = if truncated {
        // The cut may have fallen inside the user information of a later URL.
        Cow::Owned(raw_userinfo(&text[end + 1..], true).into_owned())
    } else {
        Cow::Borrowed(&text[end + 1..])
    };
    Cow::Owned(match shown_user {
        Some(user) => format!("{}{user}:{MASK}@{tail}", &text[..start]),
        None => format!("{}{MASK}@{tail}", &text[..start]),
    })
}

/// At most `max` bytes of `text`, marker included: cut on a character boundary and marked
/// with `…`.
pub(crate) fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    const MARK: &str = "…";
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end]).into()
}

/// `text` on one line: CR, LF and other control characters escaped (`\r`, `\n`, `\u{1b}`),
/// so a message never breaks a log line or a `jq -r` listing.
pub(crate) fn one_line(text: &str) -> Cow<'_, str> {
    if !text.contains(char::is_control) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(DEFAULT_MASKED_PARAMS)
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn passwords_and_lone_user_names_are_masked() {
        let r = redactor();
        assert_eq!(
            r.url(&url("http://u:p%40ss@a.test/")),
            "http://u:****@a.test/"
        );
        assert_eq!(
            r.url(&url("https://TOKEN@a.test/x")),
            "https://****@a.test/x"
        );
        assert_eq!(r.url(&url("http://a.test/")), "http://a.test/");
        assert_eq!(
            r.text("ftp://user:hunter22@example.test/x", false),
            "ftp://user:****@example.test/x"
        );
        assert_eq!(
            r.message(
                "failed for p@ss and p%40ss".into(),
                &[&url("http://u:p%40ss@a.test/")]
            ),
            "failed for **** and ****"
        );
    }

    #[test]
    fn listed_query_parameters_are_masked_in_any_case() {
        let r = redactor();
        assert_eq!(
            r.url(&url(
                "https://a.test/x?Access_Token=abc&page=2&sig=&key=k#token=t"
            )),
            "https://a.test/x?Access_Token=****&page=2&sig=&key=****#token=****"
        );
        assert_eq!(
            r.url(&url("https://a.test/x?page=2")),
            "https://a.test/x?page=2"
        );
        let mine = Redactor::new(&["page"]);
        assert_eq!(
            mine.url(&url("https://a.test/x?page=2&token=t")),
            "https://a.test/x?page=****&token=t"
        );
        assert_eq!(
            r.message(
                "sent token s3cr3tvalue".into(),
                &[&url("http://a.test/?token=s3cr3tvalue")]
            ),
            "sent token ****"
        );
    }

    /// The raw-text cases that used to echo a secret: the URL does not parse.
    #[test]
    fn unparsable_text_is_masked_before_parsing() {
        let r = redactor();
        for (raw, shown) in [
            ("http://u:PASS@host:99999/", "http://u:****@host:99999/"),
            ("http://u:PASS@/x", "http://u:****@/x"),
            ("http://u:PA SS@host/", "http://u:****@host/"),
            ("http://u:pa/ss@host:99999/", "http://u:****@host:99999/"),
            ("http://u:pa?ss@host/", "http://u:****@host/"),
            ("http:u:PASS@host:99999", "http:u:****@host:99999"),
            ("TOKEN@host:99999/", "****@host:99999/"),
            ("junk http://PASS@h:0x/", "****@h:0x/"),
            (
                "http://h:99999/?token=PASS&a=1",
                "http://h:99999/?token=****&a=1",
            ),
            (
                "http://h:1/?x=1#access_token=PASS",
                "http://h:1/?x=1#access_token=****",
            ),
        ] {
            assert_eq!(r.text(raw, false), shown, "{raw}");
        }
        // Cut short: the `@` may lie beyond the cut, so the authority is masked to the end.
        assert_eq!(r.text("http://u:PASSPASS", true), "http://****");
        assert_eq!(r.text("TOKENTOKEN", true), "****");
    }

    #[test]
    fn bounds_count_bytes_and_cut_on_a_boundary() {
        assert_eq!(bounded("abc", 3), "abc");
        let cut = bounded("ééééé", 8);
        assert!(cut.len() <= 8, "{cut}");
        assert_eq!(cut, "éé…");
        assert_eq!(one_line("a\r\nb\u{1b}"), "a\\r\\nb\\u{1b}");
        assert_eq!(one_line("plain"), "plain");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever surrounds it (a bad port, spaces, junk, a cut), a password or a lone
        /// token in the user information is never echoed, as a URL or as raw text.
        #[test]
        fn masking_holds_for_every_url_with_userinfo(
            scheme in "(http|https|ftp|HTTP|)",
            sep in "(://|:|:/|:\\\\\\\\|)",
            user in "[a-z]{0,6}",
            secret in "[A-Za-z0-9!$%'()*+,;=~/?#\\[\\] -]{0,20}",
            host in "[a-z.]{0,10}",
            port in "(:[0-9]{0,7}|:x|)",
            path in "[ -?A-~]{0,30}",
            cut in any::<prop::sample::Index>(),
        ) {
            // "Zq" marks the secret's start: the rest of the line must not hold it by chance.
            prop_assume!(!path.contains("Zq"));
            let secret = format!("Zq{secret}Xj");
            let userinfo = if user.is_empty() { secret.clone() } else { format!("{user}:{secret}") };
            let line = format!("{scheme}{sep}{userinfo}@{host}{port}{path}");
            let r = redactor();
            let shown = r.text(&line, false);
            prop_assert!(!shown.contains(&secret), "{line} -> {shown}");
            // Cut anywhere (a line over 64 KiB): no part of the secret shows.
            let mut at = cut.index(line.len() + 1);
            while !line.is_char_boundary(at) { at -= 1; }
            let cut_shown = r.text(&line[..at], at < line.len());
            prop_assert!(!cut_shown.contains("Zq"), "{} -> {cut_shown}", &line[..at]);
            // As a request's URL (only http and https become requests).
            if let Ok(parsed) = Url::parse(&line)
                && matches!(parsed.scheme(), "http" | "https")
            {
                let shown = r.url(&parsed);
                prop_assert!(!shown.contains(&secret), "{line} -> {shown}");
                if let Some(pw) = secret_of(&parsed) {
                    prop_assert!(!shown.contains(&pw), "{line} -> {shown}");
                }
            }
        }

        /// Listed parameters never show their value, whatever their case and position.
        #[test]
        fn listed_parameters_are_masked_wherever_they_are(
            name in prop::sample::select(DEFAULT_MASKED_PARAMS),
            upper in any::<bool>(),
            value in "[A-Za-z0-9._~-]{1,20}",
            before in "[a-z]{1,5}=[a-z0-9]{0,5}",
            in_fragment in any::<bool>(),
        ) {
            let name = if upper { name.to_ascii_uppercase() } else { name.to_owned() };
            let value = format!("V{value}");
            let sep = if in_fragment { '#' } else { '?' };
            let text = format!("https://a.test/p{sep}{before}&{name}={value}&z=1");
            let r = redactor();
            prop_assert!(!r.text(&text, false).contains(&value));
            let parsed = Url::parse(&text).unwrap();
            prop_assert!(!r.url(&parsed).contains(&value));
        }

        /// Bounding never exceeds the bound and never splits a character.
        #[test]
        fn bounded_is_within_bytes(text in "\\PC{0,80}", max in 3usize..60) {
            let b = bounded(&text, max);
            prop_assert!(b.len() <= max);
            prop_assert!(text.starts_with(b.trim_end_matches('…')));
        }
    }

    fn secret_of(url: &Url) -> Option<String> {
        secret(url).filter(|s| s.len() > 2).map(str::to_owned)
    }
}
