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
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use fetchall::Record;

const WITH_TOTAL: &str =
    "{elapsed_precise} [{bar:30}] {pos}/{len} {rate} ok {ok} failed {failed} ETA {eta}{round}";
const WITHOUT_TOTAL: &str =
    "{spinner} {elapsed_precise} {pos} done {rate} ok {ok} failed {failed}{round}";

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
    /// When polling: the schedule and the round of the latest record.
    rounds: Arc<Mutex<Option<Rounds>>>,
}

/// What the line says about rounds: `round 3, next in 42s`.
#[derive(Debug, Clone, Copy)]
struct Rounds {
    every: Option<Duration>,
    first: Instant,
    current: Option<u64>,
}

impl Rounds {
    fn describe(&self, w: &mut dyn std::fmt::Write) {
        let Some(round) = self.current else { return };
        let _ = write!(w, " round {round}");
        if let Some(every) = self.every.filter(|d| !d.is_zero()) {
            // The next slot of the schedule (a round that overran starts at once instead).
            let since = self.first.elapsed().as_nanos();
            let left = every.as_nanos() - since % every.as_nanos();
            let left = Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX));
            let _ = write!(w, ", next in {}s", left.as_secs_f64().ceil());
        }
    }
}

impl Progress {
    /// A progress line drawn on stderr, at most 10 times a second.
    pub(crate) fn stderr() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        let progress = Progress {
            bar,
            ok: Arc::default(),
            failed: Arc::default(),
            rounds: Arc::default(),
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
            rounds: Arc::default(),
        }
    }

    fn style(&self, template: &str) -> ProgressStyle {
        let ok = Arc::clone(&self.ok);
        let failed = Arc::clone(&self.failed);
        let rounds = Arc::clone(&self.rounds);
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
            .with_key(
                "round",
                move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let rounds = *rounds.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(rounds) = rounds {
                        rounds.describe(w);
                    }
                },
            )
    }

    /// The total became known: show a bar and an ETA.
    pub(crate) fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(self.style(WITH_TOTAL));
    }

    /// A polling run: show the round, and the time to the next one on `every`'s schedule
    /// from `first`.
    pub(crate) fn poll_every(&self, every: Option<Duration>, first: Instant) {
        *self.rounds.lock().unwrap_or_else(PoisonError::into_inner) = Some(Rounds {
            every,
            first,
            current: None,
        });
    }

    pub(crate) fn observe(&self, record: &Record) {
        if let Some(round) = record.round {
            let mut rounds = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = rounds.as_mut()
                && r.current != Some(round)
            {
                // A new round: the bar counts this round's records.
                r.current = Some(round);
                self.bar.set_position(0);
            }
        }
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
