//! The errors that stop a whole run. A single URL's failure is never one of these: it is a
//! record (see `record::ErrorKind`).

use std::io;
use std::path::PathBuf;

/// Why a run could not start, or stopped short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting cannot be used ([`crate::Settings::check`], `--save-dir`, `--proxy`).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Reading the input failed part-way.
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    /// Writing records failed.
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    /// The HTTP client could not be built (for example, no TLS roots).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The `--resume` file cannot be read.
    #[error("cannot read --resume {}: {source}", path.display())]
    Resume {
        /// The file named by `--resume`.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// `start` was called outside a tokio runtime.
    #[error("fetchall::start must be called from within a tokio runtime")]
    NoRuntime,
    /// The Redis of `--limits` cannot be used (see [`crate::check_limits`]); the message
    /// shows its URL with the password masked.
    #[error("{0}")]
    Limits(String),
    /// The state file (`--state`) cannot be used: not a fetchall state, a newer schema,
    /// corrupt, held by another fetchall, or a write failed. One line.
    #[error("{0}")]
    State(String),
}

/// A setting that cannot be used: which one, and why (never its value, which may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{setting}: {message}")]
pub struct SettingsError {
    setting: &'static str,
    message: String,
}

impl SettingsError {
    /// `setting` is the option's name as a flag and config key (`timeout`, `max-body`).
    pub fn new(setting: &'static str, message: impl Into<String>) -> SettingsError {
        SettingsError {
            setting,
            message: message.into(),
        }
    }

    /// The option's name, as a flag and config key.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}
