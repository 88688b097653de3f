//! State: what each request's last outcome was, kept in SQLite across rounds and runs.
//!
//! Per request key (method, URL, body hash and spec `id`) the store keeps the validators
//! (ETag, Last-Modified), the body's sha256, the status, ok and error kind, and when the key
//! was first seen, last fetched and last changed. It answers two questions for the scheduler:
//! what was stored for a key (to send conditional headers and to tell whether the outcome
//! changed), and "remember this outcome". Both go through one dedicated thread that owns the
//! SQLite connection (see `store`): lookups are answered as they come, writes are batched into
//! transactions, and nothing runs on the async runtime's threads. The state is never held
//! whole in memory: SQLite pages it in and out. This module does not decide what a record
//! says (that is `scheduler`) and does not fetch.

mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::request::Request;

/// Messages queued for the state thread at most; a full queue makes requests wait for it.
const QUEUE: usize = 4096;

/// A request's identity in the store: the first 16 bytes (128 bits) of the sha256 of its
/// method, URL, body hash and spec `id`. Two distinct requests share a key with a chance of
/// about n²/2¹²⁹ among n keys (below 10⁻¹⁸ for a billion), and at half the bytes the key's
/// index is half the pages: at 1,000,000 keys more of it stays in the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key(pub(crate) [u8; KEY_BYTES]);

/// How much of the sha256 a key keeps.
const KEY_BYTES: usize = 16;

impl Key {
    fn of_hash(h: Sha256) -> Key {
        let mut key = [0; KEY_BYTES];
        key.copy_from_slice(&h.finalize()[..KEY_BYTES]);
        Key(key)
    }

    /// The key of a request: two lines asking the same thing share it.
    pub(crate) fn of(request: &Request) -> Key {
        let mut h = Sha256::new();
        h.update(request.method().as_str());
        h.update([0]);
        h.update(request.url.as_str());
        h.update([0]);
        if let Some(body) = &request.body {
            h.update(Sha256::digest(body.bytes()));
        }
        h.update([0]);
        if let Some(id) = &request.id {
            h.update(id.to_string());
        }
        Key::of_hash(h)
    }

    /// The key of an input line that is not a request (its outcome is its error).
    pub(crate) fn of_invalid(text: &str) -> Key {
        let mut h = Sha256::new();
        h.update("invalid\0");
        h.update(text);
        Key::of_hash(h)
    }
}

/// A request's outcome as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub body_sha256: Option<[u8; 32]>,
    pub status: Option<u16>,
    pub ok: bool,
    pub error_kind: Option<String>,
}

impl Stored {
    /// Whether `self` (a new outcome) differs from `before`: ok, status, error kind or body
    /// hash. Validators alone do not make a change (a server may rotate an ETag for the same
    /// bytes).
    pub(crate) fn differs_from(&self, before: &Stored) -> bool {
        self.ok != before.ok
            || self.status != before.status
            || self.error_kind != before.error_kind
            || self.body_sha256 != before.body_sha256
    }
}

/// Where a key's outcome is in the store: its row, named by its lookup and handed back with
/// the write that follows, which then needs no search by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row(i64);

/// A key's place in the store, as its lookup answered: its row, and the outcome kept there.
/// A key not seen before has no outcome yet; its lookup numbers its row (lookups come in
/// input order, so the rows of a round's new keys are in that order), and [`State::insert`]
/// writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub row: Row,
    pub stored: Option<Stored>,
}

