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

mod driver;
mod host;
// Without the `redis` feature no lease is ever made (`Settings::check` refuses `--limits`).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod lease;
mod pacing;
mod pushback;
mod quota;
mod quota_headers;
#[cfg(feature = "redis")]
mod shared;
mod state;
mod timer;

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

pub(crate) use self::host::HostKey;
use self::lease::{LeaseId, LeaseSpec, Reply, Request};
use self::quota::Quota;
pub(crate) use self::quota_headers::{Budget, budget};
use self::state::{Limiter, Sharing, State};
use crate::profile::HostProfile;
use crate::settings::{LimitsFallback, LimitsUrl, Settings};
use crate::units::Rate;

/// A strict quota this fast or faster gets the gate's driver a thread of its own (see
/// `Gate::new`).
const OWN_THREAD_INTERVAL: Duration = Duration::from_millis(20);

/// Wait until `deadline`, to within microseconds rather than the ~2 ms of tokio's timer (see
/// `timer`): for a schedule that is not a limit, like the start of a polling round.
pub(crate) async fn wait_until(deadline: Instant) {
    // The interval only caps the final spin (a quarter of it): 1 ms at most.
    timer::PreciseTimer::new()
        .wait_until(deadline, Duration::from_millis(4))
        .await;
}

/// Check that the Redis of `--limits` can be used (reached, and runs scripts). Without the
/// `redis` feature, `Settings::check` has refused `--limits` already.
#[cfg(feature = "redis")]
pub(crate) async fn check_shared(url: &LimitsUrl) -> Result<(), String> {
    shared::check(url).await
}

/// Without the `redis` feature there is nothing to check (`Settings::check` refused it).
#[cfg(not(feature = "redis"))]
pub(crate) async fn check_shared(_url: &LimitsUrl) -> Result<(), String> {
    Ok(())
}

/// `--limits`: where the shared budget lives and what to do while it cannot be reached.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct SharedLimits {
    pub url: LimitsUrl,
    pub name: String,
    pub fallback: LimitsFallback,
    pub share: NonZeroU32,
}

/// What the gate enforces; built from [`Settings`].
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub concurrency: NonZeroUsize,
    pub rates: Vec<Rate>,
    pub per_host_concurrency: Option<NonZeroUsize>,
    pub per_host_rates: Vec<Rate>,
    /// `None`: the automatic burst of each quota (see `quota::auto_burst`).
    pub burst: Option<NonZeroU32>,
    pub adaptive: bool,
    /// The longest pause a `Retry-After` or an exhausted budget imposes on a host
    /// (`--max-retry-wait`).
    pub max_pause: Duration,
    /// Pace each host from the budget its responses announce (see `pacing`).
    pub quota_headers: bool,
    /// `--limits`: quotas and pauses shared through Redis.
    pub shared: Option<SharedLimits>,
    /// Host profiles: a matching host's per-host rates and cap are its profile's.
    pub profiles: Vec<HostProfile>,
}

impl Limits {
    pub(crate) fn from_settings(s: &Settings) -> Limits {
        Limits {
            concurrency: s.concurrency,
            rates: s.rates.clone(),
            per_host_concurrency: s.per_host_concurrency,
            per_host_rates: s.per_host_rates.clone(),
            burst: s.burst,
            adaptive: s.adaptive,
            max_pause: s.retry.max_wait,
            quota_headers: s.quota_headers,
            shared: s.limits.clone().map(|url| SharedLimits {
                url,
                name: s.limits_key.clone(),
                fallback: s.limits_fallback,
                share: s.limits_share,
            }),
            profiles: s.profiles.clone(),
        }
    }

    /// The per-host cap and rates of `key`: those its host profile sets, else the run's.
    fn for_host(&self, key: &HostKey) -> (Option<NonZeroUsize>, &[Rate]) {
        let cap = self.per_host_concurrency;
        let rates = self.per_host_rates.as_slice();
        if self.profiles.is_empty() {
            return (cap, rates);
        }
        match crate::profile::most_specific(&self.profiles, key.name()) {
            None => (cap, rates),
            Some((_, p)) => (
                p.concurrency.or(cap),
                if p.rates.is_empty() { rates } else { &p.rates },
            ),
        }
    }

