//! One rate quota, backed by governor: governor's GCRA, plus a peek.
//!
//! Every rate decision is governor's: its `RateLimiter` runs the GCRA test and its `NotUntil`
//! says when a refused cell will conform. The clock is governor's [`MonotonicClock`] (std's
//! monotonic [`Instant`]), not its default quanta TSC clock (see docs/rate-limiting.md). This
//! module adds what the gate needs around it, and knows nothing of hosts or requests:
//!
//! - **Peek.** The gate asks every quota that applies to a request "would you accept a cell
//!   now?" and takes a cell from all of them only when all say yes, so no cell is taken from
//!   one quota and thrown away when another refuses. governor's check tests and takes in one
//!   step, but it keeps its state in a [`StateStore`], a public trait: governor computes the
//!   decision and the new theoretical arrival time (TAT), and hands both to the store, whose
//!   job is to save the TAT. `TatStore` holds one TAT and is keyed by `Op`: for
//!   `Op::Peek` it returns governor's decision and throws the new TAT away, for `Op::Take` it
//!   saves it. One limiter, one state, governor's arithmetic either way.
//! - **The automatic burst** ([`auto_burst`]), so late timer wake-ups do not lower the rate.
//! - **Changing the rate** (`--adaptive`): a governor limiter's quota is fixed, so
//!   [`Quota::reshape`] builds a new limiter for the new rate and moves the TAT across (the
//!   schedule carries over; see there).
//!
//! With interval `T` (= 1/rate) and burst `B`, governor's tolerance is `tau = (B - 1) * T`. A
//! cell conforms at `now` when `now >= TAT - tau`; taking it sets `TAT = max(TAT, now) + T`.
//! Any sequence of accepted cells then has at most `B + W/T` cells in any window of length
//! `W`.

use std::cell::Cell;
use std::num::{NonZeroU32, NonZeroU64};
use std::time::{Duration, Instant};

use governor::RateLimiter;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::StateStore;

use crate::units::Rate;

/// The timer lateness an automatic burst absorbs: starts that fall behind schedule by up to
/// this much (a tokio timer fires ~1-2 ms late; a busy machine adds more) are caught up, so
/// the long-run mean stays at the configured rate. See `auto_burst`.
pub(super) const LATENESS_ALLOWANCE: Duration = Duration::from_millis(20);

/// The longest tolerance `(B - 1) * T` a quota gets (about 146 years): governor keeps times
/// as `u64` nanoseconds, so a huge `--burst` on a slow rate is capped to stay clear of
/// overflow. No run can tell the difference.
const MAX_TOLERANCE_NANOS: u64 = 1 << 62;

/// What governor is asked to do with a cell: the key of [`TatStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    /// Decide, and keep the state as it was.
    Peek,
    /// Decide, and on a yes keep the new TAT (the cell is taken).
    Take,
}

/// governor's state for one quota: the TAT, in nanoseconds since the limiter's start, 0 for
/// "no cell taken yet" (the encoding of governor's own `InMemoryState`). A `Cell`, not an
/// atomic: the gate's mutex serialises every use.
#[derive(Debug, Default)]
struct TatStore(Cell<u64>);

impl StateStore for TatStore {
    type Key = Op;

    fn measure_and_replace<T, F, E>(&self, op: &Op, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let tat = NonZeroU64::new(self.0.get()).map(|n| Nanos::from(n.get()));
        let (decision, next) = f(tat)?;
        if *op == Op::Take {
            self.0.set(next.as_u64());
        }
        Ok(decision)
    }
}

/// A refusal: when a cell will conform, and the quota that said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait {
    /// governor's `NotUntil::earliest_possible()`.
    pub until: Instant,
    pub quota: governor::Quota,
}

impl Wait {
    /// How late a start may be without losing schedule (`tau`).
    pub(super) fn tolerance(&self) -> Duration {
        tolerance(&self.quota)
    }
}

