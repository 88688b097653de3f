//! The gate's state: the hosts, their queues and counters, the quotas, and the one step that
//! decides who starts now ([`State::step`]). Everything here runs under the gate's lock, and
//! nothing here waits or spawns: the driver (`driver`) sleeps and wakes, the gate API (`mod.rs`)
//! takes the lock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

use super::host::HostKey;
use super::lease::{Lease, LeaseId, LeaseSpec, Request};
use super::pacing::Pace;
use super::pushback::Aimd;
use super::quota::Quota;
use super::timer::COARSE_LATENESS;
use super::{Limits, Slot};
use crate::units::Rate;

/// How many of the next ready hosts renew their shared pause watches ahead (`--limits`).
const PREFETCH_HOSTS: usize = 8;
/// How often idle hosts are swept out of the host map.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long an idle host whose adaptive rate is still cut is remembered (so a host that
/// answered 429 does not get its full rate back just by being quiet for a second).
const ADAPTIVE_MEMORY: Duration = Duration::from_secs(600);
/// When a waiting host may start, and whether that wait must be precise: `Some(interval)` when
/// the quota that decides it cannot absorb a late wake-up (see `timer`).
pub(super) type Wake = (Instant, Option<Duration>);

pub(super) struct State {
    pub(super) limits: Limits,
    pub(super) global: Vec<Limiter>,
    pub(super) in_flight: usize,
    /// Boxed so the table itself stays small when it grows and shrinks with host churn.
    pub(super) hosts: HashMap<HostKey, Box<Host>>,
    /// Hosts that are idle but whose one per-host quota is not full yet, kept as the hash of
    /// their key and that quota's TAT (24 bytes, not the ~400 of a host with its key): what a
    /// per-host rate must remember about a host it saw start recently, and nothing more. A
    /// hash collision (two hosts in 2^64) would make the second host wait as if it were the
    /// first, which errs on the polite side. Swept once a second, like `hosts`.
    pub(super) recent: Recent,
    /// Hosts with waiters that may be able to start now, in round-robin order.
    pub(super) ready: VecDeque<HostKey>,
    /// Hosts with waiters that must wait for their own quota or pause: (when, strict
    /// interval, host).
    pub(super) timed: BinaryHeap<Reverse<(Instant, Option<Duration>, HostKey)>>,
    pub(super) last_sweep: Instant,
    pub(super) closed: bool,
    /// With `--limits`: how per-host quotas and pauses are shared.
    pub(super) sharing: Option<Sharing>,
}

/// How a host's quotas are built with `--limits` (see `lease`).
pub(super) struct Sharing {
    /// The Redis task's queue.
    pub(super) requests: UnboundedSender<Request>,
    /// `--limits-key`: the budget's name, in every Redis key of it.
    pub(super) name: String,
    /// `--limits-fallback local`: rates are divided by this while Redis is away.
    pub(super) local_share: Option<NonZeroU32>,
}

impl Sharing {
    /// The Redis key of `host`'s shared pause. The `{...}` hash tag keeps a host's keys in one
    /// Redis Cluster slot (one script touches them together), and spreads hosts over slots.
    pub(super) fn pause_key(&self, host: &HostKey) -> String {
        format!("fetchall:{{{}|{host}}}:pause", self.name)
    }

    /// The Redis key of `host`'s shared quota of `rate`.
    fn host_rate_key(&self, host: &HostKey, rate: Rate) -> String {
        format!("fetchall:{{{}|{host}}}:rate:{rate}", self.name)
    }

    /// The Redis key of the global shared quota of `rate`.
    pub(super) fn global_rate_key(&self, rate: Rate) -> String {
        format!("fetchall:{{{}}}:rate:{rate}", self.name)
    }

    /// A quota shared through Redis, with its local fallback.
    pub(super) fn limiter(
        &self,
        spec: LeaseSpec,
        id: LeaseId,
        rate: Option<Rate>,
        burst: Option<NonZeroU32>,
        now: Instant,
    ) -> Limiter {
        let fallback = match (self.local_share, rate) {
            (Some(share), Some(rate)) => Some(Quota::scheduled(
                rate.interval().saturating_mul(share.get()),
                burst,
                None,
            )),
            _ => None,
        };
        Limiter::Shared(Lease::new(
            Arc::new(spec),
            id,
            self.requests.clone(),
            fallback,
            now,
        ))
    }
}

/// A rate quota of the gate: this process's own (governor), or shared through Redis.
pub(super) enum Limiter {
    Local(Quota),
    Shared(Lease),
}

