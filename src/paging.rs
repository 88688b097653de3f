//! Pagination: how a line's next page is found. A `Link: <...>; rel="next"` header (RFC 8288,
//! relative targets resolved against the page's URL), or a jq filter over the JSON body that
//! yields the next URL, or a cursor that `--next-param` puts into the original URL's query.
//! This module decides the next URL; the scheduler fetches it (`scheduler::job`).

use std::num::NonZeroU32;

use serde_json::Value;
use url::Url;

use crate::filter::{Filter, Input};
use crate::request::parse_url;

/// How a line is paginated (flags, or a spec line's keys).
#[derive(Debug, Clone)]
pub(crate) struct Paging {
    /// Follow `Link rel="next"`.
    pub follow_next: bool,
    /// A jq filter yielding the next URL or cursor.
    pub next: Option<Filter>,
    /// Put the cursor `next` yields into this query parameter of the original URL.
    pub next_param: Option<String>,
    /// Pages fetched at most for the line, the first included.
    pub max_pages: NonZeroU32,
}

impl Paging {
    /// Whether this finds next pages at all.
    pub(crate) fn active(&self) -> bool {
        self.follow_next || self.next.is_some()
    }

    /// The page after the one at `page_url` (`original` is the line's URL), from its `Link`
    /// header values and its body. `Ok(None)`: the last page. `Err`: the filter failed.
    pub(crate) fn next_url(
        &self,
        original: &Url,
        page_url: &Url,
        link: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Option<Url>, String> {
        if let Some(filter) = &self.next {
            let input = Input::parse(body.unwrap_or_default())?;
            let value = filter.first(&input).map_err(|e| {
                format!("--next {}: {e}", crate::redact::bounded(filter.text(), 100))
            })?;
            let text = match value {
                None | Some(Value::Null | Value::Bool(false)) => return Ok(None),
                Some(Value::String(s)) if s.is_empty() => return Ok(None),
                Some(Value::String(s)) => s,
                Some(Value::Number(n)) => n.to_string(),
                Some(other) => {
                    return Err(format!(
                        "--next {} gave {}, not a URL or a cursor",
                        crate::redact::bounded(filter.text(), 100),
                        crate::redact::bounded(&other.to_string(), 80)
                    ));
                }
            };
            return match &self.next_param {
                Some(param) => Ok(Some(with_param(original, param, &text))),
                None => resolve(page_url, &text).map(Some),
            };
        }
        if self.follow_next
            && let Some(target) = link.and_then(link_next)
        {
            return resolve(page_url, &target).map(Some);
        }
        Ok(None)
    }
}

/// `base` with query parameter `name` set to `value` (replacing any earlier value).
pub(crate) fn with_param(base: &Url, name: &str, value: &str) -> Url {
    let mut url = base.clone();
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    url
}

/// `target` resolved against `base`, checked like an input URL.
fn resolve(base: &Url, target: &str) -> Result<Url, String> {
    let url = base
        .join(target.trim())
        .map_err(|e| format!("the next page's URL is not valid: {e}"))?;
    parse_url(url.as_str()).map_err(|e| format!("the next page's URL: {e}"))
}

/// The target of the first `rel="next"` link in a `Link` header value (several values joined
/// with commas). `rel` may list several relation types; names compare case-insensitively.
pub(crate) fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let after = &rest[close + 1..];
        // The link's parameters run up to the next link's `<` (a `<` cannot appear unquoted
        // in parameters that matter here).
        let end = after.find('<').unwrap_or(after.len());
        let params = &after[..end];
        let is_next = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_end_matches(',')
                    .trim_end()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = &after[end..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_next_finds_the_next_relation() {
        let h = r#"<https://api.test/items?page=1>; rel="prev", <https://api.test/items?page=3>; rel="next""#;
        assert_eq!(
            link_next(h).as_deref(),
            Some("https://api.test/items?page=3")
        );
        assert_eq!(
            link_next("</a?b=1,2>; REL=\"first next\"").as_deref(),
            Some("/a?b=1,2")
        );
        assert_eq!(link_next("<x>; rel=next").as_deref(), Some("x"));
        assert_eq!(
            link_next("<1>; rel=\"next\", </0>; rel=\"first\"").as_deref(),
            Some("1")
        );
        assert_eq!(link_next("<x>; rel=\"nextish\""), None);
        assert_eq!(link_next("garbage <"), None);
        assert_eq!(link_next(""), None);
    }

    #[test]
    fn relative_links_and_cursors() {
        let original = Url::parse("http://a.test/list?n=3&cursor=old").unwrap();
        let page = Url::parse("http://a.test/list/2?n=3").unwrap();
        let p = Paging {
            follow_next: true,
            next: None,
            next_param: None,
            max_pages: NonZeroU32::MIN,
        };
        let next = p.next_url(&original, &page, Some("<3?n=3>; rel=\"next\""), None);
        assert_eq!(next.unwrap().unwrap().as_str(), "http://a.test/list/3?n=3");
        assert!(
            p.next_url(&original, &page, Some("<ftp://x/>; rel=next"), None)
                .is_err()
        );
        let p = Paging {
            next: Some(Filter::new(".next").unwrap()),
            next_param: Some("cursor".into()),
            ..p
        };
        let next = p.next_url(&original, &page, None, Some(br#"{"next":"c 2"}"#));
        assert_eq!(
            next.unwrap().unwrap().as_str(),
            "http://a.test/list?n=3&cursor=c+2"
        );
        assert_eq!(
            p.next_url(&original, &page, None, Some(br#"{"next":null}"#)),
            Ok(None)
        );
        assert!(
            p.next_url(&original, &page, None, Some(br#"{"next":[1]}"#))
                .is_err()
        );
        assert!(p.next_url(&original, &page, None, Some(b"<html>")).is_err());
    }
}
