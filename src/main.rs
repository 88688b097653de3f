//! The `fetchall` binary: runtime, logging, arguments, signals, exit status. Everything else
//! is in the library.

use std::process::ExitCode;

use fetchall::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

/// mimalloc: about a quarter less CPU per request than glibc's malloc on the throughput
/// benchmark (docs/performance.md), where a request makes a few dozen small allocations.
/// Built without transparent huge pages (`no_thp`): with them, each arena touched costs 2 MiB
/// of resident memory, +10 MB for a single URL.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cli.log_level()));
    tracing_subscriber::fmt()
        // Stderr, around the progress line when one shows.
        .with_writer(fetchall::progress::LogWriter)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    raise_open_file_limit();

    // A bad option is reported by the run itself; the runtime only needs the thread count.
    let threads = cli.settings().map_or(1, |s| s.threads);
    let mut builder = if threads == 1 {
        // One thread, no hand-offs between workers: the cheapest per request (see
        // docs/performance.md). The writer still has a thread of its own.
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(app(cli));
    // Leave at once: a blocking read of stdin (tokio reads it on a blocking thread) would
    // otherwise hold up the runtime's shutdown until the next line arrives.
    std::process::exit(i32::from(code));
}

async fn app(cli: Cli) -> u8 {
    let mut stdout = std::io::stdout();
    match &cli.command {
        Some(Command::Demo) => {
            return match fetchall::demo::run(stdout).await {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => report(&format!("demo failed: {e}")),
            };
        }
        Some(Command::Config { config, options }) => {
            let printed =
                fetchall::cli::print_config(config.as_deref(), options, &cli.origins, &mut stdout);
            return match printed {
                Ok(()) => 0,
                Err(e) => report(&e.to_string()),
            };
        }
        Some(Command::Completions { shell }) => {
            fetchall::cli::print_completions(*shell, &mut stdout);
            return 0;
        }
        Some(Command::Man) => {
            return match fetchall::cli::print_man(&mut stdout) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
                Err(e) => report(&format!("writing the man page: {e}")),
            };
        }
        None => {}
    }
    // Only the binary takes signals; the library just watches the token.
    let shutdown = fetchall::Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        tracing::warn!("cannot handle Ctrl-C and SIGTERM: {e}");
    }
    let result = fetchall::app::run(&cli, &shutdown).await;
    if let Some(code) = shutdown.exit_code() {
        // Stopped by a signal: 128 + its number, whatever the records said.
        if let Err(e) = result {
            report(&e.to_string());
        }
        return code;
    }
    match result {
        Ok(tally) if tally.reader_gone || tally.failed == 0 => 0,
        Ok(_) => 1,
        Err(e) => report(&e.to_string()),
    }
}

/// Every request holds a socket: raise the open-file soft limit to the hard limit, so a high
/// `--concurrency` does not fail with "too many open files" under a low default soft limit
/// (often 1024). A failure only costs headroom, so it is logged, not fatal.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                tracing::debug!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// A fatal error: one line on stderr, exit status 2.
fn report(message: &str) -> u8 {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "fetchall: {message}");
    2
}

fn fail(message: &str) -> ExitCode {
    ExitCode::from(report(message))
}
