//! One job's life, from admission to its record: attempts, retries, and the record itself.
//!
//! A [`Job`] owns what its record needs (seq, line, the request, its host) and an
//! [`Attempts`] tally (first start, attempts made, earlier errors). Its attempt loop has one
//! exit: whatever ends it (success, a failure not worth retrying, retries spent, a
//! `Retry-After` past `--max-retry-wait`, a stop, or the grace running out) yields the last
//! outcome, and [`Job::finish`] turns that into the record.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::{HeaderValue, IF_MODIFIED_SINCE, IF_NONE_MATCH};
use tokio::sync::mpsc;
use url::Url;

use super::Context;
use super::filtered::{self, Filtered};
use crate::fetch::{self, Outcome};
use crate::limit::{HostKey, Slot};
use crate::record::{
    BodyEncoding, BodyMode, ErrorKind, MAX_PREVIOUS, PreviousError, Record, RecordError,
    encode_body,
};
use crate::request::Request;
use crate::retry::{Decision, Failure};
use crate::state::{Entry, Key, State, Stored, body_hash};
use crate::units::HumanDuration;

/// A request that will get a record: what the record says about the line.
pub(super) struct Job {
    pub(super) seq: u64,
    pub(super) line: u64,
    pub(super) request: Request,
    pub(super) host: HostKey,
    /// When polling: the round, and what the state holds for this request.
    pub(super) polled: Option<Polled>,
}

/// A polling job's round and what the state holds for it.
pub(super) struct Polled {
    pub(super) round: u64,
    pub(super) key: Key,
    /// Its place in the state; `None` when the state thread has stopped.
    pub(super) entry: Option<Entry>,
}

impl Polled {
    /// Give `record` its polling fields (round, at, changed, not_modified) and remember its
    /// outcome in the state. `fresh`: the outcome as the state keeps it (validators and body
    /// hash included); `None` for a line that never became a request. A `cancelled` record
    /// says nothing about the resource: it is not stored, and not a change.
    pub(super) async fn mark(
        self,
        state: &State,
        record: &mut Record,
        fresh: Option<Stored>,
        started: SystemTime,
    ) {
        let at = humantime::format_rfc3339_millis(started).to_string();
        let not_modified = record.ok && record.status == Some(304);
        let mut fresh = fresh.unwrap_or_else(|| Stored {
            status: record.status,
            ok: record.ok,
            error_kind: record.error.as_ref().map(|e| e.kind.as_str().to_owned()),
            ..Stored::default()
        });
        let before = self.entry.as_ref().and_then(|e| e.stored.as_ref());
        let changed = match before {
            None => true,
            Some(_) if not_modified => false,
            Some(before) => fresh.differs_from(before),
        };
        if not_modified && let Some(before) = before {
            // Not modified: the stored outcome stands; new validators, if sent, replace it.
            fresh = Stored {
                etag: fresh.etag.or_else(|| before.etag.clone()),
                last_modified: fresh.last_modified.or_else(|| before.last_modified.clone()),
                ..before.clone()
            };
        }
        // The state keeps the outcome exactly as it was (validators included).
        let same = before == Some(&fresh);
        let cancelled = record
            .error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::Cancelled);
        record.round = Some(self.round);
        record.changed = Some(changed && !cancelled);
        record.not_modified = Some(not_modified);
        if !cancelled && let Some(Entry { row, stored }) = self.entry {
            match stored {
                None => state.insert(self.key, row, fresh, at.clone()).await,
                // The stored outcome stands as it is (validators included): only the time it
                // was fetched moves, which is a much cheaper write.
                Some(_) if same => state.touch(row, at.clone()).await,
                Some(_) => state.update(row, fresh, changed, at.clone()).await,
            }
        }
        record.at = Some(at);
    }
}

/// What the attempts so far add up to.
struct Attempts {
    /// When the gate first admitted the request: its start for every limit and the record.
    first_start: Instant,
    count: u32,
    /// The errors of earlier attempts, oldest first, at most [`MAX_PREVIOUS`].
    previous: Vec<PreviousError>,
}

