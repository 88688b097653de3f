//! The binary's run: where records go (stdout or `--output`), the progress line, the summary.
//!
//! This module wires one run of the pipeline to the user's terminal and files. Everything is
//! checked before any file is read or created: that no two of the run's files (the input,
//! `-d`/`--json` `@FILE`, `--resume`, `-o`, `--summary`) are one file (by identity, so a hard
//! link, a symlink or `/dev/stdin` is caught too), the settings, the output directories; `-o`
//! is created only once the run has started. It also fits `--concurrency` to the open-file
//! limit. It decides *whether* progress and the human
//! summary show (only when stderr is a terminal and `-q` is not given, so pipes, logs and
//! `| head` stay clean); `progress` and `summary` decide what they look like.

use std::io::{self, IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use fetchall::{Input, Record, Source, Tally};

use super::args::{Cli, Parsed};
use super::exit::Message;
use super::options::Outputs;
use super::progress::Progress;
use super::signals::Signals;
use super::summary::Summary;

/// Run the pipeline as the command line asks, stoppable through `signals`. The tally says
/// whether every record was ok.
pub(crate) async fn run(
    parsed: &Parsed,
    signals: &Signals,
) -> Result<Tally, Box<dyn std::error::Error + Send + Sync>> {
    let cli = &parsed.cli;
    let file = cli.file.clone().filter(|p| p.as_os_str() != "-");
    let (settings, outputs) = prepare(parsed, file.as_deref())?;
    fetchall::check_limits(&settings).await?;
    let source = open(file.as_deref()).await.map_err(|e| {
        let name = file.as_deref().unwrap_or(Path::new("-"));
        message(format!("cannot read {}: {e}", name.display()))
    })?;
    let polling = settings.polling();
    let every = settings.every;
    // A polling run reopens its file every round; a single run reads what was opened (which
    // may be a pipe that cannot be opened twice).
    let input = match (&file, polling) {
        (Some(path), true) => Input::File(path.clone()),
        _ => Input::Reader(source),
    };

    let on_terminal = io::stderr().is_terminal() && !cli.quiet;
    let progress = progress(on_terminal, file, &settings);
    if polling {
        progress.poll_every(every, Instant::now());
    }
    let summary = Arc::new(Mutex::new(Summary::new(Instant::now())));
    let observe = {
        let progress = progress.clone();
        let summary = Arc::clone(&summary);
        Box::new(move |record: &Record| {
            progress.observe(record);
            summary
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(record);
        })
    };
    // The run starts (and checks the settings, reads --resume, opens the state, creates
    // --save-dir) before -o is created: a run that cannot start leaves an existing output file
    // as it was.
    let sharded = settings.shard.is_some();
    let started = fetchall::start_input(settings, input, signals.token()).await?;
    if sharded {
        summary
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .count_shard_skips(started.skipped());
    }
    let sink: Box<dyn Write + Send> = match &outputs.output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .map_err(|e| message(format!("--output: cannot create {}: {e}", path.display())))?,
        ),
        None => Box::new(io::stdout()),
    };
    let writing = started.write_to(sink, observe);
    signals.set_sink(writing.sink());
    let result = writing.finish().await;
    progress.finish();
    let mut tally = result?;

    let report = summary
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .report();
    if let Some(path) = &outputs.summary {
        let text = serde_json::to_string_pretty(&report).map_err(io::Error::from);
        text.and_then(|t| std::fs::write(path, t + "\n"))
            .map_err(|e| message(format!("--summary: cannot write {}: {e}", path.display())))?;
    }
    if on_terminal {
        let _ = write!(io::stderr(), "{report}");
    }
    if polling && let Some(last) = report.rounds.last() {
        // The exit status says how the last completed round went.
        tally.failed = last.failed;
    }
    Ok(tally)
}

/// File descriptors fetchall keeps for itself (the runtime, the resolver, the input and
/// output files) beyond those already open at start.
const RESERVED_FDS: u64 = 32;

