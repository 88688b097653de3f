//! deploy/kubernetes/: every manifest is valid against Kubernetes' own schemas, checked
//! offline with `kubernetes-validate` (PyPI; `.ci/run` installs it into a venv under the
//! target directory). Under CI a missing validator fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::skip;

/// The validator: on PATH, or in the venv `.ci/run` makes (`<target dir>/ci-venv`).
fn validator() -> Option<PathBuf> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent()?;
    let venv = target.join("ci-venv/bin/kubernetes-validate");
    if venv.is_file() {
        return Some(venv);
    }
    let on_path = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    on_path
        .is_ok_and(|o| o.status.success())
        .then(|| PathBuf::from("kubernetes-validate"))
}

fn validate(tool: &Path, files: &[PathBuf]) -> std::process::Output {
    Command::new(tool)
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn kubernetes_manifests_match_the_schemas() {
    let Some(tool) = validator() else {
        skip(
            "kubernetes-validate is not installed (pip install kubernetes-validate; .ci/run does)",
        );
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let out = validate(&tool, &files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The validator has teeth: a misspelt field fails it.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    let job = std::fs::read_to_string(dir.join("job.yaml")).unwrap();
    std::fs::write(&bad, job.replace("completions: 4", "completionz: 4")).unwrap();
    assert!(!validate(&tool, &[bad]).status.success());
}