fn tolerance(q: &governor::Quota) -> Duration {
    q.replenish_interval() * (q.burst_size().get() - 1)
}

/// governor's clock for a quota: `C`, except while the gate decides at an instant it has
/// already read (see [`Quota::peek_as_of`]). governor reads its clock inside every check; the
/// gate records a start at the instant it read before deciding, and the two must be the same
/// instant, or two recorded starts could lie closer than GCRA spaces them (a thread
/// descheduled between the two readings moves the decision, not the record).
#[derive(Debug, Clone)]
struct Decided<C> {
    clock: C,
    at: Cell<Option<Instant>>,
}

impl<C: Clock<Instant = Instant>> Clock for Decided<C> {
    type Instant = Instant;

    fn now(&self) -> Instant {
        self.at.get().unwrap_or_else(|| self.clock.now())
    }
}

/// One rate quota: a governor rate limiter with one state, which can be peeked.
///
/// The clock is a type parameter only so the unit tests can drive time by hand; the gate
/// uses `Quota` = `Quota<MonotonicClock>`.
#[derive(Debug)]
pub(super) struct Quota<C: Clock<Instant = Instant> = MonotonicClock> {
    limiter: RateLimiter<Op, TatStore, Decided<C>, StateInformationMiddleware>,
    /// A clock reading taken just after the limiter was built. governor measures its TAT from
    /// the limiter's start, which it reads itself and does not expose; that start is at most
    /// this (one clock read earlier), so `built + TAT` is never earlier than the real TAT.
    built: Instant,
}

impl Quota {
    /// A quota of `rate` with `burst` (`None`: the automatic burst for that rate).
    pub(super) fn new(rate: Rate, burst: Option<NonZeroU32>) -> Quota {
        Quota::with_clock(rate.interval(), burst, None, MonotonicClock)
    }

    /// A quota of one cell per `interval` whose TAT is `tat` (`None`: fresh, a full bucket):
    /// the first cell conforms at `tat - tau`. The adaptive quota starts this way.
    pub(super) fn scheduled(
        interval: Duration,
        burst: Option<NonZeroU32>,
        tat: Option<Instant>,
    ) -> Quota {
        Quota::with_clock(interval, burst, tat, MonotonicClock)
    }
}