impl Job {
    /// Run the admitted job to its record (one per page, with pagination) and hand each to
    /// the output. The slot is held until the record is handed over, so a slow reader slows
    /// the fetching.
    ///
    /// Pages of the line go one after another: after a page's record, the next page queues
    /// again at the front of its host's queue (as a retry does), past every cap, quota and
    /// pause. The line ends at its last page, at a page that failed, at `--max-pages`, or at a
    /// page loop (a URL the line fetched already), which gets a record of its own.
    pub(super) async fn run(mut self, ctx: &Context, slot: Slot, records: &mpsc::Sender<Record>) {
        let conditional = self.add_validators(ctx);
        let paging = ctx.settings.paging_for(&self.request);
        let paged = paging.active();
        // Only a paginated line keeps its URLs (an unpaginated one allocates nothing here).
        let original = paged.then(|| self.request.url.clone());
        let mut seen: HashSet<Url> = original.iter().cloned().collect();
        let mut slot = slot;
        let mut page = 0u32;
        loop {
            let mut tally = Attempts {
                first_start: slot.granted_at(),
                count: 0,
                previous: Vec::new(),
            };
            let (outcome, held) = self.attempt_until_done(ctx, slot, &mut tally).await;
            let next = match (&original, &outcome.error) {
                (Some(original), None) => paging.next_url(
                    original,
                    &self.request.url,
                    outcome.link.as_deref(),
                    outcome.body.as_deref(),
                ),
                _ => Ok(None),
            };
            let mut record = self.finish(ctx, outcome, tally).await;
            let next = match next {
                Ok(next) => next,
                Err(why) => {
                    if record.error.is_none() {
                        record.ok = false;
                        record.error = Some(RecordError::new(ErrorKind::Filter, why));
                    }
                    None
                }
            };
            let next = next.filter(|_| {
                let more = page + 1 < paging.max_pages.get();
                if !more {
                    tracing::info!(
                        "line {}: stopped at --max-pages {} with a next page left",
                        self.line,
                        paging.max_pages
                    );
                }
                more
            });
            if paged {
                record.page = Some(page);
            }
            record.more_pages = next.is_some();
            // A send error means the reader is gone; the record has nowhere to go.
            let gone = records.send(record).await.is_err();
            drop(held);
            let Some(next) = next else { return };
            if gone {
                return;
            }
            page += 1;
            if !seen.insert(next.clone()) {
                let _ = records.send(self.page_loop(ctx, &next, page)).await;
                return;
            }
            if conditional {
                // The stored validators are the line's first URL's, not the next page's.
                self.request.headers.remove(IF_NONE_MATCH);
                self.request.headers.remove(IF_MODIFIED_SINCE);
            }
            // A page on another origin gets no credential header of the line's (as a
            // redirect there would not): the next URL is the server's word.
            if original
                .as_ref()
                .is_some_and(|o| !fetch::same_origin(o, &next))
            {
                fetch::leave_origin(
                    &mut self.request.headers,
                    &mut self.request.own,
                    &ctx.settings,
                );
            }
            self.host = HostKey::of(&next);
            self.request.url = next;
            slot = tokio::select! {
                biased;
                () = ctx.stop.cancelled() => return,
                slot = ctx.gate.admit_retry(&self.host) => slot,
            };
        }
    }

    /// The record of a page whose URL the line fetched already (nothing is fetched).
    fn page_loop(&self, ctx: &Context, url: &Url, page: u32) -> Record {
        let mut record = Record::input_error(
            self.seq,
            self.line,
            ctx.redactor.url(url),
            ErrorKind::PageLoop,
            format!("page {page} would fetch a URL this line fetched already (a page loop)"),
        );
        record.id = self.request.id.clone();
        record.page = Some(page);
        record.shard = ctx.settings.shard.map(|s| s.index());
        record
    }

    /// With state, a GET or HEAD asks only for a changed response: `If-None-Match` and
    /// `If-Modified-Since` from the stored validators, unless the user set either header or
    /// `--no-conditional`. Returns whether it added any.
    fn add_validators(&mut self, ctx: &Context) -> bool {
        let Some(Polled {
            entry:
                Some(Entry {
                    stored: Some(stored),
                    ..
                }),
            ..
        }) = &self.polled
        else {
            return false;
        };
        let method = self.request.method();
        let headers = &mut self.request.headers;
        if !ctx.settings.conditional
            || !matches!(method, Method::GET | Method::HEAD)
            || headers.contains_key(IF_NONE_MATCH)
            || headers.contains_key(IF_MODIFIED_SINCE)
        {
            return false;
        }
        let value = |v: &Option<String>| v.as_deref().and_then(|v| HeaderValue::from_str(v).ok());
        let mut added = false;
        if let Some(etag) = value(&stored.etag) {
            headers.insert(IF_NONE_MATCH, etag);
            added = true;
        }
        if let Some(date) = value(&stored.last_modified) {
            headers.insert(IF_MODIFIED_SINCE, date);
            added = true;
        }
        added
    }

