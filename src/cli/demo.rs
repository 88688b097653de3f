//! `fetchall demo`: the three classic lessons of async I/O, replayed through the real pipeline
//! against a server embedded in the process on 127.0.0.1 (no network needed).
//!
//! 1. Overlap the waiting: requests of 1, 2 and 3 s take about 6 s one at a time and about
//!    3 s together.
//! 2. A semaphore caps the crowd: four 2 s requests through two slots run in two waves (~4 s).
//! 3. Failures are data: a 404 among good responses becomes a structured error record, and the
//!    others are not disturbed.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;

use fetchall::{Record, Settings};

/// Run all three lessons, narrating to `out`.
pub async fn run<W: Write>(mut out: W) -> io::Result<()> {
    let addr = serve().await?;
    let base = format!("http://{addr}");
    writeln!(
        out,
        "fetchall demo: an embedded server is listening on {base}\n"
    )?;
    overlap(&mut out, &base).await?;
    semaphore(&mut out, &base).await?;
    failures_are_data(&mut out, &base).await?;
    out.flush()
}

/// Lesson 1: three requests of 1, 2 and 3 s, one at a time and together.
async fn overlap(out: &mut impl Write, base: &str) -> io::Result<()> {
    writeln!(
        out,
        "Lesson 1: overlap the waiting. Three requests that take 1, 2 and 3 seconds."
    )?;
    let urls: Vec<String> = (1..=3).map(|s| format!("{base}/delay/{s}")).collect();
    let (_, sequential) = fetch(&urls, 1).await?;
    writeln!(
        out,
        "  one at a time  (--concurrency 1): {sequential:.2} s  (about 1+2+3 = 6 s)"
    )?;
    let (_, together) = fetch(&urls, 3).await?;
    writeln!(
        out,
        "  all together   (--concurrency 3): {together:.2} s  (about max(1,2,3) = 3 s)"
    )?;
    writeln!(
        out,
        "  Waiting overlaps: {:.1}x faster.\n",
        sequential / together
    )
}

/// Lesson 2: four 2 s requests through two slots run in two waves.
async fn semaphore(out: &mut impl Write, base: &str) -> io::Result<()> {
    writeln!(
        out,
        "Lesson 2: a semaphore caps the crowd. Four 2-second requests, two slots."
    )?;
    let urls: Vec<String> = (0..4).map(|_| format!("{base}/delay/2")).collect();
    let (records, wall) = fetch(&urls, 2).await?;
    let mut starts: Vec<(u64, f64)> = records
        .iter()
        .map(|r| (r.seq, r.started_ms.unwrap_or(0.0) / 1000.0))
        .collect();
    starts.sort_by_key(|s| s.0);
    for (seq, at) in starts {
        writeln!(out, "  request {seq} started at {at:.2} s")?;
    }
    writeln!(out, "  total {wall:.2} s: two waves of two (about 4 s).\n")
}

/// Lesson 3: a 404 among good responses is a record, and the others are not disturbed.
async fn failures_are_data(out: &mut impl Write, base: &str) -> io::Result<()> {
    writeln!(
        out,
        "Lesson 3: failures are data. Two good endpoints and one that answers 404."
    )?;
    let urls = vec![
        format!("{base}/hello/alice"),
        format!("{base}/status/404"),
        format!("{base}/hello/bob"),
    ];
    let (mut records, _) = fetch(&urls, 3).await?;
    records.sort_by_key(|r| r.seq);
    for record in &records {
        writeln!(
            out,
            "  {}",
            serde_json::to_string(record).map_err(io::Error::other)?
        )?;
    }
    let failed = records.iter().filter(|r| !r.ok).count();
    writeln!(
        out,
        "  {} ok, {failed} failed: the 404 is a record with error.kind \"http_status\"; \
         nothing was thrown and nothing else stopped.",
        records.len() - failed
    )
}

/// Fetch `urls` with `concurrency` slots; the records and the wall time in seconds.
async fn fetch(urls: &[String], concurrency: usize) -> io::Result<(Vec<Record>, f64)> {
    let mut settings = Settings::default();
    settings.concurrency = NonZeroUsize::new(concurrency).unwrap_or(NonZeroUsize::MIN);
    let input = urls.join("\n").into_bytes();
    let started = Instant::now();
    let mut run =
        fetchall::start(settings, Box::pin(io::Cursor::new(input))).map_err(io::Error::other)?;
    let mut records = Vec::new();
    while let Some(record) = run.next().await {
        records.push(record);
    }
    run.finish().await.map_err(io::Error::other)?;
    Ok((records, started.elapsed().as_secs_f64()))
}

/// Start the lesson server on an ephemeral loopback port.
async fn serve() -> io::Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/delay/{secs}",
            get(|Path(secs): Path<u64>| async move {
                tokio::time::sleep(Duration::from_secs(secs.min(10))).await;
                axum::Json(serde_json::json!({ "slept_s": secs }))
            }),
        )
        .route(
            "/hello/{name}",
            get(|Path(name): Path<String>| async move {
                axum::Json(serde_json::json!({ "hello": name }))
            }),
        )
        .route(
            "/status/{code}",
            get(|Path(code): Path<u16>| async move {
                let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
                (status, axum::Json(serde_json::json!({ "status": code })))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
