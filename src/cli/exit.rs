//! Exit statuses, in one place: what each outcome of a command means to a shell.

use std::error::Error as StdError;
use std::io;
use std::process::ExitCode;

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Every record ok, or the reader of stdout went away early (`| head`).
    Ok,
    /// At least one record is not ok.
    SomeFailed,
    /// A usage or fatal error (one line on stderr).
    Fatal,
    /// Stopped by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
    Signal(i32),
}

impl Exit {
    pub(crate) fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::SomeFailed => 1,
            Exit::Fatal => 2,
            Exit::Signal(n) => u8::try_from(128 + n).unwrap_or(u8::MAX),
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// An error that ends a command: one line on stderr, unless it only says the reader of our
/// output went away (a broken pipe anywhere in its chain), which is no error at all.
pub(crate) fn report(error: &(dyn StdError + 'static)) -> Exit {
    if is_broken_pipe(error) {
        return Exit::Ok;
    }
    use std::io::Write;
    let _ = writeln!(io::stderr(), "fetchall: {error}");
    Exit::Fatal
}

/// Whether `error` or any error below it is a broken pipe.
fn is_broken_pipe(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// A one-line message as an error, for [`report`].
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_pipe_anywhere_in_the_chain_is_a_clean_exit() {
        let pipe = io::Error::new(io::ErrorKind::BrokenPipe, "gone");
        let wrapped = fetchall::Error::Write(pipe);
        assert_eq!(report(&wrapped), Exit::Ok);
        assert_eq!(report(&Message("bad".into())), Exit::Fatal);
        assert_eq!(Exit::Signal(2).code(), 130);
        assert_eq!(Exit::Signal(15).code(), 143);
    }
}
