//! Every recipe in docs/cookbook.md, run with bash against the loopback server.
//!
//! Each ```sh block runs in a fresh directory with `fetchall` first on PATH and `$BASE` set to
//! the server; it must exit 0 (under `set -eu`), and when a ```text block follows it, its
//! stdout must be that text (the server's address written as `$BASE`).

use std::process::Command;

use crate::server::Server;
use crate::support::require_tool;

struct Recipe {
    line: usize,
    script: String,
    expected: Option<String>,
}

/// The ```sh blocks of the cookbook, each with the ```text block right after it, if any.
fn recipes(markdown: &str) -> Vec<Recipe> {
    let mut blocks: Vec<(usize, String, String)> = Vec::new(); // (line, lang, text)
    let mut current: Option<(usize, String, String)> = None;
    let mut last_end = 0;
    let mut gaps: Vec<bool> = Vec::new(); // whether only blank lines precede each block
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                let between = markdown.lines().skip(last_end).take(i - last_end);
                gaps.push(between.clone().all(|l| l.trim().is_empty()));
                current = Some((i + 1, lang.trim().to_owned(), String::new()));
            }
            (Some(_), Some("")) => {
                blocks.push(current.take().unwrap());
                last_end = i + 1;
            }
            (Some((_, _, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    for (i, (line, lang, text)) in blocks.iter().enumerate() {
        if lang != "sh" {
            continue;
        }
        let expected = match blocks.get(i + 1) {
            Some((_, next_lang, next)) if next_lang == "text" && gaps[i + 1] => Some(next.clone()),
            _ => None,
        };
        out.push(Recipe {
            line: *line,
            script: text.clone(),
            expected,
        });
    }
    out
}

#[test]
fn every_cookbook_recipe_runs() {
    // The recipes are bash scripts that pipe records through jq.
    if !require_tool("bash", "--version") || !require_tool("jq", "--version") {
        return;
    }
    let markdown =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cookbook.md")).unwrap();
    let recipes = recipes(&markdown);
    assert!(recipes.len() >= 8, "found {} recipes", recipes.len());
    assert!(recipes.iter().filter(|r| r.expected.is_some()).count() >= 7);

    let server = Server::start_in_background();
    let base = server.url("");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_fetchall"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let root = tempfile::tempdir().unwrap();
    for recipe in &recipes {
        let dir = root.path().join(recipe.line.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("bash");
        crate::support::isolate(&mut cmd);
        let out = cmd
            .args(["-eu", "-c", &recipe.script])
            .current_dir(&dir)
            .env("PATH", &path)
            .env("BASE", &base)
            .env("ROUNDS", "2")
            .env("INTERVAL", "0")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).replace(&base, "$BASE");
        assert!(
            out.status.success(),
            "cookbook recipe at docs/cookbook.md:{} failed ({}):\n{}\nstdout:\n{stdout}\nstderr:\n{}",
            recipe.line,
            out.status,
            recipe.script,
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(expected) = &recipe.expected {
            assert_eq!(
                &stdout, expected,
                "output of the recipe at docs/cookbook.md:{}:\n{}",
                recipe.line, recipe.script
            );
        }
    }
}
