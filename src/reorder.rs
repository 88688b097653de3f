//! Reordering (`--ordered`): records leave in input order, through a buffer with a hard bound.
//!
//! The bound is a window of seqs: the dispatcher takes one [`Window`] permit per job *before*
//! the job may start, and the reorder stage gives a permit back each time it emits a record.
//! So at most `size` jobs are between "started" and "emitted", and they are consecutive seqs
//! from the oldest one not yet emitted: the buffer can never hold more than `size` records.
//! When one slow request holds the oldest seq, the others finish and wait in the buffer; once
//! it is full, no new request starts until the slow one ends (by its response or its
//! `--timeout`). Ordered output trades throughput for order, never memory. This module does
//! not fetch or write.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use crate::record::Record;

/// How many records the reorder buffer may hold, for a run of `concurrency` requests in
/// flight: twice that, so the pool stays busy past one slow request.
pub fn window_size(concurrency: NonZeroUsize) -> usize {
    concurrency.get().saturating_mul(2)
}

/// The admission side of the reorder buffer, shared by the dispatcher and the reorder stage.
#[derive(Clone)]
pub struct Window(Arc<Semaphore>);

impl Window {
    pub fn new(size: usize) -> Window {
        Window(Arc::new(Semaphore::new(size.max(1))))
    }

    /// Wait until the job with the next seq may enter the window.
    pub async fn enter(&self) {
        if let Ok(permit) = self.0.acquire().await {
            // Given back by `reorder` when this seq is emitted, not when the permit drops.
            permit.forget();
        }
    }
}

/// Pass records from `input` to `output` in seq order (seqs start at 0, each arrives once).
pub async fn reorder(
    mut input: mpsc::Receiver<Record>,
    output: mpsc::Sender<Record>,
    window: Window,
) {
    let mut waiting: BTreeMap<u64, Record> = BTreeMap::new();
    let mut next = 0u64;
    while let Some(record) = input.recv().await {
        waiting.insert(record.seq, record);
        while let Some(record) = waiting.remove(&next) {
            if output.send(record).await.is_err() {
                return;
            }
            next += 1;
            window.0.add_permits(1);
        }
    }
    // Only reachable with records missing (a task that died): emit the rest, still in order.
    for (_, record) in waiting {
        if output.send(record).await.is_err() {
            return;
        }
    }
}
