//! The Redis side of shared limits (`--limits`): one connection, two Lua scripts, and the task
//! that fetches leased cells for the gate (see `lease`).
//!
//! Every shared quota is GCRA in a Lua script that Redis runs atomically ([`GCRA`]), on
//! Redis's own clock (`TIME`), so processes on machines with skewed clocks agree. The script
//! is sent once and then run by its SHA1 (`EVALSHA`; redis-rs loads it again on `NOSCRIPT`,
//! after a Redis restart). A host pause is a key with a `PX` expiry that the scripts read.
//! The connection is redis-rs's `ConnectionManager` (it reconnects by itself); a failed round
//! trip is logged once, and the lease decides what the gate does meanwhile. This module does
//! not decide who starts: the gate does, over the cells this task leases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc::UnboundedReceiver;

use super::lease::{LeaseSpec, Reply, Request};
use crate::redact::{Redactor, bounded};
use crate::settings::{LimitsFallback, LimitsUrl};

/// GCRA over `n` cells at once, reserving cells that conform later. KEYS[1]: the quota's TAT
/// (µs, Redis time); KEYS[2]: the host's pause key (or an unused key). ARGV: interval µs (0:
/// no rate, only the pause), tolerance µs, cells wanted, whether to read the pause (1/0), how
/// far ahead cells may be reserved (µs). Cell k (from 0) conforms at `TAT + k*T - tau`; the
/// cells that conform within `ahead` of now are reserved (the TAT moves past them: standard
/// GCRA, a TAT in the future is a reservation). Returns {cells reserved, µs from now until
/// the first conforms (negative: already)}, or {0, µs until one could be reserved}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local ahead = tonumber(ARGV[5])
if ARGV[4] == '1' then
  local pause = redis.call('PTTL', KEYS[2])
  if pause > 0 then return {0, pause * 1000} end
end
if interval == 0 then return {want, 0} end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local first = tat - tau - now
if first > ahead then return {0, first - ahead} end
local granted = math.min(want, math.floor((ahead - first) / interval) + 1)
tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return {granted, first}
";

/// Extend a host's pause to ARGV[1] ms from now (never shorten one). KEYS[1]: the pause key.
const PAUSE: &str = r"
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then
  redis.call('SET', KEYS[1], '1', 'PX', ms)
end
return 1
";

/// How long one round trip may take before it counts as failed.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a (re)connection may take, TLS handshake included; a round trip that has to
/// reconnect first gets this on top of [`ROUND_TRIP_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the start-up check may take in all.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection and scripts of one run's shared limits.
pub(super) struct Redis {
    conn: ConnectionManager,
    gcra: redis::Script,
    pause: redis::Script,
    /// The URL as logs show it (password masked).
    shown: String,
    url: url::Url,
    fallback: LimitsFallback,
    /// Failing now: the first failure is logged, and the recovery.
    down: AtomicBool,
}

fn client(url: &LimitsUrl) -> Result<redis::Client, String> {
    redis::Client::open(url.url().as_str())
        .map_err(|e| mask_secrets(format!("--limits {url}: {e}"), url.url()))
}

/// Connect to the Redis of `--limits` and check that it runs scripts, within a few seconds:
/// a run that was asked to share its limits must not start without them.
pub(crate) async fn check(url: &LimitsUrl) -> Result<(), String> {
    let client = client(url)?;
    let checked = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        redis::Script::new(GCRA).load_async(&mut conn).await?;
        Ok::<(), redis::RedisError>(())
    })
    .await;
    let why = match checked {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
    };
    Err(mask_secrets(
        format!(
            "cannot use the Redis of --limits {url}: {}",
            bounded(&why, 300)
        ),
        url.url(),
    ))
}

