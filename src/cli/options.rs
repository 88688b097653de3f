//! The run options: each declared once, here, as a clap argument.
//!
//! One declaration gives an option its flag (`--max-body`), its help text and default, its
//! environment variable (`FETCHALL_MAX_BODY`, derived from the flag by [`with_env_names`]) and
//! its config-file key (`max-body`, the flag's name: see `config_file`). Adding an option means
//! adding a field here and saying in [`RunArgs::resolve`] where it goes in the library's
//! `Settings`. Built-in defaults come from `fetchall::Settings::default()`, so the binary and
//! the library cannot disagree about them.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clap::builder::{BoolishValueParser, PossibleValuesParser, TypedValueParser};
use fetchall::{
    Body, BodyMode, ByteSize, Filter, HeaderName, HumanDuration, LimitsFallback, LimitsUrl, Proxy,
    Rate, RequestDefaults, RetryPolicy, Settings, SettingsError, Shard,
};
use strum::VariantNames;

/// The library's defaults, shown in `--help` and used when nothing else sets an option.
static D: LazyLock<Settings> = LazyLock::new(Settings::default);

/// The most runtime threads `--threads` accepts: far more than any machine has cores, far
/// fewer than would exhaust memory on thread stacks.
pub(crate) const MAX_THREADS: usize = 1024;

