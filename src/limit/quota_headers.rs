//! Quota headers: what a response says about its host's request budget, read liberally.
//!
//! Pure functions, no state: the gate (`limit`) decides what a budget means for the host's
//! pace. Four dialects are read, header names in any case:
//!
//! - IETF structured fields (draft-ietf-httpapi-ratelimit-headers, 2023 on):
//!   `RateLimit: "default";r=50;t=30` (r remaining, t seconds to reset), one item per policy,
//!   with `RateLimit-Policy: "default";q=100;w=60` (quota per window) giving the window when
//!   `t` is missing. The earlier draft's dictionary form `RateLimit: limit=100, remaining=50,
//!   reset=30` is read too.
//! - IETF triple (earlier drafts): `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
//! - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (GitHub, GitLab,
//!   Twitter and many more), where Reset is either seconds from now or a Unix time.
//!
//! **Delta or epoch.** A Reset value up to [`EPOCH_THRESHOLD`] (one year of seconds) is a
//! delta in seconds; a larger one is a Unix time in seconds, and one above
//! [`EPOCH_MILLIS_THRESHOLD`] a Unix time in milliseconds. No window is a year long, and no
//! clock is in 1971, so the two never overlap. A Unix time in the past means "reset now".
//!
//! When a response carries several policies (several structured items, or several dialects
//! at once), the tightest wins: an exhausted one first (the longest wait), else the one with
//! the fewest remaining requests per second. A value that does not parse is ignored, never an
//! error: a garbage header leaves the host unpaced, a negative remaining counts as zero.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// Reset values above this many seconds (365 days) are Unix times, not deltas.
pub(crate) const EPOCH_THRESHOLD: u64 = 365 * 24 * 3600;
/// Reset values above this are Unix times in milliseconds (this is 5138 AD in seconds).
pub(crate) const EPOCH_MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// What one response says about its host's budget: `remaining` requests until `reset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    /// Requests the server will still accept in this window (a negative value reads as 0).
    pub remaining: u64,
    /// Time until the window resets, from when the response arrived.
    pub reset: Duration,
    /// The window's quota, when the server says it.
    pub limit: Option<u64>,
}

impl Budget {
    /// Remaining requests per second; 0 when exhausted.
    pub(crate) fn rate(&self) -> f64 {
        if self.reset.is_zero() {
            return f64::INFINITY;
        }
        self.remaining as f64 / self.reset.as_secs_f64()
    }

    /// Whether `self` asks for a slower pace than `other`.
    fn tighter_than(&self, other: &Budget) -> bool {
        match (self.remaining, other.remaining) {
            (0, 0) => self.reset > other.reset,
            (0, _) => true,
            (_, 0) => false,
            _ => self.rate() < other.rate(),
        }
    }
}

