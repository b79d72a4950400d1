"""Run records: what a run directory holds, how it is written and read back.

A run is made by :func:`stockgym.experiment.train` (its steps are described there).

Run directory (created when training starts, so TensorBoard can follow it live):

``config.json``
    ``config`` (the resolved :class:`TrainConfig`), ``agent`` (the algorithm's resolved
    hyperparameters), ``splits`` (dates), ``data`` (source, symbols, first/last date,
    rows, SHA-256 of the prices), ``env`` (the resolved env: costs, features...),
    ``env_kwargs`` (what rebuilds it), ``forecasts`` (the ``[env.forecasts]`` spec, or
    null) and ``forecast_scaler``, ``forecaster`` (pretrained dir, or null),
    ``device``, ``versions``, ``git`` (commit of the source tree, if any), ``created``.
``config.toml``
    the resolved config as TOML: ``stockgym train --config RUN/config.toml`` re-runs it.
``scaler.json``
    the feature scaler (fitted on the training period).
``tensorboard/``
    scalars (see ``docs/agents.md``); ``eval/return``, ``eval/sharpe``,
    ``eval/excess_return`` on the validation period.
``model/``
    the final agent (``agent.pt``, ``agent.json``; SB3 runs: ``sb3.zip`` signed with
    this user's key), each model file with its SHA-256 beside it (``.sha256``).
``checkpoint.pt``
    the training checkpoint (:func:`write_checkpoint`), with ``checkpoint.pt.sha256``.

Reading back checks every file: ``config.json`` and the checkpoint against their
schemas (:data:`RECORD_SCHEMA`, :data:`RUN_CHECKPOINT_SCHEMA`; one ``ValueError`` line
per missing or mistyped key), model files against their SHA-256, SB3 zips against this
user's signature before they are unpickled (``trust=True`` skips that).
``summary.json``
    steps, seconds, steps per second, recent training returns, every validation result.

A run that fails before training starts leaves nothing behind; one that fails during
training removes its directory; an interrupted one (Ctrl-C) keeps it, with the model so
far and ``"interrupted": true`` in the summary.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stockgym.agents.integrity import at_least, check_fields, finite_number, write_with_digest
from stockgym.experiment.config import DataSpec, TrainConfig, sub_spec

#: the run dir's record format (``config.json``'s ``format``; the id predates the
#: ``experiment`` package and is kept so existing run dirs stay readable)
RECORD_FORMAT = "stockgym.agents.run"
#: the training checkpoint a run dir keeps (rewritten every ``checkpoint_freq`` steps)
CHECKPOINT = "checkpoint.pt"
RUN_CHECKPOINT = "stockgym.run_checkpoint"
#: the scaler of the forecast features (fitted on the training period's forecasts)
FORECAST_SCALER = "forecast_scaler.json"


# ------------------------------------------------------------------ data and envs
def load_data(spec: DataSpec) -> pd.DataFrame:
    """The prices a :class:`DataSpec` names (one symbol: a flat frame, several: the
    ``(symbol, field)`` column MultiIndex), as ``load_prices`` returns them."""
    from stockgym.data import load_prices

    extra: dict[str, Any] = dict(spec.options) if spec.source == "synthetic" else {}
    if spec.source in ("auto", "fdr"):
        extra["cache_dir"] = spec.cache_dir
    target = spec.symbols[0] if len(spec.symbols) == 1 else list(spec.symbols)
    return load_prices(target, spec.start, spec.end, source=spec.source, **extra)


def split_dates(prices: pd.DataFrame, spec: DataSpec) -> dict[str, dict]:
    from stockgym.data import split

    if spec.train_end is None:
        return split(prices).dates
    return split(prices, train=spec.train_end, valid=spec.valid_end).dates


def fit_scaler(prices_train: pd.DataFrame, features: list[str], kind: str):
    """A FeatureScaler fitted on the training prices' features (``None`` for ``"none"``)."""
    if kind == "none":
        return None
    from stockgym.data import FeatureScaler, build_features

    return FeatureScaler(kind).fit(build_features(prices_train, features))


def until(prices: pd.DataFrame, last: str) -> pd.DataFrame:
    out = prices.loc[: pd.Timestamp(last)]
    out.attrs = dict(prices.attrs)
    return out


def data_record(prices: pd.DataFrame, spec: DataSpec) -> dict[str, Any]:
    from stockgym.forecasters.storage import data_hash

    return {
        "source": spec.source,
        "symbols": list(spec.symbols),
        "options": dict(spec.options),
        "start": spec.start,
        "end": spec.end,
        "first": str(prices.index[0].date()),
        "last": str(prices.index[-1].date()),
        "rows": len(prices),
        "sha256": data_hash(prices),
        "adjusted": prices.attrs.get("adjusted"),
    }