/// A quota the gate can peek and take from: a [`Limiter`], the adaptive quota or the
/// quota-header pace.
pub(super) trait Cells {
    /// `Err((when, strict))`: not before `when`, and whether that wait must be precise (see
    /// [`Wake`]).
    fn peek_at(&self, now: Instant) -> Result<(), Wake>;
    fn take_at(&mut self, now: Instant) -> Result<(), Instant>;
}

impl Cells for Quota {
    fn peek_at(&self, now: Instant) -> Result<(), Wake> {
        self.peek_as_of(now).map_err(|w| {
            let strict = (w.tolerance() < COARSE_LATENESS).then(|| w.quota.replenish_interval());
            (w.until, strict)
        })
    }

    fn take_at(&mut self, now: Instant) -> Result<(), Instant> {
        self.take_as_of(now).map_err(|w| w.until)
    }
}

impl Cells for Limiter {
    fn peek_at(&self, now: Instant) -> Result<(), Wake> {
        match self {
            Limiter::Local(q) => q.peek_at(now),
            // Leased cells are granted as they arrive; a lease's wait is never strict.
            Limiter::Shared(l) => l.peek(now).map_err(|at| (at, None)),
        }
    }

    fn take_at(&mut self, now: Instant) -> Result<(), Instant> {
        match self {
            Limiter::Local(q) => q.take_at(now),
            Limiter::Shared(l) => l.take(now),
        }
    }
}

impl Limiter {
    pub(super) fn is_full(&self) -> bool {
        match self {
            Limiter::Local(q) => q.is_full(),
            Limiter::Shared(l) => l.is_full(),
        }
    }
}

/// See [`State::recent`].
#[derive(Default)]
pub(super) struct Recent {
    tats: HashMap<u64, Instant>,
    hasher: std::hash::RandomState,
}

impl Recent {
    fn hash(&self, key: &HostKey) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    /// Keep only what a quota still needs (a TAT in the future: the bucket is not full).
    fn sweep(&mut self, now: Instant) {
        self.tats.retain(|_, tat| *tat > now);
        if self.tats.capacity() > 4 * self.tats.len() + 64 {
            self.tats.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tats.len()
    }
}

pub(super) struct Host {
    pub(super) quotas: Vec<Limiter>,
    /// Most requests in flight to this host (`--per-host-concurrency`, or its profile's).
    pub(super) cap: Option<NonZeroUsize>,
    /// `--adaptive`: the AIMD state and, while the rate is limited, its quota.
    pub(super) aimd: Option<Aimd>,
    pub(super) adaptive_quota: Option<Quota>,
    /// Quota headers: the pace the host's latest budget allows (see `pacing`).
    pub(super) pace: Pace,
    pub(super) in_flight: usize,
    pub(super) paused_until: Option<Instant>,
    pub(super) waiters: VecDeque<oneshot::Sender<Slot>>,
    /// In `ready` or `timed` (exactly one of them).
    pub(super) queued: bool,
    pub(super) last_active: Instant,
}

impl Host {
    /// Nothing queued or in flight, no pause, quotas full: the state of a fresh host, apart
    /// from an adaptive rate.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        self.waiters.is_empty()
            && self.in_flight == 0
            && !self.queued
            && self.paused_until.is_none_or(|p| p <= now)
            && self.quotas.iter().all(Limiter::is_full)
            && self
                .adaptive_quota
                .iter()
                .chain(&self.pace.quota)
                .all(Quota::is_full)
            && self.pace.is_idle(now)
    }

    /// A request to the host started at `now` (and is counted in flight): it spends one of
    /// the budget its quota headers announced; the last one holds the host until the reset
    /// (see `pacing`).
    fn spend_budget(&mut self, now: Instant, max_pause: Duration) {
        if let Some(until) = self.pace.started(now, self.in_flight, max_pause)
            && self.paused_until.is_none_or(|p| p < until)
        {
            self.paused_until = Some(until);
        }
    }
}

impl Host {
    /// Idle apart from one per-host quota that is not full yet (no pause, no adaptive state,
    /// no second quota): all it has to remember is that quota's TAT.
    fn only_a_quota_to_remember(&self, now: Instant) -> bool {
        self.waiters.is_empty()
            && self.in_flight == 0
            && !self.queued
            && self.paused_until.is_none_or(|p| p <= now)
            && self.aimd.is_none()
            && self.adaptive_quota.is_none()
            // A shared quota's leased cells stay with the host (see `lease`).
            && matches!(self.quotas.as_slice(), [Limiter::Local(_)])
    }
}

