//! Limits: the gate every request start passes. It owns the in-flight caps (global and per
//! host), the rate quotas (global and per host, stacked; each a governor GCRA limiter, see
//! `quota`), host pauses (`Retry-After`) and the adaptive per-host rate, and it decides which
//! waiting request starts next.
//!
//! Requests wait in per-host FIFO queues ([`Gate::enqueue`], [`Gate::admit`]). One driver
//! task hands out [`Slot`]s: it visits the hosts that have waiters round robin and starts the
//! head of a host's queue when, at that instant, a global slot is free, the host is under its
//! own cap and not paused, and every quota that applies (each global one, each per-host one,
//! the adaptive one) would accept a cell. Only then does it take a cell from all of them,
//! right away (each quota is peeked first: see `quota`), so a cell is never taken early and
//! used late, and never wasted. A host that must wait goes to a timer heap and does not
//! hold up the hosts behind it; that is why one slow host cannot stall the others.
//!
//! Idle hosts are forgotten (a sweep once a second drops hosts with nothing queued, nothing in
//! flight, no pause and full quotas, whose state is then indistinguishable from a fresh one),
//! so ten million distinct hosts do not grow memory. This module does not read input, fetch,
//! or build records; the `scheduler` feeds it, `pushback` tells it how to react to a server.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::config::Settings;
use crate::host::HostKey;
use crate::pushback::{self, Aimd};
use crate::quota::Quota;
use crate::units::Rate;

/// How often idle hosts are swept out of the host map.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long an idle host whose adaptive rate is still cut is remembered (so a host that
/// answered 429 does not get its full rate back just by being quiet for a second).
const ADAPTIVE_MEMORY: Duration = Duration::from_secs(600);
/// Timer wake-ups run this late or so: a wait whose quota cannot absorb that lateness (burst 1)
/// sleeps until this much before its deadline and spins the rest (see [`wait_until`]).
const SPIN: Duration = Duration::from_millis(2);
/// ... but only for intervals this long or longer, so spinning costs at most SPIN/interval
/// (20%) of one core. Faster strict (burst 1) quotas accept the timer's lateness instead.
const SPIN_MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What the gate enforces; built from [`Settings`].
#[derive(Debug, Clone)]
pub struct Limits {
    pub concurrency: NonZeroUsize,
    pub rates: Vec<Rate>,
    pub per_host_concurrency: Option<NonZeroUsize>,
    pub per_host_rates: Vec<Rate>,
    /// `None`: the automatic burst of each quota (see `quota::auto_burst`).
    pub burst: Option<NonZeroU32>,
    pub adaptive: bool,
    /// The longest pause a `Retry-After` imposes on a host (`--max-retry-wait`).
    pub max_pause: Duration,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Limits {
        Limits {
            concurrency: s.concurrency,
            rates: s.rates.clone(),
            per_host_concurrency: s.per_host_concurrency,
            per_host_rates: s.per_host_rates.clone(),
            burst: s.burst,
            adaptive: s.adaptive,
            max_pause: s.retry.max_wait,
        }
    }

    /// The rate additive increase never exceeds: the tightest per-host rate, else the
    /// tightest global one (a host can never go faster than that anyway).
    fn adaptive_ceiling(&self) -> Option<f64> {
        let tightest = |rates: &[Rate]| rates.iter().map(Rate::per_second).min_by(f64::total_cmp);
        tightest(&self.per_host_rates).or_else(|| tightest(&self.rates))
    }
}

/// The gate: shared by the dispatcher and every request task.
pub struct Gate {
    shared: Arc<Shared>,
    /// Copies of two fixed limits, read on every response without taking the lock.
    max_pause: Duration,
    adaptive: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the driver: a waiter arrived, a slot came back, the gate closed.
    wake: Notify,
}

/// Proof that a request may run: hold it for as long as the request is in flight. Dropping
/// it frees the in-flight slot (global and the host's).
pub struct Slot {
    shared: Arc<Shared>,
    host: HostKey,
    granted_at: Instant,
}

impl Slot {
    /// The instant the gate admitted the request: its start, as far as every limit is
    /// concerned (read right after its cells were taken, so never before them).
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }

    pub fn host(&self) -> &HostKey {
        &self.host
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared).release(&self.host);
        self.shared.wake.notify_one();
    }
}

/// A place in a host's queue; await it for the [`Slot`].
pub struct Ticket(oneshot::Receiver<Slot>);

