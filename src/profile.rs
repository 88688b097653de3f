//! Per-host profiles: settings that apply only to the hosts a pattern matches.
//!
//! A [`HostProfile`] is a [`HostPattern`] (an exact host name such as `api.example.com`, or a
//! glob `*.example.org`) with the values that differ for those hosts: headers, per-host rate
//! and concurrency, timeout, retries, User-Agent, proxy. [`most_specific`] picks the profile of a
//! host: an exact name beats any glob, and among globs the one with more labels after `*.`
//! wins (two globs with as many labels that both match a host are the same glob, which
//! `Settings::check` refuses). `*.example.org` matches `a.example.org` and `a.b.example.org`
//! but not `example.org` itself. This module does not apply a profile: `fetch` adds its
//! headers and picks its proxy's client per hop, `limit` its rate and cap per host, the
//! `scheduler` its timeout and retries.

use std::fmt;
use std::num::NonZeroUsize;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use crate::proxy::Proxy;
use crate::units::Rate;

/// Which hosts a profile applies to: one exact host name (or IP address), or `*.` and a name,
/// matching every host one or more labels below that name. Case does not matter; a trailing
/// dot is ignored.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HostPattern {
    /// The name without `*.`, lower case.
    name: String,
    /// Whether it is a glob (`*.name`).
    glob: bool,
}

impl HostPattern {
    /// Whether `host` (a URL's host, as `url::Url::host_str` gives it) is one of this
    /// pattern's hosts.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        if !self.glob {
            return host.eq_ignore_ascii_case(&self.name);
        }
        // `host` ends with `.name` and has at least one label before it.
        let (n, h) = (self.name.len(), host.len());
        h > n + 1
            && host.as_bytes()[h - n - 1] == b'.'
            && host[h - n..].eq_ignore_ascii_case(&self.name)
    }

    /// How specific the pattern is: exact names first, then globs by their labels.
    fn specificity(&self) -> (bool, usize) {
        (!self.glob, self.name.split('.').count())
    }
}

impl FromStr for HostPattern {
    type Err = String;