/// Run options as given on the command line, in the environment or in the config file.
///
/// Field names are the long flag names and the config keys (`connect-timeout`), so a user
/// learns one spelling.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Most requests in flight at once
    #[arg(short = 'c', long, value_name = "N", default_value_t = D.concurrency)]
    pub(crate) concurrency: NonZeroUsize,

    /// Rate limit for request starts: N/s, N/m or N/h (fractions allowed, e.g. 0.5/s).
    /// Repeat to stack quotas; all apply [default: unlimited]
    #[arg(short = 'r', long, value_name = "RATE")]
    pub(crate) rate: Vec<Rate>,

    /// Requests a rate limit lets through back to back after an idle spell, for every quota;
    /// 1 spaces every start exactly 1/rate apart [default: auto: 1 below 50/s, else 20 ms
    /// worth of requests, so late timer wake-ups do not lower the mean rate; see
    /// docs/rate-limiting.md]
    #[arg(long, value_name = "N")]
    pub(crate) burst: Option<NonZeroU32>,

    /// Whole-request timeout of each attempt, connect to last body byte (e.g. 30s, 500ms);
    /// must be above zero
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.timeout))]
    pub(crate) timeout: HumanDuration,

    /// TCP (and TLS) connect timeout
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.connect_timeout))]
    pub(crate) connect_timeout: HumanDuration,

    /// How to put the response body in the record
    #[arg(long, value_name = "MODE", default_value_t = D.body, value_parser = body_mode())]
    pub(crate) body: BodyMode,

    /// Largest body to accept, in bytes (units: k, Ki, M, Mi, G, Gi); a larger one fails with
    /// kind too_large
    #[arg(long, value_name = "SIZE", default_value_t = ByteSize(D.max_body))]
    pub(crate) max_body: ByteSize,

    /// User-Agent header
    #[arg(short = 'A', long, value_name = "TEXT", default_value = D.user_agent.to_str().unwrap_or_default().to_owned())]
    pub(crate) user_agent: String,

    /// Retries after a failed attempt (connect, timeout, cut-off body, 408/429/502/503/504)
    #[arg(long, value_name = "N", default_value_t = D.retry.retries)]
    pub(crate) retries: u32,

    /// First backoff ceiling; the wait before retry n is random in [0, min(cap, base*2^(n-1))]
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.retry.base))]
    pub(crate) retry_base: HumanDuration,

    /// Largest backoff ceiling
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.retry.cap))]
    pub(crate) retry_cap: HumanDuration,

    /// Longest Retry-After honoured; a server asking for more fails the record, stating its
    /// wait
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.retry.max_wait))]
    pub(crate) max_retry_wait: HumanDuration,

    /// Also retry 500 Internal Server Error
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.retry.retry_500, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) retry_500: bool,

    /// Also retry non-idempotent methods (POST, PATCH)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.retry.non_idempotent, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) retry_non_idempotent: bool,

    /// Read-idle timeout: longest wait for the next bytes of a response
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.read_timeout))]
    pub(crate) read_timeout: HumanDuration,

    /// After Ctrl-C or SIGTERM, how long requests in flight may finish before they are
    /// cancelled
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(D.grace))]
    pub(crate) grace: HumanDuration,

    /// Skip input lines that have an ok record (same seq and url) in this earlier output
    #[arg(long, value_name = "PREVIOUS.jsonl")]
    pub(crate) resume: Option<PathBuf>,

    /// Do not verify TLS certificates: accept self-signed, expired or wrong-name certificates
    /// (warns on stderr)
    #[arg(short = 'k', long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.insecure, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) insecure: bool,

    /// HTTP method for every request (a spec line's "method" wins)
    /// [default: GET, or POST with --data/--json]
    #[arg(short = 'X', long, value_name = "METHOD")]
    pub(crate) method: Option<String>,

    /// Request header "Name: value"; repeat for more. A spec line's header of the same name
    /// replaces it [default: none]
    #[arg(short = 'H', long, value_name = "HEADER")]
    pub(crate) header: Vec<String>,

    /// Request body: TEXT, or @FILE to send a file's bytes; implies POST; sent as a form
    /// (application/x-www-form-urlencoded) unless -H sets a Content-Type [default: none]
    #[arg(short = 'd', long, value_name = "TEXT|@FILE", conflicts_with = "json")]
    pub(crate) data: Option<String>,

    /// JSON request body (TEXT or @FILE; must parse as JSON); sets Content-Type and Accept to
    /// application/json and implies POST [default: none]
    #[arg(long, value_name = "JSON|@FILE")]
    pub(crate) json: Option<String>,

    /// Most redirects to follow; 0 does not follow (a 3xx is then the record's status)
    #[arg(long, value_name = "N", default_value_t = D.max_redirects)]
    pub(crate) max_redirects: u32,

    /// Send every request through this proxy: http://, https://, socks5:// (names resolved
    /// here), socks5h:// (resolved by the proxy), socks4:// or socks4a://; NO_PROXY applies.
    /// Without it, HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY are honoured
    /// [default: from the environment]
    #[arg(short = 'x', long, value_name = "URL")]
    pub(crate) proxy: Option<String>,

    /// Add the response headers to each record ("headers": {name: [values]})
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.response_headers, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) headers: bool,

    /// Write each response body to a file in DIR (named by the spec's id, else by seq); the
    /// record's "saved" field holds its path, size and sha256 [default: off]
    #[arg(long, value_name = "DIR")]
    pub(crate) save_dir: Option<PathBuf>,

    /// Write records to FILE instead of stdout (created or truncated) [default: stdout]
    #[arg(short = 'o', long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Emit records in input order (a bounded reorder buffer of 2 x concurrency records;
    /// while it is full no new request starts) [default: completion order]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.ordered, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) ordered: bool,

    /// Write the end-of-run summary (counts, latency percentiles, throughput) to FILE as JSON
    /// [default: off]
    #[arg(long, value_name = "FILE")]
    pub(crate) summary: Option<PathBuf>,

    /// Most requests in flight at once to one host (scheme + host + port) [default: unlimited]
    #[arg(long, value_name = "N")]
    pub(crate) per_host_concurrency: Option<NonZeroUsize>,

    /// Rate limit for request starts per host (scheme + host + port): N/s, N/m or N/h.
    /// Repeat to stack quotas; all apply, together with --rate [default: unlimited]
    #[arg(long, value_name = "RATE")]
    pub(crate) per_host_rate: Vec<Rate>,

    /// Adapt each host's rate: a 429 halves it, each success raises it by 0.05/s, up to
    /// --per-host-rate (or --rate); records get `host_rate`
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.adaptive, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) adaptive: bool,

    /// Most jobs held waiting for their host's turn (a slow host's queue, over all hosts);
    /// when full, reading input pauses (about 1 KB each)
    #[arg(long, value_name = "N", default_value_t = D.lookahead)]
    pub(crate) lookahead: NonZeroUsize,

    /// Also mask the value of this query (or fragment) parameter in records and logs; repeat
    /// for more. Added to the built-in list (token, access_token, api_key, key, sig,
    /// signature, password, secret, session, ...; see docs/security.md) [default: none]
    #[arg(long, value_name = "NAME")]
    pub(crate) mask_param: Vec<String>,

    /// Also treat this request header as a credential: dropped when a redirect leaves the
    /// request's origin, masked by `fetchall config`; repeat for more. Added to the built-in
    /// rule (Authorization, Cookie, and names containing key, token, secret, password, auth,
    /// session, ...; see docs/security.md) [default: none]
    #[arg(long, value_name = "NAME")]
    pub(crate) credential_header: Vec<String>,

    /// Threads of the async runtime that runs the requests; 0 means one per CPU core. One
    /// thread keeps tens of thousands of requests a second going; more help only when
    /// decoding large bodies is the bottleneck (at most 1024)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(0..=MAX_THREADS as i64))]
    pub(crate) threads: u16,

    /// Repeat the whole input every DURATION (e.g. 30s, 1m), on a fixed schedule from the first
    /// round's start; a round that runs past its slot is followed at once by the next. Limits
    /// carry over between rounds; see docs/polling.md [default: off: one round]
    #[arg(long, value_name = "DURATION")]
    pub(crate) every: Option<HumanDuration>,

    /// Stop after N rounds [default: 1 without --every, no end with it]
    #[arg(long, value_name = "N")]
    pub(crate) rounds: Option<NonZeroU64>,

    /// SQLite file remembering each request's outcome and validators (ETag, Last-Modified)
    /// across rounds and runs; created if missing, one fetchall at a time. Records then carry
    /// round, at, changed and not_modified [default: a temporary one while polling]
    #[arg(long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,

    /// Write only records whose outcome (ok, status, error kind, body) changed since the
    /// stored one; the summary still counts every record. Needs --every, --rounds or --state
    /// [default: off]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.changed_only, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) changed: bool,

    /// Do not send If-None-Match / If-Modified-Since from the stored validators [default:
    /// off: GET and HEAD with stored validators are conditional, a 304 is not_modified]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = !D.conditional, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) no_conditional: bool,

    /// Trust only the CA certificates in this PEM file for HTTPS, instead of the system's
    /// (as curl's --cacert) [default: the system's CA certificates]
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,

    /// Do not pace hosts from the quota headers their responses send (RateLimit,
    /// RateLimit-Remaining/-Reset, X-RateLimit-Remaining/-Reset; see docs/api.md)
    /// [default: off, i.e. paced]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = !D.quota_headers, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) no_quota_headers: bool,

    /// Add `extract.NAME` to each ok record: the first output of the jq FILTER on the JSON
    /// body (null if none), e.g. --extract n='.items|length'. Repeatable. A filter that fails
    /// on a body, or a body that is not JSON, fails the record (kind filter) [default: none]
    #[arg(long, value_name = "NAME=FILTER")]
    pub(crate) extract: Vec<String>,

    /// Replace each ok record's body by the first output of this jq filter on the JSON body,
    /// e.g. '{id, name}' [default: the whole body]
    #[arg(long, value_name = "FILTER")]
    pub(crate) body_filter: Option<String>,

    /// Fail each ok record whose JSON body makes this jq filter yield false, null or nothing
    /// (kind assertion), e.g. '.status != "error"' [default: none]
    #[arg(long, value_name = "FILTER")]
    pub(crate) assert: Option<String>,

    /// Paginate: after each page, fetch the one its `Link: <...>; rel="next"` header names
    /// (relative links resolved). Each page gets its own record with "page" (0-based)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, action = clap::ArgAction::Set,
          default_value_t = D.follow_next, default_missing_value = "true",
          value_parser = BoolishValueParser::new())]
    pub(crate) follow_next: bool,

    /// Paginate: a jq filter over each page's JSON body yielding the next page's URL
    /// (absolute or relative), or with --next-param a cursor; null, false, "" or no output
    /// ends the line [default: none]
    #[arg(long, value_name = "FILTER")]
    pub(crate) next: Option<String>,

    /// Put the cursor --next yields into this query parameter of the line's own URL
    /// [default: --next yields URLs]
    #[arg(long, value_name = "NAME")]
    pub(crate) next_param: Option<String>,

    /// Most pages fetched per line with --follow-next or --next, the first included
    #[arg(long, value_name = "N", default_value_t = D.max_pages)]
    pub(crate) max_pages: NonZeroU32,

    /// Fetch only shard K of N (0-based): the lines whose host (scheme + host + port) hashes
    /// to K; other lines get no record. `auto` reads JOB_COMPLETION_INDEX + FETCHALL_SHARDS
    /// (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID + SLURM_ARRAY_TASK_COUNT (Slurm
    /// array); see docs/scale-out.md [default: every line]
    #[arg(long, value_name = "K/N|auto")]
    pub(crate) shard: Option<ShardArg>,

    /// Share every --rate and --per-host-rate quota and every host pause (Retry-After) with
    /// the other fetchall processes using this Redis and the same --limits-key:
    /// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or rediss:// for TLS. Concurrency caps stay
    /// per process. See docs/scale-out.md [default: off, limits are this process's own]
    #[arg(long, value_name = "URL")]
    pub(crate) limits: Option<String>,

    /// The shared budget's name: processes with the same --limits and --limits-key share
    /// their quotas
    #[arg(long, value_name = "NAME", default_value = D.limits_key.clone())]
    pub(crate) limits_key: String,

    /// While Redis cannot be reached mid-run: `wait` starts nothing under a shared quota and
    /// retries Redis with backoff (0.1s doubling to 2s); `local` goes on under local limits,
    /// each rate divided by --limits-share
    #[arg(long, value_name = "MODE", default_value_t = D.limits_fallback,
          value_parser = limits_fallback())]
    pub(crate) limits_fallback: LimitsFallback,

    /// With --limits-fallback local: how many processes share the budget (each keeps to
    /// rate / N while Redis is away)
    #[arg(long, value_name = "N", default_value_t = D.limits_share)]
    pub(crate) limits_share: NonZeroU32,
}