pub(super) struct Grant {
    pub(super) tx: oneshot::Sender<Slot>,
    pub(super) host: HostKey,
    pub(super) granted_at: Instant,
    /// No other waiter of the host is left behind it.
    pub(super) alone: bool,
}

impl State {
    pub(super) fn host_mut(&mut self, key: &HostKey, now: Instant) -> &mut Host {
        host_entry(
            &mut self.hosts,
            &mut self.recent,
            &self.limits,
            self.sharing.as_ref(),
            key,
            now,
        )
    }

    /// A request to `key` ended. True when that may let a waiter start (the driver must look
    /// again): the global cap held back the ready hosts, or the host's own cap held back its
    /// queue. Otherwise nothing the driver waits for changed, and waking it would only cost
    /// a cross-thread wake-up per request.
    pub(super) fn release(&mut self, key: &HostKey) -> bool {
        let was_full = self.in_flight >= self.limits.concurrency.get();
        self.in_flight = self.in_flight.saturating_sub(1);
        let unblocks = was_full && !self.ready.is_empty();
        let now = Instant::now();
        let Some(h) = self.hosts.get_mut(key) else {
            return unblocks;
        };
        h.in_flight = h.in_flight.saturating_sub(1);
        h.last_active = now;
        if !h.waiters.is_empty() && !h.queued {
            h.queued = true;
            self.ready.push_back(key.clone());
            return true;
        } else if h.is_idle(now) && !h.aimd.as_ref().is_some_and(Aimd::is_cut) {
            // Forget it at once when nothing would be lost (no per-host quota, or full
            // again): most hosts of a long list of distinct hosts leave here, not in a sweep.
            self.hosts.remove(key);
        } else if h.only_a_quota_to_remember(now) {
            // A host with a per-host rate that just started: keep only its quota's TAT.
            if let Some(h) = self.hosts.remove(key) {
                let hash = self.recent.hash(key);
                let tat = match h.quotas.into_iter().next() {
                    Some(Limiter::Local(q)) => q.into_tat(),
                    _ => None,
                };
                if let Some(tat) = tat {
                    self.recent.tats.insert(hash, tat);
                }
            }
        }
        unblocks
    }

    /// Start a request to `key` right now if nothing else is waiting and every limit allows
    /// it (the common case without contention, which then skips a round trip through the
    /// driver). Returns the instant it started, if it did.
    pub(super) fn start_at_once(&mut self, key: &HostKey, now: Instant) -> Option<Instant> {
        if !self.ready.is_empty()
            || self.in_flight >= self.limits.concurrency.get()
            || not_ready(cells(&self.global, []), now).is_some()
        {
            return None;
        }
        // Not `host_mut`: the global quotas are taken below while `h` is held.
        let h = host_entry(
            &mut self.hosts,
            &mut self.recent,
            &self.limits,
            self.sharing.as_ref(),
            key,
            now,
        );
        let free = !h.queued
            && h.waiters.is_empty()
            && h.paused_until.is_none_or(|p| p <= now)
            && h.cap.is_none_or(|c| h.in_flight < c.get())
            && not_ready(
                cells(
                    &h.quotas,
                    [h.adaptive_quota.as_ref(), h.pace.quota.as_ref()],
                ),
                now,
            )
            .is_none();
        if !free {
            return None;
        }
        let quotas = cells_mut(
            &mut self.global,
            &mut h.quotas,
            [h.adaptive_quota.as_mut(), h.pace.quota.as_mut()],
        );
        if take_all(quotas, now).is_err() {
            // Then it waits in the queue like any other request.
            return None;
        }
        // The start is the instant the cells were taken at, not a later reading of the
        // clock: GCRA spaces those instants exactly, whatever delays the thread after.
        let granted_at = now;
        h.in_flight += 1;
        h.last_active = granted_at;
        h.spend_budget(granted_at, self.limits.max_pause);
        self.in_flight += 1;
        Some(granted_at)
    }

