"""PPO on the stock env: stockgym's against stable-baselines3's, same feature extractor.

    OMP_NUM_THREADS=1 python benchmarks/bench_sb3.py --json sb3.json       # everything
    OMP_NUM_THREADS=1 python benchmarks/bench_sb3.py --task throughput --backbone lstm
    OMP_NUM_THREADS=1 python benchmarks/bench_sb3.py --task throughput --compile-env
    OMP_NUM_THREADS=1 python benchmarks/bench_sb3.py --task target --seeds 0 1 2

Every comparison runs in one process, the libraries interleaved (ours, ours in bfloat16,
SB3, ours, ...) so they share the machine's noise, with the same number of torch
threads (``--threads``, default 1). Both train on a
:class:`~stockgym.envs.VectorStockTradingEnv` (SB3 through
:class:`~stockgym.envs.sb3.SB3VecEnv`), with the same backbone module in front of the
heads: ours builds it from ``backbone=``, SB3 gets it as its features extractor
(:func:`stockgym.agents.sb3.stock_policy_kwargs`, i.e. :class:`StockFeatures`), shared
by actor and critic on both sides (SB3's default; ours on stockgym envs), then one
64-unit tanh layer per head (SB3 ``net_arch=dict(pi=[64], vf=[64])``, Tanh, orthogonal
init). Matched PPO settings: rollout ``n_steps`` x 64 envs, 4 minibatches, 4 epochs,
clip 0.2, no value clipping, advantage normalisation, max grad norm 0.5, Adam eps 1e-5,
learning rate annealed linearly to 0 (SB3: ``lin_<lr>``).

Tasks
-----
``throughput``: training samples (env steps) per second on the real sample data
(``load_prices("AAPL", source="sample")``, default train split, default features and
standard scaler fitted on it), window 30, episodes of 100 bars, n_steps 64 (batch
4,096), 2-layer backbones of 64 units (cnn: kernel 3). Each repeat builds fresh models,
runs one untimed update (first calls, allocations), then times ``--updates`` updates;
the table gives medians over ``--repeats`` and the median of the per-repeat ratios.

``target``: seconds of training until the deterministic policy's after-cost log return
over the validation period beats buy-and-hold's by ``--margin`` (synthetic market with
a known AR(1) edge, ``load_prices(..., source="synthetic", kind="edge", edge=0.5)``,
3,000 days, window 5 as in ``tests/test_agents_edge.py``, the default split, US costs;
``stockgym train``'s PPO defaults: rewards x100, gamma 0.9, lr 1e-3, n_steps 16, and the
same for SB3 as above; our mlp backbone with ReLU as SB3's extractor, not ``train``'s
tanh).
Evaluated at the first update after every ``--every`` steps; the clock runs from
building the agent and pauses during evaluations.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BACKBONES = ("mlp", "cnn", "lstm")
#: the libraries compared: (name, precision of ours or None for SB3)
LIBS = (("ours", "float32"), ("ours-bf16", "bfloat16"), ("sb3", None))
HIDDEN = 64
NUM_ENVS = 64


# ------------------------------------------------------------------ matched models
def ours_model(
    venv: Any, backbone: str, precision: str, seed: int, device: str = "cpu", **ppo: Any
) -> Any:
    from stockgym.agents import PPO

    return PPO(
        venv,
        backbone=backbone,
        hidden_size=HIDDEN,
        num_layers=2,
        kernel_size=3,
        activation="relu",
        precision=precision,
        seed=seed,
        device=device,
        num_minibatches=4,
        update_epochs=4,
        clip_vloss=False,
        max_grad_norm=0.5,
        **ppo,
    )


class _ScaleReward:
    """Multiplies SB3's rewards by ``scale`` (ours: ``reward_scale``)."""

    @staticmethod
    def wrap(venv: Any, scale: float) -> Any:
        from stable_baselines3.common.vec_env import VecEnvWrapper

        class Scale(VecEnvWrapper):
            def reset(self) -> np.ndarray:
                return self.venv.reset()

            def step_wait(self):
                obs, rew, done, info = self.venv.step_wait()
                return obs, rew * scale, done, info

        return venv if scale == 1.0 else Scale(venv)


