//! Host identity for per-host limits: what "the same host" means.
//!
//! A host is the triple scheme + host + port of a URL (its origin), with the port made
//! explicit (`http://example.com` and `http://example.com:80` are one host;
//! `https://example.com` is another, as are `example.com` and `www.example.com`, and two
//! ports on 127.0.0.1). It is what a server's rate limiter usually keys on, and it is what a
//! connection pool keys on. This module does not resolve names: two names for one address are
//! two hosts.

use std::fmt;
use std::sync::Arc;

use url::Url;

/// `scheme://host:port`, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct HostKey(Arc<str>);

impl HostKey {
    /// The host of `url` (an http or https URL, as `input` guarantees).
    pub(crate) fn of(url: &Url) -> HostKey {
        HostKey(crate::shard::host_key(url).into())
    }
}

impl HostKey {
    /// The key as text, `scheme://host:port` (what `--shard` hashes).
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The host name (or address) alone, as the URL's `host_str` gave it: what a host
    /// profile's pattern matches.
    pub(crate) fn name(&self) -> &str {
        let rest = self.0.split_once("://").map_or(&*self.0, |(_, r)| r);
        rest.rsplit_once(':').map_or(rest, |(host, _)| host)
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        HostKey::of(&Url::parse(s).unwrap()).to_string()
    }

    #[test]
    fn origin_with_explicit_port() {
        assert_eq!(key("http://Example.COM/a?b"), "http://example.com:80");
        assert_eq!(key("http://example.com:80/x"), "http://example.com:80");
        assert_eq!(key("https://example.com/"), "https://example.com:443");
        assert_eq!(key("http://u:p@127.0.0.1:8080/"), "http://127.0.0.1:8080");
        assert_eq!(key("http://[::1]:9/"), "http://[::1]:9");
        assert_ne!(key("http://a.test/"), key("http://www.a.test/"));
        let name = |s: &str| HostKey::of(&Url::parse(s).unwrap()).name().to_owned();
        assert_eq!(name("https://Api.Example.com/x"), "api.example.com");
        assert_eq!(name("http://[::1]:9/"), "[::1]");
    }
}
