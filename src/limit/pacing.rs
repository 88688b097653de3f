//! Pacing from quota headers: what a host's announced budget means for its pace.
//!
//! The latest budget a host announced (`quota_headers`) limits the host in two ways, both of
//! which can only ever slow it below the user's limits:
//!
//! - **The count** (the guarantee): `remaining` starts until `reset`, less the requests to the
//!   host already in flight (they will spend part of it). Every start spends one; when none is
//!   left the host holds until the reset, as a `Retry-After` holds it. At the reset the count
//!   refills to the window's quota (the announced limit, else the most the host ever said
//!   remained, plus one) and lasts one window (the longest reset seen), until a response says
//!   more. So past the first response, no window gets more starts than its budget, however
//!   high `--concurrency` is; and a retry spends the count like any other start.
//! - **The spread** (politeness): the count spreads evenly over the time to reset, one start
//!   at a time (burst 1), as one more per-host quota. Reset has whole-second resolution and
//!   servers round it up, so the spread aims one second early (at least at half the reset):
//!   otherwise the last requests of each window miss it and the run needs more windows.
//!
//! Every hold is at most `--max-retry-wait`; a spent budget whose reset is now or past holds
//! for 1 s. Until a host has answered once, its budget is unknown, and nothing holds its first
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
/// The resolution of Reset values (whole seconds): the spread aims this much before the
/// announced reset (see the module docs).
const RESET_RESOLUTION: Duration = Duration::from_secs(1);
/// The longest an idle host is remembered for its budget's count.
const COUNT_MEMORY: Duration = Duration::from_secs(600);

/// One host's pace from its quota headers.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// While a budget limits the host: one start per `reset / remaining` (the spread).
    pub(super) quota: Option<Quota>,
    /// The pace in effect, requests per second (0 while paused for an exhausted budget).
    pub(super) rate: Option<f64>,
    /// The count: starts the budget still allows; `None` while no budget is known.
    count: Option<Count>,
    /// The window's quota, for the refill at a reset: the latest announced limit, else the
    /// most the host ever said remained, plus one (that response spent one).
    window_quota: u64,
    /// The window's length, for the refill: the longest reset the host announced.
    window: Duration,
}

/// Starts allowed until a window resets.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Count {
    left: u64,
    resets_at: Instant,
    /// An idle host is forgotten (see `state`) once its window reset, or after
    /// [`COUNT_MEMORY`] when the reset is further away: per-host state stays bounded even
    /// when a million hosts announce day-long windows.
    forget_at: Instant,
}

impl Count {
    fn new(left: u64, now: Instant, reset: Duration) -> Count {
        Count {
            left,
            resets_at: now + reset,
            forget_at: now + reset.min(COUNT_MEMORY),
        }
    }
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
        self.window_quota = match budget.limit {
            Some(limit) => limit,
            None => self.window_quota.max(budget.remaining.saturating_add(1)),
        }
        // A quota of 0 would hold the host for good: garbage, read as 1.
        .max(1);
        self.window = self.window.max(budget.reset);
        if left == 0 {
            let wait = budget.reset.max(EXHAUSTED_MIN_PAUSE);
            let until = now + wait.min(max_pause);
            self.count = Some(Count::new(0, now, wait));
            // After the reset, the refilled count spreads over a window until a response
            // says more, rather than going out at once.
            let per_window = u32::try_from(self.window_quota).unwrap_or(u32::MAX);
            self.spread(
                (spread_span(self.window) / per_window).min(max_pause),
                until,
            );
            let news = self.rate != Some(0.0);
            self.rate = Some(0.0);
            return Change::Exhausted {
                until,
                capped: wait > max_pause,
                news,
            };
        }
        if budget.reset.is_zero() {
            // The window resets now: nothing to count or spread.
            self.count = None;
            return self.unpace();
        }
        self.count = Some(Count::new(left, now, budget.reset));
        // A single wait is never longer than --max-retry-wait.
        let per_start = u32::try_from(left).unwrap_or(u32::MAX);
        let interval = (spread_span(budget.reset) / per_start).min(max_pause);
        let rate = 1.0 / interval.as_secs_f64();
        let old = self.rate;
        let slower = old.is_none_or(|o| rate < o);
        let moved = old.is_none_or(|o| o == 0.0 || (rate - o).abs() > o * LOG_CHANGE);
        if !slower && !moved {
            // Slightly faster than the pace in effect: keep the slower one (fewer limiter
            // rebuilds, and on the polite side).
            return Change::Same;
        }
        self.spread(interval, now);
        self.rate = Some(rate);
        if moved {
            Change::Paced(rate)
        } else {
            Change::Same
        }
    }

    /// A request to the host starts at `now`, with `in_flight` requests to the host in flight
    /// (this one included), and spends one of the count. Returns until when to hold the host
    /// (at most `max_pause` from now) when it spent the last one.
    pub(super) fn started(
        &mut self,
        now: Instant,
        in_flight: usize,
        max_pause: Duration,
    ) -> Option<Instant> {
        let count = self.count.as_mut()?;
        if now >= count.resets_at {
            // The window reset: a fresh window's quota, until a response says more. The
            // others in flight may reach the server in the new window: they spend it too.
            let others = u64::try_from(in_flight.saturating_sub(1)).unwrap_or(u64::MAX);
            *count = Count::new(self.window_quota.saturating_sub(others), now, self.window);
        }
        // Already 0: a hold capped at --max-retry-wait ended before the reset; this start
        // finds out whether the server agrees, and the host holds again.
        count.left = count.left.saturating_sub(1);
        (count.left == 0).then(|| count.resets_at.min(now + max_pause))
    }

    /// Whether the count may be forgotten with the host (no budget, its window over, or
    /// remembered long enough).
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.count.is_none_or(|c| c.forget_at <= now)
    }

    /// One start per `interval`, the next not before `from`.
    fn spread(&mut self, interval: Duration, from: Instant) {
        let one = std::num::NonZeroU32::MIN;
        self.quota = Some(match self.quota.take() {
            Some(q) => q.reshape(interval, Some(one), Some(from)),
            None => Quota::scheduled(interval, Some(one), Some(from)),
        });
    }

    fn unpace(&mut self) -> Change {
        self.quota = None;
        match self.rate.take() {
            Some(_) => Change::Unpaced,
            None => Change::Same,
        }
    }
}

