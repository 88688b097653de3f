//! A raw-TCP server that misbehaves on purpose, on 127.0.0.1:0.
//!
//! axum cannot lie about lengths, stall half-way, reset a socket or answer in something that
//! is not HTTP, so this one writes bytes by hand. The path picks the fault; a `?n=...` query
//! makes a separate hit counter for tests that need "fail twice, then succeed". Every loop is
//! bounded in time and bytes, and every response closes its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FaultServer {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl FaultServer {
    /// Start on a runtime of its own thread (the tests run the binary, blocking).
    pub fn start() -> FaultServer {
        // Built here, before any request: built lazily, on the first `/bomb` request, it held
        // up a server thread (and the requests on it) past a 300 ms --read-timeout.
        gzip_bomb();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let hits = Arc::new(Mutex::new(HashMap::new()));
                tx.send(FaultServer {
                    addr: listener.local_addr().unwrap(),
                    hits: Arc::clone(&hits),
                })
                .unwrap();
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(serve(socket, Arc::clone(&hits)));
                }
            });
        });
        rx.recv().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests seen for `target` (path and query).
    pub fn hits(&self, target: &str) -> usize {
        self.hits.lock().unwrap().get(target).copied().unwrap_or(0)
    }
}

const LIMIT: Duration = Duration::from_secs(20);

async fn serve(mut s: TcpStream, hits: Arc<Mutex<HashMap<String, usize>>>) {
    // Read the request head (bounded); the request line names the fault.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let hit = {
        let mut hits = hits.lock().unwrap();
        let n = hits.entry(target.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let _ = tokio::time::timeout(LIMIT, respond(&mut s, &path, hit)).await;
}

async fn respond(s: &mut TcpStream, path: &str, hit: usize) -> std::io::Result<()> {
    let head = |status: &str, headers: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{headers}\r\n").into_bytes()
    };
    match path {
        "/stall-headers" => tokio::time::sleep(LIMIT).await,
        "/stall-body" => {
            s.write_all(&head("200 OK", "Content-Length: 100\r\n"))
                .await?;
            s.write_all(b"0123456789").await?;
            tokio::time::sleep(LIMIT).await;
        }
        "/trickle" => {
            s.write_all(&head("200 OK", "Content-Length: 1000\r\n"))
                .await?;
            for _ in 0..1000 {
                s.write_all(b"x").await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        "/endless" => {
            s.write_all(&head("200 OK", "Transfer-Encoding: chunked\r\n"))
                .await?;
            let chunk = [b'x'; 65536];
            // Bounded at 4 GiB; the client gives up long before.
            for _ in 0..65536 {
                s.write_all(b"10000\r\n").await?;
                s.write_all(&chunk).await?;
                s.write_all(b"\r\n").await?;
            }
        }
        "/short" => {
            s.write_all(&head("200 OK", "Content-Length: 1000\r\n"))
                .await?;
            s.write_all(b"only ten b").await?;
        }
        "/reset" => {
            s.write_all(&head("200 OK", "Content-Length: 100000\r\n"))
                .await?;
            s.write_all(&[b'x'; 1000]).await?;
            s.flush().await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SO_LINGER 0: closing sends RST instead of FIN.
            s.set_zero_linger()?;
        }
        "/garbage" => {
            s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                .await?
        }
        "/big-header" => {
            let mut r = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 2 << 20));
            r.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            s.write_all(&r).await?;
        }
        "/loop" => {
            s.write_all(&head(
                "302 Found",
                "Location: /loop\r\nContent-Length: 0\r\n",
            ))
            .await?
        }
        "/bad-gzip" => {
            let body = b"this is not gzip at all, not even close";
            s.write_all(&head(
                "200 OK",
                &format!(
                    "Content-Encoding: gzip\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            ))
            .await?;
            s.write_all(body).await?;
        }
        "/bomb" => {
            let bomb = gzip_bomb();
            s.write_all(&head(
                "200 OK",
                &format!(
                    "Content-Encoding: gzip\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n",
                    bomb.len()
                ),
            ))
            .await?;
            s.write_all(bomb).await?;
        }
        "/latin1" => {
            s.write_all(&head(
                "200 OK",
                "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Length: 4\r\n",
            ))
            .await?;
            s.write_all(b"caf\xe9").await?;
        }
        "/429-seconds" | "/429-date" | "/429-long" if hit == 1 => {
            let after = match path {
                "/429-seconds" => "1".to_owned(),
                "/429-long" => "3600".to_owned(),
                _ => httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2)),
            };
            s.write_all(&head(
                "429 Too Many Requests",
                &format!("Retry-After: {after}\r\nContent-Length: 4\r\n"),
            ))
            .await?;
            s.write_all(b"slow").await?;
        }
        "/503-twice" if hit <= 2 => {
            s.write_all(&head("503 Service Unavailable", "Content-Length: 4\r\n"))
                .await?;
            s.write_all(b"busy").await?;
        }
        _ => {
            s.write_all(&head(
                "200 OK",
                "Content-Type: application/json\r\nContent-Length: 11\r\n",
            ))
            .await?;
            s.write_all(b"{\"ok\":true}").await?;
        }
    }
    s.flush().await
}

/// Bytes the gzip bomb inflates to.
pub const BOMB_SIZE: u64 = 1 << 30;

/// A valid gzip file of [`BOMB_SIZE`] zero bytes, about 1 MiB.
pub fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| gzip_zeros(BOMB_SIZE))
}

/// A valid gzip file of `size` zero bytes (`size` a whole number of MiB, at least 3).
///
/// Compressing a whole GiB in a debug build would take a minute, so the deflate stream is
/// built from one block repeated: after a sync flush, compressing another MiB of zeros yields
/// the same bytes every time (the window holds only zeros), and a sync flush ends on a byte
/// boundary, so the block can be copied. The trailer's CRC is combined arithmetically.
pub fn gzip_zeros(size: u64) -> Vec<u8> {
    {
        use flate2::{Compress, Compression, Crc, FlushCompress};
        let chunk = vec![0u8; 1 << 20];
        let mut z = Compress::new(Compression::best(), false);
        let mut step = |input: &[u8], flush| {
            let mut out = Vec::with_capacity(1 << 20);
            let before = z.total_in();
            z.compress_vec(input, &mut out, flush).unwrap();
            assert_eq!(z.total_in() - before, input.len() as u64);
            out
        };
        let first = step(&chunk, FlushCompress::Sync);
        let second = step(&chunk, FlushCompress::Sync);
        let third = step(&chunk, FlushCompress::Sync);
        assert_eq!(second, third, "the repeated block must be stable");
        let chunks = (size >> 20) as usize;
        let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        gz.extend_from_slice(&first);
        for _ in 1..chunks {
            gz.extend_from_slice(&second);
        }
        gz.extend_from_slice(&step(&[], FlushCompress::Finish));
        let mut one = Crc::new();
        one.update(&chunk);
        let mut crc = Crc::new();
        for _ in 0..chunks {
            crc.combine(&one);
        }
        gz.extend_from_slice(&crc.sum().to_le_bytes());
        gz.extend_from_slice(&(size as u32).to_le_bytes());
        gz
    }
}
