//! The binary end to end: input forms, record format, error kinds, exit codes, pipes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::server::{Server, refused_port};
use crate::support::{by_seq, fetchall, kind, records, run};

#[test]
fn one_record_per_url_line_and_every_seq_once() {
    let server = Server::start_in_background();
    let mut input = String::from("# a comment\n\n");
    let mut expected_lines = Vec::new();
    let mut line = 2;
    for i in 0..300 {
        line += 1;
        if i % 50 == 7 {
            input.push_str("   # skipped\n");
            line += 1;
        }
        if i % 37 == 5 {
            input.push_str("no-scheme.example/x\n");
        } else {
            input.push_str(&format!("  {}  \n", server.url(&format!("/item/{i}"))));
        }
        expected_lines.push(line);
    }
    let out = run(&["-c", "8"], &input);
    assert_eq!(out.status.code(), Some(1), "some lines are invalid");
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs.len(), 300);
    let seqs: BTreeSet<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..300).collect());
    for (r, want_line) in recs.iter().zip(&expected_lines) {
        assert_eq!(r["line"].as_u64().unwrap(), *want_line as u64, "{r}");
    }
    let invalid = recs.iter().filter(|r| kind(r) == "invalid_url").count();
    assert_eq!(invalid, (0..300).filter(|i| i % 37 == 5).count());
    assert_eq!(server.requests(), 300 - invalid);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn each_failure_is_a_record_with_its_own_error_kind() {
    let server = Server::start_in_background();
    let input = [
        format!("http://127.0.0.1:{}/", refused_port()),
        server.url("/delay/3000"),
        server.url("/status/404"),
        "file:///etc/passwd".to_owned(),
        server.url("/redirect-loop"),
        "http://nowhere.invalid/".to_owned(),
        server.url("/big/2000"),
        server.url("/ok"),
    ]
    .join("\n");
    let out = run(&["--timeout", "300ms", "--max-body", "1000"], &input);
    assert_eq!(out.status.code(), Some(1));
    let recs = by_seq(records(&out.stdout));
    let kinds: Vec<&str> = recs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [
            "connect",
            "timeout",
            "http_status",
            "invalid_url",
            "redirect",
            "dns",
            "too_large",
            ""
        ]
    );
    assert_eq!(recs[2]["status"], 404);
    assert_eq!(
        recs[2]["body"]["status"], 404,
        "an error status keeps its body"
    );
    assert_eq!(recs[3]["line"], 4);
    assert_eq!(recs[7]["ok"], true);
}

#[test]
fn bodies_are_json_text_or_base64() {
    let server = Server::start_in_background();
    let input = [server.url("/ok"), server.url("/text"), server.url("/bin")].join("\n");
    let out = run(&[], &input);
    assert_eq!(out.status.code(), Some(0));
    let recs = by_seq(records(&out.stdout));
    assert_eq!(recs[0]["body"]["ok"], true);
    assert_eq!(recs[0]["body_encoding"], "json");
    assert_eq!(recs[1]["body"], "héllo wörld");
    assert_eq!(recs[1]["body_encoding"], "text");
    assert_eq!(recs[2]["body"], "AJ//Cg==");
    assert_eq!(recs[2]["body_encoding"], "base64");
    assert_eq!(recs[2]["bytes"], 4);

    let out = run(&["--body", "none"], &input);
    for r in records(&out.stdout) {
        assert!(
            r.get("body").is_none() && r["bytes"].as_u64().unwrap() > 0,
            "{r}"
        );
    }
}