/// `--limits-fallback`'s values, from the library's own list.
fn limits_fallback() -> impl TypedValueParser<Value = LimitsFallback> {
    PossibleValuesParser::new(LimitsFallback::VARIANTS).try_map(|s| s.parse::<LimitsFallback>())
}

/// `--shard`: a fixed `K/N`, or `auto` from the job engine's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShardArg {
    Auto,
    Fixed(Shard),
}

impl std::str::FromStr for ShardArg {
    type Err = String;

    fn from_str(s: &str) -> Result<ShardArg, String> {
        if s.trim() == "auto" {
            return Ok(ShardArg::Auto);
        }
        s.parse().map(ShardArg::Fixed)
    }
}

impl std::fmt::Display for ShardArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardArg::Auto => f.write_str("auto"),
            ShardArg::Fixed(s) => s.fmt(f),
        }
    }
}

impl ShardArg {
    /// The shard, `auto` read from `env` (the process environment, or a test's).
    pub(crate) fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
        match self {
            ShardArg::Fixed(s) => Ok(s),
            ShardArg::Auto => shard_from_env(env),
        }
    }
}

/// `--shard auto`: a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX` with the count in
/// `FETCHALL_SHARDS` (Kubernetes does not tell a pod the job's completions), else a Slurm
/// array's `SLURM_ARRAY_TASK_ID` less `SLURM_ARRAY_TASK_MIN` (arrays may start at 1) of
/// `SLURM_ARRAY_TASK_COUNT`.
fn shard_from_env(env: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let number = |name: &str| -> Result<Option<u32>, String> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                format!(
                    "auto: {name} is not a whole number: `{}`",
                    env_value_shown(&v)
                )
            }),
        }
    };
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let count = number("FETCHALL_SHARDS")?.ok_or(
            "auto: JOB_COMPLETION_INDEX is set but FETCHALL_SHARDS (the Job's completions) is not",
        )?;
        return Shard::new(index, count).map_err(|e| format!("auto (Kubernetes): {e}"));
    }
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let count = number("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id
            .checked_sub(min)
            .ok_or("auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
        return Shard::new(index, count).map_err(|e| format!("auto (Slurm): {e}"));
    }
    Err(
        "auto: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID \
         (Slurm array) is set; give --shard K/N"
            .to_owned(),
    )
}

