//! The library on the caller's runtime: no binary, no runtime of its own.
//!
//! The loopback server runs on the test's runtime too, so with a paused clock
//! (`start_paused`) its delays and fetchall's timers take no real time: tokio moves the
//! clock to the next timer whenever every task waits.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;

use crate::server::Server;
use crate::support::validate;

#[tokio::test(start_paused = true)]
async fn start_runs_on_the_callers_runtime() {
    let server = Server::start().await;
    let input: String = (0..20)
        .map(|i| server.url(&format!("/delay/{}", 100 + i)) + "\n")
        .collect();
    let mut settings = fetchall::Settings::default();
    settings.concurrency = NonZeroUsize::new(3).unwrap();
    let mut run = fetchall::start(settings, Box::pin(std::io::Cursor::new(input))).unwrap();
    let mut seen = BTreeSet::new();
    while let Some(record) = run.next().await {
        assert!(record.ok, "{record:?}");
        let n = record.body.as_ref().unwrap()["slept_ms"].as_u64().unwrap();
        assert_eq!(n, 100 + record.seq, "each record describes its own URL");
        validate(&serde_json::to_value(&record).unwrap());
        seen.insert(record.seq);
    }
    run.finish().await.unwrap();
    assert_eq!(seen, (0..20).collect());
    assert_eq!(server.max_in_flight(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn start_works_on_a_single_threaded_runtime() {
    let server = Server::start().await;
    let input = format!("{}\n{}\n", server.url("/ok"), server.url("/status/500"));
    let mut run = fetchall::start(
        fetchall::Settings::default(),
        Box::pin(std::io::Cursor::new(input)),
    )
    .unwrap();
    let mut kinds = Vec::new();
    while let Some(record) = run.next().await {
        kinds.push(record.error.map(|e| e.kind));
    }
    kinds.sort_by_key(|k| k.is_some());
    assert_eq!(kinds, [None, Some(fetchall::ErrorKind::HttpStatus)]);
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let result = fetchall::start(
        fetchall::Settings::default(),
        Box::pin(std::io::Cursor::new("")),
    );
    assert!(matches!(result, Err(fetchall::Error::NoRuntime)));
}

/// A library user stops a run with its token: nothing new starts, what is in flight is
/// cancelled after the grace, each with a record, and the run ends.
#[tokio::test(start_paused = true)]
async fn a_cancelled_token_stops_the_run() {
    let server = Server::start().await;
    let input: String = (0..50).map(|_| server.url("/delay/5000") + "\n").collect();
    let mut settings = fetchall::Settings::default();
    settings.concurrency = NonZeroUsize::new(2).unwrap();
    settings.grace = std::time::Duration::from_millis(100);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut run = fetchall::start_with_cancel(
        settings,
        Box::pin(std::io::Cursor::new(input)),
        stop.clone(),
    )
    .unwrap();
    while server.in_flight() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.cancel();
    let mut kinds = Vec::new();
    while let Some(record) = run.next().await {
        kinds.push(record.error.map(|e| e.kind));
    }
    run.finish().await.unwrap();
    assert_eq!(kinds, [Some(fetchall::ErrorKind::Cancelled); 2]);
    assert_eq!(server.requests(), 2);
}

/// `fetchall::run` writes one JSON line per input line to any `Write`, and its tally counts
/// them.
#[tokio::test]
async fn run_writes_one_json_line_per_input_line_to_any_writer() {
    let server = Server::start().await;
    let input = format!(
        "{}\n# a comment\n{}\nnot a url\n",
        server.url("/ok"),
        server.url("/status/404")
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let sink = file.reopen().unwrap();
    let tally = fetchall::run(
        fetchall::Settings::default(),
        Box::pin(std::io::Cursor::new(input)),
        sink,
    )
    .await
    .unwrap();
    assert_eq!((tally.ok, tally.failed, tally.reader_gone), (1, 2, false));
    let written = std::fs::read(file.path()).unwrap();
    let records = crate::support::records(&written);
    let mut kinds: Vec<&str> = records.iter().map(crate::support::kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["", "http_status", "invalid_url"]);
}
