//! Scheduler: reads jobs in input order, queues each one at its host in the [`Gate`], and runs
//! its attempts, once admitted, until it has a record.
//!
//! The dispatcher never waits for one request's turn before reading the next line: it puts
//! the job in its host's queue and moves on, so a host limited to 1/s holds up only its own
//! requests (the gate decides who starts next). What bounds memory is the number of requests
//! alive (see [`alive_bound`]): waiting for their first turn (at most `--lookahead`, a bound
//! of its own: otherwise they would also fill the room meant for retries, 8,000 small tasks
//! at `-c 1000` instead of 4,000), in flight, or waiting to retry; when either bound is
//! reached, reading pauses until a job is admitted or finishes. A separate
//! per-host window would only make that bound smaller: input is read in order, so the first
//! line that cannot be held stops the reading whatever host it is for. When polling, a job
//! is looked up in the state as it is read and joins its host's queue once the answer is in
//! (still in input order), so the gate's admission is the last step before it is sent.
//!
//! Every request runs in its own spawned task (not in a `buffer_unordered` chain, whose futures stall while the
//! consumer is busy elsewhere, so their timeouts would fire for no reason). A task holds its
//! in-flight slot until its record is handed to the output channel, so a slow reader slows
//! the fetching instead of piling finished records up in memory. Between attempts a task gives
//! its slot back, sleeps the backoff, and passes the gate again (slots and rate quotas), so a
//! retry is paced like any other request and a sleeping retry never blocks a slot.
//!
//! Stopping (the binary's `cli/signals.rs` cancels `stop`): when `stop` fires, no new job starts (jobs already read but not
//! started get no record), a task waiting to retry ends with its last error, and requests in
//! flight run on until `hard` fires (`--grace` later), which cancels them with a `cancelled`
//! record. This module does not decide whether to retry (that is `retry`), nor how one attempt
//! goes (that is `fetch`).

mod filtered;
mod job;
mod reuse;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use self::job::{Job, Polled};
pub(crate) use self::reuse::Reuse;
use crate::input::Line;
use crate::limit::{Gate, HostKey, Slot};
use crate::record::Record;
use crate::redact::Redactor;
use crate::reorder::Order;
use crate::resume::Done;
use crate::save::SaveDir;
use crate::settings::Settings;
use crate::state::{Key, Pending, State};

/// Requests alive at once (in flight, or waiting to retry) per in-flight slot. Tasks that wait
/// to retry hold no slot, so without this bound a server answering 429 to everything would
/// let waiting tasks pile up without limit.
pub(crate) const ALIVE_PER_SLOT: usize = 4;

/// Requests alive at once: `--lookahead` waiting for their first turn, plus
/// [`ALIVE_PER_SLOT`] per in-flight slot for those in flight or waiting to retry.
pub(crate) fn alive_bound(settings: &Settings) -> usize {
    settings
        .lookahead
        .get()
        .saturating_add(settings.concurrency.get().saturating_mul(ALIVE_PER_SLOT))
}

/// What every request task shares.
pub(crate) struct Context {
    pub client: crate::fetch::Clients,
    pub settings: Settings,
    /// How URLs and messages are shown (`settings.mask_params`).
    pub redactor: Arc<Redactor>,
    /// `--save-dir`, with the names this run has used.
    pub save_dir: Option<SaveDir>,
    pub gate: Gate,
    pub start: Instant,
    /// Lines an earlier run already fetched (`--resume`).
    pub done: Option<Done>,
    /// The first stop signal: start nothing new.
    pub stop: CancellationToken,
    /// `--grace` after `stop`: cancel what is still in flight.
    pub hard: CancellationToken,
    /// Bounds the tasks alive at once (see [`ALIVE_PER_SLOT`]).
    pub alive: Arc<Semaphore>,
    /// Bounds the jobs waiting for their first turn to `--lookahead`: a job holds one of
    /// its permits from its reading to its admission.
    pub waiting: Arc<Semaphore>,
    /// The dispatcher has read the whole input (of the round it runs).
    pub input_done: AtomicBool,
    /// Cancels `hard` once every task has dropped its context, which ends the grace timer.
    pub _finished: DropGuard,
    /// Lines left without a record: already done (`--resume`) or another shard's.
    pub skipped: Skipped,
    /// When polling: the outcomes of earlier rounds and runs.
    pub state: Option<State>,
    /// Another round follows the one running: every host will be asked again, so no request
    /// is its host's last and connections are kept for the next round.
    pub more_rounds: AtomicBool,
    /// Which hosts keep an idle connection before it is known whether they have more lines.
    pub reuse: Reuse,
    /// The settings of the host profiles' requests, with their timeout and retries in
    /// place, and for each profile (same order as `settings.profiles`) the index of its own
    /// (see [`Settings::profiled`] and [`Context::settings_for`]).
    pub profiled: (Vec<Settings>, Vec<usize>),
}

