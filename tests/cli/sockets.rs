//! Many sockets: --concurrency 2000 against a loopback server, under a low soft limit on open
//! files that fetchall must raise itself.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use crate::server::Server;
use crate::support::{fetchall, records};

/// Raise this process's open-file soft limit to its hard limit (the server side needs 2000
/// sockets too); the hard limit it found.
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

#[test]
fn concurrency_2000_with_no_connect_errors() {
    let hard = raise_own_limit();
    if hard < 8192 {
        eprintln!("skipped: the hard open-file limit ({hard}) is too low for this test");
        return;
    }
    let server = Server::start_in_background();
    let n = 3000;
    let input: String = (0..n).map(|_| server.url("/delay/1000") + "\n").collect();
    let mut cmd = fetchall();
    cmd.args(["-c", "2000", "--body", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe setrlimit between fork and exec. The child starts with
    // a soft limit of 256 open files: 2000 sockets need fetchall to raise it.
    unsafe {
        cmd.pre_exec(|| {
            let mut l = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
            l.rlim_cur = 256;
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
    eprintln!("-c 2000: {n} ok, at most {max} in flight at once");
    assert!(max <= 2000, "{max}");
    assert!(
        max > 256,
        "more sockets at once than the inherited soft limit: {max}"
    );
}
