#!/usr/bin/env python3
"""Scale-out benchmark (docs/scale-out.md#measured): shards sharing one rate through a local
redis-server, measured at a loopback server that records every arrival.

Usage: scaleout.py FETCHALL [SCALE]   (SCALE 1.0 = the sizes of issue 14; 0.25 for a quick look)
Starts its own redis-server on a free port (no persistence) and an asyncio HTTP server on 40
loopback ports (40 hosts: scheme + host + port), runs the series, prints a Markdown table.
"""
import asyncio, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
from collections import defaultdict

FETCHALL = sys.argv[1]
SCALE = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
HOSTS = 40


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Arrivals:
    """HTTP/1.1 keep-alive server on many ports; records (monotonic time, port, path)."""

    def __init__(self, n):
        self.log = []
        self.ports = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(n, ready), daemon=True).start()
        ready.wait()

    def _run(self, n, ready):
        asyncio.set_event_loop(self.loop)
        async def start():
            for _ in range(n):
                srv = await asyncio.start_server(self._conn, "127.0.0.1", 0)
                self.ports.append(srv.sockets[0].getsockname()[1])
        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()

    async def _conn(self, r, w):
        port = w.get_extra_info("sockname")[1]
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.log.append((time.monotonic(), port, path))
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
                await w.drain()
        except Exception:
            w.close()

    def take(self):
        log, self.log = self.log, []
        return sorted(log)