def sb3_model(
    venv: Any,
    backbone: str,
    seed: int,
    num_steps: int,
    learning_rate: float,
    gamma: float = 0.99,
    gae_lambda: float = 0.95,
    reward_scale: float = 1.0,
    device: str = "cpu",
) -> Any:
    from stable_baselines3 import PPO as SB3PPO

    from stockgym.agents.sb3 import stock_policy_kwargs
    from stockgym.envs.sb3 import SB3VecEnv

    env = _ScaleReward.wrap(SB3VecEnv(venv), reward_scale)
    kwargs = stock_policy_kwargs(
        venv,
        backbone=backbone,
        hidden_size=HIDDEN,
        num_layers=2,
        kernel_size=3,
        net_arch={"pi": [HIDDEN], "vf": [HIDDEN]},
        activation_fn=torch.nn.Tanh,
    )
    batch = num_steps * venv.num_envs
    return SB3PPO(
        "MlpPolicy",
        env,
        n_steps=num_steps,
        batch_size=batch // 4,
        n_epochs=4,
        gamma=gamma,
        gae_lambda=gae_lambda,
        learning_rate=lambda remaining: remaining * learning_rate,
        clip_range=0.2,
        clip_range_vf=None,
        normalize_advantage=True,
        ent_coef=0.0,
        vf_coef=0.5,
        max_grad_norm=0.5,
        policy_kwargs=kwargs,
        seed=seed,
        device=device,
        verbose=0,
    )


# ------------------------------------------------------------------ throughput
def sample_env(
    compile_env: bool = False, device: str = "cpu", num_envs: int = NUM_ENVS
) -> Callable[[], Any]:
    from stockgym.data import DEFAULT_FEATURES, load_prices
    from stockgym.data.splits import split
    from stockgym.envs import VectorStockTradingEnv
    from stockgym.experiment.records import fit_scaler

    train = split(load_prices("AAPL", source="sample")).train
    scaler = fit_scaler(train, list(DEFAULT_FEATURES), "standard")
    return lambda: VectorStockTradingEnv(
        train,
        num_envs,
        device=device,
        window_size=30,
        episode_length=100,
        scaler=scaler,
        compile=compile_env,
    )


def throughput(
    backbones: list[str], repeats: int, updates: int, num_steps: int, compile_env: bool = False
) -> list[dict]:
    make_env = sample_env(compile_env)
    batch = num_steps * NUM_ENVS
    rows = []
    for backbone in backbones:
        sps: dict[str, list[float]] = {lib: [] for lib, _ in LIBS}
        cpu: dict[str, list[float]] = {lib: [] for lib, _ in LIBS}
        for rep in range(repeats):
            # the order alternates so that neither library always runs first
            for lib, precision in LIBS if rep % 2 == 0 else LIBS[::-1]:
                if lib == "sb3":
                    model = sb3_model(make_env(), backbone, rep, num_steps, 3e-4)
                    more = {"reset_num_timesteps": False}
                else:
                    model = ours_model(
                        make_env(),
                        backbone,
                        precision,
                        rep,
                        num_steps=num_steps,
                        learning_rate=3e-4,
                    )
                    more = {}
                model.learn(batch)  # untimed: first calls, allocations
                t, c = time.perf_counter(), time.process_time()
                model.learn(updates * batch, **more)
                sps[lib].append(updates * batch / (time.perf_counter() - t))
                cpu[lib].append(updates * batch / (time.process_time() - c))
            print(
                f"{backbone:<5} repeat {rep}: samples/s (per CPU-second) "
                + ", ".join(f"{lib} {sps[lib][-1]:,.0f} ({cpu[lib][-1]:,.0f})" for lib, _ in LIBS),
                flush=True,
            )
        row = {"backbone": backbone, "samples_per_s": sps, "samples_per_cpu_s": cpu}
        for lib, _ in LIBS:
            row[f"{lib}_median"] = statistics.median(sps[lib])
            row[f"{lib}_cpu_median"] = statistics.median(cpu[lib])
        for lib in ("ours", "ours-bf16"):
            for key, d in (("ratio", sps), ("cpu_ratio", cpu)):
                row[f"{lib}_{key}"] = statistics.median(
                    a / b for a, b in zip(d[lib], d["sb3"], strict=True)
                )
        rows.append(row)
    print(
        f"\nthroughput, samples/s: median of {repeats} (ratio: median per-repeat ours/SB3;"
        " in brackets the same per CPU-second)"
    )
    print(f"{'backbone':<9}{'ours':>9}{'ours-bf16':>11}{'SB3':>9}{'ours/SB3':>16}{'bf16/SB3':>16}")
    for r in rows:
        print(
            f"{r['backbone']:<9}{r['ours_median']:>9,.0f}{r['ours-bf16_median']:>11,.0f}"
            f"{r['sb3_median']:>9,.0f}{r['ours_ratio']:>8.2f}x ({r['ours_cpu_ratio']:.2f}x)"
            f"{r['ours-bf16_ratio']:>8.2f}x ({r['ours-bf16_cpu_ratio']:.2f}x)"
        )
    return rows