/// Fit `--concurrency` to the open-file limit (already raised to the hard limit by `main`):
/// every request in flight holds a socket (and, with `--save-dir`, a file while its body is
/// written). When the limit cannot cover the concurrency asked for, say so once and lower
/// it, instead of letting requests fail with "Too many open files".
fn fit_open_file_limit(settings: &mut fetchall::Settings) {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return;
    };
    if soft == rlimit::INFINITY {
        return;
    }
    let open = ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|d| std::fs::read_dir(d).ok())
        .map_or(16, |d| d.count() as u64);
    let per_request = if settings.save_dir.is_some() { 2 } else { 1 };
    let room = (soft.saturating_sub(open + RESERVED_FDS) / per_request).max(1);
    let asked = settings.concurrency.get() as u64;
    if asked > room {
        let fit = NonZeroUsize::new(usize::try_from(room).unwrap_or(usize::MAX))
            .unwrap_or(NonZeroUsize::MIN);
        tracing::warn!(
            "the open-file limit ({soft}) covers about {fit} requests in flight: --concurrency \
             lowered from {asked} to {fit} (raise the limit with `ulimit -n`)"
        );
        settings.concurrency = fit;
    }
}

/// The progress line: shown only on a terminal. For a file, its total is counted on a
/// blocking thread while the run goes on; the bar gains it (and an ETA) later.
fn progress(on_terminal: bool, file: Option<PathBuf>, settings: &fetchall::Settings) -> Progress {
    if !on_terminal {
        return Progress::hidden();
    }
    let progress = Progress::stderr();
    if let Some(path) = file {
        let progress = progress.clone();
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(total) = fetchall::count_records(&path, &settings) {
                progress.set_total(total);
            }
        });
    }
    progress
}

/// Check everything before anything is read or created: that there is input, that no two
/// files of the run are one file (`-d @/dev/stdin` would swallow the URL list), the settings
/// (errors say where a bad value came from), the output directories; then fit the concurrency
/// to the open-file limit.
fn prepare(
    parsed: &Parsed,
    file: Option<&Path>,
) -> Result<(fetchall::Settings, Outputs), Box<dyn std::error::Error + Send + Sync>> {
    let cli = &parsed.cli;
    if file.is_none() && io::stdin().is_terminal() {
        return Err(message(
            "no input: give a FILE of URLs, or pipe them on stdin (see --help)",
        ));
    }
    check_files(&run_files(cli, file))?;
    let (mut settings, outputs) = parsed.resolve(&cli.options).map_err(message)?;
    check_directories(&outputs)?;
    settings.keep_files = file
        .map(Path::to_path_buf)
        .iter()
        .chain(&outputs.bodies)
        .chain(&outputs.output)
        .chain(&outputs.summary)
        .chain(&settings.state)
        .cloned()
        .collect();
    fit_open_file_limit(&mut settings);
    Ok((settings, outputs))
}

fn message(text: impl Into<String>) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(Message(text.into()))
}

/// A file a run reads or writes, named by the option that gives it.
struct RunFile {
    /// The option, as the user knows it (`--output`, `the input`).
    what: &'static str,
    path: Option<PathBuf>,
    /// `None` for the path, else the open standard stream (0 or 1) it is.
    stream: Option<Stream>,
    /// Whether the run writes it (created, truncated or replaced).
    writes: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdin,
    Stdout,
}

/// Every file the run touches, in one list so that any two can be compared: the input (a
/// file or stdin), `-d`/`--json` `@FILE`, `--resume`, `--output` (else stdout), `--summary`.
/// `--state`. `--save-dir`'s contents are kept apart by the library,
/// which never replaces a file of this list (`Settings::keep_files`).
fn run_files(cli: &Cli, input: Option<&Path>) -> Vec<RunFile> {
    let o = &cli.options;
    let file = |what, path: Option<&Path>, writes| RunFile {
        what,
        path: path.map(Path::to_path_buf),
        stream: None,
        writes,
    };
    let mut files = vec![match input {
        Some(path) => file("the input", Some(path), false),
        None => RunFile {
            what: "the input (stdin)",
            path: None,
            stream: Some(Stream::Stdin),
            writes: false,
        },
    }];
    for (what, arg) in [("--data", &o.data), ("--json", &o.json)] {
        if let Some(path) = arg.as_deref().and_then(|a| a.strip_prefix('@')) {
            files.push(file(what, Some(Path::new(path)), false));
        }
    }
    files.push(file("--resume", o.resume.as_deref(), false));
    files.push(match &o.output {
        Some(path) => file("--output", Some(path), true),
        None => RunFile {
            what: "the standard output",
            path: None,
            stream: Some(Stream::Stdout),
            writes: true,
        },
    });
    files.push(file("--summary", o.summary.as_deref(), true));
    files.push(file("--state", o.state.as_deref(), true));
    files
}

