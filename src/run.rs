//! A run: the pipeline's stages wired together on the caller's tokio runtime.
//!
//! [`start_with_cancel`] checks the settings, builds what the stages share (the HTTP client,
//! the gate, the `--resume` set), and spawns the stages: the input reader, the scheduler's
//! dispatcher, and (with `--ordered`) the reorder stage. The records come out of [`Run`];
//! [`Run::write_to`] hands them to the one writer. This module owns the order of start-up and
//! the stop: it does not fetch, limit or format anything itself.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, SettingsError};
use crate::input::{self, Source};
use crate::limit::{Gate, Limits};
use crate::output::{self, Observer, SinkHandle, Tally};
use crate::record::Record;
use crate::resume::Done;
use crate::settings::Settings;
use crate::{fetch, reorder, scheduler};

/// How many parsed input lines wait ahead of the scheduler.
const LINE_QUEUE: usize = 1024;
/// How many finished records wait for the output.
const RECORD_QUEUE: usize = 1024;

/// A running pipeline: records arrive in completion order (input order with
/// `settings.ordered`).
#[derive(Debug)]
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
        join_reader(self.reader).await
    }

    /// Write every record as a JSON line to `sink` through the one writer, a thread of its
    /// own (see [`Writing`]), calling `observe` with each record once it is written.
    pub fn write_to<W: Write + Send + 'static>(self, sink: W, observe: Observer) -> Writing {
        let (written, handle) = output::spawn_writer(self.records, sink, observe);
        Writing {
            written,
            handle,
            reader: self.reader,
        }
    }
}

/// A run whose records are being written: [`Writing::finish`] waits for the last one.
#[derive(Debug)]
pub struct Writing {
    written: oneshot::Receiver<io::Result<Tally>>,
    handle: SinkHandle,
    reader: JoinHandle<io::Result<()>>,
}

impl Writing {
    /// A handle on the sink, to flush whole lines and freeze it before an immediate exit.
    pub fn sink(&self) -> SinkHandle {
        self.handle.clone()
    }

    /// Wait until every record is written (or the sink's reader went away) and the input
    /// was read to its end.
    pub async fn finish(self) -> Result<Tally, Error> {
        let written = self
            .written
            .await
            .map_err(|_| Error::Write(io::Error::other("the writer thread died")))?
            .map_err(Error::Write)?;
        if written.reader_gone {
            // Nobody reads any more: the input's fate no longer matters.
            self.reader.abort();
            return Ok(written);
        }
        join_reader(self.reader).await.map(|()| written)
    }
}

async fn join_reader(reader: JoinHandle<io::Result<()>>) -> Result<(), Error> {
    match reader.await {
        Ok(result) => result.map_err(Error::Read),
        Err(e) => Err(Error::Read(io::Error::other(e))),
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
    settings.check()?;
    if let Some(dir) = &settings.save_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            SettingsError::new("save-dir", format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let client = fetch::client(&settings)?;
    let done = match &settings.resume {
        Some(path) => Some(Done::load(path).map_err(|source| Error::Resume {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let gate = Gate::new(Limits::from_settings(&settings));
    let window = settings
        .ordered
        .then(|| reorder::window(reorder::window_size(settings.concurrency)));
    let hard = CancellationToken::new();
    let alive = Arc::new(Semaphore::new(scheduler::alive_bound(&settings)));
    spawn_grace_timer(stop.clone(), hard.clone(), settings.grace);
    let ctx = Arc::new(scheduler::Context {
        client,
        settings,
        gate,
        start: Instant::now(),
        done,
        stop: stop.clone(),
        hard: hard.clone(),
        alive,
        input_done: std::sync::atomic::AtomicBool::new(false),
        _finished: hard.drop_guard(),
    });
    let (line_tx, line_rx) = mpsc::channel(LINE_QUEUE);
    let (record_tx, mut record_rx) = mpsc::channel(RECORD_QUEUE);
    // Stopping ends the reader wherever it waits (on the input or on a full queue): lines
    // not read yet are left unread.
    let reader = tokio::spawn(async move {
        tokio::select! {
            biased;
            () = stop.cancelled() => Ok(()),
            read = input::read_lines(source, line_tx) => read,
        }
    });
    let (order, order_rx) = window.unzip();
    // Unconstrained by tokio's cooperative budget: the dispatcher puts every line it has
    // into the gate before the requests it spawned get to run, so a request knows whether
    // more of its host are coming (and, if none, closes its connection: see
    // `scheduler::Context::last_for_host`). It still waits whenever the input or the
    // lookahead makes it, which is where the others run.
    tokio::spawn(tokio::task::unconstrained(scheduler::dispatch(
        ctx, line_rx, record_tx, order,
    )));
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

/// The grace timer: `grace` after a stop, cancel what is still in flight (`hard`). It also
/// ends when the run does (the context's drop guard cancels `hard`), so it never lingers.
fn spawn_grace_timer(stop: CancellationToken, hard: CancellationToken, grace: std::time::Duration) {
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

/// Run the whole pipeline and write every record as a JSON line to `sink`.
pub async fn run<W: Write + Send + 'static>(
    settings: Settings,
    source: Source,
    sink: W,
) -> Result<Tally, Error> {
    start(settings, source)?
        .write_to(sink, Box::new(|_: &Record| {}))
        .finish()
        .await
}
