"""Load test of `elit serve`: fixed full budget vs deadline-aware, at 0.5x, 1x and 2x the server's
full-budget capacity, side by side in one run. Everything stays on 127.0.0.1 and stops by itself.

    python benchmarks/serve_load.py [--model DIR] [--duration 20] [--clients 32] [--deadline-ms 1500]
                                    [--json out.json] [--plot docs/images/serve-load.png]
    python benchmarks/serve_load.py --json docs/serving.json --key load-test     # the doc's table

1. Starts `elit serve` on a free loopback port (a random-weight ELIT-DiT unless --model; weights do not
   change the time) with one torch thread, or uses --url (loopback only).
2. Capacity: `--clients` closed-loop clients ask for full-budget images for `--capacity-seconds`;
   capacity = images answered per second (micro-batching included).
3. For each load factor and each mode, Poisson arrivals at factor x capacity for `--duration` seconds,
   at most `--clients` requests in flight (an arrival waits for a free client; its latency counts from
   its scheduled time, so a slow server is not hidden). Mode "fixed": {"budget": "full"}; mode
   "deadline": {"deadline_ms": D}. Each request has a client timeout; a run ends when its last answer
   (or timeout) is in.
4. Prints, per run: throughput, p50/p95/p99 latency of answered requests, deadline hit rate (answered
   200 within D, over all requests), errors (anything but 200: 503 refusals, timeouts), the budget
   histogram; and plots latency and budget over time.
5. --json PATH writes the figures and every request (what --replot reads); with --key NAME only the
   figures, as the entry NAME of the docs JSON at PATH (its other entries kept), the form
   scripts/docs_tables.py renders docs/serving.md's tables from. --capacity-only writes them too.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_loopback(url: str) -> None:
    host = urllib.parse.urlparse(url).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise SystemExit(f"--url must point at this machine (127.0.0.0/8, localhost or ::1), got {host!r}")


def start_server(args) -> tuple[subprocess.Popen, str, str]:
    model_dir = args.model
    tmp = None
    if model_dir is None:
        import torch

        import elit
        torch.manual_seed(0)
        model = elit.create_model("ELIT-DiT-S/2", input_size=32, in_channels=1, num_classes=10, hidden_size=128,
                                  depth=6, num_heads=4, head_depth=1, tail_depth=1)
        tmp = tempfile.mkdtemp(prefix="elit-serve-load-")
        model_dir = elit.save_pretrained(model, os.path.join(tmp, "model"))
    port = free_port()
    cmd = [sys.executable, "-m", "elit", "serve", "--model", str(model_dir), "--port", str(port),
           "--threads", str(args.server_threads), "--steps", str(args.steps), "--max-batch", str(args.max_batch),
           "--max-queue", str(args.max_queue)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads)}
    log = open(os.path.join(tmp or tempfile.gettempdir(), "serve.log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: see {log.name}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url, log.name
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not start within 300 s")


async def one_request(client, url, body, timeout) -> dict:
    sent = time.monotonic()
    try:
        r = await client.post(url + "/v1/images", json=body, timeout=timeout)
        status, h = r.status_code, r.headers
        return {"status": status, "done": time.monotonic(), "sent": sent,
                "budget": h.get("x-elit-budget"), "steps": h.get("x-elit-steps"),
                "batch": h.get("x-elit-batch-images")}
    except httpx.HTTPError as e:
        return {"status": type(e).__name__, "done": time.monotonic(), "sent": sent, "budget": None, "steps": None}


async def closed_loop(url, clients, seconds, timeout) -> float:
    """Images per second answered at the full budget by `clients` clients that never pause."""
    done, stop = [], time.monotonic() + seconds
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as client:
        async def worker(i):
            seed = 100_000 * i
            while time.monotonic() < stop:
                r = await one_request(client, url, {"seed": seed, "budget": "full"}, timeout)
                seed += 1
                if r["status"] == 200 and r["done"] <= stop:
                    done.append(r["done"])
        start = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(clients)))
    return len(done) / (stop - start)


async def open_loop(url, rate, seconds, clients, body_of, timeout, seed) -> list[dict]:
    """Poisson arrivals at `rate` per second for `seconds`; at most `clients` in flight."""
    rng = random.Random(seed)
    times, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        times.append(t)
    slots = asyncio.Semaphore(clients)
    results = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as client:
        start = time.monotonic()

        async def arrival(i, at):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            async with slots:
                r = await one_request(client, url, body_of(i), timeout)
            r.update(scheduled=start + at, t=at)
            r["latency"] = r["done"] - r["scheduled"]
            results.append(r)
        await asyncio.gather(*(arrival(i, at) for i, at in enumerate(times)))
    return sorted(results, key=lambda r: r["t"])


def summarize(results, deadline_s) -> dict:
    """Throughput counts answered images over the run's span, arrivals to the last answer."""
    ok = [r for r in results if r["status"] == 200]
    span = max(r["done"] for r in results) - min(r["scheduled"] for r in results) if results else 1.0
    lat = np.array([r["latency"] for r in ok]) if ok else np.array([np.nan])
    errors = collections.Counter(str(r["status"]) for r in results if r["status"] != 200)
    return {"requests": len(results), "answered": len(ok), "throughput_img_s": round(len(ok) / span, 3),
            "p50_ms": round(1000 * float(np.percentile(lat, 50)), 1), "p95_ms": round(1000 * float(np.percentile(lat, 95)), 1),
            "p99_ms": round(1000 * float(np.percentile(lat, 99)), 1),
            "deadline_hit_rate": round(sum(r["latency"] <= deadline_s for r in ok) / max(1, len(results)), 4),
            "errors": sum(errors.values()), "error_kinds": dict(errors),
            "budgets": dict(sorted(collections.Counter(f"{r['budget']}@{r['steps']}" for r in ok).items(),
                                   key=lambda kv: (-int(kv[0].split("@")[0]), -int(kv[0].split("@")[1]))))}


