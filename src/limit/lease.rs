//! A shared quota as the gate sees it: cells leased from Redis, held locally for a moment.
//!
//! The gate decides synchronously, under its lock, whether a request may start; a shared
//! quota lives in Redis, behind a round trip. So the gate never asks Redis itself: each shared
//! quota (one per global `--rate`, one per `--per-host-rate` per host, and one per host that
//! only watches for shared pauses) is a [`Lease`] of cells that a Redis task fetched before the
//! gate needs them. Peeking an empty lease asks the task (through a channel, without waiting)
//! for a batch and says "look again soon"; when the batch arrives the task puts it in the
//! lease and wakes the driver.
//!
//! A batch is a **reservation**: Redis's GCRA hands out the next cells even when they conform
//! only later (up to [`LeaseSpec::ahead`]), advances the quota's TAT past them, and says when
//! the first conforms on its clock. Each cell then starts at its own time, without another
//! round trip; so processes that contend for one quota take turns instead of asking again
//! and again for cells another took (about one round trip per batch, whatever the rate), and
//! the next batch is asked for as soon as the last cell is spent, its round trip overlapping
//! the wait for its time.
//!
//! The window bound (docs/rate-limiting.md): Redis grants cells by GCRA with a burst lowered
//! by the cells one lease can span (`span = ceil(rate * LEASE_FOR)`), and a cell not started
//! within the span's time (`span * T`, [`LeaseSpec::hold`]) of its time is dropped (unused
//! cells err on the polite side). A cell is started no sooner than its time (the round trip's
//! reply came after Redis's clock said it) and no later than the hold after it (counted from
//! when the batch was asked for), so its TAT lies within `[start - hold, start + tolerance]`,
//! and the starts of all processes together keep to `burst + rate * W` in any window W (at
//! one cell per batch, 100/s and below, one start more: Redis keeps the whole burst there).
//!
//! While Redis cannot be reached, a lease has no cells: with `--limits-fallback wait` the
//! gate waits (the task retries with backoff), with `local` the lease answers from a local
//! quota at the rate divided by `--limits-share`. This module does not talk to Redis (that is
//! `shared`).

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::host::HostKey;
use super::quota::{Quota, auto_burst};
use crate::units::Rate;

/// How long the cells of one batch span at least: a cell may start this long after its time
/// (the whole span, a cell's interval times the batch's cells, in `LeaseSpec::hold`).
pub(super) const LEASE_FOR: Duration = Duration::from_millis(10);
/// How far ahead Redis reserves a global quota's cells. A process holds one batch at a time,
/// so this only matters when many processes share a slow rate (4 at 1/s reserve 4 s ahead);
/// past it a process is told when to ask again.
const RESERVE_AHEAD: Duration = Duration::from_secs(5);
/// Most cells asked for in one round trip.
const MAX_BATCH: u32 = 100;
/// How long a pause-only lease (no shared rate, only shared pauses) lasts: a pause set by
/// another process is seen within this.
const PAUSE_WATCH_FOR: Duration = Duration::from_millis(250);
/// Cells a pause-only lease hands out per round trip.
const PAUSE_WATCH_BATCH: u32 = 1000;
/// How soon the gate looks again at a lease whose batch is on its way.
const POLL: Duration = Duration::from_millis(1);
/// Backoff after a failed round trip: from this, doubling, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one shared quota is in Redis: fixed for the run.
#[derive(Debug)]
pub(super) struct LeaseSpec {
    /// The Redis key of the quota's GCRA state (its TAT).
    pub key: String,
    /// The Redis key of the host's shared pause, for per-host leases.
    pub pause_key: Option<String>,
    /// The emission interval; zero for a pause-only lease (no rate).
    pub interval: Duration,
    /// GCRA tolerance in Redis, `(burst_redis - 1) * interval`.
    pub tolerance: Duration,
    /// Cells asked for per round trip.
    pub batch: u32,
    /// How long a cell may be held past its time.
    pub hold: Duration,
    /// How far ahead Redis reserves cells: a cell that conforms later is not reserved, and
    /// Redis says when to ask again.
    pub ahead: Duration,
}