impl<C: Clock<Instant = Instant> + Clone> Quota<C> {
    /// [`Quota::scheduled`] on any clock that reads std `Instant`s.
    pub(super) fn with_clock(
        interval: Duration,
        burst: Option<NonZeroU32>,
        tat: Option<Instant>,
        clock: C,
    ) -> Quota<C> {
        let interval = interval.max(Duration::from_nanos(1));
        let burst = burst.unwrap_or_else(|| auto_burst(interval));
        let max_burst =
            1 + MAX_TOLERANCE_NANOS / u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let burst = NonZeroU32::new(
            burst
                .get()
                .min(u32::try_from(max_burst).unwrap_or(u32::MAX)),
        )
        .unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::with_period(interval)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        // The TAT in the new limiter's time: measured from a reading taken before the limiter
        // reads its start, so it errs late (by one clock read), never early. A TAT at or
        // before the start is a full bucket, the same as none.
        let origin = clock.now();
        let since = tat.map_or(Duration::ZERO, |at| at.saturating_duration_since(origin));
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX / 2);
        let clock = Decided {
            clock,
            at: Cell::new(None),
        };
        let limiter = RateLimiter::new(quota, TatStore(Cell::new(nanos)), clock);
        let built = limiter.clock().now();
        Quota { limiter, built }
    }

    /// The quota governor enforces (interval and burst).
    pub(super) fn quota(&self) -> governor::Quota {
        match self.limiter.check_key(&Op::Peek) {
            Ok(snapshot) => snapshot.quota(),
            Err(not_until) => not_until.quota(),
        }
    }

    #[cfg(test)]
    pub(super) fn interval(&self) -> Duration {
        self.quota().replenish_interval()
    }

    pub(super) fn burst(&self) -> NonZeroU32 {
        self.quota().burst_size()
    }

    /// How late a start may be without losing schedule (`tau`).
    pub(super) fn tolerance(&self) -> Duration {
        tolerance(&self.quota())
    }

    /// Would a cell conform now? governor decides; nothing changes.
    pub(super) fn peek(&self) -> Result<(), Wait> {
        self.peek_snapshot().map(drop)
    }

    /// [`Quota::peek`] as decided at `now` (a reading the caller took), not at a fresh one.
    pub(super) fn peek_as_of(&self, now: Instant) -> Result<(), Wait> {
        self.limiter.clock().at.set(Some(now));
        let decision = self.peek();
        self.limiter.clock().at.set(None);
        decision
    }

    /// [`Quota::take`] as decided at `now`: the instant the caller records the start at.
    pub(super) fn take_as_of(&mut self, now: Instant) -> Result<(), Wait> {
        self.limiter.clock().at.set(Some(now));
        let decision = self.take();
        self.limiter.clock().at.set(None);
        decision
    }

    fn peek_snapshot(&self) -> Result<StateSnapshot, Wait> {
        self.limiter.check_key(&Op::Peek).map_err(|n| Wait {
            until: n.earliest_possible(),
            quota: n.quota(),
        })
    }

    /// Take a cell now: governor's check, kept. After a yes from [`Quota::peek`] this cannot
    /// refuse (time only moves forward, and only a take moves the TAT), but if it does, the
    /// caller gets the refusal and nothing is taken.
    pub(super) fn take(&mut self) -> Result<(), Wait> {
        self.limiter
            .check_key(&Op::Take)
            .map(drop)
            .map_err(|n| Wait {
                until: n.earliest_possible(),
                quota: n.quota(),
            })
    }

    /// True when the state is indistinguishable from a fresh quota (the bucket is full), so it
    /// can be dropped without changing any future decision: a cell taken now would leave
    /// `B - 1` in governor's snapshot (which happens exactly when `TAT <= now`).
    pub(super) fn is_full(&self) -> bool {
        self.peek_snapshot().is_ok_and(|s| {
            s.remaining_burst_capacity().saturating_add(1) == s.quota().burst_size().get()
        })
    }

    /// The quota's TAT (`None`: no cell taken yet), for [`Quota::with_clock`] to take up
    /// again later: read the way `reshape` reads it, so it errs late, never early.
    pub(super) fn into_tat(self) -> Option<Instant> {
        let built = self.built;
        let nanos = self.limiter.into_state_store().0.get();
        (nanos > 0).then(|| built + Duration::from_nanos(nanos))
    }

    /// The same schedule at another rate: a new governor limiter for `interval` and `burst`
    /// (`None`: the automatic burst for the new interval), whose TAT is this quota's TAT, or
    /// `defer_to` if that is later. (`defer_to = granted + T'`: after a cut, the next start
    /// comes a full new interval after the refused one, as if a cell had been taken at
    /// `granted` at the new rate.) Keeping the TAT keeps what the old quota remembers of
    /// recent starts; the next cell conforms at `TAT - tau'` under the new tolerance.
    pub(super) fn reshape(
        self,
        interval: Duration,
        burst: Option<NonZeroU32>,
        defer_to: Option<Instant>,
    ) -> Quota<C> {
        let clock = self.limiter.clock().clock.clone();
        let built = self.built;
        // The state store is ours: take the limiter apart to read its TAT. `built` is at or
        // after the old limiter's start, so the TAT read here errs late, never early.
        let nanos = self.limiter.into_state_store().0.get();
        let tat = (nanos > 0).then(|| built + Duration::from_nanos(nanos));
        let tat = match (tat, defer_to) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Quota::with_clock(interval, burst, tat, clock)
    }
}

