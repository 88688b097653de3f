//! Polling end to end: rounds (`--every`, `--rounds`), the SQLite state (`--state`),
//! conditional requests and `changed` records, against a loopback server of its own that
//! serves ETag and Last-Modified, answers conditionals with 304, counts the validators it
//! receives and changes one resource every K requests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::support::{fetchall, max_in_window_f, records, run};

/// What the watch server saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    if_none_match: AtomicUsize,
    if_modified_since: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    arrivals: Mutex<Vec<Instant>>,
    /// For each request in arrival order: whether it asked to close its connection.
    closes: Mutex<Vec<bool>>,
}

/// `/r/{n}`: resource n with an ETag and a Last-Modified; resource 0 gets a new version every
/// `every_k` requests to the server (0: never). `/plain/{n}`: the same bytes every time, no
/// validators (a server that ignores conditionals). `/slow/{n}`: like `/r/{n}`, 50 ms late.
/// `/busy/{n}`: like `/r/{n}`, but the server's first request gets 429 with Retry-After: 1.
/// `/limited/{n}`: like `/r/{n}`, but the server's first request gets a bare 429.
struct Watch {
    addr: SocketAddr,
    seen: Arc<Seen>,
}

impl Watch {
    fn start(every_k: usize) -> Watch {
        let seen = Arc::new(Seen::default());
        let shared = (Arc::clone(&seen), every_k);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = axum::Router::new().fallback(serve).with_state(shared);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Watch {
            addr: rx.recv().unwrap(),
            seen,
        }
    }

    fn urls(&self, kind: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("http://{}/{kind}/{i}\n", self.addr))
            .collect()
    }

    fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

async fn serve(State((seen, every_k)): State<(Arc<Seen>, usize)>, req: Request) -> Response {
    let index = seen.requests.fetch_add(1, Ordering::SeqCst);
    seen.arrivals.lock().unwrap().push(Instant::now());
    let close = req
        .headers()
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    seen.closes.lock().unwrap().push(close);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let (path, headers) = (req.uri().path().to_owned(), req.headers().clone());
    let response = answer(&seen, every_k, index, &path, &headers).await;
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn answer(
    seen: &Seen,
    every_k: usize,
    index: usize,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let mut parts = path.trim_start_matches('/').split('/');
    let (kind, n) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let n: usize = n.parse().unwrap_or(0);
    if kind == "plain" {
        return format!("plain {n}").into_response();
    }
    if kind == "busy" && index == 0 {
        // The first request of the run is asked to come back in a second.
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "1")]).into_response();
    }
    if kind == "limited" && index == 0 {
        // The first request of the run is told it came too fast (no Retry-After: no pause).
        return StatusCode::TOO_MANY_REQUESTS.into_response();
    }
    if kind == "slow" {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let version = if n == 0 && every_k > 0 {
        index / every_k
    } else {
        0
    };
    let etag = format!("\"{n}-{version}\"");
    let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + version as u64 * 60);
    let inm = headers.get(header::IF_NONE_MATCH);
    let ims = headers.get(header::IF_MODIFIED_SINCE);
    if inm.is_some() {
        seen.if_none_match.fetch_add(1, Ordering::SeqCst);
    }
    if ims.is_some() {
        seen.if_modified_since.fetch_add(1, Ordering::SeqCst);
    }
    let fresh = match (inm, ims) {
        (Some(v), _) => v.as_bytes() == etag.as_bytes(),
        (None, Some(v)) => v
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| since >= modified),
        (None, None) => false,
    };
    let validators = [
        (header::ETAG, HeaderValue::from_str(&etag).unwrap()),
        (
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(modified)).unwrap(),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    (validators, format!("resource {n} version {version}")).into_response()
}