impl LeaseSpec {
    /// A shared rate quota: Redis's burst is the local one less the cells a lease can span,
    /// so that holding them cannot push the starts past `burst + rate * W`.
    pub(super) fn rate(
        key: String,
        pause_key: Option<String>,
        rate: Rate,
        burst: Option<std::num::NonZeroU32>,
    ) -> LeaseSpec {
        let interval = rate.interval().max(Duration::from_nanos(1));
        let burst = burst.unwrap_or_else(|| auto_burst(interval)).get();
        let span =
            u32::try_from(LEASE_FOR.as_nanos().div_ceil(interval.as_nanos())).unwrap_or(u32::MAX);
        // One cell per round trip (100/s and below): it is fetched for a waiting request and
        // spent on arrival, so Redis keeps the whole burst to absorb the round trip's lateness
        // (the bound is then burst + rate * (W + round trip), see docs/rate-limiting.md).
        let redis_burst = if span > 1 && burst > span {
            burst - span
        } else {
            burst
        };
        LeaseSpec {
            interval,
            tolerance: interval * (redis_burst - 1),
            batch: span.min(redis_burst).clamp(1, MAX_BATCH),
            // The span's worth of time (at least LEASE_FOR): a start at most `span` cells
            // late, which the lowered burst absorbs; at one cell (100/s and below) a whole
            // interval, so that a round trip or a late wake-up does not lose the cell, at the
            // cost of at most one start more than the bound in a window (the rate's docs).
            hold: interval.saturating_mul(span.max(1)),
            // A cell reserved ahead cannot see a pause another process sets after it was
            // reserved: a per-host quota reserves no further ahead than a pause watch sees.
            ahead: if pause_key.is_some() {
                PAUSE_WATCH_FOR
            } else {
                RESERVE_AHEAD
            },
            key,
            pause_key,
        }
    }

    /// A lease that only watches the host's shared pause: no rate, large batches.
    pub(super) fn pause_watch(pause_key: String) -> LeaseSpec {
        LeaseSpec {
            key: String::new(),
            pause_key: Some(pause_key),
            interval: Duration::ZERO,
            tolerance: Duration::ZERO,
            batch: PAUSE_WATCH_BATCH,
            hold: PAUSE_WATCH_FOR,
            ahead: Duration::ZERO,
        }
    }

    /// The emission interval in whole µs, as Redis counts it.
    pub(super) fn interval_micros(&self) -> u64 {
        u64::try_from(self.interval.as_micros()).unwrap_or(u64::MAX)
    }
}

/// Which lease a batch is for: a global quota, or a quota of a host (by index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LeaseId {
    Global(usize),
    Host(HostKey, usize),
}

/// Work for the Redis task.
#[derive(Debug)]
pub(super) enum Request {
    /// Fetch a batch of cells for a lease.
    Cells {
        id: LeaseId,
        spec: Arc<LeaseSpec>,
        sent: Instant,
    },
    /// Pause a host for every process (a `Retry-After`).
    Pause { key: String, until: Instant },
}

/// What came back for a batch.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reply {
    /// `cells` (at least 1) reserved: the first conforms `first` µs after Redis ran the
    /// script (negative: it conformed already, within the burst), each next one an interval
    /// later.
    Granted { cells: u32, first: i64 },
    /// No cell: a pause holds, or the next cell lies beyond [`LeaseSpec::ahead`]; Redis would
    /// reserve one `wait` from now (Redis's clock).
    Denied { wait: Duration },
    /// Redis could not be reached or refused the script.
    Failed,
}

