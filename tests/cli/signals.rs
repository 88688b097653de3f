//! Ctrl-C and SIGTERM sent to the real binary mid-run, and resuming after an interrupted run.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{Server, refused_port};
use crate::support::{fetchall, kind, records};

/// A scratch directory, removed on drop.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn spawn(args: &[&str], input: &Path) -> Child {
    fetchall()
        .args(args)
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
}

fn wait_until(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait for the child to exit (within `limit`); its exit code, stdout, stderr.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, Vec<u8>, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fetchall did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), out.join().unwrap(), err.join().unwrap())
}

/// Every record line parses, and no seq appears twice.
fn check_lines(stdout: &[u8]) -> Vec<Value> {
    assert!(
        stdout.is_empty() || stdout.ends_with(b"\n"),
        "a partial last line"
    );
    let recs = records(stdout);
    let seqs: BTreeSet<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), recs.len(), "a seq twice");
    recs
}

/// SIGINT with requests in flight that outlast --grace: they are cancelled, one `cancelled`
/// record each; lines not started get nothing; exit 130.
#[test]
fn sigint_cancels_what_outlasts_the_grace() {
    let server = Server::start_in_background();
    let dir = Scratch::new();
    let list: String = (0..100).map(|_| server.url("/delay/5000") + "\n").collect();
    let input = dir.file("urls.txt", &list);
    let started = Instant::now();
    let child = spawn(&["-c", "4", "--grace", "300ms"], &input);
    wait_until("4 requests in flight", Duration::from_secs(10), || {
        server.in_flight() == 4
    });
    signal(&child, libc::SIGINT);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(4));
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it did not wait for the 5 s requests"
    );
    let recs = check_lines(&stdout);
    assert_eq!(
        recs.len(),
        server.requests(),
        "one record per started request"
    );
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(kind(r), "cancelled", "{r}");
        assert_eq!(r["attempts"], 1);
    }
}

/// SIGTERM with short requests in flight: they finish within --grace and are ok; exit 143.
#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let server = Server::start_in_background();
    let dir = Scratch::new();
    let list: String = (0..100).map(|_| server.url("/delay/400") + "\n").collect();
    let input = dir.file("urls.txt", &list);
    let child = spawn(&["-c", "4", "--grace", "5s"], &input);
    wait_until("a request in flight", Duration::from_secs(10), || {
        server.in_flight() > 0
    });
    signal(&child, libc::SIGTERM);
    let (code, stdout, stderr) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(143), "{stderr}");
    let recs = check_lines(&stdout);
    assert_eq!(
        recs.len(),
        server.requests(),
        "one record per started request"
    );
    assert!(recs.len() < 100 && !recs.is_empty());
    assert!(recs.iter().all(|r| r["ok"] == true), "{recs:?}");
}

/// A second signal exits at once, even with a long grace; what was written is whole lines.
#[test]
fn a_second_signal_exits_at_once() {
    let server = Server::start_in_background();
    let dir = Scratch::new();
    let mut list = String::new();
    for i in 0..200 {
        // Quick ones first, so some records are written before the signals.
        list.push_str(&server.url(if i < 50 { "/ok" } else { "/delay/8000" }));
        list.push('\n');
    }
    let input = dir.file("urls.txt", &list);
    let child = spawn(&["-c", "8", "--grace", "60s"], &input);
    wait_until("slow requests in flight", Duration::from_secs(10), || {
        server.in_flight() == 8
    });
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    let second = Instant::now();
    signal(&child, libc::SIGINT);
    let (code, stdout, _) = finish(child, Duration::from_secs(3));
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(code, Some(130));
    let recs = check_lines(&stdout);
    assert_eq!(
        recs.len(),
        50,
        "the quick ones, flushed; the slow ones never finished"
    );
}

/// An interrupted run plus a resumed run: exactly one ok record per reachable URL, and no URL
/// fetched twice once it was ok.
#[test]
fn interrupted_then_resumed_gives_one_ok_record_per_url() {
    let server = Server::start_in_background();
    let dir = Scratch::new();
    let refused = format!("http://127.0.0.1:{}/", refused_port());
    let mut list = String::from("# a comment\n");
    for i in 0..60 {
        if i == 7 {
            list.push_str(&refused);
        } else {
            list.push_str(&server.url(&format!("/delay/{}", 50 + i)));
        }
        list.push('\n');
    }
    let input = dir.file("urls.txt", &list);
    let child = spawn(&["-c", "3", "--retries", "0"], &input);
    wait_until("some requests done", Duration::from_secs(10), || {
        server.requests() >= 12
    });
    signal(&child, libc::SIGINT);
    let (code, first, _) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(130));
    let first_recs = check_lines(&first);
    let first_ok = first_recs.iter().filter(|r| r["ok"] == true).count();
    assert!(first_ok > 0 && first_ok < 59, "{first_ok}");
    let previous = dir.file("first.jsonl", std::str::from_utf8(&first).unwrap());
    let requests_before = server.requests();

    let child = spawn(
        &[
            "-c",
            "3",
            "--retries",
            "0",
            "--resume",
            previous.to_str().unwrap(),
            "-v",
        ],
        &input,
    );
    let (code, second, stderr) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "the refused URL fails again: {stderr}");
    assert!(
        stderr.contains(&format!("skipped {first_ok} lines")),
        "the summary line: {stderr}"
    );
    let second_recs = check_lines(&second);
    assert_eq!(
        second_recs.len(),
        60 - first_ok,
        "skipped lines get no record"
    );

    let mut ok_per_seq: HashMap<u64, usize> = HashMap::new();
    for r in first_recs.iter().chain(&second_recs) {
        if r["ok"] == true {
            *ok_per_seq.entry(r["seq"].as_u64().unwrap()).or_default() += 1;
        }
    }
    let reachable: BTreeSet<u64> = (0..60).filter(|&s| s != 7).collect();
    assert_eq!(
        ok_per_seq.keys().copied().collect::<BTreeSet<_>>(),
        reachable
    );
    assert!(ok_per_seq.values().all(|&n| n == 1), "{ok_per_seq:?}");
    // Nothing already ok was fetched again.
    assert_eq!(server.requests() - requests_before, 59 - first_ok);
}