/// Per round: (records, changed, not_modified).
fn per_round(records: &[Value]) -> Vec<(u64, u64, u64)> {
    let mut rounds: Vec<(u64, u64, u64)> = Vec::new();
    for r in records {
        let round = r["round"].as_u64().expect("a polling record has round") as usize;
        if rounds.len() <= round {
            rounds.resize(round + 1, (0, 0, 0));
        }
        rounds[round].0 += 1;
        rounds[round].1 += u64::from(r["changed"] == Value::Bool(true));
        rounds[round].2 += u64::from(r["not_modified"] == Value::Bool(true));
    }
    rounds
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn conditional_rounds_get_304s_and_exact_changed_counts() {
    // 4 resources, resource 0 changes every 8 requests: at rounds 2 and 4.
    let server = Watch::start(8);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.db");
    let summary = dir.path().join("summary.json");
    let out = run(
        &[
            "--every",
            "300ms",
            "--rounds",
            "5",
            "--state",
            state.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
        &server.urls("r", 4),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = records(&out.stdout);
    assert_eq!(
        per_round(&records),
        vec![(4, 4, 0), (4, 0, 4), (4, 1, 3), (4, 0, 4), (4, 1, 3)]
    );
    for r in &records {
        assert!(r["ok"].as_bool().unwrap(), "{r}");
        if r["not_modified"] == Value::Bool(true) {
            assert_eq!(r["status"], 304, "{r}");
            assert!(r.get("body").is_none(), "{r}");
        }
        assert!(r["at"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    // Rounds 1-4 sent both validators for every resource.
    assert_eq!(server.seen.if_none_match.load(Ordering::SeqCst), 16);
    assert_eq!(server.seen.if_modified_since.load(Ordering::SeqCst), 16);
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let rounds = summary["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 5);
    assert_eq!(
        rounds[2],
        serde_json::json!({"round": 2, "requests": 4, "changed": 1, "not_modified": 3, "failed": 0})
    );
}

#[test]
fn changed_writes_only_what_changed_and_the_summary_counts_all() {
    let server = Watch::start(8);
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let out = run(
        &[
            "--every",
            "300ms",
            "--rounds",
            "5",
            "--changed",
            "--summary",
            summary.to_str().unwrap(),
        ],
        &server.urls("r", 4),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = records(&out.stdout);
    // All 4 in round 0, then resource 0 at rounds 2 and 4.
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r["changed"] == Value::Bool(true)));
    let later: Vec<_> = records.iter().filter(|r| r["round"] != 0).collect();
    assert!(
        later
            .iter()
            .all(|r| r["url"].as_str().unwrap().ends_with("/r/0"))
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(summary["records"], 20);
    assert_eq!(server.requests(), 20);
}

#[test]
fn two_invocations_like_cron_share_the_state() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.db");
    let urls = dir.path().join("urls.txt");
    let mut list = server.urls("r", 3);
    list.push_str(&server.urls("plain", 1));
    list.push_str("not a url\n");
    std::fs::write(&urls, list).unwrap();
    let args = ["--state", state.to_str().unwrap(), urls.to_str().unwrap()];
    let first = run(&args, "");
    assert_eq!(first.status.code(), Some(1), "one line is not a URL");
    let first = records(&first.stdout);
    assert_eq!(per_round(&first), vec![(5, 5, 0)]);

    let second = run(&args, "");
    let second = records(&second.stdout);
    // The same outcomes: 304 for the three with validators, the same bytes for the plain
    // one (its server ignores conditionals), the same error for the bad line.
    assert_eq!(per_round(&second), vec![(5, 0, 3)]);
    assert_eq!(server.seen.if_none_match.load(Ordering::SeqCst), 3);

    let mut with_changed = args.to_vec();
    with_changed.push("--changed");
    let third = run(&with_changed, "");
    assert!(third.stdout.is_empty(), "{}", text(&third.stdout));
    assert_eq!(third.status.code(), Some(1));

    // --no-conditional: full requests, still unchanged by body hash.
    let mut plain = args.to_vec();
    plain.push("--no-conditional");
    let fourth = records(&run(&plain, "").stdout);
    assert_eq!(per_round(&fourth), vec![(5, 0, 0)]);
    assert_eq!(server.seen.if_none_match.load(Ordering::SeqCst), 6);

    // Nothing changed after the first run: every key was last changed when first seen, and
    // last fetched by the fourth run (unchanged outcomes move only that time), as the
    // file's view of each key shows.
    let conn = rusqlite::Connection::open(&state).unwrap();
    let mut stmt = conn
        .prepare("SELECT first_seen, last_fetched, last_changed FROM state")
        .unwrap();
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter().all(|(seen, _, changed)| seen == changed),
        "{rows:?}"
    );
    let mut fetched: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let mut at: Vec<&str> = fourth.iter().map(|r| r["at"].as_str().unwrap()).collect();
    fetched.sort_unstable();
    at.sort_unstable();
    assert_eq!(fetched, at);
}

/// A new state file's first round writes its rows without the key index and builds it when
/// the round ends: a line given twice is new both times there, and then one entry, found by
/// both copies in the next run.
#[test]
fn a_line_twice_in_a_new_states_first_run_is_one_entry_after_it() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.db");
    let urls = dir.path().join("urls.txt");
    let list = server.urls("r", 3);
    let first_line = list.lines().next().unwrap().to_owned();
    std::fs::write(&urls, format!("{list}{first_line}\n")).unwrap();
    let args = ["--state", state.to_str().unwrap(), urls.to_str().unwrap()];
    let first = run(&args, "");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(per_round(&records(&first.stdout)), vec![(4, 4, 0)]);

    let conn = rusqlite::Connection::open(&state).unwrap();
    let (rows, indexes): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM outcome),
                    (SELECT count(*) FROM pragma_index_list('outcome') WHERE \"unique\")",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, indexes), (3, 1));
    drop(conn);

    let second = run(&args, "");
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(per_round(&records(&second.stdout)), vec![(4, 0, 4)]);
}

/// Read records from a running fetchall's stdout as they come.
fn spawn(args: &[&str], stdin: Stdio) -> (Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = fetchall()
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let record: Value = serde_json::from_str(&line).unwrap();
            crate::support::validate(&record);
            if tx.send(record).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fetchall did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn receive(rx: &std::sync::mpsc::Receiver<Value>, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| rx.recv_timeout(Duration::from_secs(20)).expect("a record"))
        .collect()
}

#[test]
fn a_file_edited_between_rounds_is_read_again() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();
    let urls = dir.path().join("urls.txt");
    std::fs::write(&urls, server.urls("r", 2)).unwrap();
    let (mut child, rx) = spawn(
        &["--every", "700ms", "--rounds", "2", urls.to_str().unwrap()],
        Stdio::null(),
    );
    let round0 = receive(&rx, 2);
    // Round 0 is out; round 1 starts 700 ms after round 0 did. Replace /r/1 with /r/2.
    std::fs::write(
        &urls,
        format!("http://{0}/r/0\nhttp://{0}/r/2\n", server.addr),
    )
    .unwrap();
    assert_eq!(wait(&mut child, Duration::from_secs(20)), Some(0));
    let round1: Vec<Value> = rx.try_iter().collect();
    assert!(round0.iter().all(|r| r["round"] == 0));
    assert_eq!(round1.len(), 2, "{round1:?}");
    let mut got: Vec<(String, bool)> = round1
        .iter()
        .map(|r| {
            assert_eq!(r["round"], 1);
            (
                r["url"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                r["changed"].as_bool().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![("0".into(), false), ("2".into(), true)]);
}

#[test]
fn stdin_is_spooled_and_replayed_every_round() {
    let server = Watch::start(0);
    let out = run(&["--rounds", "3", "--ordered"], &server.urls("r", 3));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = records(&out.stdout);
    let order: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["seq"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = (0..3).flat_map(|r| (0..3).map(move |s| (r, s))).collect();
    assert_eq!(order, want, "--ordered holds within each round");
    assert_eq!(per_round(&records), vec![(3, 3, 0), (3, 0, 3), (3, 0, 3)]);
    assert_eq!(server.requests(), 9);
}

/// Exit 2 with one line naming the problem, no request made, the file's bytes unchanged.
fn refused(state: &Path, server: &Watch, expect: &str) {
    let before = std::fs::read(state).unwrap();
    let out = run(&["--state", state.to_str().unwrap()], &server.urls("r", 2));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(server.requests(), 0);
    assert_eq!(
        std::fs::read(state).unwrap(),
        before,
        "the file was changed"
    );
}

#[test]
fn unusable_state_files_are_refused_before_any_request() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();

    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "my notes, not a database\n".repeat(200)).unwrap();
    refused(&notes, &server, "not a fetchall state file");

    let foreign = dir.path().join("other.db");
    let db = rusqlite::Connection::open(&foreign).unwrap();
    db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    drop(db);
    refused(&foreign, &server, "another program");

    // A state written by a newer fetchall: made by this one, then its schema version raised.
    let newer = dir.path().join("newer.db");
    let other = Watch::start(0);
    let made = run(&["--state", newer.to_str().unwrap()], &other.urls("r", 1));
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let db = rusqlite::Connection::open(&newer).unwrap();
    db.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(db);
    refused(&newer, &server, "newer fetchall");

    // A damaged file: a valid header, then garbage where the pages were.
    let corrupt = dir.path().join("corrupt.db");
    let mut bytes = std::fs::read(&newer).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&corrupt, bytes).unwrap();
    refused(&corrupt, &server, "corrupt");
}

#[test]
fn a_state_in_use_by_another_fetchall_fails_at_once() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.db");
    let urls = dir.path().join("urls.txt");
    std::fs::write(&urls, server.urls("r", 1)).unwrap();
    let (mut first, rx) = spawn(
        &[
            "--every",
            "10s",
            "--state",
            state.to_str().unwrap(),
            urls.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    receive(&rx, 1);
    let started = Instant::now();
    let second = run(&["--state", state.to_str().unwrap()], &server.urls("r", 1));
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use by another fetchall"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for the lock"
    );
    assert_eq!(server.requests(), 1, "the second made no request");

    // Ctrl-C between rounds ends the first at once, with 130.
    let stopped = Instant::now();
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(first.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    assert_eq!(wait(&mut first, Duration::from_secs(5)), Some(130));
    assert!(stopped.elapsed() < Duration::from_secs(5));
}

#[test]
fn killed_mid_round_then_run_again_keeps_every_committed_outcome() {
    let server = Watch::start(0);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("watch.db");
    let urls = dir.path().join("urls.txt");
    std::fs::write(&urls, server.urls("slow", 200)).unwrap();
    let state_arg = state.to_str().unwrap();
    let (mut child, rx) = spawn(
        &["--state", state_arg, "-c", "4", urls.to_str().unwrap()],
        Stdio::null(),
    );
    receive(&rx, 40);
    // SAFETY: a signal to our own child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    let _ = child.wait();

    let again = run(
        &["--state", state_arg, "-c", "50", urls.to_str().unwrap()],
        "",
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let records = records(&again.stdout);
    assert_eq!(records.len(), 200);
    let rounds = per_round(&records);
    let (_, changed, not_modified) = rounds[0];
    // Every outcome is either remembered (304, unchanged) or new; none is lost half-way.
    assert_eq!(changed + not_modified, 200);
    assert!(
        not_modified >= 1,
        "some outcomes of the killed run were committed"
    );
    let db = rusqlite::Connection::open(&state).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM outcome", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 200);
}

#[test]
fn limits_hold_across_a_round_boundary() {
    // 30 URLs at 40/s take 0.75 s: every round overruns its 300 ms slot, so each round starts
    // right after the last one ends. A limiter that forgot its state would burst there.
    let server = Watch::start(0);
    let out = run(
        &[
            "--every", "300ms", "--rounds", "3", "--rate", "40/s", "--burst", "1", "-c", "2",
        ],
        &server.urls("slow", 30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = records(&out.stdout);
    assert_eq!(records.len(), 90);
    assert!(
        text(&out.stderr).contains("schedule slipped"),
        "{}",
        text(&out.stderr)
    );
    // The hosts are asked again next round: no request of rounds 0 and 1 closes its
    // connection (a round ending with closed connections makes the next one reconnect, and
    // the first requests after a reconnect reach the server bunched).
    let closes = server.seen.closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 90);
    assert!(
        closes[..60].iter().all(|close| !close),
        "Connection: close before the last round: {closes:?}"
    );
    let starts = crate::support::start_times(&records);
    let arrivals = server.seen.arrivals.lock().unwrap().clone();
    let t0 = arrivals[0];
    let mut secs: Vec<f64> = arrivals.iter().map(|t| (*t - t0).as_secs_f64()).collect();
    secs.sort_by(f64::total_cmp);
    for w in [0.1, 0.25, 0.5, 1.0] {
        // Client side, where the limiter acts: burst + rate * W, exactly.
        let bound = 1.0 + 40.0 * w;
        let client = max_in_window_f(&starts, w);
        assert!(
            client as f64 <= bound,
            "{client} starts in {w} s (bound {bound})"
        );
        // Server side, after loopback: the suite's allowance for arrival jitter.
        let loose = 1.0 + 40.0 * (w + crate::support::ARRIVAL_JITTER);
        let most = max_in_window_f(&secs, w);
        assert!(
            most as f64 <= loose,
            "{most} arrivals in {w} s (bound {loose})"
        );
    }
    assert!(server.seen.max_in_flight.load(Ordering::SeqCst) <= 2);
}

#[test]
fn an_adaptive_rate_cut_carries_over_into_the_next_round() {
    // Round 0's first request gets a 429: --adaptive halves 20/s to 10/s, and each of the
    // round's 9 successes adds 0.05/s. Round 1 starts after an idle gap, at that rate, not
    // at the configured 20/s (where its 10 requests would take 0.45 s).
    let server = Watch::start(0);
    let out = run(
        &[
            "--every",
            "1500ms",
            "--rounds",
            "2",
            "--rate",
            "20/s",
            "--burst",
            "1",
            "--adaptive",
            "--retries",
            "0",
        ],
        &server.urls("limited", 10),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = records(&out.stdout);
    assert_eq!(records.len(), 20);
    assert_eq!(
        records.iter().filter(|r| r["status"] == 429).count(),
        1,
        "one 429, in round 0"
    );
    let round1: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r["round"] == 1)
        .cloned()
        .collect();
    assert_eq!(round1.len(), 10);
    // The slowest the rate can be raised back to by the end of round 1: 10 + 19 * 0.05.
    let ceiling = 10.0 + 19.0 * 0.05;
    for r in &round1 {
        let rate = r["host_rate"].as_f64().unwrap_or(f64::NAN);
        assert!(
            (10.0..=ceiling + 1e-9).contains(&rate),
            "round 1 at host_rate {rate}: {r}"
        );
    }
    // Client side, where the limiter acts: the lowered rate's exact bound.
    let starts = crate::support::start_times(&round1);
    // Server side: round 1's arrivals (rounds never overlap; nothing is retried).
    let arrivals = server.seen.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 20);
    let mut secs: Vec<f64> = arrivals[10..]
        .iter()
        .map(|t| (*t - arrivals[10]).as_secs_f64())
        .collect();
    secs.sort_by(f64::total_cmp);
    for w in [0.25, 0.5] {
        let bound = 1.0 + ceiling * w;
        let client = max_in_window_f(&starts, w);
        assert!(
            client as f64 <= bound,
            "{client} starts in {w} s (bound {bound})"
        );
        let loose = 1.0 + ceiling * (w + crate::support::ARRIVAL_JITTER);
        let most = max_in_window_f(&secs, w);
        assert!(
            most as f64 <= loose,
            "{most} arrivals in {w} s (bound {loose}; at 20/s it would be {})",
            1.0 + 20.0 * w
        );
    }
}

#[test]
fn a_retry_after_pause_carries_over_into_the_next_round() {
    let server = Watch::start(0);
    let out = run(
        &["--every", "200ms", "--rounds", "2", "--retries", "0"],
        &server.urls("busy", 1),
    );
    let records = records(&out.stdout);
    assert_eq!(records[0]["status"], 429);
    assert_eq!(records[1]["status"], 200);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the last round decides: it was ok"
    );
    let arrivals = server.seen.arrivals.lock().unwrap().clone();
    // Round 1 was due 200 ms after round 0, but the host had asked for a second.
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(950),
        "round 1 came back after {gap:?}"
    );
}

/// The library polls on the caller's runtime: a reader is spooled and replayed, and the
/// records carry their round.
#[tokio::test]
async fn the_library_polls_a_reader_for_several_rounds() {
    let server = Watch::start(0);
    let mut settings = fetchall::Settings::default();
    settings.rounds = std::num::NonZeroU64::new(3);
    let input = fetchall::Input::Reader(Box::pin(std::io::Cursor::new(server.urls("r", 2))));
    let stop = fetchall::CancellationToken::new();
    let mut run = fetchall::start_input(settings, input, stop).await.unwrap();
    let mut seen = Vec::new();
    while let Some(record) = run.next().await {
        crate::support::validate(&serde_json::to_value(&record).unwrap());
        seen.push((record.round, record.changed, record.not_modified));
    }
    run.finish().await.unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            (Some(0), Some(true), Some(false)),
            (Some(0), Some(true), Some(false)),
            (Some(1), Some(false), Some(true)),
            (Some(1), Some(false), Some(true)),
            (Some(2), Some(false), Some(true)),
            (Some(2), Some(false), Some(true)),
        ]
    );
    // A polling run needs start_input (it opens its state off the runtime).
    let mut settings = fetchall::Settings::default();
    settings.every = Some(Duration::from_secs(1));
    let sync = fetchall::start(settings, Box::pin(std::io::Cursor::new("")));
    assert!(matches!(sync, Err(fetchall::Error::Settings(_))));
}
