//! The progress line on stderr (indicatif): done/total, requests per second, ok/failed,
//! elapsed and ETA.
//!
//! The binary shows it only when stderr is a terminal and `-q` is not given; a pipe or a log
//! file never sees it. The total is unknown at first; for a file input, [`count_url_lines`]
//! counts the URL lines on a blocking thread while the run goes on, and the bar gains its total
//! (and an ETA) when that is done. For stdin the total stays unknown and the line shows a
//! count without a bar. Log lines (`-v`) go through [`LogWriter`], which takes the line off the
//! screen while one is written, so the two never garble each other. This module does not
//! decide whether to show itself.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::record::Record;
use crate::resume::Done;

const WITH_TOTAL: &str =
    "{elapsed_precise} [{bar:30}] {pos}/{len} {rate} ok {ok} failed {failed} ETA {eta}";
const WITHOUT_TOTAL: &str = "{spinner} {elapsed_precise} {pos} done {rate} ok {ok} failed {failed}";

/// The line on screen, if any: log lines are written around it.
static ON_SCREEN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Where log lines go: stderr, with the progress line (when one is showing) cleared while a
/// line is written and redrawn after it. Give it to tracing-subscriber as its writer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

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
pub struct Progress {
    bar: ProgressBar,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Progress {
    /// A progress line drawn on stderr, at most 10 times a second.
    pub fn stderr() -> Progress {
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
    pub fn hidden() -> Progress {
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
    pub fn set_total(&self, total: u64) {
        self.bar.set_length(total);
        self.bar.set_style(self.style(WITH_TOTAL));
    }

    pub fn observe(&self, record: &Record) {
        let counter = if record.ok { &self.ok } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(1);
    }

    /// Take the line off the screen (the summary follows it).
    pub fn finish(&self) {
        ON_SCREEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.bar.finish_and_clear();
    }
}

/// Count the lines of `path` that fetchall will turn into records (not blank, not starting
/// with `#`), reading the file once in fixed-size chunks: memory stays flat however long a
/// line is. (A line of only non-ASCII whitespace counts here but gets no record: the total is
/// for display.)
pub fn count_url_lines(path: &Path) -> io::Result<u64> {
    let mut reader = io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut count = 0;
    // The first byte of the current line that is not ASCII whitespace, once seen.
    let mut first: Option<u8> = None;
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(count + u64::from(first.is_some_and(|b| b != b'#')));
        }
        for &b in chunk {
            if b == b'\n' {
                count += u64::from(first.is_some_and(|b| b != b'#'));
                first = None;
            } else if first.is_none() && !b.is_ascii_whitespace() {
                first = Some(b);
            }
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

/// How many URL lines of `path` an earlier run already fetched (`--resume`): they get no
/// record, so the total leaves them out. Lines are numbered as the input reader numbers them.
pub fn count_resumed(path: &Path, done: &Done) -> io::Result<u64> {
    let reader = io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path)?);
    let mut seq = 0u64;
    let mut resumed = 0;
    for line in reader.split(b'\n') {
        let Some(parsed) = crate::input::parse_line(&line?, true) else {
            continue;
        };
        if let Ok(request) = parsed
            && done.contains(seq, &request.url)
        {
            resumed += 1;
        }
        seq += 1;
    }
    Ok(resumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_lines_that_get_records() {
        let path = std::env::temp_dir().join(format!("fetchall-count-{}", std::process::id()));
        std::fs::write(&path, b"a\n\n  # c\n  b  \n\xff\n \t\nlast").unwrap();
        assert_eq!(count_url_lines(&path).unwrap(), 4);
        std::fs::remove_file(&path).unwrap();
    }

    /// Lines an earlier run got ok (same seq and url) are left out of the total; a failed
    /// one, or an ok one whose line moved, is not.
    #[test]
    fn leaves_out_resumed_lines() {
        let dir = std::env::temp_dir().join(format!("fetchall-resumed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("urls.txt");
        let previous = dir.join("previous.jsonl");
        std::fs::write(
            &input,
            "# c\nhttp://a.test/0\nhttp://a.test/1\nbad\nhttp://a.test/3\nhttp://a.test/4\n",
        )
        .unwrap();
        std::fs::write(
            &previous,
            concat!(
                r#"{"seq":0,"url":"http://a.test/0","ok":true}"#,
                "\n",
                r#"{"seq":1,"url":"http://a.test/1","ok":false}"#,
                "\n",
                r#"{"seq":3,"url":"http://a.test/3","ok":true}"#,
                "\n",
                r#"{"seq":3,"url":"http://a.test/4","ok":true}"#,
                "\n",
            ),
        )
        .unwrap();
        let (done, unreadable) = Done::read(&previous).unwrap();
        assert_eq!(unreadable, 0);
        assert_eq!(count_url_lines(&input).unwrap(), 5);
        assert_eq!(count_resumed(&input, &done).unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
