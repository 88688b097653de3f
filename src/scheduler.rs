//! Scheduler: reads jobs in input order, queues each one at its host in the [`Gate`], and runs
//! it when the gate admits it.
//!
//! The dispatcher never waits for one request's turn before reading the next line: it puts
//! the job in its host's queue and moves on, so a host limited to 1/s holds up only its own
//! requests. What bounds memory is the lookahead (`--lookahead`, default
//! [`crate::config::DEFAULT_LOOKAHEAD`]): at most that many jobs are held waiting for
//! admission, over all hosts together; when it is full, reading pauses until one starts. A
//! separate per-host window would only make that bound smaller: input is read in order, so
//! the first line that cannot be held stops the reading whatever host it is for.
//!
//! Every job runs in its own spawned task (not in a `buffer_unordered` chain, whose futures
//! stall while the consumer is busy elsewhere, so their timeouts would fire for no reason).
//! A task holds its in-flight slot until its record is handed to the output channel, so a slow
//! reader slows the fetching instead of piling finished records up in memory. After the
//! response, the task tells the gate how it went (`Retry-After` pauses, `--adaptive`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};

use crate::config::Settings;
use crate::fetch;
use crate::host::HostKey;
use crate::input::Job;
use crate::limit::Gate;
use crate::record::Record;

/// What every request task shares.
pub(crate) struct Context {
    pub client: reqwest::Client,
    pub settings: Settings,
    pub gate: Gate,
    pub start: Instant,
}

/// Start jobs until the input ends or nobody reads the records any more.
pub(crate) async fn dispatch(
    ctx: Arc<Context>,
    mut jobs: mpsc::Receiver<Job>,
    records: mpsc::Sender<Record>,
) {
    let held = Arc::new(Semaphore::new(ctx.settings.lookahead.get()));
    while let Some(job) = jobs.recv().await {
        let request = match job.request {
            Ok(r) => r,
            Err(bad) => {
                let record = Record::input_error(job.seq, job.line, bad.text, bad.reason);
                if records.send(record).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let permit = tokio::select! {
            permit = Arc::clone(&held).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = records.closed() => return,
        };
        let host = HostKey::of(&request.url);
        // Queued here, in input order, not in the task (tasks start in no particular order).
        let ticket = ctx.gate.enqueue(&host);
        let ctx = Arc::clone(&ctx);
        let records = records.clone();
        tokio::spawn(async move {
            let slot = tokio::select! {
                slot = ticket.admitted() => slot,
                () = records.closed() => return,
            };
            drop(permit);
            let (mut record, retry_after) = fetch::fetch_with_retry_after(
                &ctx.client,
                &ctx.settings,
                ctx.start,
                job.seq,
                job.line,
                &request,
            )
            .await;
            // The request started, for every limit, when the gate took its cells.
            record.started_ms = Some(fetch::millis(
                slot.granted_at().saturating_duration_since(ctx.start),
            ));
            record.host_rate = ctx
                .gate
                .feedback(&slot, record.status, retry_after.as_deref())
                .map(|r| (r * 1000.0).round() / 1000.0);
            // A send error means the reader is gone; the record has nowhere to go.
            let _ = records.send(record).await;
            drop(slot);
        });
    }
}
