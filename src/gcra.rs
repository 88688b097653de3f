//! GCRA (the generic cell rate algorithm): one rate quota's arithmetic, with a peek.
//!
//! This is the algorithm governor implements (same state, same conformance test), written out
//! here because the gate needs two things governor does not offer: *peeking* (ask every quota
//! that applies to a request "would you accept now?" and only then take a cell from all of
//! them, so no cell is ever taken and thrown away when a later quota refuses), and changing a
//! quota's interval in place (the adaptive per-host rate). State is one instant, the
//! theoretical arrival time (TAT); time is std's monotonic [`Instant`] (see
//! docs/rate-limiting.md for why not a TSC clock). This module knows nothing of hosts or
//! requests.
//!
//! With interval `T` (= 1/rate) and burst `B`, the tolerance is `tau = (B - 1) * T`. A cell
//! conforms at `now` when `now >= TAT - tau`; taking it sets `TAT = max(TAT, now) + T`. Any
//! sequence of accepted cells then has at most `B + W/T` cells in any window of length `W`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::units::Rate;

/// The timer lateness an automatic burst absorbs: starts that fall behind schedule by up to
/// this much (a tokio timer fires ~1-2 ms late; a busy machine adds more) are caught up, so
/// the long-run mean stays at the configured rate. See `auto_burst`.
pub const LATENESS_ALLOWANCE: Duration = Duration::from_millis(20);

/// One rate quota.
#[derive(Debug, Clone)]
pub struct Gcra {
    interval: Duration,
    burst: NonZeroU32,
    /// Theoretical arrival time; `None` until the first cell (a fresh, full bucket).
    tat: Option<Instant>,
}

impl Gcra {
    /// A quota of `rate` with `burst` (`None`: the automatic burst for that rate).
    pub fn new(rate: Rate, burst: Option<NonZeroU32>) -> Gcra {
        let interval = rate.interval().max(Duration::from_nanos(1));
        Gcra {
            interval,
            burst: burst.unwrap_or_else(|| auto_burst(interval)),
            tat: None,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// How late a start may be without losing schedule (`tau`).
    pub fn tolerance(&self) -> Duration {
        self.interval * (self.burst.get() - 1)
    }

    /// The earliest instant a cell conforms; `None` means "now, whenever now is".
    pub fn ready_at(&self) -> Option<Instant> {
        let tat = self.tat?;
        // `tat - tau` can precede the clock's epoch early in a process: then it is "now".
        tat.checked_sub(self.tolerance())
    }

    /// Would a cell conform at `now`? Does not change anything.
    pub fn conforms(&self, now: Instant) -> bool {
        self.tat.is_none_or(|tat| now + self.tolerance() >= tat)
    }

    /// Take a cell at `now`. Call only after [`Gcra::conforms`] said yes at the same `now`.
    pub fn take(&mut self, now: Instant) {
        let base = self.tat.map_or(now, |tat| tat.max(now));
        self.tat = Some(base + self.interval);
    }

    /// True when the state is indistinguishable from a fresh quota (the bucket is full), so
    /// it can be dropped without changing any future decision.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tat.is_none_or(|tat| tat <= now)
    }

    /// Make the next cell conform no earlier than `at` minus the tolerance (as if a cell had
    /// been taken at `at - T`): after a cut, the next start is spaced by the new rate.
    pub fn defer_to(&mut self, at: Instant) {
        self.tat = Some(self.tat.map_or(at, |tat| tat.max(at)));
    }

    /// Change the rate, keeping the schedule (the adaptive per-host rate). An automatic burst
    /// is recomputed for the new interval; an explicit one is kept.
    pub fn set_interval(&mut self, interval: Duration, burst: Option<NonZeroU32>) {
        self.interval = interval.max(Duration::from_nanos(1));
        self.burst = burst.unwrap_or_else(|| auto_burst(self.interval));
    }
}

/// The burst used when `--burst` is not given: `1 + floor(LATENESS_ALLOWANCE / T)`.
///
/// With burst 1 every start must wait a full interval after the previous one, so each late
/// timer wake-up is lost for good and the mean rate undershoots (by ~12% at 1000/s). A burst
/// of `B` lets a start that is up to `(B - 1) * T` late keep its place in the schedule. This
/// choice is 1 (strict spacing) below 50/s, where the gate spins the last ~2 ms instead, and
/// grows with the rate above: 2 at 50/s, 21 at 1000/s, 101 at 5000/s (20 ms worth of starts).
pub fn auto_burst(interval: Duration) -> NonZeroU32 {
    let extra = LATENESS_ALLOWANCE.as_nanos() / interval.as_nanos().max(1);
    NonZeroU32::new(u32::try_from(extra.saturating_add(1)).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn auto_bursts() {
        let b = |s: &str| Gcra::new(rate(s), None).burst().get();
        assert_eq!(b("1/s"), 1);
        assert_eq!(b("10/s"), 1);
        assert_eq!(b("49/s"), 1);
        assert_eq!(b("50/s"), 2);
        assert_eq!(b("1000/s"), 21);
        assert_eq!(b("5000/s"), 101);
        assert_eq!(b("5000/h"), 1);
    }

    /// The defining bound: at most B + W/T accepted cells in any window W, whatever the
    /// arrival pattern, and late arrivals within the tolerance keep the schedule.
    #[test]
    fn window_bound_and_catch_up() {
        let t0 = Instant::now();
        let mut q = Gcra::new(rate("100/s"), NonZeroU32::new(3));
        let mut accepted = Vec::new();
        // Offer a cell every 0.7 ms for 2 s.
        for i in 0..2857u64 {
            let now = t0 + Duration::from_micros(700 * i);
            if q.conforms(now) {
                q.take(now);
                accepted.push(now);
            }
        }
        for w_ms in [0u64, 5, 10, 25, 100, 1000] {
            let w = Duration::from_millis(w_ms);
            let mut lo = 0;
            for hi in 0..accepted.len() {
                while accepted[hi] - accepted[lo] > w {
                    lo += 1;
                }
                assert!((hi - lo + 1) as u64 <= 3 + w_ms / 10, "W={w_ms}ms");
            }
        }
        // 2 s at 100/s plus the initial burst: 3 + 200 (minus the last partial interval).
        assert!((201..=203).contains(&accepted.len()), "{}", accepted.len());

        // Waking 15 ms late with burst 3 (tolerance 20 ms) loses nothing: two cells conform.
        let mut q = Gcra::new(rate("100/s"), NonZeroU32::new(3));
        q.take(t0);
        let ready = q.ready_at().unwrap();
        assert!(ready <= t0);
        let late = t0 + Duration::from_millis(15);
        let mut n = 0;
        while q.conforms(late) {
            q.take(late);
            n += 1;
        }
        assert_eq!(
            n, 3,
            "the start at 0 plus 15 ms late: 2 caught up + the burst"
        );
    }

    #[test]
    fn fresh_and_full() {
        let now = Instant::now();
        let mut q = Gcra::new(rate("10/s"), None);
        assert!(q.is_full(now) && q.conforms(now));
        q.take(now);
        assert!(!q.conforms(now) && !q.is_full(now));
        assert_eq!(q.ready_at(), Some(now + Duration::from_millis(100)));
        assert!(q.is_full(now + Duration::from_millis(100)));
    }
}
