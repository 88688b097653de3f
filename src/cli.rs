//! The command line: clap definitions, and their resolution into [`Settings`].
//!
//! Everything clap-specific stays in this file; the rest of the crate takes `Settings`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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

    /// Read options from a TOML file (keys are the long flag names); flags override it
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub options: Options,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the three lessons of async I/O against an embedded loopback server (no network
    /// needed): overlapping waits, a semaphore, and failures as data
    Demo,
}

impl Cli {
    /// Defaults, then the config file, then the flags.
    pub fn settings(&self) -> Result<Settings, crate::Error> {
        let file = match &self.config {
            Some(path) => Options::from_file(path)?,
            None => Options::default(),
        };
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