#[test]
fn reads_a_file_or_stdin_dash() {
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("urls.txt");
    std::fs::write(
        &file,
        format!("{}\n{}\n", server.url("/ok"), server.url("/text")),
    )
    .unwrap();
    let out = run(&[file.to_str().unwrap()], "");
    assert_eq!(records(&out.stdout).len(), 2);
    let out = run(&["-"], &server.url("/ok"));
    assert_eq!(records(&out.stdout).len(), 1);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unreadable_input_is_one_line_and_exit_2() {
    for path in ["/nonexistent/urls.txt", "/"] {
        let out = run(&[path], "");
        assert_eq!(out.status.code(), Some(2), "{path}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(path), "{err}");
    }
    let out = run(&["--rate", "ten/s"], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn flags_override_the_config_file_and_unknown_keys_are_refused() {
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fetchall.toml");
    std::fs::write(&config, "concurrency = 2\nbody = \"none\"\n").unwrap();
    let input: String = (0..12).map(|_| server.url("/delay/100") + "\n").collect();
    let out = run(&["--config", config.to_str().unwrap()], &input);
    assert_eq!(out.status.code(), Some(0));
    assert!(records(&out.stdout).iter().all(|r| r.get("body").is_none()));
    assert_eq!(server.max_in_flight(), 2, "the file's concurrency applies");

    let server = Server::start_in_background();
    let input: String = (0..12).map(|_| server.url("/delay/100") + "\n").collect();
    let out = run(&["--config", config.to_str().unwrap(), "-c", "4"], &input);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(server.max_in_flight(), 4, "the flag overrides the file");

    std::fs::write(&config, "concurency = 2\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("concurency") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn the_shipped_config_file_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/fetchall.toml");
    let out = run(&["--config", path], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `fetchall urls.txt | head -n 1`: the reader leaves early; fetchall exits 0, quietly.
#[test]
fn closed_stdout_exits_zero_quietly() {
    let server = Server::start_in_background();
    let input: String = (0..3000)
        .map(|i| server.url(&format!("/item/{i}")) + "\n")
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("urls.txt");
    std::fs::write(&file, input).unwrap();
    let mut child = fetchall()
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_ok());
    drop(stdout);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fetchall did not exit after its reader left"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(stderr, "");
}

#[test]
fn verbose_logs_go_to_stderr_and_stdout_holds_only_records() {
    let server = Server::start_in_background();
    let out = run(&["-vv"], &server.url("/ok"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(records(&out.stdout).len(), 1);
}

#[test]
fn credentials_in_urls_are_masked() {
    let server = Server::start_in_background();
    let url = format!("http://user:s3cret@{}/ok", server.addr);
    let out = run(&[], &url);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("user:****@"), "{text}");
}

#[test]
fn demo_replays_the_three_lessons() {
    let out = fetchall().arg("demo").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let secs = |label: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("{label} in {text}"));
        line.split(':')
            .nth(1)
            .unwrap()
            .trim()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Guarantees, not speed: sequential waits add up, concurrent ones overlap.
    assert!(secs("one at a time") >= 6.0, "{text}");
    assert!(
        secs("all together") >= 3.0 && secs("all together") < secs("one at a time"),
        "{text}"
    );
    let starts: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("started at"))
        .map(|l| {
            l.split("started at ")
                .nth(1)
                .unwrap()
                .trim_end_matches(" s")
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(starts.len(), 4);
    assert_eq!(
        starts.iter().filter(|s| **s >= 2.0).count(),
        2,
        "two waves: {starts:?}"
    );
    let recs: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('{').map(|r| format!("{{{r}")))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    recs.iter().for_each(crate::support::validate);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs.iter().filter(|r| kind(r) == "http_status").count(), 1);
    assert_eq!(recs.iter().filter(|r| r["ok"] == true).count(), 2);
}

/// `--threads`: one thread (the default), one per core, or a fixed count; every count runs
/// the same pipeline, so each gives one ok record per line and keeps the in-flight cap.
#[test]
fn any_runtime_thread_count_gives_the_same_records() {
    for threads in ["1", "0", "3"] {
        let server = Server::start_in_background();
        let input: String = (0..200)
            .map(|i| server.url(&format!("/delay/5?i={i}")) + "\n")
            .collect();
        let out = run(&["-c", "16", "--threads", threads], &input);
        assert_eq!(out.status.code(), Some(0), "--threads {threads}");
        let recs = by_seq(records(&out.stdout));
        assert_eq!(recs.len(), 200, "--threads {threads}");
        assert!(recs.iter().all(|r| r["ok"] == true), "--threads {threads}");
        assert!(server.max_in_flight() <= 16, "--threads {threads}");
    }
}
