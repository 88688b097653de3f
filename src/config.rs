//! Settings: what a run is configured with, and where each value comes from.
//!
//! [`Options`] is the raw, partial form shared by the command line (clap) and the config file
//! (TOML): every field is optional, so layers can be merged (`defaults < file < flags`, where
//! clap has already put each flag over its `FETCHALL_*` environment variable).
//! [`Settings`] is the resolved, complete form the pipeline takes; tests and library users
//! build it directly. clap types stop here: nothing below this module sees them.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::record::BodyMode;
use crate::retry::Policy;
use crate::units::{ByteSize, HumanDuration, Rate};

/// The default number of requests in flight (`--concurrency`).
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(50).unwrap();
/// The default lookahead (`--lookahead`): jobs held waiting for their host's turn.
pub const DEFAULT_LOOKAHEAD: NonZeroUsize = NonZeroUsize::new(4_000).unwrap();
/// The default whole-request timeout (`--timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default connect timeout (`--connect-timeout`).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default body size limit (`--max-body`).
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;
/// The default read-idle timeout (`--read-timeout`): longest wait for the next bytes.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// The default time requests in flight get to finish after a stop signal (`--grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
pub use crate::retry::{
    DEFAULT_MAX_RETRY_WAIT, DEFAULT_RETRIES, DEFAULT_RETRY_BASE, DEFAULT_RETRY_CAP,
};

