//! jq filters over response bodies, by the embedded jaq engine (jaq-core, jaq-std, jaq-json:
//! a real jq implementation, not a subset).
//!
//! A [`Filter`] is compiled once, when the settings are built (a filter that does not compile
//! is a usage error there), and run on each body as often as needed: `--extract`,
//! `--body-filter`, `--assert` and `--next`. Running one on a body either yields its first
//! output or an error message for the record (kind `filter`); it never panics and never exits
//! the process (jq's `halt` is an error here). This module does not decide what an output
//! means for a record (that is the scheduler's job).

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, Vars, data};
use jaq_json::Val;
use serde_json::Value;

type Data = data::JustLut<Val>;

/// A compiled jq filter, cheap to clone. Shown as its text.
#[derive(Clone)]
pub struct Filter {
    text: Arc<str>,
    compiled: Arc<jaq_core::Filter<Data>>,
}

impl Filter {
    /// Compile `text`; the error says why it does not compile (without the filter's text,
    /// which the caller names).
    pub fn new(text: &str) -> Result<Filter, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let program = File {
            code: text,
            path: (),
        };
        let modules = loader.load(&arena, program).map_err(|errors| {
            let mut why = Vec::new();
            for (_, e) in errors {
                match e {
                    jaq_core::load::Error::Io(v) => {
                        why.extend(v.into_iter().map(|(_, m)| format!("cannot load: {m}")));
                    }
                    jaq_core::load::Error::Lex(v) => why.extend(
                        v.into_iter()
                            .map(|(expect, at)| expected(expect.as_str(), at)),
                    ),
                    jaq_core::load::Error::Parse(v) => why.extend(
                        v.into_iter()
                            .map(|(expect, at)| expected(expect.as_str(), at)),
                    ),
                }
            }
            syntax(why)
        })?;
        let compiled = jaq_core::Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let why = errors
                    .into_iter()
                    .flat_map(|(_, v)| v)
                    .map(|(name, undefined)| {
                        format!(
                            "undefined {} `{}`",
                            undefined.as_str(),
                            crate::redact::bounded(name, 40)
                        )
                    })
                    .collect();
                syntax(why)
            })?;
        Ok(Filter {
            text: text.into(),
            compiled: Arc::new(compiled),
        })
    }

    /// The filter as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The filter's first output on `input` (`None` when it yields nothing), or the first
    /// error it raises.
    pub(crate) fn first(&self, input: &Input) -> Result<Option<Value>, String> {
        let ctx = Ctx::<Data>::new(&self.compiled.lut, Vars::new([]));
        let mut outputs = self.compiled.id.run((ctx, input.0.clone()));
        match outputs.next() {
            None => Ok(None),
            Some(Ok(v)) => Ok(Some(to_json(&v))),
            Some(Err(exn)) => Err(match exn.get_err() {
                Ok(e) => crate::redact::bounded(&e.to_string(), 200).into_owned(),
                Err(_) => "the filter halted".to_owned(),
            }),
        }
    }
}

/// A body, parsed once for every filter that runs on it.
pub(crate) struct Input(Val);

impl Input {
    /// `bytes` as JSON, or why not.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Input, String> {
        jaq_json::read::parse_single(bytes).map(Input).map_err(|e| {
            format!(
                "the body is not JSON ({})",
                crate::redact::bounded(&e.to_string(), 80)
            )
        })
    }
}

/// jaq's value as serde_json's, through its JSON text (a value JSON cannot hold, such as
/// NaN, becomes null, as jq prints it).
fn to_json(v: &Val) -> Value {
    serde_json::from_str(&v.to_string()).unwrap_or(Value::Null)
}

/// Whether a filter's output counts as true: anything but `false`, `null` or no output (jq's
/// truthiness).
pub(crate) fn truthy(output: Option<&Value>) -> bool {
    !matches!(output, None | Some(Value::Null | Value::Bool(false)))
}

fn expected(what: &str, at: &str) -> String {
    let near: String = at.chars().take(20).collect();
    if near.is_empty() {
        format!("expected {what} at the end")
    } else {
        format!("expected {what} before `{near}`")
    }
}

fn syntax(why: Vec<String>) -> String {
    if why.is_empty() {
        "does not compile".to_owned()
    } else {
        format!("does not compile: {}", why.join("; "))
    }
}

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Filter({:?})", self.text)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(filter: &str, body: &str) -> Result<Option<Value>, String> {
        Filter::new(filter)
            .unwrap()
            .first(&Input::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn real_jq() {
        let body = r#"{"items":[{"id":1,"tags":["a"]},{"id":2,"tags":[]}],"next":"c2"}"#;
        assert_eq!(run(".items|length", body), Ok(Some(json!(2))));
        assert_eq!(run("[.items[].id]", body), Ok(Some(json!([1, 2]))));
        assert_eq!(
            run(
                "{first: .items[0].id, n: (.items|map(select(.tags|length>0))|length)}",
                body
            ),
            Ok(Some(json!({"first": 1, "n": 1})))
        );
        assert_eq!(run(".missing", body), Ok(Some(Value::Null)));
        assert_eq!(run("empty", body), Ok(None));
        assert_eq!(run(".next | ascii_upcase", body), Ok(Some(json!("C2"))));
        assert_eq!(run(r#".next | test("^c\\d")"#, body), Ok(Some(json!(true))));
    }

    #[test]
    fn errors_are_messages_never_panics_or_exits() {
        let e = run(".items + 1", r#"{"items":[1]}"#).unwrap_err();
        assert!(e.contains("cannot"), "{e}");
        assert!(run(r#"error("boom")"#, "{}").unwrap_err().contains("boom"));
        assert_eq!(run("halt", "{}").unwrap_err(), "the filter halted");
        assert!(Input::parse(b"<html>").is_err());
        for bad in [".items[", "nope_fn(1)", "$undefined", ""] {
            let e = Filter::new(bad).unwrap_err();
            assert!(e.starts_with("does not compile"), "{bad}: {e}");
        }
    }

    #[test]
    fn truthiness_is_jq_s() {
        assert!(truthy(Some(&json!(0))));
        assert!(truthy(Some(&json!(""))));
        assert!(!truthy(Some(&Value::Null)));
        assert!(!truthy(Some(&json!(false))));
        assert!(!truthy(None));
    }
}
