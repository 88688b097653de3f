//! Rate-limit accuracy benchmark: run the `fetchall` binary against a loopback server that
//! records when each request arrives, at several `--rate`s, and report the achieved mean rate,
//! its error against the target, and the most arrivals in any one-second window. Also draws
//! the arrivals over time, with the target line, as an SVG.
//!
//! Usage (see bench/rate.sh): `rate_bench <path to fetchall> [<svg output>]`
//! Environment: `RATE_BENCH_SCALE=0.5` shortens every run (for a quick look).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

/// One run: the rate, how long to run, extra flags, and its label.
struct Case {
    rate: u32,
    seconds: f64,
    extra: &'static [&'static str],
    label: &'static str,
}

const CASES: &[Case] = &[
    Case {
        rate: 1,
        seconds: 8.0,
        extra: &[],
        label: "1/s",
    },
    Case {
        rate: 10,
        seconds: 6.0,
        extra: &[],
        label: "10/s",
    },
    Case {
        rate: 100,
        seconds: 5.0,
        extra: &[],
        label: "100/s",
    },
    Case {
        rate: 1000,
        seconds: 5.0,
        extra: &[],
        label: "1000/s",
    },
    Case {
        rate: 5000,
        seconds: 5.0,
        extra: &[],
        label: "5000/s",
    },
    Case {
        rate: 1,
        seconds: 8.0,
        extra: &["--burst", "1"],
        label: "1/s --burst 1",
    },
    Case {
        rate: 10,
        seconds: 6.0,
        extra: &["--burst", "1"],
        label: "10/s --burst 1",
    },
    Case {
        rate: 100,
        seconds: 5.0,
        extra: &["--burst", "1"],
        label: "100/s --burst 1",
    },
    Case {
        rate: 1000,
        seconds: 5.0,
        extra: &["--burst", "1"],
        label: "1000/s --burst 1",
    },
    Case {
        rate: 5000,
        seconds: 5.0,
        extra: &["--burst", "1"],
        label: "5000/s --burst 1",
    },
];