/// Run options as given on the command line or in a config file; `None` means "not given here".
///
/// Field names are the long flag names and the config keys (`connect-timeout`, not
/// `connect_timeout`), so a user learns one spelling.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Most requests in flight at once [default: 50]
    #[arg(short = 'c', long, value_name = "N", env = "FETCHALL_CONCURRENCY")]
    pub concurrency: Option<NonZeroUsize>,

    /// Rate limit for request starts: N/s, N/m or N/h (fractions allowed, e.g. 0.5/s).
    /// Repeat to stack quotas; all apply [default: unlimited]
    #[arg(short = 'r', long, value_name = "RATE", env = "FETCHALL_RATE")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub rate: Vec<Rate>,

    /// Requests a rate limit lets through back to back after an idle spell, for every quota
    /// [default: auto: 1 below 50/s, else 20 ms worth of requests, so late timer wake-ups do
    /// not lower the mean rate; see docs/rate-limiting.md]
    #[arg(long, value_name = "N", env = "FETCHALL_BURST")]
    pub burst: Option<NonZeroU32>,

    /// Whole-request timeout of each attempt, connect to last body byte (e.g. 30s, 500ms)
    /// [default: 30s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_TIMEOUT")]
    pub timeout: Option<HumanDuration>,

    /// TCP (and TLS) connect timeout [default: 10s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<HumanDuration>,

    /// How to put the response body in the record [default: auto]
    #[arg(long, value_enum, value_name = "MODE", env = "FETCHALL_BODY")]
    pub body: Option<BodyMode>,

    /// Largest body to accept, in bytes (units: k, Ki, M, Mi, G, Gi); a larger one fails with
    /// kind too_large [default: 10MiB]
    #[arg(long, value_name = "SIZE", env = "FETCHALL_MAX_BODY")]
    pub max_body: Option<ByteSize>,

    /// User-Agent header [default: fetchall/<version>]
    #[arg(short = 'A', long, value_name = "TEXT", env = "FETCHALL_USER_AGENT")]
    pub user_agent: Option<String>,

    /// Retries after a failed attempt (connect, timeout, cut-off body, 408/429/502/503/504)
    /// [default: 2]
    #[arg(long, value_name = "N", env = "FETCHALL_RETRIES")]
    pub retries: Option<u32>,

    /// First backoff ceiling; the wait before retry n is random in [0, min(cap, base*2^(n-1))]
    /// [default: 250ms]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_RETRY_BASE")]
    pub retry_base: Option<HumanDuration>,

    /// Largest backoff ceiling [default: 10s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_RETRY_CAP")]
    pub retry_cap: Option<HumanDuration>,

    /// Longest Retry-After honoured; a server asking for more fails the record, stating its
    /// wait [default: 60s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_MAX_RETRY_WAIT")]
    pub max_retry_wait: Option<HumanDuration>,

    /// Also retry 500 Internal Server Error [default: off]
    #[arg(long, env = "FETCHALL_RETRY_500")]
    #[serde(default)]
    pub retry_500: bool,

    /// Also retry non-idempotent methods (POST, PATCH) [default: off]
    #[arg(long, env = "FETCHALL_RETRY_NON_IDEMPOTENT")]
    #[serde(default)]
    pub retry_non_idempotent: bool,

    /// Read-idle timeout: longest wait for the next bytes of a response [default: 15s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_READ_TIMEOUT")]
    pub read_timeout: Option<HumanDuration>,

    /// After Ctrl-C or SIGTERM, how long requests in flight may finish before they are
    /// cancelled [default: 5s]
    #[arg(long, value_name = "DURATION", env = "FETCHALL_GRACE")]
    pub grace: Option<HumanDuration>,

    /// Skip input lines that have an ok record (same seq and url) in this earlier output
    #[arg(long, value_name = "PREVIOUS.jsonl", env = "FETCHALL_RESUME")]
    pub resume: Option<PathBuf>,

    /// Do not verify TLS certificates: accept self-signed, expired or wrong-name certificates
    /// (warns on stderr) [default: off]
    #[arg(short = 'k', long, value_name = "BOOL", env = "FETCHALL_INSECURE",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: Option<bool>,

    /// HTTP method for every request (a spec line's "method" wins)
    /// [default: GET, or POST with --data/--json]
    #[arg(short = 'X', long, value_name = "METHOD", env = "FETCHALL_METHOD")]
    pub method: Option<String>,

    /// Request header "Name: value"; repeat for more. A spec line's header of the same name
    /// replaces it [default: none]
    #[arg(short = 'H', long, value_name = "HEADER", env = "FETCHALL_HEADER")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub header: Vec<String>,

    /// Request body: TEXT, or @FILE to send a file's bytes; implies POST; sent as a form
    /// (application/x-www-form-urlencoded) unless -H sets a Content-Type [default: none]
    #[arg(
        short = 'd',
        long,
        value_name = "TEXT|@FILE",
        env = "FETCHALL_DATA",
        conflicts_with = "json"
    )]
    pub data: Option<String>,

    /// JSON request body (TEXT or @FILE; must parse as JSON); sets Content-Type and Accept to
    /// application/json and implies POST [default: none]
    #[arg(long, value_name = "JSON|@FILE", env = "FETCHALL_JSON")]
    pub json: Option<String>,

    /// Most redirects to follow; 0 does not follow (a 3xx is then the record's status)
    /// [default: 10]
    #[arg(long, value_name = "N", env = "FETCHALL_MAX_REDIRECTS")]
    pub max_redirects: Option<u32>,

    /// Send every request through this proxy: http://, https://, socks5:// (names resolved
    /// here), socks5h:// (resolved by the proxy) or socks4://; NO_PROXY applies. Without it,
    /// HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY are honoured [default: from the environment]
    #[arg(short = 'x', long, value_name = "URL", env = "FETCHALL_PROXY")]
    pub proxy: Option<String>,

    /// Add the response headers to each record ("headers": {name: [values]}) [default: false]
    #[arg(long, value_name = "BOOL", env = "FETCHALL_HEADERS",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub headers: Option<bool>,

    /// Write each response body to a file in DIR (named by the spec's id, else by seq); the
    /// record's "saved" field holds its path, size and sha256 [default: off]
    #[arg(long, value_name = "DIR", env = "FETCHALL_SAVE_DIR")]
    pub save_dir: Option<PathBuf>,

    /// Write records to FILE instead of stdout (created or truncated) [default: stdout]
    #[arg(short = 'o', long, value_name = "FILE", env = "FETCHALL_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Emit records in input order (a bounded reorder buffer of 2 x concurrency records;
    /// while it is full no new request starts) [default: false, completion order]
    #[arg(long, value_name = "BOOL", env = "FETCHALL_ORDERED",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ordered: Option<bool>,

    /// Write the end-of-run summary (counts, latency percentiles, throughput) to FILE as JSON
    /// [default: off]
    #[arg(long, value_name = "FILE", env = "FETCHALL_SUMMARY")]
    pub summary: Option<PathBuf>,

    /// Most requests in flight at once to one host (scheme + host + port) [default: unlimited]
    #[arg(long, value_name = "N", env = "FETCHALL_PER_HOST_CONCURRENCY")]
    pub per_host_concurrency: Option<NonZeroUsize>,

    /// Rate limit for request starts per host (scheme + host + port): N/s, N/m or N/h.
    /// Repeat to stack quotas; all apply, together with --rate [default: unlimited]
    #[arg(long, value_name = "RATE", env = "FETCHALL_PER_HOST_RATE")]
    #[serde(default, deserialize_with = "one_or_many")]
    pub per_host_rate: Vec<Rate>,

    /// Adapt each host's rate: a 429 halves it, each success raises it by 0.05/s, up to
    /// --per-host-rate (or --rate); records get `host_rate` [default: off]
    #[arg(long, value_name = "BOOL", env = "FETCHALL_ADAPTIVE",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub adaptive: Option<bool>,

    /// Most jobs held waiting for their host's turn (a slow host's queue, over all hosts);
    /// when full, reading input pauses (about 1 KB each) [default: 4000]
    #[arg(long, value_name = "N", env = "FETCHALL_LOOKAHEAD")]
    pub lookahead: Option<NonZeroUsize>,

    /// Threads of the async runtime that runs the requests; 0 means one per CPU core. One
    /// thread keeps tens of thousands of requests a second going; more help only when
    /// decoding large bodies is the bottleneck [default: 1]
    #[arg(long, value_name = "N", env = "FETCHALL_THREADS")]
    pub threads: Option<usize>,
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(r) => vec![r],
        OneOrMany::Many(v) => v,
    })
}

