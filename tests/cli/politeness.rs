//! Politeness: per-host limits, no head-of-line blocking, pushback. Several loopback servers
//! on different ports are several hosts (a host is scheme + host + port).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::server::{Server, max_in_window};
use crate::support::{max_in_window_f, records, run};

/// Loopback scheduling jitter allowed between a start and its arrival at the server.
const JITTER: f64 = crate::support::ARRIVAL_JITTER;

/// Start times (s) of the records whose URL starts with `prefix`, sorted.
fn starts(recs: &[Value], prefix: &str) -> Vec<f64> {
    let mut v: Vec<f64> = recs
        .iter()
        .filter(|r| r["url"].as_str().unwrap().starts_with(prefix))
        .map(|r| r["started_ms"].as_f64().unwrap() / 1000.0)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// `burst + rate*W` exactly at the client, with jitter slack at the server.
fn assert_bound(name: &str, starts: &[f64], arrivals: &[Instant], rate: f64, burst: usize) {
    for w in [0.0, 0.05, 0.1, 0.25, 0.5, 1.0] {
        let bound = burst as f64 + rate * w;
        let got = max_in_window_f(starts, w);
        assert!(got as f64 <= bound, "{name} W={w}: {got} starts > {bound}");
        let loose = burst as f64 + rate * (w + JITTER);
        let got = max_in_window(arrivals, Duration::from_secs_f64(w));
        assert!(
            got as f64 <= loose,
            "{name} W={w}: {got} arrivals > {loose}"
        );
    }
}

/// Three hosts, each limited to 10/s (burst 2), all together to 25/s (burst 3): every
/// per-host and the global bound hold in every window, and the global one is reached.
#[test]
fn per_host_and_global_bounds_hold_together() {
    let servers: Vec<Server> = (0..3).map(|_| Server::start_in_background()).collect();
    let n = 20;
    let input: String = (0..n)
        .flat_map(|i| {
            servers
                .iter()
                .map(move |s| s.url(&format!("/item/{i}")) + "\n")
        })
        .collect();
    let out = run(
        &[
            "-c",
            "16",
            "--rate",
            "25/s",
            "--per-host-rate",
            "10/s",
            "--burst",
            "3",
            "--body",
            "none",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(0));
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 3 * n);

    // --burst applies to every quota: per host 3 + 10*W, all together 3 + 25*W.
    let mut all_arrivals = Vec::new();
    for s in &servers {
        let st = starts(&recs, &s.url("/"));
        let arr = s.arrivals("/item/");
        assert_eq!(arr.len(), n);
        assert_bound(&s.url("/"), &st, &arr, 10.0, 3);
        all_arrivals.extend(arr);
    }
    all_arrivals.sort();
    let all = starts(&recs, "http://");
    assert_bound("global", &all, &all_arrivals, 25.0, 3);
    // The global quota is the binding one: 60 starts need at least (60 - 3) / 25 s.
    let span = all[all.len() - 1] - all[0];
    assert!(span >= 57.0 / 25.0 * 0.99, "span {span}");
    assert!(
        span <= 57.0 / 25.0 + 0.5,
        "span {span}: the limits slowed down more than they must"
    );
}

/// Stacked per-host quotas all apply: 100/s alone would be instant, 10/s with burst 2 is not.
#[test]
fn stacked_per_host_rates_all_apply() {
    let server = Server::start_in_background();
    let input: String = (0..12)
        .map(|i| server.url(&format!("/item/{i}")) + "\n")
        .collect();
    let out = run(
        &[
            "--per-host-rate",
            "100/s",
            "--per-host-rate",
            "10/s",
            "--burst",
            "2",
            "--body",
            "none",
        ],
        &input,
    );
    let recs = records(&out.stdout);
    let st = starts(&recs, "http://");
    assert_eq!(st.len(), 12);
    assert!(st[11] - st[0] >= 1.0 * 0.99, "{st:?}");
    assert_bound("host", &st, &server.arrivals("/item/"), 10.0, 2);
}

/// A host limited to 5/s with 20 URLs (about 4 s of work) interleaved with 20 URLs of four
/// other hosts: the others finish at their own pace (about 1 s), not the slow host's.
#[test]
fn a_slow_host_does_not_hold_up_the_others() {
    let slow = Server::start_in_background();
    let others: Vec<Server> = (0..4).map(|_| Server::start_in_background()).collect();
    let mut input = String::new();
    for i in 0..20 {
        input += &(slow.url(&format!("/item/{i}")) + "\n");
        input += &(others[i % 4].url(&format!("/item/{i}")) + "\n");
    }
    let out = run(
        &["--per-host-rate", "5/s", "-c", "8", "--body", "none"],
        &input,
    );
    assert_eq!(out.status.code(), Some(0));
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 40);
    let slow_starts = starts(&recs, &slow.url("/"));
    let mut other_starts: Vec<f64> = others
        .iter()
        .flat_map(|s| starts(&recs, &s.url("/")))
        .collect();
    other_starts.sort_by(f64::total_cmp);
    // The slow host: 19 intervals of 200 ms.
    assert!(
        slow_starts[19] - slow_starts[0] >= 3.8 * 0.99,
        "{slow_starts:?}"
    );
    // Each other host has 5 URLs: 4 intervals, 0.8 s. In input order behind the slow host
    // they would take as long as it does.
    let last_other = other_starts[19];
    assert!(
        last_other < 0.8 + 0.6,
        "the other hosts' last start at {last_other:.2}s, the slow host's at {:.2}s",
        slow_starts[19]
    );
}

