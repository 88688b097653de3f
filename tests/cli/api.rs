//! Speaking an API's language: pacing from quota headers (each dialect, malformed ones),
//! against the loopback quota server of `api_server`.

use std::time::{Duration, Instant};

use crate::api_server::{ApiServer, Dialect};
use crate::support::{kind, records, run};

/// `n` URLs of the quota server, one a line.
fn quota_urls(server: &ApiServer, n: usize) -> String {
    (0..n).map(|i| format!("{}\n", server.url(&format!("/q/{i}")))).collect()
}

/// With quota headers read (the default), a burst of URLs against a quota of 10 per second
/// gets no 429, in every dialect; every record says the pace in effect.
#[test]
fn quota_headers_pace_every_dialect_without_a_429() {
    let dialects = [
        Dialect::Ietf,
        Dialect::Triple,
        Dialect::XDelta,
        Dialect::XEpoch,
    ];
    let runs: Vec<_> = dialects
        .into_iter()
        .map(|d| {
            std::thread::spawn(move || {
                let server = ApiServer::start_in_background(10, Duration::from_secs(1), d);
                let out = run(&["-c", "10", "--retries", "0"], &quota_urls(&server, 25));
                (d, server, out)
            })
        })
        .collect();
    for handle in runs {
        let (d, server, out) = handle.join().unwrap();
        assert!(out.status.success(), "{d:?}: {:?}", out);
        let recs = records(&out.stdout);
        assert_eq!(recs.len(), 25, "{d:?}");
        assert_eq!(server.too_many(), 0, "{d:?}: the server refused requests");
        assert!(recs.iter().all(|r| r["ok"] == true), "{d:?}");
        let paced = recs.iter().filter(|r| r["host_rate"].is_number()).count();
        assert!(paced >= 20, "{d:?}: only {paced} records carry host_rate");
    }
}

/// `--no-quota-headers`: the same burst runs into the quota.
#[test]
fn without_quota_headers_the_burst_meets_429s() {
    let server = ApiServer::start_in_background(10, Duration::from_secs(1), Dialect::XDelta);
    let out = run(
        &["-c", "10", "--retries", "0", "--no-quota-headers"],
        &quota_urls(&server, 25),
    );
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 25);
    assert!(server.too_many() > 0, "no 429 without pacing");
    assert!(recs.iter().all(|r| r.get("host_rate").is_none()));
    assert!(recs.iter().any(|r| kind(r) == "http_status"));
}

/// Malformed or contradictory quota headers never fail a record, never stop the run and
/// never pause a host for longer than --max-retry-wait (said at -v).
#[test]
fn malformed_quota_headers_never_stop_the_run() {
    let runs: Vec<_> = ["negative", "past", "huge", "garbage"]
        .into_iter()
        .map(|k| {
            std::thread::spawn(move || {
                let server =
                    ApiServer::start_in_background(1000, Duration::from_secs(1), Dialect::None);
                let input: String = (0..3)
                    .map(|i| format!("{}\n", server.url(&format!("/weird/{k}/{i}"))))
                    .collect();
                let started = Instant::now();
                let out = run(&["-v", "-c", "4", "--max-retry-wait", "1s"], &input);
                (k, started.elapsed(), out)
            })
        })
        .collect();
    for handle in runs {
        let (k, elapsed, out) = handle.join().unwrap();
        let recs = records(&out.stdout);
        assert_eq!(recs.len(), 3, "{k}");
        assert!(recs.iter().all(|r| r["ok"] == true), "{k}: {recs:?}");
        // A reset a year away, capped at 1 s per pause: the run is over long before a year.
        assert!(elapsed < Duration::from_secs(60), "{k}: took {elapsed:?}");
        let log = String::from_utf8_lossy(&out.stderr);
        if k == "huge" {
            assert!(log.contains("capped at --max-retry-wait"), "{log}");
        }
        if k == "garbage" {
            assert!(!log.contains("quota headers say"), "{log}");
        }
    }
}

/// One log line per change of pace, not one per request.
#[test]
fn pacing_is_logged_once_per_change() {
    let server = ApiServer::start_in_background(100, Duration::from_secs(10), Dialect::Ietf);
    let out = run(&["-v", "-c", "2"], &quota_urls(&server, 30));
    assert_eq!(records(&out.stdout).len(), 30);
    let log = String::from_utf8_lossy(&out.stderr);
    let lines = log.lines().filter(|l| l.contains("quota headers say")).count();
    assert!((1..=5).contains(&lines), "{lines} pacing lines:\n{log}");
}
