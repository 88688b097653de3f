//! Hostile inputs, flags and servers against the real binary (issue 11): secrets are never
//! echoed, output files are never clobbered, every odd input is an honest record. One test
//! per class of the issue; docs/security.md names each test with the promise it guards.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::server::{Server, refused_port};
use crate::support::{by_seq, fetchall, kind, records, run, run_env, validate};

/// A scratch directory (a `tempfile::TempDir`), removed on drop.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new(_name: &str) -> Scratch {
        Scratch(tempfile::tempdir().unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A reply of the raw server: these bytes, after this delay, then the connection closes.
struct Reply {
    delay: Duration,
    bytes: Vec<u8>,
}

fn reply(bytes: impl Into<Vec<u8>>) -> Reply {
    Reply {
        delay: Duration::ZERO,
        bytes: bytes.into(),
    }
}

/// `200 OK` with a body and a content type.
fn ok(content_type: &str, body: impl AsRef<[u8]>) -> Reply {
    let body = body.as_ref();
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    reply(bytes)
}

/// A loopback server that answers each request with whatever `answer` says for its request
/// head (request line and headers), written byte for byte; it keeps every head it saw.
struct Raw {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Raw {
    fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Raw {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let answer = Arc::clone(&answer);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    seen.lock().unwrap().push(head.clone());
                    let r = answer(&head);
                    std::thread::sleep(r.delay);
                    let _ = stream.write_all(&r.bytes);
                    let _ = stream.flush();
                });
            }
        });
        Raw { addr, heads }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The heads of the requests for `path`.
    fn heads(&self, path: &str) -> Vec<String> {
        let line = format!(" {path} HTTP/");
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.lines().next().is_some_and(|l| l.contains(&line)))
            .cloned()
            .collect()
    }
}

/// The path of a request head.
fn path_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("/")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run the binary over `input` given as a file (bytes as they are, invalid UTF-8 included).
fn run_bytes(args: &[&str], input: &[u8]) -> std::process::Output {
    let dir = Scratch::new(&format!("input-{}", fastrand::u64(..)));
    let path = dir.file("input.txt", input);
    let mut all: Vec<&str> = args.to_vec();
    all.push(s(&path));
    fetchall().args(&all).stdin(Stdio::null()).output().unwrap()
}