/// The same with the slow host slow because it is slow, not rate-limited: with one request
/// at a time per host and 400 ms responses, the others still run at full speed.
#[test]
fn per_host_concurrency_caps_each_host_and_others_pass() {
    let slow = Server::start_in_background();
    let fast = Server::start_in_background();
    let mut input = String::new();
    for i in 0..8 {
        input += &(slow.url("/delay/400") + "\n");
        input += &(fast.url(&format!("/item/{i}")) + "\n");
        input += &(fast.url("/delay/50") + "\n");
    }
    let started = Instant::now();
    let out = run(
        &["--per-host-concurrency", "2", "-c", "10", "--body", "none"],
        &input,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(records(&out.stdout).len(), 24);
    assert_eq!(slow.max_in_flight(), 2, "slow host");
    assert_eq!(fast.max_in_flight(), 2, "fast host");
    // 8 slow requests two at a time: at least 1.6 s; the fast host's 16 requests are done
    // within about 0.5 s of the start.
    assert!(started.elapsed() >= Duration::from_millis(1600));
    let fast_arrivals = fast.arrivals("/");
    let slow_arrivals = slow.arrivals("/");
    let first = slow_arrivals[0].min(fast_arrivals[0]);
    let fast_last = fast_arrivals[15].duration_since(first);
    assert!(
        fast_last < Duration::from_millis(900),
        "fast host's last arrival {fast_last:?}"
    );
}

/// A test server that pushes back: `/limit/{n}/{retry_after}` answers 429 to its first `n`
/// requests (with `Retry-After: retry_after` unless it is `none`), 200 after that.
pub(crate) struct Pushy {
    addr: SocketAddr,
    state: Arc<PushyState>,
}

#[derive(Default)]
struct PushyState {
    hits: Mutex<HashMap<String, u32>>,
    arrivals: Mutex<Vec<Instant>>,
}

impl Pushy {
    pub(crate) fn start() -> Pushy {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let state = Arc::new(PushyState::default());
                let app = Router::new()
                    .route("/limit/{n}/{retry_after}/{id}", get(limited))
                    .with_state(Arc::clone(&state));
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send((listener.local_addr().unwrap(), state)).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let (addr, state) = rx.recv().unwrap();
        Pushy { addr, state }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub(crate) fn arrivals(&self) -> Vec<Instant> {
        let mut v = self.state.arrivals.lock().unwrap().clone();
        v.sort();
        v
    }
}

async fn limited(
    State(state): State<Arc<PushyState>>,
    Path((n, retry_after, _id)): Path<(u32, String, u32)>,
) -> Response {
    state.arrivals.lock().unwrap().push(Instant::now());
    let key = format!("{n}/{retry_after}");
    let seen = {
        let mut hits = state.hits.lock().unwrap();
        let e = hits.entry(key).or_insert(0);
        *e += 1;
        *e
    };
    if seen > n {
        return (StatusCode::OK, "ok").into_response();
    }
    if retry_after == "none" {
        return (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response();
    }
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, retry_after)],
        "slow down",
    )
        .into_response()
}

/// `429 Retry-After: 1` once: that host's next request arrives at least 1 s later, while
/// another host keeps going meanwhile. The refused request is retried (at the front of its
/// host's queue) and succeeds.
#[test]
fn retry_after_pauses_that_host_only() {
    let pushy = Pushy::start();
    let other = Server::start_in_background();
    let mut input = String::new();
    for i in 0..5 {
        input += &(pushy.url(&format!("/limit/1/1/{i}")) + "\n");
    }
    for i in 0..15 {
        input += &(other.url(&format!("/item/{i}")) + "\n");
    }
    let out = run(
        &[
            "--per-host-concurrency",
            "1",
            "--per-host-rate",
            "10/s",
            "--body",
            "none",
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(0));
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 20);
    let retried: Vec<&Value> = recs.iter().filter(|r| r["attempts"] != 1).collect();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0]["attempts"], 2);
    let arr = pushy.arrivals();
    assert_eq!(arr.len(), 6, "five requests and one retry");
    let gap = arr[1].duration_since(arr[0]);
    assert!(gap >= Duration::from_millis(1000), "resumed after {gap:?}");
    // The other host is not paused: it goes on at 10/s during the pause.
    let others = other.arrivals("/item/");
    let during = others
        .iter()
        .filter(|t| **t > arr[0] && **t < arr[1])
        .count();
    assert!(
        during >= 7,
        "only {during} arrivals at the other host during the pause"
    );
}

