//! Scheduler: takes jobs in input order and starts each one when the [`Gate`] admits it.
//!
//! One dispatcher task owns the decision of what starts next; every admitted request runs in
//! its own spawned task (not in a `buffer_unordered` chain, whose futures stall while the
//! consumer is busy elsewhere, so their timeouts would fire for no reason). A task holds its
//! in-flight slot until its record is handed to the output channel, so a slow reader slows
//! the fetching instead of piling finished records up in memory.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::fetch;
use crate::input::Job;
use crate::limit::Gate;
use crate::record::Record;
use crate::reorder::Window;
use crate::request::Template;

/// What every request task shares.
pub(crate) struct Context {
    pub client: reqwest::Client,
    pub settings: Settings,
    pub gate: Gate,
    pub start: Instant,
    /// The flags' request defaults, completed into every request before it is sent.
    pub template: Template,
    /// With `--ordered`: the reorder buffer's admission window.
    pub window: Option<Window>,
}

/// Start jobs until the input ends or nobody reads the records any more.
pub(crate) async fn dispatch(
    ctx: Arc<Context>,
    mut jobs: mpsc::Receiver<Job>,
    records: mpsc::Sender<Record>,
) {
    while let Some(job) = jobs.recv().await {
        if let Some(window) = &ctx.window {
            // Before the gate: waiting for the reorder buffer must not hold an in-flight slot.
            tokio::select! {
                () = window.enter() => {}
                () = records.closed() => return,
            }
        }
        let request = match job.request {
            Ok(r) => ctx.template.apply(r),
            Err(bad) => {
                let record = Record::invalid_line(job.seq, job.line, bad);
                if records.send(record).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let slot = tokio::select! {
            slot = ctx.gate.admit() => slot,
            () = records.closed() => return,
        };
        let ctx = Arc::clone(&ctx);
        let records = records.clone();
        tokio::spawn(async move {
            let record = fetch::fetch(
                &ctx.client,
                &ctx.settings,
                ctx.start,
                job.seq,
                job.line,
                &request,
            )
            .await;
            // A send error means the reader is gone; the record has nowhere to go.
            let _ = records.send(record).await;
            drop(slot);
        });
    }
}
