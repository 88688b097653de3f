//! Precise wake-ups for strict quotas. A quota with no tolerance for lateness (burst 1) loses
//! every microsecond a start comes late, for good: the next start is measured from the late
//! one. tokio's timer runs on a 1 ms wheel and fires up to ~2 ms late, which at 1,000/s halves
//! the rate. So a strict wait sleeps on a Linux `timerfd` (an hrtimer, registered with tokio's
//! reactor through `AsyncFd`: it fires within microseconds, not milliseconds) until a small
//! margin before the deadline, then spins the last stretch. The margin is calibrated from the
//! wake-ups seen so far (how late the timerfd's wake-ups reach this task), and capped at a
//! quarter of the quota's interval, so pacing never costs more than a quarter of a core.
//!
//! Without a timerfd (another OS, or one could not be created), the coarse part is a tokio
//! sleep until 2 ms before the deadline, and the last stretch is spun the same way.
//!
//! This module knows nothing of quotas or hosts: it waits until an instant, precisely.

use std::time::{Duration, Instant};

/// How late a tokio timer fires, at most, on an unloaded machine: a wait whose quota tolerates
/// less than this must be precise.
pub(super) const COARSE_LATENESS: Duration = Duration::from_millis(2);
/// The calibrated margin stays within these bounds.
const MIN_MARGIN: Duration = Duration::from_micros(5);
const MAX_MARGIN: Duration = Duration::from_millis(1);

/// Precise waits, with what they learned about the timer's lateness.
pub(super) struct PreciseTimer {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    lateness: Lateness,
}

impl PreciseTimer {
    pub(super) fn new() -> PreciseTimer {
        PreciseTimer {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            fd: timerfd::create()
                .inspect_err(|e| {
                    tracing::debug!("no timerfd ({e}): strict pacing spins the last 2 ms");
                })
                .ok(),
            lateness: Lateness::default(),
        }
    }

    /// Return at `deadline`, or within a microsecond or so after it. `interval` (the strict
    /// quota's) caps the spin: at most a quarter of it.
    pub(super) async fn wait_until(&mut self, deadline: Instant, interval: Duration) {
        let margin = self.lateness.margin().min(interval / 4).max(MIN_MARGIN);
        if let Some(wake_at) = deadline.checked_sub(margin)
            && wake_at > Instant::now()
        {
            self.sleep_until(wake_at).await;
        }
        // The last stretch: at most `margin` plus what the wake-up took beyond it.
        while Instant::now() < deadline {
            std::hint::spin_loop();
        }
    }

    /// Sleep until about `at`: within microseconds with a timerfd, within ~2 ms without.
    async fn sleep_until(&mut self, at: Instant) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Some(fd) = &self.fd {
            match timerfd::sleep_until(fd, at).await {
                Ok(()) => {
                    self.lateness
                        .record(Instant::now().saturating_duration_since(at));
                    return;
                }
                Err(e) => {
                    tracing::debug!("timerfd failed ({e}): strict pacing spins the last 2 ms");
                    self.fd = None;
                }
            }
        }
        // Without a timerfd: tokio's timer, early enough that it is not late; spinning the
        // rest costs up to COARSE_LATENESS of a core per start (yielding, so other tasks run).
        if let Some(early) = at.checked_sub(COARSE_LATENESS) {
            tokio::time::sleep_until(early.into()).await;
        }
        while Instant::now() < at {
            tokio::task::yield_now().await;
        }
    }
}

/// How late wake-ups come: a smoothed mean and mean deviation (the estimator TCP uses for its
/// round-trip time), so the margin is the mean plus four deviations.
struct Lateness {
    mean_ns: f64,
    dev_ns: f64,
}

impl Default for Lateness {
    fn default() -> Lateness {
        // A first guess for an idle machine; the first few wake-ups correct it.
        Lateness {
            mean_ns: 20_000.0,
            dev_ns: 10_000.0,
        }
    }
}

impl Lateness {
    fn record(&mut self, late: Duration) {
        // One wake-up that a descheduling made very late must not set the margin for the
        // next hundred: samples are counted up to the largest margin.
        let x = late.min(MAX_MARGIN).as_nanos() as f64;
        let err = x - self.mean_ns;
        self.mean_ns += err / 8.0;
        self.dev_ns += (err.abs() - self.dev_ns) / 4.0;
    }

    fn margin(&self) -> Duration {
        let ns = (self.mean_ns + 4.0 * self.dev_ns).max(0.0);
        Duration::from_nanos(ns as u64).clamp(MIN_MARGIN, MAX_MARGIN)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod timerfd {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::time::Instant;

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    pub(super) fn create() -> io::Result<AsyncFd<OwnedFd>> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // tokio 1.54 deprecates the safe constructor because an arbitrary `AsRawFd` may
        // return another descriptor, or a closed one, while registered (tokio#8587); its
        // unsafe replacement asks for exactly that guarantee, which an `OwnedFd` gives: it
        // owns one open descriptor until it is dropped with the `AsyncFd`. The library
        // forbids unsafe code, so it uses the safe constructor for the one type that is
        // sound with it.
        #[allow(deprecated)]
        AsyncFd::with_interest(fd, Interest::READABLE)
    }

    /// Arm the timer for `at` (relative to now: std's `Instant` does not expose its clock
    /// reading) and wait until it has expired.
    pub(super) async fn sleep_until(fd: &AsyncFd<OwnedFd>, at: Instant) -> io::Result<()> {
        let Some(after) = at
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(());
        };
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(after.subsec_nanos()),
        };
        // Re-arming resets the expiry count, so a wake-up left from a wait that was given up
        // reads as "not yet" below, not as this one.
        timerfd_settime(
            fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut guard = fd.readable().await?;
            let mut expirations = [0u8; 8];
            match guard.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut expirations[..]).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                // Not expired yet (the readiness was from an earlier arming; `try_io` has
                // cleared it): wait again.
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strict wait never returns before its deadline, and the margin learns from lateness.
    #[tokio::test]
    async fn never_early_and_calibrated() {
        let mut timer = PreciseTimer::new();
        for i in 0..20u64 {
            let deadline = Instant::now() + Duration::from_micros(300 + 50 * i);
            timer.wait_until(deadline, Duration::from_millis(1)).await;
            assert!(Instant::now() >= deadline);
        }
        let mut l = Lateness::default();
        for _ in 0..100 {
            l.record(Duration::from_micros(3));
        }
        assert!(l.margin() < Duration::from_micros(10), "{:?}", l.margin());
        for _ in 0..100 {
            l.record(Duration::from_secs(1));
        }
        assert_eq!(l.margin(), MAX_MARGIN);
    }
}
