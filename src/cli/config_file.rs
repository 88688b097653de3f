//! The config file: read once, checked against the run options, and layered under the
//! environment and the flags.
//!
//! Keys are the long flag names (`max-body`); values are TOML strings, numbers, booleans, or
//! arrays of them for the options that repeat. Each value is checked by the option's own
//! parser (the same that checks the flag, so both report the same way), then installed as the
//! option's default: clap's own precedence, flag > environment variable > default, then gives
//! `defaults < config file < FETCHALL_* < flags` with nothing merged by hand. An unknown key or
//! a bad value is one error that names the file and the key; a value of an option that may
//! hold a credential is never quoted.
//!
//! Host sections (`[hosts."api.example.com"]`, `[hosts."*.example.org"]`) are the one table:
//! each takes the keys of [`HOST_KEYS`], spelled and checked as the top-level keys, and
//! becomes a `fetchall::HostProfile` (see docs/api.md). They are config-file only: no flag or
//! environment variable sets a host section.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Command;

use fetchall::{HostPattern, HostProfile, HumanDuration, Rate};

use super::options::is_run_option;

/// The keys a host section takes. Inside `[hosts."pattern"]`, `rate` and `concurrency` are
/// the host's own (as `per-host-rate` and `per-host-concurrency` are for every host); the
/// others mean what they mean at the top level, for those hosts only.
pub(crate) const HOST_KEYS: [&str; 7] = [
    "header",
    "rate",
    "concurrency",
    "timeout",
    "retries",
    "user-agent",
    "proxy",
];

/// Options whose values may hold credentials: their values are never quoted in errors
/// (`fetchall config` masks credential headers, a proxy or Redis password and inline bodies).
pub(crate) const SECRET_KEYS: [&str; 6] =
    ["header", "proxy", "data", "json", "user-agent", "limits"];

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A config file, read and split into option values.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConfigFile {
    /// The file, when there is one.
    pub(crate) path: Option<PathBuf>,
    /// Each key with its values as text, in the file's order.
    pub(crate) values: Vec<(String, Vec<String>)>,
    /// The `[hosts."pattern"]` sections, in the file's order.
    pub(crate) hosts: Vec<HostSection>,
}

/// One `[hosts."pattern"]` section, its values as text.
#[derive(Debug, Clone)]
pub(crate) struct HostSection {
    pub(crate) pattern: HostPattern,
    pub(crate) values: Vec<(String, Vec<String>)>,
}

impl HostSection {
    /// The section's name as written in a config file: `[hosts."pattern"]`.
    pub(crate) fn name(&self) -> String {
        format!("[hosts.{}]", quoted(&self.pattern.to_string()))
    }

