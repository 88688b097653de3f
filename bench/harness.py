#!/usr/bin/env python3
"""Helpers for bench/run.sh: URL lists, one measured run, and the report.

Standard library only. Subcommands:

  freeport                      print a free TCP port on 127.0.0.1
  cpubusy [--seconds S]         print % of all CPU busy over S seconds (/proc/stat)
  genurls --base URL --n N --out FILE [--curl-config FILE]
                                write N distinct URLs (BASE/item/1..N), one per
                                line, and optionally the same list as a curl
                                config file (url = "..." / output = "/dev/null")
  measure [options] -- CMD...   run CMD once, stdout to a file, and append one
                                JSON record to --results
  report --results FILE [--md FILE] [--meta k=v ...]
                                print the median tables (markdown) and write
                                them to --md; exit 1 if any run failed its check

How a run is measured (see docs/performance.md):
  * wall time: time.perf_counter() around spawn + wait, in this process.
  * user+sys CPU and peak RSS: GNU time (/usr/bin/time -f '%U %S %M') wraps
    the command. We do NOT use os.wait4()'s rusage here: on Linux a child's
    ru_maxrss includes the RSS its parent had when the child was forked (the
    kernel keeps the pre-exec high-water mark), so a Python parent would
    inflate every tool's peak RSS by Python's own ~10-20 MB. GNU time is a
    small C program, so its own contribution is ~1 MB.
"""

import argparse
import json
import os
import statistics
import sys
import time

GNU_TIME = os.environ.get("GNU_TIME", "/usr/bin/time")
OTHER_CPU_WARN = 20  # % of one core used by other processes during a run


def cmd_freeport(_args):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def stat_sample():
    """(total, idle) jiffies over all cores from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]  # up to softirq; guest time is in user
    idle = v[3] + v[4]  # idle + iowait
    return sum(v), idle


def cmd_cpubusy(args):
    """Print the percentage of total CPU (all cores) busy over --seconds."""
    t0, i0 = stat_sample()
    time.sleep(args.seconds)
    t1, i1 = stat_sample()
    busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
    print(f"{busy:.0f}")


def cmd_genurls(args):
    base = args.base.rstrip("/")
    with open(args.out, "w") as f:
        for i in range(1, args.n + 1):
            f.write(f"{base}/item/{i}\n")
    if args.curl_config:
        with open(args.curl_config, "w") as f:
            for i in range(1, args.n + 1):
                f.write(f'url = "{base}/item/{i}"\noutput = "/dev/null"\n')


def count_output(path, ok_substr):
    """Return (lines, ok_lines). A final line without newline counts too."""
    lines = ok = 0
    needle = ok_substr.encode() if ok_substr else None
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            lines += 1
            if needle is not None and needle in line:
                ok += 1
    return lines, ok


def parse_gnu_time(path):
    # With -o, GNU time may write "Command exited with non-zero status N"
    # (or "Command terminated by signal N") before the formatted line.
    with open(path) as f:
        rows = [l.split() for l in f.read().splitlines() if l.strip()]
    for row in reversed(rows):
        if len(row) == 3:
            try:
                return float(row[0]), float(row[1]), int(row[2])
            except ValueError:
                pass
    raise RuntimeError(f"cannot parse GNU time output in {path}: {rows!r}")


def proc_cpu_s(pids):
    """Total user+sys CPU seconds of the given pids (from /proc/PID/stat)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tck


def children_of(pid):
    """Pids of the direct children of pid (all its threads)."""
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def sample_fds(pid, stop, out):
    """Until stop is set: the most open file descriptors of pid's child (the tool under GNU
    time), counted in /proc every 2 ms. A short peak between samples can be missed."""
    import threading  # noqa: F401 (the caller runs this in a thread)
    best = 0
    while not stop.is_set():
        for kid in children_of(pid) or [pid]:
            try:
                best = max(best, len(os.listdir(f"/proc/{kid}/fd")))
            except OSError:
                pass
        stop.wait(0.002)
    out.append(best)


