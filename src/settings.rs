//! Settings: everything a run is configured with, typed.
//!
//! [`Settings`] is what the pipeline takes. Its fields are typed values, never strings to be
//! parsed later: the binary parses flags, environment and config file once, at the edge, and a
//! library user builds the struct directly (`Settings::default()`, then set fields). What the
//! types cannot rule out (a zero timeout, a concurrency no semaphore can hold, a JSON body
//! that is not JSON) is checked by one function, [`Settings::check`], which `start` calls
//! before it does anything else.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use crate::error::SettingsError;
use crate::filter::Filter;
use crate::paging::Paging;
use crate::profile::HostProfile;
pub use crate::proxy::Proxy;
use crate::record::BodyMode;
use crate::request::RequestDefaults;
use crate::retry::RetryPolicy;
use crate::shard::Shard;
use crate::units::Rate;

/// The most requests in flight a run accepts (`--concurrency`).
pub const MAX_CONCURRENCY: usize = 1 << 20;
/// The most jobs a run holds waiting for their host's turn (`--lookahead`).
pub const MAX_LOOKAHEAD: usize = 1 << 24;

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
    pub user_agent: HeaderValue,
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
    /// Repeat the whole input on this schedule: round `n` starts `n * every` after the first
    /// round's start, or at once when the previous round ran past that (`--every`).
    pub every: Option<Duration>,
    /// Rounds to run; `None` means one without `every`, and no end with it (`--rounds`).
    pub rounds: Option<NonZeroU64>,
    /// The SQLite state file that remembers each request's outcome and validators across
    /// rounds and runs (`--state`). Polling without one keeps the state in a temporary file.
    pub state: Option<PathBuf>,
    /// Write only records whose outcome changed (`--changed`); [`crate::Run::next`] still
    /// yields every record.
    pub changed_only: bool,
    /// With state, send `If-None-Match` / `If-Modified-Since` from the stored validators on
    /// GET and HEAD (`--no-conditional` turns it off).
    pub conditional: bool,
    /// Trust only these CA certificates for HTTPS, instead of the system's (`--cacert`).
    pub ca_certs: Option<CaCerts>,
    /// Pace each host from the budget its responses announce in quota headers
    /// (`RateLimit`, `X-RateLimit-*`); off with `--no-quota-headers`. See docs/api.md.
    pub quota_headers: bool,
    /// jq filters whose first output goes into the record's `extract` under their name
    /// (`--extract NAME=FILTER`), run on each ok JSON body.
    pub extract: Vec<(String, Filter)>,
    /// The record's body becomes this filter's first output (`--body-filter`).
    pub body_filter: Option<Filter>,
    /// A record whose body makes this filter yield false, null or nothing is not ok (kind
    /// `assertion`, `--assert`).
    pub assert: Option<Filter>,
    /// Follow each page's `Link: <...>; rel="next"` header (`--follow-next`).
    pub follow_next: bool,
    /// A jq filter over each page's JSON body yielding the next page's URL, or a cursor with
    /// `next_param` (`--next`).
    pub next: Option<Filter>,
    /// Put the cursor `next` yields into this query parameter of the line's URL
    /// (`--next-param`).
    pub next_param: Option<String>,
    /// Pages fetched at most per line, the first included (`--max-pages`).
    pub max_pages: NonZeroU32,
    /// Query and fragment parameters whose values are masked in records and logs (any case;
    /// `--mask-param` adds to the default, [`crate::DEFAULT_MASKED_PARAMS`]).
    pub mask_params: Vec<String>,
    /// Header names that carry credentials besides those [`crate::is_credential_header`]
    /// recognises (`--credential-header`): dropped when a redirect leaves the origin.
    pub credential_headers: Vec<HeaderName>,
    /// Files this run reads or writes besides `resume` (the binary's input, `-o`,
    /// `--summary`): `--save-dir` never replaces one of them.
    pub keep_files: Vec<PathBuf>,
    /// Fetch only the lines of this shard (`--shard K/N`, see docs/scale-out.md); the others
    /// get no record. `None` fetches every line.
    pub shard: Option<Shard>,
    /// Share every rate quota and host pause with the other processes that use this Redis
    /// and [`Settings::limits_key`] (`--limits`, see docs/scale-out.md). `None`: limits are
    /// this process's own.
    pub limits: Option<LimitsUrl>,
    /// The shared budget's name: processes with the same name share it (`--limits-key`).
    pub limits_key: String,
    /// What to do while Redis cannot be reached mid-run (`--limits-fallback`).
    pub limits_fallback: LimitsFallback,
    /// With `--limits-fallback local`: how many processes share the budget; each then keeps
    /// to its rates divided by this while Redis is away (`--limits-share`).
    pub limits_share: NonZeroU32,
    /// Per-host profiles (a config file's `[hosts."pattern"]`): for a request's host, the
    /// most specific matching one applies on top of these settings (see
    /// [`Settings::profile_for`] and docs/api.md).
    pub profiles: Vec<HostProfile>,
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
            user_agent: HeaderValue::from_static(concat!("fetchall/", env!("CARGO_PKG_VERSION"))),
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
            every: None,
            rounds: None,
            state: None,
            changed_only: false,
            conditional: true,
            ca_certs: None,
            quota_headers: true,
            extract: Vec::new(),
            body_filter: None,
            assert: None,
            follow_next: false,
            next: None,
            next_param: None,
            max_pages: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            mask_params: crate::redact::DEFAULT_MASKED_PARAMS
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            credential_headers: Vec::new(),
            keep_files: Vec::new(),
            shard: None,
            limits: None,
            limits_key: "fetchall".to_owned(),
            limits_fallback: LimitsFallback::Wait,
            limits_share: NonZeroU32::MIN,
            profiles: Vec::new(),
        }
    }
}

