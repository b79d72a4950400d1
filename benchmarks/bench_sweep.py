"""What Ray Tune costs a sweep: wall time of N trials (default 8: 4 learning rates x 2
seeds, PPO on synthetic data) through a local Ray with C CPUs (one per trial), against
the same N runs one after another in this process (one torch thread each, as a trial
gets), and Ray's start-up time (``ray.init`` until the cluster answers).

    python benchmarks/bench_sweep.py                      # 8 trials, 2 CPUs
    python benchmarks/bench_sweep.py --timesteps 8192 --repeat 3 --json out.json

Numbers: ``sequential_s`` (the N runs in this process, imports done before the clock
starts), ``ray_init_s``, ``ray_tune_s`` (Tuner.fit: worker start-up, imports in the
workers, the runs, Tune's bookkeeping), ``ray_total_s`` (init + fit + shutdown), their
ratios to ``sequential_s`` (< 1: Ray's parallelism won; > 1: its overhead did), and the
summed training seconds inside the runs of each mode. Medians over ``--repeat``.
Everything is written under a temp dir (Ray's temp dir and storage included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def sweep_config(trials: int, timesteps: int, cpus: int):
    from stockgym.sweep import sweep_from_dict

    n_lr = max(1, trials // 2)
    lrs = [float(f"{1e-3 * (1.5**i):.6g}") for i in range(n_lr)]
    return sweep_from_dict(
        {
            "sweep": {
                "seeds": [0, 1] if trials > 1 else [0],
                "num_cpus": cpus,
                "resources": {"cpu": 1},
                "test": False,
            },
            "train": {
                "algo": "ppo",
                "total_timesteps": timesteps,
                "eval_freq": 0,
                "tensorboard": False,
                "device": "cpu",
                "data": {
                    "symbols": ["X"],
                    "source": "synthetic",
                    "options": {"kind": "edge", "n_days": 600},
                },
                "env": {"window_size": 10, "num_envs": 8, "episode_length": 50},
                "agent": {"hidden_size": 32, "num_steps": 32},
            },
            "space": {"agent.learning_rate": lrs},
        }
    )


def sequential(sweep, root: Path) -> tuple[float, float]:
    """The sweep's runs one after another in this process: (wall s, summed train s)."""
    import torch

    from stockgym.experiment import TrainConfig, train

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    inside = 0.0
    for t in sweep.trials():
        tree = sweep.tree(t["params"], t["seed"], str(root / t["name"]))
        inside += train(TrainConfig.from_dict(tree)).summary["seconds"]
    return time.perf_counter() - t0, inside


def through_ray(sweep, root: Path, cpus: int) -> dict[str, float]:
    from stockgym.sweep.runner import ray_session, run_trials

    plan = sweep.plan(root)
    t0 = time.perf_counter()
    with ray_session(root, num_cpus=cpus) as session:
        t1 = time.perf_counter()
        outcome = run_trials(sweep, plan, root, verbose=0)
        fit = time.perf_counter() - t1
    total = time.perf_counter() - t0
    bad = [r for r in outcome.reports if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"trials failed: {bad}")
    inside = sum(r["seconds"] for rep in outcome.reports for r in rep["runs"])
    return {
        "ray_init_s": session.startup_seconds,
        "ray_tune_s": fit,
        "ray_total_s": total,
        "ray_train_inside_s": inside,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=4096, help="env steps per run")
    p.add_argument("--cpus", type=int, default=2, help="local Ray's CPUs (1 per trial)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    import stockgym.experiment  # noqa: F401  (imports before any clock starts)

    sweep = sweep_config(a.trials, a.timesteps, a.cpus)
    n = len(sweep.trials())
    rows = []
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="bsw", dir="/tmp") as tmp:
            seq, seq_inside = sequential(sweep, Path(tmp) / "seq")
            ray = through_ray(sweep, Path(tmp) / "r", a.cpus)
        row = {"sequential_s": seq, "sequential_train_inside_s": seq_inside, **ray}
        row["ratio_total"] = ray["ray_total_s"] / seq
        row["ratio_tune_only"] = ray["ray_tune_s"] / seq
        rows.append(row)
        print(
            f"[{i + 1}/{a.repeat}] " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "trials": n,
        "timesteps_per_run": a.timesteps,
        "cpus": a.cpus,
        "repeat": a.repeat,
        "median": med,
        "runs": rows,
        "python": sys.version.split()[0],
    }
    print(
        f"{n} trials x {a.timesteps} steps, local Ray with {a.cpus} CPUs (1 per trial) vs "
        f"the same runs sequentially in one process (medians of {a.repeat}):"
    )
    print(
        f"  sequential          {med['sequential_s']:8.2f} s  (training inside runs "
        f"{med['sequential_train_inside_s']:.2f} s)"
    )
    print(f"  ray.init            {med['ray_init_s']:8.2f} s")
    print(
        f"  Tuner.fit           {med['ray_tune_s']:8.2f} s  (training inside runs "
        f"{med['ray_train_inside_s']:.2f} s)"
    )
    print(f"  Ray total           {med['ray_total_s']:8.2f} s  (init + fit + shutdown)")
    print(
        f"  ratio Ray/sequential {med['ratio_total']:.2f} (total), "
        f"{med['ratio_tune_only']:.2f} (fit only)"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