/// An environment value as echoed in an error: at most 24 bytes.
fn env_value_shown(v: &str) -> String {
    let mut end = v.len().min(24);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    if end < v.len() {
        format!("{}…", &v[..end])
    } else {
        v.to_owned()
    }
}

/// `--body`'s values, from the library's own list.
fn body_mode() -> impl TypedValueParser<Value = BodyMode> {
    PossibleValuesParser::new(BodyMode::VARIANTS).try_map(|s| s.parse::<BodyMode>())
}

/// The environment variable of every option with a long flag: `FETCHALL_` and the flag's name
/// in upper case with `_` for `-` (`--max-body` -> `FETCHALL_MAX_BODY`).
pub(crate) fn with_env_names(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_long() {
        Some(long) if is_run_option(long) => {
            let name = format!("FETCHALL_{}", long.to_ascii_uppercase().replace('-', "_"));
            // `--help` names the variable but never shows its value: it may be a token.
            arg.env(name).hide_env_values(true)
        }
        _ => arg,
    })
}

/// Whether `--long` is a run option (declared in [`RunArgs`]): those are the config keys.
pub(crate) fn is_run_option(long: &str) -> bool {
    /// The run options' long names, collected once (building the clap command per question
    /// made parsing quadratic in the number of options).
    static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
        use clap::Args;
        RunArgs::augment_args(clap::Command::new("x"))
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect()
    });
    NAMES.iter().any(|n| n == long)
}

