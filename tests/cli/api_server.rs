//! A loopback API server for the API tests and `bench/api.sh` (through
//! `examples/api_server.rs`, which includes this file): a quota that answers 429 past its
//! budget and announces the budget in one header dialect, and paginated lists (by `Link`
//! header and by JSON cursor) that count how often each page is fetched.
//!
//! The quota is `quota` requests per fixed window of `window`, counted over all clients (each
//! test or bench run is the one client of its server). Windows start when the server does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// How the quota server announces its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Dialect {
    /// `RateLimit-Policy: "default";q=N;w=W` and `RateLimit: "default";r=R;t=T`.
    Ietf,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (delta seconds).
    Triple,
    /// `X-RateLimit-*` with Reset in seconds from now.
    XDelta,
    /// `X-RateLimit-*` with Reset as a Unix time.
    XEpoch,
    /// No quota headers at all (429 past the budget, with Retry-After).
    None,
}

impl Dialect {
    #[allow(dead_code)]
    pub fn parse(s: &str) -> Option<Dialect> {
        Some(match s {
            "ietf" => Dialect::Ietf,
            "triple" => Dialect::Triple,
            "x-delta" => Dialect::XDelta,
            "x-epoch" => Dialect::XEpoch,
            "none" => Dialect::None,
            _ => return None,
        })
    }
}

struct Quota {
    quota: usize,
    window: Duration,
    dialect: Dialect,
    start: Instant,
    /// (window index, requests counted in it)
    used: Mutex<(u64, usize)>,
}

#[derive(Default)]
pub struct ApiStats {
    pub ok: AtomicUsize,
    pub too_many: AtomicUsize,
    /// Requests per path (query included), for "each page exactly once".
    pub paths: Mutex<HashMap<String, usize>>,
    /// Quota windows in which at least one request was accepted (a run that uses each
    /// window's whole budget needs the fewest).
    pub windows: AtomicUsize,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    pub stats: Arc<ApiStats>,
}

struct App {
    quota: Quota,
    stats: Arc<ApiStats>,
}

impl ApiServer {
    pub async fn start(quota: usize, window: Duration, dialect: Dialect) -> ApiServer {
        let stats = Arc::new(ApiStats::default());
        let app = Arc::new(App {
            quota: Quota {
                quota,
                window,
                dialect,
                start: Instant::now(),
                used: Mutex::new((0, 0)),
            },
            stats: Arc::clone(&stats),
        });
        let router = Router::new()
            .route("/q/{n}", get(quota_item))
            .route("/pages/{line}/{page}", get(link_page))
            .route("/cursor/{line}", get(cursor_page))
            .route("/weird/{kind}/{n}", get(weird))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        ApiServer { addr, stats }
    }

    /// Start it on a runtime of its own thread, for tests that run the binary.
    #[allow(dead_code)]
    pub fn start_in_background(quota: usize, window: Duration, dialect: Dialect) -> ApiServer {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                tx.send(ApiServer::start(quota, window, dialect).await)
                    .unwrap();
                std::future::pending::<()>().await;
            });
        });
        rx.recv().unwrap()
    }

    #[allow(dead_code)]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    #[allow(dead_code)]
    pub fn too_many(&self) -> usize {
        self.stats.too_many.load(Ordering::SeqCst)
    }

    #[allow(dead_code)]
    pub fn ok(&self) -> usize {
        self.stats.ok.load(Ordering::SeqCst)
    }

    /// Quota windows that accepted at least one request.
    #[allow(dead_code)]
    pub fn windows(&self) -> usize {
        self.stats.windows.load(Ordering::SeqCst)
    }

    /// How many times each path was fetched.
    #[allow(dead_code)]
    pub fn paths(&self) -> HashMap<String, usize> {
        self.stats.paths.lock().unwrap().clone()
    }
}

fn count_path(app: &App, path: String) {
    *app.stats.paths.lock().unwrap().entry(path).or_default() += 1;
}

