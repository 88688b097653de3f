//! Config precedence (defaults < file < FETCHALL_* < flags), `fetchall config`, completions,
//! the man page, and the progress line in a real terminal.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::Server;
use crate::support::{fetchall, records, require_tool};

/// `fetchall config` with `args` and `env`; its lines, keyed.
fn effective(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = fetchall()
        .arg("config")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} in {text}"))
}

#[test]
fn config_precedence_is_defaults_then_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "concurrency = 2\ntimeout = \"5s\"\nbody = \"none\"\nheader = [\"X-From: file\"]\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();

    let text = effective(&["--config", file_arg], &[]);
    assert_eq!(line(&text, "concurrency"), "concurrency = 2  # config file");
    assert!(text.contains("# burst is not set"), "{text}");
    assert_eq!(
        line(&text, "header"),
        "header = [\"X-From: file\"]  # config file"
    );
    assert!(text.contains(file_arg), "{text}");

    let env = [("FETCHALL_CONCURRENCY", "3"), ("FETCHALL_TIMEOUT", "7s")];
    let text = effective(&["--config", file_arg], &env);
    let retries = effective(
        &[],
        &[("FETCHALL_RETRIES", "5"), ("FETCHALL_INSECURE", "1")],
    );
    assert_eq!(
        line(&retries, "retries"),
        "retries = 5  # environment FETCHALL_RETRIES"
    );
    assert_eq!(
        line(&retries, "insecure"),
        "insecure = true  # environment FETCHALL_INSECURE"
    );
    let secret = effective(&["-H", "Authorization: Bearer s3cret", "-H", "X-A: 1"], &[]);
    assert_eq!(
        line(&secret, "header"),
        "header = [\"Authorization: ****\", \"X-A: 1\"]  # flag"
    );
    assert_eq!(
        line(&text, "concurrency"),
        "concurrency = 3  # environment FETCHALL_CONCURRENCY"
    );
    assert_eq!(
        line(&text, "timeout"),
        "timeout = \"7s\"  # environment FETCHALL_TIMEOUT"
    );
    assert_eq!(line(&text, "body"), "body = \"none\"  # config file");

    let text = effective(&["--config", file_arg, "-c", "4"], &env);
    assert_eq!(line(&text, "concurrency"), "concurrency = 4  # flag");
    assert_eq!(
        line(&text, "timeout"),
        "timeout = \"7s\"  # environment FETCHALL_TIMEOUT"
    );

    // Without --config: the user's config directory.
    let home = dir.path().join("xdg");
    std::fs::create_dir_all(home.join("fetchall")).unwrap();
    std::fs::write(home.join("fetchall/config.toml"), "burst = 9\n").unwrap();
    let text = effective(&[], &[("XDG_CONFIG_HOME", home.to_str().unwrap())]);
    assert_eq!(line(&text, "burst"), "burst = 9  # config file");
    // FETCHALL_CONFIG names the file like --config does.
    let text = effective(&[], &[("FETCHALL_CONFIG", file_arg)]);
    assert_eq!(line(&text, "concurrency"), "concurrency = 2  # config file");

    // The printed configuration is itself a valid config file.
    let printed = dir.path().join("printed.toml");
    std::fs::write(
        &printed,
        effective(&["--config", file_arg, "-r", "5/s"], &[]),
    )
    .unwrap();
    let again = effective(&["--config", printed.to_str().unwrap()], &[]);
    assert_eq!(line(&again, "rate"), "rate = [\"5/s\"]  # config file");
}

/// The same precedence in a real run: the environment beats the file, a flag beats both.
#[test]
fn environment_beats_the_file_in_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "concurrency = 2\n").unwrap();
    for (env, flag, want) in [
        (None, None, 2),
        (Some("3"), None, 3),
        (Some("3"), Some("4"), 4),
    ] {
        let server = Server::start_in_background();
        let input: String = (0..12).map(|_| server.url("/delay/150") + "\n").collect();
        let mut cmd = fetchall();
        cmd.args(["--config", file.to_str().unwrap(), "--body", "none"]);
        if let Some(c) = env {
            cmd.env("FETCHALL_CONCURRENCY", c);
        }
        if let Some(c) = flag {
            cmd.args(["-c", c]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(records(&out.stdout).len(), 12);
        assert_eq!(server.max_in_flight(), want, "env {env:?} flag {flag:?}");
    }
}

#[test]
fn completions_and_man_page_list_the_flags() {
    for (shell, needle) in [
        ("bash", "--max-redirects"),
        ("zsh", "--save-dir"),
        ("fish", "ordered"),
        ("elvish", "--proxy"),
        ("powershell", "--summary"),
    ] {
        let out = fetchall().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(needle), "{shell} completion lacks {needle}");
    }
    let out = fetchall().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH fetchall 1"),
        "{man}"
    );
    assert!(
        man.contains("max\\-redirects"),
        "the man page lists the flags"
    );
}