impl Options {
    /// Read a config file. Unknown keys and bad values are errors that name the key.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Options::from_toml(&text).map_err(|message| ConfigError {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parse config file text.
    pub fn from_toml(text: &str) -> Result<Options, String> {
        toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt; keep it readable on
            // one line of stderr.
            e.to_string()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    /// Layer `over` on top of `self`: every value `over` gives wins.
    pub fn merge(self, over: Options) -> Options {
        Options {
            concurrency: over.concurrency.or(self.concurrency),
            rate: if over.rate.is_empty() {
                self.rate
            } else {
                over.rate
            },
            burst: over.burst.or(self.burst),
            timeout: over.timeout.or(self.timeout),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            body: over.body.or(self.body),
            max_body: over.max_body.or(self.max_body),
            user_agent: over.user_agent.or(self.user_agent),
            retries: over.retries.or(self.retries),
            retry_base: over.retry_base.or(self.retry_base),
            retry_cap: over.retry_cap.or(self.retry_cap),
            max_retry_wait: over.max_retry_wait.or(self.max_retry_wait),
            retry_500: over.retry_500 || self.retry_500,
            retry_non_idempotent: over.retry_non_idempotent || self.retry_non_idempotent,
            read_timeout: over.read_timeout.or(self.read_timeout),
            grace: over.grace.or(self.grace),
            resume: over.resume.or(self.resume),
            insecure: over.insecure.or(self.insecure),
            method: over.method.or(self.method),
            header: if over.header.is_empty() {
                self.header
            } else {
                over.header
            },
            data: over.data.or(self.data),
            json: over.json.or(self.json),
            max_redirects: over.max_redirects.or(self.max_redirects),
            proxy: over.proxy.or(self.proxy),
            headers: over.headers.or(self.headers),
            save_dir: over.save_dir.or(self.save_dir),
            output: over.output.or(self.output),
            ordered: over.ordered.or(self.ordered),
            summary: over.summary.or(self.summary),
            per_host_concurrency: over.per_host_concurrency.or(self.per_host_concurrency),
            per_host_rate: if over.per_host_rate.is_empty() {
                self.per_host_rate
            } else {
                over.per_host_rate
            },
            adaptive: over.adaptive.or(self.adaptive),
            lookahead: over.lookahead.or(self.lookahead),
            threads: over.threads.or(self.threads),
        }
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Everything a run needs to know, fully resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: NonZeroUsize,
    /// Stacked rate limits on request starts; empty means unlimited.
    pub rates: Vec<Rate>,
    /// The burst of every quota; `None` picks one per quota (see `quota::auto_burst`).
    pub burst: Option<NonZeroU32>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub body: BodyMode,
    pub max_body: u64,
    pub user_agent: String,
    /// How failed attempts are retried.
    pub retry: Policy,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    /// After a stop, how long requests in flight may finish before they are cancelled.
    pub grace: Duration,
    /// An earlier run's output: lines with an ok record there are skipped.
    pub resume: Option<PathBuf>,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Request defaults from the flags (`-X`, `-H`, `-d`, `--json`), as given; a spec line
    /// overrides them. Checked when the run starts (a bad one stops it with a usage error).
    pub request: RequestOptions,
    /// Redirects followed at most; 0 does not follow.
    pub max_redirects: u32,
    /// Proxy for every request; `None` uses the proxy environment variables.
    pub proxy: Option<String>,
    /// Put response headers in each record.
    pub response_headers: bool,
    /// Write each body to a file in this directory.
    pub save_dir: Option<PathBuf>,
    /// Emit records in input order through a bounded reorder buffer.
    pub ordered: bool,
    /// Write records here instead of stdout (used by the binary; `start` ignores it).
    pub output: Option<PathBuf>,
    /// Write the JSON summary here (used by the binary; `start` ignores it).
    pub summary: Option<PathBuf>,
    /// Most requests in flight per host; `None` means no per-host cap.
    pub per_host_concurrency: Option<NonZeroUsize>,
    /// Stacked rate limits per host; empty means none.
    pub per_host_rates: Vec<Rate>,
    /// AIMD per host on 429 responses.
    pub adaptive: bool,
    /// Most jobs held waiting for admission.
    pub lookahead: NonZeroUsize,
    /// Runtime threads for the binary (0: one per core); the library runs on its caller's.
    pub threads: usize,
}

/// The request flags, unparsed: see [`crate::request::Template`] for what they mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    pub method: Option<String>,
    pub headers: Vec<String>,
    pub data: Option<String>,
    pub json: Option<String>,
}

/// The default redirect limit (`--max-redirects`).
pub const DEFAULT_MAX_REDIRECTS: u32 = 10;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: DEFAULT_CONCURRENCY,
            rates: Vec::new(),
            burst: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            body: BodyMode::Auto,
            max_body: DEFAULT_MAX_BODY,
            user_agent: default_user_agent(),
            retry: Policy {
                retries: DEFAULT_RETRIES,
                base: DEFAULT_RETRY_BASE,
                cap: DEFAULT_RETRY_CAP,
                max_wait: DEFAULT_MAX_RETRY_WAIT,
                retry_500: false,
                non_idempotent: false,
            },
            read_timeout: DEFAULT_READ_TIMEOUT,
            grace: DEFAULT_GRACE,
            resume: None,
            insecure: false,
            request: RequestOptions::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
            proxy: None,
            response_headers: false,
            save_dir: None,
            ordered: false,
            output: None,
            summary: None,
            per_host_concurrency: None,
            per_host_rates: Vec::new(),
            adaptive: false,
            lookahead: DEFAULT_LOOKAHEAD,
            threads: 1,
        }
    }
}

