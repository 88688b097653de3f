//! Helpers: run the binary, parse and validate its records against the published schema, and
//! decide whether a test whose environment falls short may skip (never under CI).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/record.schema.json"
        ))
        .unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        jsonschema::validator_for(&schema).expect("docs/record.schema.json is a valid schema")
    })
}

/// Check one record against docs/record.schema.json; panic with the record and the errors.
pub fn validate(record: &Value) {
    let errors: Vec<String> = schema()
        .iter_errors(record)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "record does not match the schema: {record}\n{errors:#?}"
    );
}

/// Parse stdout as JSON lines, validating each one.
pub fn records(stdout: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stdout).expect("stdout is UTF-8");
    text.lines()
        .map(|line| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            validate(&v);
            v
        })
        .collect()
}

/// The binary, isolated from the environment of whoever runs the tests: no RUST_LOG, no
/// FETCHALL_* variables, no proxy variables, no user config file.
pub fn fetchall() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fetchall"));
    isolate(&mut cmd);
    cmd
}

/// Keep the environment of whoever runs the tests out of `cmd` (and of any fetchall it runs).
pub fn isolate(cmd: &mut Command) {
    cmd.env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy().to_ascii_uppercase();
        if n.starts_with("FETCHALL_") || n.ends_with("_PROXY") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("XDG_CONFIG_HOME", "/nonexistent/fetchall-tests");
}

/// Run the binary with `stdin` piped in.
pub fn run(args: &[&str], stdin: &str) -> Output {
    run_env(&[], args, stdin)
}

/// [`run`] with extra environment variables.
pub fn run_env(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut child = fetchall()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Records sorted by seq.
pub fn by_seq(mut records: Vec<Value>) -> Vec<Value> {
    records.sort_by_key(|r| r["seq"].as_u64().unwrap());
    records
}

pub fn kind(record: &Value) -> &str {
    record["error"]["kind"].as_str().unwrap_or("")
}

/// What a run of the binary produced, and the most memory it held.
pub struct Measured {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Peak resident set size of the fetchall process, in KiB (its `VmHWM`).
    pub max_rss_kib: i64,
    pub wall: std::time::Duration,
}

/// Run the binary like [`run`], and measure its peak memory: `VmHWM` of the child's own
/// address space, sampled every 2 ms until it exits. (`ru_maxrss` from `wait4` would not do:
/// a forked child starts with the test process's resident set, and exec keeps that high-water
/// mark, so a test process grown by earlier tests made the child look that big.)
pub fn run_measured(args: &[&str], stdin: &str) -> Measured {
    let started = std::time::Instant::now();
    let mut child = fetchall()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    // `spawn` returns once the exec has happened, so every sample is fetchall's own.
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0i64;
    let status = loop {
        if let Ok(st) = std::fs::read_to_string(&status_file)
            && let Some(kib) = st
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let wall = started.elapsed();
    writer.join().unwrap();
    Measured {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        max_rss_kib: peak_kib,
        wall,
    }
}

/// The most of `sorted` (instants in seconds, ascending) that fall in any window of `w`
/// seconds, ends included.
pub fn max_in_window_f(sorted: &[f64], w: f64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..sorted.len() {
        while sorted[hi] - sorted[lo] > w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// Whether the `CI` environment variable is set: there a test never passes by skipping.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// A test that cannot run here, for `reason`: under CI it fails (panics); elsewhere it says so
/// on one line of stderr, and the caller returns. The line goes to stderr itself, not through
/// `eprintln!`, which the test harness captures and hides when the test passes.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(
        !in_ci(),
        "{test} cannot run: {reason}; CI is set, so it fails instead of skipping"
    );
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
}

/// Whether the external program `name` runs (`name version_arg` starts and exits 0). When it
/// does not, the test fails under CI and skips elsewhere (see [`skip`]): `false` means return.
pub fn require_tool(name: &str, version_arg: &str) -> bool {
    let ran = Command::new(name)
        .arg(version_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => true,
        Ok(status) => {
            skip(&format!("`{name} {version_arg}` failed ({status})"));
            false
        }
        Err(e) => {
            skip(&format!(
                "{name} is not installed ({e}); apt-get install {name}"
            ));
            false
        }
    }
}

/// Slack for counting arrivals at the in-process test server, in seconds. The limiter's bound
/// is exact on the client's start times (`started_ms`), which every rate test checks first;
/// the server's own timestamps come after loopback and after the server thread gets the CPU,
/// which on a 2-core machine running other tests in parallel can lag a start by tens of
/// milliseconds.
pub const ARRIVAL_JITTER: f64 = 0.05;

/// The records' start times (`started_ms`) in seconds, ascending: where the limiter's bounds
/// are exact.
pub fn start_times(records: &[Value]) -> Vec<f64> {
    let mut starts: Vec<f64> = records
        .iter()
        .map(|r| r["started_ms"].as_f64().unwrap() / 1000.0)
        .collect();
    starts.sort_by(f64::total_cmp);
    starts
}
