//! The `fetchall` binary: runtime, logging, arguments, exit status. Everything else is in the
//! library.

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
    match fetchall::run(settings, source, std::io::stdout()).await {
        Ok(tally) if tally.reader_gone || tally.failed == 0 => 0,
        Ok(_) => 1,
        Err(e) => report(&e.to_string()),
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
