//! Pacing from quota headers: what a host's announced budget means for its pace.
//!
//! The latest budget a host announced (`quota_headers`) becomes one more per-host quota, so
//! it can only ever slow the host below the user's limits (every quota that applies must
//! accept a start): `remaining` requests spread evenly over the time to `reset`, one at a
//! time (burst 1). Requests already in flight to the host count against `remaining` (they
//! will spend it), so a busy host is paced by what is really left. With nothing left the
//! host pauses until the reset, at most `--max-retry-wait` (as a `Retry-After` does).
//!
//! Until a host has answered once, its budget is unknown, and nothing holds its first
//! requests back beyond the user's limits. This module decides; the gate applies the result
//! under its lock. It does not parse headers (that is `quota_headers`).

use std::time::{Duration, Instant};

use super::quota::Quota;
use super::quota_headers::Budget;

/// A new pace is logged when it differs from the last one logged by more than this fraction
/// (the budget's remaining/reset ratio moves a little with every response).
const LOG_CHANGE: f64 = 0.1;
/// The pause of an exhausted budget whose reset is now or past (a contradiction): long
/// enough not to hammer the host, short enough to find out soon.
const EXHAUSTED_MIN_PAUSE: Duration = Duration::from_secs(1);

/// One host's pace from its quota headers.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// While a budget limits the host: one start per `reset / remaining`.
    pub(super) quota: Option<Quota>,
    /// The pace in effect, requests per second (0 while paused for an exhausted budget).
    pub(super) rate: Option<f64>,
}

/// What a budget did to the host's pace, for the gate to apply and log.
#[derive(Debug, PartialEq)]
pub(super) enum Change {
    /// Nothing worth a log line.
    Same,
    /// Paced at this many requests per second.
    Paced(f64),
    /// The budget is spent: pause until then; `capped` when `--max-retry-wait` cut the wait,
    /// `news` unless the host was paused for a spent budget already (then it is not logged
    /// again, but the pause still applies: a pause may have ended in between).
    Exhausted {
        until: Instant,
        capped: bool,
        news: bool,
    },
    /// The budget no longer limits the host.
    Unpaced,
}

impl Pace {
    /// Take `budget` (announced by a response that arrived at `now`, with `in_flight`
    /// requests to the host in flight, that one included) into account.
    pub(super) fn apply(
        &mut self,
        budget: &Budget,
        in_flight: usize,
        now: Instant,
        max_pause: Duration,
    ) -> Change {
        let others = u64::try_from(in_flight.saturating_sub(1)).unwrap_or(u64::MAX);
        let left = budget.remaining.saturating_sub(others);
        if left == 0 {
            let wait = budget.reset.max(EXHAUSTED_MIN_PAUSE);
            let news = self.rate != Some(0.0);
            self.rate = Some(0.0);
            return Change::Exhausted {
                until: now + wait.min(max_pause),
                capped: wait > max_pause,
                news,
            };
        }
        if budget.reset.is_zero() {
            // The window resets now: nothing to spread.
            return self.unpace();
        }
        // A single wait is never longer than --max-retry-wait.
        let interval = (budget.reset / u32::try_from(left).unwrap_or(u32::MAX)).min(max_pause);
        let rate = 1.0 / interval.as_secs_f64();
        let old = self.rate;
        let slower = old.is_none_or(|o| rate < o);
        let moved = old.is_none_or(|o| o == 0.0 || (rate - o).abs() > o * LOG_CHANGE);
        if !slower && !moved {
            // Slightly faster than the pace in effect: keep the slower one (fewer limiter
            // rebuilds, and on the polite side).
            return Change::Same;
        }
        let one = std::num::NonZeroU32::MIN;
        self.quota = Some(match self.quota.take() {
            Some(q) => q.reshape(interval, Some(one), None),
            None => Quota::scheduled(interval, Some(one), Some(now)),
        });
        self.rate = Some(rate);
        if moved {
            Change::Paced(rate)
        } else {
            Change::Same
        }
    }

    fn unpace(&mut self) -> Change {
        self.quota = None;
        match self.rate.take() {
            Some(_) => Change::Unpaced,
            None => Change::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(remaining: u64, reset: u64) -> Budget {
        Budget {
            remaining,
            reset: Duration::from_secs(reset),
            limit: None,
        }
    }

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn remaining_spreads_over_the_reset_and_in_flight_requests_count() {
        let t = Instant::now();
        let mut p = Pace::default();
        assert_eq!(p.apply(&budget(50, 10), 1, t, MAX), Change::Paced(5.0));
        // A small drift is not a change worth a line.
        assert_eq!(p.apply(&budget(48, 10), 1, t, MAX), Change::Same);
        assert!((p.rate.unwrap() - 4.8).abs() < 1e-6, "but slower: applied");
        // Nine others in flight will spend nine of the ten left.
        assert_eq!(p.apply(&budget(10, 10), 10, t, MAX), Change::Paced(0.1));
        assert_eq!(
            p.apply(&budget(10, 10), 11, t, MAX),
            Change::Exhausted {
                until: t + Duration::from_secs(10),
                capped: false,
                news: true
            }
        );
        assert_eq!(
            p.apply(&budget(0, 10), 1, t, MAX),
            Change::Exhausted {
                until: t + Duration::from_secs(10),
                capped: false,
                news: false
            },
            "paused again, not logged again"
        );
        assert_eq!(p.apply(&budget(100, 10), 1, t, MAX), Change::Paced(10.0));
    }

    #[test]
    fn contradictions_never_pause_for_long() {
        let t = Instant::now();
        let mut p = Pace::default();
        let huge = budget(0, 10_000_000);
        assert_eq!(
            p.apply(&huge, 1, t, MAX),
            Change::Exhausted {
                until: t + MAX,
                capped: true,
                news: true
            }
        );
        let mut p = Pace::default();
        assert_eq!(
            p.apply(&budget(0, 0), 1, t, MAX),
            Change::Exhausted {
                until: t + EXHAUSTED_MIN_PAUSE,
                capped: false,
                news: true
            }
        );
        let mut p = Pace::default();
        p.apply(&budget(5, 10), 1, t, MAX);
        assert_eq!(p.apply(&budget(5, 0), 1, t, MAX), Change::Unpaced);
        // One request per day left: the wait between starts is capped too.
        let mut p = Pace::default();
        assert_eq!(
            p.apply(&budget(1, 86_400), 1, t, MAX),
            Change::Paced(1.0 / 60.0)
        );
    }
}