    /// The name is read as a URL's host is (`url::Host::parse`), so it is compared in the
    /// form `Url::host_str` gives: lower case, an internationalised name in its `xn--` form,
    /// an IPv4 address in dotted form, an IPv6 address in brackets (`::1` is taken as `[::1]`).
    /// A port, or anything else a URL's host cannot hold, is refused: such a pattern would
    /// never match.
    fn from_str(s: &str) -> Result<HostPattern, String> {
        let fail = |why: &str| {
            format!(
                "`{}` is not a host name or a glob `*.name` ({why})",
                crate::redact::one_line(&crate::redact::bounded(s, 100))
            )
        };
        let text = s.trim().trim_end_matches('.');
        let (glob, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if name.is_empty() || name.starts_with('.') || name.contains("..") {
            return Err(fail("an empty label"));
        }
        if name.contains('*') {
            return Err(fail("a `*` only as the whole first label"));
        }
        let host = match name.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => url::Host::Ipv6(v6),
            Err(_) => url::Host::parse(name).map_err(|e| {
                if name.contains(':') && !name.starts_with('[') {
                    fail("a pattern has no port: it matches the host on every port")
                } else {
                    fail(&e.to_string())
                }
            })?,
        };
        if glob && !matches!(host, url::Host::Domain(_)) {
            return Err(fail("a glob needs a name, not an IP address"));
        }
        Ok(HostPattern {
            name: host.to_string(),
            glob,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.glob {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPattern({self})")
    }
}

/// What differs for the hosts of one pattern (a config file's `[hosts."pattern"]`). Each
/// value left empty (`None`, no headers, no rates) is the run's own. Build it with
/// [`HostProfile::new`] and set the fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostProfile {
    /// The hosts it applies to.
    pub pattern: HostPattern,
    /// Headers sent to these hosts only: each name replaces the run's headers of that name
    /// (`Settings::request`), a spec line's header of that name replaces it; a redirect to
    /// a host the pattern does not match does not carry them.
    pub headers: HeaderMap,
    /// Stacked rate limits for each of these hosts, instead of `Settings::per_host_rates`
    /// (the global `Settings::rates` still apply).
    pub rates: Vec<Rate>,
    /// Most requests in flight to each of these hosts, instead of
    /// `Settings::per_host_concurrency`.
    pub concurrency: Option<NonZeroUsize>,
    /// The whole-request timeout of each attempt of a line whose URL is on these hosts.
    pub timeout: Option<Duration>,
    /// Retries of a line whose URL is on these hosts.
    pub retries: Option<u32>,
    /// The User-Agent sent to these hosts (a `User-Agent` in `headers` wins).
    pub user_agent: Option<HeaderValue>,
    /// The proxy for requests (each redirect hop) to these hosts, instead of
    /// `Settings::proxy` or the proxy environment variables (`NO_PROXY` still applies).
    pub proxy: Option<Proxy>,
}

impl HostProfile {
    /// A profile for `pattern` that changes nothing yet.
    pub fn new(pattern: HostPattern) -> HostProfile {
        HostProfile {
            pattern,
            headers: HeaderMap::new(),
            rates: Vec::new(),
            concurrency: None,
            timeout: None,
            retries: None,
            user_agent: None,
            proxy: None,
        }
    }

    /// Put this profile's headers into `headers` (a hop's, to a matching host), except the
    /// names in `own` (a spec line's, which beat the profile).
    pub(crate) fn add_headers(&self, headers: &mut HeaderMap, own: &[HeaderName]) {
        for name in self.headers.keys() {
            if !own.contains(name) {
                headers.remove(name);
            }
        }
        for (name, value) in &self.headers {
            if !own.contains(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        if let Some(ua) = &self.user_agent
            && !self.headers.contains_key(USER_AGENT)
            && !own.contains(&USER_AGENT)
        {
            headers.insert(USER_AGENT, ua.clone());
        }
    }
}

/// The profile for `host`, with its index: the most specific pattern that matches.
pub(crate) fn most_specific<'a>(
    profiles: &'a [HostProfile],
    host: &str,
) -> Option<(usize, &'a HostProfile)> {
    profiles
        .iter()
        .enumerate()
        .filter(|(_, p)| p.pattern.matches(host))
        .max_by_key(|(_, p)| p.pattern.specificity())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(p: &str) -> HostProfile {
        HostProfile::new(p.parse().unwrap())
    }

    #[test]
    fn globs_match_one_or_more_labels_below_their_name_only() {
        let g: HostPattern = "*.Example.org.".parse().unwrap();
        assert_eq!(g.to_string(), "*.example.org");
        assert!(g.matches("a.example.org"));
        assert!(g.matches("a.b.EXAMPLE.org"));
        assert!(!g.matches("example.org"));
        assert!(!g.matches("badexample.org"));
        assert!(!g.matches(".example.org"));
        let e: HostPattern = "api.example.org".parse().unwrap();
        assert!(e.matches("API.example.org") && !e.matches("x.api.example.org"));
        for bad in [
            "",
            "*",
            "*.",
            "a.*.org",
            "**.org",
            "a..b",
            "ex ample.org",
            "*.*.org",
            "api.example.org:8080",
            "*.127.0.0.1",
            "a/b",
            "a\nb",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
        assert!(
            "127.0.0.1"
                .parse::<HostPattern>()
                .unwrap()
                .matches("127.0.0.1")
        );
    }

    /// A pattern is read as a URL's host is, so that it matches what `Url::host_str` gives:
    /// one that could never match (a port, `::1` without brackets) is not left silently idle.
    #[test]
    fn patterns_take_the_form_of_a_urls_host() {
        let host = |s: &str| url::Url::parse(s).unwrap().host_str().unwrap().to_owned();
        for (pattern, url) in [
            ("::1", "http://[::1]:9/"),
            ("[::1]", "http://[0:0:0:0:0:0:0:1]/"),
            ("127.1", "http://127.0.0.1/"),
            ("Bücher.example", "http://bücher.example/"),
            ("*.bücher.example", "http://a.BÜCHER.example/"),
        ] {
            let p: HostPattern = pattern.parse().unwrap();
            assert!(p.matches(&host(url)), "{pattern} {url}");
        }
        let e = "api.example.org:8080".parse::<HostPattern>().unwrap_err();
        assert!(e.contains("no port"), "{e}");
    }

    #[test]
    fn exact_beats_glob_and_longer_globs_beat_shorter() {
        let ps = [
            profile("*.org"),
            profile("*.example.org"),
            profile("api.example.org"),
            profile("*.api.example.org"),
        ];
        let pick = |h: &str| most_specific(&ps, h).map(|(_, p)| p.pattern.to_string());
        assert_eq!(pick("api.example.org").unwrap(), "api.example.org");
        assert_eq!(pick("v1.api.example.org").unwrap(), "*.api.example.org");
        assert_eq!(pick("www.example.org").unwrap(), "*.example.org");
        assert_eq!(pick("example.org").unwrap(), "*.org");
        assert_eq!(pick("example.com"), None);
    }

    #[test]
    fn profile_headers_replace_the_runs_and_yield_to_the_spec_lines() {
        let mut p = profile("a.test");
        p.headers
            .append("accept", HeaderValue::from_static("application/json"));
        p.headers.append("x-a", HeaderValue::from_static("1"));
        p.user_agent = Some(HeaderValue::from_static("bot/1"));
        let mut h = HeaderMap::new();
        h.insert("accept", HeaderValue::from_static("text/html"));
        h.insert("x-a", HeaderValue::from_static("spec"));
        p.add_headers(&mut h, &[HeaderName::from_static("x-a")]);
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["x-a"], "spec");
        assert_eq!(h[USER_AGENT], "bot/1");
    }
}
