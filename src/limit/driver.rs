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
        .spawn(move || {
            raise_priority();
            runtime.block_on(drive(shared));
        })
        .inspect_err(|e| tracing::debug!("no thread for the gate ({e}): it runs as a task"))
        .is_ok()
}

/// Ask for the lowest real-time priority (`SCHED_FIFO` 1) for the gate's own thread, when
/// the user may grant it (root, `CAP_SYS_NICE`, or an `RLIMIT_RTPRIO` of 1 or more), else
/// stay as is. A strict quota loses every start that comes late, for good, and on a busy
/// machine an ordinary thread is made to wait for a core for a millisecond or more: at
/// 5,000/s that cost 5-12% of the rate in the benchmark, and 1-2% with this priority. The
/// thread sleeps between starts and spins at most a quarter of an interval before each (see
/// `timer`), so it takes little from anyone else; Linux keeps 5% of every second for
/// ordinary threads whatever real-time ones do.
fn raise_priority() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use thread_priority::{
            RealtimeThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
            set_thread_priority_and_policy, thread_native_id,
        };
        match set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
        ) {
            Ok(()) => tracing::debug!("strict pacing thread: real-time priority"),
            Err(e) => tracing::debug!("strict pacing thread: ordinary priority ({e:?})"),
        }
    }
}

/// The gate's driver: grant what can start, sleep until something changes, repeat.
pub(super) async fn drive(shared: Arc<Shared>) {
    let mut grants = Vec::new();
    let mut timer = PreciseTimer::new();
    loop {
        let wake = {
            let mut st = lock(&shared);
            // Read under the lock: decisions are made (and starts recorded) in the order of
            // their instants, whichever thread makes them.
            let now = Instant::now();
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