impl Context {
    /// The settings a request to `url` is made with: those of the most specific host
    /// profile matching its host, else the run's.
    pub(crate) fn settings_for(&self, url: &url::Url) -> &Settings {
        url.host_str()
            .and_then(|h| crate::profile::most_specific(&self.settings.profiles, h))
            .and_then(|(i, _)| self.profiled.1.get(i))
            .and_then(|&j| self.profiled.0.get(j))
            .unwrap_or(&self.settings)
    }
}

/// The round a dispatcher runs. Every task of the round holds a clone of `guard`: when the
/// round's receiver of it reports closed, the round's last record has been handed over.
pub(crate) struct Round {
    pub index: u64,
    pub guard: mpsc::Sender<()>,
}

/// Lines a run leaves without a record, counted as the dispatcher passes them: those an
/// earlier run already fetched (`--resume`) and those of other shards (`--shard`). A cheap
/// handle: clones share the counts ([`crate::Run::skipped`]).
#[derive(Debug, Clone, Default)]
pub struct Skipped(Arc<SkipCounts>);

#[derive(Debug, Default)]
struct SkipCounts {
    resumed: AtomicU64,
    other_shards: AtomicU64,
}

impl Skipped {
    /// Lines skipped because an earlier run's output has them ok (`--resume`), so far.
    pub fn resumed(&self) -> u64 {
        self.0.resumed.load(Ordering::Relaxed)
    }

    /// Lines skipped because they belong to another shard (`--shard`), so far.
    pub fn other_shards(&self) -> u64 {
        self.0.other_shards.load(Ordering::Relaxed)
    }
}

/// Start jobs until the input ends, the run is stopped, or nobody reads the records any more.
///
/// With `order` (`--ordered`), every job that will get a record takes a place in the reorder
/// window before it may start (and before the gate, so waiting for the window never holds an
/// in-flight slot); see `reorder`. The order is handed back for the next round.
pub(crate) async fn dispatch(
    ctx: Arc<Context>,
    mut lines: mpsc::Receiver<Line>,
    records: mpsc::Sender<Record>,
    order: Option<Order>,
    round: Round,
) -> Option<Order> {
    let dispatcher = Dispatcher {
        ctx,
        records,
        order,
        round,
    };
    // When polling, a job waits for its state lookup between the reading and the gate (see
    // `Dispatcher::enqueue_answered`); both run here, side by side. Unbounded, yet bounded
    // by `alive`: every staged job holds one of its permits.
    let (staged_tx, staged_rx) = mpsc::unbounded_channel();
    let staged_tx = dispatcher.ctx.state.is_some().then_some(staged_tx);
    let read = dispatcher.read(&mut lines, staged_tx);
    let stage = dispatcher.enqueue_answered(staged_rx);
    // The stage first: answered jobs go to the gate before more lines are read (the reader
    // also pauses every few staged lines for it; see `STAGE_PAUSE`).
    tokio::join!(biased; stage, read);
    // Only now is every job read in the gate (see `Context::closes_after`).
    dispatcher.ctx.input_done.store(true, Ordering::Relaxed);
    let skipped = &dispatcher.ctx.skipped;
    if let Some(done) = &dispatcher.ctx.done {
        tracing::info!(
            "resume: skipped {} lines already ok in {} ({} ok records loaded)",
            skipped.resumed(),
            done.path().display(),
            done.len()
        );
    }
    if let Some(shard) = dispatcher.ctx.settings.shard {
        tracing::info!(
            "shard {shard}: skipped {} lines of other shards",
            skipped.other_shards()
        );
    }
    dispatcher.order
}

/// When polling, the reader lets the stage run after this many staged lines. The dispatcher
/// is one task, unconstrained by tokio's budget: without a pause, while lines keep coming it
/// reads them all (up to the lookahead) and asks their lookups before the first answered job
/// may reach the gate. (What delayed round starts most was the state thread's wake-up; see
/// `State::wake`.)
const STAGE_PAUSE: usize = 16;

/// A polling job whose state lookup is on its way: it enters the gate once it is answered.
struct Staged {
    job: Job,
    key: Key,
    pending: Pending,
    /// Its places among the requests alive and the jobs waiting, taken when it was read.
    held: Held,
}

