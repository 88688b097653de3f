//! The command line: the clap definitions, and parsing them over the config file.
//!
//! Parsing happens once ([`parse`]): find the config file (`--config`, `FETCHALL_CONFIG`, or the
//! default path), read it, install its values as the options' defaults, then let clap parse
//! the flags and the environment. What comes out is typed; nothing after this parses a string.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::config_file::ConfigFile;
use super::options::{RunArgs, is_run_option, with_env_names};

/// Fetch many URLs concurrently and politely; print one JSON record per input line.
///
/// Reads one URL per line from FILE (or stdin); blank lines and lines starting with `#` are
/// skipped. Records go to stdout in completion order; logs go to stderr.
///
/// Exit status: 0 every record ok, 1 some record failed, 2 usage or fatal error, 130/143
/// stopped by Ctrl-C/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "fetchall", version, args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// File of URLs, one per line; `-` or no FILE reads stdin
    #[arg(value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,

    /// Read options from a TOML file (keys are the long flag names); FETCHALL_* variables and
    /// flags override it [default: $XDG_CONFIG_HOME/fetchall/config.toml if it exists]
    #[arg(long, value_name = "PATH", env = "FETCHALL_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) options: RunArgs,

    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,

    /// Only errors on stderr: no progress line, no summary, no warnings, no per-URL log
    /// lines (every failure is in its record); RUST_LOG does not override it
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Replay the three lessons of async I/O against an embedded loopback server (no network
    /// needed): overlapping waits, a semaphore, and failures as data
    Demo,
    /// Print the effective configuration as TOML, each value with where it came from
    /// (default, config file, FETCHALL_* environment variable, flag); takes the same options.
    /// Credential headers and a proxy password show as ****
    Config {
        #[command(flatten)]
        options: Box<RunArgs>,
        /// Show the settings for requests to this host (a name, or a URL): the config file's
        /// most specific matching [hosts."pattern"] section applied, each value's origin
        /// naming the section [default: the top-level settings]
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Print a shell completion script (e.g. `fetchall completions bash > /etc/bash_completion.d/fetchall`)
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `fetchall man > fetchall.1`
    Man,
    /// Merge shard outputs (each written with --ordered) into input order on stdout, by seq
    /// (round by round when polling, then page); duplicates and gaps are reported on stderr with exit status 1.
    /// Memory is bounded by the number of files (see docs/scale-out.md)
    Merge {
        /// Write the merged records to FILE (created or truncated) [default: stdout]
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Shard outputs, e.g. out-0.jsonl out-1.jsonl ...
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

/// The whole command, environment variable names included (for parsing, completions and the
/// man page alike).
pub(crate) fn command() -> clap::Command {
    with_env_names(Cli::command()).mut_subcommand("config", with_env_names)
}

/// A parsed command line: the arguments, the config file under them, and where each run
/// option's value came from.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) cli: Cli,
    pub(crate) file: ConfigFile,
    /// Every run option's raw values (as given, or the default) and origin, in declaration
    /// order: what `fetchall config` prints.
    pub(crate) effective: Vec<Effective>,
}

/// One run option's value as given and where it came from.
#[derive(Debug)]
pub(crate) struct Effective {
    pub(crate) key: String,
    pub(crate) values: Vec<String>,
    /// Whether the option takes a list (`rate`, `header`).
    pub(crate) repeats: bool,
    /// Whether the option is a boolean (its raw value may be `1`, `yes`, `on`...).
    pub(crate) boolean: bool,
    /// `flag`, `environment FETCHALL_X`, `config file` or `default`.
    pub(crate) origin: String,
}

/// Parse the process's arguments over the config file. A usage error exits here (status 2,
/// clap's message); a config file that cannot be used is returned as one line.
pub(crate) fn parse() -> Result<Parsed, String> {
    parse_from(std::env::args_os().collect())
}

fn parse_from(args: Vec<OsString>) -> Result<Parsed, String> {
    // First pass, errors ignored: only to learn which config file to read.
    let explicit = command()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok()
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let file = ConfigFile::load(explicit.as_deref())?;
    let matches = file.install(command())?.get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let run_matches = match matches.subcommand() {
        Some(("config", sub)) => sub,
        _ => &matches,
    };
    let effective = effective(run_matches, &file);
    Ok(Parsed {
        cli,
        file,
        effective,
    })
}

/// Every run option in `matches`, with its raw values and origin.
fn effective(matches: &ArgMatches, file: &ConfigFile) -> Vec<Effective> {
    let cmd = command();
    cmd.get_arguments()
        .filter_map(|arg| {
            let key = arg.get_long().filter(|l| is_run_option(l))?;
            let id = arg.get_id().as_str();
            let values = matches
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let origin = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => format!(
                    "environment {}",
                    arg.get_env()
                        .map(|e| e.to_string_lossy())
                        .unwrap_or_default()
                ),
                _ if file.sets(key) => "config file".to_owned(),
                _ => "default".to_owned(),
            };
            Some(Effective {
                key: key.to_owned(),
                values,
                repeats: matches!(arg.get_action(), clap::ArgAction::Append),
                boolean: arg.get_value_parser().type_id() == std::any::TypeId::of::<bool>(),
                origin,
            })
        })
        .collect()
}

impl Parsed {
    /// The library's settings and the binary's outputs for `options`, with the config file's
    /// host sections as profiles, checked; the error says where the bad value came from.
    pub(crate) fn resolve(
        &self,
        options: &RunArgs,
    ) -> Result<(fetchall::Settings, super::options::Outputs), String> {
        let (mut settings, outputs) = options.resolve().map_err(|e| self.explain(&e))?;
        settings.profiles = self.file.profiles()?;
        settings.check().map_err(|e| self.explain(&e))?;
        Ok((settings, outputs))
    }

    /// A setting's error as the user can act on it: where the bad value came from (the config
    /// file, an environment variable, or the flag).
    pub(crate) fn explain(&self, e: &fetchall::SettingsError) -> String {
        let origin = self
            .effective
            .iter()
            .find(|x| x.key == e.setting())
            .map(|x| x.origin.as_str());
        match (origin, &self.file.path) {
            // A host section's error names the section in its message.
            (None, Some(path)) if e.setting() == "hosts" => {
                format!("config file {}: {}", path.display(), e.message())
            }
            (Some("config file"), Some(path)) => format!(
                "config file {}: `{}`: {}",
                path.display(),
                e.setting(),
                e.message()
            ),
            (Some(env), _) if env.starts_with("environment ") => {
                format!("{e} (from the {env})")
            }
            _ => e.to_string(),
        }
    }
}

impl Cli {
    /// The tracing filter the flags ask for (`RUST_LOG`, when set, wins).
    pub(crate) fn log_level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        }
    }
}

