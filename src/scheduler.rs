//! Scheduler: reads jobs in input order, queues each one at its host in the [`Gate`], and runs
//! its attempts, once admitted, until it has a record.
//!
//! The dispatcher never waits for one request's turn before reading the next line: it puts
//! the job in its host's queue and moves on, so a host limited to 1/s holds up only its own
//! requests (the gate decides who starts next). What bounds memory is the number of requests
//! alive (see [`alive_bound`]): waiting for their turn (at most `--lookahead`), in flight, or
//! waiting to retry; when it is reached, reading pauses until one finishes. A separate
//! per-host window would only make that bound smaller: input is read in order, so the first
//! line that cannot be held stops the reading whatever host it is for.
//!
//! Every request runs in its own spawned task (not in a `buffer_unordered` chain, whose futures stall while the
//! consumer is busy elsewhere, so their timeouts would fire for no reason). A task holds its
//! in-flight slot until its record is handed to the output channel, so a slow reader slows
//! the fetching instead of piling finished records up in memory. Between attempts a task gives
//! its slot back, sleeps the backoff, and passes the gate again (slots and rate quotas), so a
//! retry is paced like any other request and a sleeping retry never blocks a slot.
//!
//! Stopping (see `shutdown`): when `stop` fires, no new job starts (jobs already read but not
//! started get no record), a task waiting to retry ends with its last error, and requests in
//! flight run on until `hard` fires (`--grace` later), which cancels them with a `cancelled`
//! record. This module does not decide whether to retry (that is `retry`), nor how one attempt
//! goes (that is `fetch`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::Settings;
use crate::fetch::{self, Outcome};
use crate::host::HostKey;
use crate::input::{Job, Request};
use crate::limit::{Gate, Slot};
use crate::record::{ErrorKind, MAX_PREVIOUS, PreviousError, Record, RecordError};
use crate::reorder::Order;
use crate::request::Template;
use crate::resume::Done;
use crate::retry::{Decision, Failure};
use crate::save;
use crate::units::HumanDuration;

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
    pub client: reqwest::Client,
    pub settings: Settings,
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
    /// Cancels `hard` once every task has dropped its context, which ends the grace timer.
    pub _finished: DropGuard,
    /// The flags' request defaults, completed into every request before it is sent.
    pub template: Template,
}

/// Wait until a retry of `request` may start: at the front of its host's queue, past every
/// cap, quota and pause like any other request. (First attempts are queued by `dispatch`.)
async fn admit_retry(ctx: &Context, request: &Request) -> Slot {
    ctx.gate.admit_retry(&HostKey::of(&request.url)).await
}

