"""End-to-end cost of ``recsys-batch run``: wall, CPU, peak RSS of the whole process tree, Redis memory.

    uv run python -m tests.bench_run --ml1m /path/to/ml-1m --runs 5      # real ML-1M, median of 5
    uv run python -m tests.bench_run --ml25m --out docs/scale            # ML-25M-shaped synthetic
    uv run python -m tests.bench_run --ml1m /path/to/ml-1m --runs 5 --baseline ../before
                                      # alternate with another checkout's recsys-batch, side by side

Each run is the real CLI in a fresh process against a private redis-server on a loopback port
(nothing else in it, so its ``used_memory`` growth is what one published run costs).  Peak RSS is
the largest *sum* over the batch process and its children (the SVD child), sampled every 100 ms,
which is what a pod's memory limit sees.  Stage timings are read back from the run's metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.conftest import RedisProcess


def _descendants(root: int) -> list[int]:
    """Return ``root`` and every process below it (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _rss_kib(pids: list[int]) -> int:
    """Sum VmRSS over ``pids`` (KiB; processes that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run_once(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; return wall seconds, CPU seconds of the tree, peak tree RSS (MiB), stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:  # RSS every 100 ms; the process tree (a scan of /proc) once a second
        pids, ticks = [proc.pid], 0
        while not done.wait(0.1):
            if ticks % 10 == 0:
                pids = _descendants(proc.pid)
            ticks += 1
            peak[0] = max(peak[0], _rss_kib(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_mib": round(peak[0] / 1024, 1),
            "stdout": out.strip()}


def _command(exe: str, data_dir: Path, dataset: str) -> list[str]:
    base = [exe] if exe.endswith("recsys-batch") else [exe, "-c", "from batch.cli import main; main()"]
    return [*base, "-q", "--data-dir", str(data_dir), "--dataset", dataset, "run", "--keep", "1"]


def _summary(results: list[dict]) -> dict:
    summary = {k: statistics.median(r[k] for r in results) for k in ("wall_s", "cpu_s", "peak_mib")}
    summary.update({f"{k}_min": min(r[k] for r in results) for k in ("wall_s", "cpu_s", "peak_mib")})
    summary.update({f"{k}_max": max(r[k] for r in results) for k in ("wall_s", "cpu_s", "peak_mib")})
    return summary


def bench(data_dir: Path, dataset: str, runs: int, workdir: Path, baseline: Path | None = None) -> dict:
    """Run ``recsys-batch run`` ``runs`` times on ``data_dir``; return per-run and median figures.

    With ``baseline`` (another checkout with its own ``.venv``), its ``recsys-batch`` runs
    alternately with this one's against the same server, so both see the same machine.
    """
    server = RedisProcess(workdir)
    server.start()
    try:
        client = server.client()
        env = {**os.environ, "REDIS_URL": server.url}
        sides = {"this": _command(shutil.which("recsys-batch") or sys.executable, data_dir, dataset)}
        if baseline is not None:
            sides["baseline"] = _command(str(baseline.resolve() / ".venv" / "bin" / "recsys-batch"),
                                         data_dir, dataset)
        results: dict[str, list[dict]] = {side: [] for side in sides}
        for _ in range(runs):
            for side, cmd in sides.items():
                used_before = client.info("memory")["used_memory"]
                result = run_once(cmd, env)
                run_id = client.get("recsys:current").decode()
                meta = client.hgetall(f"recsys:run:{run_id}:meta")
                result["stages"] = json.loads(meta[b"timings"])
                result["peak_rss_mib_by_stage"] = json.loads(meta.get(b"peak_rss_mib", b"{}"))
                result["users"] = int(meta[b"n_users"])
                result["items"] = int(meta[b"n_items"])
                result["ratings"] = int(meta[b"n_ratings"])
                keys = sum(1 for _ in client.scan_iter(match=f"recsys:run:{run_id}:*", count=10_000))
                result["redis_keys"] = keys
                if not any(results.values()):  # only the first run starts from an empty server
                    grown = client.info("memory")["used_memory"] - used_before
                    result["redis_run_mib"] = round(grown / 2**20, 1)
                results[side].append(result)
                print(json.dumps({"side": side, **{k: v for k, v in result.items() if k != "stdout"}}),
                      flush=True)
    finally:
        server.stop()
    out = {"dataset": dataset, "runs": results["this"], "median": _summary(results["this"])}
    if baseline is not None:
        out["baseline"] = {"runs": results["baseline"], "median": _summary(results["baseline"])}
        out["ratio_of_medians"] = {k: round(out["median"][k] / out["baseline"]["median"][k], 3)
                                   for k in ("wall_s", "cpu_s", "peak_mib")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ml1m", type=Path, help="Directory with the real ML-1M files.")
    parser.add_argument("--ml25m", action="store_true", help="Generate ML-25M-shaped data and run on it.")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--out", type=Path, help="Write the result as JSON here (a directory).")
    parser.add_argument("--baseline", type=Path,
                        help="Another checkout (with its .venv) to run alternately, side by side.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-bench-") as tmp:
        tmp = Path(tmp)
        if args.ml25m:
            from tests.synth import ml25m_like, write_csv_dataset

            started = time.perf_counter()
            ratings, movies = ml25m_like()
            write_csv_dataset(tmp / "data", ratings, movies)
            del ratings, movies
            print(f"generated ML-25M-shaped data in {time.perf_counter() - started:.0f}s", flush=True)
            result = bench(tmp / "data", "ml-25m", args.runs, tmp, args.baseline)
            name = "ml25m.json"
        else:
            result = bench(args.ml1m, "ml-1m", args.runs, tmp, args.baseline)
            name = "ml1m_run.json"
    shown = {"median": result["median"]}
    if "baseline" in result:
        shown.update(baseline_median=result["baseline"]["median"],
                     ratio_of_medians=result["ratio_of_medians"])
    print(json.dumps(shown, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / name).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
