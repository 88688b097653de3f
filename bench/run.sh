#!/usr/bin/env bash
# fetchall benchmark harness (issue 5). See docs/performance.md.
#
#   bash bench/run.sh            # from the crate root, or from anywhere
#
# What it does, all against 127.0.0.1 only:
#   1. installs nginx, curl, GNU time and python3 with apt-get if missing
#   2. builds fetchall (cargo build --release --locked) unless FETCHALL_BIN is set
#   3. starts its own nginx (temp dir, free port, 1 worker, access_log off,
#      keepalive_requests 100000) answering every path with {"ok":true,"n":1}
#   4. throughput: THROUGHPUT_URLS distinct URLs, fetchall and each peer
#      alternately, RUNS runs each, concurrency CONCURRENCY
#   5. single-URL latency: process start to exit, LATENCY_RUNS runs each
#   6. memory series: fetchall at each of SIZES URLs (peers up to PEERS_MEM_MAX)
#   7. the series of issue 15 (docs/performance.md), each in SERIES:
#      tls    HTTPS to TLS_HOSTS host names h1.localhost .. hN.localhost (one handshake
#             each), -c CONCURRENCY, with a throwaway CA the bench makes (openssl); fetchall
#             --cacert CA and curl --cacert CA, alternately, TLS_RUNS runs each
#      slow   nginx answers after 100 ms (echo_sleep): SLOW_URLS_PER_CONN x c URLs at each c of
#             SLOW_CONCURRENCY (bound: URLs x 0.1 s / c); curl joins at c <= 300 (its cap)
#      rate   bench/rate.sh's rate series (default burst and --burst 1, 1/s to 5000/s)
#      hosts  HOSTS_N distinct hosts (http://hN.invalid/x, each fails locally) with
#             --per-host-rate 1/s -c 200: peak RSS
#      every run of these records the most open file descriptors (sampled every 2 ms)
#   8. prints median tables and writes them to bench/results/latest.md
#      (raw per-run records: bench/results/latest-runs.jsonl)
# Every run is checked: exit status 0, one output line per URL, every line a 200.
# The script exits 1 if any check failed.
#
# Options (environment variables):
#   RUNS=9                 throughput runs per tool
#   CONCURRENCY=50         max in flight (fetchall -c, curl --parallel-max, aiohttp semaphore)
#   THROUGHPUT_URLS=20000  URLs in the throughput list
#   SIZES="10000 100000 1000000"   memory series sizes
#   SKIP_1M=0              1 = drop 1000000 from SIZES
#   MEM_RUNS=1             runs per tool and size in the memory series
#   PEERS=curl             peers to compare with: "curl", "curl aiohttp", or "" (none)
#   PEERS_MEM_MAX=100000   peers join the memory series only up to this size
#                          (curl at 1M takes ~1 min and ~140 MB; set 1000000 to include it)
#   LATENCY_RUNS=20        single-URL runs per tool
#   PEERS_ONLY=0           1 = don't build or run fetchall (test the harness itself)
#   FETCHALL_BIN=          use this binary and skip the build
#   FETCHALL_ARGS="-q"     extra fetchall arguments (after FILE -c N); full records, body included
#   FETCHALL_OK='"status":200'       substring every fetchall output line must contain
#   NGINX_WORKERS=1        nginx worker_processes (1 leaves the other core to the client)
#   RESULTS_DIR=bench/results        where latest.md / latest-runs.jsonl go
#   AIOHTTP_VENV=target/bench-venv   venv for the aiohttp peer (created with pip if missing)
#   NO_INSTALL=0           1 = never call apt-get
#   KEEP_TMP=0             1 = keep the temp dir (nginx conf, URL lists, outputs)
#   WAIT_IDLE=0            wait up to this many seconds for other CPU use to stop first
#   SERIES="throughput latency memory tls slow rate hosts"   which series to run
#   TLS_HOSTS=1000 TLS_RUNS=5        the HTTPS many-host series
#   SLOW_CONCURRENCY="1000 5000" SLOW_URLS_PER_CONN=20 SLOW_RUNS=3   the slow-server series
#   HOSTS_N=1000000 HOSTS_RUNS=1     the many-host memory run
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
HARNESS="$HERE/harness.py"

