//! Settings: everything a run is configured with, typed.
//!
//! [`Settings`] is what the pipeline takes. Its fields are typed values, never strings to be
//! parsed later: the binary parses flags, environment and config file once, at the edge, and a
//! library user builds the struct directly (`Settings::default()`, then set fields). What the
//! types cannot rule out (a zero timeout, a User-Agent with a line break) is checked by one
//! function, [`Settings::check`], which `start` calls before it does anything else.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::HeaderName;
use url::Url;

use crate::error::SettingsError;
use crate::record::BodyMode;
use crate::request::RequestDefaults;
use crate::retry::RetryPolicy;
use crate::units::Rate;

/// Everything a run needs to know, resolved. Build it with `Settings::default()` and set the
/// fields that differ; `start` checks it (see [`Settings::check`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Settings {
    /// Most requests in flight at once (`--concurrency`).
    pub concurrency: NonZeroUsize,
    /// Stacked rate limits on request starts; empty means unlimited (`--rate`).
    pub rates: Vec<Rate>,
    /// The burst of every quota; `None` picks one per quota (`--burst`, see
    /// docs/rate-limiting.md).
    pub burst: Option<NonZeroU32>,
    /// Whole-request timeout of each attempt, connect to last body byte (`--timeout`).
    pub timeout: Duration,
    /// TCP (and TLS) connect timeout (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response (`--read-timeout`).
    pub read_timeout: Duration,
    /// How the response body goes into the record (`--body`).
    pub body: BodyMode,
    /// Largest body accepted, in bytes after decompression (`--max-body`).
    pub max_body: u64,
    /// The User-Agent header (`--user-agent`).
    pub user_agent: String,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// After a stop, how long requests in flight may finish before they are cancelled.
    pub grace: Duration,
    /// An earlier run's output: lines with an ok record there are skipped (`--resume`).
    pub resume: Option<PathBuf>,
    /// Accept any TLS certificate (`--insecure`).
    pub insecure: bool,
    /// Request defaults (`-X`, `-H`, `-d`, `--json`); a spec line overrides them.
    pub request: RequestDefaults,
    /// Redirects followed at most; 0 does not follow.
    pub max_redirects: u32,
    /// Proxy for every request; `None` uses the proxy environment variables.
    pub proxy: Option<Proxy>,
    /// Put response headers in each record (`--headers`).
    pub response_headers: bool,
    /// Write each body to a file in this directory (`--save-dir`).
    pub save_dir: Option<PathBuf>,
    /// Emit records in input order through a bounded reorder buffer (`--ordered`).
    pub ordered: bool,
    /// Most requests in flight per host; `None` means no per-host cap.
    pub per_host_concurrency: Option<NonZeroUsize>,
    /// Stacked rate limits per host; empty means none.
    pub per_host_rates: Vec<Rate>,
    /// AIMD per host on 429 responses (`--adaptive`).
    pub adaptive: bool,
    /// Most jobs held waiting for admission (`--lookahead`).
    pub lookahead: NonZeroUsize,
    /// Query and fragment parameters whose values are masked in records and logs (any case;
    /// `--mask-param` adds to the default, [`crate::DEFAULT_MASKED_PARAMS`]).
    pub mask_params: Vec<String>,
    /// Header names that carry credentials besides those [`crate::is_credential_header`]
    /// recognises (`--credential-header`): dropped when a redirect leaves the origin.
    pub credential_headers: Vec<HeaderName>,
    /// Files this run reads or writes besides `resume` (the binary's input, `-o`,
    /// `--summary`): `--save-dir` never replaces one of them.
    pub keep_files: Vec<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: NonZeroUsize::new(50).unwrap_or(NonZeroUsize::MIN),
            rates: Vec::new(),
            burst: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(15),
            body: BodyMode::Auto,
            max_body: 10 << 20,
            user_agent: format!("fetchall/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
            grace: Duration::from_secs(5),
            resume: None,
            insecure: false,
            request: RequestDefaults::default(),
            max_redirects: 10,
            proxy: None,
            response_headers: false,
            save_dir: None,
            ordered: false,
            per_host_concurrency: None,
            per_host_rates: Vec::new(),
            adaptive: false,
            lookahead: NonZeroUsize::new(4_000).unwrap_or(NonZeroUsize::MIN),
            mask_params: crate::redact::DEFAULT_MASKED_PARAMS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            credential_headers: Vec::new(),
            keep_files: Vec::new(),
        }
    }
}

impl Settings {
    /// Check what the field types cannot: every duration that bounds a wait is above zero
    /// (a zero timeout is refused rather than read as "no timeout"), and the User-Agent is a
    /// valid header value. The error names the setting.
    pub fn check(&self) -> Result<(), SettingsError> {
        for (name, d) in [
            ("timeout", self.timeout),
            ("connect-timeout", self.connect_timeout),
            ("read-timeout", self.read_timeout),
        ] {
            if d.is_zero() {
                return Err(SettingsError::new(
                    name,
                    "must be greater than zero (a zero timeout would fail every request)",
                ));
            }
        }
        crate::header::value("User-Agent", &self.user_agent)
            .map_err(|e| SettingsError::new("user-agent", e))?;
        Ok(())
    }
}

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
    fn the_defaults_pass_the_check() {
        Settings::default().check().unwrap();
    }

    #[test]
    fn a_zero_timeout_is_refused_by_name() {
        let s = Settings {
            timeout: Duration::ZERO,
            ..Settings::default()
        };
        assert_eq!(s.check().unwrap_err().setting(), "timeout");
        let s = Settings {
            user_agent: "a\r\nX-Evil: 1".into(),
            ..Settings::default()
        };
        assert_eq!(s.check().unwrap_err().setting(), "user-agent");
    }

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
