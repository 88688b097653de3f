//! Saving bodies (`--save-dir`): one file per record, named by the spec's id or by seq.
//!
//! Names are exact and never collide: an id is escaped so that different ids give different
//! names (a byte outside `A-Za-z0-9._-` becomes `%XX`, a leading dot `%2E`, so no name is `..`
//! or holds a `/`), a record without an id is named by its seq, and a name this run already
//! used (two records with one id, an id `1` and the record of seq 1; compared without regard
//! to case, so the directory survives a copy to a case-insensitive disk) or that is one of
//! the run's own files (its input, `-o`, `--summary`, `--resume`) gets `~SEQ` appended. A name
//! longer than 120 bytes is cut and given a hash of the whole (`~x` and 16 hex digits).
//!
//! A file is written under a fresh random name, created exclusively (never through a link
//! someone planted), then renamed into place, which replaces a directory entry and never
//! writes through a link: a reader never sees a half-written body, and `saved` always
//! describes the file at `saved.path` when the record is written. This module does not decide
//! which bodies to save (that is the scheduler).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::record::Saved;

/// Longest name kept whole; a longer one is cut and given a hash.
const MAX_NAME: usize = 120;

/// The directory bodies are saved to, and the names this run has used in it.
#[derive(Debug)]
pub(crate) struct SaveDir {
    dir: PathBuf,
    /// Hashes of the (lower-case) names used so far, and of the run's own files' names.
    used: Mutex<HashSet<u64>>,
}

impl SaveDir {
    /// Create `dir` if needed. `keep`: files that must never be replaced (the run's input and
    /// outputs); those in `dir` are treated as names already used.
    pub(crate) fn create(dir: &Path, keep: &[PathBuf]) -> io::Result<SaveDir> {
        std::fs::create_dir_all(dir)?;
        let here = std::fs::canonicalize(dir)?;
        let mut used = HashSet::new();
        for path in keep {
            // The entry as named, and the one it leads to through symlinks (`-o link` to a
            // file in the directory): replacing either would lose the file.
            let target = std::fs::canonicalize(path).ok();
            for entry in [Some(path.as_path()), target.as_deref()]
                .into_iter()
                .flatten()
            {
                if let Some(name) = entry_in(entry, &here) {
                    used.insert(name_key(&name.to_string_lossy()));
                }
            }
        }
        Ok(SaveDir {
            dir: dir.to_owned(),
            used: Mutex::new(used),
        })
    }

    /// Claim a name for record `seq`: its own, or with `~SEQ` when that one is taken.
    fn claim(&self, seq: u64, id: Option<&Value>) -> String {
        let name = file_name(seq, id);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.insert(name_key(&name)) {
            return name;
        }
        let name = format!("{name}~{seq}");
        used.insert(name_key(&name));
        name
    }

    /// Write `bytes` for record `seq` and describe the file. The error is a one-line message.
    pub(crate) async fn write(
        &self,
        seq: u64,
        id: Option<&Value>,
        bytes: &[u8],
    ) -> Result<Saved, String> {
        let path = self.dir.join(self.claim(seq, id));
        let sha256 = hex(&Sha256::digest(bytes));
        let (tmp, result) = match create_temp(&self.dir).await {
            Ok((tmp, file)) => {
                let written = write_then_rename(file, bytes, &tmp, &path).await;
                (Some(tmp), written)
            }
            Err(e) => (None, Err(e)),
        };
        if let Err(e) = result {
            if let Some(tmp) = tmp {
                let _ = tokio::fs::remove_file(&tmp).await;
            }
            return Err(format!("cannot write {}: {e}", path.display()));
        }
        Ok(Saved {
            path: path.display().to_string(),
            size: bytes.len() as u64,
            sha256,
        })
    }
}

async fn write_then_rename(
    mut file: tokio::fs::File,
    bytes: &[u8],
    tmp: &Path,
    path: &Path,
) -> io::Result<()> {
    file.write_all(bytes).await?;
    file.flush().await?;
    drop(file);
    tokio::fs::rename(tmp, path).await
}

/// A new file in `dir` with a random name, created exclusively: an existing file or link of
/// that name (planted or not) makes it try another name, never opens it.
async fn create_temp(dir: &Path) -> io::Result<(PathBuf, tokio::fs::File)> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = dir.join(format!(".fetchall-{:016x}.tmp", fastrand::u64(..)));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temporary name")))
}