RUNS=${RUNS:-9}
CONCURRENCY=${CONCURRENCY:-50}
THROUGHPUT_URLS=${THROUGHPUT_URLS:-20000}
SIZES=${SIZES:-"10000 100000 1000000"}
SKIP_1M=${SKIP_1M:-0}
MEM_RUNS=${MEM_RUNS:-1}
PEERS=${PEERS-curl}
PEERS_MEM_MAX=${PEERS_MEM_MAX:-100000}
LATENCY_RUNS=${LATENCY_RUNS:-20}
PEERS_ONLY=${PEERS_ONLY:-0}
FETCHALL_BIN=${FETCHALL_BIN:-}
FETCHALL_ARGS=${FETCHALL_ARGS:--q}
FETCHALL_OK=${FETCHALL_OK:-'"status":200'}
NGINX_WORKERS=${NGINX_WORKERS:-1}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
AIOHTTP_VENV=${AIOHTTP_VENV:-$ROOT/target/bench-venv}
NO_INSTALL=${NO_INSTALL:-0}
KEEP_TMP=${KEEP_TMP:-0}
WAIT_IDLE=${WAIT_IDLE:-0}
SERIES=${SERIES:-"throughput latency memory tls slow rate hosts"}
TLS_HOSTS=${TLS_HOSTS:-1000}
TLS_RUNS=${TLS_RUNS:-5}
SLOW_CONCURRENCY=${SLOW_CONCURRENCY:-"1000 5000"}
SLOW_URLS_PER_CONN=${SLOW_URLS_PER_CONN:-20}
SLOW_RUNS=${SLOW_RUNS:-3}
HOSTS_N=${HOSTS_N:-1000000}
HOSTS_RUNS=${HOSTS_RUNS:-1}
has() { [[ " $SERIES " == *" $1 "* ]]; }

log() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '\n*** NOTE: %s\n\n' "$*" >&2; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=0
apt_install() {
  [ "$NO_INSTALL" = 1 ] && die "missing packages: $* (NO_INSTALL=1 is set)"
  command -v apt-get >/dev/null || die "missing packages: $* (no apt-get; install them by hand)"
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  # On a host with systemd this also starts the distro nginx service on port 80;
  # the benchmark does not use it.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ------------------------------------------------------------------ tools
find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
missing=()
[ -n "$(find_nginx)" ] || missing+=(nginx)   # Debian: "nginx" (nginx-light only adds the echo module)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/time ] || missing+=(time)      # GNU time: user/sys CPU and peak RSS
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)   # the tls series' throwaway CA
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
NGINX=$(find_nginx)

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ fetchall
RUN_FETCHALL=1
BUILT=0
if [ "$PEERS_ONLY" = 1 ]; then
  RUN_FETCHALL=0
  note "PEERS_ONLY=1: fetchall is neither built nor run; only peers are measured."
elif [ -z "$FETCHALL_BIN" ]; then
  BUILT=1
  command -v cargo >/dev/null || die "cargo not found: install Rust, or set FETCHALL_BIN=/path/to/fetchall, or PEERS_ONLY=1"
  log "cargo build --release --locked (in $ROOT)"
  (cd "$ROOT" && cargo build --release --locked --bin fetchall --example rate_bench) \
    || die "cargo build failed; fix the crate, or run with PEERS_ONLY=1 to measure the peers only"
  FETCHALL_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/fetchall"
fi
if [ "$RUN_FETCHALL" = 1 ] && [ ! -x "$FETCHALL_BIN" ]; then
  RUN_FETCHALL=0
  note "fetchall binary not found at '$FETCHALL_BIN': skipping fetchall, measuring peers only."
fi
read -r -a FETCHALL_ARGV <<< "$FETCHALL_ARGS"

TOOLS=()
[ "$RUN_FETCHALL" = 1 ] && TOOLS+=(fetchall)
for p in $PEERS; do
  case $p in
    curl|aiohttp) TOOLS+=("$p") ;;
    *) die "unknown peer '$p' (known: curl aiohttp)" ;;
  esac