def cmd_measure(args):
    cmd = args.cmd
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        sys.exit("measure: no command given")
    stdin_path = args.stdin or "/dev/null"
    err_path = args.stdout + ".stderr"
    rus_path = args.stdout + ".rusage"
    full = list(cmd)
    if not args.no_rusage:
        full = [GNU_TIME, "-f", "%U %S %M", "-o", rus_path] + full
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, stdin_path, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, args.stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_OPEN, 2, err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
    ]
    server_pids = [p for p in (args.server_pids or "").split(",") if p]
    srv0 = proc_cpu_s(server_pids)
    st0 = stat_sample()
    t0 = time.perf_counter()
    pid = os.posix_spawnp(full[0], full, os.environ, file_actions=actions)
    fds = []
    if args.sample_fds:
        import threading
        stop = threading.Event()
        sampler = threading.Thread(target=sample_fds, args=(pid, stop, fds))
        sampler.start()
    _, status, _ = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if args.sample_fds:
        stop.set()
        sampler.join()
    st1 = stat_sample()
    srv1 = proc_cpu_s(server_pids)
    # CPU seconds the whole machine was busy during the run (all cores).
    busy_s = ((st1[0] - st0[0]) - (st1[1] - st0[1])) / os.sysconf("SC_CLK_TCK")
    rc = os.waitstatus_to_exitcode(status)

    rec = {
        "phase": args.phase,
        "tool": args.tool,
        "n": args.n,
        "run": args.run,
        "concurrency": args.concurrency,
        "wall_s": wall,
        "rc": rc,
    }
    if server_pids:
        rec["server_cpu_s"] = srv1 - srv0
    if fds:
        rec["max_fds"] = fds[0]
    if args.bound_s:
        rec["bound_s"] = args.bound_s
    for kv in args.extra or []:
        k, v = kv.split("=", 1)
        rec[k] = v
    if not args.no_rusage:
        try:
            user, sys_, maxrss_kb = parse_gnu_time(rus_path)
            rec.update(user_s=user, sys_s=sys_, cpu_s=user + sys_, maxrss_kb=maxrss_kb)
        except (OSError, RuntimeError) as e:
            rec["rusage_error"] = str(e)
        try:
            os.unlink(rus_path)
        except OSError:
            pass
    if "cpu_s" in rec and wall >= 0.2:
        # Busy CPU the client and nginx did not use went to other processes
        # (this harness is asleep in wait4). In % of one core; a few % is noise
        # (jiffy resolution, kernel threads); 20+ means something else ran.
        own = rec["cpu_s"] + rec.get("server_cpu_s", 0.0)
        rec["other_cpu_pct"] = round(max(0.0, 100 * (busy_s - own) / wall), 1)
    lines, ok = count_output(args.stdout, args.ok)
    rec["lines"] = lines
    rec["ok_lines"] = ok
    problems = []
    if rc != args.expect_rc:
        problems.append(f"exit status {rc}")
    if lines != args.n:
        problems.append(f"{lines} output lines for {args.n} URLs")
    if args.ok and ok != args.n:
        problems.append(f"{ok}/{args.n} lines contain {args.ok!r}")
    if "rusage_error" in rec:
        problems.append(rec["rusage_error"])
    rec["check"] = "ok" if not problems else "FAIL: " + "; ".join(problems)

    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")

    msg = f"  {args.phase:<10} {args.tool:<9} n={args.n:<8} run {args.run}: {wall:8.3f} s wall"
    if "cpu_s" in rec:
        msg += f", {rec['cpu_s']:7.2f} s cpu, {rec['maxrss_kb'] / 1024:7.1f} MB peak RSS"
    if rec.get("other_cpu_pct", 0) >= OTHER_CPU_WARN:
        msg += f"  (other processes used {rec['other_cpu_pct']:.0f}% of a core meanwhile)"
    msg += "" if not problems else f"  ** {rec['check']}"
    print(msg, flush=True)
    if problems:
        try:
            with open(err_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace").strip()
            if tail:
                print("    stderr tail: " + tail.replace("\n", "\n    "), flush=True)
        except OSError:
            pass
    if args.delete_stdout:
        for p in (args.stdout, err_path):
            try:
                os.unlink(p)
            except OSError:
                pass


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def summarize(recs):
    """Medians of each metric over the runs of one (phase, tool, n)."""
    good = [r for r in recs if r["check"] == "ok"]
    use = good or recs
    n = use[0]["n"]
    wall = med([r["wall_s"] for r in use])
    cpu = med([r.get("cpu_s") for r in use])
    rss = med([r.get("maxrss_kb") for r in use])
    return {
        "runs": len(recs),
        "good": len(good),
        "wall": wall,
        "rps": med([n / r["wall_s"] for r in use]),
        "cpu": cpu,
        "cpu_ms_per_1k": med([r["cpu_s"] * 1e6 / n for r in use if "cpu_s" in r]),
        "rss_mb": rss / 1024 if rss is not None else None,
        "srv_pct": med([100 * r["server_cpu_s"] / r["wall_s"] for r in use if "server_cpu_s" in r]),
        "wall_ms": wall * 1000 if wall is not None else None,
        "max_fds": med([r.get("max_fds") for r in use]),
        "max_fds_max": max([r.get("max_fds", 0) for r in use] or [0]) or None,
        "of_bound": med([100 * r["bound_s"] / r["wall_s"] for r in use if "bound_s" in r]),
        "min_ms": min(r["wall_s"] for r in use) * 1000,
    }


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def meta_series_titles(meta):
    """Series titles passed as --meta 'title:PHASE=Title' (removed from the header table)."""
    titles = {}
    for k in list(meta):
        if k.startswith("title:"):
            titles[k[len("title:"):]] = meta.pop(k)
    return titles


def cmd_report(args):
    recs = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    groups = {}
    for r in recs:
        groups.setdefault((r["phase"], r["tool"], r["n"]), []).append(r)
    tools_order = []
    for r in recs:
        if r["tool"] not in tools_order:
            tools_order.append(r["tool"])
    meta = dict(kv.split("=", 1) for kv in (args.meta or []))
    titles = meta_series_titles(meta)

    out = ["# fetchall benchmark results", ""]
    if meta:
        out.append("| setting | value |")
        out.append("|---|---|")
        for k, v in meta.items():
            out.append(f"| {k} | {v} |")
        out.append("")
    if "fetchall" not in tools_order:
        out.append("> **fetchall was not run** (PEERS_ONLY=1 or no binary); only peer rows are shown.")
        out.append("")

    def check_cell(s):
        return "ok" if s["good"] == s["runs"] else f"**{s['runs'] - s['good']} FAILED**"

    # Throughput.
    tp = {t: summarize(groups[("throughput", t, n)]) for (ph, t, n) in groups if ph == "throughput"}
    if tp:
        n = next(n for (ph, t, n) in groups if ph == "throughput")
        conc = next(r["concurrency"] for r in recs if r["phase"] == "throughput")
        out += [f"## Throughput: {n:,} distinct URLs, concurrency {conc} (medians)", ""]
        rows = []
        for t in tools_order:
            if t in tp:
                s = tp[t]
                rows.append([t, str(s["runs"]), fmt(s["wall"], 3), fmt(s["rps"], 0), fmt(s["cpu"]),
                             fmt(s["cpu_ms_per_1k"], 1), fmt(s["rss_mb"], 1), fmt(s["srv_pct"], 0),
                             check_cell(s)])
        out.append(table(["tool", "runs", "wall s", "req/s", "user+sys CPU s",
                          "CPU ms / 1k req", "peak RSS MB", "nginx CPU %", "check"], rows))
        out.append("")
        if "fetchall" in tp and len(tp) > 1:
            f = tp["fetchall"]
            rows = []
            for t in tools_order:
                if t in tp and t != "fetchall":
                    p = tp[t]
                    if f["good"] < f["runs"] or p["good"] < p["runs"]:
                        rows.append([f"fetchall / {t}"] + ["n/a (failed check)"] * 3)
                        continue
                    rows.append([f"fetchall / {t}", fmt(ratio(f["rps"], p["rps"])),
                                 fmt(ratio(f["cpu_ms_per_1k"], p["cpu_ms_per_1k"])),
                                 fmt(ratio(f["rss_mb"], p["rss_mb"]))])
            out.append(table(["ratio", "throughput (>1 = fetchall faster)",
                              "CPU per request (<1 = fetchall cheaper)",
                              "peak RSS (<1 = fetchall smaller)"], rows))
            out.append("")

    # Memory series.
    mem_keys = sorted([(t, n) for (ph, t, n) in groups if ph == "memory"],
                      key=lambda k: (tools_order.index(k[0]), k[1]))
    if mem_keys:
        conc = next(r["concurrency"] for r in recs if r["phase"] == "memory")
        out += [f"## Memory series: concurrency {conc} (medians)", ""]
        rows = []
        for t, n in mem_keys:
            s = summarize(groups[("memory", t, n)])
            rows.append([t, f"{n:,}", str(s["runs"]), fmt(s["wall"], 2), fmt(s["rps"], 0),
                         fmt(s["cpu"]), fmt(s["rss_mb"], 1), fmt(s["srv_pct"], 0), check_cell(s)])
        out.append(table(["tool", "URLs", "runs", "wall s", "req/s", "user+sys CPU s",
                          "peak RSS MB", "nginx CPU %", "check"], rows))
        out.append("")

    # Single-URL latency.
    lat = {t: summarize(groups[("latency", t, n)]) for (ph, t, n) in groups if ph == "latency"}
    if lat:
        out += ["## Single-URL latency: process start to exit (medians)", ""]
        rows = []
        for t in tools_order:
            if t in lat:
                s = lat[t]
                cell = ""
                if "fetchall" in lat and t != "fetchall":
                    f = lat["fetchall"]
                    if f["good"] < f["runs"] or s["good"] < s["runs"]:
                        cell = "n/a (failed check)"
                    else:
                        cell = fmt(ratio(f["wall_ms"], s["wall_ms"]))
                rows.append([t, str(s["runs"]), fmt(s["wall_ms"], 2), fmt(s["min_ms"], 2),
                             cell, check_cell(s)])
        out.append(table(["tool", "runs", "median ms", "min ms",
                          "fetchall / this (<1 = fetchall faster)", "check"], rows))
        out.append("")

    # The other series (issue 15): one table each, in the order they ran.
    known = {"throughput", "memory", "latency", "warmup"}
    series = []
    for r in recs:
        if r["phase"] not in known and r["phase"] not in series:
            series.append(r["phase"])
    for ph in series:
        keys = []
        for r in recs:
            if r["phase"] == ph and (r["tool"], r["n"]) not in keys:
                keys.append((r["tool"], r["n"]))
        title = titles.get(ph, ph)
        out += [f"## {title} (medians)", ""]
        rows = []
        stats = {}
        for t, n in keys:
            g = groups[(ph, t, n)]
            st = summarize(g)
            stats[t] = st
            conc = g[0]["concurrency"]
            rows.append([t, f"{n:,}", str(conc), str(st["runs"]), fmt(st["wall"], 3), fmt(st["rps"], 0),
                         fmt(st["cpu"]), fmt(st["cpu_ms_per_1k"], 1), fmt(st["rss_mb"], 1),
                         fmt(st["max_fds_max"], 0) if st["max_fds_max"] else "n/a",
                         (fmt(st["of_bound"], 1) + "%") if st["of_bound"] is not None else "",
                         fmt(st["srv_pct"], 0), check_cell(st)])
        out.append(table(["tool", "URLs", "c", "runs", "wall s", "req/s", "user+sys CPU s",
                          "CPU ms / 1k req", "peak RSS MB", "most open fds (any run)",
                          "% of bound", "server CPU %", "check"], rows))
        out.append("")
        if "fetchall" in stats and len(stats) > 1:
            f = stats["fetchall"]
            rrows = []
            for t, st in stats.items():
                if t == "fetchall":
                    continue
                if f["good"] < f["runs"] or st["good"] < st["runs"]:
                    rrows.append([f"fetchall / {t}"] + ["n/a (failed check)"] * 3)
                    continue
                rrows.append([f"fetchall / {t}", fmt(ratio(f["rps"], st["rps"])),
                              fmt(ratio(f["cpu_ms_per_1k"], st["cpu_ms_per_1k"])),
                              fmt(ratio(f["rss_mb"], st["rss_mb"]))])
            out.append(table(["ratio", "throughput (>1 = fetchall faster)",
                              "CPU per request (<1 = fetchall cheaper)",
                              "peak RSS (<1 = fetchall smaller)"], rrows))
            out.append("")

    if args.append_md:
        for path in args.append_md:
            with open(path) as f:
                out += [f.read().rstrip(), ""]

    noisy = [r for r in recs if r.get("other_cpu_pct", 0) >= OTHER_CPU_WARN]
    if noisy:
        checked = sum(1 for r in recs if "other_cpu_pct" in r)
        out += [f"**{len(noisy)} of {checked} run(s) shared the CPU with other processes** "
                f"(which used {OTHER_CPU_WARN}% of a core or more meanwhile); "
                "their numbers are noisy. Re-run on an idle machine:", ""]
        for r in noisy[:20]:
            out.append(f"- {r['phase']} {r['tool']} n={r['n']} run {r['run']}: "
                       f"{r['other_cpu_pct']:.0f}% of a core")
        out.append("")

    failed = [r for r in recs if r["check"] != "ok"]
    if failed:
        out += [f"**{len(failed)} run(s) failed their check** (see the runs file):", ""]
        for r in failed[:20]:
            out.append(f"- {r['phase']} {r['tool']} n={r['n']} run {r['run']}: {r['check']}")
        out.append("")

    text = "\n".join(out)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sub", required=True)

    sub.add_parser("freeport")

    b = sub.add_parser("cpubusy")
    b.add_argument("--seconds", type=float, default=1.0)

    g = sub.add_parser("genurls")
    g.add_argument("--base", required=True)
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--curl-config")

    m = sub.add_parser("measure")
    m.add_argument("--results", required=True)
    m.add_argument("--phase", required=True)
    m.add_argument("--tool", required=True)
    m.add_argument("--n", type=int, required=True, help="expected number of output lines")
    m.add_argument("--run", type=int, default=1)
    m.add_argument("--concurrency", type=int, default=0)
    m.add_argument("--stdout", required=True, help="file that receives the command's stdout")
    m.add_argument("--stdin", help="file for the command's stdin (default /dev/null)")
    m.add_argument("--ok", help="substring every output line must contain")
    m.add_argument("--no-rusage", action="store_true", help="wall time only (no GNU time wrapper)")
    m.add_argument("--delete-stdout", action="store_true")
    m.add_argument("--server-pids", help="comma-separated pids whose CPU use during the run is recorded")
    m.add_argument("--expect-rc", type=int, default=0, help="the exit status a good run has")
    m.add_argument("--sample-fds", action="store_true",
                   help="record the most open file descriptors of the tool (sampled every 2 ms)")
    m.add_argument("--bound-s", type=float,
                   help="the least wall time the run can take (e.g. URLs x latency / concurrency)")
    m.add_argument("--extra", action="append", help="k=v recorded with the run (shown in its series)")
    m.add_argument("cmd", nargs=argparse.REMAINDER)

    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--md")
    r.add_argument("--meta", action="append")
    r.add_argument("--append-md", action="append", help="markdown file to append after the series tables")

    args = p.parse_args()
    rc = {"freeport": cmd_freeport, "cpubusy": cmd_cpubusy, "genurls": cmd_genurls,
          "measure": cmd_measure, "report": cmd_report}[args.sub](args)
    sys.exit(rc or 0)


if __name__ == "__main__":
    main()