/// Point 1: a password or token never reaches a record or a log line, whatever is wrong
/// with the line around it (a bad port, no host, a space, invalid UTF-8, over 64 KiB, a spec
/// with a value of the wrong type, a mistyped key), and tokens in listed query parameters are
/// masked too.
#[test]
fn secrets_are_never_echoed_whatever_the_input() {
    let refused = refused_port();
    let mut input: Vec<u8> = Vec::new();
    let mut line = |l: &[u8]| {
        input.extend_from_slice(l);
        input.push(b'\n');
    };
    line(b"http://u:SECRETA1@host.test:99999/");
    line(b"http://u:SECRETA2@/x");
    line(b"http://u:SECRETA3 x@host.test:bad/");
    line(b"http://u:SECRETA4\xff@host.test:1x/");
    let mut long = b"http://u:SECRETA5".to_vec();
    long.extend(std::iter::repeat_n(b'S', 70_000));
    long.extend_from_slice(b"@host.test/");
    line(&long);
    line(b"https://SECRETA6@host.test:99999/");
    line(b"http:u:SECRETA7@host.test:99999");
    line(br#"{"url":"http://a.test/","headers":"Authorization: Bearer SECRETA8"}"#);
    line(br#"{"url":"http://a.test/","headers":{"Authorization":["Bearer SECRETA9",1]}}"#);
    line(br#"{"url":"http://a.test/","Authorization: Bearer SECRETB1":1}"#);
    line(br#"{"url":"http://a.test/","headers":{"Authorization: Bearer SECRETB2":"x"}}"#);
    line(format!("http://127.0.0.1:{refused}/?access_token=SECRETB3&page=2").as_bytes());
    line(b"http://host.test:99999/?token=SECRETB4");
    line(format!("http://user:SECRETB5@127.0.0.1:{refused}/#id_token=SECRETB6").as_bytes());
    let mut spec_long =
        br#"{"url":"http://a.test/","headers":{"Authorization":"Bearer SECRETB7"},"pad":""#
            .to_vec();
    spec_long.extend(std::iter::repeat_n(b'p', 70_000));
    spec_long.extend_from_slice(b"\"}");
    line(&spec_long);
    let out = run_bytes(&["-vv", "--retries", "1", "--retry-base", "1ms"], &input);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    for n in [
        "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "B1", "B2", "B3", "B4", "B5", "B6",
        "B7",
    ] {
        let secret = format!("SECRET{n}");
        assert!(!stdout.contains(&secret), "{secret} in stdout:\n{stdout}");
        assert!(!stderr.contains(&secret), "{secret} in stderr:\n{stderr}");
    }
    assert!(!stdout.contains("SSSS"), "no part of a cut password");
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 15, "one record per line");
    let urls: Vec<&str> = recs.iter().map(|r| r["url"].as_str().unwrap()).collect();
    assert_eq!(urls[0], "http://u:****@host.test:99999/");
    assert!(
        urls[11].ends_with("/?access_token=****&page=2"),
        "{}",
        urls[11]
    );
    assert!(
        urls[13].contains("user:****@") && urls[13].ends_with("#id_token=****"),
        "{}",
        urls[13]
    );
    for r in &recs {
        assert!(r["url"].as_str().unwrap().len() <= 512, "{r}");
    }
}

/// Point 1, the other ways in: a malformed or unknown-scheme `--proxy` (flag, environment,
/// config file), a config-file value of the wrong type, a TOML syntax error on a credential's
/// line, and `fetchall config` itself never show the secret.
#[test]
fn flags_and_config_errors_never_echo_secrets() {
    let dir = Scratch::new("config");
    let server = Server::start_in_background();
    let url = server.url("/ok");
    for proxy in [
        "sock5://u:PROXYPASS@127.0.0.1:1080",
        "htp://u:PROXYPASS@127.0.0.1/",
        "http://u:PROXYPASS@127.0.0.1:99999",
        "http://u:PROXYPASS@/",
        "u:PROXYPASS@127.0.0.1",
    ] {
        for (env, args) in [
            (vec![], vec!["--proxy", proxy]),
            (vec![("FETCHALL_PROXY", proxy)], vec![]),
        ] {
            let out = run_env(&env, &args, &url);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{proxy}: {err}");
            assert!(err.contains("--proxy"), "{err}");
            assert!(!err.contains("PROXYPASS"), "{proxy}: {err}");
            assert!(
                out.stdout.is_empty(),
                "a usage error, not a direct connection"
            );
        }
    }
    assert_eq!(
        server.requests(),
        0,
        "an unknown proxy scheme never means a direct connection"
    );
    for config in [
        "header = { x = \"Bearer CFGSECRET\" }\n",
        "header = \"Authorization Bearer CFGSECRET\"\n",
        "header = \"Authorization: Bearer CFGSECRET\n",
        "header = 'Authorization: Bearer CFGSECRET'\nconcurrency = \"many\"\n",
        "proxy = \"sock5://u:CFGSECRET@h:1\"\n",
        "data = [\"a\", \"CFGSECRET\"]\n",
        "json = \"{CFGSECRET\"\n",
        "user-agent = \"CFGSECRET\\u0001\"\n",
        "credential-header = [\"X-Api-Key: CFGSECRET\"]\n",
    ] {
        let path = dir.file("config.toml", config);
        let out = run(&["--config", s(&path)], &url);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config}: {err}");
        assert!(!err.contains("CFGSECRET"), "{config}: {err}");
    }
    let out = run(
        &[
            "config",
            "-H",
            "X-Tenant: CFGSECRET1",
            "--credential-header",
            "X-Tenant",
            "-H",
            "X-Api-Key: CFGSECRET2",
            "-d",
            "password=CFGSECRET3",
            "-x",
            "socks5h://u:CFGSECRET4@127.0.0.1:1080",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("CFGSECRET"),
        "{}",
        text(&out.stdout)
    );
}

/// Point 2: no credential header (the built-in rule, and names marked with
/// `--credential-header`) follows a redirect to another origin, even when a later hop stays
/// on that other origin; no Referer is sent; the same origin keeps them.
#[test]
fn credentials_do_not_follow_redirects_to_other_origins() {
    let a = Server::start_in_background();
    let b = Server::start_in_background();
    let echo_b = b.url("/echo");
    let b_then_b = format!("{}?to=%2Fecho", b.url("/redirect"));
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        a.url(&format!("/redirect?to={echo_b}")),
        a.url(&format!(
            "/redirect?to={}",
            b_then_b.replace('?', "%3F").replace('=', "%3D")
        )),
        a.url("/redirect?to=/echo"),
        a.url(&format!(
            "/redirect?to=http://localhost:{}/echo",
            a.addr.port()
        )),
    );
    let out = run(
        &[
            "-H",
            "Authorization: Bearer CRED1",
            "-H",
            "X-Api-Key: CRED2",
            "-H",
            "X-Auth-Token: CRED3",
            "-H",
            "Cookie: s=CRED4",
            "-H",
            "X-Tenant: CRED5",
            "--credential-header",
            "X-Tenant",
            "-H",
            "X-Plain: kept",
            "-H",
            "Host: spoofed.test",
        ],
        &input,
    );
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(r["ok"], true, "{r}");
        let headers = &r["body"]["headers"];
        assert!(headers.get("referer").is_none(), "no Referer: {r}");
        assert_eq!(headers["x-plain"][0], "kept", "{r}");
    }
    for r in [&recs[0], &recs[1], &recs[3]] {
        let sent = r["body"]["headers"].to_string();
        for n in 1..=5 {
            assert!(
                !sent.contains(&format!("CRED{n}")),
                "CRED{n} crossed origins: {r}"
            );
        }
        assert!(
            !sent.contains("spoofed.test"),
            "a Host header does not cross: {r}"
        );
    }
    let same = recs[2]["body"]["headers"].to_string();
    for n in 1..=5 {
        assert!(
            same.contains(&format!("CRED{n}")),
            "the same origin keeps CRED{n}: {same}"
        );
    }
}

/// Point 2: a redirect to a scheme other than http(s), a Location that is no URL or has no
/// host: one error kind, `redirect`, never `ok: true`.
#[test]
fn redirects_to_other_schemes_are_one_error_kind() {
    let targets = [
        "file:///etc/passwd",
        "data:text/plain,hi",
        "ftp://127.0.0.1/x",
        "javascript:alert(1)",
        "mailto:a@b.test",
        "http://",
        "http://[::1",
        "gopher://u:LOCSECRET@h/",
    ];
    let server = Raw::start(move |head| {
        let i: usize = path_of(head).trim_start_matches("/r").parse().unwrap_or(0);
        let to = targets.get(i).copied().unwrap_or("/");
        reply(format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        ))
    });
    let input: String = (0..targets.len())
        .map(|i| server.url(&format!("/r{i}")) + "\n")
        .collect();
    let out = run(&[], &input);
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), targets.len());
    for r in &recs {
        assert_eq!(
            (r["ok"].as_bool(), kind(r)),
            (Some(false), "redirect"),
            "{r}"
        );
        assert_eq!(r["status"], 302, "{r}");
    }
    assert!(!text(&out.stdout).contains("LOCSECRET"));
    assert_eq!(out.status.code(), Some(1));
}