done
[ ${#TOOLS[@]} -gt 0 ] || die "nothing to run (no fetchall and PEERS is empty)"

if [[ " ${TOOLS[*]} " == *" aiohttp "* ]]; then
  if ! "$AIOHTTP_VENV/bin/python" -c 'import aiohttp' 2>/dev/null; then
    log "creating venv with aiohttp in $AIOHTTP_VENV"
    mkdir -p "$(dirname "$AIOHTTP_VENV")"
    python3 -m venv "$AIOHTTP_VENV" 2>/dev/null || { apt_install python3-venv; rm -rf "$AIOHTTP_VENV"; python3 -m venv "$AIOHTTP_VENV"; }
    "$AIOHTTP_VENV/bin/pip" install -q --disable-pip-version-check aiohttp
  fi
fi

# ------------------------------------------------------------------ nginx
TMP=$(mktemp -d "${TMPDIR:-/tmp}/fetchall-bench.XXXXXX")
NGINX_PID=""
cleanup() {
  if [ -n "$NGINX_PID" ]; then
    kill "$NGINX_PID" 2>/dev/null || true
    wait "$NGINX_PID" 2>/dev/null || true
  fi
  if [ "$KEEP_TMP" = 1 ]; then echo "kept temp dir: $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BODY='{"ok":true,"n":1}'
NGINX_CONNS=$(( $(ulimit -n) - 64 ))     # stay under the fd limit (nginx warns otherwise)
[ "$NGINX_CONNS" -le 8192 ] || NGINX_CONNS=8192
# The listen queue: nginx's default backlog is 511, so the slow series' thousands of
# simultaneous connects (fetchall's and curl's alike) overflowed it and waited for SYN
# retransmits (1 s, then 3 s, 7 s, ...). The kernel caps it at net.core.somaxconn.
NGINX_BACKLOG=$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 4096)
[ "$NGINX_BACKLOG" -le 65535 ] || NGINX_BACKLOG=65535
NGX="$TMP/nginx"
mkdir -p "$NGX"
# The tls series: a throwaway CA, and one certificate for h1.localhost .. hN.localhost signed
# by it (P-256; *.localhost names resolve to loopback in fetchall and curl alike).
TLS_DIR="$TMP/tls"
mkdir -p "$TLS_DIR"
make_tls() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" -subj "/CN=fetchall bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/leaf.key" -out "$TLS_DIR/leaf.csr" -subj "/CN=h1.localhost" 2>/dev/null
  python3 -c "import sys; n=int(sys.argv[1]); print('subjectAltName=' + ','.join(f'DNS:h{i}.localhost' for i in range(1, n + 1)))" "$TLS_HOSTS" > "$TLS_DIR/ext.cnf"
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >> "$TLS_DIR/ext.cnf"
  openssl x509 -req -in "$TLS_DIR/leaf.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -days 2 -extfile "$TLS_DIR/ext.cnf" -out "$TLS_DIR/leaf.pem" 2>/dev/null
}
make_tls || die "openssl could not make the throwaway CA and certificate"
# The slow series needs nginx's echo module (echo_sleep): Debian's libnginx-mod-http-echo.
ECHO_MODULE=""
for m in /usr/lib/nginx/modules/ngx_http_echo_module.so /usr/share/nginx/modules/ngx_http_echo_module.so; do
  [ -f "$m" ] && ECHO_MODULE=$m && break
done
if [ -z "$ECHO_MODULE" ] && has slow; then
  apt_install libnginx-mod-http-echo || true
  [ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ] && ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
fi
[ -n "$ECHO_MODULE" ] || { has slow && note "no nginx echo module: skipping the slow series"; SERIES=${SERIES/slow/}; }

start_nginx() {
  local port=$1 tls_port=$2 load="" slow=""
  if [ -n "$ECHO_MODULE" ]; then
    load="load_module $ECHO_MODULE;"
    slow="location /slow/ { echo_sleep 0.1; echo -n '$BODY'; }"
  fi
  cat > "$NGX/nginx.conf" <<EOF
$load
worker_processes $NGINX_WORKERS;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections $NGINX_CONNS; }
http {
    access_log off;
    client_body_temp_path $NGX/client_body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$port backlog=$NGINX_BACKLOG;
        default_type application/json;
        location / { return 200 '$BODY'; }
        $slow
    }
    server {
        listen 127.0.0.1:$tls_port ssl backlog=$NGINX_BACKLOG;
        ssl_certificate $TLS_DIR/leaf.pem;
        ssl_certificate_key $TLS_DIR/leaf.key;
        default_type application/json;
        location / { return 200 '$BODY'; }
    }
}
EOF
  local eflag=()
  "$NGINX" -h 2>&1 | grep -q -- '-e filename' && eflag=(-e "$NGX/error.log")
  "$NGINX" -p "$NGX" "${eflag[@]}" -c "$NGX/nginx.conf" -g 'daemon off;' &
  NGINX_PID=$!
  local i
  for i in $(seq 1 50); do
    kill -0 "$NGINX_PID" 2>/dev/null || { wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=""; return 1; }
    if [ "$(curl -s --max-time 1 "http://127.0.0.1:$port/item/0" 2>/dev/null || true)" = "$BODY" ]; then
      return 0
    fi
    sleep 0.1
  done
  kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=""
  return 1
}
PORT=""
for attempt in 1 2 3 4 5; do
  p=$(python3 "$HARNESS" freeport)
  tp=$(python3 "$HARNESS" freeport)
  if [ "$tp" != "$p" ] && start_nginx "$p" "$tp"; then PORT=$p; TLS_PORT=$tp; break; fi
  echo "nginx did not come up on port $p (attempt $attempt)" >&2
  tail -5 "$NGX/error.log" >&2 2>/dev/null || true