/// The name of `path`'s directory entry when that entry is directly in the directory whose
/// canonical path is `dir` (its own last component is not followed: a link named there is
/// the entry a rename would replace).
fn entry_in(path: &Path, dir: &Path) -> Option<OsString> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).ok()?;
    (parent == dir).then(|| name.to_owned())
}

fn name_key(name: &str) -> u64 {
    let mut h = DefaultHasher::new();
    name.to_ascii_lowercase().hash(&mut h);
    h.finish()
}

/// The file name for a record: its id escaped (see the module), or its seq when it has no
/// usable id (none, or an empty string).
pub(crate) fn file_name(seq: u64, id: Option<&Value>) -> String {
    let id = match id {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if id.is_empty() {
        return seq.to_string();
    }
    let mut name = String::with_capacity(id.len());
    for (i, b) in id.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (b == b'.' && i > 0);
        if plain {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    if name.len() <= MAX_NAME {
        return name;
    }
    // Cut on an escape's boundary, and tell the whole apart by its hash.
    let mut end = MAX_NAME - 20;
    while name.as_bytes()[end - 1] == b'%' || name.as_bytes()[end - 2] == b'%' {
        end -= 1;
    }
    let digest = Sha256::digest(id.as_bytes());
    format!("{}~x{}", &name[..end], &hex(&digest)[..16])
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn file_names_come_from_the_id_and_stay_inside_the_directory() {
        assert_eq!(file_name(3, None), "3");
        assert_eq!(
            file_name(3, Some(&Value::from("user/42.json"))),
            "user%2F42.json"
        );
        assert_eq!(
            file_name(3, Some(&Value::from("user_42.json"))),
            "user_42.json"
        );
        assert_eq!(
            file_name(3, Some(&Value::from("../../etc"))),
            "%2E.%2F..%2Fetc"
        );
        assert_eq!(file_name(3, Some(&Value::from(".."))), "%2E.");
        assert_eq!(file_name(3, Some(&Value::from(""))), "3");
        assert_eq!(file_name(3, Some(&Value::from(17))), "17");
        assert_eq!(hex(&Sha256::digest(b"abc"))[..8], *"ba7816bf");
        let long = file_name(0, Some(&Value::from("é".repeat(200))));
        assert!(long.len() <= MAX_NAME && long.contains("~x"), "{long}");
    }

    #[tokio::test]
    async fn names_never_collide_in_a_run_and_spare_the_runs_own_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bodies");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("urls.txt"), "keep me").unwrap();
        std::fs::write(dir.join("out.jsonl"), "records").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(dir.join("out.jsonl"), &link).unwrap();
        let save = SaveDir::create(&dir, &[dir.join("urls.txt"), link.clone()]).unwrap();
        let a = save.write(1, None, b"seq one").await.unwrap();
        let b = save
            .write(5, Some(&Value::from("1")), b"id one")
            .await
            .unwrap();
        let c = save
            .write(6, Some(&Value::from("urls.txt")), b"not the input")
            .await
            .unwrap();
        let d = save
            .write(7, Some(&Value::from("URLS.TXT")), b"nor this")
            .await
            .unwrap();
        assert!(
            a.path.ends_with("/1") && b.path.ends_with("/1~5"),
            "{a:?} {b:?}"
        );
        assert!(c.path.ends_with("/urls.txt~6") && d.path.ends_with("/URLS.TXT~7"));
        assert_eq!(
            std::fs::read_to_string(dir.join("urls.txt")).unwrap(),
            "keep me"
        );
        for s in [&a, &b, &c, &d] {
            let bytes = std::fs::read(&s.path).unwrap();
            assert_eq!(
                (bytes.len() as u64, hex(&Sha256::digest(&bytes))),
                (s.size, s.sha256.clone())
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Escaping is one-to-one: two different ids never give one name, and no name can
        /// leave the directory.
        #[test]
        fn different_ids_give_different_single_component_names(a in "\\PC{1,30}", b in "\\PC{1,30}") {
            let (na, nb) = (file_name(0, Some(&Value::from(a.clone()))), file_name(0, Some(&Value::from(b.clone()))));
            prop_assert_eq!(na == nb, a == b);
            for n in [&na, &nb] {
                prop_assert!(!n.contains('/') && !n.starts_with('.') && !n.is_empty() && n.len() <= MAX_NAME);
            }
        }
    }
}
