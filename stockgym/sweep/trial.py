"""One sweep trial, as Ray Tune runs it in a worker: ordinary ``stockgym train`` runs
(:func:`stockgym.experiment.train`, the code path of ``stockgym train``) into
``SWEEP/runs/<config>-s<seed>``, then the metric read from each run's ``summary.json``
(validation period).

A run dir that already holds a finished run of the same config (``summary.json``, not
interrupted) is read back instead of trained again, so a resumed sweep reruns no
finished run even when Ray's own record of it was lost; a run dir left half-written by
an interrupted trial is continued from its last checkpoint (``stockgym train
--resume``), or removed and started over when it has none.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from stockgym.sweep.config import trial_name
from stockgym.sweep.trees import build_tree, get_key


def run_trial(params: dict[str, Any], plan: dict[str, Any]) -> None:
    """The Ray Tune trainable: run the trial and ``tune.report`` its objective (the mean
    metric over its runs) with the whole report as JSON (``report``)."""
    from ray import tune

    ctx = tune.get_context()
    report = trial_report(params, plan, ctx.get_trial_id())
    tune.report({"objective": report["objective"], "report": json.dumps(report)})


def trial_report(params: dict[str, Any], plan: dict[str, Any], trial_id: str) -> dict[str, Any]:
    """Train (or read back) every run of one trial; returns ``{"config", "params",
    "objective", "runs": [row per run]}``. ``params`` is Tune's config: ``{"trial":
    name}`` for grid / random, the sampled values for Optuna (one trial trains every
    seed, the objective is their mean)."""
    if plan["search"] == "optuna":
        config_id = f"t{trial_id}"
        values = {k: _plain(v) for k, v in params.items()}
        seeds = list(plan["seeds"])
    else:
        spec = next((t for t in plan["trials"] if t["name"] == params["trial"]), None)
        if spec is None:
            raise ValueError(f"trial {params['trial']!r} is not in this sweep's plan")
        config_id, values, seeds = spec["config"], spec["params"], [spec["seed"]]
    runs = [run_one(plan, values, seed, trial_name(config_id, seed)) for seed in seeds]
    metrics = [r["metric"] for r in runs]
    return {
        "config": config_id,
        "params": values,
        "objective": float(sum(metrics) / len(metrics)),
        "runs": runs,
        "invocation": plan.get("invocation"),
    }


def run_one(plan: dict[str, Any], params: dict[str, Any], seed: int, name: str) -> dict[str, Any]:
    """One training run (or a finished one read back): a row of the runs table."""
    from stockgym.experiment import TrainConfig, train

    run_dir = Path(plan["runs_dir"]) / name
    tree = build_tree(plan["train"], params, seed, str(run_dir))
    summary = finished_summary(run_dir, tree, params)
    trained = summary is None
    if trained:
        threads = plan.get("threads") or max(1, int(plan["resources"]["cpu"]))
        import torch

        torch.set_num_threads(threads)
        summary = _resume(run_dir, tree)
        if summary is None:
            if run_dir.exists():  # left by an interrupted trial before its first checkpoint
                shutil.rmtree(run_dir)
            summary = train(TrainConfig.from_dict(tree)).summary
    try:
        metric = get_key(summary, plan["metric"])
    except KeyError as exc:
        raise ValueError(f"{run_dir}/summary.json has no {plan['metric']}") from exc
    if metric is None or not math.isfinite(metric):
        raise ValueError(f"{plan['metric']} of {run_dir} is not a finite number ({metric!r})")
    valid = summary.get("valid", {})
    return {
        "name": name,
        "seed": seed,
        "run_dir": str(run_dir),
        "metric": float(metric),
        "valid_return": valid.get("agent", {}).get("return"),
        "valid_sharpe": valid.get("agent", {}).get("sharpe"),
        "valid_bh_return": valid.get("buy_and_hold", {}).get("return"),
        "timesteps": summary.get("timesteps"),
        "seconds": summary.get("seconds"),
        "trained": trained,
        "invocation": plan.get("invocation"),
    }


def _resume(run_dir: Path, tree: dict[str, Any]) -> dict[str, Any] | None:
    """Continue a run an interrupted trial left with a checkpoint (``stockgym train
    --resume``); ``None`` when there is none to continue (or it is not this config's)."""
    from stockgym.experiment import resume
    from stockgym.experiment.records import CHECKPOINT

    if str(tree.get("algo", "")).startswith("sb3-") or not (run_dir / CHECKPOINT).is_file():
        return None
    try:
        record = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    done = record.get("config", {}) if isinstance(record, dict) else {}
    mine = {k: v for k, v in tree.items() if k not in ("progress", "run_dir")}
    if any(
        json.dumps(done.get(k), sort_keys=True) != json.dumps(v, sort_keys=True)
        for k, v in mine.items()
        if not isinstance(v, dict)
    ):
        return None
    try:
        return resume(run_dir, progress=False).summary
    except (ValueError, FileNotFoundError):
        return None


def finished_summary(
    run_dir: Path, tree: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any] | None:
    """The ``summary.json`` of a finished run of this config in ``run_dir``, else
    ``None``. A finished run of another config there raises ``ValueError``."""
    summary_file, config_file = run_dir / "summary.json", run_dir / "config.json"
    if not (summary_file.is_file() and config_file.is_file()):
        return None
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8"))
        record = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("interrupted") or not isinstance(record, dict):
        return None
    done = record.get("config", {})
    for key, want in {**params, "seed": tree["seed"]}.items():
        try:
            have = get_key(done, key)
        except KeyError:
            have = None
        if json.dumps(have, sort_keys=True) != json.dumps(want, sort_keys=True):
            raise ValueError(
                f"{run_dir} holds a finished run with {key} = {have!r}, not "
                f"{want!r}: it is not this sweep's run (move it away)"
            )
    return summary


def _plain(value: Any) -> Any:
    """numpy scalars (from the Optuna sampler) as plain Python values."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value
