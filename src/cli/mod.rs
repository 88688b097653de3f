//! The binary's own parts: everything that knows about flags, files, terminals and signals.
//!
//! `args` parses the command line over the config file (`config_file`) into the run options
//! (`options`), each declared once; `run` wires one run of the library's pipeline to stdout
//! or `--output`, the progress line (`progress`) and the summary (`summary`); `signals` turns
//! Ctrl-C into the library's cancellation; `show_config`, `demo` and the completions and man
//! page are the other commands; `exit` maps every outcome to an exit status.

pub(crate) mod args;
mod config_file;
mod demo;
pub(crate) mod exit;
mod merge;
mod options;
pub(crate) mod progress;
mod run;
mod show_config;
mod signals;
mod summary;

use std::io::Write;

use self::args::{Command, Parsed};
use self::exit::{Exit, report};

pub(crate) use self::options::MAX_THREADS;

/// Run the command the user gave, on the current runtime.
pub(crate) async fn execute(parsed: Parsed) -> Exit {
    let mut stdout = std::io::stdout();
    match &parsed.cli.command {
        Some(Command::Demo) => match demo::run(stdout).await {
            Ok(()) => Exit::Ok,
            Err(e) => report(&e),
        },
        Some(Command::Config { options, host }) => {
            if let Some(Err(e)) = host.as_deref().map(show_config::host_name) {
                return report(&exit::Message(e));
            }
            let settings = match parsed.resolve(options) {
                Ok((settings, _)) => settings,
                Err(e) => return report(&exit::Message(e)),
            };
            match show_config::print(&parsed, &settings, host.as_deref(), &mut stdout) {
                Ok(()) => Exit::Ok,
                Err(e) => report(&e),
            }
        }
        Some(Command::Completions { shell }) => {
            // Generated into memory first: clap_complete panics when its writer fails (a
            // reader that went away); a failed write here is reported like any other.
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut args::command(), "fetchall", &mut script);
            match stdout.write_all(&script).and_then(|()| stdout.flush()) {
                Ok(()) => Exit::Ok,
                Err(e) => report(&e),
            }
        }
        Some(Command::Man) => match clap_mangen::Man::new(args::command()).render(&mut stdout) {
            Ok(()) => Exit::Ok,
            Err(e) => report(&e),
        },
        Some(Command::Merge { output, files }) => merge::run(output.as_deref(), files),
        None => fetch(&parsed).await,
    }
}

/// The main job: fetch every line of the input.
async fn fetch(parsed: &Parsed) -> Exit {
    let signals = match signals::Signals::listen() {
        Ok(s) => s,
        Err(e) => return report(&e),
    };
    let result = run::run(parsed, &signals).await;
    if let Some(exit) = signals.exit() {
        // Stopped by a signal: 128 + its number, whatever the records said.
        if let Err(e) = result {
            report(&*e);
        }
        return exit;
    }
    match result {
        Ok(tally) if tally.reader_gone || tally.failed == 0 => Exit::Ok,
        Ok(_) => Exit::SomeFailed,
        Err(e) => report(&*e),
    }
}
