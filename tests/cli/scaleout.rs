//! Scale-out: `--shard K/N` splits a list by host, `fetchall merge` puts the shard outputs back
//! in input order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::server::Server;
use crate::support::{fetchall, records, run, run_env};

/// A list over 12 hosts: 127.0.0.1 is the test server, 127.0.0.2..=12 on its port refuse the
/// connection at once (nothing listens there), so every line gets a record quickly. Two bad
/// lines have no host (they belong to shard 0).
fn list(server: &Server) -> String {
    let port = server.addr.port();
    let mut input = String::new();
    for i in 0..60 {
        let host = 1 + i % 12;
        input.push_str(&format!("http://127.0.0.{host}:{port}/item/{i}\n"));
        if i % 25 == 7 {
            input.push_str("not a url\n");
        }
    }
    input
}

fn host_of(record: &Value) -> String {
    let url = record["url"].as_str().unwrap();
    match url::Url::parse(url) {
        Ok(u) => format!("{}:{}", u.host_str().unwrap(), u.port().unwrap()),
        Err(_) => "(no host)".to_owned(),
    }
}

fn shard_run(dir: &Path, input: &str, k: u32, n: u32) -> Vec<Value> {
    let out = dir.join(format!("out-{k}.jsonl"));
    let summary = dir.join(format!("summary-{k}.json"));
    let o = run(
        &[
            "--ordered",
            "--retries",
            "0",
            "--body",
            "none",
            "--shard",
            &format!("{k}/{n}"),
            "-o",
            out.to_str().unwrap(),
            "--summary",
            summary.to_str().unwrap(),
        ],
        input,
    );
    assert!(matches!(o.status.code(), Some(0 | 1)), "{o:?}");
    let recs = records(&std::fs::read(&out).unwrap());
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let lines = input.lines().count() as u64;
    assert_eq!(
        summary["records"].as_u64().unwrap() + summary["skipped_other_shards"].as_u64().unwrap(),
        lines,
        "every line is either this shard's record or counted as skipped"
    );
    recs
}

/// Four shards: every line has exactly one record over the four outputs, each record says
/// its shard, every host's lines are in one shard, and `fetchall merge` of the outputs
/// (given in any order) is the whole list in input order, with exit 0.
#[test]
fn shards_split_by_host_and_merge_back_in_input_order() {
    let server = Server::start_in_background();
    let input = list(&server);
    let total = input.lines().count();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = BTreeMap::new();
    let mut hosts: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for k in 0..4 {
        for r in shard_run(dir.path(), &input, k, 4) {
            assert_eq!(r["shard"], k, "{r}");
            hosts.entry(host_of(&r)).or_default().insert(u64::from(k));
            assert!(seen.insert(r["seq"].as_u64().unwrap(), k).is_none(), "{r}");
        }
    }
    assert_eq!(seen.len(), total);
    assert!(hosts.values().all(|shards| shards.len() == 1), "{hosts:?}");
    assert!(
        hosts.len() > 4,
        "the hosts spread over the shards: {hosts:?}"
    );

    let files: Vec<_> = [2, 0, 3, 1]
        .iter()
        .map(|k| dir.path().join(format!("out-{k}.jsonl")))
        .collect();
    let merged = fetchall().arg("merge").args(&files).output().unwrap();
    assert_eq!(merged.status.code(), Some(0), "{merged:?}");
    let recs = records(&merged.stdout);
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..total as u64).collect::<Vec<_>>());

    // A shard given twice: duplicates; a shard left out: gaps. Both exit 1, said on stderr.
    let twice = fetchall()
        .arg("merge")
        .args(&files)
        .arg(&files[0])
        .output()
        .unwrap();
    assert_eq!(twice.status.code(), Some(1));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("duplicate seq"), "{err}");
    assert_eq!(records(&twice.stdout).len(), total);
    let all = dir.path().join("all.jsonl");
    let to_file = fetchall()
        .arg("merge")
        .arg("-o")
        .arg(&all)
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(to_file.status.code(), Some(0));
    assert_eq!(std::fs::read(&all).unwrap(), merged.stdout);
    let onto_input = fetchall()
        .args(["merge", "-o"])
        .arg(&files[0])
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(onto_input.status.code(), Some(2));
    let missing = fetchall().arg("merge").args(&files[..3]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("gap: seq"));
}

