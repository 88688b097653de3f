//! Retry policy: which failures are worth another attempt, and how long to wait before it.
//!
//! This module only decides; it does not sleep, hold slots or talk to the rate limiter (the
//! attempt loop in `scheduler` does that, passing the gate again before every attempt). It
//! knows the failure classes (`ErrorKind`), HTTP statuses and methods, not sockets.
//!
//! The wait is exponential backoff with "full jitter" (a uniform draw between zero and
//! `min(cap, base * 2^n)`), which spreads a crowd of clients that failed together instead of
//! sending them back in lockstep. A server's `Retry-After` (seconds or an HTTP date) replaces
//! the drawn wait; one longer than `--max-retry-wait` ends the retries, and the record says
//! how long the server asked for.

use std::time::{Duration, SystemTime};

use reqwest::Method;

use crate::record::ErrorKind;

/// How a run retries failed attempts (`--retries`, `--retry-base`, `--retry-cap`,
/// `--max-retry-wait`, `--retry-500`, `--retry-non-idempotent`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries after the first attempt (so at most `retries + 1` attempts). Default 2.
    pub retries: u32,
    /// The first backoff ceiling. Default 250 ms.
    pub base: Duration,
    /// The largest backoff ceiling. Default 10 s.
    pub cap: Duration,
    /// The longest `Retry-After` honoured; a longer one fails the record. Default 60 s.
    pub max_wait: Duration,
    /// Retry a 500 Internal Server Error (opt-in: it is often a bug, not a hiccup).
    pub retry_500: bool,
    /// Retry methods that are not idempotent (POST, PATCH).
    pub non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 2,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
            retry_500: false,
            non_idempotent: false,
        }
    }
}

/// What one failed attempt looked like, as far as the policy cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Failure<'a> {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// The raw `Retry-After` header of the response, if any.
    pub retry_after: Option<&'a str>,
}

/// The policy's answer after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop here. `retryable` says whether the failure was of a retryable class at all.
    GiveUp { retryable: bool },
    /// The server asked for a wait longer than `--max-retry-wait`.
    WaitTooLong { asked: Duration },
}

impl RetryPolicy {
    /// Decide after attempt number `attempt` (1-based) failed with `failure`.
    pub(crate) fn decide(&self, method: &Method, failure: &Failure<'_>, attempt: u32) -> Decision {
        let retryable = is_retryable(failure.kind, failure.status, self.retry_500);
        if !retryable {
            return Decision::GiveUp { retryable };
        }
        if attempt > self.retries || !(self.non_idempotent || is_idempotent(method)) {
            return Decision::GiveUp { retryable };
        }
        let asked = failure
            .retry_after
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match asked {
            Some(asked) if asked > self.max_wait => Decision::WaitTooLong { asked },
            Some(asked) => Decision::Retry(asked),
            None => Decision::Retry(self.backoff(attempt)),
        }
    }