# ------------------------------------------------------------------ time to target
class Clock:
    """Seconds since creation, minus the time spent in :meth:`pause` blocks."""

    def __init__(self) -> None:
        self.t0, self.excluded = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0 - self.excluded

    def evaluate(self, fn: Callable[[], float]) -> float:
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.excluded += time.perf_counter() - t


def edge_setup(seed: int) -> dict[str, Any]:
    """The run's data, split, scaler, training envs and validation env (as ``stockgym
    train`` builds them) and buy-and-hold over the validation period."""
    from stockgym.experiment.config import DataSpec, EnvSpec, TrainConfig
    from stockgym.experiment.evaluation import buy_and_hold
    from stockgym.experiment.train import prepare

    config = TrainConfig(
        algo="ppo",
        seed=seed,
        device="cpu",
        tensorboard=False,
        data=DataSpec(
            symbols=["X"],
            source="synthetic",
            options={"kind": "edge", "edge": 0.5, "n_days": 3000, "seed": seed},
        ),
        env=EnvSpec(window_size=5, market="us"),
    )
    prep = prepare(config)
    period = (prep["dates"]["valid"]["first"], prep["dates"]["valid"]["last"])
    return {
        "prep": prep,
        "period": period,
        "bench": buy_and_hold(prep["valid_env"], period)["return"],
    }


def time_to_target(
    lib: str,
    precision: str | None,
    backbone: str,
    seed: int,
    margin: float,
    budget: int,
    every: int,
) -> dict[str, Any]:
    from stockgym.experiment.evaluation import evaluate_on

    setup = edge_setup(seed)  # not timed, for either library
    prep, c = setup["prep"], setup["prep"]["agent_config"]  # stockgym train's PPO defaults
    target = setup["bench"] + margin
    clock = Clock()
    hp = dict(
        num_steps=c.num_steps,
        learning_rate=c.learning_rate,
        gamma=c.gamma,
        gae_lambda=c.gae_lambda,
        reward_scale=c.reward_scale,
    )
    if lib == "sb3":
        model = sb3_model(prep["venv"], backbone, seed, **hp)
    else:
        model = ours_model(prep["venv"], backbone, precision, seed, **hp)
    state = {"next": every, "hit": None, "evals": []}

    def check(step: int) -> bool:
        if state["hit"] is None and step >= state["next"]:
            while state["next"] <= step:
                state["next"] += every
            t = clock.elapsed()
            score = clock.evaluate(
                lambda: evaluate_on(model, prep["valid_env"], setup["period"])[0]["return"]
            )
            state["evals"].append((step, round(score - setup["bench"], 3)))
            if score >= target:
                state["hit"] = (t, step)
        return state["hit"] is not None

    if lib == "sb3":
        from stable_baselines3.common.callbacks import BaseCallback

        class Check(BaseCallback):
            def _on_rollout_start(self) -> None:  # after each update
                self.done = self.num_timesteps > 0 and check(self.num_timesteps)

            def _on_step(self) -> bool:
                return not getattr(self, "done", False)

        model.learn(budget, callback=Check())
        check(model.num_timesteps)
    else:
        model.learn(budget, callback=lambda a, step: False if check(step) else None)
    total = clock.elapsed()
    sec, steps = state["hit"] or (None, None)
    return {
        "lib": lib,
        "backbone": backbone,
        "seed": seed,
        "seconds": sec,
        "steps": steps,
        "sps": (steps or model.num_timesteps) / (sec or total),
        "evals": state["evals"],
    }