/// What the binary itself does with a run, beyond the library's settings.
#[derive(Debug, Clone)]
pub(crate) struct Outputs {
    /// The files `-d @FILE` and `--json @FILE` read.
    pub(crate) bodies: Vec<PathBuf>,
    /// Records to this file instead of stdout.
    pub(crate) output: Option<PathBuf>,
    /// The JSON summary to this file.
    pub(crate) summary: Option<PathBuf>,
}

impl RunArgs {
    /// The library's settings and the binary's outputs, parsed and checked: after this no
    /// string is parsed again. `@FILE` bodies are read here.
    pub(crate) fn resolve(&self) -> Result<(Settings, Outputs), SettingsError> {
        let mut s = Settings::default();
        s.concurrency = self.concurrency;
        s.rates = self.rate.clone();
        s.burst = self.burst;
        s.timeout = self.timeout.0;
        s.connect_timeout = self.connect_timeout.0;
        s.read_timeout = self.read_timeout.0;
        s.body = self.body;
        s.max_body = self.max_body.0;
        s.user_agent = fetchall::parse_header_value("User-Agent", &self.user_agent)
            .map_err(|e| SettingsError::new("user-agent", e))?;
        s.retry = self.retry_policy();
        s.grace = self.grace.0;
        s.resume = self.resume.clone();
        s.insecure = self.insecure;
        s.request = self.request_defaults()?;
        s.max_redirects = self.max_redirects;
        s.proxy = match &self.proxy {
            // Parsed here, not by clap: clap's message would quote the URL and its password.
            Some(p) => Some(
                p.parse::<Proxy>()
                    .map_err(|e| SettingsError::new("proxy", e))?,
            ),
            None => None,
        };
        s.response_headers = self.headers;
        s.save_dir = self.save_dir.clone();
        s.ordered = self.ordered;
        s.per_host_concurrency = self.per_host_concurrency;
        s.per_host_rates = self.per_host_rate.clone();
        s.adaptive = self.adaptive;
        s.lookahead = self.lookahead;
        self.polling(&mut s);
        self.tls_and_api(&mut s)?;
        self.redaction(&mut s)?;
        self.scale_out(&mut s)?;
        s.check()?;
        let outputs = Outputs {
            bodies: self.body_files(),
            output: self.output.clone(),
            summary: self.summary.clone(),
        };
        Ok((s, outputs))
    }

