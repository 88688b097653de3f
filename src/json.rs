//! JSON limits: how deep a document fetchall parses, measured before it parses.
//!
//! serde_json parses, clones, serializes and drops a `Value` recursively, one stack frame per
//! level; its own guard (a recursion limit of 128) refuses valid documents that are merely
//! deep. fetchall measures the nesting first, with a scan that keeps a counter and never
//! recurses, and parses only documents at most [`MAX_DEPTH`] levels deep, with serde_json's
//! limit off. Deeper ones are refused before any recursion starts, so no input can overflow
//! the stack. [`Shape`] checks, in pieces and in constant memory, that bytes are one whole
//! JSON object (for `--resume` lines too long to keep). Nothing here knows about records.

use serde::de::DeserializeOwned;

/// The deepest nesting of arrays and objects fetchall parses (documented in docs/output.md).
/// A `Value` this deep needs about 0.5 MiB of stack in a debug build, a quarter of a thread's
/// default 2 MiB.
pub(crate) const MAX_DEPTH: usize = 256;

/// Why a document was not parsed.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// It is not valid JSON (or not of the expected type). serde_json's syntax messages name
    /// the position, never the text.
    Invalid(serde_json::Error),
}

/// The deepest nesting of arrays and objects in `bytes`, strings skipped. It does not
/// validate: on valid JSON it is the true depth, on anything else some number.
pub(crate) fn depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parse `bytes` as one `T`, at most `max_depth` levels deep.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8], max_depth: usize) -> Result<T, Refused> {
    if depth(bytes) > max_depth {
        return Err(Refused::TooDeep);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Safe to lift: the depth was measured above.
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).map_err(Refused::Invalid)?;
    de.end().map_err(Refused::Invalid)?;
    Ok(value)
}

/// Whether bytes fed in pieces form exactly one JSON object: brackets balanced outside
/// strings, closed once, nothing but whitespace after. A cheap shape check (it does not
/// validate numbers or literals), in constant memory whatever the length.
#[derive(Debug, Default, Clone)]
pub(crate) struct Shape {
    depth: u64,
    in_string: bool,
    escaped: bool,
    started: bool,
    closed: bool,
    bad: bool,
}

impl Shape {
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.bad {
                return;
            }
            if self.closed {
                self.bad = !b.is_ascii_whitespace();
                continue;
            }
            if !self.started {
                match b {
                    b'{' => {
                        self.started = true;
                        self.depth = 1;
                    }
                    b if b.is_ascii_whitespace() => {}
                    _ => self.bad = true,
                }
                continue;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => {
                    self.depth -= 1;
                    self.closed = self.depth == 0;
                }
                _ => {}
            }
        }
    }

    /// One whole object, and nothing after it.
    pub(crate) fn complete(&self) -> bool {
        self.started && self.closed && !self.bad
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", r#"{"a":["#.repeat(levels), "]}".repeat(levels))
    }

    #[test]
    fn deep_documents_parse_up_to_the_limit_and_are_refused_beyond_it() {
        // 2 levels per repetition: 100 -> 200 levels, deeper than serde_json's own 128.
        let v: Value = parse(nested(100).as_bytes(), MAX_DEPTH).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), nested(100));
        assert!(matches!(
            parse::<Value>(nested(129).as_bytes(), MAX_DEPTH),
            Err(Refused::TooDeep)
        ));
        // Far deeper than any stack would take: refused by the scan, without recursion.
        let abyss = "[".repeat(1_000_000);
        assert!(matches!(
            parse::<Value>(abyss.as_bytes(), MAX_DEPTH),
            Err(Refused::TooDeep)
        ));
        assert_eq!(depth(br#"{"a":"[[[{{{","b":[1,[2]]}"#), 3);
        assert_eq!(depth(br#"["\"[["]"#), 1);
    }

    #[test]
    fn big_integers_are_kept_exactly() {
        let v: Value = parse(b"[123456789012345678901234567890, -1e400]", MAX_DEPTH).unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            "[123456789012345678901234567890,-1e+400]"
        );
    }

    #[test]
    fn shapes() {
        let shape = |pieces: &[&str]| {
            let mut s = Shape::default();
            for p in pieces {
                s.feed(p.as_bytes());
            }
            s.complete()
        };
        assert!(shape(&[r#"{"a":"}}", "#, r#""b":[{}]} "#]));
        assert!(!shape(&[r#"{"a":"x"#]), "cut short");
        assert!(!shape(&[r#"{"a":1}{"b":2}"#]), "two objects glued");
        assert!(!shape(&["[1]"]), "not an object");
        assert!(
            !shape(&[r#"{"a":"x{"seq":0}"#]),
            "a cut line with another glued on"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The scan's depth is serde_json's on every document it can parse, and `parse`
        /// agrees with serde_json on documents within its limit.
        #[test]
        fn depth_matches_the_parsed_document(levels in 0usize..120, leaf in "[a-z\\[\\]{}\"\\\\]{0,8}") {
            let text = format!("{}{}{}", "[".repeat(levels), serde_json::to_string(&leaf).unwrap(), "]".repeat(levels));
            prop_assert_eq!(depth(text.as_bytes()), levels);
            let v: Value = parse(text.as_bytes(), MAX_DEPTH).unwrap();
            prop_assert_eq!(serde_json::to_string(&v).unwrap(), text.clone());
            let mut s = Shape::default();
            s.feed(format!("{{\"k\":{text}}}").as_bytes());
            prop_assert!(s.complete());
        }

        /// No input makes the scan or the bounded parse panic.
        #[test]
        fn any_bytes_are_measured_and_parsed_or_refused(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = depth(&raw);
            let _ = parse::<Value>(&raw, MAX_DEPTH);
            let mut s = Shape::default();
            s.feed(&raw);
            let _ = s.complete();
        }
    }
}
