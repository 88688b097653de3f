//! A real `redis-server` for the shared-limits tests: started on a free loopback port in a
//! temp dir (no persistence), stopped (killed) when dropped. It can be killed and started
//! again on the same port mid-test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::require_tool;

pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    /// With TLS: the certificate (self-signed for 127.0.0.1), which clients must trust.
    pub tls_cert: Option<std::path::PathBuf>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// A fresh redis-server; `None` (after saying why) when it is not installed and CI is not
    /// set. Under CI a missing redis-server fails the test.
    pub fn start(password: Option<&str>) -> Option<RedisServer> {
        if !require_tool("redis-server", "--version") {
            return None;
        }
        let port = crate::server::refused_port();
        let mut server = RedisServer {
            port,
            password: password.map(str::to_owned),
            tls_cert: None,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// A redis-server that speaks only TLS (`rediss://`), with a self-signed certificate for
    /// 127.0.0.1 in [`RedisServer::tls_cert`].
    pub fn start_tls() -> Option<RedisServer> {
        if !require_tool("redis-server", "--version") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, key.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        let mut server = RedisServer {
            port: crate::server::refused_port(),
            password: None,
            tls_cert: Some(cert),
            dir,
            child: None,
        };
        server.restart();
        Some(server)
    }

    /// `redis://[:PASSWORD@]127.0.0.1:PORT/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls_cert.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port),
        }
    }

    /// Kill the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it (again) on its port, and wait until it answers PING.
    pub fn restart(&mut self) {
        self.kill();
        let mut cmd = Command::new("redis-server");
        match &self.tls_cert {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(cert) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(self.dir.path().join("key.pem"))
                .arg("--tls-ca-cert-file")
                .arg(cert)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        self.child = Some(cmd.spawn().expect("redis-server starts"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// How many scripts it has run (`EVALSHA` and `EVAL` calls, from `INFO commandstats`):
    /// fetchall's round trips for shared limits. Without a password or TLS.
    pub fn script_calls(&self) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"INFO commandstats\r\n").unwrap();
        // A bulk string: `$LEN\r\n` then LEN bytes.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "redis-server closed the connection");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n") {
                let len: usize = head.trim_start_matches('$').parse().unwrap();
                if body.len() >= len {
                    break;
                }
            }
        }
        String::from_utf8_lossy(&got)
            .lines()
            .filter_map(|l| {
                let rest = l
                    .strip_prefix("cmdstat_evalsha:calls=")
                    .or_else(|| l.strip_prefix("cmdstat_eval:calls="))?;
                rest.split(',').next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Whether it answers PING (with TLS: whether it accepts connections).
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls_cert.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let hello = match &self.password {
            Some(p) => format!("AUTH {p}\r\nPING\r\n"),
            None => "PING\r\n".to_owned(),
        };
        if s.write_all(hello.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("PONG") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        true
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