done
[ -n "$PORT" ] || die "could not start nginx"
BASE="http://127.0.0.1:$PORT"
log "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') (pid $NGINX_PID) serving $BODY on $BASE"

# ------------------------------------------------------------------ helpers
RESULTS="$TMP/runs.jsonl"
: > "$RESULTS"
OUT="$TMP/out"
mkdir -p "$OUT"

gen_urls() { # n [with-curl-config]
  local n=$1 cfg=()
  [ "${2:-}" = curl ] && cfg=(--curl-config "$TMP/curl-$n.cfg")
  [ -s "$TMP/urls-$n.txt" ] && { [ ${#cfg[@]} -eq 0 ] || [ -s "$TMP/curl-$n.cfg" ]; } && return 0
  python3 "$HARNESS" genurls --base "$BASE" --n "$n" --out "$TMP/urls-$n.txt" "${cfg[@]}"
}

# Sets CMD (array) and OK (substring every output line must contain).
bulk_cmd() { # tool n
  local tool=$1 n=$2
  case $tool in
    fetchall) CMD=("$FETCHALL_BIN" "$TMP/urls-$n.txt" -c "$CONCURRENCY" "${FETCHALL_ARGV[@]}"); OK=$FETCHALL_OK ;;
    curl) CMD=(curl --parallel --parallel-max "$CONCURRENCY" -s --no-progress-meter
                -w '%{json}\n' --config "$TMP/curl-$n.cfg"); OK='"http_code":200' ;;
    aiohttp) CMD=("$AIOHTTP_VENV/bin/python" "$HERE/peers/aiohttp_fetch.py" "$TMP/urls-$n.txt"
                  -c "$CONCURRENCY" --body auto -q); OK='"status":200' ;;
  esac
}
single_cmd() { # tool
  case $1 in
    fetchall) CMD=("$FETCHALL_BIN" "$TMP/urls-1.txt" "${FETCHALL_ARGV[@]}"); OK=$FETCHALL_OK ;;
    curl) CMD=(curl -s "$BASE/item/1"); OK='"ok":true' ;;
    aiohttp) CMD=("$AIOHTTP_VENV/bin/python" "$HERE/peers/aiohttp_fetch.py" "$TMP/urls-1.txt" -q); OK='"status":200' ;;
  esac
}

# nginx worker pids: their CPU use during each run is recorded (nginx CPU % column).
NGINX_WORKER_PIDS=$(awk -v p="$NGINX_PID" '$2 == "(nginx)" && $4 == p { print $1 }' /proc/[0-9]*/stat 2>/dev/null | paste -sd, -)
[ -n "$NGINX_WORKER_PIDS" ] || note "could not find the nginx worker pids; the nginx CPU % column will be empty"