/// Point 3: a run that cannot start (a bad -H, a missing --resume, a bad --proxy, an
/// unreadable -d @FILE) creates and truncates nothing.
#[test]
fn nothing_is_created_or_truncated_before_every_option_is_checked() {
    let dir = Scratch::new("clobber");
    let server = Server::start_in_background();
    let input = dir.file("urls.txt", server.url("/ok") + "\n");
    let out_file = dir.file("out.jsonl", "precious records\n");
    let summary = dir.file("summary.json", "precious summary\n");
    let missing = dir.path("missing.jsonl");
    let save = dir.path("bodies");
    for bad in [
        vec!["-H", "no colon here"],
        vec!["--resume", s(&missing)],
        vec!["--proxy", "sock5://127.0.0.1:1"],
        vec!["-d", "@/nonexistent/body"],
        vec!["--timeout", "0"],
        vec!["--json", "{not json"],
    ] {
        let mut args = vec![
            "-o",
            s(&out_file),
            "--summary",
            s(&summary),
            "--save-dir",
            s(&save),
            s(&input),
        ];
        args.extend(bad.iter().copied());
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(&out_file).unwrap(),
            "precious records\n",
            "{bad:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&summary).unwrap(),
            "precious summary\n",
            "{bad:?}"
        );
        assert!(!save.exists(), "{bad:?}: --save-dir created");
        assert!(!missing.exists());
    }
    assert_eq!(server.requests(), 0);
}