    /// Attempt until an outcome is final. Returns it with the slot still held, if any (none
    /// when the run stopped while the job waited to retry).
    async fn attempt_until_done(
        &self,
        ctx: &Context,
        slot: Slot,
        tally: &mut Attempts,
    ) -> (Outcome, Option<Slot>) {
        let mut slot = Some(slot);
        let method = self.request.method();
        // The line's host profile sets its timeout and retries.
        let settings = ctx.settings_for(&self.request.url);
        loop {
            tally.count += 1;
            let last = slot
                .as_ref()
                .is_some_and(|s| ctx.closes_after(s, &self.host));
            let outcome = tokio::select! {
                biased;
                () = ctx.hard.cancelled() => return (cancelled(ctx), slot),
                outcome = fetch::attempt(&ctx.client, settings, &ctx.redactor, &self.request, last) => outcome,
            };
            if let Some(slot) = &slot {
                // Retry-After pauses the host, quota headers pace it; --adaptive adjusts its
                // rate.
                ctx.gate.feedback(
                    slot,
                    outcome.status,
                    outcome.retry_after.as_deref(),
                    outcome.budget.as_ref(),
                );
            }
            let Some(error) = &outcome.error else {
                return (outcome, slot);
            };
            let failure = Failure {
                kind: error.kind,
                status: outcome.status,
                retry_after: outcome.retry_after.as_deref(),
            };
            let wait = match settings.retry.decide(&method, &failure, tally.count) {
                Decision::Retry(wait) => wait,
                Decision::GiveUp { retryable } => {
                    return (given_up(outcome, retryable, String::new()), slot);
                }
                Decision::WaitTooLong { asked } => {
                    let note = format!(
                        "; the server asked to wait {} (Retry-After), over --max-retry-wait {}",
                        HumanDuration(asked),
                        HumanDuration(ctx.settings.retry.max_wait)
                    );
                    return (given_up(outcome, true, note), slot);
                }
            };
            tracing::debug!(
                "{} attempt {} failed ({}); retrying in {}",
                ctx.redactor.url(&self.request.url),
                tally.count,
                error.kind.as_str(),
                HumanDuration(wait)
            );
            // No slot is held while waiting: others may use it meanwhile.
            drop(slot.take());
            let Some(next) = self.readmit_after(ctx, wait).await else {
                // Stopping: report what the last attempt got rather than starting another.
                let note = " (not retried: the run is stopping)".to_owned();
                return (given_up(outcome, true, note), None);
            };
            slot = Some(next);
            tally.remember(outcome);
        }
    }

