"""Torch threads for ``stockgym train``: steps/s with 1 thread and with torch's default
(one per core), on an idle machine and on one where other processes keep every core
busy (``--load N`` busy-loop processes, default: one per core).

This is what chose the CLI's default of one thread (``stockgym.cli.common.DEFAULT_THREADS``).
Run: ``python benchmarks/bench_threads.py`` (it sets the thread counts itself; do not set
``OMP_NUM_THREADS``). Each cell is the median of ``--repeats`` runs of a fresh process.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = [
    "train", "--algo", "ppo", "--symbol", "AAPL", "--source", "sample", "--total-timesteps",
    "20000", "--eval-freq", "0", "--checkpoint-freq", "0", "--no-progress", "--no-tensorboard",
    "--device", "cpu",
]  # fmt: skip


def burn() -> None:
    while True:
        pass


def one_run(threads: int | None, tmp: Path, k: int) -> float:
    """Steps/s of one ``stockgym train`` in a fresh process (``summary.json``'s sps)."""
    run_dir = tmp / f"run-{threads}-{k}-{time.monotonic_ns()}"
    argv = [*TRAIN, "--run-dir", str(run_dir)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        argv += ["--threads", str(threads)]
    else:  # torch's own default: as many threads as cores
        argv += ["--threads", str(os.cpu_count())]
    subprocess.run([sys.executable, "-m", "stockgym.cli", *argv], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return float(json.loads((run_dir / "summary.json").read_text())["sps"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=os.cpu_count())
    ap.add_argument("--json", default="bench_threads.json")
    args = ap.parse_args()
    res: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for machine in ("idle", "loaded"):
            burners = []
            if machine == "loaded":
                burners = [mp.Process(target=burn, daemon=True) for _ in range(args.load)]
                for b in burners:
                    b.start()
            try:
                for label, threads in (("1 thread", 1), (f"{os.cpu_count()} threads", None)):
                    sps = [one_run(threads, Path(tmp), k) for k in range(args.repeats)]
                    res.setdefault(machine, {})[label] = statistics.median(sps)
                    print(f"{machine:<7} {label:<10} {statistics.median(sps):>9,.0f} steps/s "
                          f"(runs: {', '.join(f'{x:,.0f}' for x in sps)})", flush=True)  # fmt: skip
            finally:
                for b in burners:
                    b.terminate()
    Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
