//! The binary's run: where records go (stdout or `--output`), the progress line, the summary.
//!
//! `main` parses and maps the outcome to an exit status; this module wires one run of the
//! pipeline to the user's terminal and files. It decides *whether* progress and the human
//! summary show (only when stderr is a terminal and `-q` is not given, so pipes, logs and
//! `| head` stay clean); `progress` and `summary` decide what they look like.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::cli::Cli;
use crate::progress::{self, Progress};
use crate::summary::Summary;
use crate::{Error, Shutdown, Tally};

/// Run the pipeline as the command line asks, stoppable through `shutdown`. The tally says
/// whether every record was ok.
pub async fn run(cli: &Cli, shutdown: &Shutdown) -> Result<Tally, Error> {
    let settings = cli.settings()?;
    let on_terminal = io::stderr().is_terminal() && !cli.quiet;
    let file = cli.file.clone().filter(|p| p.as_os_str() != "-");
    if file.is_none() && io::stdin().is_terminal() {
        return Err(Error::Usage(
            "no input: give a FILE of URLs, or pipe them on stdin (see --help)".into(),
        ));
    }
    let source = crate::input::open(cli.file.as_deref())
        .await
        .map_err(|source| Error::Input {
            path: cli.file.clone().unwrap_or_else(|| "-".into()),
            source,
        })?;
    if let Some(out) = &settings.output {
        // Creating the output truncates it: never when it is the input or the --resume file.
        for (what, other) in [("the input", &cli.file), ("--resume", &settings.resume)] {
            if let Some(other) = other
                && same_file(out, other)
            {
                return Err(Error::Usage(format!(
                    "--output {} is {what}; writing would erase it",
                    out.display()
                )));
            }
        }
    }
    let sink: Box<dyn Write + Send> = match &settings.output {
        Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
            Error::Usage(format!("--output: cannot create {}: {e}", path.display()))
        })?),
        None => Box::new(io::stdout()),
    };

    let progress = if on_terminal {
        Progress::stderr()
    } else {
        Progress::hidden()
    };
    if on_terminal && let Some(path) = file {
        // Count on a blocking thread while the run goes on; the bar gains its total later.
        // Lines --resume skips get no record, so they are not part of it.
        let progress = progress.clone();
        let resume = settings.resume.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(total) = progress::count_url_lines(&path) else {
                return;
            };
            let resumed = resume
                .and_then(|previous| crate::resume::Done::read(&previous).ok())
                .and_then(|(done, _)| progress::count_resumed(&path, &done).ok())
                .unwrap_or(0);
            progress.set_total(total.saturating_sub(resumed));
        });
    }
    let summary = Arc::new(Mutex::new(Summary::new(Instant::now())));
    let observe = {
        let progress = progress.clone();
        let summary = Arc::clone(&summary);
        Box::new(move |record: &crate::Record| {
            progress.observe(record);
            summary
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(record);
        })
    };
    let summary_path = settings.summary.clone();
    let result = crate::run_observed(settings, source, sink, shutdown, observe).await;
    progress.finish();
    let tally = result?;

    let report = summary
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .report();
    if let Some(path) = summary_path {
        let text = serde_json::to_string_pretty(&report).map_err(io::Error::from);
        text.and_then(|t| std::fs::write(&path, t + "\n"))
            .map_err(|e| {
                Error::Usage(format!("--summary: cannot write {}: {e}", path.display()))
            })?;
    }
    if on_terminal {
        let _ = write!(io::stderr(), "{report}");
    }
    Ok(tally)
}

/// Whether two paths name one existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
