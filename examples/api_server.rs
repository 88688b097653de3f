//! The loopback API server of `bench/api.sh`: a quota that announces its budget in headers
//! and answers 429 past it, and paginated lists. The same server the tests use
//! (tests/cli/api_server.rs).
//!
//! Usage: `cargo run --release --example api_server -- QUOTA WINDOW_SECS DIALECT`, DIALECT one
//! of ietf, triple, x-delta, x-epoch, none. Prints `http://127.0.0.1:PORT` on its first line,
//! then serves until killed; on stdin closing it prints `ok=N too_many=N windows=N pages=N
//! max_fetches_per_page=N` and exits (`windows`: quota windows that accepted a request).

#[path = "../tests/cli/api_server.rs"]
mod api_server;

use std::io::BufRead;
use std::time::Duration;

use api_server::{ApiServer, Dialect};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quota: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(50);
    let window: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let dialect = args
        .get(2)
        .and_then(|s| Dialect::parse(s))
        .unwrap_or(Dialect::Ietf);
    let server = ApiServer::start(quota, Duration::from_secs(window), dialect).await;
    println!("http://{}", server.addr);
    // Stay up until stdin closes (the bench script holds it open).
    tokio::task::spawn_blocking(|| for _ in std::io::stdin().lock().lines() {})
        .await
        .unwrap();
    let paths = server.paths();
    println!(
        "ok={} too_many={} windows={} pages={} max_fetches_per_page={}",
        server.ok(),
        server.too_many(),
        server.windows(),
        paths.len(),
        paths.values().max().copied().unwrap_or(0)
    );
}