measure() { # results phase tool n run stdout [extra measure flags...] -- (uses CMD, OK)
  local results=$1 phase=$2 tool=$3 n=$4 run=$5 stdout=$6
  shift 6
  python3 "$HARNESS" measure --results "$results" --phase "$phase" --tool "$tool" --n "$n" \
    --run "$run" --concurrency "$CONCURRENCY" --stdout "$stdout" --ok "$OK" \
    --server-pids "$NGINX_WORKER_PIDS" "$@" -- "${CMD[@]}"
}

if [ "$WAIT_IDLE" -gt 0 ]; then
  log "waiting up to ${WAIT_IDLE}s for the CPU to be idle (under 10% busy over 5 s)"
  waited=0
  while [ "$waited" -lt "$WAIT_IDLE" ]; do
    [ "$(python3 "$HARNESS" cpubusy --seconds 5)" -lt 10 ] && break
    waited=$((waited + 5))
  done
fi
BUSY_START=$(python3 "$HARNESS" cpubusy --seconds 1)   # % of all cores, nginx idle
if [ "$BUSY_START" -gt 10 ]; then
  note "the machine is ${BUSY_START}% busy before starting (other processes): results will be noisy"
fi

# ------------------------------------------------------------------ throughput
N=$THROUGHPUT_URLS
if has throughput; then
gen_urls "$N" curl
log "warm-up: one unrecorded run per tool ($N URLs)"
for tool in "${TOOLS[@]}"; do
  bulk_cmd "$tool" "$N"
  measure "$TMP/warmup.jsonl" warmup "$tool" "$N" 0 "$OUT/warmup-$tool.out" --delete-stdout
done

log "throughput: $N URLs, concurrency $CONCURRENCY, $RUNS runs per tool, alternating"
for run in $(seq 1 "$RUNS"); do
  for tool in "${TOOLS[@]}"; do
    bulk_cmd "$tool" "$N"
    measure "$RESULTS" throughput "$tool" "$N" "$run" "$OUT/throughput-$tool-$run.out"
  done
done
fi

# ------------------------------------------------------------------ latency
if has latency; then
log "single-URL latency: $LATENCY_RUNS runs per tool, alternating (wall time only)"
gen_urls 1
for run in $(seq 1 "$LATENCY_RUNS"); do
  for tool in "${TOOLS[@]}"; do
    single_cmd "$tool"
    measure "$RESULTS" latency "$tool" 1 "$run" "$OUT/latency-$tool.out" --no-rusage
  done
done
fi

# ------------------------------------------------------------------ memory series
sizes=()
has memory || SIZES=""
for n in $SIZES; do
  [ "$SKIP_1M" = 1 ] && [ "$n" -ge 1000000 ] && continue
  sizes+=("$n")
done
log "memory series: sizes ${sizes[*]:-none}, $MEM_RUNS run(s) each; peers up to $PEERS_MEM_MAX URLs"
for n in "${sizes[@]}"; do
  mem_tools=()
  for tool in "${TOOLS[@]}"; do
    if [ "$tool" = fetchall ] || [ "$n" -le "$PEERS_MEM_MAX" ]; then mem_tools+=("$tool"); fi
  done
  if [[ " ${mem_tools[*]} " == *" curl "* ]]; then gen_urls "$n" curl; else gen_urls "$n"; fi
  for run in $(seq 1 "$MEM_RUNS"); do
    for tool in "${mem_tools[@]}"; do
      bulk_cmd "$tool" "$n"
      measure "$RESULTS" memory "$tool" "$n" "$run" "$OUT/memory-$tool-$n.out" --delete-stdout
    done
  done
  [ "$n" = "$N" ] || rm -f "$TMP/urls-$n.txt" "$TMP/curl-$n.cfg"
done