/// Start jobs until the input ends, the run is stopped, or nobody reads the records any more.
///
/// With `order` (`--ordered`), every job that will get a record takes a place in the reorder
/// window before it may start (and before the gate, so waiting for the window never holds an
/// in-flight slot); see `reorder`.
pub(crate) async fn dispatch(
    ctx: Arc<Context>,
    mut jobs: mpsc::Receiver<Job>,
    records: mpsc::Sender<Record>,
    order: Option<Order>,
) {
    let mut skipped = 0u64;
    loop {
        let job = tokio::select! {
            biased;
            () = ctx.stop.cancelled() => break,
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        let request = job.request.map(|r| ctx.template.apply(r));
        if let Ok(request) = &request
            && let Some(done) = &ctx.done
            && done.contains(job.seq, &request.url)
        {
            skipped += 1;
            continue;
        }
        // Every line that gets a record (a request or a bad line) has a place in the output
        // order; with --ordered it takes it before anything else happens.
        let place = match &order {
            Some(order) => {
                let place = tokio::select! {
                    biased;
                    () = ctx.stop.cancelled() => break,
                    () = records.closed() => break,
                    place = order.reserve() => place,
                };
                let Some(place) = place else { break };
                Some(place)
            }
            None => None,
        };
        let request = match request {
            Ok(request) => request,
            Err(bad) => {
                if let Some(place) = place {
                    place.send(job.seq);
                }
                let record = Record::invalid_line(job.seq, job.line, bad);
                if records.send(record).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let alive = tokio::select! {
            biased;
            () = ctx.stop.cancelled() => break,
            () = records.closed() => break,
            permit = Arc::clone(&ctx.alive).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let host = HostKey::of(&request.url);
        // Queued here, in input order, not in the task (tasks start in no particular order).
        let ticket = ctx.gate.enqueue(&host);
        // Its place in the output order is its place in the input. A job that never starts
        // (the run stopped first) leaves a gap the reorder stage skips when the run ends.
        if let Some(place) = place {
            place.send(job.seq);
        }
        let ctx = Arc::clone(&ctx);
        let records = records.clone();
        tokio::spawn(async move {
            // Not started when the run stops: no record, like a line not read yet.
            let slot = tokio::select! {
                biased;
                () = ctx.stop.cancelled() => return,
                () = records.closed() => return,
                slot = ticket.admitted() => slot,
            };
            // Boxed: a job's (large) running state is allocated once it starts, so a job
            // waiting in the lookahead costs a small task, not a whole request's worth.
            Box::pin(run_job(
                ctx, job.seq, job.line, request, host, slot, records,
            ))
            .await;
            drop::<OwnedSemaphorePermit>(alive);
        });
    }
    if let Some(done) = &ctx.done {
        tracing::info!(
            "resume: skipped {skipped} lines already ok in {} ({} ok records loaded)",
            done.path().display(),
            done.len()
        );
    }
}

/// Run an admitted job to its record and hand that to the output.
async fn run_job(
    ctx: Arc<Context>,
    seq: u64,
    line: u64,
    request: Request,
    host: HostKey,
    slot: Slot,
    records: mpsc::Sender<Record>,
) {
    let (mut record, slot) = run_request(&ctx, seq, line, &request, slot).await;
    record.host_rate = ctx.gate.host_rate(&host);
    // A send error means the reader is gone; the record has nowhere to go. The slot is held
    // until the record is handed over, so a slow reader slows the fetching.
    let _ = records.send(record).await;
    drop(slot);
}

/// Attempt `request` until it succeeds, fails for good, runs out of retries, or the run stops.
/// Returns the record and the slot still held (if any), to be released once the record is sent.
async fn run_request(
    ctx: &Context,
    seq: u64,
    line: u64,
    request: &Request,
    slot: Slot,
) -> (Record, Option<Slot>) {
    // The request started, for every limit, when the gate took its cells.
    let first_start = slot.granted_at();
    let method = fetch::method(request);
    let mut slot = Some(slot);
    let mut previous: Vec<PreviousError> = Vec::new();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let outcome = tokio::select! {
            biased;
            () = ctx.hard.cancelled() => {
                let error = RecordError::new(
                    ErrorKind::Cancelled,
                    format!(
                        "cancelled: still in flight --grace {} after the stop signal",
                        HumanDuration(ctx.settings.grace)
                    ),
                );
                let outcome = Outcome::failed(error);
                let record = finish(ctx, seq, line, request, first_start, outcome, attempts, previous).await;
                return (record, slot);
            }
            outcome = fetch::attempt(&ctx.client, &ctx.settings, request) => outcome,
        };
        if let Some(slot) = &slot {
            // Retry-After pauses the host; --adaptive adjusts its rate.
            ctx.gate
                .feedback(slot, outcome.status, outcome.retry_after.as_deref());
        }
        let Some(error) = &outcome.error else {
            let record = finish(
                ctx,
                seq,
                line,
                request,
                first_start,
                outcome,
                attempts,
                previous,
            )
            .await;
            return (record, slot);
        };
        let failure = Failure {
            kind: error.kind,
            status: outcome.status,
            retry_after: outcome.retry_after.as_deref(),
        };
        let wait = match ctx.settings.retry.decide(&method, &failure, attempts) {
            Decision::Retry(wait) => wait,
            Decision::GiveUp { retryable } => {
                let mut outcome = outcome;
                if let Some(e) = &mut outcome.error {
                    e.retryable = retryable;
                }
                let record = finish(
                    ctx,
                    seq,
                    line,
                    request,
                    first_start,
                    outcome,
                    attempts,
                    previous,
                )
                .await;
                return (record, slot);
            }
            Decision::WaitTooLong { asked } => {
                let mut outcome = outcome;
                if let Some(e) = &mut outcome.error {
                    e.retryable = true;
                    e.message = format!(
                        "{}; the server asked to wait {} (Retry-After), over --max-retry-wait {}",
                        e.message,
                        HumanDuration(asked),
                        HumanDuration(ctx.settings.retry.max_wait)
                    );
                }
                let record = finish(
                    ctx,
                    seq,
                    line,
                    request,
                    first_start,
                    outcome,
                    attempts,
                    previous,
                )
                .await;
                return (record, slot);
            }
        };
        tracing::debug!(
            "{} attempt {attempts} failed ({}); retrying in {}",
            fetch::display_url(&request.url),
            error.kind.as_str(),
            HumanDuration(wait)
        );
        // No slot is held while waiting: others may use it meanwhile.
        drop(slot.take());
        let resumed = tokio::select! {
            biased;
            () = ctx.stop.cancelled() => None,
            slot = async {
                tokio::time::sleep(wait).await;
                admit_retry(ctx, request).await
            } => Some(slot),
        };
        let Some(next_slot) = resumed else {
            // Stopping: report what the last attempt got rather than starting another.
            let mut outcome = outcome;
            if let Some(e) = &mut outcome.error {
                e.retryable = true;
                e.message = format!("{} (not retried: the run is stopping)", e.message);
            }
            let record = finish(
                ctx,
                seq,
                line,
                request,
                first_start,
                outcome,
                attempts,
                previous,
            )
            .await;
            return (record, None);
        };
        slot = Some(next_slot);
        if let Some(e) = outcome.error {
            if previous.len() == MAX_PREVIOUS {
                previous.remove(0);
            }
            previous.push(PreviousError {
                kind: e.kind,
                message: e.message,
                status: outcome.status,
            });
        }
    }
}

/// The record for the last attempt, with the earlier attempts' errors attached (and, with
/// `--save-dir`, its body written to a file).
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &Context,
    seq: u64,
    line: u64,
    request: &Request,
    first_start: Instant,
    mut outcome: Outcome,
    attempts: u32,
    previous: Vec<PreviousError>,
) -> Record {
    if let Some(e) = &mut outcome.error {
        e.previous = previous;
    }
    let mut saved = None;
    if let (Some(dir), Some(body)) = (&ctx.settings.save_dir, &outcome.body) {
        match save::write(dir, seq, request.id.as_ref(), body).await {
            Ok(s) => saved = Some(s),
            // A body we could not keep fails the record even when the response was fine:
            // the user asked for the file.
            Err(message) => {
                outcome
                    .error
                    .get_or_insert(RecordError::new(ErrorKind::Save, message));
            }
        }
    }
    fetch::record(
        &ctx.settings,
        ctx.start,
        first_start,
        seq,
        line,
        request,
        outcome,
        attempts,
        saved,
    )
}