    /// Full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
            .min(self.cap);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Whether a failure of this kind (and status) is worth another attempt, whatever the method.
pub(crate) fn is_retryable(kind: ErrorKind, status: Option<u16>, retry_500: bool) -> bool {
    match kind {
        ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Body => true,
        ErrorKind::HttpStatus => match status {
            Some(408 | 429 | 502 | 503 | 504) => true,
            Some(500) => retry_500,
            _ => false,
        },
        ErrorKind::InvalidUrl
        | ErrorKind::Dns
        | ErrorKind::Tls
        | ErrorKind::Redirect
        | ErrorKind::Protocol
        | ErrorKind::Decode
        | ErrorKind::TooLarge
        | ErrorKind::Cancelled
        | ErrorKind::InvalidSpec
        | ErrorKind::Save
        | ErrorKind::Assertion
        | ErrorKind::Filter
        | ErrorKind::PageLoop => false,
    }
}

/// RFC 9110 §9.2.2: repeating these has the same effect as sending them once.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The longest wait a `Retry-After` can ask for: larger numbers (up to any number of digits)
/// are read as this, which is over any `--max-retry-wait`.
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(u32::MAX as u64);

/// `Retry-After` as a wait from `now`: delay-seconds (`120`, digits only) or an HTTP date. A
/// date in the past means "now"; a number too large for any integer is the longest wait
/// ([`LONGEST_RETRY_AFTER`]); anything unparsable is ignored (`None`), so the normal backoff
/// applies.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Clamp absurd values (even past u64) instead of overflowing.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(LONGEST_RETRY_AFTER));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 2,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            max_wait: Duration::from_secs(5),
            retry_500: false,
            non_idempotent: false,
        }
    }

    fn status(code: u16, retry_after: Option<&str>) -> Failure<'_> {
        Failure {
            kind: ErrorKind::HttpStatus,
            status: Some(code),
            retry_after,
        }
    }

    #[test]
    fn only_transient_failures_of_idempotent_requests_retry() {
        let p = policy();
        let get = Method::GET;
        for code in [408, 429, 502, 503, 504] {
            assert!(matches!(
                p.decide(&get, &status(code, None), 1),
                Decision::Retry(_)
            ));
        }
        for code in [400, 401, 404, 500, 501] {
            assert_eq!(
                p.decide(&get, &status(code, None), 1),
                Decision::GiveUp { retryable: false },
                "{code}"
            );
        }
        let with_500 = RetryPolicy {
            retry_500: true,
            ..policy()
        };
        assert!(matches!(
            with_500.decide(&get, &status(500, None), 1),
            Decision::Retry(_)
        ));
        // Out of retries: still a retryable class, but no more attempts.
        assert_eq!(
            p.decide(&get, &status(503, None), 3),
            Decision::GiveUp { retryable: true }
        );
        // POST only with the opt-in.
        assert_eq!(
            p.decide(&Method::POST, &status(503, None), 1),
            Decision::GiveUp { retryable: true }
        );
        let post_ok = RetryPolicy {
            non_idempotent: true,
            ..policy()
        };
        assert!(matches!(
            post_ok.decide(&Method::POST, &status(503, None), 1),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p = policy();
        for attempt in 1..40 {
            let ceiling = Duration::from_millis(100 * (1 << (attempt - 1).min(10))).min(p.cap);
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= ceiling);
            }
        }
        let draws: std::collections::HashSet<Duration> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(draws.len() > 10, "full jitter draws vary");
    }

    #[test]
    fn retry_after_is_read_in_both_forms_and_capped_by_max_wait() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("+5", now), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999999999999", now),
            Some(LONGEST_RETRY_AFTER),
            "too large for an integer: the longest wait, not ignored"
        );

        let p = policy();
        assert_eq!(
            p.decide(&Method::GET, &status(429, Some("2")), 1),
            Decision::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(&Method::GET, &status(429, Some("3600")), 1),
            Decision::WaitTooLong {
                asked: Duration::from_secs(3600)
            }
        );
        assert!(matches!(
            p.decide(&Method::GET, &status(503, Some("184467440737095516160")), 1),
            Decision::WaitTooLong { .. }
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any header text: no panic; digits are exactly that many seconds (clamped), so a
        /// number is never shorter than it says, and never ignored.
        #[test]
        fn retry_after_numbers_are_exact_or_the_longest_wait(digits in "[0-9]{1,40}", junk in "\\PC{0,40}") {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let _ = parse_retry_after(&junk, now);
            let got = parse_retry_after(&format!(" {digits} "), now).unwrap();
            match digits.parse::<u64>() {
                Ok(n) if n <= u64::from(u32::MAX) => proptest::prop_assert_eq!(got, Duration::from_secs(n)),
                _ => proptest::prop_assert_eq!(got, LONGEST_RETRY_AFTER),
            }
        }

        /// HTTP dates round-trip to the wait they name (to the second).
        #[test]
        fn retry_after_dates_round_trip(secs in 0u64..10_000_000) {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let date = httpdate::fmt_http_date(now + Duration::from_secs(secs));
            proptest::prop_assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(secs)));
        }
    }
}
