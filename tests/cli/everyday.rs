//! Everyday features end to end: request flags, spec lines, output shaping, summary.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::server::Server;
use crate::support::{by_seq, kind, records, run, run_env};

fn one(args: &[&str], url: &str) -> Value {
    let out = run(args, url);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 1, "{}", String::from_utf8_lossy(&out.stderr));
    recs.into_iter().next().unwrap()
}

#[test]
fn flags_set_the_method_headers_and_body() {
    let server = Server::start_in_background();
    let echo = server.url("/echo");

    let r = one(&[], &echo);
    assert_eq!(r["body"]["method"], "GET");
    let ua = format!("fetchall/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(r["body"]["headers"]["user-agent"][0], ua.as_str());

    let r = one(
        &[
            "-X", "put", "-H", "X-A: 1", "-H", "x-a:2", "-d", "hello", "-A", "me/1",
        ],
        &echo,
    );
    assert_eq!(r["body"]["method"], "PUT");
    assert_eq!(r["body"]["headers"]["x-a"], serde_json::json!(["1", "2"]));
    assert_eq!(r["body"]["headers"]["user-agent"][0], "me/1");
    assert_eq!(r["body"]["body"], "hello");

    let r = one(&["--json", r#"{"a": 1}"#], &echo);
    assert_eq!(r["body"]["method"], "POST", "a body implies POST");
    assert_eq!(r["body"]["headers"]["content-type"][0], "application/json");
    assert_eq!(r["body"]["body"], r#"{"a": 1}"#);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, "from a file").unwrap();
    let r = one(&["-d", &format!("@{}", file.display())], &echo);
    assert_eq!(r["body"]["body"], "from a file");
}

#[test]
fn bad_request_flags_are_usage_errors() {
    for args in [
        &["-H", "X-A: a\r\nX-B: b"][..],
        &["-H", "X-A: a\nb"],
        &["-H", "no colon"],
        &["-X", "GE T"],
        &["--json", "{not json"],
        &["-d", "@/nonexistent/body"],
        &["--proxy", "not a url"],
    ] {
        let out = run(args, "http://127.0.0.1:9/\n");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("fetchall: "), "{err}");
    }
}

#[test]
fn redirects_can_be_limited_or_off() {
    let server = Server::start_in_background();
    let r = one(&[], &server.url("/redirect-to-ok"));
    assert_eq!(
        (r["ok"].as_bool(), r["status"].as_u64()),
        (Some(true), Some(200))
    );

    // Not following: the 3xx itself is the response, and it is ok (status < 400).
    let r = one(
        &["--max-redirects", "0", "--headers"],
        &server.url("/redirect-to-ok"),
    );
    assert_eq!(
        (r["ok"].as_bool(), r["status"].as_u64()),
        (Some(true), Some(302))
    );
    assert_eq!(r["headers"]["location"][0], "/ok");

    let r = one(&["--max-redirects", "3"], &server.url("/redirect-loop"));
    assert_eq!(kind(&r), "redirect");
    assert_eq!(
        server.arrivals("/redirect-loop").len(),
        4,
        "the first request and 3 redirects"
    );
}

#[test]
fn compressed_bodies_are_decoded() {
    let server = Server::start_in_background();
    let r = one(&[], &server.url("/gzip"));
    assert_eq!(r["body"]["zipped"], true, "{r}");
    assert_eq!(
        r["bytes"].as_u64().unwrap(),
        r#"{"zipped": true, "pad": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#.len() as u64
    );
}

#[test]
fn proxy_from_flag_or_environment_is_used_unless_no_proxy_exempts_the_host() {
    // The loopback server plays the proxy: a request for a host that cannot resolve
    // (*.invalid) succeeds only if it went to the proxy, which sees the absolute URI.
    let proxy = Server::start_in_background();
    let target = "http://target.invalid/echo";

    let r = one(&["-x", &proxy.url("")], target);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["body"]["uri"], target);

    let out = run_env(&[("HTTP_PROXY", &proxy.url(""))], &["-"], target);
    let r = &records(&out.stdout)[0];
    assert_eq!(r["body"]["uri"], target, "HTTP_PROXY is honoured: {r}");

    // NO_PROXY exempts a host, even from an explicit --proxy.
    let out = run_env(
        &[("NO_PROXY", "target.invalid")],
        &["-x", &proxy.url(""), "-"],
        target,
    );
    assert_eq!(kind(&records(&out.stdout)[0]), "dns");
}

#[test]
fn spec_lines_mix_with_url_lines() {
    let server = Server::start_in_background();
    let echo = server.url("/echo");
    let input = [
        echo.clone(),
        format!(
            r#"{{"url": "{echo}", "method": "PATCH", "headers": {{"X-A": "spec", "X-B": ["1", "2"]}}, "json": {{"k": [1]}}, "id": "first"}}"#
        ),
        String::new(),
        r#"{"url": "http://x.test/", "id": 1"#.to_owned(),
        r#"{"url": "ftp://x.test/", "id": 42}"#.to_owned(),
        format!(r#"{{"url": "{echo}", "headers": {{"X-A": "a\r\nInjected: yes"}}}}"#),
        format!(r#"{{"url": "{echo}", "body": "raw", "id": 7}}"#),
        format!(r#"{{"url": "{echo}", "mehtod": "GET"}}"#),
    ]
    .join("\n");
    let out = run(&["-H", "X-A: flag", "-H", "X-C: flag"], &input);
    assert_eq!(out.status.code(), Some(1));
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 7);

    let plain = &recs[0]["body"];
    assert_eq!(plain["method"], "GET");
    assert_eq!(plain["headers"]["x-a"], serde_json::json!(["flag"]));

    let spec = &recs[1];
    assert_eq!(spec["id"], "first");
    let sent = &spec["body"];
    assert_eq!(sent["method"], "PATCH");
    assert_eq!(
        sent["headers"]["x-a"],
        serde_json::json!(["spec"]),
        "the spec overrides -H"
    );
    assert_eq!(sent["headers"]["x-b"], serde_json::json!(["1", "2"]));
    assert_eq!(
        sent["headers"]["x-c"],
        serde_json::json!(["flag"]),
        "other -H stay"
    );
    assert_eq!(sent["headers"]["content-type"][0], "application/json");
    assert_eq!(
        sent["body"], r#"{"k": [1]}"#,
        "the JSON as written in the line"
    );

    assert_eq!(
        (kind(&recs[2]), recs[2]["line"].as_u64()),
        ("invalid_spec", Some(4))
    );
    assert_eq!(
        (kind(&recs[3]), recs[3]["line"].as_u64()),
        ("invalid_url", Some(5))
    );
    assert_eq!(recs[3]["id"], 42, "the id survives a bad URL");
    assert_eq!(recs[3]["url"], "ftp://x.test/");
    assert_eq!(kind(&recs[4]), "invalid_spec", "CR/LF in a header value");
    assert_eq!(recs[5]["body"]["method"], "POST");
    assert_eq!(recs[5]["body"]["body"], "raw");
    assert_eq!(recs[5]["id"], 7);
    assert_eq!(kind(&recs[6]), "invalid_spec", "unknown keys are refused");
    assert!(
        recs[6]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mehtod")
    );
    assert_eq!(server.arrivals("/echo").len(), 3);
}

#[test]
fn response_headers_keep_repeats() {
    let server = Server::start_in_background();
    let r = one(&["--headers"], &server.url("/cookies"));
    assert_eq!(
        r["headers"]["set-cookie"],
        serde_json::json!(["a=1", "b=2"])
    );
    assert_eq!(r["headers"]["content-length"], serde_json::json!(["11"]));
    let r = one(&[], &server.url("/cookies"));
    assert!(r.get("headers").is_none());
}

#[test]
fn save_dir_writes_bodies_with_their_hash() {
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("bodies");
    let input = format!(
        "{}\n{}\n{{\"url\": \"{}\", \"id\": \"user/7\"}}\n",
        server.url("/text"),
        server.url("/status/404"),
        server.url("/item/7")
    );
    let out = run(
        &["--save-dir", out_dir.to_str().unwrap(), "--body", "none"],
        &input,
    );
    let recs = by_seq(records(&out.stdout));
    let names: Vec<String> = recs
        .iter()
        .map(|r| {
            let saved = &r["saved"];
            let path = saved["path"].as_str().unwrap();
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(saved["size"].as_u64().unwrap(), bytes.len() as u64);
            assert_eq!(saved["size"], r["bytes"]);
            let sha: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(saved["sha256"].as_str().unwrap(), sha);
            std::path::Path::new(path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // An id is escaped one-to-one (`/` is `%2F`), so `user/7` and `user_7` never collide.
    assert_eq!(names, ["0", "1", "user%2F7"]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("0")).unwrap(),
        "héllo wörld"
    );
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        3,
        "no temp files left"
    );
}

#[test]
fn output_and_summary_files_hold_the_run_and_never_overwrite_an_input() {
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let (out_file, summary) = (
        dir.path().join("records.jsonl"),
        dir.path().join("summary.json"),
    );
    let input = [
        server.url("/ok"),
        server.url("/ok"),
        server.url("/status/503"),
        "nope".to_owned(),
    ]
    .join("\n");
    let out = run(
        &[
            "-o",
            out_file.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
        &input,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(out.stderr.is_empty(), "no summary on a non-terminal stderr");
    assert_eq!(records(&std::fs::read(&out_file).unwrap()).len(), 4);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(
        (
            s["records"].as_u64(),
            s["ok"].as_u64(),
            s["failed"].as_u64()
        ),
        (Some(4), Some(2), Some(2))
    );
    assert_eq!(s["by_status"], serde_json::json!({"200": 2, "503": 1}));
    assert_eq!(
        s["by_error"],
        serde_json::json!({"http_status": 1, "invalid_url": 1})
    );
    let l = &s["latency_ms"];
    assert_eq!(l["requests"], 3);

    // -o never truncates the input or the --resume file.
    let input_file = dir.path().join("urls.txt");
    std::fs::write(&input_file, server.url("/ok")).unwrap();
    let prev_file = dir.path().join("previous.jsonl");
    std::fs::write(&prev_file, "").unwrap();
    let (i, p) = (input_file.to_str().unwrap(), prev_file.to_str().unwrap());
    for args in [vec![i, "-o", i], vec![i, "--resume", p, "-o", p]] {
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("would erase"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&input_file).unwrap(),
        server.url("/ok")
    );
    assert!(l["p50"].as_f64().unwrap() <= l["p99"].as_f64().unwrap());
    assert!(l["p99"].as_f64().unwrap() <= l["max"].as_f64().unwrap());
}

/// `--ordered` with one slow request first: records come out in input order, and while the
/// slow one holds the buffer, no more than the window (2 x concurrency) of requests start.
#[test]
fn ordered_output_is_in_input_order_and_bounded() {
    let server = Server::start_in_background();
    let mut input = vec![server.url("/delay/1000")];
    input.extend((0..30).map(|i| server.url(&format!("/item/{i}"))));
    let out = run(&["--ordered", "-c", "2"], &input.join("\n"));
    assert_eq!(out.status.code(), Some(0));
    let recs = records(&out.stdout);
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..31).collect::<Vec<_>>());

    // Seq 4 cannot start before the slow response, 1000 ms after the slow arrival; seqs 1..=3
    // start at once, so 800 ms sees all of them even on a busy machine.
    let slow = server.arrivals("/delay")[0];
    let during = server
        .arrivals("/item")
        .iter()
        .filter(|t| t.duration_since(slow) < Duration::from_millis(800))
        .count();
    // Window 4: the slow seq 0 plus seqs 1..=3 may start; seq 4 waits for seq 0's record.
    assert_eq!(
        during, 3,
        "requests started while the slow one held the buffer"
    );
}

/// `-k` is `--insecure` (the TLS server is the security tests' self-signed one), and
/// `--insecure=false` overrides a config file or environment that turned it on.
#[tokio::test]
async fn dash_k_skips_tls_verification_and_insecure_false_restores_it() {
    let addr = crate::security::self_signed_server().await;
    let url = format!("https://{addr}/");
    let check = |args: &'static [&'static str], url: String| {
        tokio::task::spawn_blocking(move || one(args, &url))
    };
    let r = check(&["-k"], url.clone()).await.unwrap();
    assert_eq!(r["ok"], true, "{r}");
    let r = check(&["--insecure=false"], url.clone()).await.unwrap();
    assert_eq!(kind(&r), "tls", "{r}");
}

/// `--ordered` with `--resume`: skipped lines get no record and must not stall the order.
#[test]
fn ordered_output_does_not_stall_on_lines_resume_skips() {
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let urls: Vec<String> = (0..40).map(|i| server.url(&format!("/item/{i}"))).collect();
    let input = urls.join("\n");
    // An earlier run that got every third line.
    let previous: String = (0..40)
        .filter(|i| i % 3 == 0)
        .map(|i| {
            format!(
                "{{\"seq\":{i},\"line\":{},\"url\":\"{}\",\"ok\":true,\"status\":200}}\n",
                i + 1,
                urls[i]
            )
        })
        .collect();
    let prev = dir.path().join("previous.jsonl");
    std::fs::write(&prev, previous).unwrap();
    let out = run(
        &["--ordered", "-c", "2", "--resume", prev.to_str().unwrap()],
        &input,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seqs: Vec<u64> = records(&out.stdout)
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..40).filter(|i| i % 3 != 0).collect();
    assert_eq!(seqs, want);
}

/// A SOCKS5 proxy on loopback (no authentication, CONNECT only), in threads: it records the
/// destination of every tunnel and sends each one to `upstream`, whatever was asked, so a host
/// that cannot resolve locally (`*.invalid`) is reachable through it.
fn socks5_proxy(upstream: std::net::SocketAddr) -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut head = [0u8; 2];
                client.read_exact(&mut head)?;
                let mut methods = vec![0u8; usize::from(head[1])];
                client.read_exact(&mut methods)?;
                client.write_all(&[5, 0])?;
                let mut req = [0u8; 4];
                client.read_exact(&mut req)?;
                let host = match req[3] {
                    1 => {
                        let mut ip = [0u8; 4];
                        client.read_exact(&mut ip)?;
                        std::net::Ipv4Addr::from(ip).to_string()
                    }
                    3 => {
                        let mut len = [0u8; 1];
                        client.read_exact(&mut len)?;
                        let mut name = vec![0u8; usize::from(len[0])];
                        client.read_exact(&mut name)?;
                        String::from_utf8_lossy(&name).into_owned()
                    }
                    _ => return Ok(()),
                };
                let mut port = [0u8; 2];
                client.read_exact(&mut port)?;
                seen.lock()
                    .unwrap()
                    .push(format!("{host}:{}", u16::from_be_bytes(port)));
                let server = std::net::TcpStream::connect(upstream)?;
                client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
                let (mut a, mut b) = (client.try_clone()?, server.try_clone()?);
                std::thread::spawn(move || std::io::copy(&mut a, &mut b));
                let (mut a, mut b) = (server, client);
                std::io::copy(&mut a, &mut b)?;
                Ok(())
            });
        }
    });
    (port, asked)
}

