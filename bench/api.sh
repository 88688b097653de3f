#!/usr/bin/env bash
# API benchmark (issue 13): pacing from quota headers and pagination, against the loopback
# API server of examples/api_server.rs (the one the tests use).
#
# Quota: QUOTA requests per WINDOW s (default 50 per 10 s), N URLs (default 300), no --rate;
# for each header dialect, with quota headers read (default) and with --no-quota-headers.
# Reports the server's 429 count, the quota windows that accepted requests (at least
# ceil(N / QUOTA)), the run's time and its ratio to the quota's ideal (N / QUOTA x WINDOW),
# and fetchall's peak RSS.
# Pagination: LINES lines x PAGES pages (default 100 x 20) by Link header (--follow-next) and by
# JSON cursor (--next ... --next-param cursor): records, pages fetched, most fetches of one page
# (1 = each page exactly once), peak RSS.
#
#   bench/api.sh                                full run (about 9 minutes: 8 quota runs of ~60 s)
#   N=60 QUOTA=10 WINDOW=2 bench/api.sh          reduced scale
#   PARTS=quota bench/api.sh / PARTS=pages ...   one part only
#   DIALECTS="x-delta x-epoch" bench/api.sh      some dialects only
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-300} QUOTA=${QUOTA:-50} WINDOW=${WINDOW:-10}
LINES=${LINES:-100} PAGES=${PAGES:-20}
PARTS=${PARTS:-quota pages}
DIALECTS=${DIALECTS:-ietf triple x-delta x-epoch}
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c "import json,sys; print(json.load(sys.stdin)['target_directory'])")
cargo build --release --quiet --bin fetchall --example api_server
BIN=$TARGET/release/fetchall
SERVER=$TARGET/release/examples/api_server
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# start_server QUOTA WINDOW DIALECT: sets URL; the server runs until its stdin (fd 7) closes.
start_server() {
    # The previous server's output goes first: the new server's shell opens (and truncates)
    # server.out only once the FIFO has a writer, so the wait below could read the old URL
    # (a stopped server: every request of the run refused). That lost the x-delta and x-epoch
    # rows of a full run.
    rm -f "$TMP/in" "$TMP/server.out" && mkfifo "$TMP/in"
    "$SERVER" "$@" <"$TMP/in" >"$TMP/server.out" &
    SERVER_PID=$!
    exec 7>"$TMP/in"
    until [ -s "$TMP/server.out" ]; do sleep 0.05; done
    URL=$(head -n 1 "$TMP/server.out")
}
# stop_server: sets STATS (ok=.. too_many=.. windows=.. pages=.. max_fetches_per_page=..).
stop_server() {
    exec 7>&-
    wait "$SERVER_PID"
    STATS=$(tail -n 1 "$TMP/server.out")
}
stat() { echo "$STATS" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
# measure ARGS...: runs fetchall on $TMP/input; sets SECS, RSS_MB, RECORDS, OKS.
measure() {
    # Exit 1 (some records failed, e.g. 429s without pacing) is a result here, not an error.
    /usr/bin/time -f "%e %M" -o "$TMP/time" "$BIN" "$@" <"$TMP/input" >"$TMP/out" 2>"$TMP/err" || true
    # GNU time puts "Command exited with non-zero status N" first: the numbers are last.
    read -r SECS RSS_KB < <(tail -n 1 "$TMP/time")
    RSS_MB=$(awk "BEGIN{printf \"%.1f\", $RSS_KB/1024}")
    RECORDS=$(wc -l <"$TMP/out")
    OKS=$(grep -c '"ok":true' "$TMP/out" || true)
}

if [[ " $PARTS " == *" quota "* ]]; then
    IDEAL=$(awk "BEGIN{print $N / $QUOTA * $WINDOW}")
    echo "## Quota: $QUOTA requests per $WINDOW s window, $N URLs, no --rate (ideal ${IDEAL} s)"
    echo
    echo "| dialect | flags | 429s at server | windows used | time (s) | time / ideal | ok records | peak RSS (MB) |"
    echo "|---|---|---|---|---|---|---|---|"
    for dialect in $DIALECTS; do
        for flags in "" "--no-quota-headers"; do
            start_server "$QUOTA" "$WINDOW" "$dialect"
            for i in $(seq 0 $((N - 1))); do echo "$URL/q/$i"; done >"$TMP/input"
            # shellcheck disable=SC2086
            measure $flags
            stop_server
            ratio=$(awk "BEGIN{printf \"%.3f\", $SECS / $IDEAL}")
            echo "| $dialect | ${flags:-(default)} | $(stat too_many) | $(stat windows) | $SECS | $ratio | $OKS / $RECORDS | $RSS_MB |"
        done
    done
    echo
fi

if [[ " $PARTS " == *" pages "* ]]; then
    echo "## Pagination: $LINES lines x $PAGES pages"
    echo
    echo "| mode | flags | records | ok | pages fetched | most fetches of one page | time (s) | peak RSS (MB) |"
    echo "|---|---|---|---|---|---|---|---|"
    for mode in link cursor; do
        start_server 1000000 1 none
        if [ $mode = link ]; then
            for l in $(seq 0 $((LINES - 1))); do echo "$URL/pages/$l/0?n=$PAGES"; done >"$TMP/input"
            flags=(--follow-next --max-pages "$PAGES" --body none)
        else
            for l in $(seq 0 $((LINES - 1))); do echo "$URL/cursor/$l?n=$PAGES"; done >"$TMP/input"
            flags=(--next .next_cursor --next-param cursor --max-pages "$PAGES" --body none)
        fi
        measure "${flags[@]}"
        stop_server
        echo "| $mode | ${flags[*]} | $RECORDS | $OKS | $(stat pages) | $(stat max_fetches_per_page) | $SECS | $RSS_MB |"
    done
    echo
fi