    /// Rounds, state and change detection (docs/polling.md).
    fn polling(&self, s: &mut Settings) {
        s.every = self.every.map(|d| d.0);
        s.rounds = self.rounds;
        s.state = self.state.clone();
        s.changed_only = self.changed;
        s.conditional = !self.no_conditional;
    }

    /// Trusted CAs, quota-header pacing, jq filters and pagination (docs/api.md).
    fn tls_and_api(&self, s: &mut Settings) -> Result<(), SettingsError> {
        s.ca_certs = match &self.cacert {
            Some(path) => Some(
                fetchall::CaCerts::from_pem_file(path)
                    .map_err(|e| SettingsError::new("cacert", e))?,
            ),
            None => None,
        };
        s.quota_headers = !self.no_quota_headers;
        for e in &self.extract {
            s.extract.push(extract(e)?);
        }
        s.body_filter = self
            .body_filter
            .as_deref()
            .map(|f| filter("body-filter", f))
            .transpose()?;
        s.assert = self
            .assert
            .as_deref()
            .map(|f| filter("assert", f))
            .transpose()?;
        s.follow_next = self.follow_next;
        s.next = self
            .next
            .as_deref()
            .map(|f| filter("next", f))
            .transpose()?;
        s.next_param = self.next_param.clone();
        s.max_pages = self.max_pages;
        Ok(())
    }

