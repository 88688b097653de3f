//! Shared limits (`--limits redis://...`) against a real redis-server: several fetchall
//! processes keep one rate between them, a Redis that dies mid-run loses no record, and the
//! Redis password never shows.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::redis::RedisServer;
use crate::server::{Server, max_in_window, refused_port};
use crate::support::{fetchall, records, run};

/// Spawn a fetchall over `input` with `args`, its stdin written and closed.
fn spawn(args: &[&str], input: &str) -> Child {
    use std::io::Write;
    let mut child = fetchall()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

fn urls(server: &Server, tag: &str, n: usize) -> String {
    (0..n)
        .map(|i| server.url(&format!("/item/{i}?{tag}")) + "\n")
        .collect()
}

/// Three processes with `--rate 20/s` (then `--per-host-rate 20/s`, all on one host) sharing
/// one budget: the server sees at most `burst + 20*W` (+1, see docs/scale-out.md: below
/// 100/s a lease may span a fraction of a cell) requests in any window W, not three times
/// that; every line has its record. And the processes take turns for the cells rather than
/// ask for cells another took: a per-host rate costs at most 1.25 Redis round trips per
/// request (one per cell, reserved ahead; three contending processes cost about three before
/// reservations), a global one at most 2 (one per cell, plus each process's watch for a
/// pause of the host, one round trip per 250 ms).
#[test]
fn processes_sharing_a_rate_keep_it_between_them() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let url = redis.url();
    for flag in ["--rate", "--per-host-rate"] {
        let server = Server::start_in_background();
        let args = [
            flag,
            "20/s",
            "--limits",
            &url,
            "--limits-key",
            &flag[2..],
            "--body",
            "none",
        ];
        let calls_before = redis.script_calls();
        let children: Vec<Child> = (0..3)
            .map(|p| spawn(&args, &urls(&server, &format!("p{p}"), 14)))
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            let recs = records(&out.stdout);
            assert_eq!(recs.len(), 14);
            assert!(recs.iter().all(|r| r["ok"] == true));
        }
        let arrivals = server.arrivals("/item/");
        assert_eq!(arrivals.len(), 42);
        let per_request = (redis.script_calls() - calls_before) as f64 / 42.0;
        let most_calls = if flag == "--rate" { 2.0 } else { 1.25 };
        eprintln!("{flag}: {per_request:.2} Redis calls per request");
        assert!(
            per_request <= most_calls,
            "{flag}: {per_request:.2} Redis calls per request (at most {most_calls})"
        );
        for w in [0.25, 0.5, 1.0] {
            let most = max_in_window(&arrivals, Duration::from_secs_f64(w));
            let bound = 1.0 + 20.0 * w + 1.0;
            assert!(
                most as f64 <= bound,
                "{flag}: {most} starts in {w}s (bound {bound})"
            );
        }
    }
}

/// Redis killed mid-run and started again: with `wait`, requests wait for it and every line
/// still gets exactly one (ok) record; the loss and the recovery are each logged once.
#[test]
fn redis_lost_and_back_mid_run_loses_no_record() {
    for mode in ["wait", "local"] {
        let Some(mut redis) = RedisServer::start(None) else {
            return;
        };
        let server = Server::start_in_background();
        let url = redis.url();
        let child = spawn(
            &[
                "--rate",
                "20/s",
                "--limits",
                &url,
                "--limits-fallback",
                mode,
                "--limits-share",
                "2",
                "--body",
                "none",
            ],
            &urls(&server, mode, 30),
        );
        // Killed once the run is under way (some requests made), not before it checked Redis.
        while server.arrivals("/item/").len() < 5 {
            std::thread::sleep(Duration::from_millis(10));
        }
        redis.kill();
        let killed = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(600));
        let restarting = std::time::Instant::now();
        redis.restart();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode}: {stderr}");
        let recs = records(&out.stdout);
        let mut seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "{mode}");
        assert!(recs.iter().all(|r| r["ok"] == true), "{mode}");
        assert_eq!(stderr.matches("lost Redis").count(), 1, "{mode}: {stderr}");
        // While Redis was away: `wait` started at most the one cell it may have held,
        // `local` went on at 20/s / 2.
        let away = server
            .arrivals("/item/")
            .into_iter()
            .filter(|t| *t > killed && *t < restarting)
            .count();
        match mode {
            "wait" => assert!(away <= 1, "{away} starts while Redis was away"),
            _ => assert!(away >= 1, "local fallback started nothing"),
        }
        assert_eq!(
            stderr.matches("answers again").count(),
            1,
            "{mode}: {stderr}"
        );
    }
}