class Redis:
    def __init__(self, d):
        self.port = free_port(); self.dir = d; self.p = None; self.start()

    def start(self):
        self.p = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", self.dir],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if self.cli("PING") == "PONG": return
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def kill(self):
        self.p.kill(); self.p.wait()

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True)
        return r.stdout.strip()

    def evalsha_calls(self):
        for line in self.cli("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_evalsha:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


class Nginx:
    """Loopback nginx (1 worker) answering 200 "ok" on one port; its access log's `$msec` (the
    time nginx logs the request, 1 ms resolution) gives the arrivals. A second view of the
    arrivals than the Python server's, which bunches them when it falls behind."""

    def __init__(self, d):
        self.dir = os.path.join(d, "nginx"); os.makedirs(os.path.join(self.dir, "tmp"))
        self.port = free_port(); self.log = os.path.join(self.dir, "arrivals.log")
        conf = os.path.join(self.dir, "nginx.conf")
        w = self.dir
        open(conf, "w").write(f"""worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format arrival '$msec';
    access_log {self.log} arrival;
    client_body_temp_path {w}/tmp; proxy_temp_path {w}/tmp; fastcgi_temp_path {w}/tmp;
    uwsgi_temp_path {w}/tmp; scgi_temp_path {w}/tmp;
    keepalive_requests 10000000; keepalive_timeout 120s;
    server {{ listen 127.0.0.1:{self.port}; location / {{ return 200 "ok"; }} }}
}}
""")
        self.p = subprocess.Popen(["nginx", "-c", conf, "-p", self.dir, "-g", "daemon off;"],
                                  stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.1).close(); break
            except OSError:
                time.sleep(0.05)

    def take(self):
        """The arrivals logged so far (seconds, sorted), and the log emptied."""
        times = sorted(float(l) for l in open(self.log) if l.strip())
        open(self.log, "w").close()
        subprocess.run(["kill", "-USR1", str(self.p.pid)])  # reopen the emptied log
        time.sleep(0.2)
        return times

    def stop(self):
        self.p.terminate(); self.p.wait()


def max_in_window(times, w):
    best, lo = 0, 0
    for hi in range(len(times)):
        while times[hi] - times[lo] > w: lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_procs(argsets, inputs, d, tag):
    procs, outs = [], []
    for i, (args, text) in enumerate(zip(argsets, inputs)):
        inp = os.path.join(d, f"{tag}-in-{i}.txt"); open(inp, "w").write(text)
        out = os.path.join(d, f"{tag}-out-{i}.jsonl"); err = open(os.path.join(d, f"{tag}-err-{i}.txt"), "w")
        procs.append(subprocess.Popen([FETCHALL, *args, "-o", out, inp], stderr=err)); outs.append(out)
    codes = [p.wait() for p in procs]
    for i, c in enumerate(codes):
        if c not in (0, 1):
            raise SystemExit(f"{tag} process {i} exited {c}: " + open(os.path.join(d, f"{tag}-err-{i}.txt")).read())
    recs = [[json.loads(l) for l in open(o)] for o in outs]
    errs = [open(os.path.join(d, f"{tag}-err-{i}.txt")).read() for i in range(len(procs))]
    return codes, recs, errs


def rate_stats(log, rate, burst):
    t = [a for a, _, _ in log]
    mean = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else 0
    worst = max(max_in_window(t, w) - (burst + rate * w) for w in (0.01, 0.1, 0.5, 1.0))
    return mean, worst


def auto_burst(rate):
    return 1 + int(0.020 * rate + 1e-9)


def main():
    d = tempfile.mkdtemp(prefix="fetchall-scaleout-")
    srv = Arrivals(HOSTS)
    redis = Redis(d)
    rows = []
    common = ["--body", "none", "--retries", "0", "-q"]

    # 1. 4 shards sharing --rate 400/s over N URLs on 40 hosts.
    n = int(8000 * SCALE)
    urls = "".join(f"http://127.0.0.1:{srv.ports[i % HOSTS]}/u/{i}\n" for i in range(n))
    srv.take(); c0 = redis.evalsha_calls()
    codes, recs, _ = run_procs([common + ["-c", "64", "--ordered", "--shard", f"{k}/4", "--rate", "400/s", "--limits", redis.url, "--limits-key", "s1"] for k in range(4)],
                               [urls] * 4, d, "s1")
    log = srv.take(); calls = redis.evalsha_calls() - c0
    mean, worst = rate_stats(log, 400, auto_burst(400))
    seqs = sorted(r["seq"] for rs in recs for r in rs)
    host_shards = defaultdict(set)
    for k, rs in enumerate(recs):
        for r in rs: host_shards[r["url"].split("/")[2]].add(k)
    merged = subprocess.run([FETCHALL, "merge"] + [os.path.join(d, f"s1-out-{k}.jsonl") for k in range(4)], capture_output=True)
    rows.append(("4 shards, shared --rate 400/s", n, len(log), mean, (mean / 400 - 1) * 100, worst, calls / max(1, len(log)),
                 f"records {len(seqs)}/{n}, unique {len(set(seqs)) == n}, hosts in one shard {all(len(s) == 1 for s in host_shards.values())}, merge exit {merged.returncode}, exits {codes}"))

    # 2. 4 unsharded processes, one host, sharing --per-host-rate 50/s.
    n = int(800 * SCALE)
    parts = ["".join(f"http://127.0.0.1:{srv.ports[0]}/p/{p}/{i}\n" for i in range(n // 4)) for p in range(4)]
    srv.take(); c0 = redis.evalsha_calls()
    codes, recs, _ = run_procs([common + ["-c", "64", "--per-host-rate", "50/s", "--limits", redis.url, "--limits-key", "s2"]] * 4, parts, d, "s2")
    log = srv.take(); calls = redis.evalsha_calls() - c0
    mean, worst = rate_stats(log, 50, auto_burst(50))
    rows.append(("4 processes, one host, shared --per-host-rate 50/s", n, len(log), mean, (mean / 50 - 1) * 100, worst, calls / max(1, len(log)),
                 f"records {sum(map(len, recs))}/{n}, exits {codes}"))

    # 3. Leasing: 2 processes sharing --rate 5000/s.
    n = int(50000 * SCALE)
    parts = ["".join(f"http://127.0.0.1:{srv.ports[i % HOSTS]}/l/{p}/{i}\n" for i in range(n // 2)) for p in range(2)]
    srv.take(); c0 = redis.evalsha_calls()
    codes, recs, _ = run_procs([common + ["-c", "256", "--rate", "5000/s", "--limits", redis.url, "--limits-key", "s3"]] * 2, parts, d, "s3")
    log = srv.take(); calls = redis.evalsha_calls() - c0
    mean, worst = rate_stats(log, 5000, auto_burst(5000))
    w10 = max_in_window([a for a, _, _ in log], 0.010) - (auto_burst(5000) + 50)
    rows.append(("2 processes, shared --rate 5000/s (leasing)", n, len(log), mean, (mean / 5000 - 1) * 100, worst, calls / max(1, len(log)),
                 f"records {sum(map(len, recs))}/{n}, exits {codes}; 10 ms window: {w10:+d} over the bound"))

    # 3b. The same at a loopback nginx (one host), to tell the Python server's bunching from
    # bursts of the processes: windows here are +-1 ms (the log's resolution).
    if shutil.which("nginx"):
        ngx = Nginx(d)
        ngx.take()
        parts = ["".join(f"http://127.0.0.1:{ngx.port}/l/{p}/{i}\n" for i in range(n // 2)) for p in range(2)]
        c0 = redis.evalsha_calls()
        codes, recs, _ = run_procs([common + ["-c", "256", "--rate", "5000/s", "--limits", redis.url, "--limits-key", "s3n"]] * 2, parts, d, "s3n")
        calls = redis.evalsha_calls() - c0
        t = ngx.take(); ngx.stop()
        log = [(x, 0, "") for x in t]
        mean, worst = rate_stats(log, 5000, auto_burst(5000))
        w10 = max_in_window(t, 0.010) - (auto_burst(5000) + 50)
        rows.append(("2 processes, shared --rate 5000/s (leasing), at nginx", n, len(log), mean, (mean / 5000 - 1) * 100, worst, calls / max(1, len(log)),
                     f"records {sum(map(len, recs))}/{n}, exits {codes}; 10 ms window: {w10:+d} over the bound (1 ms log resolution)"))

    # 4. Redis killed 2 s into a 200/s run and restarted 2 s later, per fallback mode.
    for mode in ("wait", "local"):
        n = int(2000 * SCALE) if SCALE >= 0.5 else 1000
        urls = "".join(f"http://127.0.0.1:{srv.ports[i % HOSTS]}/k/{mode}/{i}\n" for i in range(n))
        srv.take()
        inp = os.path.join(d, f"k-{mode}.txt"); open(inp, "w").write(urls)
        out = os.path.join(d, f"k-{mode}.jsonl"); errf = os.path.join(d, f"k-{mode}.err")
        p = subprocess.Popen([FETCHALL, "--body", "none", "--retries", "0", "-c", "64", "--rate", "200/s", "--limits", redis.url, "--limits-key", "s4" + mode,
                              "--limits-fallback", mode, "--limits-share", "2", "-o", out, inp], stderr=open(errf, "w"))
        time.sleep(2); redis.kill(); t_kill = time.monotonic()
        time.sleep(2); t_back = time.monotonic(); redis.start()
        code = p.wait()
        log = srv.take()
        during = sum(1 for a, _, _ in log if t_kill < a < t_back)
        recs = [json.loads(l) for l in open(out)]
        err = open(errf).read()
        rows.append((f"Redis killed 2 s, --limits-fallback {mode}", n, len(log), during / 2.0, None, None, None,
                     f"starts/s while away {during / 2.0:.0f}; records {len(recs)}/{n} (ok {sum(r['ok'] for r in recs)}), exit {code}, 'lost Redis' x{err.count('lost Redis')}, 'answers again' x{err.count('answers again')}"))

    # 5. Lua GCRA calls/s on one Redis (redis-benchmark, 50 clients, no pipelining).
    sha = redis.cli("SCRIPT", "LOAD", open(os.path.join(os.path.dirname(__file__), "..", "src", "limit", "shared.rs")).read().split('const GCRA: &str = r"')[1].split('";')[0])
    bench = subprocess.run(["redis-benchmark", "-p", str(redis.port), "-n", str(int(200000 * max(SCALE, 0.25))), "-c", "50", "-q",
                            "EVALSHA", sha, "2", "fetchall:{bench}:rate:100000/s", "fetchall:{bench}:rate:100000/s", "10", "1000", "1", "0", "0"],
                           capture_output=True, text=True)
    lua = bench.stdout.strip().splitlines()[-1] if bench.stdout.strip() else bench.stderr.strip()
    redis.kill()

    print(f"scale {SCALE}; burst = auto (1 + floor(20 ms * rate)); 'worst' = max over W in (0.01, 0.1, 0.5, 1 s) of arrivals in any W minus (burst + rate*W): <= 0 holds the bound\n")
    print("| series | lines | arrivals | mean rate /s | error % | worst | Redis calls / request | notes |")
    print("|---|---|---|---|---|---|---|---|")
    f = lambda x, nd=2: "" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))
    for name, n, arr, mean, err, worst, cpr, note in rows:
        print(f"| {name} | {n} | {arr} | {f(mean, 1)} | {f(err)} | {f(worst, 1)} | {f(cpr, 3)} | {note} |")
    print(f"\nLua GCRA on one redis-server (redis-benchmark -c 50, EVALSHA): {lua}")


main()
