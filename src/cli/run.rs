//! The binary's run: where records go (stdout or `--output`), the progress line, the summary.
//!
//! This module wires one run of the pipeline to the user's terminal and files. Everything is
//! checked before any file is created or truncated: the settings, the input, and that no
//! output file is also the input, the `--resume` file or the other output (by file identity,
//! so a hard link or a symlink is caught too). It decides *whether* progress and the human
//! summary show (only when stderr is a terminal and `-q` is not given, so pipes, logs and
//! `| head` stay clean); `progress` and `summary` decide what they look like.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fetchall::{Input, Record, Source, Tally};

use super::args::Parsed;
use super::exit::Message;
use super::options::Outputs;
use super::progress::Progress;
use super::signals::Signals;
use super::summary::Summary;

/// Run the pipeline as the command line asks, stoppable through `signals`. The tally says
/// whether every record was ok.
pub(crate) async fn run(
    parsed: &Parsed,
    signals: &Signals,
) -> Result<Tally, Box<dyn std::error::Error + Send + Sync>> {
    let cli = &parsed.cli;
    let (settings, outputs) = cli
        .options
        .resolve()
        .map_err(|e| message(parsed.explain(&e)))?;
    let file = cli.file.clone().filter(|p| p.as_os_str() != "-");
    if file.is_none() && io::stdin().is_terminal() {
        return Err(message(
            "no input: give a FILE of URLs, or pipe them on stdin (see --help)",
        ));
    }
    check_files(
        file.as_deref(),
        settings.resume.as_deref(),
        &outputs,
        settings.state.as_deref(),
    )?;
    let source = open(file.as_deref()).await.map_err(|e| {
        let name = file.as_deref().unwrap_or(Path::new("-"));
        message(format!("cannot read {}: {e}", name.display()))
    })?;
    let polling = settings.polling();
    let every = settings.every;
    // A polling run reopens its file every round; a single run reads what was opened (which
    // may be a pipe that cannot be opened twice).
    let input = match (&file, polling) {
        (Some(path), true) => Input::File(path.clone()),
        _ => Input::Reader(source),
    };
    let resume = settings.resume.clone();
    // Before any file is created: the state file is opened (and refused) here.
    let started = fetchall::start_input(settings, input, signals.token()).await?;
    let sink: Box<dyn Write + Send> = match &outputs.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| message(format!("--output: cannot create {}: {e}", path.display())))?,
        ),
        None => Box::new(io::stdout()),
    };

    let on_terminal = io::stderr().is_terminal() && !cli.quiet;
    let progress = progress(on_terminal, file, resume);
    if polling {
        progress.poll_every(every, Instant::now());
    }
    let summary = Arc::new(Mutex::new(Summary::new(Instant::now())));
    let observe = {
        let progress = progress.clone();
        let summary = Arc::clone(&summary);
        Box::new(move |record: &Record| {
            progress.observe(record);
            summary
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(record);
        })
    };
    let writing = started.write_to(sink, observe);
    signals.set_sink(writing.sink());
    let result = writing.finish().await;
    progress.finish();
    let mut tally = result?;

    let report = summary
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .report();
    if let Some(path) = &outputs.summary {
        let text = serde_json::to_string_pretty(&report).map_err(io::Error::from);
        text.and_then(|t| std::fs::write(path, t + "\n"))
            .map_err(|e| message(format!("--summary: cannot write {}: {e}", path.display())))?;
    }
    if on_terminal {
        let _ = write!(io::stderr(), "{report}");
    }
    if polling && let Some(last) = report.rounds.last() {
        // The exit status says how the last completed round went.
        tally.failed = last.failed;
    }
    Ok(tally)
}

/// The progress line: shown only on a terminal. For a file, its total is counted on a
/// blocking thread while the run goes on; the bar gains it (and an ETA) later.
fn progress(on_terminal: bool, file: Option<PathBuf>, resume: Option<PathBuf>) -> Progress {
    if !on_terminal {
        return Progress::hidden();
    }
    let progress = Progress::stderr();
    if let Some(path) = file {
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(total) = fetchall::count_records(&path, resume.as_deref()) {
                progress.set_total(total);
            }
        });
    }
    progress
}

fn message(text: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(Message(text.into()))
}

/// Refuse a run whose output files would erase one of its inputs or each other: `-o`,
/// `--summary` and `--state` against the input, the `--resume` file and one another, by file
/// identity.
fn check_files(
    input: Option<&Path>,
    resume: Option<&Path>,
    outputs: &Outputs,
    state: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let named: [(&str, Option<&Path>); 5] = [
        ("the input", input),
        ("--resume", resume),
        ("--output", outputs.output.as_deref()),
        ("--summary", outputs.summary.as_deref()),
        ("--state", state),
    ];
    for (i, (out_name, out)) in named.iter().enumerate().skip(2) {
        let Some(out) = out else { continue };
        for (other_name, other) in &named[..i] {
            if let Some(other) = other
                && same_file(out, other)
            {
                return Err(message(format!(
                    "{out_name} {} is {other_name}; writing would erase it",
                    out.display()
                )));
            }
        }
    }
    Ok(())
}

/// Whether two paths name one existing file (the same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    same_file::is_same_file(a, b).unwrap_or(false)
}

/// Open the input: a file, or stdin for `None`.
async fn open(path: Option<&Path>) -> io::Result<Source> {
    let Some(path) = path else {
        return Ok(Box::pin(tokio::io::stdin()));
    };
    let file = tokio::fs::File::open(path).await?;
    if file.metadata().await?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    Ok(Box::pin(file))
}