/// The sha256 of a body, as the store keeps it.
pub(crate) fn body_hash(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

enum Msg {
    Lookup(Key, oneshot::Sender<Entry>),
    /// The first outcome of a new `key`, in the `row` its lookup numbered.
    Insert {
        key: Key,
        row: Row,
        outcome: Stored,
        at: String,
    },
    /// A new outcome in `row`; `changed` moves its last-changed time.
    Update {
        row: Row,
        outcome: Stored,
        changed: bool,
        at: String,
    },
    /// The stored outcome in `row` stands as it is; it was fetched again at `at`.
    Touch {
        row: Row,
        at: String,
    },
    /// Every outcome of a round is queued: a new file's keys are indexed now (see
    /// [`State::round_ended`]).
    RoundEnded,
    /// Commit, close the file and answer with the first error, if any.
    Close(oneshot::Sender<Result<(), String>>),
    /// Nothing to do: wakes the thread, which then looks for messages for a while (see
    /// [`State::wake`]).
    Wake,
    /// Tests: answer nothing queued after this until the sender is dropped.
    #[cfg(test)]
    Hold(std::sync::mpsc::Receiver<()>),
}

/// The open state: a handle on the thread that owns the database.
pub(crate) struct State {
    tx: mpsc::Sender<Msg>,
    /// Where the file is, for messages.
    path: PathBuf,
    /// The directory of a temporary state (polling without `--state`), removed at the end.
    _temp: Option<tempfile::TempDir>,
    /// While a new file's first round runs, the row the next lookup numbers; 0 from then on.
    /// The file had no rows, so every key is new and [`State::lookup`] answers at once, here:
    /// the thread gets no lookups, and nothing waits for its answers.
    fresh_row: AtomicI64,
}

/// A lookup's answer: at once (see [`Pending::now`]), or on its way from the state thread
/// (await [`Pending::entry`]).
pub(crate) struct Pending(Answer);

enum Answer {
    Now(Entry),
    Asked(oneshot::Receiver<Entry>),
    /// The state thread has stopped (it reports why at the close).
    Stopped,
}

impl Pending {
    /// The key's place in the store; `None` when the state thread has stopped (it reports
    /// why at the close), and nothing is remembered.
    pub(crate) async fn entry(self) -> Option<Entry> {
        match self.0 {
            Answer::Now(entry) => Some(entry),
            Answer::Asked(rx) => rx.await.ok(),
            Answer::Stopped => None,
        }
    }

    /// The answer if it came with the lookup, as all of a new file's first round's do (and
    /// none of a later round's); otherwise the lookup, still to be awaited.
    pub(crate) fn now(self) -> Result<Entry, Pending> {
        match self.0 {
            Answer::Now(entry) => Ok(entry),
            answer => Err(Pending(answer)),
        }
    }

    /// What [`Pending::entry`] would give, if it has come already; otherwise the lookup,
    /// still to be awaited. (The state thread answers many lookups at a time, so most of a
    /// busy round's have, by the time their jobs are looked at.)
    pub(crate) fn answered(self) -> Result<Option<Entry>, Pending> {
        match self.0 {
            Answer::Now(entry) => Ok(Some(entry)),
            Answer::Asked(mut rx) => match rx.try_recv() {
                Ok(entry) => Ok(Some(entry)),
                Err(oneshot::error::TryRecvError::Closed) => Ok(None),
                Err(oneshot::error::TryRecvError::Empty) => Err(Pending(Answer::Asked(rx))),
            },
            Answer::Stopped => Ok(None),
        }
    }
}

impl State {
    /// Open (or create) the state at `path`, or a temporary one for `None`, on the state's own
    /// thread. A file that is not a fetchall state, has a newer schema, is corrupt or is held
    /// by another fetchall is refused with one line, and left as it was.
    pub(crate) async fn open(path: Option<&Path>) -> Result<State, Error> {
        let (temp, path) = match path {
            Some(p) => (None, p.to_path_buf()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("fetchall-state")
                    .tempdir()
                    .map_err(|e| Error::State(format!("cannot create a temporary state: {e}")))?;
                let path = dir.path().join("state.db");
                (Some(dir), path)
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (opened_tx, opened_rx) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("fetchall-state".to_owned())
            .spawn(move || {
                let store = match store::Store::open(&thread_path) {
                    Ok(store) => {
                        let _ = opened_tx.send(Ok(store.unindexed()));
                        store
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                serve(store, rx);
            })
            .map_err(|e| Error::State(format!("cannot start the state thread: {e}")))?;
        let shown = path.display().to_string();
        match opened_rx.await {
            Ok(Ok(fresh)) => Ok(State {
                tx,
                path,
                _temp: temp,
                fresh_row: AtomicI64::new(i64::from(fresh)),
            }),
            Ok(Err(e)) => Err(Error::State(format!("--state {shown}: {e}"))),
            Err(_) => Err(Error::State(format!(
                "--state {shown}: the state thread died"
            ))),
        }
    }

    /// Wake the state thread ahead of a round's first lookups. A thread asleep for a second
    /// (and the idle core under it) takes a millisecond or two to answer its first message,
    /// and every job of the round waits for its lookup before the gate: woken about a
    /// millisecond ahead, the thread is still looking for messages, every 100 µs (see
    /// [`WOKEN`]), when the round starts.
    pub(crate) async fn wake(&self) {
        let _ = self.tx.send(Msg::Wake).await;
    }

    /// Ask what is stored for `key`; the answer comes while the caller does something else
    /// (waits for its turn at the gate). In a new file's first round it comes at once: every
    /// key is new, and gets the next row in the order asked.
    pub(crate) async fn lookup(&self, key: Key) -> Pending {
        let numbered = self
            .fresh_row
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |row| {
                (row > 0).then_some(row + 1)
            });
        if let Ok(row) = numbered {
            return Pending(Answer::Now(Entry {
                row: Row(row),
                stored: None,
            }));
        }
        let (tx, rx) = oneshot::channel();
        match self.tx.send(Msg::Lookup(key, tx)).await {
            Ok(()) => Pending(Answer::Asked(rx)),
            Err(_) => Pending(Answer::Stopped),
        }
    }

    /// Remember the first `outcome` of the new `key`, fetched at `at`, in the `row` its
    /// lookup numbered.
    pub(crate) async fn insert(&self, key: Key, row: Row, outcome: Stored, at: String) {
        let msg = Msg::Insert {
            key,
            row,
            outcome,
            at,
        };
        // A stopped thread has already reported why (see `close`).
        let _ = self.tx.send(msg).await;
    }

    /// Remember `outcome`, fetched at `at`, in `row` (its key's); `changed` moves its
    /// last-changed time.
    pub(crate) async fn update(&self, row: Row, outcome: Stored, changed: bool, at: String) {
        let msg = Msg::Update {
            row,
            outcome,
            changed,
            at,
        };
        // A stopped thread has already reported why (see `close`).
        let _ = self.tx.send(msg).await;
    }

    /// Every outcome of a round has been put. A new file's first round writes its keys
    /// without an index (every key is new), and the index is built now, in one pass, so that
    /// the next round's lookups find them; otherwise nothing happens.
    pub(crate) async fn round_ended(&self) {
        // From the next round on, the thread answers (once it has indexed the keys).
        self.fresh_row.store(0, Ordering::Relaxed);
        let _ = self.tx.send(Msg::RoundEnded).await;
    }

    /// Tests: hold the state thread (nothing asked after this is answered) until the
    /// returned sender is dropped.
    #[cfg(test)]
    pub(crate) async fn hold(&self) -> std::sync::mpsc::Sender<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = self.tx.send(Msg::Hold(rx)).await;
        tx
    }

    /// Remember that the outcome in `row`, unchanged (validators included), was fetched again
    /// at `at`: only its last-fetched time is written.
    pub(crate) async fn touch(&self, row: Row, at: String) {
        // A stopped thread has already reported why (see `close`).
        let _ = self.tx.send(Msg::Touch { row, at }).await;
    }

    /// Commit what is queued and close the file; the first write error, if any. Outcomes put
    /// after this are not kept.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        let shown = self.path.display().to_string();
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).await.is_err() {
            return Err(Error::State(format!(
                "--state {shown}: the state thread died"
            )));
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::State(format!("--state {shown}: {e}"))),
            Err(_) => Err(Error::State(format!(
                "--state {shown}: the state thread died"
            ))),
        }
    }
}