    /// Start everything that may start at `now`; return when to look again (and whether that
    /// wait must be precise), or `None` to wait for a waiter or a slot.
    pub(super) fn step(&mut self, now: Instant, grants: &mut Vec<Grant>) -> Option<Wake> {
        while let Some(Reverse((at, _, _))) = self.timed.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, _, key))) = self.timed.pop() {
                self.ready.push_back(key);
            }
        }
        let mut global_wait = None;
        while !self.ready.is_empty() {
            if self.in_flight >= self.limits.concurrency.get() {
                break;
            }
            if let Some(wait) = not_ready(cells(&self.global, []), now) {
                self.prefetch_pause_watches(now);
                global_wait = Some(wait);
                break;
            }
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            self.visit(key, now, grants);
        }
        let timed = self.timed.peek().map(|Reverse((at, p, _))| (*at, *p));
        // Idle hosts are swept even when nothing else would wake the driver.
        let remembering = !self.hosts.is_empty() || !self.recent.tats.is_empty();
        let sweep = remembering.then(|| (self.last_sweep + SWEEP_EVERY, None));
        [global_wait, timed, sweep]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// While the global quotas hold everyone back, the next hosts' shared pause watches are
    /// renewed, so their round trips overlap the wait instead of following it.
    fn prefetch_pause_watches(&self, now: Instant) {
        for key in self.ready.iter().take(PREFETCH_HOSTS) {
            for q in self.hosts.get(key).iter().flat_map(|h| &h.quotas) {
                if let Limiter::Shared(lease) = q {
                    lease.prefetch(now);
                }
            }
        }
    }

    /// Start the head of `key`'s queue if its own limits allow it now (the global ones were
    /// checked by the caller); otherwise put the host where it waits: the timer heap for a
    /// pause or a quota, nowhere for its cap (`release` puts it back).
    fn visit(&mut self, key: HostKey, now: Instant, grants: &mut Vec<Grant>) {
        let Some(h) = self.hosts.get_mut(&key) else {
            return;
        };
        h.queued = false;
        // Waiters that gave up (their task ended) are skipped without taking a cell.
        while h.waiters.front().is_some_and(oneshot::Sender::is_closed) {
            h.waiters.pop_front();
        }
        if h.waiters.is_empty() {
            return;
        }
        if let Some(until) = h.paused_until {
            if until > now {
                h.queued = true;
                self.timed.push(Reverse((until, None, key)));
                return;
            }
            h.paused_until = None;
        }
        if h.cap.is_some_and(|cap| h.in_flight >= cap.get()) {
            // `release` puts the host back in `ready` when one of its requests ends.
            return;
        }
        if let Some((at, precise)) = not_ready(
            cells(
                &h.quotas,
                [h.adaptive_quota.as_ref(), h.pace.quota.as_ref()],
            ),
            now,
        ) {
            h.queued = true;
            self.timed.push(Reverse((at, precise, key)));
            return;
        }
        // Everything accepts: take every cell, at once.
        let quotas = cells_mut(
            &mut self.global,
            &mut h.quotas,
            [h.adaptive_quota.as_mut(), h.pace.quota.as_mut()],
        );
        if let Err(at) = take_all(quotas, now) {
            h.queued = true;
            self.timed.push(Reverse((at, None, key)));
            return;
        }
        // As in `start_at_once`: the instant the cells were taken at.
        let granted_at = now;
        self.in_flight += 1;
        h.in_flight += 1;
        h.last_active = granted_at;
        h.spend_budget(granted_at, self.limits.max_pause);
        if let Some(tx) = h.waiters.pop_front() {
            grants.push(Grant {
                tx,
                host: key.clone(),
                granted_at,
                alone: h.waiters.is_empty(),
            });
        }
        if !h.waiters.is_empty() {
            h.queued = true;
            self.ready.push_back(key);
        }
    }

    /// Drop hosts whose state says nothing a fresh host's would not.
    pub(super) fn sweep(&mut self, now: Instant) {
        let before = self.hosts.len();
        self.hosts.retain(|key, h| {
            if !h.is_idle(now) {
                return true;
            }
            if let Some(aimd) = &h.aimd
                && aimd.is_cut()
            {
                if now.duration_since(h.last_active) < ADAPTIVE_MEMORY {
                    return true;
                }
                tracing::info!(
                    "{key}: idle, forgetting its adaptive rate {:.2}/s",
                    aimd.rate().unwrap_or_default()
                );
            }
            false
        });
        tracing::debug!(
            "host sweep: {} kept, {} forgotten, {} queued",
            self.hosts.len(),
            before - self.hosts.len(),
            self.ready.len() + self.timed.len()
        );
        if self.hosts.len() < before && self.hosts.capacity() > 4 * self.hosts.len() + 64 {
            self.hosts.shrink_to_fit();
        }
        self.recent.sweep(now);
        self.last_sweep = now;
    }
}