impl Ticket {
    pub async fn admitted(self) -> Slot {
        // Cannot fail short of a bug: a waiter's sender leaves the queue only by being sent
        // a slot (or once its ticket is dropped), and the queue lives as long as the gate,
        // which every ticket holder keeps alive through the run's context. A panic in the
        // driver would end up here, and tokio keeps a task's panic inside that task.
        self.0
            .await
            .expect("the gate's driver runs as long as the gate")
    }
}

struct State {
    limits: Limits,
    global: Vec<Quota>,
    in_flight: usize,
    /// Boxed so the table itself stays small when it grows and shrinks with host churn.
    hosts: HashMap<HostKey, Box<Host>>,
    /// Hosts with waiters that may be able to start now, in round-robin order.
    ready: VecDeque<HostKey>,
    /// Hosts with waiters that must wait for their own quota or pause: (when, spin?, host).
    timed: BinaryHeap<Reverse<(Instant, bool, HostKey)>>,
    last_sweep: Instant,
    closed: bool,
}

struct Host {
    quotas: Vec<Quota>,
    /// `--adaptive`: the AIMD state and, while the rate is limited, its quota.
    aimd: Option<Aimd>,
    adaptive_quota: Option<Quota>,
    in_flight: usize,
    paused_until: Option<Instant>,
    waiters: VecDeque<oneshot::Sender<Slot>>,
    /// In `ready` or `timed` (exactly one of them).
    queued: bool,
    last_active: Instant,
}

impl Host {
    /// Nothing queued or in flight, no pause, quotas full: the state of a fresh host, apart
    /// from an adaptive rate.
    fn is_idle(&self, now: Instant) -> bool {
        self.waiters.is_empty()
            && self.in_flight == 0
            && !self.queued
            && self.paused_until.is_none_or(|p| p <= now)
            && self
                .quotas
                .iter()
                .chain(&self.adaptive_quota)
                .all(Quota::is_full)
    }
}

struct Grant {
    tx: oneshot::Sender<Slot>,
    host: HostKey,
    granted_at: Instant,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves counters that are still consistent enough to go
    // on: every update is a few integer or instant assignments.
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gate {
    /// A gate enforcing `limits`; spawns its driver on the current tokio runtime.
    pub fn new(limits: Limits) -> Gate {
        let global: Vec<Quota> = limits
            .rates
            .iter()
            .map(|r| Quota::new(*r, limits.burst))
            .collect();
        for (rate, q) in limits.rates.iter().zip(&global) {
            tracing::info!("rate {rate}: burst {}", q.burst());
        }
        for rate in &limits.per_host_rates {
            let q = Quota::new(*rate, limits.burst);
            tracing::info!("per-host rate {rate}: burst {}", q.burst());
        }
        let (max_pause, adaptive) = (limits.max_pause, limits.adaptive);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                limits,
                global,
                in_flight: 0,
                hosts: HashMap::new(),
                ready: VecDeque::new(),
                timed: BinaryHeap::new(),
                last_sweep: Instant::now(),
                closed: false,
            }),
            wake: Notify::new(),
        });
        tokio::spawn(drive(Arc::clone(&shared)));
        Gate {
            shared,
            max_pause,
            adaptive,
        }
    }

    /// Join the back of `host`'s queue now (so requests of one host start in the order they
    /// were enqueued); await the ticket for the slot.
    pub fn enqueue(&self, host: &HostKey) -> Ticket {
        self.join(host, false)
    }

    /// Wait until a request to `host` may start. For a retry, see [`Gate::admit_retry`].
    pub async fn admit(&self, host: &HostKey) -> Slot {
        self.enqueue(host).admitted().await
    }

    /// Like [`Gate::admit`], but at the front of the host's queue: a retry has waited its
    /// turn once already. It still passes every cap, quota and pause.
    pub async fn admit_retry(&self, host: &HostKey) -> Slot {
        self.join(host, true).admitted().await
    }

    fn join(&self, host: &HostKey, front: bool) -> Ticket {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.shared);
            let now = Instant::now();
            if let Some(granted_at) = st.start_at_once(host, now) {
                drop(st);
                let slot = Slot {
                    shared: Arc::clone(&self.shared),
                    host: host.clone(),
                    granted_at,
                };
                // The receiver is right here: the send cannot fail.
                drop(tx.send(slot));
                return Ticket(rx);
            }
            let st = &mut *st;
            let h = st.host_mut(host, now);
            if front {
                h.waiters.push_front(tx);
            } else {
                h.waiters.push_back(tx);
            }
            h.last_active = now;
            if !h.queued {
                h.queued = true;
                st.ready.push_back(host.clone());
            }
        }
        self.shared.wake.notify_one();
        Ticket(rx)
    }

    /// Hold every request to `host` until `until` (requests in flight go on). A later pause
    /// extends an earlier one; an earlier one never shortens it.
    pub fn pause(&self, host: &HostKey, until: Instant) {
        let mut st = lock(&self.shared);
        let now = Instant::now();
        let h = st.host_mut(host, now);
        if h.paused_until.is_none_or(|p| p < until) {
            h.paused_until = Some(until);
        }
    }

    /// Tell the gate how the request behind `slot` went: a 429/503 with `Retry-After` pauses
    /// the host, and with `--adaptive` a 429 cuts the host's rate and a success raises it.
    /// Returns the host's adaptive rate afterwards (requests per second), when `--adaptive`
    /// limits it.
    pub fn feedback(
        &self,
        slot: &Slot,
        status: Option<u16>,
        retry_after: Option<&str>,
    ) -> Option<f64> {
        let now = Instant::now();
        if let Some(status) = status
            && let Some(until) = pushback::pause_until(status, retry_after, now, self.max_pause)
        {
            tracing::info!(
                "{} answered {status} with Retry-After {}: pausing the host for {:.1}s",
                slot.host,
                retry_after.unwrap_or_default().trim(),
                until.duration_since(now).as_secs_f64()
            );
            self.pause(&slot.host, until);
        }
        if !self.adaptive {
            return None;
        }
        let mut st = lock(&self.shared);
        let burst = st.limits.burst;
        let h = st.host_mut(&slot.host, now);
        let aimd = h.aimd.as_mut()?;
        let changed = match status {
            Some(429) => {
                let cut = aimd.on_too_many(slot.granted_at, now);
                if cut {
                    tracing::info!(
                        "{} answered 429: adaptive rate cut to {:.2}/s",
                        slot.host,
                        aimd.rate().unwrap_or_default()
                    );
                }
                cut
            }
            Some(s) if s < 400 => aimd.on_success(),
            _ => false,
        };
        let rate = aimd.rate();
        if changed {
            h.adaptive_quota = rate.map(|r| {
                let interval = Duration::from_secs_f64(1.0 / r);
                // After a cut, the next start comes a full new interval after the one that
                // was refused, not at once.
                let defer_to = (status == Some(429)).then(|| slot.granted_at + interval);
                // A governor quota is fixed for its limiter: a new rate is a new limiter that
                // takes over the old one's schedule (its TAT).
                match h.adaptive_quota.take() {
                    Some(q) => q.reshape(interval, burst, defer_to),
                    None => Quota::scheduled(interval, burst, defer_to),
                }
            });
        }
        rate
    }
}