/// Cells reserved in Redis by one round trip. Cell k conforms `first + k * interval` µs after
/// Redis ran the script, which it did somewhere between `sent` and `received` (this
/// process's clock). So the cell may start from `received` plus that offset (never before it
/// conforms) until `sent` plus the offset plus the lease's hold (never more than the hold
/// after it conforms, which keeps the window bound; see the module's comment). A batch's cells
/// start each at its own time, not all at once.
#[derive(Debug, Clone, Copy)]
struct Batch {
    cells: u32,
    first: i64,
    sent: Instant,
    received: Instant,
}

impl Batch {
    fn empty(now: Instant) -> Batch {
        Batch {
            cells: 0,
            first: 0,
            sent: now,
            received: now,
        }
    }

    /// When cell `k` may start, and until when.
    fn window(&self, k: u32, spec: &LeaseSpec) -> (Instant, Instant) {
        let interval = i64::try_from(spec.interval_micros()).unwrap_or(i64::MAX);
        let offset = self
            .first
            .saturating_add(interval.saturating_mul(i64::from(k)));
        let offset = Duration::from_micros(u64::try_from(offset).unwrap_or(0));
        let from = self.received + offset;
        // A round trip slower than the hold still leaves a moment to spend the cell.
        let until = (self.sent + offset + spec.hold).max(from + POLL);
        (from, until)
    }
}

/// Leased cells of one shared quota.
#[derive(Debug)]
pub(super) struct Lease {
    spec: Arc<LeaseSpec>,
    id: LeaseId,
    requests: UnboundedSender<Request>,
    /// The cells in hand (maybe none).
    batch: Batch,
    /// The batch's next cell not spent yet (a `Cell`: a peek under the gate's lock skips the
    /// cells whose time is over).
    next: Cell<u32>,
    /// A batch is on its way (a `Cell`: a peek under the gate's lock sets it).
    fetching: Cell<bool>,
    /// Redis said wait until then (a pause, or no cell free), or a backoff after a failure.
    retry_at: Option<Instant>,
    failures: u32,
    /// With `--limits-fallback local`: the local quota used while Redis is away.
    fallback: Option<Quota>,
}

impl Lease {
    pub(super) fn new(
        spec: Arc<LeaseSpec>,
        id: LeaseId,
        requests: UnboundedSender<Request>,
        fallback: Option<Quota>,
        now: Instant,
    ) -> Lease {
        Lease {
            spec,
            id,
            requests,
            batch: Batch::empty(now),
            next: Cell::new(0),
            fetching: Cell::new(false),
            retry_at: None,
            failures: 0,
            fallback,
        }
    }

    fn down(&self) -> bool {
        self.failures > 0
    }

    /// A pause-only lease while Redis is away: pauses set by other processes cannot be seen
    /// (this process's own still hold), and nothing else is held up for it.
    fn watch_unavailable(&self) -> bool {
        self.spec.interval.is_zero() && self.down()
    }

    /// The batch's first cell whose time is not over at `now`: its index and when it may
    /// start (cells whose time passed unspent are dropped on the way).
    fn live(&self, now: Instant) -> Option<(u32, Instant)> {
        let mut k = self.next.get();
        if self.spec.interval.is_zero() && k < self.batch.cells {
            // A pause watch's cells share one window.
            let (from, until) = self.batch.window(k, &self.spec);
            if until > now {
                return Some((k, from));
            }
            k = self.batch.cells;
        }
        while k < self.batch.cells {
            let (from, until) = self.batch.window(k, &self.spec);
            if until > now {
                self.next.set(k);
                return Some((k, from));
            }
            k += 1;
        }
        self.next.set(k);
        None
    }

    /// Would a cell be granted now? `Err(when)`: look again then (a batch is asked for when
    /// none is in hand or on its way).
    pub(super) fn peek(&self, now: Instant) -> Result<(), Instant> {
        if self.watch_unavailable() {
            return Ok(());
        }
        if let Some((_, from)) = self.live(now) {
            self.prefetch(now);
            // A reserved cell: the request starts at its time, without another round trip.
            return if from <= now { Ok(()) } else { Err(from) };
        }
        let fallback = self.fallback.as_ref().filter(|_| self.down());
        let next = self.ask(now);
        match fallback {
            Some(q) => q.peek().map_err(|w| w.until.min(next)),
            None => Err(next),
        }
    }