/// `key`'s state, made fresh if the host is new (or was forgotten), with the TAT of its
/// per-host quota if it was kept in `recent`. With `--limits`, its quotas are leases of shared
/// quotas (or, with no per-host rate, a lease that only watches for a pause another process
/// set); such a host is never kept in `recent` (its leased cells stay with it).
pub(super) fn host_entry<'a>(
    hosts: &'a mut HashMap<HostKey, Box<Host>>,
    recent: &mut Recent,
    limits: &Limits,
    sharing: Option<&Sharing>,
    key: &HostKey,
    now: Instant,
) -> &'a mut Host {
    hosts.entry(key.clone()).or_insert_with(|| {
        let tat = if recent.tats.is_empty() {
            None
        } else {
            recent.tats.remove(&recent.hash(key))
        };
        let (cap, rates) = limits.for_host(key);
        let quotas = match sharing {
            None => rates
                .iter()
                .map(|r| {
                    Limiter::Local(match tat {
                        Some(tat) => Quota::scheduled(r.interval(), limits.burst, Some(tat)),
                        None => Quota::new(*r, limits.burst),
                    })
                })
                .collect(),
            Some(sharing) if rates.is_empty() => {
                let spec = LeaseSpec::pause_watch(sharing.pause_key(key));
                let id = LeaseId::Host(key.clone(), 0);
                vec![sharing.limiter(spec, id, None, limits.burst, now)]
            }
            Some(sharing) => rates
                .iter()
                .enumerate()
                .map(|(i, rate)| {
                    let redis_key = sharing.host_rate_key(key, *rate);
                    let pause = Some(sharing.pause_key(key));
                    let spec = LeaseSpec::rate(redis_key, pause, *rate, limits.burst);
                    let id = LeaseId::Host(key.clone(), i);
                    sharing.limiter(spec, id, Some(*rate), limits.burst, now)
                })
                .collect(),
        };
        let ceiling = limits.adaptive_ceiling(rates);
        Box::new(Host {
            quotas,
            cap,
            aimd: limits.adaptive.then(|| Aimd::new(ceiling)),
            adaptive_quota: None,
            pace: Pace::default(),
            in_flight: 0,
            paused_until: None,
            waiters: VecDeque::new(),
            queued: false,
            last_active: now,
        })
    })
}

/// The quotas of `limiters` and the host's own (adaptive, quota-header pace), as [`Cells`].
fn cells<'a>(
    limiters: &'a [Limiter],
    own: impl IntoIterator<Item = Option<&'a Quota>>,
) -> impl Iterator<Item = &'a dyn Cells> {
    let limiters = limiters.iter().map(|l| l as &dyn Cells);
    limiters.chain(own.into_iter().flatten().map(|q| q as &dyn Cells))
}

/// The global quotas, the host's and its own (adaptive, pace), to take a cell from each.
fn cells_mut<'a>(
    global: &'a mut [Limiter],
    host: &'a mut [Limiter],
    own: impl IntoIterator<Item = Option<&'a mut Quota>>,
) -> impl Iterator<Item = &'a mut dyn Cells> {
    let limiters = global.iter_mut().chain(host).map(|l| l as &mut dyn Cells);
    limiters.chain(own.into_iter().flatten().map(|q| q as &mut dyn Cells))
}

/// When every quota in `quotas` accepts now (each is peeked): `None`; otherwise the first
/// instant they all would (the latest of their ready times), and whether waiting for it must
/// be precise: the interval of the quota that decides it, when that quota's tolerance is
/// smaller than tokio's timer lateness (burst 1, or any burst at a slow enough rate).
fn not_ready<'a>(quotas: impl Iterator<Item = &'a dyn Cells>, now: Instant) -> Option<Wake> {
    let mut wait: Option<Wake> = None;
    for q in quotas {
        let Err((until, precise)) = q.peek_at(now) else {
            continue;
        };
        if wait.is_none_or(|(at, _)| until > at) {
            wait = Some((until, precise));
        }
    }
    wait
}

/// Take a cell from each of `quotas`, all of which just said yes to a peek. A take cannot
/// refuse after a yes (time only moves forward, and nothing else took a cell in between: the
/// gate's lock is held), but if one does, the rest are not taken and the caller gets when to
/// look again; the cells already taken are lost, which errs on the polite side.
fn take_all<'a>(
    quotas: impl Iterator<Item = &'a mut dyn Cells>,
    now: Instant,
) -> Result<(), Instant> {
    for q in quotas {
        if let Err(until) = q.take_at(now) {
            tracing::warn!("a rate quota refused a cell it had just accepted");
            return Err(until);
        }
    }
    Ok(())
}
