//! Ctrl-C and SIGTERM, in three steps: notice, tell everyone, wait (then flush).
//!
//! Only the binary takes signals; the library watches a cancellation token. First signal: the
//! token is cancelled, so input reading stops and no new request starts; requests in flight
//! get `--grace` to finish and are then cancelled, each with a `cancelled` record; the writer
//! flushes and the process exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM).
//! Second signal: no new record is started, the whole lines buffered are flushed and the
//! process exits at once, with the first signal's status. A record already being written
//! (a large one, to a slow reader) is finished first: stdout never ends in half a record. A
//! third signal exits even then.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};

use fetchall::{CancellationToken, SinkHandle};
use tokio::signal::unix::{SignalKind, signal};

use super::exit::Exit;

/// The stop state of one run.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    stop: CancellationToken,
    /// The first signal received (0: none).
    first: AtomicI32,
    sink: OnceLock<SinkHandle>,
}

impl Signals {
    /// Handle SIGINT and SIGTERM for the rest of the process's life. Must be called on a
    /// tokio runtime.
    pub(crate) fn listen() -> io::Result<Arc<Signals>> {
        let this = Arc::new(Signals::default());
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let me = Arc::clone(&this);
        tokio::spawn(async move {
            let first = tokio::select! {
                _ = interrupt.recv() => SignalKind::interrupt(),
                _ = terminate.recv() => SignalKind::terminate(),
            };
            me.first.store(first.as_raw_value(), Ordering::SeqCst);
            tracing::warn!(
                "stopping: no new requests; requests in flight may finish (--grace); \
                 signal again to exit at once"
            );
            me.stop.cancel();
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let code = i32::from(Exit::Signal(first.as_raw_value()).code());
            let Some(sink) = me.sink.get().cloned() else {
                std::process::exit(code);
            };
            // Whole lines only: freeze the writer between two lines (finishing a line in
            // progress, on a thread of its own since that may block), then exit.
            std::thread::spawn(move || {
                let _frozen = sink.freeze(|| {
                    tracing::warn!(
                        "finishing the record being written before exiting; signal again to exit at once (it would be cut)"
                    );
                });
                std::process::exit(code);
            });
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            std::process::exit(code);
        });
        Ok(this)
    }

    /// The token a run watches; cancelled by the first signal.
    pub(crate) fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Where the run's records are written, so a second signal can flush them before exiting.
    pub(crate) fn set_sink(&self, sink: SinkHandle) {
        let _ = self.sink.set(sink);
    }

    /// The exit status of a run stopped by a signal, if one came.
    pub(crate) fn exit(&self) -> Option<Exit> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            n => Some(Exit::Signal(n)),
        }
    }
}