    /// Sleep `wait`, then queue again at the front of the host's queue, past every cap, quota
    /// and pause like any other request. `None` when the run stops first.
    async fn readmit_after(&self, ctx: &Context, wait: Duration) -> Option<Slot> {
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => None,
            slot = async {
                tokio::time::sleep(wait).await;
                ctx.gate.admit_retry(&self.host).await
            } => Some(slot),
        }
    }

    /// The record for the last outcome, with the earlier attempts' errors attached (and, with
    /// `--save-dir`, its body written to a file).
    async fn finish(&mut self, ctx: &Context, mut outcome: Outcome, tally: Attempts) -> Record {
        let fresh = self.polled.as_ref().map(|_| Stored {
            etag: outcome.etag.take(),
            last_modified: outcome.last_modified.take(),
            body_sha256: outcome.body.as_deref().map(body_hash),
            status: outcome.status,
            ok: outcome.error.is_none(),
            error_kind: outcome.error.as_ref().map(|e| e.kind.as_str().to_owned()),
        });
        if let Some(e) = &mut outcome.error {
            e.previous = tally.previous;
        }
        let mut saved = None;
        if let (Some(dir), Some(body)) = (&ctx.save_dir, &outcome.body) {
            // Boxed, as `mark` below: only runs with --save-dir (or polling) pay for the
            // state of these waits; inline, every running job's task held room for them
            // (docs/performance.md, "Issue 15, third pass").
            match Box::pin(dir.write(self.seq, self.request.id.as_ref(), body)).await {
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
        // A polling record of a 304 has no body: there is none, and "" would read as one; nor
        // does a filter run on it.
        let not_modified = self.polled.is_some() && outcome.status == Some(304);
        let mut filtered = Filtered::default();
        if outcome.error.is_none()
            && !not_modified
            && filtered::any(&ctx.settings)
            && let Some(b) = &outcome.body
        {
            filtered = filtered::run(&ctx.settings, b);
            outcome.error = filtered.error.take();
        }
        let (body, body_encoding, body_note) = match filtered.body {
            // --body-filter's output is JSON whatever the response was (--body none still
            // leaves it out).
            Some(v) if ctx.settings.body != BodyMode::None => {
                (Some(v), Some(BodyEncoding::Json), None)
            }
            _ => match outcome
                .body
                .as_deref()
                .filter(|_| !not_modified)
                .and_then(|b| encode_body(ctx.settings.body, outcome.content_type.as_deref(), b))
            {
                Some(b) => (Some(b.value), Some(b.encoding), b.note),
                None => (None, None, None),
            },
        };
        let mut record = Record {
            seq: self.seq,
            line: self.line,
            url: ctx.redactor.url(&self.request.url),
            ok: outcome.error.is_none(),
            status: outcome.status,
            started_ms: Some(millis(
                tally.first_start.saturating_duration_since(ctx.start),
            )),
            elapsed_ms: Some(millis(tally.first_start.elapsed())),
            bytes: outcome.bytes,
            content_type: outcome.content_type,
            body,
            body_encoding,
            body_note,
            error: outcome.error,
            attempts: Some(tally.count),
            id: self.request.id.clone(),
            headers: outcome.headers,
            saved,
            host_rate: ctx.gate.host_rate(&self.host),
            round: None,
            at: None,
            changed: None,
            not_modified: None,
            extract: filtered.extract,
            page: None,
            shard: ctx.settings.shard.map(|s| s.index()),
            more_pages: false,
        };
        if let (Some(polled), Some(state)) = (self.polled.take(), &ctx.state) {
            let started = SystemTime::now()
                .checked_sub(tally.first_start.elapsed())
                .unwrap_or_else(SystemTime::now);
            Box::pin(polled.mark(state, &mut record, fresh, started)).await;
        }
        record
    }
}

impl Attempts {
    /// Keep a failed attempt's error for the final record (the oldest goes past the bound).
    fn remember(&mut self, outcome: Outcome) {
        let Some(e) = outcome.error else { return };
        if self.previous.len() == MAX_PREVIOUS {
            self.previous.remove(0);
        }
        self.previous.push(PreviousError {
            kind: e.kind,
            message: e.message,
            status: outcome.status,
        });
    }
}

/// The outcome of a request still in flight `--grace` after the stop signal.
fn cancelled(ctx: &Context) -> Outcome {
    Outcome::failed(RecordError::new(
        ErrorKind::Cancelled,
        format!(
            "cancelled: still in flight --grace {} after the stop signal",
            HumanDuration(ctx.settings.grace)
        ),
    ))
}

/// The last outcome of a job that will not be retried: whether its failure was of a
/// retryable kind, and why it stops here (appended to its message).
fn given_up(mut outcome: Outcome, retryable: bool, note: String) -> Outcome {
    if let Some(e) = &mut outcome.error {
        e.retryable = retryable;
        e.message.push_str(&note);
    }
    outcome
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(etag: &str) -> Stored {
        Stored {
            etag: Some(etag.into()),
            body_sha256: Some(body_hash(b"x")),
            status: Some(200),
            ok: true,
            ..Stored::default()
        }
    }

    /// A `304` keeps the stored outcome, taking any validators it brings: without new ones
    /// the outcome is the same (only its time moves), with a new ETag that ETag is kept.
    #[tokio::test]
    async fn a_304_keeps_the_outcome_and_takes_new_validators() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::of_invalid("a");
        let state = State::open(Some(&dir.path().join("s.db"))).await.unwrap();
        let entry = state.lookup(key).await.entry().await.unwrap();
        state
            .insert(
                key,
                entry.row,
                stored("\"e1\""),
                "2026-01-01T00:00:00.000Z".into(),
            )
            .await;
        state.round_ended().await;
        let mut record =
            Record::input_error(0, 1, String::new(), ErrorKind::HttpStatus, String::new());
        record.ok = true;
        record.status = Some(304);
        record.error = None;
        for (sent, kept) in [(None, "\"e1\""), (Some("\"e2\""), "\"e2\"")] {
            let polled = Polled {
                round: 1,
                key,
                entry: state.lookup(key).await.entry().await,
            };
            let fresh = Stored {
                etag: sent.map(Into::into),
                status: Some(304),
                ok: true,
                ..Stored::default()
            };
            polled
                .mark(&state, &mut record, Some(fresh), SystemTime::now())
                .await;
            assert_eq!(record.changed, Some(false));
            assert_eq!(
                state.lookup(key).await.entry().await.and_then(|e| e.stored),
                Some(stored(kept)),
                "after a 304 sending {sent:?}"
            );
        }
        state.close().await.unwrap();
    }
}
