//! Many sockets: high --concurrency against a loopback server, under a low soft limit on open
//! files that fetchall must raise itself.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use crate::server::Server;
use crate::support::{fetchall, records, skip};

/// The soft limit on open files the child inherits: fetchall must raise it to go past it.
const INHERITED_SOFT_LIMIT: libc::rlim_t = 256;

/// Open files kept spare under the hard limit, in each process, for everything but the
/// request sockets (the test process also runs other tests' servers meanwhile).
const SPARE_FILES: libc::rlim_t = 512;

/// Raise this process's open-file soft limit to its hard limit (the server side needs a
/// socket per request too); the hard limit it found.
fn raise_own_limit() -> libc::rlim_t {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_max
}

/// `-c 2000`, or as many as the hard limit on open files allows both processes (each holds a
/// socket per request in flight): more than the inherited soft limit of 256 get in flight at
/// once, never more than the cap, and not one request fails to connect.
#[test]
fn high_concurrency_raises_the_inherited_open_file_limit_with_no_connect_errors() {
    let hard = raise_own_limit();
    let cap = hard.saturating_sub(SPARE_FILES).min(2000);
    // Below twice the inherited limit, "more than 256 at once" would prove too little.
    if cap < 2 * INHERITED_SOFT_LIMIT {
        skip(&format!(
            "the hard open-file limit ({hard}) leaves room for only {cap} sockets; \
             raise it to at least {} (ulimit -Hn)",
            2 * INHERITED_SOFT_LIMIT + SPARE_FILES
        ));
        return;
    }
    let cap = usize::try_from(cap).unwrap();
    let server = Server::start_in_background();
    // Half again as many requests as the cap, so the cap is tested too.
    let n = cap + cap / 2;
    let input: String = (0..n).map(|_| server.url("/delay/1000") + "\n").collect();
    let mut cmd = fetchall();
    cmd.args(["-c", &cap.to_string(), "--body", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe setrlimit between fork and exec. The child starts with
    // a soft limit of 256 open files: `cap` sockets need fetchall to raise it.
    unsafe {
        cmd.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = INHERITED_SOFT_LIMIT;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), n);
    let failed: Vec<_> = recs.iter().filter(|r| r["ok"] != true).take(3).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(out.status.code(), Some(0));
    let max = server.max_in_flight();
    eprintln!("-c {cap}: {n} ok, at most {max} in flight at once");
    assert!(max <= cap, "{max} in flight, more than -c {cap}");
    assert!(
        max > INHERITED_SOFT_LIMIT as usize,
        "more sockets at once than the inherited soft limit: {max}"
    );
}
