//! Which connections are kept for reuse: a request that is its host's last as far as anyone
//! can know is sent with `Connection: close`, so no idle connection outlives the work that
//! needed it (the connection pool has no way to close one host's idle connections later).
//!
//! A request is known to be its host's last when nothing else of its host waits in the gate
//! and the dispatcher has read as far as it can (the whole input, or the lookahead is full), and
//! no round follows. Before that, a request found alone may still be followed by a line not
//! read yet: its connection is kept, but only for a few such hosts at a time
//! ([`IDLE_HOSTS`]); past that, it closes too. Without this bound, the first requests of a
//! list of many hosts, which start while the input is still being read, each left an idle
//! connection open for the pool's idle timeout: 60 to 90 descriptors over `--concurrency` at
//! `-c 50` over 1,000 hosts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::limit::HostKey;

/// Hosts that may keep an idle connection while it is not yet known whether more of their
/// lines follow. Bounds the descriptors a run holds to `--concurrency` plus about this many.
pub(crate) const IDLE_HOSTS: usize = 16;

/// The hosts given the benefit of the doubt, each with when it was: an entry stands for at
/// most one idle connection, and lapses when the pool would have closed it anyway.
pub(crate) struct Reuse {
    hosts: Mutex<HashMap<HostKey, Instant>>,
    /// How long the connection pool keeps an idle connection.
    pool_idle: Duration,
}

impl Reuse {
    pub(crate) fn new(pool_idle: Duration) -> Reuse {
        Reuse {
            hosts: Mutex::new(HashMap::new()),
            pool_idle,
        }
    }

    /// Whether a request to `host` that may or may not be its host's last keeps its
    /// connection: yes for a host that already has a place, or while there is room for one.
    pub(crate) fn keep(&self, host: &HostKey, now: Instant) -> bool {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(since) = hosts.get_mut(host) {
            *since = now;
            return true;
        }
        if hosts.len() >= IDLE_HOSTS {
            let pool_idle = self.pool_idle;
            hosts.retain(|_, since| now.saturating_duration_since(*since) < pool_idle);
        }
        if hosts.len() >= IDLE_HOSTS {
            return false;
        }
        hosts.insert(host.clone(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: usize) -> HostKey {
        HostKey::of(&format!("http://h{i}.example/").parse().unwrap())
    }

    #[test]
    fn a_few_hosts_keep_their_connection_and_places_lapse_with_the_pool() {
        let reuse = Reuse::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..IDLE_HOSTS {
            assert!(reuse.keep(&host(i), t0));
        }
        assert!(!reuse.keep(&host(IDLE_HOSTS), t0), "over the bound");
        let t5 = t0 + Duration::from_secs(5);
        assert!(reuse.keep(&host(0), t5), "a host with a place keeps it");
        // The pool has closed the others' idle connections by now; host 0's is 5 s idle.
        let t10 = t0 + Duration::from_secs(10);
        for i in 1..IDLE_HOSTS {
            assert!(
                reuse.keep(&host(100 + i), t10),
                "places lapse with the pool"
            );
        }
        assert!(!reuse.keep(&host(200), t10), "host 0 still holds its place");
    }
}