/// `-x socks5h://` tunnels through a SOCKS proxy that also resolves the name (a `.invalid`
/// host works only that way); `socks5://` resolves locally and asks for the address.
#[test]
fn socks5h_proxies_resolve_names_and_socks5_gets_addresses() {
    let server = Server::start_in_background();
    let upstream: std::net::SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let (port, asked) = socks5_proxy(upstream);

    let r = one(
        &["-x", &format!("socks5h://127.0.0.1:{port}")],
        "http://target.invalid/echo",
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["body"]["uri"], "/echo", "{r}");
    assert_eq!(asked.lock().unwrap().as_slice(), ["target.invalid:80"]);

    let r = one(
        &["-x", &format!("socks5://127.0.0.1:{port}")],
        &server.url("/echo"),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        asked.lock().unwrap().last().map(String::as_str),
        Some(upstream.to_string().as_str()),
        "socks5:// sends the address, resolved locally"
    );
}

/// `--ordered` over per-host queues and bad lines: two hosts, each limited to 20/s and one
/// request at a time, and bad lines whose records are ready at once, so completion order is
/// not input order; yet every line, the bad ones included, comes out in input order.
#[test]
fn ordered_output_keeps_input_order_across_host_queues_and_bad_lines() {
    let server = Server::start_in_background();
    let other = server.url("/item").replace("127.0.0.1", "localhost");
    let mut input = Vec::new();
    for i in 0..12 {
        input.push(server.url(&format!("/item/{i}")));
        input.push(format!("{other}/{i}"));
        if i % 4 == 1 {
            input.push("not a url".to_owned());
        }
    }
    let out = run(
        &[
            "--ordered",
            "-c",
            "4",
            "--per-host-rate",
            "20/s",
            "--per-host-concurrency",
            "1",
        ],
        &input.join("\n"),
    );
    assert_eq!(out.status.code(), Some(1), "the bad lines fail");
    let recs = records(&out.stdout);
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..input.len() as u64).collect::<Vec<_>>());
    assert_eq!(recs.iter().filter(|r| kind(r) == "invalid_url").count(), 3);
    assert_eq!(recs.iter().filter(|r| r["ok"] == true).count(), 24);
}
