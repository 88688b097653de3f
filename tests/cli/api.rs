//! Speaking an API's language: pacing from quota headers (each dialect, malformed ones),
//! against the loopback quota server of `api_server`.

use std::time::{Duration, Instant};

use crate::api_server::{ApiServer, Dialect};
use crate::support::{kind, records, run};

/// `n` URLs of the quota server, one a line.
fn quota_urls(server: &ApiServer, n: usize) -> String {
    (0..n)
        .map(|i| format!("{}\n", server.url(&format!("/q/{i}"))))
        .collect()
}

/// Run fetchall with `args` over `n` URLs against a quota server of 10 per second in each
/// header dialect, all four at once (each its own server); the servers and outputs.
fn in_every_dialect(
    args: &'static [&'static str],
    n: usize,
) -> Vec<(Dialect, ApiServer, std::process::Output)> {
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
                let out = run(args, &quota_urls(&server, n));
                (d, server, out)
            })
        })
        .collect();
    runs.into_iter().map(|h| h.join().unwrap()).collect()
}

/// With quota headers read (the default), a burst of URLs against a quota of 10 per second
/// gets no 429, in every dialect; every record says the pace in effect.
#[test]
fn quota_headers_pace_every_dialect_without_a_429() {
    for (d, server, out) in in_every_dialect(&["-c", "10", "--retries", "0"], 25) {
        assert!(out.status.success(), "{d:?}: {:?}", out);
        let recs = records(&out.stdout);
        assert_eq!(recs.len(), 25, "{d:?}");
        assert_eq!(server.too_many(), 0, "{d:?}: the server refused requests");
        assert!(recs.iter().all(|r| r["ok"] == true), "{d:?}");
        let paced = recs.iter().filter(|r| r["host_rate"].is_number()).count();
        assert!(paced >= 20, "{d:?}: only {paced} records carry host_rate");
    }
}

/// Against a quota below --concurrency, only the first burst (sent before any response
/// announced the budget) meets 429s, in every dialect: from then on every start, retries
/// included, spends the announced budget, and the host holds at zero until the reset (the
/// retries of that burst used to meet 429s again, window after window).
#[test]
fn a_quota_below_the_concurrency_costs_only_the_first_burst() {
    for (d, server, out) in in_every_dialect(&["-c", "30"], 40) {
        let recs = records(&out.stdout);
        assert_eq!(recs.len(), 40, "{d:?}");
        let failed: Vec<_> = recs.iter().filter(|r| r["ok"] != true).collect();
        assert!(failed.is_empty(), "{d:?}: {failed:?}");
        // 30 at once against a budget of 10: 20 refused at most, and none after them.
        assert!(server.too_many() <= 20, "{d:?}: {} 429s", server.too_many());
        assert_eq!(server.ok(), 40, "{d:?}");
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
    let lines = log
        .lines()
        .filter(|l| l.contains("quota headers say"))
        .count();
    assert!((1..=5).contains(&lines), "{lines} pacing lines:\n{log}");
}

/// `--extract`, `--assert` and `--body-filter` on each ok JSON body: real jq, each on the
/// body as received; a failed assertion keeps the extracted values.
#[test]
fn filters_extract_assert_and_reshape_the_body() {
    let server = ApiServer::start_in_background(1000, Duration::from_secs(1), Dialect::None);
    let out = run(
        &[
            "--extract",
            "n=.n",
            "--extract",
            "double=.n * 2",
            "--extract",
            "none=empty",
            "--assert",
            ".n != 3",
            "--body-filter",
            "{m: .n, odd: (.n % 2 == 1)}",
        ],
        &quota_urls(&server, 5),
    );
    let recs = crate::support::by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 5);
    for (i, r) in recs.iter().enumerate() {
        let n = i as u64;
        assert_eq!(r["extract"]["n"], n, "{r}");
        assert_eq!(r["extract"]["double"], n * 2, "{r}");
        assert!(r["extract"]["none"].is_null(), "{r}");
        if n == 3 {
            assert_eq!(kind(r), "assertion", "{r}");
            let message = r["error"]["message"].as_str().unwrap();
            assert!(
                message.contains(".n != 3") && message.contains("false"),
                "{r}"
            );
            assert_eq!(
                r["body"]["n"], 3,
                "the failed record keeps the body as received"
            );
        } else {
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["body"], serde_json::json!({"m": n, "odd": n % 2 == 1}));
            assert_eq!(r["body_encoding"], "json");
        }
    }
}

/// A filter that fails on a body, or a body that is not JSON, is that record's error (kind
/// `filter`), never the run's; a filter that does not compile is a usage error naming its
/// flag, before anything is fetched.
#[test]
fn filters_that_fail_are_record_errors_or_usage_errors() {
    let server = ApiServer::start_in_background(1000, Duration::from_secs(1), Dialect::None);
    let text = crate::server::Server::start_in_background();
    let input = format!("{}\n{}\n", server.url("/q/1"), text.url("/text"));
    let out = run(&["--extract", "k=.n|keys"], &input);
    let recs = crate::support::by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert_eq!(kind(r), "filter", "{r}");
        assert_eq!(r["ok"], false);
    }
    let message = recs[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("--extract k="), "{message}");
    assert!(
        recs[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON")
    );

    for (flag, value) in [
        ("--assert", ".items["),
        ("--body-filter", "nope_fn(1)"),
        ("--extract", "n=.["),
        ("--extract", "no name"),
    ] {
        let out = run(&[flag, value], &input);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{flag}: {err}");
    }
    assert_eq!(server.ok(), 1, "usage errors fetch nothing");
}

