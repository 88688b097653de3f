//! `fetchall config`: the effective configuration as TOML, each value with its origin.
//!
//! The output can be pasted into an issue or saved as a config file: credential headers
//! (Authorization, Proxy-Authorization, Cookie, and any header whose name says key, token,
//! secret or password) and a password in the proxy URL show as `****`.

use std::io::{self, Write};

use super::args::{Effective, Parsed};

/// Header names whose values are credentials, whatever their spelling otherwise.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
/// Words that make any header name a credential's (`X-Api-Key`, `X-Auth-Token`).
const CREDENTIAL_WORDS: [&str; 6] = ["key", "token", "secret", "password", "auth", "session"];

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
    for e in &parsed.effective {
        match toml_value(e) {
            Some(v) => writeln!(out, "{} = {v}  # {}", e.key, e.origin)?,
            None => writeln!(out, "# {} is not set", e.key)?,
        }
    }
    Ok(())
}

/// The option's value as TOML (numbers and booleans bare, the rest quoted), masked.
fn toml_value(e: &Effective) -> Option<String> {
    let shown: Vec<String> = e.values.iter().map(|v| mask(&e.key, v)).collect();
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

/// A value as it may be shown: credential header values and proxy passwords as `****`.
fn mask(key: &str, value: &str) -> String {
    match key {
        "header" => mask_header(value),
        "proxy" => match value.parse::<fetchall::Proxy>() {
            Ok(p) => p.to_string(),
            Err(_) => "****".to_owned(),
        },
        "limits" => match value.parse::<fetchall::LimitsUrl>() {
            Ok(u) => u.to_string(),
            Err(_) => "****".to_owned(),
        },
        _ => value.to_owned(),
    }
}

/// `Name: value` with the value masked when the name is a credential's.
pub(crate) fn mask_header(header: &str) -> String {
    match header.split_once(':') {
        Some((name, _)) if is_credential_header(name.trim()) => format!("{}: ****", name.trim()),
        _ => header.to_owned(),
    }
}

fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_HEADERS.contains(&name.as_str()) || CREDENTIAL_WORDS.iter().any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_masked_and_others_kept() {
        assert_eq!(
            mask_header("Authorization: Bearer x"),
            "Authorization: ****"
        );
        assert_eq!(mask_header("X-Api-Key: abc"), "X-Api-Key: ****");
        assert_eq!(mask_header("Accept: text/plain"), "Accept: text/plain");
        assert_eq!(
            mask("proxy", "http://u:pw@p.test:3128"),
            "http://u:****@p.test:3128/"
        );
        assert_eq!(
            mask("limits", "rediss://:hunter2@r.test:6380/1"),
            "rediss://:****@r.test:6380/1"
        );
    }
}