impl Gate {
    /// The adaptive rate limiting `host` now (requests per second), with `--adaptive`.
    pub fn host_rate(&self, host: &HostKey) -> Option<f64> {
        if !self.adaptive {
            return None;
        }
        let st = lock(&self.shared);
        let rate = st.hosts.get(host)?.aimd.as_ref()?.rate()?;
        Some((rate * 1000.0).round() / 1000.0)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut st = lock(&self.shared);
        st.closed = true;
        if st.limits.adaptive {
            let mut cut: Vec<_> = st
                .hosts
                .iter()
                .filter_map(|(k, h)| {
                    let aimd = h.aimd.as_ref().filter(|a| a.is_cut())?;
                    Some((k.clone(), aimd.rate()?))
                })
                .collect();
            cut.sort_by(|a, b| a.0.cmp(&b.0));
            for (host, rate) in cut {
                tracing::info!("{host}: final adaptive rate {rate:.2}/s");
            }
        }
        drop(st);
        self.shared.wake.notify_one();
    }
}

impl State {
    fn host_mut(&mut self, key: &HostKey, now: Instant) -> &mut Host {
        host_entry(&mut self.hosts, &self.limits, key, now)
    }

    fn release(&mut self, key: &HostKey) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = Instant::now();
        let Some(h) = self.hosts.get_mut(key) else {
            return;
        };
        h.in_flight = h.in_flight.saturating_sub(1);
        h.last_active = now;
        if !h.waiters.is_empty() && !h.queued {
            h.queued = true;
            self.ready.push_back(key.clone());
        } else if h.is_idle(now) && !h.aimd.as_ref().is_some_and(Aimd::is_cut) {
            // Forget it at once when nothing would be lost (no per-host quota, or full
            // again): most hosts of a long list of distinct hosts leave here, not in a sweep.
            self.hosts.remove(key);
        }
    }

    /// Start a request to `key` right now if nothing else is waiting and every limit allows
    /// it (the common case without contention, which then skips a round trip through the
    /// driver). Returns the instant it started, if it did.
    fn start_at_once(&mut self, key: &HostKey, now: Instant) -> Option<Instant> {
        if !self.ready.is_empty()
            || self.in_flight >= self.limits.concurrency.get()
            || not_ready(self.global.iter()).is_some()
        {
            return None;
        }
        let cap = self.limits.per_host_concurrency;
        // Not `host_mut`: the global quotas are taken below while `h` is held.
        let h = host_entry(&mut self.hosts, &self.limits, key, now);
        let free = !h.queued
            && h.waiters.is_empty()
            && h.paused_until.is_none_or(|p| p <= now)
            && cap.is_none_or(|c| h.in_flight < c.get())
            && not_ready(h.quotas.iter().chain(&h.adaptive_quota)).is_none();
        if !free {
            return None;
        }
        let quotas = self
            .global
            .iter_mut()
            .chain(&mut h.quotas)
            .chain(&mut h.adaptive_quota);
        if take_all(quotas).is_err() {
            // Then it waits in the queue like any other request.
            return None;
        }
        let granted_at = Instant::now();
        h.in_flight += 1;
        h.last_active = granted_at;
        self.in_flight += 1;
        Some(granted_at)
    }

    /// Start everything that may start at `now`; return when to look again (and whether that
    /// wait must be precise), or `None` to wait for a waiter or a slot.
    fn step(&mut self, now: Instant, grants: &mut Vec<Grant>) -> Option<(Instant, bool)> {
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
            if let Some(wait) = not_ready(self.global.iter()) {
                global_wait = Some(wait);
                break;
            }
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(h) = self.hosts.get_mut(&key) else {
                continue;
            };
            h.queued = false;
            // Waiters that gave up (their task ended) are skipped without taking a cell.
            while h.waiters.front().is_some_and(oneshot::Sender::is_closed) {
                h.waiters.pop_front();
            }
            if h.waiters.is_empty() {
                continue;
            }
            if let Some(until) = h.paused_until {
                if until > now {
                    h.queued = true;
                    self.timed.push(Reverse((until, false, key)));
                    continue;
                }
                h.paused_until = None;
            }
            if self
                .limits
                .per_host_concurrency
                .is_some_and(|cap| h.in_flight >= cap.get())
            {
                // `release` puts the host back in `ready` when one of its requests ends.
                continue;
            }
            if let Some((at, precise)) = not_ready(h.quotas.iter().chain(&h.adaptive_quota)) {
                h.queued = true;
                self.timed.push(Reverse((at, precise, key)));
                continue;
            }
            // Everything accepts: take every cell, at once.
            let quotas = self
                .global
                .iter_mut()
                .chain(&mut h.quotas)
                .chain(&mut h.adaptive_quota);
            if let Err(at) = take_all(quotas) {
                h.queued = true;
                self.timed.push(Reverse((at, false, key)));
                continue;
            }
            let granted_at = Instant::now();
            self.in_flight += 1;
            h.in_flight += 1;
            h.last_active = granted_at;
            if let Some(tx) = h.waiters.pop_front() {
                grants.push(Grant {
                    tx,
                    host: key.clone(),
                    granted_at,
                });
            }
            if !h.waiters.is_empty() {
                h.queued = true;
                self.ready.push_back(key);
            }
        }
        let timed = self.timed.peek().map(|Reverse((at, p, _))| (*at, *p));
        // Idle hosts are swept even when nothing else would wake the driver.
        let sweep = (!self.hosts.is_empty()).then(|| (self.last_sweep + SWEEP_EVERY, false));
        [global_wait, timed, sweep]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Drop hosts whose state says nothing a fresh host's would not.
    fn sweep(&mut self, now: Instant) {
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
        self.last_sweep = now;
    }
}

