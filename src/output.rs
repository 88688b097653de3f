//! Output: the one writer that owns the record sink (normally stdout).
//!
//! Records arrive through a bounded channel and are serialized straight into a large buffer
//! on a dedicated thread, so formatting and write syscalls never block the runtime's workers.
//! The buffer is flushed whenever the queue runs dry, so a terminal or `jq` sees each record
//! as it comes, while a fast run still writes in big blocks. A closed pipe (EPIPE) means the
//! reader is done (`| head -n 1`): the writer stops quietly and says so.
//!
//! Lines are written whole: each record is serialized on its own first, then written to the
//! buffer under a lock (a line larger than the buffer goes to the sink directly, still under
//! the lock), and a [`SinkHandle`] (used when a second Ctrl-C exits at once) takes that same
//! lock to flush, waiting for a line in progress to be finished, so the sink never ends in
//! half a record.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use crate::record::Record;

/// Buffer size for the sink.
const BUFFER_BYTES: usize = 128 * 1024;
/// When the queue runs dry the writer flushes, then looks again this often, [`IDLE_POLLS`]
/// times, before it parks. Parked, it must be woken for every record (a futex call on each
/// side); polling, it picks up whatever arrived meanwhile in one go. On a busy run that is a
/// few thousand wake-ups and writes a second instead of one per record; an idle writer parks
/// after 2 ms and costs nothing.
const IDLE_POLL: Duration = Duration::from_micros(500);
const IDLE_POLLS: u32 = 4;

/// What the writer saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tally {
    /// Records written with `ok: true`.
    pub ok: u64,
    /// Records written with `ok: false`.
    pub failed: u64,
    /// The sink was closed by its reader before all records were written.
    pub reader_gone: bool,
}

/// Called with each record once it is written (progress line, summary).
pub type Observer = Box<dyn FnMut(&Record) + Send>;

/// Write every record from `records` to `sink` on a thread of its own (only the changed ones
/// with `changed_only`), calling `observe` with each one after writing it. The result arrives when the channel closes (all records written)
/// or the sink fails; the handle can freeze the sink between whole lines.
pub(crate) fn spawn_writer<W: Write + Send + 'static>(
    records: mpsc::Receiver<Record>,
    sink: W,
    mut observe: Observer,
    changed_only: bool,
) -> (oneshot::Receiver<io::Result<Tally>>, SinkHandle) {
    let out = Arc::new(Mutex::new(io::BufWriter::with_capacity(BUFFER_BYTES, sink)));
    let handle = SinkHandle(Arc::clone(&out) as Arc<Mutex<dyn Write + Send>>);
    let (done_tx, done_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("fetchall-writer".to_owned())
        .spawn(move || {
            let _ = done_tx.send(write_all(records, &out, &mut observe, changed_only));
        });
    match spawned {
        Ok(_) => (done_rx, handle),
        // Out of threads (a ulimit, say): the run fails with that error instead of a panic.
        // The records' receiver went with the closure, so the pipeline stops at once.
        Err(e) => {
            let (failed_tx, failed_rx) = oneshot::channel();
            let _ = failed_tx.send(Err(io::Error::new(
                e.kind(),
                format!("cannot start the writer thread: {e}"),
            )));
            (failed_rx, handle)
        }
    }
}

/// A way into the writer's buffer from outside, for an immediate exit.
#[derive(Clone)]
pub struct SinkHandle(Arc<Mutex<dyn Write + Send>>);

impl std::fmt::Debug for SinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkHandle")
    }
}

impl SinkHandle {
    /// Flush the whole lines written so far and stop the writer from starting another, for a
    /// process about to exit at once (a second Ctrl-C). A line being written is finished
    /// first, however long its reader takes: a record is written whole or not at all.
    /// `on_wait` is called once if that wait begins (to say why the exit is not immediate).
    /// The sink stays frozen while the returned guard lives.
    pub fn freeze(&self, on_wait: impl FnOnce()) -> Frozen<'_> {
        let mut out = match self.0.try_lock() {
            Ok(out) => out,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                on_wait();
                self.0.lock().unwrap_or_else(PoisonError::into_inner)
            }
        };
        // Only whole lines are buffered: flushing them cannot end in half a record.
        let _ = out.flush();
        Frozen { _guard: out }
    }
}

/// A sink frozen by [`SinkHandle::freeze`]: no line starts while this lives.
pub struct Frozen<'a> {
    _guard: MutexGuard<'a, dyn Write + Send + 'static>,
}

/// The next record: at once if one is queued; else, after flushing what was written (so a
/// terminal or `jq` sees every record as soon as no other is waiting), by polling a little
/// and then parking. `None` once every sender is gone.
fn next<W: Write>(
    records: &mut mpsc::Receiver<Record>,
    out: &Mutex<io::BufWriter<W>>,
) -> io::Result<Option<Record>> {
    match records.try_recv() {
        Ok(record) => return Ok(Some(record)),
        Err(TryRecvError::Disconnected) => return Ok(None),
        Err(TryRecvError::Empty) => {}
    }
    out.lock().unwrap_or_else(PoisonError::into_inner).flush()?;
    for _ in 0..IDLE_POLLS {
        std::thread::sleep(IDLE_POLL);
        match records.try_recv() {
            Ok(record) => return Ok(Some(record)),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(TryRecvError::Empty) => {}
        }
    }
    Ok(records.blocking_recv())
}

fn write_all<W: Write>(
    mut records: mpsc::Receiver<Record>,
    out: &Mutex<io::BufWriter<W>>,
    observe: &mut dyn FnMut(&Record),
    changed_only: bool,
) -> io::Result<Tally> {
    let mut tally = Tally::default();
    let mut line = Vec::with_capacity(4096);
    let result = (|| {
        while let Some(record) = next(&mut records, out)? {
            if record.ok {
                tally.ok += 1;
            } else {
                tally.failed += 1;
            }
            if changed_only && record.changed == Some(false) {
                // Counted and observed (the summary counts every record), not written.
                observe(&record);
                continue;
            }
            line.clear();
            serde_json::to_writer(&mut line, &record).map_err(io::Error::from)?;
            line.push(b'\n');
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            out.write_all(&line)?;
            drop(out);
            observe(&record);
            if line.capacity() > BUFFER_BYTES {
                // One huge body must not keep its buffer for the rest of the run.
                line = Vec::with_capacity(4096);
            }
        }
        out.lock().unwrap_or_else(PoisonError::into_inner).flush()
    })();
    match result {
        Ok(()) => Ok(tally),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            tally.reader_gone = true;
            Ok(tally)
        }
        Err(e) => Err(e),
    }
}