/// `--resume` works per shard: a shard's own earlier output resumes it (its ok lines are
/// skipped, the others fetched again), and other shards' lines stay skipped.
#[test]
fn resume_works_per_shard() {
    let server = Server::start_in_background();
    let input = list(&server);
    let dir = tempfile::tempdir().unwrap();
    let first = shard_run(dir.path(), &input, 1, 4);
    let previous = dir.path().join("out-1.jsonl");
    let again = run(
        &[
            "--retries",
            "0",
            "--body",
            "none",
            "--shard",
            "1/4",
            "--resume",
            previous.to_str().unwrap(),
        ],
        &input,
    );
    let ok_before = first.iter().filter(|r| r["ok"] == true).count();
    let recs = records(&again.stdout);
    assert_eq!(recs.len(), first.len() - ok_before);
    assert!(recs.iter().all(|r| r["ok"] == false && r["shard"] == 1));
}

/// `--shard auto` reads a Kubernetes Indexed Job's or a Slurm array's environment; a shard
/// that is not K < N, or auto without either, is a usage error (exit 2) naming --shard.
#[test]
fn shard_auto_and_invalid_shards() {
    let server = Server::start_in_background();
    // 60 distinct hosts, so every one of 3 shards owns some whatever the server's port (with
    // the 12 hosts of `list`, about one port in 130 left a shard empty).
    let port = server.addr.port();
    let input: String = (1..=60)
        .map(|h| format!("http://127.0.0.{h}:{port}/item/{h}\n"))
        .collect();
    let env = [("JOB_COMPLETION_INDEX", "2"), ("FETCHALL_SHARDS", "3")];
    let out = run_env(&env, &["--retries", "0", "--shard", "auto"], &input);
    let recs = records(&out.stdout);
    assert!(!recs.is_empty() && recs.iter().all(|r| r["shard"] == 2));
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let out = run_env(&slurm, &["--retries", "0", "--shard", "auto"], &input);
    assert!(records(&out.stdout).iter().all(|r| r["shard"] == 1));
    for bad in ["3/3", "1/0", "x", "auto"] {
        let out = run(&["--shard", bad], &input);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("shard"),
            "{bad}"
        );
    }
}

/// `--state` works per shard: each shard polls with a state file of its own (holding only its
/// lines), its second round finds every outcome unchanged, and the polled shard outputs merge
/// back round by round.
#[test]
fn state_works_per_shard() {
    let server = Server::start_in_background();
    let input = list(&server);
    let lines = input.lines().count();
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    let mut per_round = 0;
    for k in 0..2u32 {
        let state = dir.path().join(format!("state-{k}.db"));
        let out = dir.path().join(format!("polled-{k}.jsonl"));
        let shard = format!("{k}/2");
        let o = run(
            &[
                "--ordered",
                "--retries",
                "0",
                "--body",
                "none",
                "--shard",
                &shard,
                "--state",
                state.to_str().unwrap(),
                "--rounds",
                "2",
                "-o",
                out.to_str().unwrap(),
            ],
            &input,
        );
        assert!(matches!(o.status.code(), Some(0 | 1)), "{o:?}");
        let recs = records(&std::fs::read(&out).unwrap());
        assert!(recs.iter().all(|r| r["shard"] == k), "{recs:?}");
        let round = |n: u64| recs.iter().filter(move |r| r["round"] == n);
        assert_eq!(round(0).count(), round(1).count());
        assert_eq!(round(0).count() + round(1).count(), recs.len());
        assert!(round(1).all(|r| r["changed"] == false), "{recs:?}");
        per_round += round(0).count();
        outputs.push(out);
    }
    assert_eq!(
        per_round, lines,
        "each line in exactly one shard, every round"
    );
    let merged = fetchall().arg("merge").args(&outputs).output().unwrap();
    assert_eq!(
        merged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    let keys: Vec<(u64, u64)> = records(&merged.stdout)
        .iter()
        .map(|r| (r["round"].as_u64().unwrap(), r["seq"].as_u64().unwrap()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys.len(), 2 * lines);
    assert_eq!(keys, sorted);
}