/// A job's places among the requests alive (until its record is handed over) and among the
/// jobs waiting for their first turn (until the gate admits it).
struct Held {
    alive: OwnedSemaphorePermit,
    waiting: OwnedSemaphorePermit,
}

impl Dispatcher {
    /// Read lines and handle each until the input ends, the run is stopped, or nobody reads
    /// the records any more. Dropping `staged` (at the end) ends the stage after it.
    async fn read(
        &self,
        lines: &mut mpsc::Receiver<Line>,
        staged: Option<mpsc::UnboundedSender<Staged>>,
    ) {
        let mut staged_lines = 0usize;
        loop {
            let line = tokio::select! {
                biased;
                () = self.ctx.stop.cancelled() => break,
                line = lines.recv() => match line {
                    Some(line) => line,
                    None => break,
                },
            };
            match self.handle(line, staged.as_ref()).await {
                Step::Next => {
                    staged_lines += usize::from(staged.is_some());
                    if staged_lines % STAGE_PAUSE == STAGE_PAUSE - 1 {
                        tokio::task::yield_now().await;
                    }
                }
                Step::Skipped => {
                    self.ctx.skipped.0.resumed.fetch_add(1, Ordering::Relaxed);
                }
                Step::OtherShard => {
                    self.ctx
                        .skipped
                        .0
                        .other_shards
                        .fetch_add(1, Ordering::Relaxed);
                }
                Step::Stop => break,
            }
        }
    }

    /// The stage between reading and the gate, when polling: take the staged jobs in input
    /// order and queue each at its host once its lookup is answered (the state thread answers
    /// in the order asked, so the head is answered first). Admission is then the last step
    /// before a request is sent: a job admitted before its answer came would have its start
    /// (and its cell of every rate quota) counted early and reach the server late, bunched
    /// with the ones admitted after it. Lookups stay pipelined: the reader asks as it reads.
    async fn enqueue_answered(&self, mut staged: mpsc::UnboundedReceiver<Staged>) {
        while let Some(Staged {
            mut job,
            key,
            pending,
            held,
        }) = staged.recv().await
        {
            // Not started when the run stops: no record, like a line not read yet (a job
            // whose answer is in already finds out in its task, before the gate admits it).
            let entry = match pending.answered() {
                Ok(entry) => entry,
                Err(pending) => tokio::select! {
                    biased;
                    () = self.ctx.stop.cancelled() => return,
                    () = self.records.closed() => return,
                    entry = pending.entry() => entry,
                },
            };
            job.polled = Some(Polled {
                round: self.round.index,
                key,
                entry,
            });
            self.start(job, held);
        }
    }
}

impl Context {
    /// Whether a request to `host` just admitted with `slot` closes its connection after it
    /// (see `reuse`): when it is the host's last as far as anyone can know (nothing of its
    /// host waits in the gate, the dispatcher has read the whole input or as far ahead as the
    /// lookahead lets it, and no round follows), or when it may be the last and enough other
    /// hosts already keep an idle connection on the same chance.
    pub(crate) fn closes_after(&self, slot: &Slot, host: &HostKey) -> bool {
        if self.more_rounds.load(Ordering::Relaxed) || !slot.alone() {
            return false;
        }
        let known_last = self.input_done.load(Ordering::Relaxed)
            || self.waiting.available_permits() == 0
            || self.alive.available_permits() == 0;
        known_last || !self.reuse.keep(host, Instant::now())
    }
}

/// What the dispatcher does with each line.
struct Dispatcher {
    ctx: Arc<Context>,
    records: mpsc::Sender<Record>,
    order: Option<Order>,
    round: Round,
}

/// How handling one line ended.
enum Step {
    /// On to the next line.
    Next,
    /// The line already has an ok record (`--resume`): no record, no place in the order.
    Skipped,
    /// The line belongs to another shard (`--shard`): no record, no place in the order.
    OtherShard,
    /// The run is stopping, or nobody reads the records any more.
    Stop,
}

