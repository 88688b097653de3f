//! Reordering (`--ordered`): records leave in input order, through a buffer with a hard bound.
//!
//! The dispatcher puts the seq of every job that will get a record into a bounded queue (the
//! [`Order`]) *before* the job may start; the reorder stage takes the next seq from that queue
//! only when it emits that seq's record. So at most `size` jobs are between "started" and
//! "emitted", in input order from the oldest not yet emitted: the buffer can never hold more
//! than `size` records. When one slow request holds the oldest place, the others finish and
//! wait in the buffer; once it is full, no new request starts until the slow one ends (by its
//! response or its `--timeout`). Ordered output trades throughput for order, never memory.
//!
//! A paginated line emits one record per page, all with its seq: its place in the order lasts
//! until the record of its last page (the one not marked `more_pages`) is out, so records
//! leave ordered by (seq, page). Pages of lines behind a slow one wait in the buffer too, so
//! with pagination the buffer holds at most `size` lines' worth of pages (`size` x
//! `--max-pages` records), still a fixed bound.
//!
//! The queue, not a dense count of seqs, says what comes next, so lines skipped by `--resume`
//! (never queued) cannot stall it. A job queued but never started because the run was
//! stopped leaves its seq in the queue without a record: the records after it wait until
//! the run ends, and are then emitted in order. This module does not fetch or write.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use tokio::sync::mpsc;

use crate::record::Record;

/// How many records the reorder buffer may hold, for a run of `concurrency` requests in
/// flight: twice that, so the pool stays busy past one slow request.
pub(crate) fn window_size(concurrency: NonZeroUsize) -> usize {
    concurrency.get().saturating_mul(2)
}

/// The dispatcher's side: places in the output order.
pub(crate) struct Order(mpsc::Sender<u64>);

/// A reserved place in the output order: send the job's seq into it.
pub(crate) type Place<'a> = mpsc::Permit<'a, u64>;

impl Order {
    /// Wait for a place in the window; `None` when the reorder stage is gone (nobody reads).
    pub(crate) async fn reserve(&self) -> Option<Place<'_>> {
        self.0.reserve().await.ok()
    }
}

/// A window of `size` places (at least 2): the dispatcher's [`Order`] and the queue
/// [`reorder`] reads. One place is the seq the stage waits for, the rest sit in the queue.
pub(crate) fn window(size: usize) -> (Order, mpsc::Receiver<u64>) {
    let (tx, rx) = mpsc::channel(size.max(2) - 1);
    (Order(tx), rx)
}

/// Pass records from `input` to `output` in the order the dispatcher gave in `order`.
pub(crate) async fn reorder(
    mut input: mpsc::Receiver<Record>,
    mut order: mpsc::Receiver<u64>,
    output: mpsc::Sender<Record>,
) {
    // Keyed by (seq, page): the pages of one line arrive in page order (one task fetches
    // them one after another), each but the last saying that more follow.
    let mut waiting: BTreeMap<(u64, u32), Record> = BTreeMap::new();
    // The (seq, page) to emit next, once its seq is taken from the queue.
    let mut next: Option<(u64, u32)> = None;
    while let Some(record) = input.recv().await {
        waiting.insert((record.seq, record.page.unwrap_or(0)), record);
        loop {
            // A record's seq is queued before its job starts, so for every record received
            // the queue already holds its seq (or `next` is it): try_recv never misses one.
            if next.is_none() {
                next = order.try_recv().ok().map(|seq| (seq, 0));
            }
            let Some(key) = next else { break };
            let Some(record) = waiting.remove(&key) else {
                break;
            };
            let more = record.more_pages;
            if output.send(record).await.is_err() {
                return;
            }
            // The line keeps its place until its last page is out.
            next = more.then(|| (key.0, key.1 + 1));
        }
    }
    // Only reachable with records missing (a task that died): emit the rest, still in order.
    for (_, record) in waiting {
        if output.send(record).await.is_err() {
            return;
        }
    }
}