/// The time a budget spreads over: `reset` less its resolution, at least half of it.
fn spread_span(reset: Duration) -> Duration {
    reset.saturating_sub(RESET_RESOLUTION).max(reset / 2)
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

    /// The pace of a `Paced` change, which must be close to `expected`.
    fn assert_paced(change: Change, expected: f64) {
        match change {
            Change::Paced(rate) => assert!((rate - expected).abs() < 1e-9, "{rate} != {expected}"),
            other => panic!("{other:?}, not paced at {expected}"),
        }
    }

    #[test]
    fn remaining_spreads_over_the_reset_and_in_flight_requests_count() {
        let t = Instant::now();
        let mut p = Pace::default();
        // 50 over 9 s: the spread aims a second before the (rounded-up) reset.
        assert_paced(p.apply(&budget(50, 10), 1, t, MAX), 50.0 / 9.0);
        // A small drift is not a change worth a line.
        assert_eq!(p.apply(&budget(48, 10), 1, t, MAX), Change::Same);
        assert!(
            (p.rate.unwrap() - 48.0 / 9.0).abs() < 1e-6,
            "but slower: applied"
        );
        // Nine others in flight will spend nine of the ten left.
        assert_paced(p.apply(&budget(10, 10), 10, t, MAX), 1.0 / 9.0);
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
        assert_paced(p.apply(&budget(100, 10), 1, t, MAX), 100.0 / 9.0);
        // A reset of one second spreads over half of it.
        let mut p = Pace::default();
        assert_paced(p.apply(&budget(5, 1), 1, t, MAX), 10.0);
    }

    #[test]
    fn every_start_spends_the_count_which_refills_at_the_reset() {
        let t = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pace::default();
        assert_eq!(p.started(t, 1, MAX), None, "no budget known: no count");
        let b = Budget {
            limit: Some(5),
            ..budget(3, 10)
        };
        p.apply(&b, 1, t, MAX);
        assert!(!p.is_idle(t), "the count outlives an idle moment");
        assert_eq!(p.started(t, 1, MAX), None);
        assert_eq!(p.started(t, 1, MAX), None);
        assert_eq!(
            p.started(t, 1, MAX),
            Some(t + s(10)),
            "the last one holds the host"
        );
        // A hold cut at --max-retry-wait: one start finds out, and holds again.
        assert_eq!(p.started(t + s(2), 1, s(2)), Some(t + s(4)));
        // The window reset: its quota (5) for one window (the longest reset seen, 10 s).
        for _ in 0..4 {
            assert_eq!(p.started(t + s(10), 1, MAX), None);
        }
        assert_eq!(p.started(t + s(10), 1, MAX), Some(t + s(20)));
        assert!(p.is_idle(t + s(20)));
    }

    #[test]
    fn after_a_spent_budget_the_refill_spreads_over_the_window() {
        let t = Instant::now();
        let mut p = Pace::default();
        let b = Budget {
            limit: Some(25),
            ..budget(0, 4)
        };
        assert!(matches!(p.apply(&b, 50, t, MAX), Change::Exhausted { .. }));
        let q = p.quota.as_ref().unwrap();
        // 25 over 3 s (a second before the 4 s window's end), none before the reset.
        assert_eq!(q.interval(), Duration::from_millis(120));
        assert!(q.peek().is_err());
        // Without a limit header, the quota is the most ever remaining, plus one.
        let mut p = Pace::default();
        p.apply(&budget(24, 4), 1, t, MAX);
        p.apply(&budget(0, 4), 1, t, MAX);
        assert_eq!(p.window_quota, 25);
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
        assert_eq!(
            p.started(t + MAX, 1, MAX),
            Some(t + MAX + MAX),
            "held again, capped"
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
        let later = t + EXHAUSTED_MIN_PAUSE;
        assert!(
            p.started(later, 1, MAX).is_none_or(|until| until <= later),
            "no hold"
        );
        let mut p = Pace::default();
        p.apply(&budget(5, 10), 1, t, MAX);
        assert_eq!(p.apply(&budget(5, 0), 1, t, MAX), Change::Unpaced);
        assert_eq!(p.started(t, 1, MAX), None);
        // One request per day left: the wait between starts is capped too.
        let mut p = Pace::default();
        assert_eq!(
            p.apply(&budget(1, 86_400), 1, t, MAX),
            Change::Paced(1.0 / 60.0)
        );
    }
}