def check_forecaster(fc: Any, path: str, dates: dict[str, dict]) -> dict[str, Any]:
    """A pretrained forecaster may only have seen data before our test period."""
    used = fc.config.get("valid_end") or fc.scaler.fit_end
    if used is not None and pd.Timestamp(used) > pd.Timestamp(dates["valid"]["last"]):
        raise ValueError(
            f"pretrained forecaster {path} was trained / selected on data through {used}, "
            f"after this run's validation period ends ({dates['valid']['last']}): its "
            "encoder has seen the test period. Train the forecaster on an earlier split"
        )
    return {
        "dir": str(Path(path).resolve()),
        "model": fc.model_name,
        "window": fc.window,
        "features": list(fc.features),
        "trained_through": used,
    }


def finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding this package, or ``None``."""
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": out.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def run_record(config: TrainConfig, prep: dict[str, Any], agent: Any) -> dict[str, Any]:
    """The ``config.json`` of a run (see the module docstring)."""
    import gymnasium
    import sklearn
    import torch

    import stockgym

    versions = {
        "stockgym": stockgym.__version__,
        "torch": str(torch.__version__),
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
    }
    if config.algo.startswith("sb3-"):
        import stable_baselines3

        versions["stable-baselines3"] = stable_baselines3.__version__
    return json_ready(
        {
            "format": RECORD_FORMAT,
            "version": 1,
            "config": config.to_dict(),
            "agent": agent.config.to_dict(),
            "splits": prep["dates"],
            "data": data_record(prep["prices"], config.data),
            "env": prep["venv"].template.config(),  # the training env (its period, costs...)
            "env_kwargs": prep["env_kwargs"],
            "scaler": "scaler.json" if prep["scaler"] is not None else None,
            "forecasts": config.env.forecasts,
            "autoencoder": config.env.autoencoder,
            "forecast_scaler": FORECAST_SCALER if prep["forecast_scaler"] is not None else None,
            "forecaster": prep["forecaster"],
            "device": str(agent.device),
            "versions": versions,
            "git": git_commit(),
            "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        }
    )


def write_checkpoint(run_dir: Path, agent: Any, state: dict[str, Any]) -> None:
    """Atomically write ``run_dir/checkpoint.pt``: ``{"format", "version", "agent"
    (the agent's checkpoint dict), "trainer" (validation history, next evaluation and
    checkpoint steps, seconds so far), "env" (the training envs' positions and RNG),
    "last_obs"}`` - plain values and tensors only (read with ``weights_only=True``)."""
    from stockgym.agents.base import VERSION, to_bytes

    last = agent._last_obs
    ckpt = {
        "format": RUN_CHECKPOINT,
        "version": VERSION,
        "agent": agent.checkpoint(),
        "trainer": json_ready(state),
        "env": agent.env.env.state_dict(),
        "last_obs": None if last is None else last.detach().cpu(),
    }
    write_with_digest(run_dir / CHECKPOINT, to_bytes(ckpt))


def _optional_step(v: Any) -> str | None:
    return None if v >= 1 else f"must be >= 1 or null, got {v}"


#: the keys of ``checkpoint.pt`` (``agent``: :data:`stockgym.agents.base` checks it)
RUN_CHECKPOINT_SCHEMA = {
    "agent": (dict, True),
    "trainer": (dict, True),
    "env": (dict, True),
    "last_obs": (object, True),
}
#: the keys of its ``trainer`` state
TRAINER_SCHEMA = {
    "history": (list, True),
    "bench": (dict, True),
    "seconds": ((int, float), True, finite_number),
    "resumes": (int, False, at_least(0)),
    "next_eval": ((int, type(None)), True, _optional_step),
    "next_checkpoint": ((int, type(None)), True, _optional_step),
}


def check_run_checkpoint(ckpt: dict[str, Any], file: str | Path) -> None:
    """``ValueError`` (one line per problem, naming ``file``) unless a run checkpoint
    has the keys and types of :data:`RUN_CHECKPOINT_SCHEMA` and its trainer state those
    of :data:`TRAINER_SCHEMA`, with a finite last observation."""
    import torch

    check_fields(ckpt, RUN_CHECKPOINT_SCHEMA, str(file))
    check_fields(ckpt["trainer"], TRAINER_SCHEMA, f"{file} trainer")
    last = ckpt["last_obs"]
    if last is not None and not isinstance(last, torch.Tensor):
        raise ValueError(f"{file}: 'last_obs' must be a tensor or null, got {type(last).__name__}")
    if last is not None and not bool(torch.isfinite(last).all()):
        raise ValueError(f"{file}: 'last_obs' holds NaN or inf")


# ------------------------------------------------------------------ reading runs back
def read_record(run_dir: str | Path, need_model: bool = True) -> dict[str, Any]:
    """``config.json`` of a ``stockgym train`` run dir (clear errors otherwise)."""
    from stockgym.forecasters import storage

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir {run_dir} does not exist (or is not a directory)")
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a `stockgym train` run dir (no config.json)")
    record = storage.read_json(run_dir / "config.json", "run config (config.json)")
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise ValueError(
            f"{run_dir} is not a `stockgym train` run dir (its config.json is not one)"
        )
    check_record(record, run_dir / "config.json")
    if need_model and is_sb3(record):
        if not (run_dir / "model" / "sb3.zip").is_file():
            raise FileNotFoundError(f"{run_dir} has no trained model (model/sb3.zip is missing)")
    elif need_model and not (run_dir / "model" / "agent.pt").is_file():
        raise FileNotFoundError(f"{run_dir} has no trained model (model/agent.pt is missing)")
    return record


def load_run(
    run_dir: str | Path, device: str = "cpu", trust: bool = False
) -> tuple[dict[str, Any], Any]:
    """``(config.json record, agent)`` of a run dir. The record decides the loader: our
    algorithms load ``model/agent.pt`` with ``weights_only=True`` and never open a zip;
    ``sb3-*`` runs load ``model/sb3.zip`` through SB3's own loader, which unpickles, so
    only a zip signed with this user's key is loaded, unless ``trust``
    (:class:`~stockgym.agents.integrity.UntrustedFileError` otherwise)."""
    record = read_record(run_dir)
    model_dir = Path(run_dir) / "model"
    if is_sb3(record):
        from stockgym.agents.sb3 import load_sb3

        return record, load_sb3(model_dir, device=device, trust=trust)
    from stockgym.agents.base import Agent

    return record, Agent.load(model_dir, device=device)


def _dates(v: dict) -> str | None:
    for part in ("train", "valid", "test"):
        d = v.get(part)
        if not isinstance(d, dict):
            return f"needs a {part!r} mapping"
        for key, kind in (("first", str), ("last", str), ("rows", int)):
            if not isinstance(d.get(key), kind) or isinstance(d.get(key), bool):
                return f"{part}.{key} must be {kind.__name__}, got {d.get(key)!r}"
    return None


#: the keys of ``config.json`` that reading a run back uses
RECORD_SCHEMA = {
    "version": (int, True),
    "config": (dict, True),
    "agent": (dict, True),
    "splits": (dict, True, _dates),
    "data": (dict, True),
    "env": (dict, True),
    "env_kwargs": (dict, True),
    "scaler": ((str, type(None)), False),
    "forecasts": ((dict, type(None)), False),
    "autoencoder": ((dict, type(None)), False),
    "forecast_scaler": ((str, type(None)), False),
}
CONFIG_SCHEMA = {"algo": (str, True), "data": (dict, True)}
DATA_SCHEMA = {"sha256": (str, True), "first": (str, True), "last": (str, True)}


def check_record(record: dict[str, Any], file: str | Path) -> None:
    """``ValueError`` (one line per problem, naming ``file``) unless a run record has
    the keys and types of :data:`RECORD_SCHEMA` (and its ``config`` / ``data``
    mappings theirs)."""
    check_fields(record, RECORD_SCHEMA, str(file))
    check_fields(record["config"], CONFIG_SCHEMA, f"{file} config")
    check_fields(record["data"], DATA_SCHEMA, f"{file} data")


def is_sb3(record: dict[str, Any]) -> bool:
    """Whether a run record is a stable-baselines3 run (``algo = "sb3-..."``)."""
    return str(record.get("config", {}).get("algo", "")).startswith("sb3-")


def run_scaler(run_dir: str | Path, record: dict[str, Any]) -> Any:
    """The run's fitted feature scaler (or ``None``)."""
    if record.get("scaler") is None:
        return None
    from stockgym.data import FeatureScaler

    return FeatureScaler.load(Path(run_dir) / record["scaler"])


def run_env(
    run_dir: str | Path,
    record: dict[str, Any],
    prices: pd.DataFrame,
    forecasts: pd.DataFrame | None = None,
) -> Any:
    """A ``StockTradingEnv`` over ``prices`` built exactly as the run's envs were (same
    features, window, costs, fitted scaler; the same walk-forward forecast features,
    rebuilt from ``prices`` unless ``forecasts`` gives them, scaled by the run's fitted
    forecast scaler)."""
    from stockgym.envs import StockTradingEnv

    kwargs = dict(record["env_kwargs"])
    if record.get("forecast_scaler") is not None:
        from stockgym.data import FeatureScaler
        from stockgym.experiment.forecasts import extra_features

        raw = extra_features(
            prices,
            record.get("forecasts"),
            record.get("autoencoder"),
            cache_dir=record["config"]["data"].get("cache_dir"),
            precomputed=forecasts,
        )
        fitted = FeatureScaler.load(Path(run_dir) / record["forecast_scaler"])
        kwargs["extra_features"] = fitted.transform(raw)
    return StockTradingEnv(prices, scaler=run_scaler(run_dir, record), **kwargs)


def run_data_spec(record: dict[str, Any], **changes: Any) -> DataSpec:
    """The run's :class:`DataSpec`, with ``changes`` (e.g. ``end=None`` for live data)."""
    spec = sub_spec(DataSpec, record["config"]["data"], "data")
    return dataclasses.replace(spec, **changes)