def plot(runs, deadline_ms, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    factors = sorted({r["factor"] for r in runs})
    fig, axes = plt.subplots(2, len(factors), figsize=(5 * len(factors), 6.5), sharex="col", squeeze=False)
    for k, factor in enumerate(factors):
        for run in (r for r in runs if r["factor"] == factor):
            ok = [x for x in run["results"] if x["status"] == 200]
            bad = [x for x in run["results"] if x["status"] != 200]
            color = "tab:red" if run["mode"] == "fixed" else "tab:blue"
            axes[0][k].scatter([x["t"] for x in ok], [1000 * x["latency"] for x in ok], s=5, color=color,
                               label=f"{run['mode']} ({run['summary']['errors']} errors)")
            axes[0][k].scatter([x["t"] for x in bad], [1000 * x["latency"] for x in bad], s=12, marker="x", color=color)
            axes[1][k].scatter([x["t"] for x in ok], [int(x["budget"]) for x in ok], s=5, color=color, label=run["mode"])
        axes[0][k].axhline(deadline_ms, color="k", lw=0.8, ls="--", label="deadline")
        axes[0][k].set_title(f"{factor:g}x full-budget capacity")
        axes[0][k].set_yscale("log")
        axes[0][k].set_ylabel("latency (ms; x = refused / error)")
        axes[0][k].legend(fontsize=7, loc="upper left")
        axes[1][k].set_ylim(0, max(int(x["budget"]) for r in runs for x in r["results"] if x["status"] == 200) + 1)
        axes[1][k].set_ylabel("budget used (latents / window)")
        axes[1][k].set_xlabel("arrival time (s)")
        axes[1][k].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def doc_entry(args, model: str, capacity: float, runs: list[dict], source: dict, requests: bool = True) -> dict:
    """The figures of a run (scripts/docs_tables.py `load_test` / `ray_capacity` read them), with
    every request when `requests` (what --replot draws from)."""
    keep = ("factor", "mode", "summary", *(("results",) if requests else ()))
    return {"source": source, "model": model, "steps": args.steps, "deadline_ms": args.deadline_ms,
            "clients": args.clients, "duration_s": args.duration, "capacity_seconds": args.capacity_seconds,
            "capacity_img_s": round(capacity, 3), "runs": [{k: r[k] for k in keep} for r in runs]}


def wait_idle(url, timeout=120) -> None:
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        status = httpx.get(url + "/v1/status", timeout=5).json()["models"]
        if all(m["queued_images"] == 0 and m["running"] is None for m in status.values()):
            return
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: a random-weight ELIT-DiT, 32x32x1)")
    ap.add_argument("--url", default=None, help="an already running server on this machine (loopback only)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--deadline-ms", type=float, default=1500.0)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per run")
    ap.add_argument("--capacity-seconds", type=float, default=12.0)
    ap.add_argument("--clients", type=int, default=32, help="most requests in flight at once")
    ap.add_argument("--factors", default="0.5,1,2")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the figures (and every request) here")
    ap.add_argument("--key", default=None, help="with --json: store only the figures, under this key of the docs JSON "
                                                "at --json (its other entries kept)")
    ap.add_argument("--plot", default=None, help="write the latency / budget plot here (PNG)")
    ap.add_argument("--capacity-only", action="store_true", help="measure the full-budget capacity and stop")
    ap.add_argument("--replot", default=None, help="only redraw --plot from a --json file of an earlier run")
    args = ap.parse_args()
    if not (0 < args.duration <= 600 and 0 < args.clients <= 256):
        raise SystemExit("--duration must lie in (0, 600] s and --clients in 1..256 (a bounded test)")
    if args.replot:
        saved = json.load(open(args.replot))
        plot(saved["runs"], saved["deadline_ms"], args.plot)
        return
    proc = None
    load_before = os.getloadavg()[0]
    if args.url:
        check_loopback(args.url)
        url = args.url
    else:
        proc, url, log = start_server(args)
        print(f"server: {url} (log {log})")
    try:
        timeout = max(30.0, 10 * args.deadline_ms / 1000)
        info = httpx.get(url + "/v1/models", timeout=10).json()["models"][0]
        print(f"model {info['name']}: budgets {info['budgets'][0]['budget']}..{info['budgets'][-1]['budget']}, "
              f"{args.steps} steps; cost model {info['cost_model']}")
        asyncio.run(closed_loop(url, args.clients, 3.0, timeout))          # warm-up
        wait_idle(url)
        capacity = asyncio.run(closed_loop(url, args.clients, args.capacity_seconds, timeout))
        wait_idle(url)
        print(f"full-budget capacity: {capacity:.2f} images/s ({args.clients} closed-loop clients, "
              f"{args.capacity_seconds:g} s); deadline {args.deadline_ms:g} ms; load average {os.getloadavg()[0]:.2f}")
        runs = []
        factors = [] if args.capacity_only else [float(f) for f in args.factors.split(",")]
        if factors:
            print(f"{'load':>5} {'mode':>9} {'req':>5} {'img/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
                  f"{'hit rate':>8} {'errors':>6}  budgets (budget@steps: images)")
        for factor in factors:
            for mode in ("fixed", "deadline"):
                def body_of(i, mode=mode):
                    body = {"seed": i, "label": i % 10}
                    body.update({"budget": "full"} if mode == "fixed" else {"deadline_ms": args.deadline_ms})
                    return body
                results = asyncio.run(open_loop(url, factor * capacity, args.duration, args.clients, body_of,
                                                timeout, seed=int(factor * 1000)))
                summary = summarize(results, args.deadline_ms / 1000)
                runs.append({"factor": factor, "mode": mode, "summary": summary, "results": results})
                s = summary
                print(f"{factor:>4g}x {mode:>9} {s['requests']:>5} {s['throughput_img_s']:>7.2f} {s['p50_ms']:>8.0f} "
                      f"{s['p95_ms']:>8.0f} {s['p99_ms']:>8.0f} {s['deadline_hit_rate']:>8.3f} {s['errors']:>6}  "
                      f"{s['budgets']}" + (f" {s['error_kinds']}" if s["errors"] else ""), flush=True)
                wait_idle(url)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if args.json:
            sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))
            import docs_tables     # the generator owns the docs JSON's layout
            source = docs_tables.measured_source(load_before, args.server_threads)
            entry = doc_entry(args, info["name"], capacity, runs, source, requests=not args.key)
            docs_tables.write_entry(args.json, entry, args.key)
            print(f"figures: {args.json}" + (f" [{args.key}]" if args.key else ""))
        if args.plot and runs:
            plot(runs, args.deadline_ms, args.plot)
            print(f"plot: {args.plot}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
