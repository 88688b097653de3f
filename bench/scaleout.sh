#!/bin/sh
# Scale-out benchmark (docs/scale-out.md#measured): 4 shards sharing --rate 400/s through a
# local redis-server over 8,000 URLs on 40 hosts; 4 processes sharing --per-host-rate 50/s on
# one host; 2 processes sharing --rate 5000/s (leasing, Redis calls per request); Redis killed
# and restarted mid-run under each --limits-fallback; Lua GCRA calls/s (redis-benchmark).
# Needs redis-server, redis-cli, redis-benchmark (Debian: redis-server, redis-tools), python3.
#   bench/scaleout.sh           full sizes (about 60 s)
#   bench/scaleout.sh 0.25      a quarter of the lines, for a quick look
set -eu
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin fetchall
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
exec python3 bench/scaleout.py "$target_dir/release/fetchall" "${1:-1.0}"