/// Most messages taken from the queue at once.
const BATCH: usize = 1024;
/// Most outcomes written in one transaction. While the queue keeps messages coming, one
/// transaction spans several batches: a round writes its rows about in their order in the
/// file, so one page takes several writes, and a page changed twice in one transaction is
/// written to the log once.
const COMMIT_PUTS: usize = 8192;

/// How the state thread looks at an empty queue before it commits and sleeps until the next
/// message: `polls` looks `every` apart. While requests keep coming (one lookup and one write
/// each), messages pile up meanwhile and are handled as one batch: no wake-up per message for
/// the thread that sends them, and one transaction for many writes instead of one per dry
/// moment.
#[derive(Clone, Copy)]
struct Linger {
    every: std::time::Duration,
    polls: u32,
}

/// While work comes: one look two milliseconds after the queue ran dry. A lookup waits that
/// long at most, while the reader asks thousands ahead of the gate (`--lookahead`). Each
/// wake-up takes a core from the runtime's thread or the server on a machine with few, and
/// the server, moved off its core, then preempts the runtime's thread too: at 100 µs apart
/// the thread handled about 8 messages a look and the runtime thread was preempted 30,000
/// times per 100,000 records; at 500 µs (four looks) 5,600-10,000 on a warm state, at 2 ms
/// 2,500-5,000, with a third of the wake-ups (about 2,000 without state): docs/polling.md,
/// "State".
const BUSY: Linger = Linger {
    every: std::time::Duration::from_millis(2),
    polls: 1,
};

