//! The gate's guarantees: the in-flight cap and the rate bound, measured at the server.

use std::time::{Duration, Instant};

use crate::server::{Server, max_in_window};
use crate::support::{max_in_window_f, records, run};

#[test]
fn in_flight_cap_is_reached_and_never_exceeded() {
    for cap in [1usize, 4, 16] {
        let server = Server::start_in_background();
        let input: String = (0..cap * 4)
            .map(|_| server.url("/delay/150") + "\n")
            .collect();
        let out = run(&["-c", &cap.to_string(), "--body", "none"], &input);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(records(&out.stdout).len(), cap * 4);
        assert_eq!(server.max_in_flight(), cap, "cap {cap}");
    }
}

/// With `--rate R --burst B`, no window of W seconds sees more than B + R*W request starts.
#[test]
fn rate_bound_holds_in_every_window() {
    let (rate, burst, n) = (40.0, 3usize, 60usize);
    let server = Server::start_in_background();
    let input: String = (0..n)
        .map(|i| server.url(&format!("/item/{i}")) + "\n")
        .collect();
    let started = Instant::now();
    let out = run(
        &[
            "-c", "16", "--rate", "40/s", "--burst", "3", "--body", "none",
        ],
        &input,
    );
    let wall = started.elapsed();
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), n);

    // Client side, where the limiter acts: the exact bound.
    let starts = crate::support::start_times(&recs);
    // Server side, after the network: allow for loopback scheduling jitter.
    let arrivals = server.arrivals("/item/");
    assert_eq!(arrivals.len(), n);
    for w in [0.1, 0.25, 0.5, 1.0] {
        let bound = burst as f64 + rate * w;
        let client_max = max_in_window_f(&starts, w);
        assert!(
            client_max as f64 <= bound,
            "W={w}: {client_max} starts > {bound}"
        );
        let server_max = max_in_window(&arrivals, Duration::from_secs_f64(w));
        let loose = burst as f64 + rate * (w + crate::support::ARRIVAL_JITTER);
        assert!(
            server_max as f64 <= loose,
            "W={w}: {server_max} arrivals > {loose}"
        );
    }
    // And the limiter really limits: n requests need at least (n - B) / R seconds.
    let least = (n - burst) as f64 / rate;
    assert!(
        starts[n - 1] - starts[0] >= least * 0.99,
        "span {} < {least}",
        starts[n - 1] - starts[0]
    );
    assert!(wall.as_secs_f64() >= least);
}

/// Strict pacing: with `--burst 1`, no window of W seconds holds more than 1 + R*W starts, at
/// slow and fast rates alike (the fast ones are where a late timer used to be made up by
/// starting two at once, or not at all). Counts only: how close the mean comes to R is the
/// benchmark's business (bench/rate.sh).
#[test]
fn strict_pacing_bound_holds_at_every_rate() {
    for (rate, n) in [(50.0, 16usize), (500.0, 120), (2000.0, 500)] {
        let server = Server::start_in_background();
        let input: String = (0..n)
            .map(|i| server.url(&format!("/item/{i}")) + "\n")
            .collect();
        let rate_arg = format!("{rate}/s");
        let out = run(
            &[
                "-c", "16", "--rate", &rate_arg, "--burst", "1", "--body", "none",
            ],
            &input,
        );
        assert_eq!(out.status.code(), Some(0));
        let recs = records(&out.stdout);
        assert_eq!(recs.len(), n);
        let starts = crate::support::start_times(&recs);
        let arrivals = server.arrivals("/item/");
        assert_eq!(arrivals.len(), n);
        let t = 1.0 / rate;
        // Windows of half an interval (one start at most), 2.5 intervals, and longer ones.
        for w in [0.5 * t, 2.5 * t, 0.05, 0.25] {
            let bound = 1.0 + rate * w;
            let client_max = max_in_window_f(&starts, w);
            assert!(
                client_max as f64 <= bound,
                "{rate}/s, W={w}: {client_max} starts > {bound}"
            );
            // At the server, after loopback: scheduling jitter, as above.
            let server_max = max_in_window(&arrivals, Duration::from_secs_f64(w));
            let loose = 1.0 + rate * (w + crate::support::ARRIVAL_JITTER);
            assert!(
                server_max as f64 <= loose,
                "{rate}/s, W={w}: {server_max} arrivals > {loose}"
            );
        }
        // And every start waited its turn: n starts span at least n - 1 intervals.
        let least = (n - 1) as f64 * t;
        let span = starts[n - 1] - starts[0];
        assert!(span >= least - 2e-6, "{rate}/s: span {span} < {least}");
    }
}

/// Stacked quotas: every one of them applies.
#[test]
fn stacked_rates_all_apply() {
    let server = Server::start_in_background();
    let input: String = (0..12)
        .map(|i| server.url(&format!("/item/{i}")) + "\n")
        .collect();
    // 1000/s alone would finish at once; 20/s with burst 2 spreads 12 starts over >= 0.5 s.
    let out = run(
        &[
            "--rate", "1000/s", "--rate", "20/s", "--burst", "2", "--body", "none",
        ],
        &input,
    );
    let mut starts: Vec<f64> = records(&out.stdout)
        .iter()
        .map(|r| r["started_ms"].as_f64().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    assert!(starts[11] - starts[0] >= 500.0 * 0.99, "{starts:?}");
    assert!(max_in_window_f(&starts.iter().map(|s| s / 1000.0).collect::<Vec<_>>(), 0.25) <= 7);
}