impl Settings {
    /// How `request` is paginated: its spec's keys, else these settings.
    pub(crate) fn paging_for(&self, request: &crate::request::Request) -> Paging {
        let spec = &request.paging;
        Paging {
            follow_next: spec.follow_next.unwrap_or(self.follow_next),
            next: spec.next.clone().or_else(|| self.next.clone()),
            next_param: spec.next_param.clone().or_else(|| self.next_param.clone()),
            max_pages: spec.max_pages.unwrap_or(self.max_pages),
        }
    }

    /// The profile that applies to `host` (a URL's host name or address): the most specific
    /// of [`Settings::profiles`] whose pattern matches, an exact name before any glob.
    pub fn profile_for(&self, host: &str) -> Option<&HostProfile> {
        crate::profile::most_specific(&self.profiles, host).map(|(_, p)| p)
    }

    /// What a request to a profile's hosts is made with: these settings once per distinct
    /// (timeout, retries) of the profiles, with those in place and without the profiles
    /// (requests find theirs in `fetch::Clients`; a copy of all per profile would grow with
    /// the square of their number), and for each profile the index of its settings.
    pub(crate) fn profiled(&self) -> (Vec<Settings>, Vec<usize>) {
        let mut variants: Vec<(Duration, u32)> = Vec::new();
        let mut index = Vec::with_capacity(self.profiles.len());
        let mut seen = std::collections::HashMap::new();
        for p in &self.profiles {
            let v = (
                p.timeout.unwrap_or(self.timeout),
                p.retries.unwrap_or(self.retry.retries),
            );
            index.push(*seen.entry(v).or_insert_with(|| {
                variants.push(v);
                variants.len() - 1
            }));
        }
        if variants.is_empty() {
            return (Vec::new(), index);
        }
        let base = Settings {
            profiles: Vec::new(),
            ..self.clone()
        };
        let settings = variants
            .into_iter()
            .map(|(timeout, retries)| {
                let mut s = base.clone();
                s.timeout = timeout;
                s.retry.retries = retries;
                s
            })
            .collect();
        (settings, index)
    }

    /// Check what the field types cannot: every duration that bounds a wait is above zero (a
    /// zero timeout is refused rather than read as "no timeout"),
    /// every rate's period too, `concurrency` and `lookahead` are within bounds a run can hold,
    /// and a JSON request body is JSON. The error names the setting.
    pub fn check(&self) -> Result<(), SettingsError> {
        self.check_bounds()?;
        self.check_combinations()?;
        self.check_profiles()
    }

