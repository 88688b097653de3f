//! The `fetchall` binary: runtime, logging, arguments, signals, exit status. Everything else
//! is in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use fetchall::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cli.log_level()));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
    raise_open_file_limit();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(app(cli));
    // Leave at once: a blocking read of stdin (tokio reads it on a blocking thread) would
    // otherwise hold up the runtime's shutdown until the next line arrives.
    std::process::exit(i32::from(code));
}

async fn app(cli: Cli) -> u8 {
    if let Some(Command::Demo) = cli.command {
        return match fetchall::demo::run(std::io::stdout()).await {
            Ok(()) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(e) => report(&format!("demo failed: {e}")),
        };
    }
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => return report(&e.to_string()),
    };
    if cli.file.is_none() && std::io::stdin().is_terminal() {
        return report("no input: give a FILE of URLs, or pipe them on stdin (see --help)");
    }
    let source = match fetchall::input::open(cli.file.as_deref()).await {
        Ok(s) => s,
        Err(source) => {
            let path = cli.file.clone().unwrap_or_else(|| "-".into());
            return report(&fetchall::Error::Input { path, source }.to_string());
        }
    };
    // Only the binary takes signals; the library just watches the token.
    let shutdown = fetchall::Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        tracing::warn!("cannot handle Ctrl-C and SIGTERM: {e}");
    }
    let result = fetchall::run_with_shutdown(settings, source, std::io::stdout(), &shutdown).await;
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
