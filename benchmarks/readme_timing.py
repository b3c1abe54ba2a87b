"""The README's timing table, measured: each step a newcomer runs, timed by the wall clock (issue 28).

    python benchmarks/readme_timing.py                      # prints the rows; nothing written
    python benchmarks/readme_timing.py --json docs/readme-timing.json   # then: python scripts/docs_tables.py
    python benchmarks/readme_timing.py --cache-dir ~/.cache/elit        # the Inception reference stays cached

Runs, in a scratch folder, what README.md tells a newcomer: the main job (`bash scripts/main_job.sh`,
setup cached) and the shell block after it (`elit flops`, `elit sample` of 64 images with cheap CFG,
`elit ref` twice: with an empty cache, then cached, and `elit fid`), each as its own process with the
thread count chosen automatically, as a user gets it. For every step it records the seconds, how busy
the machine's cores were just before (elit._threads.busy_cores over a quarter second) and the thread
lines the command printed, so the table says whether the step had both cores. Run it alone: another
job on the machine changes both the times and the threads chosen. The CI row is not run here (it is
`CI=true bash .ci/run` in a clean clone, timed the same way); its row is kept from the JSON.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from elit._threads import busy_cores, usable_cores  # noqa: E402

THREAD_LINE = re.compile(r"using \d+ CPU threads?[^\n]*")


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(command: list[str], env: dict, log: pathlib.Path) -> dict:
    """Run one step; its seconds, the machine's busy cores before it and the thread lines it printed."""
    busy = busy_cores()
    print(f"$ {' '.join(command)}   (busy cores before: {busy:.2f})", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - start
    log.write_text(done.stdout)
    if done.returncode != 0:
        sys.exit(f"readme_timing: `{' '.join(command)}` failed (exit {done.returncode}); its output is in {log}")
    threads = sorted(set(THREAD_LINE.findall(done.stdout)))
    print(f"  {seconds:.1f} s; {threads or 'no thread line printed'}", flush=True)
    return {"seconds": round(seconds, 1), "busy_cores_before": round(busy, 2), "thread_lines": threads}


def thread_note(step: dict) -> str:
    counts = sorted({int(re.search(r"using (\d+)", line).group(1)) for line in step["thread_lines"]})
    used = " and ".join(str(c) for c in counts) if counts else "the default"
    return f"{used} thread{'s' * (counts != [1])} chosen automatically (busy cores before: {step['busy_cores_before']:.1f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=pathlib.Path, help="write the rows here (its CI row is kept)")
    parser.add_argument("--cache-dir", type=pathlib.Path,
                        help="ELIT_CACHE_DIR for the steps (default: an empty scratch one, so `elit ref` is timed "
                             "the first time); must not already hold the Inception reference")
    parser.add_argument("--work", type=pathlib.Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="elit-readme-timing-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = (args.cache_dir or work / "cache").expanduser()
    if list((cache / "references").glob("*inception*")):
        sys.exit(f"readme_timing: {cache}/references already holds an Inception reference, so `elit ref` would "
                 f"not be timed the first time; give another --cache-dir")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "ELIT_THREADS")}
    env.update(ELIT_CACHE_DIR=str(cache), OUT=str(work / "main-job"), HF_HUB_OFFLINE="1")
    model, samples, ref = work / "main-job" / "model", work / "samples", work / "fmnist-test-inception.npz"

    def step(name, *command):
        return timed(list(command), env, work / f"{name}.log")

    main_job = step("main-job", "bash", "scripts/main_job.sh")
    flops = step("flops", "elit", "flops", "--model", str(model), "--budgets", "1,4,16")
    sample = step("sample", "elit", "sample", "--model", str(model), "--budget", "4", "--guidance", "ccfg",
                  "--scale", "1.0", "--weak-budget", "1", "--seeds", "0-63", "--out", str(samples), "--grid")
    ref_first = step("ref", "elit", "ref", "--data", "fmnist-test", "--out", str(ref))
    ref.unlink()
    ref_cached = step("ref-cached", "elit", "ref", "--data", "fmnist-test", "--out", str(ref))
    fid = step("fid", "elit", "fid", str(samples), str(ref))

    when = datetime.date.today().isoformat()
    rows = [
        {"step": "`bash scripts/main_job.sh` (setup cached)", **main_job,
         "notes": f"1500 training steps + the budget grid; {thread_note(main_job)}"},
        {"step": "`elit flops`", **flops},
        {"step": "`elit sample` (64 images, 40 steps, cheap CFG)", **sample, "notes": thread_note(sample)},
        {"step": "`elit ref --data fmnist-test`", **ref_first, "cached_seconds": ref_cached["seconds"],
         "notes": f"Inception on 10,000 images, {thread_note(ref_first)}; then read from the cache "
                  f"(`~/.cache/elit/references`)"},
        {"step": "`elit fid` (64 samples)", **fid, "notes": "mostly the 2048-d matrix square root"},
    ]
    source = {"command": "python benchmarks/readme_timing.py --json docs/readme-timing.json",
              "machine": f"{cpu_name()}, {usable_cores()} usable cores", "date": when,
              "load": "run alone; each row's busy_cores_before is how busy the cores were just before it",
              "transcribed": False}
    print(json.dumps(rows, indent=1))
    if args.json:
        old = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
        ci = [r for r in old["rows"] if r["step"].startswith("`CI=true")]
        rows[1:1] = ci
        args.json.write_text(json.dumps({"source": source, "rows": rows}, indent=1) + "\n")
        print(f"wrote {args.json}; now run: python scripts/docs_tables.py")


if __name__ == "__main__":
    main()