impl Redis {
    /// A connection made on first use (the run checked Redis before it started: [`check`]).
    pub(super) fn new(url: &LimitsUrl, fallback: LimitsFallback) -> Result<Redis, String> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(ROUND_TRIP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client(url)?, config)
            .map_err(|e| mask_secrets(format!("--limits {url}: {e}"), url.url()))?;
        Ok(Redis {
            conn,
            gcra: redis::Script::new(GCRA),
            pause: redis::Script::new(PAUSE),
            shown: url.to_string(),
            url: url.url().clone(),
            fallback,
            down: AtomicBool::new(false),
        })
    }

    /// Ask for `spec.batch` cells.
    async fn cells(&self, spec: &LeaseSpec) -> Result<Reply, redis::RedisError> {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let pause_key = spec.pause_key.as_deref();
        let (granted, micros_to): (u32, i64) = self
            .gcra
            .key(&spec.key)
            .key(pause_key.unwrap_or(&spec.key))
            .arg(spec.interval_micros())
            .arg(micros(spec.tolerance))
            .arg(spec.batch)
            .arg(u8::from(pause_key.is_some()))
            .arg(micros(spec.ahead))
            .invoke_async(&mut conn)
            .await?;
        Ok(if granted > 0 {
            Reply::Granted {
                cells: granted,
                first: micros_to,
            }
        } else {
            let wait = u64::try_from(micros_to).unwrap_or(0);
            Reply::Denied {
                wait: Duration::from_micros(wait),
            }
        })
    }

    async fn pause(&self, key: &str, until: Instant) -> Result<(), redis::RedisError> {
        let ms = until.saturating_duration_since(Instant::now()).as_millis();
        if ms == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        self.pause
            .key(key)
            .arg(u64::try_from(ms).unwrap_or(u64::MAX))
            .invoke_async::<()>(&mut conn)
            .await
    }

    /// Note how a round trip went: the first failure and the recovery are logged, once each.
    fn note(&self, result: Result<(), &redis::RedisError>) {
        match result {
            Ok(()) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        "--limits {}: Redis answers again; limits are shared again",
                        self.shown
                    );
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    let meanwhile = match self.fallback {
                        LimitsFallback::Wait => {
                            "waiting for it (--limits-fallback wait): requests under shared limits do not start"
                        }
                        LimitsFallback::Local => {
                            "going on under local limits divided by --limits-share (--limits-fallback local)"
                        }
                    };
                    let why = mask_secrets(bounded(&e.to_string(), 300).into_owned(), &self.url);
                    tracing::warn!("--limits {}: lost Redis ({why}); {meanwhile}", self.shown);
                }
            }
        }
    }
}

/// The task that serves the gate's leases: each request runs as a task of its own (the
/// connection multiplexes them), and its reply goes to `apply`, which puts it in the lease
/// under the gate's lock. Ends when the gate is gone (every sender with it).
pub(super) async fn serve<S: Send + Sync + 'static>(
    redis: Redis,
    mut requests: UnboundedReceiver<Request>,
    gate: Weak<S>,
    apply: fn(&S, super::lease::LeaseId, Instant, Reply),
) {
    let redis = Arc::new(redis);
    while let Some(request) = requests.recv().await {
        let redis = Arc::clone(&redis);
        let gate = gate.clone();
        tokio::spawn(async move {
            match request {
                Request::Cells { id, spec, sent } => {
                    let limit = ROUND_TRIP_TIMEOUT + CONNECT_TIMEOUT;
                    let result = tokio::time::timeout(limit, redis.cells(&spec)).await;
                    let reply = match result {
                        Ok(Ok(reply)) => {
                            redis.note(Ok(()));
                            reply
                        }
                        Ok(Err(e)) => {
                            redis.note(Err(&e));
                            Reply::Failed
                        }
                        Err(_) => {
                            let e = redis::RedisError::from(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "no answer in time",
                            ));
                            redis.note(Err(&e));
                            Reply::Failed
                        }
                    };
                    if let Some(gate) = gate.upgrade() {
                        apply(&gate, id, sent, reply);
                    }
                }
                Request::Pause { key, until } => {
                    // A pause that cannot be shared still holds in this process.
                    let result =
                        tokio::time::timeout(ROUND_TRIP_TIMEOUT, redis.pause(&key, until)).await;
                    if let Ok(Err(e)) = &result {
                        redis.note(Err(e));
                    }
                }
            }
        });
    }
}

/// `message` with the Redis URL's password masked wherever it appears (as written and
/// percent-decoded): a driver's error may quote the URL.
fn mask_secrets(message: String, url: &url::Url) -> String {
    Redactor::default().message(message, &[url])
}
