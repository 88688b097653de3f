//! What the jq filters make of an ok response's body: `--extract` values, the `--assert`
//! verdict and the `--body-filter` body. Each filter runs on the body as received (not on
//! another filter's output), and a filter that fails, or a body that is not JSON, is the
//! record's error (kind `filter`), never the run's. This module does not compile filters
//! (that is `filter`) nor build the record (that is `job`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::filter::{self, Input};
use crate::record::{ErrorKind, RecordError};
use crate::redact::bounded;
use crate::settings::Settings;

/// The filters' results for one body.
#[derive(Default)]
pub(super) struct Filtered {
    /// `--extract`: each name with its value (kept even when `--assert` fails, to show why).
    pub(super) extract: Option<BTreeMap<String, Value>>,
    /// `--body-filter`'s output, which replaces the body (null when it yields nothing).
    pub(super) body: Option<Value>,
    /// A failed assertion or filter.
    pub(super) error: Option<RecordError>,
}

/// Whether any filter is set (otherwise the body is not even parsed).
pub(super) fn any(s: &Settings) -> bool {
    !s.extract.is_empty() || s.body_filter.is_some() || s.assert.is_some()
}

/// Run the filters of `s` on `body`.
pub(super) fn run(s: &Settings, body: &[u8]) -> Filtered {
    let mut out = Filtered::default();
    let input = match Input::parse(body) {
        Ok(i) => i,
        Err(why) => {
            out.error = Some(RecordError::new(ErrorKind::Filter, why));
            return out;
        }
    };
    let fail = |flag: &str, f: &filter::Filter, why: String| {
        RecordError::new(
            ErrorKind::Filter,
            format!("{flag}{}: {why}", bounded(f.text(), 100)),
        )
    };
    if !s.extract.is_empty() {
        let mut values = BTreeMap::new();
        for (name, f) in &s.extract {
            match f.first(&input) {
                Ok(v) => {
                    values.insert(name.clone(), v.unwrap_or(Value::Null));
                }
                Err(why) => {
                    out.error
                        .get_or_insert_with(|| fail(&format!("--extract {name}="), f, why));
                }
            }
        }
        out.extract = Some(values);
    }
    if out.error.is_none()
        && let Some(f) = &s.assert
    {
        match f.first(&input) {
            Ok(v) if filter::truthy(v.as_ref()) => {}
            Ok(v) => {
                let got = v.map_or_else(|| "no output".to_owned(), |v| v.to_string());
                out.error = Some(RecordError::new(
                    ErrorKind::Assertion,
                    format!("--assert {} gave {got}", bounded(f.text(), 100)),
                ));
            }
            Err(why) => out.error = Some(fail("--assert ", f, why)),
        }
    }
    if out.error.is_none()
        && let Some(f) = &s.body_filter
    {
        match f.first(&input) {
            Ok(v) => out.body = Some(v.unwrap_or(Value::Null)),
            Err(why) => out.error = Some(fail("--body-filter ", f, why)),
        }
    }
    out
}
