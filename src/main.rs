//! The `fetchall` binary: arguments, logging, the runtime, the exit status. The pipeline is
//! the library's; the binary's own parts (flags, config file, progress, signals) are in `cli/`.

mod cli;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use crate::cli::exit::{Exit, report};

/// mimalloc: about a quarter less CPU per request than glibc's malloc on the throughput
/// benchmark (docs/performance.md), where a request makes a few dozen small allocations.
/// Built without transparent huge pages (`no_thp`): with them, each arena touched costs 2 MiB
/// of resident memory, +10 MB for a single URL.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let parsed = match cli::args::parse() {
        Ok(p) => p,
        Err(message) => return report(&cli::exit::Message(message)).into(),
    };
    // -q means quiet, whatever RUST_LOG says; otherwise RUST_LOG, when set, wins.
    let filter = if parsed.cli.quiet {
        EnvFilter::new(parsed.cli.log_level())
    } else {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(parsed.cli.log_level()))
    };
    tracing_subscriber::fmt()
        // Stderr, around the progress line when one shows.
        .with_writer(cli::progress::LogWriter)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    raise_open_file_limit();

    let runtime = match runtime(usize::from(parsed.cli.options.threads)) {
        Ok(rt) => rt,
        Err(e) => return report(&e).into(),
    };
    let exit: Exit = runtime.block_on(cli::execute(parsed));
    // Leave at once: a blocking read of stdin (tokio reads it on a blocking thread) would
    // otherwise hold up the runtime's shutdown until the next line arrives.
    std::process::exit(i32::from(exit.code()));
}

/// The async runtime: one thread by default, the cheapest per request (no hand-offs between
/// workers; see docs/performance.md); `--threads 0` is one per core. The writer still has a
/// thread of its own.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    debug_assert!(threads <= cli::MAX_THREADS);
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    builder.enable_all().build()
}

/// Every request holds a socket: raise the open-file soft limit to the hard limit, so a high
/// `--concurrency` does not fail with "too many open files" under a low default soft limit
/// (often 1024). A failure only costs headroom, so it is logged, not fatal.
fn raise_open_file_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!("cannot raise the open-file limit: {e}");
    }
}