/// `--follow-next`: every page of every line fetched exactly once, one record per page with
/// the line's seq and a 0-based page; `--ordered` orders them by (seq, page).
#[test]
fn follow_next_fetches_every_page_once_in_order() {
    let server = ApiServer::start_in_background(1_000_000, Duration::from_secs(1), Dialect::None);
    let input: String = (0..6)
        .map(|l| format!("{}\n", server.url(&format!("/pages/{l}/0?n=5"))))
        .collect();
    let out = run(&["--follow-next", "--ordered", "-c", "4"], &input);
    assert!(out.status.success(), "{out:?}");
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 30);
    let order: Vec<(u64, u64)> = recs
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["page"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = (0..6).flat_map(|s| (0..5).map(move |p| (s, p))).collect();
    assert_eq!(order, want, "ordered by (seq, page)");
    for r in &recs {
        let (seq, page) = (r["seq"].as_u64().unwrap(), r["page"].as_u64().unwrap());
        assert_eq!(r["line"], seq + 1);
        assert_eq!(r["body"]["page"], page);
        assert!(
            r["url"]
                .as_str()
                .unwrap()
                .contains(&format!("/pages/{seq}/{page}"))
        );
    }
    let paths = server.paths();
    assert_eq!(paths.len(), 30);
    assert!(
        paths.values().all(|&n| n == 1),
        "a page fetched twice: {paths:?}"
    );
}

/// `--next` over a JSON cursor with `--next-param`; `--max-pages` bounds each line; a spec
/// line turns pagination on for itself alone.
#[test]
fn next_cursor_max_pages_and_spec_lines() {
    let server = ApiServer::start_in_background(1_000_000, Duration::from_secs(1), Dialect::None);
    let input = format!(
        "{}\n{}\n",
        server.url("/cursor/0?n=4"),
        server.url("/cursor/1?n=50")
    );
    let out = run(
        &[
            "--next",
            ".next_cursor",
            "--next-param",
            "cursor",
            "--max-pages",
            "10",
        ],
        &input,
    );
    let recs = crate::support::by_seq(records(&out.stdout));
    assert_eq!(recs.iter().filter(|r| r["seq"] == 0).count(), 4);
    assert_eq!(
        recs.iter().filter(|r| r["seq"] == 1).count(),
        10,
        "--max-pages"
    );
    assert!(recs.iter().all(|r| r["ok"] == true));

    let spec = format!(
        "{}\n{{\"url\": \"{}\", \"follow_next\": true, \"max_pages\": 3}}\n",
        server.url("/pages/7/0?n=5"),
        server.url("/pages/8/0?n=5")
    );
    let recs = records(&run(&[], &spec).stdout);
    assert_eq!(recs.iter().filter(|r| r["seq"] == 0).count(), 1);
    assert!(
        recs.iter()
            .filter(|r| r["seq"] == 0)
            .all(|r| r.get("page").is_none())
    );
    assert_eq!(recs.iter().filter(|r| r["seq"] == 1).count(), 3);
}

/// A page loop is an error record of its own kind; a page that fails mid-list is that page's
/// record, and the line's earlier pages keep theirs.
#[test]
fn page_loops_and_failures_mid_list() {
    let server = ApiServer::start_in_background(1_000_000, Duration::from_secs(1), Dialect::None);
    let input = format!(
        "{}\n{}\n",
        server.url("/pages/0/0?n=3&looped=true"),
        server.url("/pages/1/0?n=5&fail=2")
    );
    let out = run(&["--follow-next", "--retries", "0"], &input);
    assert_eq!(out.status.code(), Some(1));
    let recs = records(&out.stdout);
    let line = |seq: u64| -> Vec<&serde_json::Value> {
        let mut v: Vec<_> = recs.iter().filter(|r| r["seq"] == seq).collect();
        v.sort_by_key(|r| r["page"].as_u64());
        v
    };
    let looped = line(0);
    assert_eq!(looped.len(), 4, "{looped:?}");
    assert!(looped[..3].iter().all(|r| r["ok"] == true));
    assert_eq!(kind(looped[3]), "page_loop");
    assert_eq!(looped[3]["page"], 3);
    let failed = line(1);
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[..2].iter().all(|r| r["ok"] == true));
    assert_eq!(
        (failed[2]["status"].as_u64(), kind(failed[2])),
        (Some(500), "http_status")
    );
    assert_eq!(
        server.paths().values().sum::<usize>(),
        3 + 3,
        "nothing fetched twice"
    );
}
