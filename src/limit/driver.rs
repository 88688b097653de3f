//! The gate's driver: one task that grants what can start, then sleeps until something
//! changes (a waiter arrives, a slot comes back, a quota or a pause allows the next start).

use std::sync::Arc;
use std::time::Instant;

use super::state::{Grant, SPIN, SWEEP_EVERY};
use super::{Shared, Slot, lock};

/// The gate's driver: grant what can start, sleep until something changes, repeat.
pub(super) async fn drive(shared: Arc<Shared>) {
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
