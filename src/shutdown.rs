//! Shutdown: Ctrl-C and SIGTERM, in three steps (notice, tell everyone, wait, then flush).
//!
//! A [`Shutdown`] carries the run's stop token. The library never installs signal handlers on
//! its own: the binary calls [`Shutdown::listen_for_signals`]; a library user stops a run by
//! cancelling the token (`fetchall::start_with_cancel`) or calling [`Shutdown::stop`].
//!
//! First signal: the token is cancelled, so input reading stops and no new request starts;
//! requests in flight get `--grace` to finish and are then cancelled, each with a `cancelled`
//! record (that part is the scheduler's); the writer flushes and the binary exits 128 + the
//! signal number (130 for SIGINT, 143 for SIGTERM). Second signal: the writer's whole lines
//! are flushed and the process exits at once with the same rule; no half line is written.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::output::SinkHandle;

/// How long a second signal waits for a line being written before it exits anyway.
const EXIT_PATIENCE: Duration = Duration::from_secs(1);

/// The stop state of one run.
#[derive(Debug, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    /// The first signal received (0: none).
    signal: AtomicI32,
    sink: OnceLock<SinkHandle>,
}

impl Shutdown {
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// The token a run watches; cancelled by the first signal or [`Shutdown::stop`].
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stop gracefully, as a first signal would (without an exit status).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// 128 + the number of the first signal received, or `None` if none came.
    pub fn exit_code(&self) -> Option<u8> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            n => Some(u8::try_from(128 + n).unwrap_or(u8::MAX)),
        }
    }

    /// Where the run's records are written, so a second signal can flush them before exiting.
    pub(crate) fn set_sink(&self, sink: SinkHandle) {
        let _ = self.sink.set(sink);
    }

    /// Handle SIGINT and SIGTERM for the rest of the process's life (binary only: a library
    /// must not take signals away from its host). Must be called on a tokio runtime.
    pub fn listen_for_signals(self: &Arc<Self>) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let first = tokio::select! {
                _ = interrupt.recv() => libc::SIGINT,
                _ = terminate.recv() => libc::SIGTERM,
            };
            this.signal.store(first, Ordering::SeqCst);
            tracing::warn!(
                "stopping: no new requests; requests in flight may finish (--grace); \
                 signal again to exit at once"
            );
            this.stop.cancel();
            let second = tokio::select! {
                _ = interrupt.recv() => libc::SIGINT,
                _ = terminate.recv() => libc::SIGTERM,
            };
            let code = 128 + second;
            match this.sink.get() {
                Some(sink) => sink.flush_and_exit(code, EXIT_PATIENCE),
                None => std::process::exit(code),
            }
        });
        Ok(())
    }
}
