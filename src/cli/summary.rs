//! The end-of-run summary: counts by status and error kind, latency percentiles, throughput.
//!
//! Memory is fixed whatever the run's length: latencies go into a log-scale histogram of
//! [`BUCKETS`] counters (each bucket 2% wider than the last, from 10 µs up), so a percentile is
//! exact to within 2%; statuses and error kinds are small maps (at most 900 statuses, a dozen
//! kinds), and a polling run keeps the counts of its last [`MAX_ROUNDS`] rounds. The summary watches records as they are written; it does not print or decide where
//! its text goes (that is the binary's `main`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Instant;

use serde::Serialize;

use fetchall::{Record, Skipped};

/// Latency buckets: bucket `i` holds latencies up to `MIN_MS * GROWTH^i` ms.
pub(crate) const BUCKETS: usize = 1200;
const MIN_MS: f64 = 0.01;
const GROWTH: f64 = 1.02;

/// A fixed-size latency histogram (ms).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    max: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0.0,
            max: 0.0,
        }
    }
}

impl Histogram {
    pub(crate) fn record(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let i = if ms <= MIN_MS {
            0
        } else {
            ((ms / MIN_MS).ln() / GROWTH.ln()).ceil() as usize
        };
        self.counts[i.min(BUCKETS - 1)] += 1;
        self.count += 1;
        self.sum += ms;
        self.max = self.max.max(ms);
    }

    /// The latency below which a fraction `q` of the recorded ones fall (the bucket's upper
    /// bound, never more than the largest seen); `None` when nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((MIN_MS * GROWTH.powi(i as i32)).min(self.max));
            }
        }
        Some(self.max)
    }
}

/// Rounds whose counts the summary keeps (the most recent ones): a run polling every second
/// for a day still has a summary of fixed size.
pub(crate) const MAX_ROUNDS: usize = 1000;

/// One polling round's counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct RoundCounts {
    /// The round, 0-based.
    pub round: u64,
    /// Records of the round (written or not: `--changed` writes only the changed ones).
    pub requests: u64,
    pub changed: u64,
    pub not_modified: u64,
    pub failed: u64,
}

/// Counts a run's records as they are written.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    started: Instant,
    records: u64,
    ok: u64,
    bytes: u64,
    by_status: BTreeMap<u16, u64>,
    by_error: BTreeMap<&'static str, u64>,
    latency: Histogram,
    rounds: VecDeque<RoundCounts>,
    /// With `--shard`: the run's skip counts, read when the report is made.
    shard_skips: Option<Skipped>,
}

impl Summary {
    /// Report the lines of other shards this run skips (`--shard`), from `skipped`.
    pub(crate) fn count_shard_skips(&mut self, skipped: Skipped) {
        self.shard_skips = Some(skipped);
    }

    pub(crate) fn new(started: Instant) -> Summary {
        Summary {
            started,
            records: 0,
            ok: 0,
            bytes: 0,
            by_status: BTreeMap::new(),
            by_error: BTreeMap::new(),
            latency: Histogram::default(),
            rounds: VecDeque::new(),
            shard_skips: None,
        }
    }

    pub(crate) fn observe(&mut self, record: &Record) {
        self.records += 1;
        self.ok += u64::from(record.ok);
        self.bytes += record.bytes.unwrap_or(0);
        if let Some(status) = record.status {
            *self.by_status.entry(status).or_default() += 1;
        }
        if let Some(e) = &record.error {
            *self.by_error.entry(e.kind.as_str()).or_default() += 1;
        }
        if let Some(ms) = record.elapsed_ms {
            self.latency.record(ms);
        }
        if let Some(round) = record.round {
            self.observe_round(round, record);
        }
    }

    fn observe_round(&mut self, round: u64, record: &Record) {
        // Rounds never overlap, so records arrive round after round.
        if self.rounds.back().is_none_or(|r| r.round != round) {
            if self.rounds.len() == MAX_ROUNDS {
                self.rounds.pop_front();
            }
            self.rounds.push_back(RoundCounts {
                round,
                ..RoundCounts::default()
            });
        }
        if let Some(r) = self.rounds.back_mut() {
            r.requests += 1;
            r.changed += u64::from(record.changed == Some(true));
            r.not_modified += u64::from(record.not_modified == Some(true));
            r.failed += u64::from(!record.ok);
        }
    }