/// One request against the quota: 200 `{"n": n}` within the budget, 429 past it; the
/// budget's headers either way.
async fn quota_item(State(app): State<Arc<App>>, Path(n): Path<u64>) -> Response {
    let q = &app.quota;
    let elapsed = q.start.elapsed();
    let index = (elapsed.as_nanos() / q.window.as_nanos()) as u64;
    let window_end = q.start + q.window * (index as u32 + 1);
    let (allowed, remaining) = {
        let mut used = q.used.lock().unwrap();
        if used.0 != index {
            *used = (index, 0);
        }
        let allowed = used.1 < q.quota;
        if allowed {
            if used.1 == 0 {
                app.stats.windows.fetch_add(1, Ordering::SeqCst);
            }
            used.1 += 1;
        }
        (allowed, q.quota - used.1)
    };
    let left = window_end.saturating_duration_since(Instant::now());
    // Whole seconds, rounded up (a server that rounds down invites an early retry).
    let reset = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).unwrap(),
        );
    };
    let (quota, window) = (q.quota, q.window.as_secs().max(1));
    match q.dialect {
        Dialect::Ietf => {
            put(
                "ratelimit-policy",
                format!("\"default\";q={quota};w={window}"),
            );
            put("ratelimit", format!("\"default\";r={remaining};t={reset}"));
        }
        Dialect::Triple => {
            put("ratelimit-limit", quota.to_string());
            put("ratelimit-remaining", remaining.to_string());
            put("ratelimit-reset", reset.to_string());
        }
        Dialect::XDelta | Dialect::XEpoch => {
            put("x-ratelimit-limit", quota.to_string());
            put("x-ratelimit-remaining", remaining.to_string());
            let value = if q.dialect == Dialect::XEpoch {
                let at = SystemTime::now() + left;
                let secs = at.duration_since(UNIX_EPOCH).unwrap();
                secs.as_secs() + u64::from(secs.subsec_nanos() > 0)
            } else {
                reset
            };
            put("x-ratelimit-reset", value.to_string());
        }
        Dialect::None => {}
    }
    if !allowed {
        app.stats.too_many.fetch_add(1, Ordering::SeqCst);
        put("retry-after", reset.max(1).to_string());
        return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down").into_response();
    }
    app.stats.ok.fetch_add(1, Ordering::SeqCst);
    (headers, axum::Json(serde_json::json!({ "n": n }))).into_response()
}

#[derive(serde::Deserialize)]
struct PageQuery {
    /// Pages in the list (default 3).
    n: Option<u64>,
    /// Answer this page with 500 (a list that fails mid-way).
    fail: Option<u64>,
    /// The last page links back to the first (a page loop).
    looped: Option<bool>,
    /// Cursor pages: the opaque cursor (`c3` is page 3).
    cursor: Option<String>,
}

/// `/pages/{line}/{page}?n=N`: page `page` of `N`, with `Link: <...>; rel="next"` (relative)
/// until the last. Body: `{"line", "page", "items": [..]}`.
async fn link_page(
    State(app): State<Arc<App>>,
    Path((line, page)): Path<(u64, u64)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let query = query_string(&q);
    count_path(&app, format!("/pages/{line}/{page}{query}"));
    if q.fail == Some(page) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "page failed").into_response();
    }
    let n = q.n.unwrap_or(3);
    let mut headers = HeaderMap::new();
    let next = if page + 1 < n {
        Some(page + 1)
    } else if q.looped == Some(true) {
        Some(0)
    } else {
        None
    };
    if let Some(next) = next {
        let link =
            format!("<{next}{query}>; rel=\"next\", </pages/{line}/0{query}>; rel=\"first\"");
        headers.insert(header::LINK, HeaderValue::from_str(&link).unwrap());
    }
    let body =
        serde_json::json!({ "line": line, "page": page, "items": [page * 10, page * 10 + 1] });
    (headers, axum::Json(body)).into_response()
}

/// `/cursor/{line}?n=N&cursor=C`: a JSON body with `next_cursor` (null on the last page).
async fn cursor_page(
    State(app): State<Arc<App>>,
    Path(line): Path<u64>,
    Query(q): Query<PageQuery>,
) -> Response {
    let cursor: u64 = match q
        .cursor
        .as_deref()
        .map(|c| c.trim_start_matches('c').parse())
    {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => return (StatusCode::BAD_REQUEST, "bad cursor").into_response(),
    };
    count_path(&app, format!("/cursor/{line}?cursor={cursor}"));
    let n = q.n.unwrap_or(3);
    let next = (cursor + 1 < n).then(|| format!("c{}", cursor + 1));
    // Cursors are opaque to the client: `c3` means page 3.
    let body = serde_json::json!({ "line": line, "page": cursor, "next_cursor": next });
    axum::Json(body).into_response()
}

fn query_string(q: &PageQuery) -> String {
    let mut parts = Vec::new();
    if let Some(n) = q.n {
        parts.push(format!("n={n}"));
    }
    if let Some(f) = q.fail {
        parts.push(format!("fail={f}"));
    }
    if q.looped == Some(true) {
        parts.push("looped=true".to_owned());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// `/weird/{kind}/{n}`: 200 with malformed or contradictory quota headers: `negative`
/// remaining, a reset in the `past`, a `huge` reset, or `garbage`.
async fn weird(State(app): State<Arc<App>>, Path((kind, n)): Path<(String, u64)>) -> Response {
    app.stats.ok.fetch_add(1, Ordering::SeqCst);
    let pairs: &[(&str, &str)] = match kind.as_str() {
        "negative" => &[("x-ratelimit-remaining", "-3"), ("x-ratelimit-reset", "1")],
        "past" => &[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1000000000"),
        ],
        "huge" => &[("ratelimit", "\"d\";r=0;t=31536000")],
        _ => &[
            ("x-ratelimit-remaining", "lots"),
            ("x-ratelimit-reset", "soon"),
            ("ratelimit", ";;=,\""),
            ("ratelimit-remaining", "1e400"),
            ("ratelimit-reset", "-5"),
        ],
    };
    let mut headers = HeaderMap::new();
    for (k, v) in pairs {
        headers.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (headers, axum::Json(serde_json::json!({ "n": n }))).into_response()
}
