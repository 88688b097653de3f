//! `fetchall config`: the effective configuration as TOML, each value with its origin.
//!
//! The output can be pasted into an issue or saved as a config file: credential headers (the
//! library's rule, `fetchall::is_credential_header`, plus `--credential-header` names), a
//! password in the proxy URL, and inline `--data`/`--json` bodies (a form's password) show as
//! `****`; an `@FILE` body shows its path.

use std::io::{self, Write};

use fetchall::HeaderName;

use super::args::{Effective, Parsed};

/// Write the effective configuration to `out`.
pub(crate) fn print(parsed: &Parsed, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "# fetchall's effective configuration: defaults < config file < FETCHALL_* environment < flags"
    )?;
    match &parsed.file.path {
        Some(f) => writeln!(out, "# config file: {}", f.display())?,
        None => writeln!(out, "# config file: none")?,
    }
    let marked: Vec<HeaderName> = parsed
        .effective
        .iter()
        .filter(|e| e.key == "credential-header")
        .flat_map(|e| &e.values)
        .filter_map(|v| HeaderName::from_bytes(v.trim().as_bytes()).ok())
        .collect();
    for e in &parsed.effective {
        match toml_value(e, &marked) {
            Some(v) => writeln!(out, "{} = {v}  # {}", e.key, e.origin)?,
            None => writeln!(out, "# {} is not set", e.key)?,
        }
    }
    Ok(())
}

/// The option's value as TOML (numbers and booleans bare, the rest quoted), masked.
fn toml_value(e: &Effective, marked: &[HeaderName]) -> Option<String> {
    let shown: Vec<String> = e.values.iter().map(|v| mask(&e.key, v, marked)).collect();
    if e.repeats {
        let items: Vec<String> = shown.iter().map(|v| quoted(v)).collect();
        return Some(format!("[{}]", items.join(", ")));
    }
    let v = shown.first()?;
    if e.boolean {
        // As the option reads it: `1`, `yes` and `on` are true (clap's boolish values).
        let truthy = ["1", "true", "yes", "y", "on"].contains(&v.to_ascii_lowercase().as_str());
        return Some(truthy.to_string());
    }
    let bare = v.parse::<u64>().is_ok();
    Some(if bare { v.clone() } else { quoted(v) })
}

fn quoted(v: &str) -> String {
    toml::Value::String(v.to_owned()).to_string()
}

/// A value as it may be shown: credential header values, proxy and Redis passwords and
/// inline bodies as `****`.
fn mask(key: &str, value: &str, marked: &[HeaderName]) -> String {
    match key {
        "header" => mask_header(value, marked),
        "proxy" => match value.parse::<fetchall::Proxy>() {
            Ok(p) => p.to_string(),
            Err(_) => "****".to_owned(),
        },
        "limits" => match value.parse::<fetchall::LimitsUrl>() {
            Ok(u) => u.to_string(),
            Err(_) => "****".to_owned(),
        },
        "data" | "json" if !value.starts_with('@') => "****".to_owned(),
        _ => value.to_owned(),
    }
}

/// `Name: value` with the value masked when the name is a credential's; a line that is not
/// `Name: value` at all is masked whole.
pub(crate) fn mask_header(header: &str, marked: &[HeaderName]) -> String {
    match header.split_once(':') {
        Some((name, _)) if fetchall::is_credential_header(name, marked) => {
            format!("{}: ****", name.trim())
        }
        Some(_) => header.to_owned(),
        None => "****".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_masked_and_others_kept() {
        assert_eq!(
            mask_header("Authorization: Bearer x", &[]),
            "Authorization: ****"
        );
        assert_eq!(mask_header("X-Api-Key: abc", &[]), "X-Api-Key: ****");
        assert_eq!(mask_header("Accept: text/plain", &[]), "Accept: text/plain");
        assert_eq!(mask_header("Bearer abc", &[]), "****");
        let marked = [HeaderName::from_static("x-tenant")];
        assert_eq!(mask_header("X-Tenant: t1", &marked), "X-Tenant: ****");
        assert_eq!(
            mask("proxy", "http://u:pw@p.test:3128", &[]),
            "http://u:****@p.test:3128/"
        );
        assert_eq!(
            mask("limits", "rediss://:hunter2@r.test:6380/1", &[]),
            "rediss://:****@r.test:6380/1"
        );
        assert_eq!(mask("data", "password=hunter2", &[]), "****");
        assert_eq!(mask("data", "@body.txt", &[]), "@body.txt");
    }
}
