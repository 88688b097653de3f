//! Pushback: what a server's "slow down" means for its host's pace.
//!
//! Two signals, both per host (never the whole run): a `429 Too Many Requests` or
//! `503 Service Unavailable` carrying `Retry-After` pauses the host until then (all its queued
//! requests wait; other hosts go on), and with `--adaptive` a 429 cuts the host's rate in half
//! (multiplicative decrease) while each success raises it a little (additive increase), the
//! AIMD rule TCP uses for its congestion window. This module decides; the gate (`limit`)
//! applies the result. It does not retry requests (that is the retry policy's job).

use std::time::{Duration, Instant, SystemTime};

use crate::retry::parse_retry_after;

/// Multiplicative decrease: a 429 multiplies the host's rate by this.
pub(super) const DECREASE: f64 = 0.5;
/// Additive increase: each successful response adds this many requests per second.
pub(super) const INCREASE_PER_SUCCESS: f64 = 0.05;
/// The adaptive rate never goes below this (one request every 10 s).
pub(super) const MIN_RATE: f64 = 0.1;
/// With no rate configured for the host, a first 429 cuts from this rate (so to 5/s), and the
/// host is unlimited again once additive increase brings it back here.
pub(super) const UNLIMITED_START: f64 = 10.0;

/// Does this response ask the host to pause, and until when? (429 or 503 with a valid
/// `Retry-After`.) The pause is capped at `max` (`--max-retry-wait`, the longest wait the user
/// accepts): a server asking for a day would otherwise hold the host's queue for a day; past
/// the cap the host resumes, and a new 429 pauses it again.
pub(super) fn pause_until(
    status: u16,
    retry_after: Option<&str>,
    now: Instant,
    max: Duration,
) -> Option<Instant> {
    if status != 429 && status != 503 {
        return None;
    }
    let wait = parse_retry_after(retry_after?, SystemTime::now())?;
    Some(now + wait.min(max))
}

/// One host's adaptive rate (AIMD).
#[derive(Debug, Clone)]
pub(super) struct Aimd {
    /// Requests per second now; `None` while unlimited.
    rate: Option<f64>,
    /// The configured rate for the host, which additive increase never exceeds; `None` when
    /// nothing is configured.
    ceiling: Option<f64>,
    /// When the rate was last cut: a 429 to a request admitted before that describes the old
    /// rate, and cutting again for it would punish the host twice for one overload.
    last_cut: Option<Instant>,
}

impl Aimd {
    pub(super) fn new(ceiling: Option<f64>) -> Aimd {
        Aimd {
            rate: ceiling,
            ceiling,
            last_cut: None,
        }
    }

    /// Requests per second now (`None`: unlimited).
    pub(super) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Whether the rate is below what is configured (the state is worth remembering).
    pub(super) fn is_cut(&self) -> bool {
        self.rate != self.ceiling
    }

    /// A 429 arrived for a request admitted at `admitted`. Returns whether the rate changed.
    pub(super) fn on_too_many(&mut self, admitted: Instant, now: Instant) -> bool {
        if self.last_cut.is_some_and(|cut| admitted < cut) {
            return false;
        }
        let from = self.rate.unwrap_or(UNLIMITED_START);
        self.rate = Some((from * DECREASE).max(MIN_RATE));
        self.last_cut = Some(now);
        true
    }

    /// A successful response arrived. Returns whether the rate changed.
    pub(super) fn on_success(&mut self) -> bool {
        let Some(rate) = self.rate else {
            return false;
        };
        let raised = rate + INCREASE_PER_SUCCESS;
        self.rate = match self.ceiling {
            Some(c) => Some(raised.min(c)),
            None if raised >= UNLIMITED_START => None,
            None => Some(raised),
        };
        self.rate != Some(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_only_on_429_or_503_with_retry_after() {
        let t = Instant::now();
        let max = Duration::from_secs(60);
        assert_eq!(pause_until(200, Some("3"), t, max), None);
        assert_eq!(pause_until(429, None, t, max), None);
        assert_eq!(
            pause_until(503, Some("2"), t, max),
            Some(t + Duration::from_secs(2))
        );
        assert_eq!(pause_until(429, Some("99999"), t, max), Some(t + max));
    }

    #[test]
    fn a_429_halves_the_rate_once_per_cut_and_successes_raise_it_slowly() {
        let t = Instant::now();
        let later = t + Duration::from_millis(1);
        let mut a = Aimd::new(Some(8.0));
        assert!(a.on_too_many(t, t));
        assert_eq!(a.rate(), Some(4.0));
        // A second 429 for a request admitted before the cut does not cut again.
        assert!(!a.on_too_many(t - Duration::from_millis(1), later));
        assert!(a.on_too_many(later, later));
        assert_eq!(a.rate(), Some(2.0));
        for _ in 0..1000 {
            a.on_success();
        }
        assert_eq!(a.rate(), Some(8.0));
        assert!(!a.is_cut());

        let mut u = Aimd::new(None);
        assert!(!u.on_success());
        u.on_too_many(t, t);
        assert_eq!(u.rate(), Some(5.0));
        for _ in 0..100 {
            u.on_success();
        }
        assert_eq!(u.rate(), None, "back to unlimited");
    }
}
