//! The gate's state: the hosts, their queues and counters, the quotas, and the one step that
//! decides who starts now ([`State::step`]). Everything here runs under the gate's lock, and
//! nothing here waits or spawns: the driver (`driver`) sleeps and wakes, the gate API (`mod.rs`)
//! takes the lock.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::host::HostKey;
use super::pacing::Pace;
use super::pushback::Aimd;
use super::quota::Quota;
use super::timer::COARSE_LATENESS;
use super::{Limits, Slot};

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
    pub(super) global: Vec<Quota>,
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
    pub(super) quotas: Vec<Quota>,
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
            && self
                .quotas
                .iter()
                .chain(&self.adaptive_quota)
                .chain(&self.pace.quota)
                .all(Quota::is_full)
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
            && self.quotas.len() == 1
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
        host_entry(&mut self.hosts, &mut self.recent, &self.limits, key, now)
    }

    pub(super) fn release(&mut self, key: &HostKey) {
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
        } else if h.only_a_quota_to_remember(now) {
            // A host with a per-host rate that just started: keep only its quota's TAT.
            if let Some(h) = self.hosts.remove(key) {
                let hash = self.recent.hash(key);
                if let Some(tat) = h.quotas.into_iter().next().and_then(Quota::into_tat) {
                    self.recent.tats.insert(hash, tat);
                }
            }
        }
    }

    /// Start a request to `key` right now if nothing else is waiting and every limit allows
    /// it (the common case without contention, which then skips a round trip through the
    /// driver). Returns the instant it started, if it did.
    pub(super) fn start_at_once(&mut self, key: &HostKey, now: Instant) -> Option<Instant> {
        if !self.ready.is_empty()
            || self.in_flight >= self.limits.concurrency.get()
            || not_ready(self.global.iter()).is_some()
        {
            return None;
        }
        let cap = self.limits.per_host_concurrency;
        // Not `host_mut`: the global quotas are taken below while `h` is held.
        let h = host_entry(&mut self.hosts, &mut self.recent, &self.limits, key, now);
        let free = !h.queued
            && h.waiters.is_empty()
            && h.paused_until.is_none_or(|p| p <= now)
            && cap.is_none_or(|c| h.in_flight < c.get())
            && not_ready(
                h.quotas
                    .iter()
                    .chain(&h.adaptive_quota)
                    .chain(&h.pace.quota),
            )
            .is_none();
        if !free {
            return None;
        }
        let quotas = self
            .global
            .iter_mut()
            .chain(&mut h.quotas)
            .chain(&mut h.adaptive_quota)
            .chain(&mut h.pace.quota);
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
            if let Some(wait) = not_ready(self.global.iter()) {
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
        if self
            .limits
            .per_host_concurrency
            .is_some_and(|cap| h.in_flight >= cap.get())
        {
            // `release` puts the host back in `ready` when one of its requests ends.
            return;
        }
        let own = h
            .quotas
            .iter()
            .chain(&h.adaptive_quota)
            .chain(&h.pace.quota);
        if let Some((at, precise)) = not_ready(own) {
            h.queued = true;
            self.timed.push(Reverse((at, precise, key)));
            return;
        }
        // Everything accepts: take every cell, at once.
        let quotas = self
            .global
            .iter_mut()
            .chain(&mut h.quotas)
            .chain(&mut h.adaptive_quota)
            .chain(&mut h.pace.quota);
        if let Err(at) = take_all(quotas) {
            h.queued = true;
            self.timed.push(Reverse((at, None, key)));
            return;
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
/// per-host quota if it was kept in `recent`.
pub(super) fn host_entry<'a>(
    hosts: &'a mut HashMap<HostKey, Box<Host>>,
    recent: &mut Recent,
    limits: &Limits,
    key: &HostKey,
    now: Instant,
) -> &'a mut Host {
    hosts.entry(key.clone()).or_insert_with(|| {
        let tat = if recent.tats.is_empty() {
            None
        } else {
            recent.tats.remove(&recent.hash(key))
        };
        Box::new(Host {
            quotas: limits
                .per_host_rates
                .iter()
                .map(|r| match tat {
                    Some(tat) => Quota::scheduled(r.interval(), limits.burst, Some(tat)),
                    None => Quota::new(*r, limits.burst),
                })
                .collect(),
            aimd: limits
                .adaptive
                .then(|| Aimd::new(limits.adaptive_ceiling())),
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

/// When every quota in `quotas` accepts now (each is peeked): `None`; otherwise the first
/// instant they all would (the latest of their ready times), and whether waiting for it must
/// be precise: the interval of the quota that decides it, when that quota's tolerance is
/// smaller than tokio's timer lateness (burst 1, or any burst at a slow enough rate).
fn not_ready<'a>(quotas: impl Iterator<Item = &'a Quota>) -> Option<Wake> {
    let mut wait: Option<Wake> = None;
    for q in quotas {
        let Err(w) = q.peek() else {
            continue;
        };
        let strict = (w.tolerance() < COARSE_LATENESS).then(|| w.quota.replenish_interval());
        if wait.is_none_or(|(at, _)| w.until > at) {
            wait = Some((w.until, strict));
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