/// The tightest budget `headers` announce, if any; `now` is the wall clock (for Unix-time
/// resets).
pub(crate) fn budget(headers: &HeaderMap, now: SystemTime) -> Option<Budget> {
    let get = |name: &str| {
        // HeaderMap names are lower case already; several values of one header are joined
        // as a list, as RFC 9110 allows.
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let mut found = Vec::new();
    if let Some(v) = get("ratelimit") {
        found.extend(structured(&v, get("ratelimit-policy").as_deref()));
    }
    for prefix in ["ratelimit-", "x-ratelimit-"] {
        let field = |name: &str| get(&format!("{prefix}{name}"));
        if let Some(b) = triple(
            field("limit").as_deref(),
            field("remaining").as_deref(),
            field("reset").as_deref(),
            now,
        ) {
            found.push(b);
        }
    }
    tightest(found)
}

fn tightest(budgets: impl IntoIterator<Item = Budget>) -> Option<Budget> {
    budgets
        .into_iter()
        .reduce(|a, b| if b.tighter_than(&a) { b } else { a })
}

/// `*-Limit`, `*-Remaining`, `*-Reset`: Remaining and Reset must both parse.
pub(crate) fn triple(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<&str>,
    now: SystemTime,
) -> Option<Budget> {
    let remaining = count(remaining?)?;
    let reset = reset_in(number(reset?)?, now)?;
    Some(Budget {
        remaining,
        reset,
        limit: limit.and_then(count),
    })
}

/// The structured `RateLimit` field (one item per policy: `"name";r=R;t=T`), or the earlier
/// dictionary form (`limit=L, remaining=R, reset=T`). `policy` is `RateLimit-Policy`, whose
/// `w` stands in for a missing `t` and whose `q` gives the limit.
pub(crate) fn structured(value: &str, policy: Option<&str>) -> Vec<Budget> {
    let policies = policy.map(items).unwrap_or_default();
    let items = items(value);
    // The earlier draft: one dictionary with limit / remaining / reset members.
    let member = |key: &str| {
        items
            .iter()
            .find_map(|(name, params)| match params.as_slice() {
                [] => name.split_once('=').filter(|(k, _)| k.trim() == key),
                _ => None,
            })
            .map(|(_, v)| v.trim().to_owned())
    };
    if let (Some(r), Some(t)) = (member("remaining"), member("reset")) {
        let limit = member("limit");
        // Reset in this form is always delta seconds.
        return triple(limit.as_deref(), Some(&r), Some(&t), UNIX_EPOCH)
            .into_iter()
            .collect();
    }
    items
        .iter()
        .filter_map(|(name, params)| {
            let param = |list: &[(String, String)], key: &str| {
                list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
            };
            let policy = policies.iter().find(|(n, _)| n == name).map(|(_, p)| p);
            let remaining = count(&param(params, "r")?)?;
            let t = param(params, "t").or_else(|| param(policy?, "w"))?;
            let reset = Duration::from_secs_f64(number(&t)?.clamp(0.0, EPOCH_THRESHOLD as f64));
            Some(Budget {
                remaining,
                reset,
                limit: policy.and_then(|p| count(&param(p, "q")?)),
            })
        })
        .collect()
}

/// A structured-field list: items separated by commas, each a name (quoted string or
/// token) followed by `;key=value` parameters. Commas and semicolons inside quotes are kept.
fn items(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    split_outside_quotes(text, ',')
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let mut parts = split_outside_quotes(item, ';').into_iter();
            let name = unquote(parts.next().unwrap_or_default());
            let params = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), unquote(v)))
                })
                .collect();
            (name, params)
        })
        .collect()
}

fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    t.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t)
        .to_owned()
}

/// A number at the start of `text` (up to a `,` or `;`, as in `100, 100;w=60`).
fn number(text: &str) -> Option<f64> {
    let first = text.split([',', ';']).next()?.trim();
    let n: f64 = first.parse().ok()?;
    n.is_finite().then_some(n)
}

/// A request count: negative counts as 0, fractions are cut.
fn count(text: &str) -> Option<u64> {
    let n = number(text)?;
    // Saturating: a huge count is as good as unlimited.
    Some(n.max(0.0) as u64)
}

