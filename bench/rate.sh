#!/bin/sh
# Rate-limit accuracy: achieved mean rate, error vs target and the most arrivals in any 1 s
# window, for --rate 1, 10, 100, 1000 and 5000/s (and 1000, 5000/s with --burst 1 for
# comparison), against a loopback server. Writes docs/rate-arrivals.svg. About 45 s.
#   bench/rate.sh                       full run
#   RATE_BENCH_SCALE=0.3 bench/rate.sh  shorter runs, for a quick look
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin fetchall --example rate_bench
exec target/release/examples/rate_bench target/release/fetchall docs/rate-arrivals.svg