# ------------------------------------------------------------------ issue 15 series
# The kernel's count of connections dropped because a listen queue was full (TcpExt
# ListenOverflows, all sockets of this network namespace): logged after each series, since a
# drop costs a SYN retransmit (1 s or more) that no client can make up.
listen_overflows() {
  awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["ListenOverflows"] }' /proc/net/netstat 2>/dev/null || echo 0
}
# Runs a list of URLs with fetchall and curl (curl only if given), alternately.
# series_run PHASE N URLFILE CURLCFG CONC RUNS BOUND [fetchall args...]
series_run() {
  local phase=$1 n=$2 urls=$3 cfg=$4 conc=$5 runs=$6 bound=$7
  shift 7
  local extra=("$@") run tool bflag=(--expect-rc "$EXPECT_RC") overflows
  overflows=$(listen_overflows)
  [ -n "$bound" ] && bflag+=(--bound-s "$bound")
  for run in $(seq 1 "$runs"); do
    for tool in "${TOOLS[@]}"; do
      case $tool in
        fetchall) CMD=("$FETCHALL_BIN" "$urls" -c "$conc" "${FETCHALL_ARGV[@]}" "${extra[@]}"); OK=$FETCHALL_OK ;;
        curl) [ -n "$cfg" ] || continue
              CMD=(curl --parallel --parallel-max "$conc" -s --no-progress-meter -w '%{json}\n'
                   "${CURL_EXTRA[@]}" --config "$cfg"); OK='"http_code":200' ;;
        *) continue ;;
      esac
      python3 "$HARNESS" measure --results "$RESULTS" --phase "$phase" --tool "$tool" --n "$n" \
        --run "$run" --concurrency "$conc" --stdout "$OUT/$phase-$tool.out" --ok "$OK" \
        --server-pids "$NGINX_WORKER_PIDS" --sample-fds --delete-stdout "${bflag[@]}" -- "${CMD[@]}"
    done
  done
  overflows=$(( $(listen_overflows) - overflows ))
  log "$phase: $overflows connection(s) dropped by a full listen queue (TcpExt ListenOverflows)"
}
CURL_EXTRA=()
EXPECT_RC=0
series_titles=()

if has tls && [ "$RUN_FETCHALL" = 1 ]; then
  n=$TLS_HOSTS
  log "tls: HTTPS to $n host names (h1.localhost .. h$n.localhost), -c $CONCURRENCY, $TLS_RUNS runs per tool"
  python3 -c "
import sys
n, port, out, cfg = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(out, 'w') as f, open(cfg, 'w') as c:
    for i in range(1, n + 1):
        u = f'https://h{i}.localhost:{port}/item/{i}'
        f.write(u + '\n')
        c.write(f'url = \"{u}\"\noutput = \"/dev/null\"\n')
" "$n" "$TLS_PORT" "$TMP/tls-urls.txt" "$TMP/tls-curl.cfg"
  CURL_EXTRA=(--cacert "$TLS_DIR/ca.pem")
  series_run tls "$n" "$TMP/tls-urls.txt" "$TMP/tls-curl.cfg" "$CONCURRENCY" "$TLS_RUNS" "" --cacert "$TLS_DIR/ca.pem"
  CURL_EXTRA=()
  series_titles+=(--meta "title:tls=HTTPS, $n host names (a handshake each), concurrency $CONCURRENCY; both tools given the bench CA with --cacert")
fi

if has slow && [ "$RUN_FETCHALL" = 1 ]; then
  for c in $SLOW_CONCURRENCY; do
    n=$((c * SLOW_URLS_PER_CONN))
    bound=$(python3 -c "print($n * 0.1 / $c)")
    log "slow: $n URLs answered after 100 ms, -c $c (bound ${bound} s), $SLOW_RUNS runs"
    python3 -c "
import sys
n, base, out, cfg = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(out, 'w') as f, open(cfg, 'w') as c:
    for i in range(1, n + 1):
        u = f'{base}/slow/{i}'
        f.write(u + '\n')
        c.write(f'url = \"{u}\"\noutput = \"/dev/null\"\n')
" "$n" "$BASE" "$TMP/slow-urls.txt" "$TMP/slow-curl.cfg"
    cfg="$TMP/slow-curl.cfg"
    # curl caps --parallel-max at 300, so it joins only where that is the same concurrency...
    # and at 1000 as the reference the issue quotes (its own 300 then bounds it).
    [ "$c" -le 1000 ] || cfg=""
    series_run "slow-$c" "$n" "$TMP/slow-urls.txt" "$cfg" "$c" "$SLOW_RUNS" "$bound"
    series_titles+=(--meta "title:slow-$c=Slow server: $n URLs, each answered after 100 ms, concurrency $c (bound $bound s; curl caps its parallelism at 300)")
  done
