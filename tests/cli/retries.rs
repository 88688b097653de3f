//! Retries are paced like first attempts: they pass the rate limiter again and hold no slot
//! while they wait.

use std::time::Duration;

use crate::fault_server::FaultServer;
use crate::server::{Server, max_in_window};
use crate::support::{by_seq, kind, records, run};

/// Every attempt passes the rate limiter: 6 URLs x 3 attempts at 20/s keep the GCRA bound.
#[test]
fn every_attempt_passes_the_rate_limiter() {
    let server = Server::start_in_background();
    let input: String = (0..6).map(|_| server.url("/status/503") + "\n").collect();
    let out = run(
        &[
            "--rate",
            "20/s",
            "--retries",
            "2",
            "--retry-base",
            "1ms",
            "-c",
            "6",
        ],
        &input,
    );
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 6);
    for r in &recs {
        assert_eq!(kind(r), "http_status");
        assert_eq!(r["attempts"], 3);
        assert_eq!(r["error"]["retryable"], true);
        assert_eq!(r["error"]["previous"].as_array().unwrap().len(), 2);
        assert_eq!(r["error"]["previous"][0]["status"], 503);
    }
    let arrivals = server.arrivals("/status/");
    assert_eq!(arrivals.len(), 18);
    for w in [0.1, 0.25, 0.5] {
        let most = max_in_window(&arrivals, Duration::from_secs_f64(w));
        let bound = 1.0 + 20.0 * (w + 0.02);
        assert!(most as f64 <= bound, "W={w}: {most} > {bound}");
    }
    let span = arrivals[17].duration_since(arrivals[0]).as_secs_f64();
    assert!(span >= 17.0 / 20.0 * 0.95, "{span}");
}

/// With one slot, a request waiting 1 s to retry (Retry-After) does not hold it: the other
/// lines run meanwhile.
#[test]
fn no_slot_is_held_while_waiting_to_retry() {
    let faults = FaultServer::start();
    // Another host: a Retry-After pauses its own host's queue (issue 4), not the others.
    let other = FaultServer::start();
    let mut input = faults.url("/429-seconds?n=slot") + "\n";
    for i in 0..5 {
        input.push_str(&other.url(&format!("/fine/{i}")));
        input.push('\n');
    }
    let out = run(&["-c", "1"], &input);
    assert_eq!(out.status.code(), Some(0));
    let recs = by_seq(records(&out.stdout));
    let waited = &recs[0];
    assert_eq!(waited["attempts"], 2);
    let retry_done =
        waited["started_ms"].as_f64().unwrap() + waited["elapsed_ms"].as_f64().unwrap();
    assert!(waited["elapsed_ms"].as_f64().unwrap() >= 1000.0);
    for r in &recs[1..] {
        let done = r["started_ms"].as_f64().unwrap() + r["elapsed_ms"].as_f64().unwrap();
        assert!(
            done < retry_done - 500.0,
            "{r} finished while the retry waited"
        );
    }
}

/// 500 is retried only with --retry-500; 404 never.
#[test]
fn status_500_is_retried_only_with_retry_500() {
    let server = Server::start_in_background();
    let input = format!(
        "{}\n{}\n",
        server.url("/status/500"),
        server.url("/status/404")
    );
    let args = ["--retry-base", "1ms"];
    let recs = by_seq(records(&run(&args, &input).stdout));
    assert_eq!(
        (recs[0]["attempts"].as_u64(), recs[1]["attempts"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(recs[0]["error"]["retryable"], false);
    let recs = by_seq(records(
        &run(&["--retry-base", "1ms", "--retry-500"], &input).stdout,
    ));
    assert_eq!(recs[0]["attempts"], 3);
    assert_eq!(recs[0]["error"]["retryable"], true);
    assert_eq!(recs[1]["attempts"], 1);
    let recs = by_seq(records(
        &run(&["--retries", "0"], &server.url("/status/503")).stdout,
    ));
    assert_eq!(recs[0]["attempts"], 1);
    assert_eq!(
        recs[0]["error"]["retryable"], true,
        "retryable, but no retries allowed"
    );
}