/// Refuse a run where two of its files are one file (by identity: a hard link, a symlink,
/// `/dev/stdin` for the stdin the URLs come from), so that no output erases an input or
/// another output and no input swallows another. Standard output may be a file the run
/// reads (`--resume out.jsonl >> out.jsonl` appends to it); devices such as `/dev/null` are
/// not files to protect.
fn check_files(files: &[RunFile]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ids: Vec<Option<Identity>> = files.iter().map(identity).collect();
    for (i, a) in files.iter().enumerate() {
        for (j, b) in files.iter().enumerate().take(i) {
            let stdout_reads =
                [a, b].iter().any(|f| f.stream == Some(Stream::Stdout)) && !(a.writes && b.writes);
            if stdout_reads {
                continue;
            }
            if let (Some(x), Some(y)) = (&ids[i], &ids[j])
                && x == y
            {
                let shown = |f: &RunFile| match &f.path {
                    Some(p) => format!("{} {}", f.what, p.display()),
                    None => f.what.to_owned(),
                };
                let why = if a.writes || b.writes {
                    "writing one would erase the other"
                } else {
                    "reading one would consume or repeat the other"
                };
                return Err(message(format!(
                    "{} and {} are the same file; {why}",
                    shown(b),
                    shown(a)
                )));
            }
        }
    }
    Ok(())
}

/// What makes two paths one file.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file: its device and inode.
    Inode(u64, u64),
    /// A file that does not exist yet: where it would be created.
    Path(PathBuf),
}

/// The identity of a run file; `None` for one that is not given, and for devices (a
/// terminal, `/dev/null`), which nothing can erase.
fn identity(file: &RunFile) -> Option<Identity> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match (&file.path, file.stream) {
        (Some(path), _) => match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(_) => return Some(Identity::Path(future_path(path))),
        },
        (None, Some(stream)) => {
            use std::os::fd::AsFd;
            let fd = match stream {
                Stream::Stdin => io::stdin().as_fd().try_clone_to_owned(),
                Stream::Stdout => io::stdout().as_fd().try_clone_to_owned(),
            };
            std::fs::File::from(fd.ok()?).metadata().ok()?
        }
        (None, None) => return None,
    };
    let kind = meta.file_type();
    if kind.is_char_device() || kind.is_block_device() || kind.is_socket() {
        return None;
    }
    Some(Identity::Inode(meta.dev(), meta.ino()))
}

/// Where a file that does not exist yet would be created: through a dangling symlink to its
/// target, in its parent directory's canonical path.
fn future_path(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = path.parent().unwrap_or(Path::new(".")).join(target);
            }
            Err(_) => break,
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path,
    }
}

/// `-o` and `--summary` must be creatable where they are named: their directory exists and
/// they are not directories. Checked at start, not found out at the end of a long run.
fn check_directories(outputs: &Outputs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for (what, path) in [
        ("--output", &outputs.output),
        ("--summary", &outputs.summary),
    ] {
        let Some(path) = path else { continue };
        if path.is_dir() {
            return Err(message(format!("{what} {} is a directory", path.display())));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(message(format!(
                "{what} {}: the directory {} does not exist",
                path.display(),
                parent.display()
            )));
        }
    }
    Ok(())
}

/// Open the input: a file, or stdin for `None`.
async fn open(path: Option<&Path>) -> io::Result<Source> {
    let Some(path) = path else {
        return Ok(Box::pin(tokio::io::stdin()));
    };
    let file = tokio::fs::File::open(path).await?;
    if file.metadata().await?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    Ok(Box::pin(file))
}