/// `fetchall/<version>`.
pub fn default_user_agent() -> String {
    format!("fetchall/{}", env!("CARGO_PKG_VERSION"))
}

impl Settings {
    /// Resolve merged options over the defaults.
    pub fn from_options(o: Options) -> Settings {
        let d = Settings::default();
        Settings {
            concurrency: o.concurrency.unwrap_or(d.concurrency),
            rates: o.rate,
            burst: o.burst.or(d.burst),
            timeout: o.timeout.map_or(d.timeout, |t| t.0),
            connect_timeout: o.connect_timeout.map_or(d.connect_timeout, |t| t.0),
            body: o.body.unwrap_or(d.body),
            max_body: o.max_body.map_or(d.max_body, |s| s.0),
            user_agent: o.user_agent.unwrap_or(d.user_agent),
            retry: Policy {
                retries: o.retries.unwrap_or(d.retry.retries),
                base: o.retry_base.map_or(d.retry.base, |t| t.0),
                cap: o.retry_cap.map_or(d.retry.cap, |t| t.0),
                max_wait: o.max_retry_wait.map_or(d.retry.max_wait, |t| t.0),
                retry_500: o.retry_500,
                non_idempotent: o.retry_non_idempotent,
            },
            read_timeout: o.read_timeout.map_or(d.read_timeout, |t| t.0),
            grace: o.grace.map_or(d.grace, |t| t.0),
            resume: o.resume,
            insecure: o.insecure.unwrap_or(d.insecure),
            request: RequestOptions {
                method: o.method,
                headers: o.header,
                data: o.data,
                json: o.json,
            },
            max_redirects: o.max_redirects.unwrap_or(d.max_redirects),
            proxy: o.proxy,
            response_headers: o.headers.unwrap_or(d.response_headers),
            save_dir: o.save_dir,
            ordered: o.ordered.unwrap_or(d.ordered),
            output: o.output,
            summary: o.summary,
            per_host_concurrency: o.per_host_concurrency,
            per_host_rates: o.per_host_rate,
            adaptive: o.adaptive.unwrap_or(d.adaptive),
            lookahead: o.lookahead.unwrap_or(d.lookahead),
            threads: o.threads.unwrap_or(d.threads),
        }
    }
}