/// A Redis that cannot be used at start is one line on stderr and exit 2, before any output
/// file is created; its password shows as ****, in errors, logs and `fetchall config`.
#[test]
fn unusable_redis_stops_the_run_and_passwords_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.jsonl");
    let refused = format!("redis://:hunter2@127.0.0.1:{}/0", refused_port());
    let out = run(
        &["--limits", &refused, "-o", out_file.to_str().unwrap()],
        "http://127.0.0.1:9/\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("redis://:****@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"));
    assert!(!out_file.exists());

    let shown = fetchall()
        .args(["config", "--limits", &refused])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("redis://:****@127.0.0.1"), "{shown}");
    assert!(!shown.contains("hunter2"));

    let Some(redis) = RedisServer::start(Some("hunter2")) else {
        return;
    };
    let server = Server::start_in_background();
    let out = run(
        &[
            "-vv",
            "--rate",
            "50/s",
            "--limits",
            &redis.url(),
            "--body",
            "none",
        ],
        &urls(&server, "auth", 5),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(records(&out.stdout).len(), 5);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
    let wrong = redis.url().replace("hunter2", "wrong-pw");
    let out = run(&["--limits", &wrong], "http://127.0.0.1:9/\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong-pw"));
}

/// A `429 Retry-After: 2` that one process receives pauses the host for every process sharing
/// the budget: the other one, started after the 429, makes its first request to that host no
/// sooner than 2 s after it (less the 100 ms a pause is rounded to), though its own lines
/// were never refused.
#[test]
fn a_host_pause_holds_in_every_process() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let pushy = crate::politeness::Pushy::start();
    let url = redis.url();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--limits",
            &url,
            "--limits-key",
            "pause-test",
            "--body",
            "none",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let first = args(&["--max-retry-wait", "5s"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let refused = spawn(&first, &(pushy.url("/limit/1/2/0") + "\n"));
    while pushy.arrivals().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    // Give the refused process a moment to share its pause (a round trip to Redis).
    std::thread::sleep(Duration::from_millis(200));
    let second = args(&[]);
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let input: String = (1..=3)
        .map(|i| pushy.url(&format!("/limit/0/none/{i}")) + "\n")
        .collect();
    let other = spawn(&second, &input);
    let out = other.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(records(&out.stdout).len(), 3);
    let out = refused.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let arrivals = pushy.arrivals();
    assert_eq!(
        arrivals.len(),
        5,
        "the 429, its retry, and 3 lines of the other process"
    );
    let paused = arrivals[1].duration_since(arrivals[0]);
    assert!(
        paused >= Duration::from_millis(1900),
        "next request {paused:?} after the 429"
    );
}

/// `rediss://`: shared limits over TLS, the server's certificate trusted through
/// `SSL_CERT_FILE` (the system's roots are used, and that variable adds to them).
#[test]
fn rediss_shares_limits_over_tls() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let server = Server::start_in_background();
    let cert = redis.tls_cert.clone().unwrap();
    let out = crate::support::run_env(
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
        &["--rate", "50/s", "--limits", &redis.url(), "--body", "none"],
        &urls(&server, "tls", 5),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(records(&out.stdout).len(), 5);
    // Without trusting its certificate, the run does not start.
    let out = run(&["--limits", &redis.url()], "http://127.0.0.1:9/\n");
    assert_eq!(out.status.code(), Some(2));
}