/// `key`'s state, made fresh if the host is new (or was forgotten).
fn host_entry<'a>(
    hosts: &'a mut HashMap<HostKey, Box<Host>>,
    limits: &Limits,
    key: &HostKey,
    now: Instant,
) -> &'a mut Host {
    hosts.entry(key.clone()).or_insert_with(|| {
        Box::new(Host {
            quotas: limits
                .per_host_rates
                .iter()
                .map(|r| Quota::new(*r, limits.burst))
                .collect(),
            aimd: limits
                .adaptive
                .then(|| Aimd::new(limits.adaptive_ceiling())),
            adaptive_quota: None,
            in_flight: 0,
            paused_until: None,
            waiters: VecDeque::new(),
            queued: false,
            last_active: now,
        })
    })
}

/// When every quota in `quotas` accepts now (each is peeked): `None`; otherwise the first
/// instant they all would (the latest of their ready times), and whether waiting for it must
/// be precise (the quota that decides it has no tolerance for a late wake-up).
fn not_ready<'a>(quotas: impl Iterator<Item = &'a Quota>) -> Option<(Instant, bool)> {
    let mut wait: Option<(Instant, bool)> = None;
    for q in quotas {
        let Err(w) = q.peek() else {
            continue;
        };
        let precise = w.tolerance() < SPIN && w.quota.replenish_interval() >= SPIN_MIN_INTERVAL;
        if wait.is_none_or(|(at, _)| w.until > at) {
            wait = Some((w.until, precise));
        }
    }
    wait
}

