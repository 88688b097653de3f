//! The proxy URL type (`--proxy`, a host profile's `proxy`): which schemes are accepted, and
//! showing one without its password. Building a client that uses it is `fetch`'s.

use std::fmt;
use std::str::FromStr;

use url::Url;

/// A proxy URL: `http://`, `https://`, `socks5://` (names resolved here), `socks5h://`
/// (resolved by the proxy), `socks4://` or `socks4a://`. Any other scheme is refused when the
/// text is parsed, so a typo (`sock5://`) can never mean a direct connection. Shown with its
/// password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy(Url);

/// The proxy schemes reqwest speaks.
const PROXY_SCHEMES: [&str; 6] = ["http", "https", "socks5", "socks5h", "socks4", "socks4a"];

impl Proxy {
    /// The URL to hand to the HTTP client (with its credentials).
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl FromStr for Proxy {
    type Err = String;

    /// The error never quotes the text: it may hold a password.
    fn from_str(s: &str) -> Result<Proxy, String> {
        let url = Url::parse(s.trim()).map_err(|e| format!("not a valid proxy URL ({e})"))?;
        if !PROXY_SCHEMES.contains(&url.scheme()) {
            return Err(format!(
                "unsupported proxy scheme `{}` (use one of {})",
                crate::redact::bounded(url.scheme(), 32),
                PROXY_SCHEMES.join(", ")
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the proxy URL has no host".to_owned());
        }
        Ok(Proxy(url))
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::display_url(&self.0))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_of_unknown_schemes_are_refused_without_echoing_secrets() {
        for bad in ["sock5://u:hunter2@p.test:1080", "htp://u:hunter2@p.test/"] {
            let e = bad.parse::<Proxy>().unwrap_err();
            assert!(e.contains("unsupported proxy scheme"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let p: Proxy = "socks5h://u:hunter2@p.test:1080".parse().unwrap();
        assert_eq!(p.to_string(), "socks5h://u:****@p.test:1080");
        assert_eq!(format!("{p:?}"), "Proxy(socks5h://u:****@p.test:1080)");
        assert!("http://:1/".parse::<Proxy>().is_err());
    }
}