    /// The rate additive increase never exceeds: the tightest of the host's per-host `rates`,
    /// else the tightest global one (a host can never go faster than that anyway).
    fn adaptive_ceiling(&self, per_host: &[Rate]) -> Option<f64> {
        let tightest = |rates: &[Rate]| rates.iter().map(Rate::per_second).min_by(f64::total_cmp);
        tightest(per_host).or_else(|| tightest(&self.rates))
    }
}

/// The gate: shared by the dispatcher and every request task.
pub(crate) struct Gate {
    shared: Arc<Shared>,
    /// Copies of two fixed limits, read on every response without taking the lock.
    max_pause: Duration,
    adaptive: bool,
    quota_headers: bool,
    /// Some response has announced a budget (quota headers): until then no host is paced,
    /// and a record's `host_rate` is known to be none without taking the lock.
    budget_seen: AtomicBool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the driver: a waiter arrived, a slot came back, the gate closed, a lease arrived.
    wake: Notify,
}

impl Shared {
    /// A batch of leased cells (or a failure) for lease `id`, from the Redis task.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn lease_reply(&self, id: LeaseId, sent: Instant, reply: Reply) {
        let mut st = lock(self);
        let now = Instant::now();
        let lease = match &id {
            LeaseId::Global(i) => st.global.get_mut(*i),
            LeaseId::Host(key, i) => st.hosts.get_mut(key).and_then(|h| h.quotas.get_mut(*i)),
        };
        // A host forgotten meanwhile: its cells are dropped (the polite side).
        if let Some(Limiter::Shared(lease)) = lease {
            lease.reply(reply, sent, now);
        }
        drop(st);
        self.wake.notify_one();
    }
}

/// Proof that a request may run: hold it for as long as the request is in flight. Dropping
/// it frees the in-flight slot (global and the host's).
pub(crate) struct Slot {
    shared: Arc<Shared>,
    host: HostKey,
    granted_at: Instant,
    /// No other request to its host was waiting in the gate when it was admitted.
    alone: bool,
}

impl Slot {
    /// Whether no other request to this host was waiting when this one was admitted: with
    /// the input read that far ahead, nothing else for the host is known to come.
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }

    /// The instant the gate admitted the request: its start, as far as every limit is
    /// concerned (read right after its cells were taken, so never before them).
    pub(crate) fn granted_at(&self) -> Instant {
        self.granted_at
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if lock(&self.shared).release(&self.host) {
            self.shared.wake.notify_one();
        }
    }
}

/// A place in a host's queue; await it for the [`Slot`].
pub(crate) struct Ticket(oneshot::Receiver<Slot>);

