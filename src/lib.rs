//! fetchall: fetch many URLs concurrently, politely, and report every one as a JSON record.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! input (lines -> jobs) -> scheduler (limit: per-host queues, slots, rate quotas) -> fetch -> record -> output
//! ```
//!
//! The library runs on the caller's tokio runtime: [`start`] spawns the pipeline's tasks on the
//! current runtime and hands back the records as they complete; it never builds or nests a
//! runtime of its own.
//!
//! ```no_run
//! # async fn example() -> Result<(), fetchall::Error> {
//! let input = std::io::Cursor::new("http://127.0.0.1:8080/a\nhttp://127.0.0.1:8080/b\n");
//! let mut run = fetchall::start(fetchall::Settings::default(), Box::pin(input))?;
//! let mut failed = Vec::new();
//! while let Some(record) = run.next().await {
//!     if !record.ok {
//!         failed.push((record.url, record.error.map(|e| e.kind)));
//!     }
//! }
//! run.finish().await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod fetch;
pub mod host;
pub mod input;
pub mod limit;
pub mod output;
pub mod progress;
pub mod pushback;
pub mod quota;
pub mod record;
mod reorder;
pub mod request;
pub mod resolve;
pub mod resume;
pub mod retry;
pub mod save;
mod scheduler;
pub mod shutdown;
pub mod summary;
pub mod units;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Options, Settings};
pub use input::Source;
pub use output::Tally;
pub use record::{ErrorKind, Record};
pub use shutdown::Shutdown;

/// How many parsed input lines wait ahead of the scheduler.
const JOB_QUEUE: usize = 1024;
/// How many finished records wait for the output.
const RECORD_QUEUE: usize = 1024;

/// Errors that stop a whole run (a single URL's failure is a record, never one of these).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("cannot read {}: {source}", path.display())]
    Input { path: PathBuf, source: io::Error },
    #[error("reading input: {0}")]
    Read(io::Error),
    #[error("writing output: {0}")]
    Write(io::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("{0}")]
    Header(String),
    #[error("cannot read --resume {}: {source}", path.display())]
    Resume { path: PathBuf, source: io::Error },
    #[error("fetchall::start must be called from within a tokio runtime")]
    NoRuntime,
    /// A request flag, `--save-dir`, `--output` or `--summary` that cannot be used.
    #[error("{0}")]
    Usage(String),
}

/// A running pipeline: records arrive in completion order (input order with `settings.ordered`).
pub struct Run {
    records: mpsc::Receiver<Record>,
    reader: JoinHandle<io::Result<()>>,
}

impl Run {
    /// The next finished record, or `None` when every input line has its record (or, after a
    /// stop, when every started request has).
    pub async fn next(&mut self) -> Option<Record> {
        self.records.recv().await
    }

    /// Wait for the input reader and report a read error that cut the input short.
    pub async fn finish(self) -> Result<(), Error> {
        drop(self.records);
        match self.reader.await {
            Ok(result) => result.map_err(Error::Read),
            Err(e) => Err(Error::Read(io::Error::other(e))),
        }
    }

    /// Split into the record channel and the reader's handle (for a custom consumer).
    fn into_parts(self) -> (mpsc::Receiver<Record>, JoinHandle<io::Result<()>>) {
        (self.records, self.reader)
    }
}

/// Start fetching every line of `source` on the current tokio runtime.
pub fn start(settings: Settings, source: Source) -> Result<Run, Error> {
    start_with_cancel(settings, source, CancellationToken::new())
}