    /// The summary as of now.
    pub(crate) fn report(&self) -> Report {
        let elapsed_s = self.started.elapsed().as_secs_f64();
        let h = &self.latency;
        let latency_ms = (h.count > 0).then(|| Latency {
            requests: h.count,
            p50: round(h.quantile(0.50).unwrap_or(0.0)),
            p95: round(h.quantile(0.95).unwrap_or(0.0)),
            p99: round(h.quantile(0.99).unwrap_or(0.0)),
            max: round(h.max),
            mean: round(h.sum / h.count as f64),
        });
        Report {
            records: self.records,
            ok: self.ok,
            failed: self.records - self.ok,
            elapsed_s: round(elapsed_s),
            records_per_s: round(if elapsed_s > 0.0 {
                self.records as f64 / elapsed_s
            } else {
                0.0
            }),
            bytes: self.bytes,
            by_status: self
                .by_status
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            by_error: self
                .by_error
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            latency_ms,
            rounds: self.rounds.iter().cloned().collect(),
            skipped_other_shards: self.shard_skips.as_ref().map(Skipped::other_shards),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The summary as written by `--summary FILE` (JSON) and on a terminal (its `Display`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Report {
    /// Records written (one per input line).
    pub records: u64,
    pub ok: u64,
    pub failed: u64,
    /// Seconds from the start of the run to this report.
    pub elapsed_s: f64,
    /// Records per second over the whole run.
    pub records_per_s: f64,
    /// Body bytes received in total (after decompression).
    pub bytes: u64,
    /// Responses by HTTP status ("200": count).
    pub by_status: BTreeMap<String, u64>,
    /// Failed records by error kind ("timeout": count).
    pub by_error: BTreeMap<String, u64>,
    /// Latency of the requests made (records with `elapsed_ms`); absent when none was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// When polling: each round's counts, oldest first (the last [`MAX_ROUNDS`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<RoundCounts>,
    /// With `--shard`: input lines left to other shards (no record here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_other_shards: Option<u64>,
}

/// Latency percentiles in milliseconds (from a histogram: within 2%).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Latency {
    pub requests: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fetchall: {} records in {:.2} s ({:.1}/s): {} ok, {} failed",
            self.records, self.elapsed_s, self.records_per_s, self.ok, self.failed
        )?;
        let list = |m: &BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} x{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.by_status.is_empty() {
            writeln!(f, "  status:  {}", list(&self.by_status))?;
        }
        if !self.by_error.is_empty() {
            writeln!(f, "  errors:  {}", list(&self.by_error))?;
        }
        if let Some(l) = &self.latency_ms {
            writeln!(
                f,
                "  latency: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50, l.p95, l.p99, l.max
            )?;
        }
        if let Some(n) = self.skipped_other_shards {
            writeln!(f, "  shard:   {n} lines of other shards skipped")?;
        }
        // On a terminal, the last rounds; --summary FILE has them all.
        const SHOWN: usize = 10;
        if self.rounds.len() > SHOWN {
            writeln!(
                f,
                "  rounds:  {} (the last {SHOWN} shown)",
                self.rounds.len()
            )?;
        }
        for r in self
            .rounds
            .iter()
            .skip(self.rounds.len().saturating_sub(SHOWN))
        {
            writeln!(
                f,
                "  round {}: {} requests, {} changed, {} not modified, {} failed",
                r.round, r.requests, r.changed, r.not_modified, r.failed
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_counted_apart_and_bounded() {
        let mut s = Summary::new(Instant::now());
        let record = |round: u64, ok: bool, changed: bool| {
            let mut r: Record = serde_json::from_value(serde_json::json!({
                "seq": 0, "line": 1, "url": "http://127.0.0.1/", "ok": ok,
                "round": round, "changed": changed, "not_modified": ok && !changed,
            }))
            .unwrap();
            r.status = Some(if ok { 304 } else { 500 });
            r
        };
        s.observe(&record(0, true, true));
        s.observe(&record(0, false, true));
        s.observe(&record(1, true, false));
        let report = s.report();
        assert_eq!(
            report.rounds,
            vec![
                RoundCounts {
                    round: 0,
                    requests: 2,
                    changed: 2,
                    not_modified: 0,
                    failed: 1
                },
                RoundCounts {
                    round: 1,
                    requests: 1,
                    changed: 0,
                    not_modified: 1,
                    failed: 0
                },
            ]
        );
        assert!(
            report
                .to_string()
                .contains("round 1: 1 requests, 0 changed, 1 not modified")
        );
        for round in 2..(MAX_ROUNDS as u64 + 10) {
            s.observe(&record(round, true, false));
        }
        assert_eq!(s.report().rounds.len(), MAX_ROUNDS);
    }

    #[test]
    fn percentiles_within_two_percent() {
        let mut h = Histogram::default();
        for ms in 1..=1000 {
            h.record(ms as f64);
        }
        for (q, want) in [(0.5, 500.0), (0.95, 950.0), (0.99, 990.0)] {
            let got = h.quantile(q).unwrap();
            assert!((got - want).abs() / want <= 0.021, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), Some(1000.0));
        h.record(f64::NAN);
        h.record(1e15);
        assert_eq!(h.counts.len(), BUCKETS);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
