//! The progress line on stderr (indicatif): done/total, requests per second, ok/failed,
//! elapsed and ETA.
//!
//! The binary shows it only when stderr is a terminal and `-q` is not given; a pipe or a log
//! file never sees it. The total is unknown at first; for a file input, `fetchall::count_records`
//! counts the URL lines on a blocking thread while the run goes on, and the bar gains its total
//! (and an ETA) when that is done. For stdin the total stays unknown and the line shows a
//! count without a bar. Log lines (`-v`) go through [`LogWriter`], which takes the line off the
//! screen while one is written, so the two never garble each other. This module does not
//! decide whether to show itself.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use fetchall::Record;

const WITH_TOTAL: &str =
    "{elapsed_precise} [{bar:30}] {pos}/{len} {rate} ok {ok} failed {failed} ETA {eta}";
const WITHOUT_TOTAL: &str = "{spinner} {elapsed_precise} {pos} done {rate} ok {ok} failed {failed}";

/// The line on screen, if any: log lines are written around it.
static ON_SCREEN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Where log lines go: stderr, with the progress line (when one is showing) cleared while a
/// line is written and redrawn after it. Give it to tracing-subscriber as its writer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = ON_SCREEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// A progress line; cheap to clone (clones share the line).
#[derive(Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Progress {
    /// A progress line drawn on stderr, at most 10 times a second.
    pub(crate) fn stderr() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        let progress = Progress {
            bar,
            ok: Arc::default(),
            failed: Arc::default(),
        };
        progress.bar.set_style(progress.style(WITHOUT_TOTAL));
        // Redraw even while no record arrives, so elapsed keeps ticking past a slow request.
        progress.bar.enable_steady_tick(Duration::from_millis(200));
        *ON_SCREEN.lock().unwrap_or_else(PoisonError::into_inner) = Some(progress.bar.clone());
        progress
    }

    /// A progress line that draws nothing.
    pub(crate) fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            ok: Arc::default(),
            failed: Arc::default(),
        }
    }

    fn style(&self, template: &str) -> ProgressStyle {
        let ok = Arc::clone(&self.ok);
        let failed = Arc::clone(&self.failed);
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                },
            )
            .with_key(
                "ok",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", ok.load(Ordering::Relaxed));
                },
            )
            .with_key(
                "failed",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", failed.load(Ordering::Relaxed));
                },
            )
    }

    /// The total became known: show a bar and an ETA.
    pub(crate) fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(self.style(WITH_TOTAL));
    }

    pub(crate) fn observe(&self, record: &Record) {
        let counter = if record.ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
    }

    /// Take the line off the screen (the summary follows it).
    pub(crate) fn finish(&self) {
        ON_SCREEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.bar.finish_and_clear();
    }
}
