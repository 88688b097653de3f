//! Saving bodies (`--save-dir`): one file per record, named by the spec's id or by seq.
//!
//! A file is written under a temporary name and renamed into place, so a reader never sees a
//! half-written body and two records that share an id leave one whole file (the last one
//! renamed), never a mix. This module does not decide which bodies to save (that is `fetch`).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::Saved;

/// Longest file name made from an id.
const MAX_NAME: usize = 100;

/// The file name for a record: the id with anything but `[A-Za-z0-9._-]` replaced by `_`
/// (and no leading dot), or the seq when there is no usable id.
pub(crate) fn file_name(seq: u64, id: Option<&Value>) -> String {
    let id = match id {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let name: String = id
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() {
        seq.to_string()
    } else {
        name.to_owned()
    }
}

/// Write `bytes` to `dir` and describe the file. The error is a one-line message.
pub(crate) async fn write(
    dir: &Path,
    seq: u64,
    id: Option<&Value>,
    bytes: &[u8],
) -> Result<Saved, String> {
    let path = dir.join(file_name(seq, id));
    let tmp = dir.join(format!(".fetchall-{seq}.tmp"));
    let sha256 = hex(&Sha256::digest(bytes));
    let result = async {
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(Saved {
        path: path.display().to_string(),
        size: bytes.len() as u64,
        sha256,
    })
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
    use super::*;

    #[test]
    fn file_names_come_from_the_id_and_stay_inside_the_directory() {
        assert_eq!(file_name(3, None), "3");
        assert_eq!(
            file_name(3, Some(&Value::from("user/42.json"))),
            "user_42.json"
        );
        assert_eq!(file_name(3, Some(&Value::from("../../etc"))), "_.._etc");
        assert_eq!(file_name(3, Some(&Value::from(".."))), "3");
        assert_eq!(file_name(3, Some(&Value::from(17))), "17");
        assert_eq!(hex(&Sha256::digest(b"abc"))[..8], *"ba7816bf");
    }
}
