//! Output: the one writer that owns the record sink (normally stdout).
//!
//! Records arrive through a bounded channel and are serialized straight into a large buffer
//! on a dedicated thread, so formatting and write syscalls never block the runtime's workers.
//! The buffer is flushed whenever the queue runs dry, so a terminal or `jq` sees each record
//! as it comes, while a fast run still writes in big blocks. A closed pipe (EPIPE) means the
//! reader is done (`| head -n 1`): the writer stops quietly and says so.

use std::io::{self, Write};

use tokio::sync::{mpsc, oneshot};

use crate::record::Record;

/// Buffer size for the sink.
const BUFFER_BYTES: usize = 128 * 1024;

/// What the writer saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Records written with `ok: true`.
    pub ok: u64,
    /// Records written with `ok: false`.
    pub failed: u64,
    /// The sink was closed by its reader before all records were written.
    pub reader_gone: bool,
}

/// Write every record from `records` to `sink` on a thread of its own, calling `observe` with
/// each record after it is written; the result (and `observe`, handed back) arrives when the
/// channel closes (all records written) or the sink fails.
pub fn spawn_writer<W, F>(
    records: mpsc::Receiver<Record>,
    sink: W,
    mut observe: F,
) -> oneshot::Receiver<(io::Result<Tally>, F)>
where
    W: Write + Send + 'static,
    F: FnMut(&Record) + Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("fetchall-writer".to_owned())
        .spawn(move || {
            let result = write_all(records, sink, &mut observe);
            let _ = done_tx.send((result, observe));
        })
        .expect("spawning the writer thread");
    done_rx
}

fn write_all<W: Write>(
    mut records: mpsc::Receiver<Record>,
    sink: W,
    observe: &mut dyn FnMut(&Record),
) -> io::Result<Tally> {
    let mut out = io::BufWriter::with_capacity(BUFFER_BYTES, sink);
    let mut tally = Tally::default();
    let result = (|| {
        while let Some(record) = records.blocking_recv() {
            if record.ok {
                tally.ok += 1;
            } else {
                tally.failed += 1;
            }
            serde_json::to_writer(&mut out, &record).map_err(io::Error::from)?;
            out.write_all(b"\n")?;
            observe(&record);
            if records.is_empty() {
                out.flush()?;
            }
        }
        out.flush()
    })();
    match result {
        Ok(()) => Ok(tally),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            tally.reader_gone = true;
            Ok(tally)
        }
        Err(e) => Err(e),
    }
}
