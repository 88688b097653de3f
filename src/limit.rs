//! Limits: the gate every request start passes, an in-flight cap (a semaphore) and the rate
//! quotas (GCRA, via governor).
//!
//! The order matters. A slot is taken first and the quotas are checked while holding it; when
//! a quota says "not yet", the slot is given back before sleeping, so waiting for a rate cell
//! never holds an in-flight slot, and a cell is only consumed at the instant its request
//! starts (a cell taken early and used late would let two starts bunch up and break the
//! burst + rate*W bound). This module does not know about hosts, retries or records.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::units::Rate;

/// std's monotonic `Instant` as governor's clock: governor's default (TSC-based) clock can
/// misbehave on machines whose cores' TSCs are not synchronised.
type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

/// The in-flight cap and the rate quotas, shared by everything that starts a request.
pub struct Gate {
    slots: Arc<Semaphore>,
    quotas: Vec<Limiter>,
    clock: MonotonicClock,
}

/// Proof that a request may run: hold it for as long as the request is in flight.
pub type Slot = OwnedSemaphorePermit;

impl Gate {
    pub fn new(concurrency: NonZeroUsize, rates: &[Rate], burst: NonZeroU32) -> Gate {
        let mut rates = rates.to_vec();
        // Check the fastest-refilling quota first: when a later quota refuses, the cells
        // already taken are wasted, and wasting the cheapest ones costs the least.
        rates.sort_by_key(Rate::interval);
        let clock = MonotonicClock;
        let quotas = rates
            .iter()
            .map(|r| {
                let quota = Quota::with_period(r.interval().max(Duration::from_nanos(1)))
                    .expect("interval is non-zero")
                    .allow_burst(burst);
                RateLimiter::direct_with_clock(quota, clock.clone())
            })
            .collect();
        Gate {
            slots: Arc::new(Semaphore::new(concurrency.get())),
            quotas,
            clock,
        }
    }

    /// Wait until a request may start: an in-flight slot is free and every quota has a cell.
    pub async fn admit(&self) -> Slot {
        loop {
            let slot = Arc::clone(&self.slots)
                .acquire_owned()
                .await
                .expect("the gate's semaphore is never closed");
            match self.take_cells() {
                None => return slot,
                Some(wait) => {
                    drop(slot);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Take one cell from every quota, or say how long to wait for the first that refused.
    fn take_cells(&self) -> Option<Duration> {
        for quota in &self.quotas {
            if let Err(not_until) = quota.check() {
                return Some(not_until.wait_time_from(self.clock.now()));
            }
        }
        None
    }
}