impl Ticket {
    pub(crate) async fn admitted(self) -> Slot {
        // Cannot fail short of a bug: a waiter's sender leaves the queue only by being sent
        // a slot (or once its ticket is dropped), and the queue lives as long as the gate,
        // which every ticket holder keeps alive through the run's context. A panic in the
        // driver would end up here, and tokio keeps a task's panic inside that task.
        self.0
            .await
            .expect("the gate's driver runs as long as the gate")
    }
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
    pub(crate) fn new(limits: Limits) -> Result<Gate, String> {
        for rate in &limits.rates {
            let q = Quota::new(*rate, limits.burst);
            tracing::info!("rate {rate}: burst {}", q.burst());
        }
        for rate in &limits.per_host_rates {
            let q = Quota::new(*rate, limits.burst);
            tracing::info!("per-host rate {rate}: burst {}", q.burst());
        }
        for p in &limits.profiles {
            for rate in &p.rates {
                let q = Quota::new(*rate, limits.burst);
                tracing::info!("[hosts.\"{}\"] rate {rate}: burst {}", p.pattern, q.burst());
            }
        }
        // A fast quota with no room for a late start (`--burst 1` at 50/s and above) is
        // served by a driver on a thread of its own: on the caller's runtime its wake-ups
        // would queue behind every other task's, and each late one is a start lost for good.
        // Slower strict quotas (the automatic burst is 1 only below 50/s) lose under 1% to
        // such a delay and keep the driver as a task, without cross-thread wake-ups.
        let strict = limits
            .rates
            .iter()
            .chain(&limits.per_host_rates)
            .chain(limits.profiles.iter().flat_map(|p| &p.rates))
            .any(|r| {
                r.interval() <= OWN_THREAD_INTERVAL
                    && Quota::new(*r, limits.burst).tolerance() < timer::COARSE_LATENESS
            });
        let (requests, served) = tokio::sync::mpsc::unbounded_channel();
        let sharing = limits.shared.as_ref().map(|s| Sharing {
            requests: requests.clone(),
            name: s.name.clone(),
            local_share: (s.fallback == LimitsFallback::Local).then_some(s.share),
        });
        let now = Instant::now();
        let global: Vec<Limiter> = limits
            .rates
            .iter()
            .enumerate()
            .map(|(i, r)| match &sharing {
                None => Limiter::Local(Quota::new(*r, limits.burst)),
                Some(sharing) => {
                    let spec = LeaseSpec::rate(sharing.global_rate_key(*r), None, *r, limits.burst);
                    sharing.limiter(spec, LeaseId::Global(i), Some(*r), limits.burst, now)
                }
            })
            .collect();
        drop(requests);
        let (max_pause, adaptive, quota_headers) =
            (limits.max_pause, limits.adaptive, limits.quota_headers);
        let redis = limits.shared.clone();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                limits,
                global,
                sharing,
                in_flight: 0,
                hosts: HashMap::new(),
                recent: state::Recent::default(),
                ready: VecDeque::new(),
                timed: BinaryHeap::new(),
                last_sweep: Instant::now(),
                closed: false,
            }),
            wake: Notify::new(),
        });
        if !(strict && driver::spawn_on_own_thread(Arc::clone(&shared))) {
            tokio::spawn(driver::drive(Arc::clone(&shared)));
        }
        if let Some(redis) = redis {
            serve_leases(&redis, served, &shared)?;
        }
        Ok(Gate {
            shared,
            max_pause,
            adaptive,
            quota_headers,
            budget_seen: AtomicBool::new(false),
        })
    }

    /// Join the back of `host`'s queue now (so requests of one host start in the order they
    /// were enqueued); await the ticket for the slot.
    pub(crate) fn enqueue(&self, host: &HostKey) -> Ticket {
        self.join(host, false)
    }

    /// Wait until a request to `host` may start. For a retry, see [`Gate::admit_retry`].
    #[cfg(test)]
    pub(crate) async fn admit(&self, host: &HostKey) -> Slot {
        self.enqueue(host).admitted().await
    }

    /// Like [`Gate::enqueue`] then awaiting the ticket, but at the front of the host's queue: a retry has waited its
    /// turn once already. It still passes every cap, quota and pause.
    pub(crate) async fn admit_retry(&self, host: &HostKey) -> Slot {
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
                    // It started at once because nothing of its host was waiting.
                    alone: true,
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
            if h.queued {
                // Its host is already in line (ready, or timed): the driver has it in view.
                return Ticket(rx);
            }
            h.queued = true;
            // With others ready, the driver is busy, or held back by the global cap (a slot
            // coming back wakes it) or a global quota (it wakes on time): no need to wake it.
            let idle = st.ready.is_empty();
            st.ready.push_back(host.clone());
            if !idle {
                return Ticket(rx);
            }
        }
        self.shared.wake.notify_one();
        Ticket(rx)
    }

    /// Hold every request to `host` until `until` (requests in flight go on). A later pause
    /// extends an earlier one; an earlier one never shortens it.
    pub(crate) fn pause(&self, host: &HostKey, until: Instant) {
        let mut st = lock(&self.shared);
        let now = Instant::now();
        if let Some(sharing) = &st.sharing {
            // Every process sharing the budget holds the host too (see `lease`); a pause that
            // cannot be shared still holds here.
            let key = sharing.pause_key(host);
            let _ = sharing.requests.send(Request::Pause { key, until });
        }
        let h = st.host_mut(host, now);
        if h.paused_until.is_none_or(|p| p < until) {
            h.paused_until = Some(until);
        }
    }

    /// Tell the gate how the request behind `slot` went: a 429/503 with `Retry-After` pauses
    /// the host, a quota-header `budget` paces it (see `pacing`), and with `--adaptive` a 429
    /// cuts the host's rate and a success raises it. Returns the host's adaptive rate
    /// afterwards (requests per second), when `--adaptive` limits it.
    pub(crate) fn feedback(
        &self,
        slot: &Slot,
        status: Option<u16>,
        retry_after: Option<&str>,
        budget: Option<&Budget>,
    ) -> Option<f64> {
        let now = Instant::now();
        // The lock is taken only for a budget: responses without quota headers skip it.
        if self.quota_headers
            && let Some(budget) = budget
        {
            self.budget_seen.store(true, Ordering::Relaxed);
            self.learn(slot, budget, now);
        }
        if let Some(status) = status
            && let Some(until) = pushback::pause_until(status, retry_after, now, self.max_pause)
        {
            tracing::info!(
                "{} answered {status} with Retry-After {}: pausing the host for {:.1}s",
                slot.host,
                crate::redact::bounded(retry_after.unwrap_or_default().trim(), 64),
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

/// Start the task that fetches leased cells from Redis for the gate's shared quotas.
#[cfg(feature = "redis")]
fn serve_leases(
    limits: &SharedLimits,
    requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
    gate: &Arc<Shared>,
) -> Result<(), String> {
    let redis = shared::Redis::new(&limits.url, limits.fallback)?;
    tokio::spawn(shared::serve(
        redis,
        requests,
        Arc::downgrade(gate),
        Shared::lease_reply,
    ));
    Ok(())
}

/// Without the `redis` feature `Settings::check` refuses `--limits`: nothing to serve.
#[cfg(not(feature = "redis"))]
fn serve_leases(
    _limits: &SharedLimits,
    _requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
    _gate: &Arc<Shared>,
) -> Result<(), String> {
    Err("this build of fetchall has no Redis support (Cargo feature `redis`)".to_owned())
}

impl Gate {
    /// The host's `budget`, announced by the response to `slot`, sets the host's pace.
    fn learn(&self, slot: &Slot, budget: &Budget, now: Instant) {
        let mut st = lock(&self.shared);
        let h = st.host_mut(&slot.host, now);
        let limit = budget.limit.map(|l| format!(" of {l}")).unwrap_or_default();
        let said = format!(
            "{} remaining{limit}, reset in {}",
            budget.remaining,
            crate::units::HumanDuration(budget.reset)
        );
        let mut spent_until = None;
        match h.pace.apply(budget, h.in_flight, now, self.max_pause) {
            pacing::Change::Same => {}
            pacing::Change::Paced(rate) => {
                tracing::info!(
                    "{}: quota headers say {said}: pacing at {rate:.2}/s",
                    slot.host
                );
            }
            pacing::Change::Unpaced => {
                tracing::info!("{}: quota headers say {said}: no longer paced", slot.host);
            }
            pacing::Change::Exhausted {
                until,
                capped,
                news,
            } => {
                let cap = if capped {
                    " (capped at --max-retry-wait)"
                } else {
                    ""
                };
                if news {
                    tracing::info!(
                        "{}: quota headers say {said}: pausing the host for {:.1}s{cap}",
                        slot.host,
                        until.duration_since(now).as_secs_f64()
                    );
                }
                if h.paused_until.is_none_or(|p| p < until) {
                    h.paused_until = Some(until);
                    spent_until = Some(until);
                }
            }
        }
        // A spent budget holds the host in every process sharing it, as `pause` does.
        if let (Some(until), Some(sharing)) = (spent_until, &st.sharing) {
            let key = sharing.pause_key(&slot.host);
            let _ = sharing.requests.send(Request::Pause { key, until });
        }
    }

    /// The pace limiting `host` now (requests per second): the slower of its adaptive rate
    /// (`--adaptive`) and its quota-header pace (0 while paused for a spent budget).
    pub(crate) fn host_rate(&self, host: &HostKey) -> Option<f64> {
        let paced = self.quota_headers && self.budget_seen.load(Ordering::Relaxed);
        if !self.adaptive && !paced {
            return None;
        }
        let st = lock(&self.shared);
        let h = st.hosts.get(host)?;
        let adaptive = h.aimd.as_ref().and_then(|a| a.rate());
        let rate = [adaptive, h.pace.rate]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)?;
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
            quota_headers: false,
            shared: None,
            profiles: Vec::new(),
        }
    }

    /// A profile's rate and cap replace the per-host ones for its hosts only.
    #[test]
    fn a_profile_sets_the_cap_and_rates_of_its_hosts() {
        let mut l = limits();
        let mut p = HostProfile::new("*.slow.test".parse().unwrap());
        p.rates = vec!["2/s".parse().unwrap()];
        p.concurrency = NonZeroUsize::new(1);
        l.profiles.push(p);
        let key = |s: &str| HostKey::of(&url::Url::parse(s).unwrap());
        let (cap, rates) = l.for_host(&key("http://a.slow.test/"));
        assert_eq!((cap.map(NonZeroUsize::get), rates.len()), (Some(1), 1));
        assert_eq!(rates[0].to_string(), "2/s");
        let (cap, rates) = l.for_host(&key("http://slow.test/"));
        assert_eq!(
            (cap.map(NonZeroUsize::get), rates[0].to_string()),
            (Some(2), "1000/s".into())
        );
    }

    /// Ten thousand distinct hosts come and go; once idle, none of them stays in memory.
    #[tokio::test]
    async fn idle_hosts_are_forgotten() {
        let gate = Gate::new(limits()).unwrap();
        for i in 0..10_000u32 {
            let url = url::Url::parse(&format!("http://h{i}.test:{}/", 1000 + i % 50)).unwrap();
            let slot = gate.admit(&HostKey::of(&url)).await;
            drop(slot);
        }
        assert!(lock(&gate.shared).hosts.len() > 100);
        tokio::time::sleep(state::SWEEP_EVERY + Duration::from_millis(300)).await;
        assert_eq!(lock(&gate.shared).hosts.len(), 0);
    }

    /// With a per-host rate, a host that just started keeps only its quota's TAT (not its
    /// whole state) until the quota is full again, then nothing; and a host that comes back
    /// meanwhile still waits its interval: the bound holds across the compaction.
    #[tokio::test]
    async fn recently_started_hosts_keep_only_their_schedule() {
        let mut l = limits();
        l.adaptive = false;
        l.per_host_rates = vec!["20/s".parse().unwrap()];
        let gate = Gate::new(l).unwrap();
        let keys: Vec<HostKey> = (0..1000u32)
            .map(|i| HostKey::of(&url::Url::parse(&format!("http://h{i}.test/")).unwrap()))
            .collect();
        let mut first = Vec::new();
        for key in &keys {
            let slot = gate.admit(key).await;
            first.push(slot.granted_at());
        }
        {
            let st = lock(&gate.shared);
            assert_eq!(st.hosts.len(), 0, "idle hosts keep their whole state");
            assert_eq!(st.recent.len(), keys.len());
        }
        // Back again: each waits a full interval (50 ms) after its first start.
        for (key, at) in keys.iter().zip(&first).take(20) {
            let slot = gate.admit(key).await;
            assert!(slot.granted_at() >= *at + Duration::from_millis(50));
        }
        tokio::time::sleep(state::SWEEP_EVERY + Duration::from_millis(300)).await;
        let st = lock(&gate.shared);
        assert_eq!((st.hosts.len(), st.recent.len()), (0, 0));
    }

    /// Waiters of one host queue behind its cap; other hosts pass them.
    #[tokio::test]
    async fn a_capped_host_does_not_block_others() {
        let gate = Gate::new(limits()).unwrap();
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
