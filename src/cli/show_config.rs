//! `fetchall config`: the effective configuration as TOML, each value with its origin.
//!
//! The output can be pasted into an issue or saved as a config file: credential headers (the
//! library's rule, `fetchall::is_credential_header`, plus `--credential-header` names), a
//! password in the proxy URL, and inline `--data`/`--json` bodies (a form's password) show as
//! `****`; an `@FILE` body shows its path.
//!
//! With `--host NAME`, the values of the config file's most specific `[hosts."pattern"]`
//! section for that host replace the top-level ones they override (a section's `rate` and
//! `concurrency` are shown as `per-host-rate` and `per-host-concurrency`, the options they
//! stand in for), each origin naming the section.

use std::io::{self, Write};

use fetchall::HeaderName;

use super::args::{Effective, Parsed};
use super::config_file::HostSection;

/// Write the effective configuration to `out`: the top-level one, or with `host`, the one
/// requests to that host get (`settings` says which profile applies).
pub(crate) fn print(
    parsed: &Parsed,
    settings: &fetchall::Settings,
    host: Option<&str>,
    out: &mut dyn Write,
) -> io::Result<()> {
    // `host` was checked by `host_name` before (see `cli::execute`).
    let host = host.and_then(|h| host_name(h).ok());
    writeln!(
        out,
        "# fetchall's effective configuration: defaults < config file < FETCHALL_* environment < flags{}",
        if host.is_some() {
            " < the host's [hosts.\"pattern\"] section"
        } else {
            ""
        }
    )?;
    match &parsed.file.path {
        Some(f) => writeln!(out, "# config file: {}", f.display())?,
        None => writeln!(out, "# config file: none")?,
    }
    let section = match host {
        None => None,
        Some(name) => {
            let pattern = settings.profile_for(&name).map(|p| &p.pattern);
            let section = pattern.and_then(|p| parsed.file.hosts.iter().find(|s| &s.pattern == p));
            match section {
                Some(s) => writeln!(out, "# host {name}: {} applies", s.name())?,
                None => writeln!(out, "# host {name}: no [hosts.\"pattern\"] section matches")?,
            }
            section
        }
    };
    let marked: Vec<HeaderName> = parsed
        .effective
        .iter()
        .filter(|e| e.key == "credential-header")
        .flat_map(|e| &e.values)
        .filter_map(|v| HeaderName::from_bytes(v.trim().as_bytes()).ok())
        .collect();
    for e in &parsed.effective {
        let over = section.and_then(|s| for_host(e, s, parsed));
        let e = over.as_ref().unwrap_or(e);
        match toml_value(e, &marked) {
            Some(v) => writeln!(out, "{} = {v}  # {}", e.key, e.origin)?,
            None => writeln!(out, "# {} is not set", e.key)?,
        }
    }
    Ok(())
}

/// The host in `text` (`config --host`): a URL's host, or the text as a host name or
/// address, in the form a URL's host takes (lower case, `xn--`, `[::1]`). Anything else,
/// including an empty text, a glob or a URL without a host, is an error that does not echo
/// the text (it may be long, or hold a URL's password); so is a name longer than DNS allows.
pub(crate) fn host_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    let host = if text.contains("://") {
        url::Url::parse(text)
            .ok()
            .and_then(|u| u.host_str().filter(|h| !h.is_empty()).map(str::to_owned))
    } else if text.starts_with('*') {
        None
    } else {
        text.parse::<fetchall::HostPattern>()
            .ok()
            .map(|p| p.to_string())
    };
    // 253 bytes: the longest name DNS can carry.
    host.filter(|h| h.len() <= 253)
        .ok_or_else(|| "--host: expected a host name, an IP address or a URL with a host".into())
}

/// Option `e` as `section` changes it for its hosts, if it does. Headers merge: the
/// section's replace the top-level ones of the same name.
fn for_host(e: &Effective, section: &HostSection, parsed: &Parsed) -> Option<Effective> {
    let key = match e.key.as_str() {
        "per-host-rate" => "rate",
        "per-host-concurrency" => "concurrency",
        "rate" | "concurrency" => return None,
        other => other,
    };
    let values = section.get(key)?;
    let file = parsed
        .file
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut origin = format!("{} in {file}", section.name());
    let mut merged = values.to_vec();
    if key == "header" {
        let name = |h: &str| {
            h.split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
        };
        let replaced: Vec<_> = values.iter().filter_map(|h| name(h)).collect();
        let kept: Vec<String> = e
            .values
            .iter()
            .filter(|h| name(h).is_none_or(|n| !replaced.contains(&n)))
            .cloned()
            .collect();
        if !kept.is_empty() {
            origin = format!("{}, then {origin}", e.origin);
        }
        merged = kept.into_iter().chain(merged).collect();
    }
    Some(Effective {
        key: e.key.clone(),
        values: merged,
        repeats: e.repeats,
        boolean: e.boolean,
        origin,
    })
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
