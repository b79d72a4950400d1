"""``stockgym evaluate`` as a benchmark: calibration, ablation, and wall time.

1. Calibration: the evaluation on ``--markets`` independent zero-edge synthetic markets
   (``kind="edge", edge=0``: nothing in the past predicts the future). The share of
   markets where the agent's verdict is "edge" is the false-discovery rate of the
   verdict (target <= 10 %); ``random``'s is printed beside it.
2. Ablation: a market whose edge sits ``lag`` days back (``r_t = edge * r_{t-lag} +
   eps``), further than the agent's observation window (``window_size`` rows of log
   returns only) but inside the forecaster's window. The agent with forecast features
   should beat ``agent_no_forecasts`` there.
3. Wall time of one evaluation with 1 and 2 worker processes.

Run with ``OMP_NUM_THREADS=1 python benchmarks/bench_evaluate.py`` (``--quick`` for a
smoke run); it prints tables and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from stockgym.experiment.evaluate import evaluate


def train_tree(options: dict, *, steps: int, forecasts: dict | None, features=None) -> dict:
    env = {"window_size": 5, "num_envs": 16, "episode_length": 60}
    if features is not None:
        env["features"] = features
    if forecasts is not None:
        env["forecasts"] = forecasts
    return {"algo": "ppo", "total_timesteps": steps, "device": "cpu",
            "data": {"symbols": ["X"], "source": "synthetic", "options": options},
            "env": env, "agent": {"hidden_size": 32}}  # fmt: skip


def calibration(markets: int, steps: int, root: Path) -> dict:
    verdicts: dict[str, list[str]] = {"agent": [], "random": []}
    for m in range(markets):
        tree = {"evaluate": {"windows": 4, "window_days": 126, "seeds": [0, 1],
                             "baselines": ["buy_and_hold", "random"], "n_boot": 1000},
                "train": train_tree({"kind": "edge", "edge": 0.0, "n_days": 1100, "seed": 100 + m},
                                    steps=steps, forecasts=None)}  # fmt: skip
        s = evaluate(tree, root / f"cal{m}")
        for p in verdicts:
            verdicts[p].append(s["policies"][p]["verdict"])
        print(f"market {m}: agent {verdicts['agent'][-1]}, random {verdicts['random'][-1]}",
              flush=True)  # fmt: skip
    return {p: {"edge_rate": v.count("edge") / len(v), "worse_rate": v.count("worse") / len(v),
                "verdicts": v} for p, v in verdicts.items()}  # fmt: skip


def ablation(steps: int, seeds: list[int], root: Path, edge: float = 0.5) -> dict:
    forecasts = {"model": "mlp", "window": 20, "min_train": 300, "refit_every": 126,
                 "epochs": 20, "hidden_size": 32}  # fmt: skip
    tree = {"evaluate": {"windows": 3, "window_days": 252, "seeds": seeds,
                         "baselines": ["buy_and_hold", "forecast_sign"], "n_boot": 1000},
            "train": train_tree({"kind": "edge", "edge": edge, "lag": 10, "n_days": 2000, "seed": 7},
                                steps=steps, forecasts=forecasts, features=["log_return"])}  # fmt: skip
    s = evaluate(tree, root / "ablation")
    return {p: {k: s["policies"][p][k] for k in ("excess_log_return", "sharpe", "verdict")}
            for p in s["policies"]}  # fmt: skip


def wall_time(steps: int, root: Path) -> dict:
    out = {}
    for workers in (1, 2):
        tree = {"evaluate": {"windows": 3, "window_days": 126, "seeds": [0, 1],
                             "baselines": ["buy_and_hold", "random"], "n_boot": 500},
                "train": train_tree({"kind": "edge", "edge": 0.0, "n_days": 900, "seed": 1},
                                    steps=steps, forecasts=None)}  # fmt: skip
        t0 = time.perf_counter()
        evaluate(tree, root / f"wall{workers}", workers=workers)
        out[workers] = round(time.perf_counter() - t0, 1)
        print(f"{workers} worker(s): {out[workers]} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markets", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8192, help="agent env steps per run")
    ap.add_argument("--quick", action="store_true", help="2 markets, 2,048 steps")
    ap.add_argument(
        "--ablation-edge",
        type=float,
        default=0.5,
        help="the lagged market's edge (coefficient at lag 10)",
    )
    ap.add_argument("--only", choices=["calibration", "ablation", "wall"], nargs="+")
    ap.add_argument("--json", default="bench_evaluate.json")
    args = ap.parse_args()
    if args.quick:
        args.markets, args.steps = 2, 2048
    todo = args.only or ["calibration", "ablation", "wall"]
    res: dict = {"steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "calibration" in todo:
            res["calibration"] = calibration(args.markets, args.steps, root)
            for p, r in res["calibration"].items():
                print(f"calibration {p}: 'edge' on {r['edge_rate']:.0%} of {args.markets} "
                      f"zero-edge markets ('worse' {r['worse_rate']:.0%})")  # fmt: skip
        if "ablation" in todo:
            res["ablation"] = ablation(args.steps * 4, [0, 1, 2], root, args.ablation_edge)
            for p, r in res["ablation"].items():
                e = r["excess_log_return"]
                print(f"ablation {p:<20} excess {e['mean']:+.1%} [{e['ci95'][0]:+.1%}, "
                      f"{e['ci95'][1]:+.1%}] {r['verdict']}")  # fmt: skip
        if "wall" in todo:
            res["wall_seconds"] = wall_time(args.steps, root)
    Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
