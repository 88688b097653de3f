//! The loopback HTTP server the tests talk to: real HTTP on 127.0.0.1:0, real sockets.
//!
//! It counts requests, tracks how many are in flight (and the most at once), and records the
//! arrival time of each request, so tests can assert the guarantees fetchall makes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

#[derive(Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub arrivals: Mutex<Vec<(Instant, String)>>,
}

pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Server {
    pub async fn start() -> Server {
        let stats = Arc::new(Stats::default());
        let app = Router::new()
            .route(
                "/ok",
                get(|| async { axum::Json(serde_json::json!({ "ok": true })) }),
            )
            .route(
                "/item/{n}",
                get(|Path(n): Path<u64>| async move { axum::Json(serde_json::json!({ "n": n })) }),
            )
            .route("/delay/{ms}", get(delay))
            .route("/status/{code}", get(status))
            .route(
                "/text",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        "héllo wörld",
                    )
                }),
            )
            .route(
                "/bin",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/octet-stream")],
                        vec![0u8, 159, 255, 10],
                    )
                }),
            )
            .route(
                "/big/{n}",
                get(|Path(n): Path<usize>| async move { "x".repeat(n) }),
            )
            .route(
                "/redirect-loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/redirect-loop")]) }),
            )
            .route(
                "/redirect-to-ok",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]) }),
            )
            .route("/echo", any(echo))
            .route("/gzip", get(gzip))
            .route(
                "/cookies",
                get(|| async {
                    let mut headers = HeaderMap::new();
                    headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
                    headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
                    (headers, "two cookies")
                }),
            )
            .route("/auth", get(auth))
            .route("/headers", get(echo_headers))
            .route(
                "/redirect",
                get(
                    |axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, String>,
                    >| async move {
                        let to = q.get("to").cloned().unwrap_or_else(|| "/ok".to_owned());
                        (StatusCode::FOUND, [(header::LOCATION, to)])
                    },
                ),
            )
            .route(
                "/list/{page}",
                get(|Path(page): Path<u64>| async move {
                    // Three pages of two items, linked by `Link: <...>; rel="next"`.
                    let mut headers = HeaderMap::new();
                    if page < 2 {
                        let link = format!("<{}>; rel=\"next\"", page + 1);
                        headers.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
                    }
                    let items = serde_json::json!({ "items": [page * 2, page * 2 + 1] });
                    (headers, axum::Json(items))
                }),
            )
            .layer(middleware::from_fn_with_state(Arc::clone(&stats), track))
            .with_state(());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Server { addr, stats }
    }

    /// Start the server on a runtime of its own thread, for tests that run the binary.
    pub fn start_in_background() -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tx.send(Server::start().await).unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn max_in_flight(&self) -> usize {
        self.stats.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Arrival times of requests whose path starts with `prefix`, sorted.
    pub fn arrivals(&self, prefix: &str) -> Vec<Instant> {
        let mut v: Vec<Instant> = self
            .stats
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p.starts_with(prefix))
            .map(|(t, _)| *t)
            .collect();
        v.sort();
        v
    }
}

async fn track(State(stats): State<Arc<Stats>>, req: Request, next: Next) -> Response {
    stats
        .arrivals
        .lock()
        .unwrap()
        .push((Instant::now(), req.uri().path().to_owned()));
    stats.requests.fetch_add(1, Ordering::SeqCst);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = next.run(req).await;
    stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// The request's headers as a JSON object (lower-case names).
async fn echo_headers(headers: axum::http::HeaderMap) -> impl IntoResponse {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    axum::Json(serde_json::Value::Object(map))
}

async fn delay(Path(ms): Path<u64>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    axum::Json(serde_json::json!({ "slept_ms": ms }))
}

async fn status(Path(code): Path<u16>) -> impl IntoResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(serde_json::json!({ "status": code })))
}

/// Describe the request as JSON: method, URI as received (absolute through a proxy), headers
/// (repeated ones as a list), body.
async fn echo(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for name in parts.headers.keys() {
        let values: Vec<serde_json::Value> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
            .collect();
        headers.insert(name.as_str().to_owned(), values.into());
    }
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// A gzip-encoded JSON body, whatever the client asked for.
async fn gzip() -> impl IntoResponse {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(br#"{"zipped": true, "pad": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#)
        .unwrap();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CONTENT_ENCODING, "gzip"),
        ],
        enc.finish().unwrap(),
    )
}

/// 200 with a bearer token of `s3cret`, 401 without.
async fn auth(headers: HeaderMap) -> impl IntoResponse {
    match headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) {
        Some(b"Bearer s3cret") => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"user": "alice"})),
        ),
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"error": "no token"})),
        ),
    }
}

/// The most items of sorted `times` that fall in any window of length `window`.
pub fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi].duration_since(times[lo]) > window {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// A loopback port with nothing listening on it.
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