/// A Reset value as time from `now`: delta seconds, or a Unix time (see the module docs).
/// `None` for a negative delta.
pub(crate) fn reset_in(value: f64, now: SystemTime) -> Option<Duration> {
    if value < 0.0 {
        return None;
    }
    if value <= EPOCH_THRESHOLD as f64 {
        return Some(Duration::from_secs_f64(value));
    }
    let at = if value > EPOCH_MILLIS_THRESHOLD as f64 {
        UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(value / 1000.0).ok()?)?
    } else {
        UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(value).ok()?)?
    };
    // In the past: the window has reset already.
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::{HeaderName, HeaderValue};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn b(remaining: u64, reset: u64, limit: Option<u64>) -> Option<Budget> {
        Some(Budget {
            remaining,
            reset: Duration::from_secs(reset),
            limit,
        })
    }

    #[test]
    fn each_dialect() {
        let ietf = map(&[
            ("RateLimit-Policy", r#""default";q=100;w=60"#),
            ("RateLimit", r#""default";r=50;t=30"#),
        ]);
        assert_eq!(budget(&ietf, now()), b(50, 30, Some(100)));
        let draft7 = map(&[("RateLimit", "limit=100, remaining=7, reset=9")]);
        assert_eq!(budget(&draft7, now()), b(7, 9, Some(100)));
        let triple = map(&[
            ("RateLimit-Limit", "10"),
            ("RateLimit-Remaining", "3"),
            ("RateLimit-Reset", "4"),
        ]);
        assert_eq!(budget(&triple, now()), b(3, 4, Some(10)));
        let x_delta = map(&[
            ("x-ratelimit-limit", "60"),
            ("X-RATELIMIT-REMAINING", "59"),
            ("X-RateLimit-Reset", "12"),
        ]);
        assert_eq!(budget(&x_delta, now()), b(59, 12, Some(60)));
        let x_epoch = map(&[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", "1800000042"),
        ]);
        assert_eq!(budget(&x_epoch, now()), b(0, 42, None));
        let x_millis = map(&[
            ("X-RateLimit-Remaining", "1"),
            ("X-RateLimit-Reset", "1800000005000"),
        ]);
        assert_eq!(budget(&x_millis, now()), b(1, 5, None));
        assert_eq!(budget(&map(&[("content-type", "text/plain")]), now()), None);
    }

    #[test]
    fn a_missing_t_comes_from_the_policy_window() {
        let h = map(&[
            (
                "RateLimit-Policy",
                r#""burst";q=10;w=1, "day";q=1000;w=86400"#,
            ),
            ("RateLimit", r#""burst";r=9, "day";r=5;t=3600"#),
        ]);
        // burst: 9 per 1 s; day: 5 per hour. The day is tighter.
        assert_eq!(budget(&h, now()), b(5, 3600, Some(1000)));
    }

    #[test]
    fn the_tightest_policy_wins_and_exhausted_beats_all() {
        let h = map(&[("RateLimit", r#""a";r=100;t=10, "b";r=0;t=3, "c";r=0;t=7"#)]);
        assert_eq!(budget(&h, now()), b(0, 7, None));
        let h = map(&[
            ("RateLimit", r#""a";r=100;t=10"#),
            ("X-RateLimit-Remaining", "5"),
            ("X-RateLimit-Reset", "10"),
        ]);
        assert_eq!(budget(&h, now()), b(5, 10, None));
    }

    #[test]
    fn malformed_and_contradictory_values() {
        let h = |rem: &str, reset: &str| {
            budget(
                &map(&[("X-RateLimit-Remaining", rem), ("X-RateLimit-Reset", reset)]),
                now(),
            )
        };
        assert_eq!(h("-5", "10"), b(0, 10, None), "negative remaining is 0");
        assert_eq!(
            h("3", "1700000000"),
            b(3, 0, None),
            "a reset in the past is now"
        );
        assert_eq!(h("garbage", "10"), None);
        assert_eq!(h("3", "soon"), None);
        assert_eq!(h("3", "-1"), None);
        assert_eq!(h("3", "NaN"), None);
        assert_eq!(h("3", "inf"), None);
        assert_eq!(h("1e30", "10").unwrap().remaining, u64::MAX);
        // A huge reset is a far-off Unix time, or nothing: never an overflow.
        assert_eq!(h("0", "1e300"), None);
        assert_eq!(h("0", "4102444800").unwrap().remaining, 0);
        assert_eq!(
            budget(&map(&[("RateLimit", r#""a";r=x;t=1, b;r=2;t="3""#)]), now()),
            b(2, 3, None)
        );
        assert_eq!(budget(&map(&[("RateLimit", ",;=,\"")]), now()), None);
    }

    proptest! {
        /// Whatever the server sends, parsing never panics.
        #[test]
        fn never_panics(rem in ".{0,40}", reset in ".{0,40}", rl in ".{0,80}") {
            let mut m = HeaderMap::new();
            for (k, v) in [
                ("x-ratelimit-remaining", &rem),
                ("x-ratelimit-reset", &reset),
                ("ratelimit", &rl),
                ("ratelimit-policy", &rl),
            ] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    m.append(HeaderName::from_static(k), v);
                }
            }
            let _ = budget(&m, now());
        }

        /// A delta is read as itself; a Unix time as the distance from now.
        #[test]
        fn delta_and_epoch_never_overlap(delta in 0u64..=EPOCH_THRESHOLD, ahead in 0u64..1_000_000) {
            prop_assert_eq!(reset_in(delta as f64, now()), Some(Duration::from_secs(delta)));
            let epoch = 1_800_000_000 + ahead;
            prop_assert_eq!(reset_in(epoch as f64, now()), Some(Duration::from_secs(ahead)));
        }
    }
}