/// [`start`], stoppable: cancelling `stop` stops reading input and starting requests; requests
/// in flight get `settings.grace` to finish, then end with `cancelled` records. Lines not
/// started by then get no record. The run then ends as usual (`next()` returns `None`).
pub fn start_with_cancel(
    settings: Settings,
    source: Source,
    stop: CancellationToken,
) -> Result<Run, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    let template = request::Template::from_options(&settings.request).map_err(Error::Usage)?;
    if let Some(dir) = &settings.save_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Usage(format!("--save-dir: cannot create {}: {e}", dir.display()))
        })?;
    }
    let client = fetch::client(&settings)?;
    let done = match &settings.resume {
        Some(path) => Some(resume::Done::load(path).map_err(|source| Error::Resume {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let gate = limit::Gate::new(limit::Limits::from_settings(&settings));
    let window = settings
        .ordered
        .then(|| reorder::window(reorder::window_size(settings.concurrency)));
    let hard = CancellationToken::new();
    let alive = Arc::new(Semaphore::new(scheduler::alive_bound(&settings)));
    // The grace timer: `--grace` after a stop, cancel what is still in flight. It also ends
    // when the run does (the context's drop guard cancels `hard`), so it never lingers.
    {
        let (stop, hard, grace) = (stop.clone(), hard.clone(), settings.grace);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {
                    tokio::select! {
                        () = tokio::time::sleep(grace) => hard.cancel(),
                        () = hard.cancelled() => {}
                    }
                }
                () = hard.cancelled() => {}
            }
        });
    }
    let ctx = Arc::new(scheduler::Context {
        client,
        settings,
        gate,
        start: Instant::now(),
        done,
        stop: stop.clone(),
        hard: hard.clone(),
        alive,
        _finished: hard.drop_guard(),
        template,
    });
    let (job_tx, job_rx) = mpsc::channel(JOB_QUEUE);
    let (record_tx, mut record_rx) = mpsc::channel(RECORD_QUEUE);
    // Stopping ends the reader wherever it waits (on the input or on a full queue): lines
    // not read yet are left unread.
    let reader = tokio::spawn(async move {
        tokio::select! {
            biased;
            () = stop.cancelled() => Ok(()),
            read = input::read_jobs(source, job_tx) => read,
        }
    });
    let (order, order_rx) = window.unzip();
    tokio::spawn(scheduler::dispatch(ctx, job_rx, record_tx, order));
    if let Some(order_rx) = order_rx {
        let (ordered_tx, ordered_rx) = mpsc::channel(RECORD_QUEUE);
        tokio::spawn(reorder::reorder(record_rx, order_rx, ordered_tx));
        record_rx = ordered_rx;
    }
    Ok(Run {
        records: record_rx,
        reader,
    })
}

/// Run the whole pipeline and write every record as a JSON line to `sink`.
pub async fn run<W: Write + Send + 'static>(
    settings: Settings,
    source: Source,
    sink: W,
) -> Result<Tally, Error> {
    run_with_shutdown(settings, source, sink, &Shutdown::new()).await
}

/// [`run`], stoppable through `shutdown` (its token, or the signals it listens for).
pub async fn run_with_shutdown<W: Write + Send + 'static>(
    settings: Settings,
    source: Source,
    sink: W,
    shutdown: &Shutdown,
) -> Result<Tally, Error> {
    run_observed(settings, source, sink, shutdown, Box::new(|_: &Record| {})).await
}

/// [`run_with_shutdown`], calling `observe` with every record once it is written (on the
/// writer's thread): the progress line and the summary watch the run this way.
pub async fn run_observed<W: Write + Send + 'static>(
    settings: Settings,
    source: Source,
    sink: W,
    shutdown: &Shutdown,
    observe: output::Observer,
) -> Result<Tally, Error> {
    let (records, reader) = start_with_cancel(settings, source, shutdown.token())?.into_parts();
    let (written, handle) = output::spawn_writer_observed(records, sink, observe);
    shutdown.set_sink(handle);
    let written = written
        .await
        .map_err(|_| Error::Write(io::Error::other("the writer thread died")))?
        .map_err(Error::Write)?;
    if written.reader_gone {
        // Nobody reads any more: the input's fate no longer matters.
        reader.abort();
        return Ok(written);
    }
    match reader.await {
        Ok(Ok(())) => Ok(written),
        Ok(Err(e)) => Err(Error::Read(e)),
        Err(e) => Err(Error::Read(io::Error::other(e))),
    }
}
