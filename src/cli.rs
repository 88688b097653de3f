//! The command line: clap definitions, and their resolution into [`Settings`].
//!
//! Everything clap-specific stays in this file; the rest of the crate takes `Settings`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Options, Settings};

/// Fetch many URLs concurrently and politely; print one JSON record per input line.
///
/// Reads one URL per line from FILE (or stdin); blank lines and lines starting with `#` are
/// skipped. Records go to stdout in completion order; logs go to stderr.
///
/// Exit status: 0 every record ok, 1 some record failed, 2 usage or fatal error, 130/143
/// stopped by Ctrl-C/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "fetchall", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// File of URLs, one per line; `-` or no FILE reads stdin
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Read options from a TOML file (keys are the long flag names); FETCHALL_* variables and
    /// flags override it [default: $XDG_CONFIG_HOME/fetchall/config.toml if it exists]
    #[arg(long, value_name = "PATH", env = "FETCHALL_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub options: Options,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr: no progress line, no summary
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Where each option given on the command line or in the environment came from.
    #[arg(skip)]
    pub origins: BTreeMap<String, String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the three lessons of async I/O against an embedded loopback server (no network
    /// needed): overlapping waits, a semaphore, and failures as data
    Demo,
    /// Print the effective configuration as TOML, each value with where it came from
    /// (default, config file, FETCHALL_* environment variable, flag); takes the same options.
    /// Authorization, Proxy-Authorization and Cookie header values show as ****
    Config {
        /// The config file to read [default: $XDG_CONFIG_HOME/fetchall/config.toml if it exists]
        #[arg(long, value_name = "PATH", env = "FETCHALL_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        options: Box<Options>,
    },
    /// Print a shell completion script (e.g. `fetchall completions bash > /etc/bash_completion.d/fetchall`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `fetchall man > fetchall.1`
    Man,
}

/// The config file used when `--config` is not given: `fetchall/config.toml` in the user's
/// config directory (`$XDG_CONFIG_HOME`, else `~/.config`), when it exists.
pub fn default_config_path() -> Option<PathBuf> {
    let path = dirs::config_dir()?.join("fetchall").join("config.toml");
    path.is_file().then_some(path)
}

/// Read the config file, if any: the explicit one must exist, the default one may not.
fn read_config(explicit: Option<&Path>) -> Result<(Options, Option<PathBuf>), crate::Error> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => default_config_path(),
    };
    match path {
        Some(p) => Ok((Options::from_file(&p)?, Some(p))),
        None => Ok((Options::default(), None)),
    }
}

/// Options given as flags or environment variables, by config key: `flag` or `env NAME`.
fn origins(matches: &ArgMatches) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in matches.ids() {
        let origin = match matches.value_source(id.as_str()) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            // Every variable is FETCHALL_ and the option's name (see config::Options).
            Some(ValueSource::EnvVariable) => {
                format!("environment FETCHALL_{}", id.as_str().to_uppercase())
            }
            _ => continue,
        };
        out.insert(id.as_str().replace('_', "-"), origin);
    }
    out
}

impl Cli {
    /// Parse the command line (exits with a usage message on error), keeping where each
    /// given option came from.
    pub fn parse_args() -> Cli {
        Cli::parse_from_args(std::env::args_os())
    }

    /// [`Cli::parse_args`] from given arguments.
    pub fn parse_from_args<I, T>(args: I) -> Cli
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().get_matches_from(args);
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
        cli.origins = origins(sub);
        cli
    }
}

/// `fetchall config`: the effective configuration as TOML, with each value's origin.
pub fn print_config(
    config: Option<&Path>,
    options: &Options,
    origins: &BTreeMap<String, String>,
    out: &mut dyn Write,
) -> Result<(), crate::Error> {
    let (file, path) = read_config(config)?;
    let file_keys: Vec<String> = match &path {
        Some(p) => std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let settings = Settings::from_options(file.merge(options.clone()));
    let file_name = path.as_ref().map(|p| p.display().to_string());
    let write = |out: &mut dyn Write| -> io::Result<()> {
        writeln!(
            out,
            "# fetchall's effective configuration: defaults < config file < FETCHALL_* environment < flags"
        )?;
        match &file_name {
            Some(f) => writeln!(out, "# config file: {f}")?,
            None => writeln!(out, "# config file: none")?,
        }
        for (key, value) in settings.to_toml_values() {
            let origin = match origins.get(key) {
                Some(o) => o.clone(),
                None if file_keys.iter().any(|k| k == key) => "config file".to_owned(),
                None => "default".to_owned(),
            };
            match value {
                Some(v) => writeln!(out, "{key} = {v}  # {origin}")?,
                None => writeln!(out, "# {key} is not set")?,
            }
        }
        Ok(())
    };
    write(out).map_err(crate::Error::Write)
}

/// `fetchall completions SHELL`.
pub fn print_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "fetchall", out);
}

/// `fetchall man`.
pub fn print_man(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

impl Cli {
    /// Defaults, then the config file, then `FETCHALL_*` variables and flags (clap has already
    /// layered those two: a flag beats its variable).
    pub fn settings(&self) -> Result<Settings, crate::Error> {
        let (file, _) = read_config(self.config.as_deref())?;
        Ok(Settings::from_options(file.merge(self.options.clone())))
    }

    /// The tracing filter the flags ask for (`RUST_LOG`, when set, wins).
    pub fn log_level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        }
    }
}