/// The burst used when `--burst` is not given: `1 + floor(LATENESS_ALLOWANCE / T)`.
///
/// With burst 1 every start must wait a full interval after the previous one, so each late
/// timer wake-up is lost for good and the mean rate undershoots (by ~12% at 1000/s). A burst
/// of `B` lets a start that is up to `(B - 1) * T` late keep its place in the schedule. This
/// choice is 1 (strict spacing) below 50/s, where the gate spins the last ~2 ms instead, and
/// grows with the rate above: 2 at 50/s, 21 at 1000/s, 101 at 5000/s (20 ms worth of starts).
pub(super) fn auto_burst(interval: Duration) -> NonZeroU32 {
    let extra = LATENESS_ALLOWANCE.as_nanos() / interval.as_nanos().max(1);
    NonZeroU32::new(u32::try_from(extra.saturating_add(1)).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    /// A clock the test moves by hand (std `Instant`s, like `MonotonicClock`).
    #[derive(Debug, Clone)]
    struct Manual(Rc<Cell<Instant>>);

    impl Clock for Manual {
        type Instant = Instant;
        fn now(&self) -> Instant {
            self.0.get()
        }
    }

    impl Manual {
        fn at(t: Instant) -> Manual {
            Manual(Rc::new(Cell::new(t)))
        }
        fn set(&self, t: Instant) {
            self.0.set(t);
        }
    }

    fn manual(s: &str, burst: Option<u32>, clock: &Manual) -> Quota<Manual> {
        let burst = burst.and_then(NonZeroU32::new);
        Quota::with_clock(rate(s).interval(), burst, None, clock.clone())
    }

    #[test]
    fn the_automatic_burst_is_1_below_50_per_s_and_20_ms_of_requests_above() {
        let b = |s: &str| Quota::new(rate(s), None).burst().get();
        assert_eq!(b("1/s"), 1);
        assert_eq!(b("10/s"), 1);
        assert_eq!(b("49/s"), 1);
        assert_eq!(b("50/s"), 2);
        assert_eq!(b("1000/s"), 21);
        assert_eq!(b("5000/s"), 101);
        assert_eq!(b("5000/h"), 1);
        // A burst that would overflow governor's nanoseconds is capped, not a panic.
        let huge = Quota::new(rate("0.001/h"), NonZeroU32::new(u32::MAX));
        assert!(huge.tolerance() <= Duration::from_nanos(MAX_TOLERANCE_NANOS));
    }

    /// The defining bound: at most B + W/T accepted cells in any window W, whatever the
    /// arrival pattern, and late arrivals within the tolerance keep the schedule.
    #[test]
    fn window_bound_and_catch_up() {
        let t0 = Instant::now();
        let clock = Manual::at(t0);
        let mut q = manual("100/s", Some(3), &clock);
        let mut accepted = Vec::new();
        // Offer a cell every 0.7 ms for 2 s.
        for i in 0..2857u64 {
            let now = t0 + Duration::from_micros(700 * i);
            clock.set(now);
            if q.peek().is_ok() {
                assert!(q.take().is_ok(), "a take after a yes at the same instant");
                accepted.push(now);
            } else {
                assert!(q.take().is_err(), "take refuses when peek does");
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
        clock.set(t0);
        let mut q = manual("100/s", Some(3), &clock);
        q.take().unwrap();
        assert!(q.peek().is_ok(), "one taken of a burst of 3");
        clock.set(t0 + Duration::from_millis(15));
        let mut n = 0;
        while q.peek().is_ok() {
            q.take().unwrap();
            n += 1;
        }
        assert_eq!(
            n, 3,
            "the start at 0 plus 15 ms late: 2 caught up + the burst"
        );
    }

    /// A decision made at an instant the caller read is made at that instant, whatever the
    /// clock says by then: the recorded starts are exactly the ones GCRA spaced.
    #[test]
    fn decisions_are_made_at_the_callers_instant() {
        let t0 = Instant::now();
        let clock = Manual::at(t0);
        let mut q = manual("10/s", Some(1), &clock);
        clock.set(t0 + Duration::from_millis(7));
        q.take_as_of(t0).unwrap();
        let ms = Duration::from_millis;
        assert_eq!(q.peek_as_of(t0 + ms(99)).unwrap_err().until, t0 + ms(100));
        assert!(q.peek_as_of(t0 + ms(100)).is_ok());
        // Without an instant, the clock decides (7 ms after the start: refused).
        assert!(q.peek().is_err());
        q.take_as_of(t0 + ms(100)).unwrap();
        assert!(q.take_as_of(t0 + ms(199)).is_err());
    }

    #[test]
    fn a_fresh_quota_is_full_and_peeking_takes_nothing() {
        let now = Instant::now();
        let clock = Manual::at(now);
        let mut q = manual("10/s", None, &clock);
        assert!(q.is_full() && q.peek().is_ok());
        // Peeking changes nothing.
        for _ in 0..5 {
            assert!(q.peek().is_ok());
        }
        q.take().unwrap();
        assert!(!q.is_full());
        let wait = q.peek().unwrap_err();
        assert_eq!(wait.until, now + Duration::from_millis(100));
        assert_eq!(wait.quota.replenish_interval(), Duration::from_millis(100));
        clock.set(now + Duration::from_millis(99));
        assert!(!q.is_full() && q.peek().is_err());
        clock.set(now + Duration::from_millis(100));
        assert!(q.is_full() && q.peek().is_ok());

        // With a burst, the bucket is full only once every cell has come back.
        clock.set(now);
        let mut q = manual("100/s", Some(3), &clock);
        q.take().unwrap();
        q.take().unwrap();
        clock.set(now + Duration::from_millis(15));
        assert!(q.peek().is_ok() && !q.is_full());
        clock.set(now + Duration::from_millis(20));
        assert!(q.is_full());
    }

    /// A new rate keeps the schedule: the TAT carries over to the new limiter.
    #[test]
    fn reshape_keeps_the_schedule() {
        let t0 = Instant::now();
        let clock = Manual::at(t0);
        let mut q = manual("10/s", None, &clock);
        q.take().unwrap();
        // Slower (5/s), no deferral: the next cell still conforms at the old TAT, 100 ms.
        let q = q.reshape(Duration::from_millis(200), None, None);
        assert_eq!(q.interval(), Duration::from_millis(200));
        assert_eq!(q.peek().unwrap_err().until, t0 + Duration::from_millis(100));
        // Deferred to a full new interval after the start at t0.
        let mut q = q.reshape(
            Duration::from_millis(200),
            None,
            Some(t0 + Duration::from_millis(200)),
        );
        assert_eq!(q.peek().unwrap_err().until, t0 + Duration::from_millis(200));
        clock.set(t0 + Duration::from_millis(200));
        q.take().unwrap();
        assert_eq!(q.peek().unwrap_err().until, t0 + Duration::from_millis(400));
        // A full bucket stays full; a faster rate with an automatic burst gets its burst.
        clock.set(t0 + Duration::from_secs(1));
        let q = q.reshape(Duration::from_millis(1), None, None);
        assert!(q.is_full());
        assert_eq!(q.burst().get(), 21);
    }

    /// On the real clock, `Wait::until` is a std `Instant` on the gate's own time line, and
    /// carrying a schedule over errs late by at most a few clock reads.
    #[test]
    fn monotonic_clock_instants() {
        let mut q = Quota::new(rate("1/s"), None);
        let before = Instant::now();
        q.take().unwrap();
        let after = Instant::now();
        let until = q.peek().unwrap_err().until;
        let second = Duration::from_secs(1);
        assert!(until >= before + second && until <= after + second);
        let q = q.reshape(second, None, None);
        let moved = q.peek().unwrap_err().until;
        assert!(moved >= until && moved - until < Duration::from_millis(1));
    }
}
