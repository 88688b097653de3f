#!/usr/bin/env python3
"""Peer for the fetchall benchmark: bulk GET with aiohttp.

Same command-line shape as fetchall:  aiohttp_fetch.py [FILE] [-c N] [--body none|auto] [-q]
Reads one URL per line from FILE (or stdin), fetches with at most N in flight
(asyncio.Semaphore + gather, one shared keep-alive session) and writes one JSON
line per URL to stdout: {"seq":..,"url":..,"ok":..,"status":..,"bytes":..}.
Lines are written in completion order. --body auto adds the body as text.
"""

import argparse
import asyncio
import json
import sys

import aiohttp


async def run(urls, concurrency, body, out):
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(seq, url):
            async with sem:
                rec = {"seq": seq, "url": url}
                try:
                    async with session.get(url) as resp:
                        data = await resp.read()
                        rec.update(ok=resp.status < 400, status=resp.status, bytes=len(data))
                        if body == "auto":
                            rec["body"] = data.decode("utf-8", errors="replace")
                except Exception as e:  # noqa: BLE001 - report every failure as a line
                    rec.update(ok=False, error=f"{type(e).__name__}: {e}")
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")

        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file", nargs="?")
    p.add_argument("-c", "--concurrency", type=int, default=50)
    p.add_argument("--body", choices=["none", "auto"], default="none")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args()
    src = open(a.file) if a.file and a.file != "-" else sys.stdin
    urls = [l.strip() for l in src if l.strip()]
    asyncio.run(run(urls, a.concurrency, a.body, sys.stdout))
    sys.stdout.flush()
    if not a.quiet:
        print(f"fetched {len(urls)} URLs", file=sys.stderr)


if __name__ == "__main__":
    main()
