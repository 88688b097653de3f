//! Memory follows work: a host with nothing queued or in flight keeps no idle connection, so
//! the sockets open at once stay near the concurrency however many hosts a list names. (The
//! gate's own per-host state is tested in the library: `limit::tests::idle_hosts_are_forgotten`.)
//! While the input is still coming, a request cannot know whether it is its host's last; only
//! a few hosts (`scheduler::reuse::IDLE_HOSTS`, 16) keep their connection on that chance.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{fetchall, records, run};

/// Connections open at the server now, the most at once, and requests that asked to close.
#[derive(Default)]
struct Conns {
    open: AtomicUsize,
    max_open: AtomicUsize,
    close_asked: AtomicUsize,
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that answers every request `200 ok` and counts
/// the connections open at once (a connection counts until the client closes it, or until
/// the server does after a `Connection: close` request).
async fn counting_server() -> (u16, Arc<Conns>) {
    let conns = Arc::new(Conns::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let now = c.open.fetch_add(1, Ordering::SeqCst) + 1;
            c.max_open.fetch_max(now, Ordering::SeqCst);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                'conn: loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    let close = head.contains("\r\nconnection: close\r\n");
                    if close {
                        c.close_asked.fetch_add(1, Ordering::SeqCst);
                    }
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if socket.write_all(reply).await.is_err() || close {
                        break;
                    }
                }
                c.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, conns)
}

/// 200 distinct host names (`hN.localhost`, all loopback) at `-c 4`, from a file: once the
/// input is read, each host's connection is closed after its one request, so the server never
/// sees many more than 4 open at once. The requests that start before the input is read
/// cannot know they are their host's last (at most one batch of 4 here, whose connections
/// then idle in the pool), hence 2 x 4 plus a few closes still on their way. Without the
/// close, all 200 would stay open until the run ends. A list of one host keeps its
/// connections for reuse.
#[tokio::test]
async fn idle_hosts_keep_no_connections() {
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("urls.txt");
    let (port, conns) = counting_server().await;
    let n = 200;
    let input: String = (0..n)
        .map(|i| format!("http://h{i}.localhost:{port}/\n"))
        .collect();
    std::fs::write(&list, input).unwrap();
    let path = list.to_str().unwrap().to_owned();
    let out = tokio::task::spawn_blocking(move || run(&[&path, "-c", "4", "--body", "none"], ""))
        .await
        .unwrap();
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), n);
    assert!(recs.iter().all(|r| r["ok"] == true), "{}", recs[0]);
    let max_open = conns.max_open.load(Ordering::SeqCst);
    assert!(
        max_open <= 2 * 4 + 4,
        "{max_open} connections open at once at -c 4"
    );
    assert!(conns.close_asked.load(Ordering::SeqCst) >= n - 2 * 4);

    // One host: its requests reuse a handful of connections; only the last may ask to close.
    let (port, conns) = counting_server().await;
    let input: String = (0..n)
        .map(|i| format!("http://127.0.0.1:{port}/{i}\n"))
        .collect();
    let out = tokio::task::spawn_blocking(move || run(&["-c", "4", "--body", "none"], &input))
        .await
        .unwrap();
    assert_eq!(records(&out.stdout).len(), n);
    assert!(conns.max_open.load(Ordering::SeqCst) <= 4);
    // Reuse, not one connection per request: only requests admitted with nothing of the host
    // left to come ask to close (the tail of the list, plus a batch the dispatcher had not
    // queued behind yet on a busy machine), never most of the 200.
    let closes = conns.close_asked.load(Ordering::SeqCst);
    assert!(
        closes <= 2 * 4 + 4,
        "{closes} of {n} requests asked to close"
    );
}

/// The connection bound while the input never ends: 100 distinct hosts on a stdin that stays
/// open until every record is out, so no request can ever know it is its host's last (the
/// input is not done, the lookahead not full). Each host's connection used to stay open (100
/// at once); now at most 16 hosts keep one on the chance of more lines, the rest close after
/// their request: `-c 4` + 16, plus a few closes on their way.
#[tokio::test]
async fn open_connections_stay_near_the_concurrency_while_the_input_is_open() {
    use std::io::{BufRead, Write};
    let (port, conns) = counting_server().await;
    let n = 100;
    let max_open = tokio::task::spawn_blocking(move || {
        let mut child = fetchall()
            .args(["-c", "4", "--body", "none", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for i in 0..n {
            writeln!(stdin, "http://h{i}.localhost:{port}/").unwrap();
        }
        stdin.flush().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ok = 0;
        for line in stdout.lines().take(n) {
            let record: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            assert_eq!(record["ok"], true, "{record}");
            ok += 1;
        }
        assert_eq!(ok, n);
        // Every request is done; whatever is open now is idle.
        let idle = conns.open.load(Ordering::SeqCst);
        drop(stdin);
        assert!(child.wait().unwrap().success());
        (conns.max_open.load(Ordering::SeqCst), idle)
    })
    .await
    .unwrap();
    let (max_open, idle) = max_open;
    assert!(
        idle <= 16 + 4,
        "{idle} idle connections after {n} one-request hosts"
    );
    assert!(
        max_open <= 4 + 16 + 4,
        "{max_open} connections open at once at -c 4"
    );
}