    /// Each profile's pattern once, its timeout and rate periods above zero.
    fn check_profiles(&self) -> Result<(), SettingsError> {
        let mut patterns = std::collections::HashSet::new();
        for p in &self.profiles {
            let fail = |why: &str| {
                SettingsError::new("hosts", format!("[hosts.\"{}\"]: {why}", p.pattern))
            };
            if !patterns.insert(&p.pattern) {
                return Err(fail("given twice"));
            }
            if p.timeout.is_some_and(|t| t.is_zero()) {
                return Err(fail("`timeout` must be greater than zero"));
            }
            if p.rates.iter().any(|r| r.per.is_zero()) {
                return Err(fail("a `rate`'s period must be above zero"));
            }
        }
        Ok(())
    }

    /// Sizes and durations the types allow but a run cannot use.
    fn check_bounds(&self) -> Result<(), SettingsError> {
        if self.concurrency.get() > MAX_CONCURRENCY {
            return Err(SettingsError::new(
                "concurrency",
                format!("at most {MAX_CONCURRENCY} (each request in flight holds a socket)"),
            ));
        }
        if self.lookahead.get() > MAX_LOOKAHEAD {
            return Err(SettingsError::new(
                "lookahead",
                format!("at most {MAX_LOOKAHEAD} held jobs (about 1 KB each)"),
            ));
        }
        for (name, rates) in [
            ("rate", &self.rates),
            ("per-host-rate", &self.per_host_rates),
        ] {
            if rates.iter().any(|r| r.per.is_zero()) {
                return Err(SettingsError::new(
                    name,
                    "a rate's period must be above zero",
                ));
            }
        }
        if let Some(crate::request::Body::Json(bytes)) = &self.request.body {
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                .map_err(|e| SettingsError::new("json", format!("not valid JSON: {e}")))?;
        }
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
        Ok(())
    }

    /// Options that only make sense together (or not together).
    fn check_combinations(&self) -> Result<(), SettingsError> {
        if self.limits.is_some() && !cfg!(feature = "redis") {
            return Err(SettingsError::new(
                "limits",
                "this build of fetchall has no Redis support (Cargo feature `redis`)",
            ));
        }
        if self.limits_key.is_empty()
            || self.limits_key.len() > 200
            || self.limits_key.chars().any(char::is_control)
        {
            return Err(SettingsError::new(
                "limits-key",
                "must be 1 to 200 bytes without control characters",
            ));
        }
        if self.every.is_some_and(|d| d.is_zero()) {
            return Err(SettingsError::new("every", "must be greater than zero"));
        }
        if self.changed_only && !self.polling() {
            return Err(SettingsError::new(
                "changed",
                "needs --every, --rounds or --state (a single run without state has nothing to compare with)",
            ));
        }
        if self.resume.is_some() && self.polling() {
            return Err(SettingsError::new(
                "resume",
                "cannot be used with --every, --rounds or --state (the state already remembers each outcome)",
            ));
        }
        if self.next_param.is_some() && self.next.is_none() {
            return Err(SettingsError::new(
                "next-param",
                "needs --next (the filter that yields the cursor)",
            ));
        }
        Ok(())
    }

    /// Whether records are compared with earlier outcomes: with `every`, more than one round,
    /// or a state file. Polling records carry `round`, `at`, `changed` and `not_modified`.
    pub fn polling(&self) -> bool {
        self.every.is_some() || self.rounds.is_some_and(|n| n.get() > 1) || self.state.is_some()
    }

    /// How many rounds the run makes; `None` for no end.
    pub(crate) fn round_count(&self) -> Option<u64> {
        match (self.rounds, self.every) {
            (Some(n), _) => Some(n.get()),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        }
    }
}

/// What fetchall does while the Redis of `--limits` cannot be reached mid-run.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case")]
#[non_exhaustive]
pub enum LimitsFallback {
    /// Start nothing that a shared quota governs; retry Redis with backoff until it answers
    /// (the budget is never exceeded).
    #[default]
    Wait,
    /// Go on under local limits: each rate divided by `--limits-share`; back to Redis when
    /// it answers again.
    Local,
}

/// The Redis of `--limits`: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://` for
/// TLS. Shown with its password masked.
#[derive(Clone, PartialEq, Eq)]
pub struct LimitsUrl(Url);

