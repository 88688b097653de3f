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

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Command;

use super::options::is_run_option;

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
        for (key, value) in table {
            if !is_run_option(&key) {
                return Err(fail(format!("unknown key `{key}`")));
            }
            let texts = match value {
                toml::Value::Array(items) => {
                    items.into_iter().map(scalar).collect::<Option<Vec<_>>>()
                }
                other => scalar(other).map(|s| vec![s]),
            };
            let texts = texts.ok_or_else(|| {
                fail(format!(
                    "`{key}`: expected a string, a number or a boolean (or a list of them)"
                ))
            })?;
            values.push((key, texts));
        }
        Ok(ConfigFile {
            path: Some(path),
            values,
        })
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