    /// A pause watch that runs out soon (or did) asks for its next batch now, so that a
    /// request whose other quotas reserved a cell does not wait a round trip for it (and miss
    /// its cell's time). Other leases ask when a request needs a cell.
    pub(super) fn prefetch(&self, now: Instant) {
        if self.spec.interval.is_zero()
            && self.batch.window(0, &self.spec).1 <= now + self.spec.hold / 5
        {
            let _ = self.ask(now);
        }
    }

    /// Ask for a batch unless one is on its way or Redis said to wait; when to look again.
    fn ask(&self, now: Instant) -> Instant {
        if self.fetching.get() {
            return now + POLL;
        }
        if let Some(at) = self.retry_at.filter(|at| *at > now) {
            return at;
        }
        let sent = self.requests.send(Request::Cells {
            id: self.id.clone(),
            spec: Arc::clone(&self.spec),
            sent: now,
        });
        // The task ends only with the gate; a lease that cannot ask waits for its backoff.
        if sent.is_ok() {
            self.fetching.set(true);
            now + POLL
        } else {
            now + MAX_BACKOFF
        }
    }

    /// Spend a cell (after a yes from [`Lease::peek`]).
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if self.watch_unavailable() {
            // Asking again now and then tells when Redis is back.
            let _ = self.ask(now);
            return Ok(());
        }
        if let Some((k, from)) = self.live(now)
            && from <= now
        {
            self.next.set(k + 1);
            return Ok(());
        }
        match self.fallback.as_mut().filter(|_| self.failures > 0) {
            Some(q) => q.take().map_err(|w| w.until),
            None => Err(now + POLL),
        }
    }

    /// Nothing held, nothing on its way, no wait pending: dropping it (with its idle host)
    /// loses nothing. Held cells keep the host, so a host fetched at a few requests a second
    /// costs a round trip per batch, not per request.
    pub(super) fn is_full(&self) -> bool {
        let now = Instant::now();
        !self.fetching.get() && self.live(now).is_none() && self.retry_at.is_none_or(|at| at <= now)
    }

    /// A batch came back for the request sent at `sent`. Returns whether Redis is back after
    /// failures (for the one log line).
    pub(super) fn reply(&mut self, reply: Reply, sent: Instant, now: Instant) -> bool {
        self.fetching.set(false);
        match reply {
            Reply::Granted { cells, first } => {
                let back = self.down();
                self.failures = 0;
                self.batch = Batch {
                    cells,
                    first,
                    sent,
                    received: now,
                };
                self.next.set(0);
                self.retry_at = None;
                back
            }
            Reply::Denied { wait } => {
                let back = self.down();
                self.failures = 0;
                self.retry_at = Some(now + wait.max(POLL / 2));
                back
            }
            Reply::Failed => {
                self.failures = self.failures.saturating_add(1);
                let backoff = MIN_BACKOFF
                    .saturating_mul(1 << self.failures.min(8).saturating_sub(1))
                    .min(MAX_BACKOFF);
                self.batch.cells = 0;
                self.retry_at = Some(now + backoff);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rate: &str) -> LeaseSpec {
        LeaseSpec::rate("k".into(), None, rate.parse().unwrap(), None)
    }

    /// Redis's burst leaves room for the cells a lease can hold: at 400/s (auto burst 9,
    /// a 10 ms lease spans 4 cells) Redis grants bursts of 5, in batches of 4; at 5000/s,
    /// 51 in batches of 50; below 100/s one cell at a time.
    #[test]
    fn batches_and_redis_burst_keep_the_window_bound() {
        let s = spec("400/s");
        assert_eq!((s.batch, s.tolerance), (4, Duration::from_micros(2500) * 4));
        let s = spec("5000/s");
        assert_eq!(
            (s.batch, s.tolerance),
            (50, Duration::from_micros(200) * 50)
        );
        let s = spec("20/s");
        assert_eq!((s.batch, s.tolerance), (1, Duration::ZERO));
    }

    #[test]
    fn an_empty_lease_asks_once_and_spends_what_arrives() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let now = Instant::now();
        let mut lease = Lease::new(Arc::new(spec("400/s")), LeaseId::Global(0), tx, None, now);
        assert!(lease.peek(now).is_err());
        assert!(lease.peek(now).is_err());
        assert!(matches!(rx.try_recv(), Ok(Request::Cells { .. })));
        assert!(rx.try_recv().is_err(), "one request on its way at a time");
        // Two cells that conformed already (within the burst): both start now.
        lease.reply(
            Reply::Granted {
                cells: 2,
                first: -2500,
            },
            now,
            now,
        );
        for _ in 0..2 {
            lease.peek(now).unwrap();
            lease.take(now).unwrap();
        }
        assert!(lease.peek(now).is_err());
        // Cells not spent within the hold of their times (0, 2.5 and 5 ms) are gone.
        lease.reply(Reply::Granted { cells: 3, first: 0 }, now, now);
        assert!(
            lease
                .peek(now + LEASE_FOR + Duration::from_millis(5))
                .is_err()
        );
    }

    /// A batch reserved ahead starts each cell at its own time (from when the reply came),
    /// and drops a cell not started within the hold of its time (counted from when it was
    /// asked for); a denial waits as long as Redis said.
    #[test]
    fn reserved_cells_start_each_at_its_own_time() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sent = Instant::now();
        let now = sent + Duration::from_micros(500);
        let ms = |m: f64| Duration::from_secs_f64(m / 1000.0);
        let mut lease = Lease::new(Arc::new(spec("400/s")), LeaseId::Global(0), tx, None, sent);
        assert!(lease.peek(sent).is_err());
        lease.reply(
            Reply::Granted {
                cells: 3,
                first: 2000,
            },
            sent,
            now,
        );
        assert_eq!(lease.peek(now), Err(now + ms(2.0)));
        lease.take(now).unwrap_err();
        lease.take(now + ms(2.0)).unwrap();
        assert_eq!(lease.peek(now + ms(2.0)), Err(now + ms(4.5)));
        // Cell 1 was due at 4.5 ms; past sent + 4.5 + 10 ms it is gone, cell 2 (7 ms) is next.
        let late = sent + ms(4.5) + LEASE_FOR;
        lease.take(late).unwrap();
        assert_eq!(lease.next.get(), 3, "cell 1 dropped, cell 2 spent");
        let _ = rx.try_recv();
        assert!(lease.peek(late).is_err());
        assert!(
            matches!(rx.try_recv(), Ok(Request::Cells { .. })),
            "then asks again"
        );
        lease.reply(Reply::Denied { wait: ms(30.0) }, late, late);
        assert_eq!(lease.peek(late), Err(late + ms(30.0)));
    }

    #[test]
    fn while_redis_is_away_wait_backs_off_and_local_uses_the_fallback() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let now = Instant::now();
        let mut wait = Lease::new(
            Arc::new(spec("20/s")),
            LeaseId::Global(0),
            tx.clone(),
            None,
            now,
        );
        let _ = wait.peek(now);
        wait.reply(Reply::Failed, now, now);
        assert_eq!(wait.peek(now), Err(now + MIN_BACKOFF));
        let fallback = Quota::new("10/s".parse().unwrap(), None);
        let mut local = Lease::new(
            Arc::new(spec("20/s")),
            LeaseId::Global(0),
            tx,
            Some(fallback),
            now,
        );
        let _ = local.peek(now);
        assert!(!local.reply(Reply::Failed, now, now));
        local.peek(now).unwrap();
        local.take(now).unwrap();
        assert!(
            local.peek(now).is_err(),
            "the local quota of 10/s has a burst of 1"
        );
        assert!(local.reply(Reply::Granted { cells: 1, first: 0 }, now, now));
    }
}
