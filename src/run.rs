//! A run: the pipeline's stages wired together on the caller's tokio runtime.
//!
//! [`start_with_cancel`] checks the settings, builds what the stages share (the HTTP client,
//! the gate, the `--resume` set), and spawns the stages: the input reader, the scheduler's
//! dispatcher, and (with `--ordered`) the reorder stage. The records come out of [`Run`];
//! [`Run::write_to`] hands them to the one writer. This module owns the order of start-up and
//! the stop: it does not fetch, limit or format anything itself.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, SettingsError};
use crate::input::{self, Input, Rounds, Source};
use crate::limit::{Gate, Limits};
use crate::output::{self, Observer, SinkHandle, Tally};
use crate::record::Record;
use crate::redact::Redactor;
use crate::reorder::Order;
use crate::resume::Done;
use crate::save::SaveDir;
use crate::scheduler::Skipped;
use crate::settings::Settings;
use crate::state::State;
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
    reader: JoinHandle<Result<(), Error>>,
    /// `settings.changed_only`: the writer skips unchanged records.
    changed_only: bool,
    /// Lines left without a record (`--resume`, `--shard`), counted as the run goes.
    skipped: Skipped,
}

impl Run {
    /// The counts of lines this run leaves without a record (`--resume`, `--shard`), updated
    /// as it goes: final once every record is written.
    pub fn skipped(&self) -> Skipped {
        self.skipped.clone()
    }

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
        let (written, handle) =
            output::spawn_writer(self.records, sink, observe, self.changed_only);
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
    reader: JoinHandle<Result<(), Error>>,
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

async fn join_reader(reader: JoinHandle<Result<(), Error>>) -> Result<(), Error> {
    match reader.await {
        Ok(result) => result,
        Err(e) => Err(Error::Read(io::Error::other(e))),
    }
}

/// With `settings.limits`: check that its Redis can be reached and runs scripts, so that a run
/// asked to share its limits fails before it starts (and before its caller creates any output
/// file) instead of finding out mid-run. Without `settings.limits`, `Ok` at once.
pub async fn check_limits(settings: &Settings) -> Result<(), Error> {
    match &settings.limits {
        Some(url) => crate::limit::check_shared(url).await.map_err(Error::Limits),
        None => Ok(()),
    }
}

/// Start fetching every line of `source` on the current tokio runtime, once. A run that polls
/// (`settings.every`, `rounds`, `state`) starts with [`start_input`].
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
    if settings.polling() {
        return Err(Error::Settings(SettingsError::new(
            "every",
            "a polling run (every, rounds > 1, state) starts with `start_input`, which opens \
             its state off the runtime",
        )));
    }
    launch(settings, Input::Reader(source), stop, None)
}

/// Start a run that may poll: with `settings.every` or `rounds` it reads `input` again for
/// every round (a file is reopened; a reader is spooled to a temporary file in the first round
/// and replayed), on one gate and one HTTP client for the whole run, so rate limits, host
/// pauses, adaptive rates and concurrency caps carry over from round to round. Rounds never
/// overlap: the next one starts on its schedule, or at once when the last record of the
/// previous one is out past that. When polling, the state (`settings.state`, or a temporary
/// one) is opened here, on its own thread, before any request: a file that cannot be used is
/// this function's error. Stopping between rounds ends the run at once.
pub async fn start_input(
    settings: Settings,
    input: Input,
    stop: CancellationToken,
) -> Result<Run, Error> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::NoRuntime);
    }
    settings.check()?;
    let state = if settings.polling() {
        Some(State::open(settings.state.as_deref()).await?)
    } else {
        None
    };
    launch(settings, input, stop, state)
}