/// The progress line, seen in a real terminal: tmux runs fetchall in a pane and the test
/// reads the screen with capture-pane while it runs. The first run also logs (-vv), which must
/// not garble the line.
#[test]
fn progress_line_shows_counts_clears_at_the_end_and_logs_do_not_garble_it() {
    if !require_tool("tmux", "-V") {
        return;
    }
    let server = Server::start_in_background();
    let dir = tempfile::tempdir().unwrap();
    let urls = dir.path().join("urls.txt");
    let mut input = String::from("# twelve slow URLs and a bad line\n");
    for _ in 0..12 {
        input.push_str(&(server.url("/delay/250") + "\n"));
    }
    input.push_str("not-a-url\n");
    std::fs::write(&urls, input).unwrap();
    let bin = env!("CARGO_BIN_EXE_fetchall");
    let script = format!(
        "{bin} {urls} -c 2 -vv > {out1}; echo DONE1; {bin} -q {urls} -c 13 > {out2}; echo DONE2; \
         cat {urls} | {bin} -c 2 > {out2}; echo DONE3; sleep 60",
        urls = urls.display(),
        out1 = dir.path().join("out1").display(),
        out2 = dir.path().join("out2").display(),
    );
    let socket = format!("fetchall-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .env_remove("TMUX")
            .env("XDG_CONFIG_HOME", "/nonexistent/fetchall-tests")
            .output()
            .unwrap()
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "20",
        "-s",
        "t",
        &script,
    ]);
    assert!(started.status.success(), "{started:?}");

    let mut seen_progress = Vec::new();
    let mut screen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        screen =
            String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned();
        if let Some(l) = screen
            .lines()
            .find(|l| l.contains(" ok ") && l.contains("failed"))
        {
            seen_progress.push(l.trim().to_owned());
        }
        // The first run logs at debug level (-vv) while its line shows: each log line is
        // written with the progress line taken off the screen, so none shares a row with it.
        let garbled = screen
            .lines()
            .find(|l| l.contains("DEBUG") && (l.contains("ETA") || l.contains(" done ")));
        assert!(
            garbled.is_none(),
            "a log line over the progress line: {screen}"
        );
        if screen.contains("DONE3") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&["kill-server"]);

    assert!(screen.contains("DONE3"), "the runs finished: {screen}");
    // While running: done/total (the file's 13 URL lines), rate, counts, ETA.
    let with_total = seen_progress
        .iter()
        .find(|l| l.contains("/13") && l.contains("ETA"))
        .unwrap_or_else(|| panic!("no progress line with a total: {seen_progress:?}\n{screen}"));
    assert!(with_total.contains("/s"), "{with_total}");
    // At the end: the line is gone and the summary is there.
    let first_run = screen.split("DONE1").next().unwrap();
    assert!(
        first_run.contains("13 records in") && first_run.contains("12 ok, 1 failed"),
        "{screen}"
    );
    assert!(
        first_run.contains("p50") && first_run.contains("invalid_url x1"),
        "{screen}"
    );
    assert!(
        !first_run.contains("ETA"),
        "the progress line is cleared: {screen}"
    );
    // -q: nothing between the two markers.
    let quiet = screen
        .split("DONE1")
        .nth(1)
        .unwrap()
        .split("DONE2")
        .next()
        .unwrap();
    assert_eq!(quiet.trim(), "", "-q shows no progress and no summary");
    // From stdin the total is unknown: a count, a rate, no bar and no ETA.
    assert!(
        seen_progress
            .iter()
            .any(|l| l.contains(" done ") && !l.contains("/13") && !l.contains("ETA")),
        "{seen_progress:?}"
    );
}

/// config/fetchall.toml documents every option `fetchall config` knows.
#[test]
fn the_shipped_config_lists_every_option() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/fetchall.toml"))
            .unwrap();
    let text = effective(&[], &[]);
    for l in text
        .lines()
        .filter(|l| !l.starts_with("# fetchall") && !l.starts_with("# config file"))
    {
        let key = l.trim_start_matches("# ").split([' ', '=']).next().unwrap();
        assert!(
            shipped.contains(&format!("\n{key} = ")) || shipped.contains(&format!("\n# {key} = ")),
            "config/fetchall.toml does not mention {key}"
        );
    }
}

/// `fetchall config` can be pasted into an issue: a proxy's password is masked.
#[test]
fn config_masks_the_proxy_password() {
    let text = effective(&["-x", "socks5h://bob:hunter2@127.0.0.1:1080"], &[]);
    assert_eq!(
        line(&text, "proxy"),
        "proxy = \"socks5h://bob:****@127.0.0.1:1080\"  # flag"
    );
    assert!(!text.contains("hunter2"), "{text}");
}