    /// The values of `key`, if the section sets it.
    pub(crate) fn get(&self, key: &str) -> Option<&[String]> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// The config file used when `--config` is not given: `fetchall/config.toml` in the user's
/// config directory (`$XDG_CONFIG_HOME`, else `~/.config`), when it exists.
fn default_path() -> Option<PathBuf> {
    let path = dirs::config_dir()?.join("fetchall").join("config.toml");
    path.is_file().then_some(path)
}

impl ConfigFile {
    /// Read the config file: the explicit one must exist, the default one may not.
    pub(crate) fn load(explicit: Option<&Path>) -> Result<ConfigFile, String> {
        let Some(path) = explicit.map(Path::to_path_buf).or_else(default_path) else {
            return Ok(ConfigFile::default());
        };
        let fail = |message: String| format!("config file {}: {message}", path.display());
        // Bounded like every input: a config file is a few hundred bytes, not a disk image.
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| fail(e.to_string()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(fail(format!("larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml's message quotes the offending line, which may hold a credential: keep
            // only where it is and what is wrong.
            let at = e
                .span()
                .map(|s| format!(" at line {}", line_of(&text, s.start)))
                .unwrap_or_default();
            fail(format!("not valid TOML{at}: {}", e.message()))
        })?;
        let mut values = Vec::new();
        let mut hosts = Vec::new();
        for (key, value) in table {
            if key == "hosts" {
                hosts = host_sections(value).map_err(fail)?;
                continue;
            }
            if !is_run_option(&key) {
                return Err(fail(format!("unknown key `{key}`")));
            }
            values.push((key.clone(), texts(&key, value).map_err(fail)?));
        }
        Ok(ConfigFile {
            path: Some(path),
            values,
            hosts,
        })
    }

    /// The host sections as the library's profiles. Their values were checked by
    /// [`ConfigFile::install`]; the headers' (and User-Agent's) characters are checked here,
    /// as `-H` is when the settings are resolved. The error names the section and the key.
    pub(crate) fn profiles(&self) -> Result<Vec<HostProfile>, String> {
        self.hosts
            .iter()
            .map(|section| {
                profile(section).map_err(|(key, why)| {
                    let file = self.path.as_deref().unwrap_or(Path::new("?"));
                    format!(
                        "config file {}: {}: `{key}`: {why}",
                        file.display(),
                        section.name()
                    )
                })
            })
            .collect()
    }

    /// Whether the file sets option `key`.
    pub(crate) fn sets(&self, key: &str) -> bool {
        self.values.iter().any(|(k, _)| k == key)
    }

    /// Check every value with its option's parser, then make it the option's default, in
    /// `cmd` and in its `config` subcommand (which takes the same options).
    pub(crate) fn install(&self, cmd: Command) -> Result<Command, String> {
        let Some(path) = &self.path else {
            return Ok(cmd);
        };
        // Checked without environment variables: a bad FETCHALL_* value is the flag
        // parser's to report, not this file's.
        let bare = cmd.clone().mut_args(|a| a.env(None));
        for (key, texts) in &self.values {
            check(&bare, key, texts).map_err(|m| format!("config file {}: {m}", path.display()))?;
        }
        for section in &self.hosts {
            for (key, texts) in &section.values {
                check(&bare, key, texts).map_err(|m| {
                    format!("config file {}: {}: {m}", path.display(), section.name())
                })?;
            }
        }
        let set = |cmd: Command| {
            cmd.mut_args(|arg| {
                let Some(long) = arg.get_long() else {
                    return arg;
                };
                match self.values.iter().find(|(k, _)| k == long) {
                    Some((_, texts)) => arg.default_values(texts.clone()),
                    None => arg,
                }
            })
        };
        Ok(set(cmd).mut_subcommand("config", set))
    }
}

/// Parse `--key=value` for each value, alone, with the option's own parser.
fn check(cmd: &Command, key: &str, texts: &[String]) -> Result<(), String> {
    let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(key)) else {
        return Err(format!("unknown key `{key}`"));
    };
    let repeats = matches!(arg.get_action(), clap::ArgAction::Append);
    if texts.len() != 1 && !repeats {
        return Err(format!("`{key}` takes one value, not a list"));
    }
    let mut argv = vec!["fetchall".to_owned()];
    argv.extend(texts.iter().map(|t| format!("--{key}={t}")));
    cmd.clone()
        .try_get_matches_from(argv)
        .map(drop)
        .map_err(|e| {
            let why = match std::error::Error::source(&e) {
                Some(cause) => cause.to_string(),
                None => {
                    let text = e.render().to_string();
                    let first = text.lines().next().unwrap_or_default();
                    first.trim_start_matches("error: ").to_owned()
                }
            };
            if SECRET_KEYS.contains(&key) {
                format!("`{key}`: invalid value (not shown: it may hold a credential)")
            } else {
                format!("`{key}`: {why}")
            }
        })
}

/// A key's TOML value as option texts: a scalar, or an array of them.
fn texts(key: &str, value: toml::Value) -> Result<Vec<String>, String> {
    let texts = match value {
        toml::Value::Array(items) => items.into_iter().map(scalar).collect::<Option<Vec<_>>>(),
        other => scalar(other).map(|s| vec![s]),
    };
    texts.ok_or_else(|| {
        format!("`{key}`: expected a string, a number or a boolean (or a list of them)")
    })
}

/// The `hosts` table: one section per pattern, each with only [`HOST_KEYS`].
fn host_sections(value: toml::Value) -> Result<Vec<HostSection>, String> {
    let toml::Value::Table(table) = value else {
        return Err(
            "`hosts` must be a table of host sections, e.g. [hosts.\"api.example.com\"]".into(),
        );
    };
    let mut sections = Vec::new();
    for (pattern, section) in table {
        let shown = format!("[hosts.{}]", quoted(&cut(&pattern)));
        let pattern: HostPattern = pattern.parse().map_err(|e| format!("{shown}: {e}"))?;
        let toml::Value::Table(keys) = section else {
            return Err(format!(
                "{shown}: expected a table of settings for those hosts"
            ));
        };
        let mut values = Vec::new();
        for (key, value) in keys {
            if !HOST_KEYS.contains(&key.as_str()) {
                let why = if is_run_option(&key) {
                    "is not a per-host setting"
                } else {
                    "is not a key"
                };
                return Err(format!(
                    "{shown}: unknown key `{}` ({why}; a host section takes {})",
                    cut(&key),
                    HOST_KEYS.join(", ")
                ));
            }
            values.push((
                key.clone(),
                texts(&key, value).map_err(|e| format!("{shown}: {e}"))?,
            ));
        }
        sections.push(HostSection { pattern, values });
    }
    Ok(sections)
}

/// A key or pattern from the file as echoed in an error: at most 100 bytes.
fn cut(text: &str) -> String {
    let mut end = text.len().min(100);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// A host section as the library's profile, or the key that is wrong and why.
fn profile(section: &HostSection) -> Result<HostProfile, (&'static str, String)> {
    let mut p = HostProfile::new(section.pattern.clone());
    let one = |key: &'static str| section.get(key).and_then(<[String]>::first);
    for h in section.get("header").unwrap_or_default() {
        let (name, value) = fetchall::parse_header(h).map_err(|e| ("header", e))?;
        p.headers.append(name, value);
    }
    for r in section.get("rate").unwrap_or_default() {
        p.rates
            .push(r.parse::<Rate>().map_err(|e| ("rate", e.to_string()))?);
    }
    if let Some(c) = one("concurrency") {
        p.concurrency = Some(
            c.trim()
                .parse()
                .map_err(|_| ("concurrency", "not a number above 0".to_owned()))?,
        );
    }
    if let Some(t) = one("timeout") {
        p.timeout = Some(
            t.parse::<HumanDuration>()
                .map_err(|e| ("timeout", e.to_string()))?
                .0,
        );
    }
    if let Some(r) = one("retries") {
        p.retries = Some(
            r.trim()
                .parse()
                .map_err(|_| ("retries", "not a whole number".to_owned()))?,
        );
    }
    if let Some(ua) = one("user-agent") {
        p.user_agent =
            Some(fetchall::parse_header_value("User-Agent", ua).map_err(|e| ("user-agent", e))?);
    }
    if let Some(proxy) = one("proxy") {
        // Parsed here, not by clap: clap's message would quote the URL and its password.
        p.proxy = Some(proxy.parse::<fetchall::Proxy>().map_err(|e| ("proxy", e))?);
    }
    Ok(p)
}

/// A TOML scalar as option text; `None` for tables, nested arrays and dates.
fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}