/// After a [`State::wake`] (a round is about to start): 100 µs apart for two milliseconds, so
/// the round's first lookups, which its first requests wait for, are answered at once. At
/// [`BUSY`]'s pace rounds started a millisecond late (median of 30 rounds).
const WOKEN: Linger = Linger {
    every: std::time::Duration::from_micros(100),
    polls: 20,
};

/// The state thread: answer lookups and batch writes into transactions until it is closed
/// (or every sender is gone). A transaction is committed when the queue has stayed empty for
/// about two milliseconds (see [`BUSY`]), after [`COMMIT_PUTS`] writes, and at the
/// close, so a kill loses at most that much and never leaves a torn write. A new file's keys
/// are indexed when its first round ends, or at the close if that comes first (see
/// [`State::round_ended`]). A write that fails stops the writing (logged at once, reported at
/// the close); lookups then go unanswered, and the run goes on without state.
fn serve(store: store::Store, mut rx: mpsc::Receiver<Msg>) {
    let statements = store.statements();
    let (closing, failed) = serve_until_closed(&store, statements, &mut rx);
    if let Some(reply) = closing {
        let result = match failed {
            Some(e) => Err(e),
            None => store.close(),
        };
        let _ = reply.send(result);
    }
}

/// [`serve`]'s loop, with the statements prepared once (they borrow the store): the close's
/// reply, if a close came, and the first error.
fn serve_until_closed(
    store: &store::Store,
    statements: Result<store::Statements<'_>, String>,
    rx: &mut mpsc::Receiver<Msg>,
) -> (Option<oneshot::Sender<Result<(), String>>>, Option<String>) {
    let (mut statements, mut failed) = match statements {
        Ok(statements) => (Some(statements), None),
        Err(e) => {
            tracing::error!("state: {e}; outcomes are not remembered");
            (None, Some(e))
        }
    };
    let mut batch = Vec::with_capacity(64);
    // Writes in the open transaction, if one is open.
    let mut open: Option<usize> = None;
    let mut pace = BUSY;
    loop {
        let first = match linger(rx, pace) {
            Some(msg) => msg,
            None => {
                // The queue stayed empty: commit what is written before waiting.
                if open.take().is_some()
                    && failed.is_none()
                    && let Err(e) = store.commit()
                {
                    tracing::error!("state: {e}; outcomes from here on are not remembered");
                    failed = Some(e);
                }
                match rx.blocking_recv() {
                    Some(msg) => msg,
                    None => break,
                }
            }
        };
        batch.clear();
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
        let woken = batch.iter().any(|m| matches!(m, Msg::Wake));
        pace = if woken { WOKEN } else { BUSY };
        batch.retain(|m| !matches!(m, Msg::Wake));
        if batch.is_empty() {
            continue;
        }
        let closing = match batch.iter().position(|m| matches!(m, Msg::Close(_))) {
            Some(i) => match batch.drain(i..).next() {
                Some(Msg::Close(reply)) => Some(reply),
                _ => None,
            },
            None => None,
        };
        if let (None, Some(statements)) = (&failed, &mut statements) {
            let result = match open {
                Some(_) => Ok(()),
                None => store.begin(),
            }
            .and_then(|()| statements.apply(&mut batch))
            .and_then(|puts| {
                let puts = open.unwrap_or(0) + puts;
                if closing.is_some() {
                    statements.index_keys()?;
                }
                if puts >= COMMIT_PUTS || closing.is_some() {
                    open = None;
                    store.commit()
                } else {
                    open = Some(puts);
                    Ok(())
                }
            });
            if let Err(e) = result {
                tracing::error!("state: {e}; outcomes from here on are not remembered");
                failed = Some(e);
                open = None;
            }
        }
        if closing.is_some() {
            return (closing, failed);
        }
    }
    if let (None, Some(statements)) = (&failed, &mut statements) {
        // Every sender is gone without a close: keep what was written, indexed.
        let result = match open {
            Some(_) => Ok(()),
            None => store.begin(),
        }
        .and_then(|()| statements.index_keys())
        .and_then(|()| store.commit());
        if let Err(e) = result {
            tracing::error!("state: {e}");
        }
    }
    (None, failed)
}