/// `--adaptive`: every 429 halves the host's rate, successes raise it again; records carry
/// `host_rate`, and the host's arrivals are spaced by the cut rate.
#[test]
fn adaptive_cuts_on_429_and_recovers() {
    let pushy = Pushy::start();
    let input: String = (0..8)
        .map(|i| pushy.url(&format!("/limit/3/none/{i}")) + "\n")
        .collect();
    let out = run(
        &[
            "--adaptive",
            "--retries",
            "0",
            "--per-host-rate",
            "40/s",
            "--per-host-concurrency",
            "1",
            "--body",
            "none",
            "-v",
        ],
        &input,
    );
    let mut recs = records(&out.stdout);
    recs.sort_by(|a, b| {
        a["started_ms"]
            .as_f64()
            .unwrap()
            .total_cmp(&b["started_ms"].as_f64().unwrap())
    });
    let rates: Vec<f64> = recs
        .iter()
        .map(|r| r["host_rate"].as_f64().unwrap())
        .collect();
    assert_eq!(&rates[..3], &[20.0, 10.0, 5.0], "{rates:?}");
    // Five successes, +0.05/s each.
    assert!((rates[7] - 5.25).abs() < 1e-9, "{rates:?}");
    // After the third cut, requests are at least 1/5 s apart.
    let arr = pushy.arrivals();
    for w in arr[3..].windows(2) {
        let gap = w[1].duration_since(w[0]).as_secs_f64();
        assert!(gap >= 1.0 / 5.25 - JITTER, "gap {gap}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("adaptive rate cut to 5.00/s"), "{stderr}");
}

/// The case at scale: 1,000 URLs of one host interleaved with 1,000 URLs of 50 other
/// hosts, every host limited to 10/s. The slow host needs 100 s; the others (20 URLs each)
/// need 2 s and must get them, not the slow host's pace. The run is stopped once the others
/// are done.
#[test]
fn a_thousand_slow_urls_do_not_hold_up_a_thousand_others() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (slow, others) = rt.block_on(async {
        let slow = Server::start().await;
        let mut others = Vec::new();
        for _ in 0..50 {
            others.push(Server::start().await);
        }
        (slow, others)
    });
    let mut input = String::new();
    for i in 0..1000 {
        input += &(slow.url(&format!("/item/{i}")) + "\n");
        input += &(others[i % 50].url(&format!("/item/{i}")) + "\n");
    }
    let slow_prefix = slow.url("/");
    let started = Instant::now();
    let mut child = crate::support::fetchall()
        .args(["--per-host-rate", "10/s", "-c", "64", "--body", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let (mut done_others, mut done_slow) = (0, 0);
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let record: Value = serde_json::from_str(&line.unwrap()).unwrap();
        crate::support::validate(&record);
        assert_eq!(record["ok"], true, "{record}");
        if record["url"].as_str().unwrap().starts_with(&slow_prefix) {
            done_slow += 1;
        } else {
            done_others += 1;
            if done_others == 1000 {
                break;
            }
        }
    }
    let took = started.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    let _ = writer.join();
    assert_eq!(done_others, 1000);
    // 2 s of work for the others (19 intervals of 100 ms per host); generous for a slow box.
    assert!(
        took < Duration::from_secs(6),
        "the other hosts took {took:?}"
    );
    // And the slow host kept its own pace meanwhile: at most burst + 10/s.
    let bound = 1.0 + 10.0 * took.as_secs_f64();
    assert!(
        f64::from(done_slow) <= bound,
        "{done_slow} slow records in {took:?}"
    );
    drop(rt);
}

/// The global cap holds over hosts: `127.0.0.1:P` and `localhost:P` are two hosts of one
/// server, each allowed 2 in flight, all together 3.
#[test]
fn global_concurrency_caps_the_per_host_caps_together() {
    let server = Server::start_in_background();
    let port = server.addr.port();
    let input: String = (0..8)
        .flat_map(|_| {
            [
                format!("http://127.0.0.1:{port}/delay/150\n"),
                format!("http://localhost:{port}/delay/150\n"),
            ]
        })
        .collect();
    let out = run(
        &["-c", "3", "--per-host-concurrency", "2", "--body", "none"],
        &input,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(records(&out.stdout).len(), 16);
    assert_eq!(server.max_in_flight(), 3);
}