/// Where values come from, as a map for tests: key -> origin.
#[cfg(test)]
fn origins(parsed: &Parsed) -> std::collections::BTreeMap<String, String> {
    parsed
        .effective
        .iter()
        .map(|e| (e.key.clone(), e.origin.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Parsed {
        parse_from(args.iter().map(OsString::from).collect()).unwrap()
    }

    #[test]
    fn every_run_option_has_an_environment_variable_named_after_its_flag() {
        let cmd = command();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long().filter(|l| is_run_option(l)) else {
                continue;
            };
            let env = arg.get_env().unwrap().to_string_lossy().into_owned();
            assert_eq!(
                env,
                format!("FETCHALL_{}", long.to_uppercase().replace('-', "_"))
            );
        }
    }

    /// Every boolean option is declared the same way, so `--x=false`, `FETCHALL_X=1` and
    /// `x = "yes"` in the config file all work for each of them.
    #[test]
    fn every_boolean_option_takes_an_optional_value() {
        for arg in command().get_arguments() {
            let Some(long) = arg.get_long().filter(|l| is_run_option(l)) else {
                continue;
            };
            if arg.get_value_parser().type_id() == std::any::TypeId::of::<bool>() {
                assert!(
                    matches!(arg.get_action(), clap::ArgAction::Set),
                    "--{long} is a bare switch: declare it like --insecure"
                );
                parse(&["fetchall", &format!("--{long}=false")]);
                parse(&["fetchall", &format!("--{long}")]);
            }
        }
    }

    #[test]
    fn flags_are_typed_and_their_origin_is_kept() {
        let p = parse(&["fetchall", "-c", "7", "--rate", "5/s", "urls.txt"]);
        assert_eq!(p.cli.options.concurrency.get(), 7);
        assert_eq!(p.cli.options.rate.len(), 1);
        let origins = origins(&p);
        assert_eq!(origins["concurrency"], "flag");
        assert_eq!(origins["timeout"], "default");
    }

    fn with_config(text: &str, args: &[&str]) -> Result<Parsed, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        let mut argv: Vec<OsString> = vec!["fetchall".into(), "--config".into(), path.into()];
        argv.extend(args.iter().map(OsString::from));
        parse_from(argv)
    }

    #[test]
    fn config_file_values_sit_under_flags_and_keep_their_origin() {
        let text =
            "concurrency = 3\nrate = [\"1/s\", \"2.5/m\"]\ninsecure = \"yes\"\nretry-500 = true\n";
        let p = with_config(text, &["-c", "9"]).unwrap();
        assert_eq!(p.cli.options.concurrency.get(), 9, "the flag wins");
        assert_eq!(p.cli.options.rate.len(), 2);
        assert!(p.cli.options.insecure && p.cli.options.retry_500);
        let origins = origins(&p);
        assert_eq!(origins["concurrency"], "flag");
        assert_eq!(origins["rate"], "config file");
        assert_eq!(origins["insecure"], "config file");
        assert_eq!(origins["timeout"], "default");
    }

    #[test]
    fn config_file_errors_name_the_key_and_never_quote_a_credential() {
        let e = with_config("concurency = 2\n", &[]).unwrap_err();
        assert!(e.contains("unknown key `concurency`"), "{e}");
        let e = with_config("concurrency = \"many\"\n", &[]).unwrap_err();
        assert!(e.contains("`concurrency`"), "{e}");
        // Values are checked when the settings are resolved; no message quotes them.
        let p = with_config("header = \"Authorization: Bearer s3cret\\u0001\"\n", &[]).unwrap();
        let e = p.cli.options.resolve().unwrap_err().to_string();
        assert!(e.contains("--header") && !e.contains("s3cret"), "{e}");
        let p = with_config("proxy = \"sock5://u:s3cret@p.test:1\"\n", &[]).unwrap();
        let e = p.cli.options.resolve().unwrap_err().to_string();
        assert!(e.contains("--proxy") && !e.contains("s3cret"), "{e}");
        let e = with_config(
            "header = \"Authorization: Bearer s3cret\nconcurrency = 2\n",
            &[],
        )
        .unwrap_err();
        assert!(
            e.contains("not valid TOML at line 1") && !e.contains("s3cret"),
            "{e}"
        );
        let e = with_config("rate = [[\"1/s\"]]\n", &[]).unwrap_err();
        assert!(e.contains("`rate`"), "{e}");
        let e = with_config("concurrency = [1, 2]\n", &[]).unwrap_err();
        assert!(e.contains("takes one value"), "{e}");
    }
}