/// The next message if one comes within `pace.polls` looks `pace.every` apart. Looking
/// (`try_recv`) registers no waker, so a sender meanwhile wakes nobody.
fn linger(rx: &mut mpsc::Receiver<Msg>, pace: Linger) -> Option<Msg> {
    for poll in 0..=pace.polls {
        if let Ok(msg) = rx.try_recv() {
            return Some(msg);
        }
        if poll < pace.polls {
            std::thread::sleep(pace.every);
        }
    }
    None
}

impl store::Statements<'_> {
    /// Handle a batch of lookups and writes in the open transaction; how many writes.
    fn apply(&mut self, batch: &mut Vec<Msg>) -> Result<usize, String> {
        let mut puts = 0;
        for msg in batch.drain(..) {
            match msg {
                Msg::Lookup(key, reply) => {
                    let _ = reply.send(self.entry(&key)?);
                }
                Msg::Insert {
                    key,
                    row,
                    outcome,
                    at,
                } => {
                    self.insert(&key, row, &outcome, &at)?;
                    puts += 1;
                }
                Msg::Update {
                    row,
                    outcome,
                    changed,
                    at,
                } => {
                    self.update(row, &outcome, changed, &at)?;
                    puts += 1;
                }
                Msg::Touch { row, at } => {
                    self.touch(row, &at)?;
                    puts += 1;
                }
                Msg::RoundEnded if self.unindexed() => {
                    self.index_keys()?;
                    // Committed at once: the index is as many pages as a full transaction.
                    puts += COMMIT_PUTS;
                }
                Msg::RoundEnded => {}
                Msg::Close(_) | Msg::Wake => {}
                #[cfg(test)]
                Msg::Hold(release) => {
                    let _ = release.recv();
                }
            }
        }
        Ok(puts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16, body: &[u8]) -> Stored {
        Stored {
            etag: Some("\"e1\"".into()),
            last_modified: None,
            body_sha256: Some(body_hash(body)),
            status: Some(status),
            ok: status < 400,
            error_kind: None,
        }
    }

    #[tokio::test]
    async fn outcomes_survive_a_reopen_and_validators_alone_are_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = Key::of_invalid("a");
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(key).await.entry().await.unwrap();
        assert_eq!(entry.stored, None);
        state
            .insert(
                key,
                entry.row,
                outcome(200, b"x"),
                "2026-01-01T00:00:00.000Z".into(),
            )
            .await;
        state.close().await.unwrap();

        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(key).await.entry().await.unwrap();
        let stored = entry.stored.unwrap();
        assert_eq!(stored, outcome(200, b"x"));
        let mut rotated = outcome(200, b"x");
        rotated.etag = Some("\"e2\"".into());
        assert!(!rotated.differs_from(&stored));
        assert!(outcome(200, b"y").differs_from(&stored));
        assert!(outcome(404, b"x").differs_from(&stored));
        state.close().await.unwrap();
    }

    /// The times of one key as the file's view shows them (first seen, last fetched, last
    /// changed), and the outcome row's own last-fetched time.
    fn times(path: &Path) -> ((String, String, String), String) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row(
            "SELECT s.first_seen, s.last_fetched, s.last_changed, o.last_fetched
             FROM state AS s JOIN outcome AS o USING (id)",
            [],
            |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)),
        )
        .unwrap()
    }

    /// A touch writes only its time, in the table of times (the outcome's row is left as it
    /// is); the key's last fetch is the later of that and its outcome's last write.
    #[tokio::test]
    async fn a_touch_moves_only_the_last_fetched_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let key = Key::of_invalid("a");
        let day = |d: u32| format!("2026-01-{d:02}T00:00:00.000Z");
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(key).await.entry().await.unwrap();
        state
            .insert(key, entry.row, outcome(200, b"x"), day(1))
            .await;
        state.round_ended().await;
        // The first touch gives the row its time; the second moves it.
        for d in [2, 3] {
            let entry = state.lookup(key).await.entry().await.unwrap();
            state.touch(entry.row, day(d)).await;
        }
        assert_eq!(
            state.lookup(key).await.entry().await.unwrap().stored,
            Some(outcome(200, b"x"))
        );
        state.close().await.unwrap();
        assert_eq!(times(&path), ((day(1), day(3), day(1)), day(1)));

        // A new outcome is written in its row, with its time: now the later one.
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(key).await.entry().await.unwrap();
        state
            .update(entry.row, outcome(200, b"y"), true, day(4))
            .await;
        state.close().await.unwrap();
        assert_eq!(times(&path), ((day(1), day(4), day(4)), day(4)));
    }

    /// A new file's first round numbers its rows where it asks (nothing waits for the thread,
    /// held here); the next round asks the thread, which has the first round's outcomes.
    #[tokio::test]
    async fn a_new_files_first_round_is_answered_without_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(Some(&dir.path().join("s.db"))).await.unwrap();
        // Nothing the thread is asked after this is answered until `release` is dropped.
        let release = state.hold().await;
        let (a, b) = (Key::of_invalid("a"), Key::of_invalid("b"));
        let mut rows = Vec::new();
        for (key, body) in [(a, b"a"), (b, b"b"), (a, b"A")] {
            let entry = match state.lookup(key).await.now() {
                Ok(entry) => entry,
                Err(_) => panic!("a new file's lookup waited for the thread"),
            };
            assert_eq!(entry.stored, None);
            rows.push(entry.row);
            state
                .insert(key, entry.row, outcome(200, body), "t0".into())
                .await;
        }
        assert_eq!(rows, [Row(1), Row(2), Row(3)]);
        state.round_ended().await;
        // The next round asks the thread, which has the round's outcomes (the first of a key
        // asked twice) once it goes on.
        let Err(pending) = state.lookup(a).await.answered() else {
            panic!("a second round's lookup was answered without the thread");
        };
        drop(release);
        assert_eq!(
            pending.entry().await,
            Some(Entry {
                row: Row(1),
                stored: Some(outcome(200, b"a"))
            })
        );
        // A key new in the second round gets a row after every row the first one numbered.
        let c = Key::of_invalid("c");
        assert_eq!(state.lookup(c).await.entry().await.unwrap().row, Row(4));
        state.close().await.unwrap();
    }

    /// The keys' index of a new file, and what a lookup answers before and after it is built.
    /// Rows are numbered by the lookups, in their order; a key asked twice in the first round
    /// is new both times and keeps its first row; after the round every key is found, in any
    /// order (a lookup whose guess, the next row, is wrong searches the index).
    #[tokio::test]
    async fn a_new_files_keys_are_indexed_when_its_first_round_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b, c) = (
            Key::of_invalid("a"),
            Key::of_invalid("b"),
            Key::of_invalid("c"),
        );
        let state = State::open(Some(&path)).await.unwrap();
        let mut rows = Vec::new();
        for (key, body) in [(a, b"a"), (b, b"b"), (c, b"c"), (a, b"A")] {
            let entry = state.lookup(key).await.entry().await.unwrap();
            assert_eq!(entry.stored, None);
            rows.push(entry.row);
            // Written in another order than asked, as requests finish.
            state
                .insert(key, entry.row, outcome(200, body), "t0".into())
                .await;
        }
        assert_eq!(rows, [Row(1), Row(2), Row(3), Row(4)]);
        state.round_ended().await;
        for (key, row, body) in [(c, 3, b"c"), (a, 1, b"a"), (b, 2, b"b"), (c, 3, b"c")] {
            assert_eq!(
                state.lookup(key).await.entry().await,
                Some(Entry {
                    row: Row(row),
                    stored: Some(outcome(200, body))
                })
            );
        }
        // A key new in the second round gets a row after every row numbered so far.
        let d = Key::of_invalid("d");
        assert_eq!(
            state.lookup(d).await.entry().await,
            Some(Entry {
                row: Row(5),
                stored: None
            })
        );
        state.close().await.unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let ids: Vec<i64> = conn
            .prepare("SELECT id FROM outcome ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [1, 2, 3]);
        let index: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outcome'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index.contains("UNIQUE"), "{index}");
    }

    /// A new file's first run that was killed before its round ended left rows without the
    /// keys' index (some keys twice): the next open indexes them, keeping each key's first
    /// row, and every key is found.
    #[tokio::test]
    async fn rows_a_killed_first_run_left_unindexed_are_indexed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (Key::of_invalid("a"), Key::of_invalid("b"));
        {
            let state = State::open(Some(&path)).await.unwrap();
            for (key, body) in [(a, b"a"), (b, b"b"), (a, b"A")] {
                let entry = state.lookup(key).await.entry().await.unwrap();
                state
                    .insert(key, entry.row, outcome(200, body), "t0".into())
                    .await;
            }
            state.close().await.unwrap();
        }
        // As a kill before the round's end leaves it: the rows, a key twice, no index.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP INDEX outcome_key").unwrap();
        conn.execute(
            "INSERT INTO outcome SELECT 9, key, etag, last_modified, body_sha256, status, ok,
             error_kind, first_seen, last_fetched, last_changed FROM outcome WHERE id = 1",
            [],
        )
        .unwrap();
        drop(conn);

        let state = State::open(Some(&path)).await.unwrap();
        for (key, row, body) in [(b, 2, b"b"), (a, 1, b"a")] {
            assert_eq!(
                state.lookup(key).await.entry().await,
                Some(Entry {
                    row: Row(row),
                    stored: Some(outcome(200, body))
                })
            );
        }
        state.close().await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM outcome", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    /// A state written by a fetchall of schema 1 (rows kept in key order) is upgraded in place
    /// when opened: every outcome and time stays, and a later write finds its row.
    #[tokio::test]
    async fn a_schema_1_state_is_upgraded_with_its_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (Key::of_invalid("a"), Key::of_invalid("b"));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE outcome (
                    key BLOB PRIMARY KEY NOT NULL, etag TEXT, last_modified TEXT,
                    body_sha256 BLOB, status INTEGER, ok INTEGER NOT NULL, error_kind TEXT,
                    first_seen TEXT NOT NULL, last_fetched TEXT NOT NULL,
                    last_changed TEXT NOT NULL
                ) WITHOUT ROWID;
                PRAGMA application_id = 1717645617; PRAGMA user_version = 1;",
            )
            .unwrap();
            for (key, seen) in [(&b, "2026-01-01"), (&a, "2026-01-02")] {
                // Schema 1 kept the whole sha256; later schemas its first 16 bytes.
                let whole = [&key.0[..], &[0xab; 16]].concat();
                conn.execute(
                    "INSERT INTO outcome VALUES (?1, '\"e1\"', NULL, ?2, 200, 1, NULL, ?3, ?3, ?3)",
                    rusqlite::params![whole, &body_hash(b"x")[..], seen],
                )
                .unwrap();
            }
        }
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(a).await.entry().await.unwrap();
        assert_eq!(entry.stored, Some(outcome(200, b"x")));
        state.touch(entry.row, "2026-01-03".into()).await;
        assert_eq!(
            state.lookup(b).await.entry().await.unwrap().stored,
            Some(outcome(200, b"x"))
        );
        state.close().await.unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, store::SCHEMA);
        // In the order first seen; a's time moved, nothing else did.
        let rows: Vec<(String, String)> = conn
            .prepare("SELECT first_seen, last_fetched FROM state ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("2026-01-01".to_owned(), "2026-01-01".to_owned()),
                ("2026-01-02".to_owned(), "2026-01-03".to_owned())
            ]
        );
    }

    /// A schema-2 file (its keys indexed by the table's `UNIQUE`) keeps its rows: only its
    /// version moves and the table of times is added, and its index serves lookups and the
    /// writes of new keys.
    #[tokio::test]
    async fn a_schema_2_state_keeps_its_rows_and_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (Key::of_invalid("a"), Key::of_invalid("b"));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE outcome (
                    id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, etag TEXT,
                    last_modified TEXT, body_sha256 BLOB, status INTEGER, ok INTEGER NOT NULL,
                    error_kind TEXT, first_seen TEXT NOT NULL, last_fetched TEXT NOT NULL,
                    last_changed TEXT NOT NULL
                );
                PRAGMA application_id = 1717645617; PRAGMA user_version = 2;",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO outcome VALUES (7, ?1, '\"e1\"', NULL, ?2, 200, 1, NULL, 't', 't', 't')",
                rusqlite::params![&a.0[..], &body_hash(b"x")[..]],
            )
            .unwrap();
        }
        let state = State::open(Some(&path)).await.unwrap();
        assert_eq!(
            state.lookup(a).await.entry().await,
            Some(Entry {
                row: Row(7),
                stored: Some(outcome(200, b"x"))
            })
        );
        let entry = state.lookup(b).await.entry().await.unwrap();
        assert_eq!(
            entry,
            Entry {
                row: Row(8),
                stored: None
            }
        );
        state
            .insert(b, entry.row, outcome(200, b"y"), "t".into())
            .await;
        assert_eq!(
            state.lookup(b).await.entry().await.unwrap().stored,
            Some(outcome(200, b"y"))
        );
        state.close().await.unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let (version, indexes): (i32, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT count(*) FROM pragma_index_list('outcome'))",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((version, indexes), (store::SCHEMA, 1));
    }

    /// A schema-3 file (each last-fetched time in its outcome's row) keeps its rows and
    /// times; its keys' next fetches go to the table of times, in whatever order they come.
    #[tokio::test]
    async fn a_schema_3_state_keeps_its_times_until_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (a, b) = (Key::of_invalid("a"), Key::of_invalid("b"));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE outcome (
                    id INTEGER PRIMARY KEY, key BLOB NOT NULL, etag TEXT, last_modified TEXT,
                    body_sha256 BLOB, status INTEGER, ok INTEGER NOT NULL, error_kind TEXT,
                    first_seen TEXT NOT NULL, last_fetched TEXT NOT NULL,
                    last_changed TEXT NOT NULL
                );
                CREATE UNIQUE INDEX outcome_key ON outcome (key);
                PRAGMA application_id = 1717645617; PRAGMA user_version = 3;",
            )
            .unwrap();
            for (id, key) in [(1, &a), (2, &b)] {
                conn.execute(
                    "INSERT INTO outcome VALUES (?1, ?2, '\"e1\"', NULL, ?3, 200, 1, NULL, 't1', 't2', 't1')",
                    rusqlite::params![id, &key.0[..], &body_hash(b"x")[..]],
                )
                .unwrap();
            }
        }
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(b).await.entry().await.unwrap();
        assert_eq!(entry.row, Row(2));
        assert_eq!(entry.stored, Some(outcome(200, b"x")));
        state.touch(entry.row, "t3".into()).await;
        state.close().await.unwrap();
        // A row before the last one with a time gets its own.
        let state = State::open(Some(&path)).await.unwrap();
        let entry = state.lookup(a).await.entry().await.unwrap();
        assert_eq!(entry.row, Row(1));
        state.touch(entry.row, "t4".into()).await;
        state.close().await.unwrap();

        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, store::SCHEMA);
        let rows: Vec<(String, String, String)> = conn
            .prepare("SELECT s.last_fetched, o.last_fetched, s.last_changed FROM state AS s JOIN outcome AS o USING (id) ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let row = |s: &str, o: &str| (s.to_owned(), o.to_owned(), "t1".to_owned());
        assert_eq!(rows, [row("t4", "t2"), row("t3", "t2")]);
    }

    #[tokio::test]
    async fn a_second_opener_and_foreign_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = State::open(Some(&path)).await.unwrap();
        let e = State::open(Some(&path)).await.err().unwrap().to_string();
        assert!(e.contains("in use"), "{e}");
        first.close().await.unwrap();

        let text = dir.path().join("notes.txt");
        std::fs::write(&text, "not a database, just text\n".repeat(100)).unwrap();
        let before = std::fs::read(&text).unwrap();
        let e = State::open(Some(&text)).await.err().unwrap().to_string();
        assert!(e.contains("not a fetchall state"), "{e}");
        assert_eq!(std::fs::read(&text).unwrap(), before);
    }

    #[test]
    fn keys_differ_by_method_body_and_id() {
        let url = url::Url::parse("http://127.0.0.1/a").unwrap();
        let get = Request::get(url.clone());
        let mut post = Request::get(url.clone());
        post.method = Some(reqwest::Method::POST);
        let mut with_id = Request::get(url);
        with_id.id = Some(serde_json::json!(7));
        let keys = [Key::of(&get), Key::of(&post), Key::of(&with_id)];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_eq!(Key::of(&get), keys[0]);
    }
}