    /// What records and logs mask, and which headers are credentials (docs/security.md).
    fn redaction(&self, s: &mut Settings) -> Result<(), SettingsError> {
        s.mask_params
            .extend(self.mask_param.iter().map(|p| p.trim().to_owned()));
        // Parsed here, not by clap: a mistaken `Name: value` must not be quoted back.
        s.credential_headers = self
            .credential_header
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| {
                    SettingsError::new(
                        "credential-header",
                        "not a valid header name (give the name only, e.g. X-Tenant)",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Sharding and shared limits (docs/scale-out.md).
    fn scale_out(&self, s: &mut Settings) -> Result<(), SettingsError> {
        s.shard = match self.shard {
            Some(arg) => Some(
                arg.resolve(|name| std::env::var(name).ok())
                    .map_err(|e| SettingsError::new("shard", e))?,
            ),
            None => None,
        };
        s.limits = match &self.limits {
            // Parsed here, not by clap: clap's message would quote the URL and its password.
            Some(u) => Some(
                u.parse::<LimitsUrl>()
                    .map_err(|e| SettingsError::new("limits", e))?,
            ),
            None => None,
        };
        s.limits_key = self.limits_key.clone();
        s.limits_fallback = self.limits_fallback;
        s.limits_share = self.limits_share;
        Ok(())
    }

    /// The files `-d @FILE` and `--json @FILE` name (without reading them).
    pub(crate) fn body_files(&self) -> Vec<PathBuf> {
        [&self.data, &self.json]
            .into_iter()
            .flatten()
            .filter_map(|arg| arg.strip_prefix('@'))
            .map(PathBuf::from)
            .collect()
    }

    fn retry_policy(&self) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        p.retries = self.retries;
        p.base = self.retry_base.0;
        p.cap = self.retry_cap.0;
        p.max_wait = self.max_retry_wait.0;
        p.retry_500 = self.retry_500;
        p.non_idempotent = self.retry_non_idempotent;
        p
    }

    /// `-X`, `-H`, `-d`, `--json`, checked: a method token, `Name: value` headers without
    /// CR/LF, `@file` bodies readable, `--json` parses.
    fn request_defaults(&self) -> Result<RequestDefaults, SettingsError> {
        let mut r = RequestDefaults::default();
        if let Some(m) = &self.method {
            r.method =
                Some(fetchall::parse_method(m).map_err(|e| SettingsError::new("method", e))?);
        }
        for h in &self.header {
            let (name, value) =
                fetchall::parse_header(h).map_err(|e| SettingsError::new("header", e))?;
            r.headers.append(name, value);
        }
        r.body = match (&self.data, &self.json) {
            (Some(_), Some(_)) => {
                return Err(SettingsError::new("data", "cannot be used with --json"));
            }
            (Some(d), None) => Some(Body::Raw(
                read_arg(d).map_err(|e| SettingsError::new("data", e))?,
            )),
            (None, Some(j)) => {
                // Checked to be JSON by Settings::check.
                Some(Body::Json(
                    read_arg(j).map_err(|e| SettingsError::new("json", e))?,
                ))
            }
            (None, None) => None,
        };
        Ok(r)
    }
}

/// A jq filter, compiled; the error names the flag.
fn filter(flag: &'static str, text: &str) -> Result<Filter, SettingsError> {
    Filter::new(text).map_err(|e| SettingsError::new(flag, e))
}

/// `NAME=FILTER`, the name a plain word (letters, digits, `_`, `-`).
fn extract(text: &str) -> Result<(String, Filter), SettingsError> {
    let fail = |why: &str| SettingsError::new("extract", why);
    let (name, f) = text
        .split_once('=')
        .ok_or_else(|| fail("expected NAME=FILTER, e.g. n='.items|length'"))?;
    let name = name.trim();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.is_empty() || !name.chars().all(word) {
        return Err(fail(
            "NAME must be letters, digits, `_` or `-` (as in NAME=FILTER)",
        ));
    }
    let f = Filter::new(f).map_err(|e| SettingsError::new("extract", format!("{name}: {e}")))?;
    Ok((name.to_owned(), f))
}

/// `@path` reads the file; anything else is the text itself.
fn read_arg(arg: &str) -> Result<bytes::Bytes, String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read(Path::new(path))
            .map(bytes::Bytes::from)
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(bytes::Bytes::copy_from_slice(arg.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn shard_auto_reads_kubernetes_then_slurm() {
        let k8s = [("JOB_COMPLETION_INDEX", "3"), ("FETCHALL_SHARDS", "8")];
        assert_eq!(ShardArg::Auto.resolve(env(&k8s)), Shard::new(3, 8));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(ShardArg::Auto.resolve(env(&slurm)), Shard::new(3, 4));
        let fixed = ShardArg::Fixed(Shard::new(1, 2).unwrap());
        assert_eq!(fixed.resolve(env(&k8s)), Shard::new(1, 2));
    }

    #[test]
    fn shard_auto_refuses_what_it_cannot_read() {
        for vars in [
            &[][..],
            &[("JOB_COMPLETION_INDEX", "3")][..],
            &[("JOB_COMPLETION_INDEX", "8"), ("FETCHALL_SHARDS", "8")][..],
            &[("JOB_COMPLETION_INDEX", "x"), ("FETCHALL_SHARDS", "8")][..],
            &[
                ("SLURM_ARRAY_TASK_ID", "0"),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
            ][..],
        ] {
            assert!(ShardArg::Auto.resolve(env(vars)).is_err(), "{vars:?}");
        }
    }
}