impl Dispatcher {
    /// Give `line` its place in the output order, then its record (a bad line) or its job:
    /// queued at its host, or when polling staged until its state lookup is answered.
    async fn handle(&self, line: Line, staged: Option<&mpsc::UnboundedSender<Staged>>) -> Step {
        let request = line.request.map(|r| self.ctx.settings.request.apply(r));
        // Keyed by the host the per-host limits use, so one host's lines share one shard.
        let host = request.as_ref().ok().map(|r| HostKey::of(&r.url));
        if let Some(shard) = &self.ctx.settings.shard
            && !shard.owns(host.as_ref().map(|h| h.as_str()))
        {
            return Step::OtherShard;
        }
        if let Ok(request) = &request
            && let Some(done) = &self.ctx.done
            && done.contains(line.seq, &request.url)
        {
            return Step::Skipped;
        }
        // Every line that gets a record (a request or a bad line) has a place in the output
        // order; with --ordered it takes it before anything else happens.
        let place = match &self.order {
            Some(order) => {
                let place = tokio::select! {
                    biased;
                    () = self.ctx.stop.cancelled() => None,
                    () = self.records.closed() => None,
                    place = order.reserve() => place,
                };
                let Some(place) = place else {
                    return Step::Stop;
                };
                Some(place)
            }
            None => None,
        };
        let request = match request {
            Ok(request) => request,
            Err(bad) => {
                if let Some(place) = place {
                    place.send(line.seq);
                }
                let key = self.ctx.state.as_ref().map(|_| Key::of_invalid(&bad.text));
                let mut record = bad.into_record(line.seq, line.line);
                record.shard = self.ctx.settings.shard.map(|s| s.index());
                if let (Some(state), Some(key)) = (&self.ctx.state, key) {
                    let entry = state.lookup(key).await.entry().await;
                    let polled = Polled {
                        round: self.round.index,
                        key,
                        entry,
                    };
                    polled
                        .mark(state, &mut record, None, std::time::SystemTime::now())
                        .await;
                }
                return match self.records.send(record).await {
                    Ok(()) => Step::Next,
                    Err(_) => Step::Stop,
                };
            }
        };
        let Some(held) = self.hold().await else {
            return Step::Stop;
        };
        let host = host.unwrap_or_else(|| HostKey::of(&request.url));
        let mut job = Job {
            seq: line.seq,
            line: line.line,
            request,
            host,
            polled: None,
        };
        // Its place in the output order is its place in the input. A job that never starts
        // (the run stopped first) leaves a gap the reorder stage skips when the run ends.
        if let Some(place) = place {
            place.send(job.seq);
        }
        match (&self.ctx.state, staged) {
            (Some(state), Some(staged)) => {
                // Asked now, in input order; the job enters the gate once it is answered.
                let key = Key::of(&job.request);
                match state.lookup(key).await.now() {
                    // A new state file's first round: every answer comes at once, so no job
                    // of the round waits in the stage, and this one passes none.
                    Ok(entry) => {
                        job.polled = Some(Polled {
                            round: self.round.index,
                            key,
                            entry: Some(entry),
                        });
                        self.start(job, held);
                    }
                    Err(pending) => {
                        let staged_job = Staged {
                            job,
                            key,
                            pending,
                            held,
                        };
                        // Gone only when the stage has ended: the run is stopping.
                        if staged.send(staged_job).is_err() {
                            return Step::Stop;
                        }
                    }
                }
            }
            _ => self.start(job, held),
        }
        Step::Next
    }

    /// Wait for a place among the requests alive and one among the jobs waiting for their
    /// first turn (reading pauses meanwhile); `None` when the run stops first.
    async fn hold(&self) -> Option<Held> {
        let acquire = async {
            let alive = Arc::clone(&self.ctx.alive).acquire_owned().await.ok()?;
            let waiting = Arc::clone(&self.ctx.waiting).acquire_owned().await.ok()?;
            Some(Held { alive, waiting })
        };
        tokio::select! {
            biased;
            () = self.ctx.stop.cancelled() => None,
            () = self.records.closed() => None,
            held = acquire => held,
        }
    }

    /// Queue `job` at its host now, in input order (tasks start in no particular order), and
    /// spawn the task that runs it once the gate admits it.
    fn start(&self, job: Job, held: Held) {
        let Held { alive, waiting } = held;
        let ticket = self.ctx.gate.enqueue(&job.host);
        let ctx = Arc::clone(&self.ctx);
        let records = self.records.clone();
        let guard = self.round.guard.clone();
        tokio::spawn(async move {
            // Not started when the run stops: no record, like a line not read yet.
            let slot = tokio::select! {
                biased;
                () = ctx.stop.cancelled() => return,
                () = records.closed() => return,
                slot = ticket.admitted() => slot,
            };
            drop(waiting);
            // Boxed: a job's (large) running state is allocated once it starts, so a job
            // waiting in the lookahead costs a small task, not a whole request's worth.
            Box::pin(job.run(&ctx, slot, &records)).await;
            drop(alive);
            drop(guard);
        });
    }
}