/// Point 3: any two of the input, -d/--json @FILE, --resume, -o and --summary that are one
/// file (the same path, a hard link, a symlink, /dev/stdin for the stdin the URLs come
/// from) are refused before anything is read or written.
#[test]
fn files_that_are_one_file_are_refused() {
    let dir = Scratch::new("same");
    let server = Server::start_in_background();
    let list = server.url("/ok") + "\n";
    let input = dir.file("urls.txt", &list);
    let previous = dir.file("previous.jsonl", "{\"seq\":0}\n");
    let hard = dir.path("hard-link.txt");
    std::fs::hard_link(&input, &hard).unwrap();
    let soft = dir.path("sym-link.jsonl");
    std::os::unix::fs::symlink(&previous, &soft).unwrap();
    let fresh = dir.path("new.json");
    let dangling = dir.path("dangling");
    let target = dir.path("target.json");
    std::os::unix::fs::symlink(&target, &dangling).unwrap();
    let (at_hard, at_soft) = (format!("@{}", s(&hard)), format!("@{}", s(&soft)));
    let cases: Vec<Vec<&str>> = vec![
        vec!["-o", s(&hard), s(&input)],
        vec!["--summary", s(&hard), s(&input)],
        vec!["--resume", s(&previous), "-o", s(&soft), s(&input)],
        vec!["--resume", s(&previous), "--summary", s(&soft), s(&input)],
        vec!["-o", s(&fresh), "--summary", s(&fresh), s(&input)],
        vec!["-o", s(&dangling), "--summary", s(&target), s(&input)],
        vec!["--resume", s(&hard), s(&input)],
        vec!["-d", &at_hard, s(&input)],
        vec!["--json", &at_soft, "--resume", s(&previous), s(&input)],
    ];
    for args in &cases {
        let out = run(args, "");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("same file"), "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(&input).unwrap(), list);
        assert_eq!(std::fs::read_to_string(&previous).unwrap(), "{\"seq\":0}\n");
        assert!(!fresh.exists() && !target.exists());
    }
    // The URL list on stdin, and a body "@/dev/stdin": refused, the list not swallowed.
    for arg in ["@/dev/stdin", "@/proc/self/fd/0"] {
        let out = run(&["-d", arg], &list);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains("same file"), "{err}");
    }
    // A summary into the record stream is refused; appending to a file read with --resume
    // (`>> out.jsonl`) is not.
    let sink = dir.file("stream.jsonl", "");
    let status = fetchall()
        .args(["--summary", s(&sink), s(&input)])
        .stdout(std::fs::File::options().append(true).open(&sink).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let status = fetchall()
        .args(["--resume", s(&sink), s(&input)])
        .stdout(std::fs::File::options().append(true).open(&sink).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(server.requests(), 1, "only the append run fetched");
}

/// Points 3 and 4: `--save-dir` names never collide (an id `1` and seq 1, `x/y` and `x_y`,
/// the same id twice), stay inside the directory, never replace the run's own files, and a
/// planted symlink (at a temporary or a final name) is never written through; `saved`
/// describes the file at its path.
#[test]
fn save_dir_is_safe_and_exact() {
    let dir = Scratch::new("save");
    let server = Server::start_in_background();
    let save = dir.path("bodies");
    std::fs::create_dir_all(&save).unwrap();
    let victim = dir.file("victim.txt", "untouched");
    for name in [
        "1",
        "x_y",
        ".fetchall-0.tmp",
        ".fetchall-1.tmp",
        ".fetchall-2.tmp",
    ] {
        std::os::unix::fs::symlink(&victim, save.join(name)).unwrap();
    }
    let item = |n: u32| server.url(&format!("/item/{n}"));
    let spec = |id: &str, n: u32| format!(r#"{{"url":"{}","id":{id}}}"#, item(n));
    let lines = [
        item(0),
        item(1),
        spec("1", 2),
        spec(r#""1""#, 3),
        spec(r#""x/y""#, 4),
        spec(r#""x_y""#, 5),
        spec(r#""../escape""#, 6),
        spec(r#"".hidden""#, 7),
        spec(r#""dup""#, 8),
        spec(r#""dup""#, 9),
        spec(r#""urls.txt""#, 10),
        spec(r#""out.jsonl""#, 11),
        spec(r#""X_Y""#, 12),
    ];
    let input = save.join("urls.txt");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out_file = save.join("out.jsonl");
    let out = run(
        &[
            "--save-dir",
            s(&save),
            "-o",
            s(&out_file),
            "-c",
            "4",
            s(&input),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        lines.join("\n") + "\n"
    );
    let recs = by_seq(records(&std::fs::read(&out_file).unwrap()));
    assert_eq!(recs.len(), lines.len());
    let mut paths = BTreeSet::new();
    for (n, r) in recs.iter().enumerate() {
        let saved = &r["saved"];
        let path = PathBuf::from(saved["path"].as_str().unwrap());
        assert_eq!(path.parent().unwrap(), save, "inside the directory: {r}");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{r}"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(saved["size"].as_u64().unwrap(), bytes.len() as u64, "{r}");
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(saved["sha256"], sha, "{r}");
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body["n"], n as u64,
            "the file holds this record's body: {r}"
        );
        assert!(paths.insert(path), "two records share a file: {r}");
    }
    assert!(
        !dir.path("escape").exists(),
        "an id of ../escape stays inside"
    );
    let leftovers = std::fs::read_dir(&save)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(".fetchall-") && !e.file_type().unwrap().is_symlink()
        })
        .count();
    assert_eq!(leftovers, 0, "no temporary file left");
}

/// Point 5: HEAD, 204 and 304 have no body, whatever Content-Length says: not `too_large`,
/// `bytes` 0.
#[test]
fn bodiless_responses_are_not_bodies() {
    let server = Raw::start(|head| {
        let status = match path_of(head) {
            "/204" => "204 No Content",
            "/304" => "304 Not Modified",
            _ => "200 OK",
        };
        reply(format!(
            "HTTP/1.1 {status}\r\ncontent-length: 99999999\r\nconnection: close\r\n\r\n"
        ))
    });
    let input = format!(
        "{{\"url\":\"{}\",\"method\":\"HEAD\"}}\n{}\n{}\n",
        server.url("/head"),
        server.url("/204"),
        server.url("/304")
    );
    let out = run(&["--max-body", "1k"], &input);
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 3);
    for r in &recs {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["bytes"], 0, "{r}");
    }
    let out = run(&["-X", "HEAD", "--max-body", "1k"], &server.url("/head"));
    assert_eq!(records(&out.stdout)[0]["ok"], true);
}

/// Point 6: a second signal while a large record is blocked on a slow reader finishes that
/// record before exiting (with the first signal's status); stdout never ends in half a line.
#[test]
fn a_forced_exit_never_cuts_a_record() {
    let big = format!("\"{}\"", "x".repeat(4 << 20));
    let server = Raw::start(move |head| match path_of(head) {
        "/big" => ok("application/json", &big),
        _ => Reply {
            delay: Duration::from_secs(30),
            bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        },
    });
    let dir = Scratch::new("cut");
    let list: String =
        [server.url("/big"), server.url("/slow"), server.url("/slow")].join("\n") + "\n";
    let input = dir.file("urls.txt", &list);
    let mut child = fetchall()
        .args(["-c", "3", "--grace", "60s", s(&input)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the big record is being written and blocked: the pipe is full (nobody
    // reads stdout yet), so the writer is in the middle of the line.
    let stdout = child.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD on a pipe we own, into a local.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&stdout),
                libc::FIONREAD,
                &mut queued,
            )
        };
        assert_eq!(rc, 0);
        if queued >= 32 * 1024 && server.heads("/slow").len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the big record never filled the pipe"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let kill = |sig| {
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    };
    kill(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    kill(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    // Now read, slowly at first.
    let mut stdout = stdout;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let started = Instant::now();
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e}"),
        }
        if started.elapsed() < Duration::from_millis(300) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fetchall did not exit"
        );
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "the first signal's status: {err}");
    assert!(err.contains("finishing the record"), "{err}");
    assert!(
        got.ends_with(b"\n"),
        "stdout ends in half a record ({} bytes)",
        got.len()
    );
    let recs = records(&got);
    assert_eq!(
        recs.len(),
        1,
        "the big record, whole; the slow ones never finished"
    );
    assert_eq!(recs[0]["bytes"], (4 << 20) + 2);
}

/// Point 7: a --resume file with a huge line is read with a bounded buffer (the line is
/// skipped with a warning); --threads and zero timeouts are usage errors, at once.
#[test]
fn memory_and_limits_are_bounded() {
    let dir = Scratch::new("bounded");
    let server = Server::start_in_background();
    let previous = dir.path("previous.jsonl");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&previous).unwrap());
        f.write_all(br#"{"seq":5,"url":"x","ok":true,"pad":""#)
            .unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..96 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\n").unwrap();
        writeln!(
            f,
            r#"{{"seq":0,"line":1,"url":"{}","ok":true}}"#,
            server.url("/ok")
        )
        .unwrap();
    }
    let input = format!("{}\n{}\n", server.url("/ok"), server.url("/item/1"));
    let (code, stdout, stderr, peak_kib) = run_peak(&["--resume", s(&previous)], &input);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(records(&stdout).len(), 1, "line 1 resumed, line 2 fetched");
    assert!(
        stderr.contains("not records"),
        "the long line is reported: {stderr}"
    );
    let peak_mib = peak_kib / 1024;
    assert!(peak_mib < 60, "peak RSS {peak_mib} MiB for a 96 MiB line");

    for args in [
        vec!["--threads", "100000"],
        vec!["--threads", "1025"],
        vec!["--timeout", "0"],
        vec!["--connect-timeout", "0s"],
        vec!["--read-timeout", "0ms"],
    ] {
        let started = Instant::now();
        let out = run(&args, &server.url("/ok"));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{args:?}");
    }
}

/// Run the binary and its peak resident memory in KiB (`support::run_measured`).
fn run_peak(args: &[&str], input: &str) -> (Option<i32>, Vec<u8>, String, u64) {
    let m = crate::support::run_measured(args, input);
    (
        m.code,
        m.stdout,
        text(&m.stderr),
        u64::try_from(m.max_rss_kib).unwrap_or(0),
    )
}

/// Point 8: lines are classified on bytes, then decoded: comments of any encoding or length
/// are skipped, a byte-order mark is ignored, a lone CR ends a line, a TAB inside a URL is
/// refused (not removed), and the echo of a bad line is at most 512 bytes.
#[test]
fn lines_are_classified_on_bytes_then_decoded() {
    let server = Server::start_in_background();
    let mut input: Vec<u8> = b"\xEF\xBB\xBF".to_vec();
    input.extend_from_slice(format!("{}\n", server.url("/item/1")).as_bytes());
    input.extend_from_slice(b"# caf\xe9 in latin-1\n");
    input.extend_from_slice(b"   #");
    input.extend(std::iter::repeat_n(b'#', 70_000));
    input.push(b'\n');
    input.extend_from_slice(format!("{}\t/x\n", server.url("/item/2")).as_bytes());
    input.extend_from_slice(
        format!("{}\r{}\r", server.url("/item/3"), server.url("/item/4")).as_bytes(),
    );
    input.extend_from_slice(format!("{}\r\n", server.url("/item/5")).as_bytes());
    input.extend_from_slice("http://bad.test:99999/".as_bytes());
    input.extend_from_slice("é".repeat(400).as_bytes());
    input.push(b'\n');
    input.extend_from_slice(b"http://bad.test:99999/\xff\xfe\xfd");
    input.extend(std::iter::repeat_n(b'\xff', 600));
    input.push(b'\n');
    let out = run_bytes(&[], &input);
    let recs = by_seq(records(&out.stdout));
    let lines: Vec<u64> = recs.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 4, 5, 6, 7, 8, 9], "{recs:#?}");
    assert_eq!(recs[0]["ok"], true, "a BOM before the first URL is ignored");
    assert_eq!(kind(&recs[1]), "invalid_url");
    assert!(
        recs[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("control character")
    );
    for r in &recs[2..5] {
        assert_eq!(r["ok"], true, "CR and CRLF end lines: {r}");
    }
    for r in &recs[5..] {
        assert_eq!(kind(r), "invalid_url");
        assert!(r["url"].as_str().unwrap().len() <= 512, "{r}");
    }
}

/// Point 9: a broken chunked encoding is `protocol` (`decode` is for content decoding); a
/// Retry-After too large for any integer is longer than --max-retry-wait; every message is
/// one line.
#[test]
fn error_kinds_and_messages_are_honest() {
    let server = Raw::start(|head| match path_of(head) {
        "/bad-chunk" => reply(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
        "/bad-chunk-later" => reply(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\nnot-hex\r\nxyz\r\n0\r\n\r\n",
        ),
        "/bad-gzip" => reply(
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot gzip!!",
        ),
        _ => reply("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
    });
    // A host of its own: a Retry-After pauses its host (up to --max-retry-wait).
    let pushy = Raw::start(|_| {
        reply(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 99999999999999999999999999999\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
    });
    let mut input = ["/bad-chunk", "/bad-chunk-later", "/bad-gzip"]
        .map(|p| server.url(p))
        .join("\n");
    input.push_str(&format!("\n{}\n", pushy.url("/huge-retry-after")));
    let out = run(&["--retries", "3", "--retry-base", "1ms"], &input);
    let recs = by_seq(records(&out.stdout));
    let kinds: Vec<&str> = recs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["protocol", "protocol", "decode", "http_status"],
        "{recs:#?}"
    );
    assert_eq!(recs[3]["attempts"], 1, "not retried: {}", recs[3]);
    assert!(
        recs[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-retry-wait"),
        "{}",
        recs[3]
    );
    for r in &recs {
        let m = r["error"]["message"].as_str().unwrap();
        assert!(!m.contains(['\n', '\r']), "{m:?}");
    }
}

/// Parse a record line without serde_json's recursion limit (its bodies may be deep).
fn deep_record(line: &str) -> Value {
    let mut de = serde_json::Deserializer::from_str(line);
    de.disable_recursion_limit();
    let v = Value::deserialize(&mut de).unwrap();
    validate(&v);
    v
}

/// Point 10: integers beyond 64 bits stay exact (bodies and spec ids); JSON deeper than
/// serde's default is embedded up to 256 levels, deeper is text with a note, never a crash;
/// a duplicate key is refused; `"json": null` sends `null`.
#[test]
fn json_is_kept_faithfully() {
    let nest = |levels: usize| format!("{}7{}", "[".repeat(levels), "]".repeat(levels));
    let (n200, n300, abyss) = (nest(200), nest(300), nest(200_000));
    let server = Raw::start(move |head| match path_of(head) {
        "/big" => ok(
            "application/json",
            r#"{"big": 123456789012345678901234567890, "neg": -98765432109876543210987654321, "f": 1.50}"#,
        ),
        "/200" => ok("application/json", &n200),
        "/300" => ok("application/json", &n300),
        "/abyss" => ok("application/json", &abyss),
        _ => reply("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
    });
    let echo = Server::start_in_background();
    let input = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        server.url("/big"),
        server.url("/200"),
        server.url("/300"),
        server.url("/abyss"),
        format_args!(
            r#"{{"url":"{}","id":123456789012345678901234567890,"json":null}}"#,
            echo.url("/echo")
        ),
        format_args!(
            r#"{{"url":"{}","url":"{}"}}"#,
            echo.url("/echo"),
            echo.url("/ok")
        ),
        format_args!(
            r#"{{"url":"{}","json":{{"n":98765432109876543210}}}}"#,
            echo.url("/echo")
        ),
    );
    let out = run(&[], &input);
    assert!(out.status.code().is_some(), "no crash");
    let stdout = text(&out.stdout);
    let mut recs: Vec<Value> = stdout.lines().map(deep_record).collect();
    recs.sort_by_key(|r| r["seq"].as_u64().unwrap());
    assert_eq!(recs.len(), 7, "{}", text(&out.stderr));
    assert!(
        stdout.contains(r#""big":123456789012345678901234567890"#),
        "{}",
        recs[0]
    );
    assert!(
        stdout.contains(r#""neg":-98765432109876543210987654321"#),
        "{}",
        recs[0]
    );
    assert_eq!(recs[1]["body_encoding"], "json", "200 levels are embedded");
    assert!(recs[1].get("body_note").is_none());
    for r in &recs[2..4] {
        assert_eq!(r["body_encoding"], "text", "beyond 256 levels: text");
        assert!(
            r["body_note"].as_str().unwrap().contains("256"),
            "{}",
            r["body_note"]
        );
    }
    assert!(stdout.contains(r#""id":123456789012345678901234567890"#));
    assert_eq!(recs[4]["body"]["body"], "null", "json null sends null");
    assert_eq!(recs[4]["body"]["method"], "POST");
    assert_eq!(
        kind(&recs[5]),
        "invalid_spec",
        "a duplicate key: {}",
        recs[5]
    );
    assert_eq!(recs[6]["body"]["body"], r#"{"n":98765432109876543210}"#);
}

/// Point 11: when the open-file limit cannot cover --concurrency, fetchall says so once and
/// lowers it, and every request still succeeds; `-q` shows no per-URL lines, whatever
/// RUST_LOG says.
#[test]
fn open_file_limit_and_quiet() {
    use std::os::unix::process::CommandExt;
    let server = Server::start_in_background();
    let list: String = (0..300)
        .map(|i| server.url(&format!("/delay/{}", 50 + i % 7)) + "\n")
        .collect();
    let mut cmd: Command = fetchall();
    cmd.args(["-c", "1000"]);
    // SAFETY: setrlimit between fork and exec touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stderr = text(&out.stderr);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 300);
    assert!(
        recs.iter().all(|r| r["ok"] == true),
        "{}",
        recs.iter().find(|r| r["ok"] != true).unwrap()
    );
    assert_eq!(
        stderr.matches("--concurrency lowered").count(),
        1,
        "{stderr}"
    );
    assert!(server.max_in_flight() < 128, "{}", server.max_in_flight());

    let refused = format!("http://127.0.0.1:{}/", refused_port());
    let input = format!("{refused}\nnot a url\n{}\n", server.url("/status/404"));
    let out = run_env(
        &[("RUST_LOG", "debug")],
        &["-q", "--retries", "2", "--retry-base", "1ms"],
        &input,
    );
    assert_eq!(records(&out.stdout).len(), 3);
    assert_eq!(text(&out.stderr), "", "-q: nothing on stderr");
}