def targets(
    backbones: list[str], seeds: list[int], margin: float, budget: int, every: int
) -> list[dict]:
    rows = []
    for backbone in backbones:
        runs: dict[str, list[dict]] = {lib: [] for lib, _ in LIBS}
        for seed in seeds:
            for lib, precision in LIBS:
                r = time_to_target(lib, precision, backbone, seed, margin, budget, every)
                runs[lib].append(r)
                sec = "missed" if r["seconds"] is None else f"{r['seconds']:.1f} s"
                print(
                    f"{backbone:<5} seed {seed} {lib:<10} {sec:>9} {r['steps'] or '-':>7} "
                    f"steps {r['sps']:>7,.0f}/s  excess {r['evals'][-1:]}",
                    flush=True,
                )

        def med(lib: str, runs: dict[str, list[dict]] = runs) -> float | None:
            vals = [math.inf if r["seconds"] is None else r["seconds"] for r in runs[lib]]
            m = statistics.median(vals)
            return None if math.isinf(m) else m

        rows.append(
            {
                "backbone": backbone,
                "runs": runs,
                **{f"{lib}_median_s": med(lib) for lib, _ in LIBS},
                **{
                    f"{lib}_reached": sum(r["seconds"] is not None for r in runs[lib])
                    for lib, _ in LIBS
                },
            }
        )
    print(
        f"\ntime to validation return >= buy-and-hold + {margin} (median over seeds {seeds};"
        " missed counts as infinite)"
    )
    print(f"{'backbone':<9}" + "".join(f"{lib:>16}" for lib, _ in LIBS))
    for r in rows:
        cells = []
        for lib, _ in LIBS:
            m = r[f"{lib}_median_s"]
            cells.append(
                f"{'missed' if m is None else f'{m:.1f} s'} ({r[f'{lib}_reached']}/{len(seeds)})"
            )
        print(f"{r['backbone']:<9}" + "".join(f"{c:>16}" for c in cells))
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--task", nargs="+", choices=("throughput", "target"), default=["throughput", "target"]
    )
    p.add_argument("--backbone", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for both")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--updates", type=int, default=2, help="timed updates per repeat")
    p.add_argument("--num-steps", type=int, default=64, help="throughput rollout length")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--budget", type=int, default=40_000)
    p.add_argument("--every", type=int, default=1_024)
    p.add_argument(
        "--compile-env",
        action="store_true",
        help="throughput on the compiled env step (both libraries; `stockgym train "
        "--compile-env`, TrainConfig env.compile)",
    )
    p.add_argument("--json", help="write all results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import stable_baselines3

    print(
        f"python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), stable-baselines3 "
        f"{stable_baselines3.__version__}, {platform.machine()}",
        flush=True,
    )
    out: dict[str, Any] = {"args": vars(args)}
    if "throughput" in args.task:
        out["throughput"] = throughput(
            args.backbone, args.repeats, args.updates, args.num_steps, args.compile_env
        )
    if "target" in args.task:
        out["target"] = targets(args.backbone, args.seeds, args.margin, args.budget, args.every)
    if args.json:
        from stockgym.core import write_json

        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