struct Outcome {
    label: &'static str,
    rate: f64,
    burst: usize,
    arrivals: Vec<f64>,
    mean: f64,
    max_1s: usize,
    /// The most request starts (the records' `started_ms`) in any 1 s window.
    max_1s_client: usize,
    records: usize,
    /// fetchall's user + system CPU over the run, in % of one core.
    cpu_pct: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(bin) = args.get(1) else {
        eprintln!("usage: rate_bench <path to fetchall> [<svg output>]");
        std::process::exit(2);
    };
    let svg_path = args.get(2).cloned();
    let scale: f64 = std::env::var("RATE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let addr = rt.block_on(async {
        let app = Router::new().route("/r/{n}", get(|| async { "ok" })).layer(
            axum::middleware::from_fn_with_state(
                Arc::clone(&arrivals),
                |State(a): State<Arc<Mutex<Vec<Instant>>>>,
                 req: axum::extract::Request,
                 next: axum::middleware::Next| async move {
                    a.lock().expect("lock").push(Instant::now());
                    next.run(req).await
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });

    let mut outcomes = Vec::new();
    for case in CASES {
        arrivals.lock().expect("lock").clear();
        let seconds = case.seconds * scale;
        let n = (f64::from(case.rate) * seconds).round() as usize + 1;
        let rate = format!("{}/s", case.rate);
        let mut cmd = Command::new(bin);
        cmd.args(["--rate", &rate, "--body", "none", "-v"])
            .args(case.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let cpu_before = children_cpu_seconds();
        let run_started = Instant::now();
        let mut child = cmd.spawn().expect("run fetchall");
        let mut stdin = child.stdin.take().expect("stdin");
        let urls: String = (0..n).map(|i| format!("http://{addr}/r/{i}\n")).collect();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(urls.as_bytes());
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut started: Vec<f64> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .filter_map(|r| r["started_ms"].as_f64())
            .map(|ms| ms / 1000.0)
            .collect();
        started.sort_by(f64::total_cmp);
        let records = started.len();
        let output = child.wait_with_output().expect("wait");
        let cpu_pct =
            100.0 * (children_cpu_seconds() - cpu_before) / run_started.elapsed().as_secs_f64();
        let _ = writer.join();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The gate logs "rate 5000/s: burst 101" at info level.
        let burst = stderr
            .lines()
            .find_map(|l| l.split("burst ").nth(1))
            .and_then(|b| b.trim().parse().ok())
            .unwrap_or(1);

        let mut times = arrivals.lock().expect("lock").clone();
        times.sort();
        let t0 = times[0];
        let rel: Vec<f64> = times
            .iter()
            .map(|t| t.duration_since(t0).as_secs_f64())
            .collect();
        // GCRA lets `burst` starts out at once, then one per interval: the long-run rate is
        // the slope after that (and after the first tenth of the run, while connections are
        // still being opened), up to the last arrival.
        let first = (burst - 1).max(rel.len() / 10).min(rel.len() - 2);
        let last = rel.len() - 1;
        let mean = (last - first) as f64 / (rel[last] - rel[first]);
        let max_1s = max_in_window(&rel, 1.0);
        outcomes.push(Outcome {
            label: case.label,
            rate: f64::from(case.rate),
            burst,
            arrivals: rel,
            mean,
            max_1s,
            max_1s_client: max_in_window(&started, 1.0),
            records,
            cpu_pct,
        });
        let o = outcomes.last().expect("pushed");
        eprintln!(
            "{:>18}: {} requests, mean {:.2}/s",
            o.label,
            o.arrivals.len(),
            o.mean
        );
    }

    println!(
        "| target | burst | requests | achieved mean | error | most starts in 1 s (client) | most arrivals in 1 s (server) | bound burst + rate | fetchall CPU (% of a core) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let err = (o.mean - o.rate) / o.rate * 100.0;
        println!(
            "| {} | {} | {} | {:.2}/s | {:+.2}% | {} | {} | {} | {:.1}% |",
            o.label,
            o.burst,
            o.records,
            o.mean,
            err,
            o.max_1s_client,
            o.max_1s,
            o.burst + o.rate as usize,
            o.cpu_pct
        );
    }
    if let Some(path) = svg_path {
        let plotted: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.label.ends_with("/s"))
            .collect();
        std::fs::write(&path, svg(&plotted)).expect("write the SVG");
        eprintln!("wrote {path}");
    }
}

/// User + system CPU seconds of this process's waited-for children (`cutime` + `cstime` in
/// /proc/self/stat, in clock ticks of 10 ms).
fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the ")": state is field 0, so cutime and cstime (fields 16 and 17 of the whole
    // line, 1-based) are 13 and 14 here.
    let ticks: f64 = [13, 14]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Most of the sorted `times` within any closed window of `w` seconds.
fn max_in_window(times: &[f64], w: f64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] > w {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best
}

/// One panel per rate: cumulative arrivals over time (blue) and the target rate*t (dashed).
fn svg(outcomes: &[&Outcome]) -> String {
    let (pw, ph, pad) = (220.0, 200.0, 40.0);
    let width = pad + outcomes.len() as f64 * (pw + pad);
    let height = 2.0 * ph + 3.5 * pad + 14.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{pad}" y="16" font-size="13">fetchall --rate R, default burst. Top: arrivals at the server, cumulative (blue), and the bound burst + R×t (dashed red).</text><text x="{pad}" y="30" font-size="13">Bottom: arrivals per second (blue) in bins of a whole number of intervals, and R (dashed red).</text>"#
    );
    for (i, o) in outcomes.iter().enumerate() {
        let x0 = pad + i as f64 * (pw + pad);
        let y0 = pad + 14.0;
        let t_max = o.arrivals.last().copied().unwrap_or(1.0).max(1e-3);
        let n_max = o.arrivals.len() as f64;
        let sx = |t: f64| x0 + t / t_max * pw;
        let sy = |n: f64| y0 + ph - n / n_max * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        // Cumulative arrivals, thinned to at most ~400 points.
        let step = (o.arrivals.len() / 400).max(1);
        let mut points = String::new();
        for (k, t) in o.arrivals.iter().enumerate().step_by(step) {
            let _ = write!(points, "{:.1},{:.1} ", sx(*t), sy((k + 1) as f64));
        }
        let last = o.arrivals.len();
        let _ = write!(points, "{:.1},{:.1}", sx(t_max), sy(last as f64));
        let _ = writeln!(
            s,
            r##"<polyline points="{points}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
        );
        // The bound: burst + rate*t from the first arrival.
        let burst = o.burst as f64;
        let t_end = ((n_max - burst) / o.rate).clamp(0.0, t_max);
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5,4"/>"##,
            sx(0.0),
            sy(burst),
            sx(t_end),
            sy(burst + o.rate * t_end)
        );
        let err = (o.mean - o.rate) / o.rate * 100.0;
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="{}" font-size="12" font-weight="bold">{}</text>"#,
            y0 - 6.0,
            o.label
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">mean {:.1}/s ({:+.2}%), burst {}</text>"#,
            x0 + 6.0,
            y0 + 16.0,
            o.mean,
            err,
            o.burst
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">max {} in any 1 s</text>"#,
            x0 + 6.0,
            y0 + 30.0,
            o.max_1s
        );
        let _ = writeln!(
            s,
            r#"<text x="{x0}" y="{}">0</text><text x="{}" y="{}" text-anchor="end">{:.1} s</text>"#,
            y0 + ph + 14.0,
            x0 + pw,
            y0 + ph + 14.0,
            t_max
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 - 3.0,
            y0 + 10.0,
            o.arrivals.len()
        );

        // Bottom panel: the rate per bin, y from 0 to twice the target. A bin is a whole number
        // of intervals (about 40 bins in all), so a perfectly paced run draws a flat line
        // instead of aliasing between 1 and 2 arrivals per bin; bins start half an interval
        // early, so an arrival a little late or early stays in its bin. The partial last bin
        // is left out.
        let y1 = y0 + ph + pad;
        let per_bin = (o.rate * t_max / 40.0).ceil().max(1.0);
        let width_s = per_bin / o.rate;
        let bins = ((t_max / width_s).floor() as usize).max(1);
        let mut counts = vec![0usize; bins];
        for t in &o.arrivals {
            if let Some(c) = counts.get_mut(((t + 0.5 / o.rate) / width_s) as usize) {
                *c += 1;
            }
        }
        let ry = |r: f64| y1 + ph - (r / (2.0 * o.rate)).min(1.0) * ph;
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y1}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        let mut steps = String::new();
        for (b, c) in counts.iter().enumerate() {
            let r = *c as f64 / width_s;
            let xa = x0 + b as f64 / bins as f64 * pw;
            let xb = x0 + (b + 1) as f64 / bins as f64 * pw;
            let _ = write!(steps, "{xa:.1},{:.1} {xb:.1},{:.1} ", ry(r), ry(r));
        }
        let _ = writeln!(
            s,
            r##"<polyline points="{steps}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5,4"/>"##,
            ry(o.rate),
            x0 + pw,
            ry(o.rate)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{}" y="{:.1}" text-anchor="end">{}</text><text x="{}" y="{:.1}" text-anchor="end">0</text>"#,
            x0 - 3.0,
            y1 + 10.0,
            2.0 * o.rate,
            x0 - 3.0,
            ry(o.rate) + 4.0,
            o.rate,
            x0 - 3.0,
            y1 + ph
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{pad}" y="{}">x: seconds since the first arrival. The first bin includes the initial burst. Command: bench/rate.sh</text>"#,
        height - 8.0
    );
    s.push_str("</svg>\n");
    s
}
