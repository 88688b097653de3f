//! Every fault becomes exactly one honest record, in bounded time and memory.

use std::collections::HashMap;

use serde_json::Value;

use crate::fault_server::{BOMB_SIZE, FaultServer, gzip_bomb, gzip_zeros};
use crate::server::refused_port;
use crate::support::{kind, records, run_measured};

/// What a fault must produce: kind ("" for ok), attempts, and the most seconds it may take.
struct Want {
    kind: &'static str,
    attempts: u64,
    max_secs: f64,
}

const fn want(kind: &'static str, attempts: u64, max_secs: f64) -> Want {
    Want {
        kind,
        attempts,
        max_secs,
    }
}

#[test]
fn every_fault_is_one_record_of_the_right_kind() {
    let server = FaultServer::start();
    // A Retry-After pauses its host's whole queue (docs/rate-limiting.md), so each case that
    // sends one gets a host (a port) of its own, and does not hold up the others.
    let (s429, s429_date, s429_long) = (
        FaultServer::start(),
        FaultServer::start(),
        FaultServer::start(),
    );
    // Timeouts: 600 ms whole request, 300 ms idle; 2 retries after 10-20 ms.
    let args = [
        "--timeout",
        "600ms",
        "--read-timeout",
        "300ms",
        "--connect-timeout",
        "1s",
        "--retries",
        "2",
        "--retry-base",
        "10ms",
        "--retry-cap",
        "20ms",
        "--max-body",
        "1MiB",
        "-c",
        "32",
    ];
    let refused = format!("http://127.0.0.1:{}/", refused_port());
    let cases: Vec<(String, Want)> = vec![
        // Idle timeouts: retried, each attempt cut after 300 ms.
        (server.url("/stall-headers"), want("timeout", 3, 3.0)),
        (server.url("/stall-body"), want("timeout", 3, 3.0)),
        // One byte every 200 ms never trips the idle timeout; the whole-request one cuts it.
        (server.url("/trickle"), want("timeout", 3, 4.0)),
        (server.url("/endless"), want("too_large", 1, 3.0)),
        (server.url("/short"), want("body", 3, 2.0)),
        (server.url("/reset"), want("body", 3, 2.0)),
        (server.url("/garbage"), want("protocol", 1, 2.0)),
        (server.url("/big-header"), want("protocol", 1, 2.0)),
        (server.url("/loop"), want("redirect", 1, 2.0)),
        (server.url("/bad-gzip"), want("decode", 1, 2.0)),
        (server.url("/bomb"), want("too_large", 1, 4.0)),
        (server.url("/latin1"), want("", 1, 2.0)),
        (s429.url("/429-seconds?n=all"), want("", 2, 3.0)),
        (s429_date.url("/429-date?n=all"), want("", 2, 4.0)),
        (
            s429_long.url("/429-long?n=all"),
            want("http_status", 1, 2.0),
        ),
        (server.url("/503-twice?n=all"), want("", 3, 2.0)),
        (refused.clone(), want("connect", 3, 2.0)),
        ("http://nowhere.invalid/".to_owned(), want("dns", 1, 2.0)),
    ];
    let input: String = cases.iter().map(|(u, _)| format!("{u}\n")).collect();
    let out = run_measured(&args, &input);
    assert_eq!(
        out.code,
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), cases.len(), "exactly one record per line");
    let by_url: HashMap<&str, &Value> = recs
        .iter()
        .map(|r| (r["url"].as_str().unwrap(), r))
        .collect();
    let mut wrong = Vec::new();
    for (url, w) in &cases {
        let r = by_url[url.as_str()];
        let secs = r["elapsed_ms"].as_f64().unwrap() / 1000.0;
        if kind(r) != w.kind || r["attempts"] != w.attempts || secs > w.max_secs {
            wrong.push(format!(
                "{url}: want {} x{} <= {}s, got {r}",
                w.kind, w.attempts, w.max_secs
            ));
        }
        if let Some(e) = r.get("error") {
            // The earlier attempts' errors are listed, and the last one says it was retryable.
            let previous = e.get("previous").map_or(0, |p| p.as_array().unwrap().len());
            assert_eq!(previous as u64, w.attempts - 1, "{r}");
            assert_eq!(
                e["retryable"],
                w.attempts > 1 || w.kind == "http_status",
                "{r}"
            );
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    eprintln!(
        "{} faults: peak RSS {} MiB, {:?}",
        cases.len(),
        out.max_rss_kib / 1024,
        out.wall
    );

    let r = |path: &str| by_url[server.url(path).as_str()];
    // The two timeouts say which one fired.
    let message = |r: &Value| r["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message(r("/stall-headers")).contains("--read-timeout"),
        "{}",
        message(r("/stall-headers"))
    );
    assert!(
        message(r("/trickle")).contains("--timeout"),
        "{}",
        message(r("/trickle"))
    );
    // A trickle is cut by the whole-request timeout, not read to its end: 3 attempts of
    // 600 ms, each getting about 3 bytes of 1000.
    assert!(r("/trickle")["elapsed_ms"].as_f64().unwrap() >= 3.0 * 600.0);
    // Retry-After is honoured: the retry came after the server's wait.
    assert!(
        by_url[s429.url("/429-seconds?n=all").as_str()]["elapsed_ms"]
            .as_f64()
            .unwrap()
            >= 1000.0
    );
    assert!(
        by_url[s429_date.url("/429-date?n=all").as_str()]["elapsed_ms"]
            .as_f64()
            .unwrap()
            >= 500.0
    );
    // Past --max-retry-wait (60s by default), the record fails stating the server's wait.
    let long = message(by_url[s429_long.url("/429-long?n=all").as_str()]);
    assert!(
        long.contains("1h") && long.contains("--max-retry-wait"),
        "{long}"
    );
    assert_eq!(
        by_url[s429_long.url("/429-long?n=all").as_str()]["status"],
        429
    );
    assert_eq!(s429_long.hits("/429-long?n=all"), 1);
    assert_eq!(server.hits("/503-twice?n=all"), 3);
    // A Latin-1 body is not UTF-8: kept byte for byte, as base64.
    assert_eq!(r("/latin1")["body"], "Y2Fm6Q==");
    assert_eq!(r("/latin1")["body_encoding"], "base64");
    // The bomb stopped at the limit, counted in decompressed bytes.
    let bomb_bytes = r("/bomb")["bytes"].as_u64().unwrap();
    assert!(bomb_bytes > 1 << 20 && bomb_bytes < 2 << 20, "{bomb_bytes}");
    assert!(
        out.max_rss_kib < 200 * 1024,
        "peak RSS {} KiB",
        out.max_rss_kib
    );
}

/// A 1 MiB gzip that inflates to 1 GiB fails fast as too_large, with memory near --max-body
/// (default 10 MiB), not near 1 GiB; so does an endless chunked body.
#[test]
fn memory_stays_bounded_on_bombs_and_endless_bodies() {
    let server = FaultServer::start();
    assert!(gzip_bomb().len() < 2 << 20, "{}", gzip_bomb().len());
    let input = format!(
        "{}\n{}\n{}\n",
        server.url("/bomb"),
        server.url("/endless"),
        server.url("/bomb")
    );
    let out = run_measured(&["--timeout", "20s"], &input);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(kind(r), "too_large", "{r}");
        assert!(r["bytes"].as_u64().unwrap() < 11 << 20, "{r}");
    }
    assert!(out.wall.as_secs_f64() < 10.0, "{:?}", out.wall);
    // Three bodies of at most 10 MiB each, plus the program: nowhere near the 1 GiB.
    let peak_mib = out.max_rss_kib / 1024;
    eprintln!(
        "bombs and endless body: peak RSS {peak_mib} MiB, {:?}",
        out.wall
    );
    assert!(
        peak_mib < 120,
        "peak RSS {peak_mib} MiB for a {BOMB_SIZE}-byte bomb"
    );
}

/// The bomb is a real gzip file (checked here on a smaller one built the same way).
#[test]
fn the_test_bomb_is_valid_gzip() {
    use std::io::Read;
    let gz = gzip_zeros(8 << 20);
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated.len(), 8 << 20);
    assert!(inflated.iter().all(|&b| b == 0));
}