impl Settings {
    /// Every option as a config-file key and its TOML value (`None`: not set), in the order
    /// of `config/fetchall.toml`. `fetchall config` prints this.
    pub fn to_toml_values(&self) -> Vec<(&'static str, Option<String>)> {
        let s = |v: &str| toml::Value::String(v.to_owned()).to_string();
        let d = |v: Duration| s(&HumanDuration(v).to_string());
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| s(&p.display().to_string()));
        let list = |items: Vec<String>| {
            format!(
                "[{}]",
                items.iter().map(|i| s(i)).collect::<Vec<_>>().join(", ")
            )
        };
        vec![
            ("concurrency", Some(self.concurrency.to_string())),
            (
                "rate",
                Some(list(self.rates.iter().map(Rate::to_string).collect())),
            ),
            ("burst", self.burst.map(|b| b.to_string())),
            ("timeout", Some(d(self.timeout))),
            ("connect-timeout", Some(d(self.connect_timeout))),
            ("body", Some(s(self.body.as_str()))),
            ("max-body", Some(s(&ByteSize(self.max_body).to_string()))),
            ("user-agent", Some(s(&self.user_agent))),
            ("retries", Some(self.retry.retries.to_string())),
            ("retry-base", Some(d(self.retry.base))),
            ("retry-cap", Some(d(self.retry.cap))),
            ("max-retry-wait", Some(d(self.retry.max_wait))),
            ("retry-500", Some(self.retry.retry_500.to_string())),
            (
                "retry-non-idempotent",
                Some(self.retry.non_idempotent.to_string()),
            ),
            ("read-timeout", Some(d(self.read_timeout))),
            ("grace", Some(d(self.grace))),
            ("resume", path(&self.resume)),
            ("insecure", Some(self.insecure.to_string())),
            ("method", self.request.method.as_deref().map(s)),
            (
                "header",
                Some(list(
                    self.request
                        .headers
                        .iter()
                        .map(|h| mask_header(h))
                        .collect(),
                )),
            ),
            ("data", self.request.data.as_deref().map(s)),
            ("json", self.request.json.as_deref().map(s)),
            ("max-redirects", Some(self.max_redirects.to_string())),
            ("proxy", self.proxy.as_deref().map(|p| s(&mask_url(p)))),
            ("headers", Some(self.response_headers.to_string())),
            ("save-dir", path(&self.save_dir)),
            ("output", path(&self.output)),
            ("ordered", Some(self.ordered.to_string())),
            ("summary", path(&self.summary)),
            (
                "per-host-concurrency",
                self.per_host_concurrency.map(|n| n.to_string()),
            ),
            (
                "per-host-rate",
                Some(list(
                    self.per_host_rates.iter().map(Rate::to_string).collect(),
                )),
            ),
            ("adaptive", Some(self.adaptive.to_string())),
            ("lookahead", Some(self.lookahead.to_string())),
            ("threads", Some(self.threads.to_string())),
        ]
    }
}

/// A URL (the proxy's) as `fetchall config` shows it: a password in it as `****`.
fn mask_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) => crate::fetch::display_url(&url),
        Err(_) => text.to_owned(),
    }
}

/// A `Name: value` header as `fetchall config` shows it: credentials (Authorization,
/// Proxy-Authorization, Cookie) as `****`, so the output can be pasted into an issue.
fn mask_header(header: &str) -> String {
    match header.split_once(':') {
        Some((name, _))
            if ["authorization", "proxy-authorization", "cookie"]
                .contains(&name.trim().to_ascii_lowercase().as_str()) =>
        {
            format!("{}: ****", name.trim())
        }
        _ => header.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let file =
            Options::from_toml("concurrency = 4\nrate = \"10/s\"\ntimeout = \"2s\"").unwrap();
        let flags = Options {
            concurrency: NonZeroUsize::new(8),
            ..Options::default()
        };
        let s = Settings::from_options(file.merge(flags));
        assert_eq!(s.concurrency.get(), 8);
        assert_eq!(s.rates.len(), 1);
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Options::from_toml("concurrancy = 4").unwrap_err();
        assert!(e.contains("concurrancy"), "{e}");
        let e = Options::from_toml("rate = \"ten/s\"").unwrap_err();
        assert!(e.contains("rate"), "{e}");
        let e = Options::from_toml("concurrency = 0").unwrap_err();
        assert!(e.contains("concurrency"), "{e}");
    }
}