/// Build what the stages share and spawn them.
fn launch(
    settings: Settings,
    input: Input,
    stop: CancellationToken,
    state: Option<State>,
) -> Result<Run, Error> {
    let redactor = Arc::new(Redactor::new(&settings.mask_params));
    let client = fetch::client(&settings)?;
    let done = match &settings.resume {
        Some(path) => Some(
            Done::load(path, Redactor::clone(&redactor)).map_err(|source| Error::Resume {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    // Created last: nothing is made on disk until every setting has been checked.
    let save_dir = match &settings.save_dir {
        Some(dir) => {
            let mut keep = settings.keep_files.clone();
            keep.extend(settings.resume.clone());
            Some(SaveDir::create(dir, &keep).map_err(|e| {
                SettingsError::new("save-dir", format!("cannot create {}: {e}", dir.display()))
            })?)
        }
        None => None,
    };
    let gate = Gate::new(Limits::from_settings(&settings)).map_err(Error::Limits)?;
    let window = settings
        .ordered
        .then(|| reorder::window(reorder::window_size(settings.concurrency)));
    let hard = CancellationToken::new();
    let alive = Arc::new(Semaphore::new(scheduler::alive_bound(&settings)));
    let waiting = Arc::new(Semaphore::new(settings.lookahead.get()));
    spawn_grace_timer(stop.clone(), hard.clone(), settings.grace);
    let changed_only = settings.changed_only;
    let rounds = Rounds::new(input, settings.round_count() != Some(1));
    let profiled = settings.profiled();
    let ctx = Arc::new(scheduler::Context {
        client,
        settings,
        redactor: Arc::clone(&redactor),
        save_dir,
        gate,
        start: Instant::now(),
        done,
        stop: stop.clone(),
        hard: hard.clone(),
        alive,
        waiting,
        input_done: std::sync::atomic::AtomicBool::new(false),
        _finished: hard.drop_guard(),
        skipped: Skipped::default(),
        state,
        profiled,
        more_rounds: std::sync::atomic::AtomicBool::new(false),
        reuse: scheduler::Reuse::new(crate::fetch::POOL_IDLE_TIMEOUT),
    });
    let skipped = ctx.skipped.clone();
    let (record_tx, mut record_rx) = mpsc::channel(RECORD_QUEUE);
    let (order, order_rx) = window.unzip();
    let reader = tokio::spawn(drive(ctx, rounds, record_tx, order, stop));
    if let Some(order_rx) = order_rx {
        let (ordered_tx, ordered_rx) = mpsc::channel(RECORD_QUEUE);
        tokio::spawn(reorder::reorder(record_rx, order_rx, ordered_tx));
        record_rx = ordered_rx;
    }
    Ok(Run {
        records: record_rx,
        reader,
        changed_only,
        skipped,
    })
}

/// Wait until a round's start `at`, precisely, waking the state (if any) a millisecond ahead
/// so that it answers the round's first lookups at once (see `State::wake`).
async fn wait_for_round(ctx: &scheduler::Context, at: std::time::Instant) {
    const WAKE_STATE_AHEAD: std::time::Duration = std::time::Duration::from_millis(1);
    if let Some(state) = &ctx.state
        && let Some(ahead) = at.checked_sub(WAKE_STATE_AHEAD)
        && ahead > std::time::Instant::now()
    {
        crate::limit::wait_until(ahead).await;
        state.wake().await;
    }
    crate::limit::wait_until(at).await;
}

/// Run round after round on the one context: read the round's input and dispatch its lines,
/// wait until its last record is handed over, then wait for the next round's start. Ends after
/// the last round, at a stop, or when nobody reads the records; then closes the state.
async fn drive(
    ctx: Arc<scheduler::Context>,
    mut rounds: Rounds,
    records: mpsc::Sender<Record>,
    mut order: Option<Order>,
    stop: CancellationToken,
) -> Result<(), Error> {
    let count = ctx.settings.round_count();
    let first = tokio::time::Instant::now();
    let mut result = Ok(());
    let mut index = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        if ctx.state.is_some() {
            tracing::debug!("round {index} starts");
        }
        // A host's last request of this round is not its last of the run when a round
        // follows: its connection stays open for it (see `Context::closes_after`).
        let more = count.is_none_or(|n| index + 1 < n);
        ctx.more_rounds.store(more, Ordering::Relaxed);
        ctx.input_done.store(false, Ordering::Relaxed);
        let source = match rounds.next().await {
            Ok(source) => source,
            Err(e) => {
                result = Err(Error::Read(e));
                break;
            }
        };
        let (line_tx, line_rx) = mpsc::channel(LINE_QUEUE);
        let (guard, mut round_done) = mpsc::channel::<()>(1);
        // Stopping ends the reader wherever it waits (on the input or on a full queue):
        // lines not read yet are left unread.
        let read = async {
            tokio::select! {
                biased;
                () = stop.cancelled() => Ok(()),
                read = input::read_lines(source, line_tx, Arc::clone(&ctx.redactor)) => read,
            }
        };
        let round = scheduler::Round { index, guard };
        // Unconstrained by tokio's cooperative budget: the dispatcher puts every line it has
        // into the gate before the requests it spawned get to run, so a request knows whether
        // more of its host are coming (and, if none, closes its connection: see
        // `scheduler::Context::closes_after`). It still waits whenever the input or the
        // lookahead makes it, which is where the others run.
        let dispatch = tokio::task::unconstrained(scheduler::dispatch(
            Arc::clone(&ctx),
            line_rx,
            records.clone(),
            order.take(),
            round,
        ));
        let (read, back) = tokio::join!(read, dispatch);
        order = back;
        // `None` once every task of the round has handed over its record.
        let _ = round_done.recv().await;
        if let Some(state) = &ctx.state {
            // After every outcome of the round was put: a new state file's keys get their
            // index now, before the next round looks them up.
            state.round_ended().await;
        }
        if let Err(e) = read {
            result = Err(Error::Read(e));
            break;
        }
        index += 1;
        if stop.is_cancelled() || records.is_closed() || count.is_some_and(|n| index >= n) {
            break;
        }
        let now = tokio::time::Instant::now();
        let (at, late) = next_start(first, started, ctx.settings.every, now);
        if let Some(late) = late {
            tracing::warn!(
                "round {index} starts {} late: round {} ran past its slot; the schedule slipped",
                crate::units::HumanDuration(late),
                index - 1
            );
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = records.closed() => break,
            // To the microsecond: tokio's timer would start every round a millisecond or two
            // late.
            () = wait_for_round(&ctx, at.into_std()) => {}
        }
    }
    if let Some(state) = &ctx.state
        && let Err(e) = state.close().await
        && result.is_ok()
    {
        result = Err(e);
    }
    result
}

/// When the round after one that started at `last` starts: the first slot of the schedule
/// (`first + k * every`) after `last`, or `now` when that slot has passed (with how late it
/// is). Missed slots are not made up: the schedule never runs two rounds back to back to
/// catch up. Without `every`, rounds follow each other at once.
fn next_start<I>(first: I, last: I, every: Option<Duration>, now: I) -> (I, Option<Duration>)
where
    I: Copy + Ord + std::ops::Add<Duration, Output = I> + std::ops::Sub<I, Output = Duration>,
{
    let Some(every) = every else {
        return (now, None);
    };
    let since = (last - first).as_nanos();
    let k = since / every.as_nanos().max(1) + 1;
    let slot = first + every.saturating_mul(u32::try_from(k).unwrap_or(u32::MAX));
    if slot >= now {
        (slot, None)
    } else {
        (now, Some(now - slot))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_polling_job_is_admitted_only_once_its_state_lookup_is_answered() {
        // The state thread is held, so no lookup is answered until `release` is dropped. A job
        // admitted before its answer would have its start (and its rate cells) counted while
        // it cannot be sent yet; admission must come after the answer, so every record starts
        // after the release. Port 1 refuses at once: the records are errors, with starts.
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            state: Some(dir.path().join("state.db")),
            ..Settings::default()
        };
        settings.retry.retries = 0;
        // A file with a row: a new one's first round is answered without the thread.
        let state = State::open(settings.state.as_deref()).await.unwrap();
        let key = crate::state::Key::of_invalid("another line");
        let entry = state.lookup(key).await.entry().await.unwrap();
        let outcome = crate::state::Stored::default();
        state.insert(key, entry.row, outcome, "t0".into()).await;
        state.close().await.unwrap();
        let state = State::open(settings.state.as_deref()).await.unwrap();
        let release = state.hold().await;
        let urls = "http://127.0.0.1:1/a\nhttp://127.0.0.1:1/b\nhttp://127.0.0.1:1/c\n";
        let input = Input::Reader(Box::pin(std::io::Cursor::new(urls.as_bytes())));
        let mut run = launch(settings, input, CancellationToken::new(), Some(state)).unwrap();
        // The run's clock started before this instant.
        let launched = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let released = launched.elapsed().as_secs_f64() * 1e3;
        drop(release);
        let mut starts = Vec::new();
        while let Some(record) = run.next().await {
            starts.push(record.started_ms.unwrap());
        }
        run.finish().await.unwrap();
        assert_eq!(starts.len(), 3);
        assert!(
            // `started_ms` is rounded to the microsecond.
            starts.iter().all(|&s| s + 0.001 >= released),
            "admitted before the lookup was answered (at {released} ms): {starts:?}"
        );
    }

    #[test]
    fn rounds_keep_to_the_schedule_and_an_overrun_slips_without_catching_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let every = Some(s(10));
        // Round 0 took 3 s: round 1 starts at 10 s.
        assert_eq!(next_start(t0, t0, every, t0 + s(3)), (t0 + s(10), None));
        // Round 1 started at 10 s and took 25 s: round 2 starts at once, 10 s late...
        assert_eq!(
            next_start(t0, t0 + s(10), every, t0 + s(30)),
            (t0 + s(30), Some(s(10)))
        );
        // ...and round 3 takes the next slot after round 2's start, not the missed ones.
        assert_eq!(
            next_start(t0, t0 + s(30), every, t0 + s(31)),
            (t0 + s(40), None)
        );
        assert_eq!(
            next_start(t0, t0 + s(5), None, t0 + s(6)),
            (t0 + s(6), None)
        );
    }
}
