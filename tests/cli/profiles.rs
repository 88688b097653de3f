//! Per-host profiles: `[hosts."pattern"]` sections of the config file. Host names under
//! `localhost` (`api.localhost`, `x.localhost`) all reach the one loopback server, and each
//! is a host of its own: that is how one server plays several hosts here.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::server::Server;
use crate::support::{by_seq, kind, max_in_window_f, records, run, start_times};

/// A config file with `text` in a fresh temporary directory (kept alive by the returned guard).
fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fetchall.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `http://NAME:PORT/rest`: the server, under another host name.
fn at(server: &Server, name: &str, rest: &str) -> String {
    format!("http://{name}:{}{rest}", server.addr.port())
}

/// The request headers `/headers` echoed into a record's body.
fn seen(record: &Value) -> &serde_json::Map<String, Value> {
    assert_eq!(record["ok"], true, "{record}");
    record["body"].as_object().unwrap()
}

/// A profile's header reaches its hosts only, on every hop: a redirect out of a matching host
/// loses it (while a top-level header goes on), a redirect into one gains it, and a spec
/// line's header of the same name beats it. Exact names beat globs, longer globs shorter ones.
#[test]
fn profile_headers_go_to_matching_hosts_only_hop_by_hop() {
    let server = Server::start_in_background();
    let (_dir, path) = config(
        r#"
header = ["X-Global: top", "X-Which: top"]

[hosts."api.localhost"]
header = ["Authorization: Bearer s3cret", "X-Which: exact"]

[hosts."*.localhost"]
header = "X-Which: glob"

[hosts."*.v1.localhost"]
header = "X-Which: longer glob"
"#,
    );
    let headers = "/headers";
    let redirect = |from: &str, to: &str| {
        format!(
            "{}?to={}",
            at(&server, from, "/redirect"),
            at(&server, to, headers)
        )
    };
    let input = [
        at(&server, "api.localhost", headers),
        at(&server, "x.localhost", headers),
        redirect("api.localhost", "127.0.0.1"),
        redirect("127.0.0.1", "api.localhost"),
        format!(
            r#"{{"url": "{}", "headers": {{"Authorization": "Bearer spec"}}}}"#,
            at(&server, "api.localhost", headers)
        ),
        at(&server, "a.v1.localhost", headers),
        at(&server, "127.0.0.1", headers),
    ]
    .join("\n");
    let out = run(&["--config", arg(&path)], &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = by_seq(records(&out.stdout));
    let h: Vec<_> = recs.iter().map(seen).collect();
    let auth = |i: usize| h[i].get("authorization").and_then(Value::as_str);
    let which = |i: usize| h[i]["x-which"].as_str().unwrap();
    // The matching host gets the profile's headers, over the top-level ones of that name.
    assert_eq!(auth(0), Some("Bearer s3cret"));
    assert_eq!(
        (which(0), h[0]["x-global"].as_str()),
        ("exact", Some("top"))
    );
    // Another host under the glob: the glob's header, never the exact host's token.
    assert_eq!((auth(1), which(1)), (None, "glob"));
    // Out of the matching host: the token stays behind, the top-level headers go on.
    assert_eq!((auth(2), which(2)), (None, "top"));
    assert_eq!(h[2]["x-global"], "top");
    // Into the matching host: the token is added on that hop.
    assert_eq!((auth(3), which(3)), (Some("Bearer s3cret"), "exact"));
    // The spec line's header beats the profile's.
    assert_eq!((auth(4), which(4)), (Some("Bearer spec"), "exact"));
    assert_eq!(which(5), "longer glob");
    assert_eq!((auth(6), which(6)), (None, "top"));
}

/// An unknown key, a top-level key that is not a per-host setting, a bad value, a bad
/// pattern, one pattern twice: exit 2, the message names the section and the key, no value
/// is quoted, and no file is created.
#[test]
fn bad_host_sections_stop_before_anything_is_created() {
    let cases = [
        (
            "[hosts.\"api.localhost\"]\nconcurency = 2\n",
            "unknown key `concurency`",
        ),
        (
            "[hosts.\"api.localhost\"]\nmax-body = \"1k\"\n",
            "unknown key `max-body`",
        ),
        (
            "[hosts.\"api.localhost\"]\ntimeout = \"soon\"\n",
            "`timeout`",
        ),
        ("[hosts.\"api.localhost\"]\nrate = \"fast\"\n", "`rate`"),
        (
            "[hosts.\"api.localhost\"]\nheader = \"Authorization: s3cret\\u0001\"\n",
            "`header`",
        ),
        (
            "[hosts.\"api.localhost\"]\ntimeout = \"0s\"\n",
            "`timeout` must be greater than zero",
        ),
        (
            "[hosts.\"a.*.localhost\"]\nretries = 1\n",
            "not a host name or a glob",
        ),
        (
            "[hosts.\"API.localhost\"]\nretries = 1\n[hosts.\"api.localhost\"]\nretries = 2\n",
            "given twice",
        ),
        ("hosts = 3\n", "`hosts` must be a table"),
        (
            "[hosts.\"api.localhost\"]\nproxy = \"sock5://u:s3cret@p.localhost:1\"\n",
            "`proxy`: unsupported proxy scheme",
        ),
        // A pattern that could never match a URL's host is refused, not left idle.
        (
            "[hosts.\"api.localhost:8080\"]\nretries = 1\n",
            "a pattern has no port",
        ),
        (
            "[hosts.\"*.127.0.0.1\"]\nretries = 1\n",
            "a glob needs a name",
        ),
    ];
    for (text, says) in cases {
        let (dir, path) = config(text);
        let output = dir.path().join("out.jsonl");
        let summary = dir.path().join("summary.json");
        let out = run(
            &[
                "--config",
                arg(&path),
                "-o",
                arg(&output),
                "--summary",
                arg(&summary),
            ],
            "http://api.localhost:1/\n",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
        if !text.starts_with("hosts =") {
            assert!(err.contains("[hosts."), "{text}: {err}");
        }
        assert!(!err.contains("s3cret"), "{err}");
        assert!(!output.exists() && !summary.exists(), "{text}");
    }
}

/// A profile's rate and cap hold for its host (burst + rate*W starts in any window W, at most
/// `concurrency` in flight), while another host of the same run is held by neither.
#[test]
fn a_profiles_rate_and_cap_hold_on_its_host_only() {
    let server = Server::start_in_background();
    let (_dir, path) = config(
        r#"
[hosts."slow.localhost"]
rate = "8/s"

[hosts."narrow.localhost"]
concurrency = 2
"#,
    );
    let mut input = String::new();
    for i in 0..12 {
        input += &format!("{}\n", at(&server, "slow.localhost", &format!("/item/{i}")));
        input += &format!("{}\n", at(&server, "narrow.localhost", "/delay/300"));
        input += &format!("{}\n", at(&server, "free.localhost", "/delay/300"));
    }
    let out = run(
        &["--config", arg(&path), "-c", "32", "--body", "none"],
        &input,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 36);
    let of = |host: &str| -> Vec<Value> {
        recs.iter()
            .filter(|r| r["url"].as_str().unwrap().contains(host))
            .cloned()
            .collect()
    };
    // 8/s has an automatic burst of 1 (below 50/s): 1 + 8*W starts in any window W.
    let starts = start_times(&of("slow.localhost"));
    for w in [0.1, 0.5, 1.0] {
        let got = max_in_window_f(&starts, w);
        assert!(got as f64 <= 1.0 + 8.0 * w, "{got} starts in {w}s");
    }
    let overlap = |recs: &[Value]| {
        let spans: Vec<(f64, f64)> = recs
            .iter()
            .map(|r| {
                let s = r["started_ms"].as_f64().unwrap();
                (s, s + r["elapsed_ms"].as_f64().unwrap())
            })
            .collect();
        spans
            .iter()
            .map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count())
            .max()
            .unwrap()
    };
    assert!(overlap(&of("narrow.localhost")) <= 2);
    // The other host is not capped: its twelve 300 ms requests overlap.
    assert!(overlap(&of("free.localhost")) > 2);
}

/// A profile's timeout and retries apply to the lines of its hosts; other lines keep the
/// run's.
#[test]
fn a_profiles_timeout_and_retries_apply_to_its_hosts() {
    let server = Server::start_in_background();
    let (_dir, path) = config(
        r#"
[hosts."impatient.localhost"]
timeout = "200ms"
retries = 0
"#,
    );
    let input = [
        at(&server, "impatient.localhost", "/delay/1500"),
        at(&server, "patient.localhost", "/delay/400"),
        at(&server, "impatient.localhost", "/status/503"),
        at(&server, "patient.localhost", "/status/503"),
    ]
    .join("\n");
    let out = run(
        &[
            "--config",
            arg(&path),
            "--retries",
            "2",
            "--retry-base",
            "10ms",
            "--retry-cap",
            "20ms",
        ],
        &input,
    );
    let recs = by_seq(records(&out.stdout));
    assert_eq!(kind(&recs[0]), "timeout", "{}", recs[0]);
    assert_eq!(recs[0]["attempts"], 1);
    assert_eq!(recs[1]["ok"], true, "{}", recs[1]);
    assert_eq!(
        (recs[2]["status"].as_u64(), recs[2]["attempts"].as_u64()),
        (Some(503), Some(1))
    );
    assert_eq!(
        (recs[3]["status"].as_u64(), recs[3]["attempts"].as_u64()),
        (Some(503), Some(3))
    );
}

/// `fetchall config --host` shows the values a host gets, each with its origin (the section
/// and file for the profile's), credentials masked.
#[test]
fn config_host_shows_a_hosts_settings_with_origins_masked() {
    let (_dir, path) = config(
        r#"
header = "Accept: text/html"
timeout = "20s"

[hosts."api.example.test"]
header = ["Authorization: Bearer s3cret", "X-Tenant: t1"]
rate = ["5/s", "100/h"]
concurrency = 2

[hosts."*.example.test"]
timeout = "3s"
user-agent = "probe/1"
"#,
    );
    let file = path.display().to_string();
    let show = |host: &str, extra: &[&str]| {
        let mut args = vec!["config", "--config", arg(&path), "--host", host];
        args.extend(extra);
        let out = run(&args, "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let api = show("api.example.test", &["--timeout", "9s"]);
    assert!(!api.contains("s3cret"), "{api}");
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    assert!(api.contains("# host api.example.test: [hosts.\"api.example.test\"] applies"));
    assert_eq!(
        line(&api, "header"),
        format!(
            "header = [\"Accept: text/html\", \"Authorization: ****\", \"X-Tenant: t1\"]  # config file, then [hosts.\"api.example.test\"] in {file}"
        )
    );
    assert_eq!(
        line(&api, "per-host-rate"),
        format!("per-host-rate = [\"5/s\", \"100/h\"]  # [hosts.\"api.example.test\"] in {file}")
    );
    assert!(line(&api, "per-host-concurrency").starts_with("per-host-concurrency = 2  # [hosts."));
    // The exact section wins whole: the glob's timeout is not mixed in.
    assert_eq!(line(&api, "timeout"), "timeout = \"9s\"  # flag");
    let www = show("https://www.example.test/x", &[]);
    assert!(www.contains("[hosts.\"*.example.test\"] applies"), "{www}");
    assert!(line(&www, "timeout").contains("\"3s\"  # [hosts.\"*.example.test\"]"));
    assert!(line(&www, "user-agent").contains("\"probe/1\""));
    assert_eq!(
        line(&www, "header"),
        "header = [\"Accept: text/html\"]  # config file"
    );
    let none = show("example.test", &[]);
    assert!(
        none.contains("no [hosts.\"pattern\"] section matches"),
        "{none}"
    );
}

/// A line's credential headers stay with its origin across pages as across redirects: a next
/// page on another origin (the server's word) does not get a spec line's or `-H`'s
/// `Authorization`, and a page or redirect into a profiled host gets the profile's, not the
/// line's.
#[test]
fn credentials_stay_with_their_origin_across_pages_and_profiles() {
    let server = Server::start_in_background();
    let (_dir, path) =
        config("[hosts.\"api.localhost\"]\nheader = \"Authorization: Bearer s3cret\"\n");
    let api = at(&server, "api.localhost", "/headers");
    let ip = at(&server, "127.0.0.1", "/headers");
    let spec =
        |url: &str| format!(r#"{{"url": "{url}", "headers": {{"Authorization": "Bearer line"}}}}"#);
    // Each page names the other of the two hosts as its next; `--max-pages 2` ends the line.
    let next = format!(
        r#"if .host | startswith("api.") then "{ip}?p=1" elif .host == "127.0.0.1:{port}" then "{api}?p=1" else null end"#,
        port = server.addr.port()
    );
    let input = [
        spec(&api),
        spec(&ip),
        spec(&format!(
            "{}?to={api}",
            at(&server, "127.0.0.1", "/redirect")
        )),
    ]
    .join("\n");
    let out = run(
        &[
            "--config",
            arg(&path),
            "--next",
            &next,
            "--max-pages",
            "2",
            "-H",
            "X-Api-Key: k-top",
        ],
        &input,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let recs = records(&out.stdout);
    let page = |seq: u64, page: u64| {
        recs.iter()
            .find(|r| r["seq"] == seq && r["page"] == page)
            .unwrap_or_else(|| panic!("no page {page} of line {seq}: {recs:?}"))
    };
    let auth = |r: &Value| seen(r).get("authorization").cloned();
    // api.localhost: the line's own header beats the profile's there ...
    assert_eq!(auth(page(0, 0)).unwrap(), "Bearer line");
    // ... and neither it nor `-H`'s key goes on to the page on 127.0.0.1.
    assert_eq!(auth(page(0, 1)), None, "{}", page(0, 1));
    assert!(seen(page(0, 1)).get("x-api-key").is_none());
    // Into api.localhost, by a page or a redirect: the profile's token, not the line's.
    assert_eq!(auth(page(1, 0)).unwrap(), "Bearer line");
    assert_eq!(auth(page(1, 1)).unwrap(), "Bearer s3cret");
    assert_eq!(auth(page(2, 0)).unwrap(), "Bearer s3cret");
}

/// `config --host` takes a host name, an address or a URL; anything else (empty, a URL
/// without a host, a glob, a name longer than DNS allows, a line break) is one line on stderr
/// and exit 2, without echoing the text. An IPv6 address or an internationalised name is
/// shown in the form a URL's host takes, and so matches its section.
#[test]
fn config_host_refuses_what_is_not_a_host() {
    let (_dir, path) =
        config("[hosts.\"::1\"]\nretries = 1\n[hosts.\"*.bücher.test\"]\nretries = 2\n");
    let long = "a".repeat(300);
    for bad in ["", "http://", "*.localhost", &long, "evil\nheader = \"x\""] {
        let out = run(&["config", "--config", arg(&path), "--host", bad], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
        assert!(out.stdout.is_empty(), "{bad:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("evil") && !err.contains(&long), "{err}");
    }
    for (host, shown, section) in [
        ("::1", "[::1]", "[hosts.\"[::1]\"]"),
        ("http://[::1]:9/", "[::1]", "[hosts.\"[::1]\"]"),
        (
            "a.Bücher.test",
            "a.xn--bcher-kva.test",
            "[hosts.\"*.xn--bcher-kva.test\"]",
        ),
    ] {
        let out = run(&["config", "--config", arg(&path), "--host", host], "");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("# host {shown}: {section} applies")),
            "{host}: {text}"
        );
    }
}

/// Library users build profiles without the CLI: `HostProfile` in `Settings::profiles`.
#[tokio::test]
async fn the_library_takes_profiles_directly() {
    let server = Server::start().await;
    let mut settings = fetchall::Settings::default();
    let mut profile = fetchall::HostProfile::new("api.localhost".parse().unwrap());
    let (name, value) = fetchall::parse_header("X-Api-Key: k1").unwrap();
    profile.headers.append(name, value);
    settings.profiles.push(profile);
    assert!(settings.profile_for("api.localhost").is_some());
    assert!(settings.profile_for("localhost").is_none());
    let input = format!(
        "{}\n{}\n",
        at(&server, "api.localhost", "/headers"),
        at(&server, "127.0.0.1", "/headers")
    );
    let mut run = fetchall::start(settings, Box::pin(std::io::Cursor::new(input))).unwrap();
    let mut got = Vec::new();
    while let Some(r) = run.next().await {
        got.push((r.seq, r.body.unwrap()));
    }
    run.finish().await.unwrap();
    got.sort_by_key(|(seq, _)| *seq);
    assert_eq!(got[0].1["x-api-key"], "k1");
    assert!(got[1].1.get("x-api-key").is_none());
}

/// A profile's proxy carries the requests to its hosts, hop by hop: server B plays the proxy
/// of `proxied.localhost`, and only the hops to that host reach it.
#[test]
fn a_profiles_proxy_carries_its_hosts_hops_only() {
    let target = Server::start_in_background();
    let proxy = Server::start_in_background();
    let (_dir, path) = config(&format!(
        "[hosts.\"proxied.localhost\"]\nproxy = \"http://u:pr0xypw@127.0.0.1:{}\"\n",
        proxy.addr.port()
    ));
    let to = |host: &str| at(&target, host, "/headers");
    let input = [
        to("proxied.localhost"),
        to("direct.localhost"),
        format!(
            "{}?to={}",
            at(&target, "direct.localhost", "/redirect"),
            to("proxied.localhost")
        ),
        format!(
            "{}?to={}",
            at(&target, "proxied.localhost", "/redirect"),
            to("direct.localhost")
        ),
    ]
    .join("\n");
    let out = run(&["--config", arg(&path)], &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = by_seq(records(&out.stdout));
    // Basic auth for the proxy goes to the proxy only.
    let proxied = seen(&recs[0]);
    assert!(proxied.contains_key("proxy-authorization"), "{proxied:?}");
    assert!(!seen(&recs[1]).contains_key("proxy-authorization"));
    assert!(seen(&recs[3]).get("proxy-authorization").is_none());
    assert_eq!((proxy.requests(), target.requests()), (3, 3));
    let shown = run(
        &[
            "config",
            "--config",
            arg(&path),
            "--host",
            "proxied.localhost",
        ],
        "",
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains(&format!(
            "proxy = \"http://u:****@127.0.0.1:{}/\"",
            proxy.addr.port()
        )),
        "{shown}"
    );
    assert!(!shown.contains("pr0xypw"));
}