impl LimitsUrl {
    /// The URL to connect to (with its credentials).
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl FromStr for LimitsUrl {
    type Err = String;

    /// The error never quotes the text: it may hold a password.
    fn from_str(s: &str) -> Result<LimitsUrl, String> {
        let url = Url::parse(s.trim()).map_err(|e| format!("not a valid Redis URL ({e})"))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(format!(
                "unsupported scheme `{}` (use redis:// or rediss:// for TLS)",
                crate::redact::bounded(url.scheme(), 32)
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the Redis URL has no host".to_owned());
        }
        let db = url.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<u32>().is_err() {
            return Err("the Redis URL's path must be a database number (/0)".to_owned());
        }
        Ok(LimitsUrl(url))
    }
}

impl fmt::Display for LimitsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::redact::display_url(&self.0))
    }
}

impl fmt::Debug for LimitsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LimitsUrl({self})")
    }
}

/// CA certificates read from a PEM file (`--cacert`): the only roots HTTPS servers are
/// verified against when set, as with curl's `--cacert` (the system's roots are not loaded,
/// which also spares their memory and start-up time).
#[derive(Clone)]
pub struct CaCerts {
    path: PathBuf,
    certs: Vec<reqwest::Certificate>,
}

impl CaCerts {
    /// Read and parse every certificate in the PEM file at `path`; a file that cannot be
    /// read, does not parse, or holds no certificate is an error (naming the file only).
    pub fn from_pem_file(path: impl Into<PathBuf>) -> Result<CaCerts, String> {
        let path = path.into();
        let display = path.display().to_string();
        let shown = crate::redact::bounded(&display, 200);
        let pem = std::fs::read(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{shown} is not a PEM certificate bundle ({e})"))?;
        if certs.is_empty() {
            return Err(format!("{shown} holds no PEM certificate"));
        }
        Ok(CaCerts { path, certs })
    }

    /// The certificates, for the HTTP client.
    pub(crate) fn certs(&self) -> &[reqwest::Certificate] {
        &self.certs
    }
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CaCerts({}, {} certificates)",
            self.path.display(),
            self.certs.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings requests to profiled hosts are made with grow with the distinct
    /// (timeout, retries) pairs, not with the square of the profiles (each used to carry a
    /// copy of them all: 26,000 sections of a 1 MiB config file took 23 GB).
    #[test]
    fn profiled_settings_are_one_per_distinct_timeout_and_retries() {
        let mut s = Settings::default();
        for i in 0..2000 {
            let mut p = crate::HostProfile::new(format!("h{i}.test").parse().unwrap());
            p.retries = Some(i % 2);
            s.profiles.push(p);
        }
        s.check().unwrap();
        let (variants, index) = s.profiled();
        assert_eq!(variants.len(), 2);
        assert!(variants.iter().all(|v| v.profiles.is_empty()));
        assert_eq!(index.len(), 2000);
        assert_eq!(variants[index[3]].retry.retries, 1);
        assert_eq!(variants[index[4]].retry.retries, 0);
        assert_eq!(variants[index[4]].timeout, s.timeout);
    }

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
            concurrency: NonZeroUsize::new(usize::MAX).unwrap(),
            ..Settings::default()
        };
        assert_eq!(s.check().unwrap_err().setting(), "concurrency");
        let s = Settings {
            lookahead: NonZeroUsize::new(usize::MAX).unwrap(),
            ..Settings::default()
        };
        assert_eq!(s.check().unwrap_err().setting(), "lookahead");
        let mut s = Settings::default();
        s.request.body = Some(crate::request::Body::Json("{nope".into()));
        assert_eq!(s.check().unwrap_err().setting(), "json");
    }

    #[test]
    fn redis_urls_are_checked_and_shown_masked() {
        let u: LimitsUrl = "redis://:hunter2@127.0.0.1:6379/3".parse().unwrap();
        assert_eq!(u.to_string(), "redis://:****@127.0.0.1:6379/3");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!("rediss://u:p@r.test:6380".parse::<LimitsUrl>().is_ok());
        for bad in [
            "http://u:hunter2@r.test/",
            "redis://u:hunter2@r.test/x",
            "redis://",
        ] {
            let e = bad.parse::<LimitsUrl>().unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
