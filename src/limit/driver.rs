//! The gate's driver: one task that grants what can start, then sleeps until something
//! changes (a waiter arrives, a slot comes back, a quota or a pause allows the next start).

use std::sync::Arc;
use std::time::Instant;

use super::state::{Grant, SWEEP_EVERY};
use super::timer::PreciseTimer;
use super::{Shared, Slot, lock};

/// Run the driver on a thread of its own, with a runtime of its own (its timer and the
/// timerfd), so that no task of the caller's runtime delays its wake-ups. False when the
/// thread or its runtime could not be made (the caller then spawns it as a task).
pub(super) fn spawn_on_own_thread(shared: Arc<Shared>) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::debug!("no runtime for the gate's own thread ({e}): it runs as a task");
            return false;
        }
    };
    std::thread::Builder::new()
        .name("fetchall-gate".into())
        .spawn(move || runtime.block_on(drive(shared)))
        .inspect_err(|e| tracing::debug!("no thread for the gate ({e}): it runs as a task"))
        .is_ok()
}

/// The gate's driver: grant what can start, sleep until something changes, repeat.
pub(super) async fn drive(shared: Arc<Shared>) {
    let mut grants = Vec::new();
    let mut timer = PreciseTimer::new();
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
            alone,
        } in grants.drain(..)
        {
            let slot = Slot {
                shared: Arc::clone(&shared),
                host,
                granted_at,
                alone,
            };
            // A waiter that went away between the check and now: its slot comes straight
            // back (the cell it took is wasted, which errs on the polite side).
            drop(tx.send(slot));
        }
        match wake {
            None => shared.wake.notified().await,
            Some((at, None)) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(at.into()) => {}
                }
            }
            // A strict quota (no tolerance for a late start) decides: wake on time.
            Some((at, Some(interval))) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = timer.wait_until(at, interval) => {}
                }
            }
        }
    }
}