/// Take a cell from each of `quotas`, all of which just said yes to a peek. A take cannot
/// refuse after a yes (time only moves forward, and nothing else took a cell in between: the
/// gate's lock is held), but if one does, the rest are not taken and the caller gets when to
/// look again; the cells already taken are lost, which errs on the polite side.
fn take_all<'a>(quotas: impl Iterator<Item = &'a mut Quota>) -> Result<(), Instant> {
    for q in quotas {
        if let Err(w) = q.take() {
            tracing::warn!("a rate quota refused a cell it had just accepted");
            return Err(w.until);
        }
    }
    Ok(())
}

/// The gate's driver: grant what can start, sleep until something changes, repeat.
async fn drive(shared: Arc<Shared>) {
    let mut grants = Vec::new();
    loop {
        let now = Instant::now();
        let wake = {
            let mut st = lock(&shared);
            if st.closed {
                return;
            }
            if now.duration_since(st.last_sweep) >= SWEEP_EVERY {
                st.sweep(now);
            }
            st.step(now, &mut grants)
        };
        for Grant {
            tx,
            host,
            granted_at,
        } in grants.drain(..)
        {
            let slot = Slot {
                shared: Arc::clone(&shared),
                host,
                granted_at,
            };
            // A waiter that went away between the check and now: its slot comes straight
            // back (the cell it took is wasted, which errs on the polite side).
            drop(tx.send(slot));
        }
        match wake {
            None => shared.wake.notified().await,
            Some((at, precise)) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = wait_until(at, precise) => {}
                }
            }
        }
    }
}

/// Sleep until `deadline`. A tokio timer fires up to a millisecond or two late; when the
/// quota cannot absorb that (`precise`), sleep until [`SPIN`] before and yield-spin the rest.
async fn wait_until(deadline: Instant, precise: bool) {
    if !precise {
        tokio::time::sleep_until(deadline.into()).await;
        return;
    }
    if let Some(early) = deadline.checked_sub(SPIN) {
        tokio::time::sleep_until(early.into()).await;
    }
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            concurrency: NonZeroUsize::new(64).unwrap(),
            rates: Vec::new(),
            per_host_concurrency: NonZeroUsize::new(2),
            per_host_rates: vec!["1000/s".parse().unwrap()],
            burst: None,
            adaptive: true,
            max_pause: Duration::from_secs(60),
        }
    }

    /// Ten thousand distinct hosts come and go; once idle, none of them stays in memory.
    #[tokio::test]
    async fn idle_hosts_are_forgotten() {
        let gate = Gate::new(limits());
        for i in 0..10_000u32 {
            let url = url::Url::parse(&format!("http://h{i}.test:{}/", 1000 + i % 50)).unwrap();
            let slot = gate.admit(&HostKey::of(&url)).await;
            drop(slot);
        }
        assert!(lock(&gate.shared).hosts.len() > 100);
        tokio::time::sleep(SWEEP_EVERY + Duration::from_millis(300)).await;
        assert_eq!(lock(&gate.shared).hosts.len(), 0);
    }

    /// Waiters of one host queue behind its cap; other hosts pass them.
    #[tokio::test]
    async fn a_capped_host_does_not_block_others() {
        let gate = Gate::new(limits());
        let a = HostKey::of(&url::Url::parse("http://a.test/").unwrap());
        let b = HostKey::of(&url::Url::parse("http://b.test/").unwrap());
        let _a1 = gate.admit(&a).await;
        let _a2 = gate.admit(&a).await;
        let a3 = gate.enqueue(&a);
        let b1 = tokio::time::timeout(Duration::from_secs(1), gate.admit(&b)).await;
        assert!(b1.is_ok(), "b waits behind a's cap");
        let a3 = tokio::time::timeout(Duration::from_millis(100), a3.admitted()).await;
        assert!(a3.is_err(), "a's third request passed its cap of 2");
    }
}