fi

if has hosts && [ "$RUN_FETCHALL" = 1 ]; then
  log "hosts: $HOSTS_N distinct hosts with --per-host-rate 1/s, -c 200"
  seq 1 "$HOSTS_N" | sed 's|.*|http://h&.invalid/x|' > "$TMP/hosts.txt"
  TOOLS_SAVED=("${TOOLS[@]}")
  TOOLS=(fetchall)
  OK_SAVED=$FETCHALL_OK
  FETCHALL_OK='"kind":"dns"'
  EXPECT_RC=1   # fetchall's status when some requests failed (all of them do here)
  series_run hosts "$HOSTS_N" "$TMP/hosts.txt" "" 200 "$HOSTS_RUNS" "" --per-host-rate 1/s
  FETCHALL_OK=$OK_SAVED
  EXPECT_RC=0
  TOOLS=("${TOOLS_SAVED[@]}")
  rm -f "$TMP/hosts.txt"
  series_titles+=(--meta "title:hosts=$HOSTS_N distinct hosts (http://hN.invalid/x, each fails locally), --per-host-rate 1/s")
fi

RATE_MD=()
if has rate && [ "$RUN_FETCHALL" = 1 ]; then
  RATE_BIN="$(dirname "$FETCHALL_BIN")/examples/rate_bench"
  if [ -x "$RATE_BIN" ]; then
    log "rate: $RATE_BIN (default burst and --burst 1, 1/s to 5000/s; about 75 s)"
    { echo "## Rate accuracy (bench/rate.sh's series, examples/rate_bench.rs)"; echo
      "$RATE_BIN" "$FETCHALL_BIN" "$TMP/rate-arrivals.svg"; } > "$TMP/rate.md" \
      || note "the rate series failed"
    RATE_MD=(--append-md "$TMP/rate.md")
  else
    note "no $RATE_BIN (cargo build --release --example rate_bench): skipping the rate series"
  fi
fi

# ------------------------------------------------------------------ report
kill -0 "$NGINX_PID" 2>/dev/null || note "nginx died during the benchmark; results are suspect"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
if [ "$BUILT" = 1 ]; then
  fa_src="built from git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  [ -z "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] || fa_src="$fa_src (uncommitted changes)"
else
  fa_src="prebuilt FETCHALL_BIN"
fi
fa_ver=$("$FETCHALL_BIN" --version 2>/dev/null | head -1 || true)
meta=(
  --meta "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  --meta "machine=$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), ${cpu_model:-unknown CPU}, Linux $(uname -r)"
  --meta "server=nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), worker_processes $NGINX_WORKERS, 127.0.0.1, body ${#BODY} B"
  --meta "other CPU load=${BUSY_START}% of all cores in the 1 s before the runs"
  --meta "curl=$(curl -V | head -1 | cut -d' ' -f1-2)"
)
if [ "$RUN_FETCHALL" = 1 ]; then
  meta+=(--meta "fetchall=${fa_ver:-?} at $FETCHALL_BIN ($fa_src), args: -c $CONCURRENCY $FETCHALL_ARGS")
else
  meta+=(--meta "fetchall=not run")
fi
[[ " ${TOOLS[*]} " == *" aiohttp "* ]] && meta+=(--meta "aiohttp=$("$AIOHTTP_VENV/bin/python" -c 'import sys, aiohttp; print(aiohttp.__version__, "on Python", sys.version.split()[0])')")
meta+=(--meta "parameters=RUNS=$RUNS CONCURRENCY=$CONCURRENCY THROUGHPUT_URLS=$N LATENCY_RUNS=$LATENCY_RUNS MEM_RUNS=$MEM_RUNS SIZES=${sizes[*]:-none}")

mkdir -p "$RESULTS_DIR"
cp "$RESULTS" "$RESULTS_DIR/latest-runs.jsonl"
log "results (also in $RESULTS_DIR/latest.md)"
status=0
python3 "$HARNESS" report --results "$RESULTS" --md "$RESULTS_DIR/latest.md" "${meta[@]}" \
  "${series_titles[@]}" "${RATE_MD[@]}" || status=$?
[ "$status" = 0 ] || note "some runs failed their check (see above); exit status 1"
exit "$status"
