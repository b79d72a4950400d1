"""``train(config)``: one reproducible experiment from data to a run directory, and
``resume(run_dir)``: the same run continued from its last checkpoint.

Steps: load the data the config names; split it by date (default: test = last 20 %,
validation = last 20 % of the rest); fit the feature scaler on the training period only
(or take a pretrained forecaster's features, window and scaler); train the agent on a
:class:`~stockgym.envs.VectorStockTradingEnv` over the training period; evaluate it
periodically on the validation period with :func:`stockgym.backtest.run_policy`
(deterministic actions, the run's costs); save the final model. The test period is
never touched here (:func:`stockgym.experiment.backtest_run` does that, once). What the
run directory holds: :mod:`stockgym.experiment.records`.

One run loop (:func:`_learn`) serves our agents and stable-baselines3's: both are driven
through the same face - ``learn(total_timesteps, callback=fn(agent, step), resume=,
purge_step=)``, ``logger.scalar``, ``save(dir)``, ``predict`` - and a ``resumable`` agent
(ours) also writes ``checkpoint.pt``; an SB3 agent re-saves its model instead.

A run that fails before training starts leaves nothing behind; one that fails during
training removes its directory; an interrupted one (Ctrl-C) keeps it, with the model so
far and ``"interrupted": true`` in the summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stockgym import core
from stockgym.experiment.config import TrainConfig, config_toml
from stockgym.experiment.evaluation import buy_and_hold, evaluate_on
from stockgym.experiment.forecasts import extra_features
from stockgym.experiment.records import (
    CHECKPOINT,
    FORECAST_SCALER,
    RUN_CHECKPOINT,
    check_forecaster,
    check_run_checkpoint,
    data_record,
    finite,
    fit_scaler,
    is_sb3,
    json_ready,
    load_data,
    read_record,
    run_record,
    split_dates,
    until,
    write_checkpoint,
)

EVAL_KEYS = ("return", "sharpe", "excess_return")


@dataclass
class TrainResult:
    """What :func:`train` returns: the agent, the run dir, the config.json record and the
    summary (also in ``summary.json``)."""

    agent: Any
    run_dir: Path
    record: dict[str, Any]
    summary: dict[str, Any]


def _default_run_dir(config: TrainConfig) -> Path:
    from stockgym.forecasters.storage import default_run_dir

    return default_run_dir("agents", config.algo, "-".join(config.data.symbols)[:40])


def prepare(
    config: TrainConfig,
    prices: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Load and split the data, fit the scaler, build the envs and the agent config:
    everything :func:`train` needs, checked, before anything is written. ``forecasts``:
    the raw forecast features of ``config.env.forecasts`` when already computed (e.g. on a
    longer history: a walk-forward forecast dated t does not depend on later prices)."""
    from stockgym.envs import StockTradingEnv, VectorStockTradingEnv

    config.validate()
    agent_cfg = config.agent_config()
    if prices is None:
        prices = load_data(config.data)
    dates = split_dates(prices, config.data)
    for part in ("train", "valid"):
        if dates[part]["rows"] == 0:
            raise ValueError(f"the {part} period is empty: {dates}")
    train_prices = until(prices, dates["train"]["last"])
    env_kwargs = config.env.env_kwargs()
    forecaster = None
    if agent_cfg.pretrained:
        from stockgym.forecasters.forecaster import Forecaster

        fc = Forecaster.load(agent_cfg.pretrained, device="cpu")
        forecaster = check_forecaster(fc, agent_cfg.pretrained, dates)
        features, scaler = list(fc.features), fc.scaler
        env_kwargs["window_size"] = fc.window
    else:
        from stockgym.data import DEFAULT_FEATURES

        features = list(config.env.features or DEFAULT_FEATURES)
        scaler = fit_scaler(train_prices, features, config.env.scaler)
    env_kwargs["features"] = features
    extra, forecast_scaler = None, None
    raw = extra_features(
        prices,
        config.env.forecasts,
        config.env.autoencoder,
        cache_dir=config.data.cache_dir,
        precomputed=forecasts,
    )
    if raw is not None:
        extra, forecast_scaler = fitted_forecasts(
            raw, dates, config.env.scaler, config.env.forecasts
        )
    venv = VectorStockTradingEnv(
        train_prices,
        config.num_envs,
        device=str(core.resolve_device(config.device)),
        episode_length=config.env.episode_length,
        scaler=scaler,
        extra_features=extra,
        compile=config.env.compile,
        **env_kwargs,
    )
    valid_env = StockTradingEnv(
        until(prices, dates["valid"]["last"]), scaler=scaler, extra_features=extra, **env_kwargs
    )
    return {
        "prices": prices,
        "dates": dates,
        "env_kwargs": env_kwargs,
        "scaler": scaler,
        "forecast_scaler": forecast_scaler,
        "venv": venv,
        "valid_env": valid_env,
        "forecaster": forecaster,
        "agent_config": agent_cfg,
    }


def fitted_forecasts(
    raw: pd.DataFrame, dates: dict[str, dict], kind: str, spec: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, Any]:
    """Forecast features (:func:`forecast_features`) scaled by a ``kind`` scaler
    (``"none"``: standard) fitted on the training period's rows only: ``(scaled, fitted
    scaler)``. ``ValueError`` when no forecast falls in the training period (``min_train``
    too large for the data before it)."""
    from stockgym.data import FeatureScaler

    train_last = pd.Timestamp(dates["train"]["last"])
    if raw.empty or raw.index[0] > train_last:
        first = "none" if raw.empty else str(raw.index[0].date())
        min_train = (spec or raw.attrs.get("forecasts") or {}).get("min_train")
        raise ValueError(
            f"forecasts: the first walk-forward forecast ({first}) comes after the training "
            f"period ends ({train_last.date()}); lower forecasts.min_train ({min_train}) or "
            "start the data earlier"
        )
    scaler = FeatureScaler("standard" if kind == "none" else kind).fit(raw, end=train_last)
    return scaler.transform(raw), scaler


def new_agent(config: TrainConfig, prep: dict[str, Any]) -> Any:
    """A fresh agent of ``config.algo`` on the run's training envs."""
    if config.algo.startswith("sb3-"):
        from stockgym.agents.sb3 import make_agent

        return make_agent(prep["venv"], prep["agent_config"])
    from stockgym.agents import ALGOS

    return ALGOS[config.algo](prep["venv"], prep["agent_config"])


def train(
    config: TrainConfig,
    *,
    prices: pd.DataFrame | None = None,
    forecasts: pd.DataFrame | None = None,
) -> TrainResult:
    """Run ``config`` (see the module docstring); ``prices`` replaces loading
    ``config.data`` (its spec is still recorded), ``forecasts`` computing the forecast
    features (see :func:`prepare`). Returns a :class:`TrainResult`."""
    from stockgym.forecasters import storage

    prep = prepare(config, prices, forecasts)
    run_dir = Path(config.run_dir) if config.run_dir else _default_run_dir(config)
    storage.check_new_dir(run_dir)
    config = config.replace(
        run_dir=str(run_dir), env=dataclasses.replace(config.env, num_envs=config.num_envs)
    )
    agent = new_agent(config, prep)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        record = run_record(config, prep, agent)
        core.write_json(run_dir / "config.json", record)
        core.write_text(run_dir / "config.toml", config_toml(config))
        if prep["scaler"] is not None:
            prep["scaler"].save(run_dir / "scaler.json")
        if prep["forecast_scaler"] is not None:
            prep["forecast_scaler"].save(run_dir / FORECAST_SCALER)
        state = _new_state(config, prep, resumes=0)
    except BaseException:
        _remove(run_dir, created)
        raise
    try:
        with run_lock(run_dir):
            return _learn(config, prep, run_dir, agent, record, state, resume=False)
    except KeyboardInterrupt:  # Ctrl-C keeps the run (model, checkpoint): --resume goes on
        raise
    except BaseException:
        _remove(run_dir, created)
        raise


def resume(
    run_dir: str | Path,
    *,
    prices: pd.DataFrame | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Continue the ``stockgym train`` run in ``run_dir`` from its last checkpoint
    (``checkpoint.pt``): the model, optimizer, RNG states, step counters, schedules,
    validation history, the training envs' positions and (DQN, when
    ``agent.save_replay_buffer``) the replay buffer. A run killed before its first
    checkpoint starts again from step 0 in the same dir. TensorBoard continues in the
    same folder; events the killed process wrote after the checkpoint are purged
    (``purge_step``). The data must hash to what the run recorded.

    What is and is not bit-identical to an uninterrupted run: the step count, the
    schedules and the state at the checkpoint are exact, and on the CPU with the same
    thread count the continuation is bit-identical (DQN: with ``save_replay_buffer``);
    on a GPU or with other thread counts torch's kernels are not guaranteed
    deterministic, so later numbers can differ in the last bits, as they can between
    two uninterrupted runs.

    ``echo`` (e.g. ``print``) is told where the run continues from. A run that another
    process is still training (its lock is held) is refused.
    """
    from stockgym.forecasters import storage

    run_dir = Path(run_dir)
    record = read_record(run_dir, need_model=False)
    if is_sb3(record):
        raise ValueError(
            f"{run_dir} is a stable-baselines3 run ({record['config']['algo']}): "
            "sb3-* runs cannot be resumed (their model so far is model/sb3.zip)"
        )
    summary_file = run_dir / "summary.json"
    if summary_file.is_file():
        done = storage.read_json(summary_file, "run summary (summary.json)")
        if isinstance(done, dict) and not done.get("interrupted"):
            raise ValueError(
                f"{run_dir} finished training ({done.get('timesteps')} steps); nothing to resume"
            )
    config = TrainConfig.from_dict(record["config"])
    if progress is not None:
        config.progress = progress
    prep = prepare(config, prices)
    data = data_record(prep["prices"], config.data)
    if data["sha256"] != record["data"]["sha256"]:
        raise ValueError(
            f"the data of {run_dir} changed since the run started (SHA-256 "
            f"{record['data']['sha256'][:12]}... recorded, {data['sha256'][:12]}... now; "
            f"{record['data']['first']}..{record['data']['last']} recorded, "
            f"{data['first']}..{data['last']} now): cannot resume on other data"
        )
    say = echo or (lambda line: None)
    for folder in (run_dir, run_dir / "model"):  # temp files a killed write left behind
        if folder.is_dir():
            core.clean_stale_temps(folder)
    with run_lock(run_dir):
        _after_existing_events(run_dir / "tensorboard")
        ckpt_file = run_dir / CHECKPOINT
        if not ckpt_file.is_file():  # killed before the first checkpoint: start over here
            say(
                f"resuming  {run_dir}: no checkpoint yet, starting again from step 0 of "
                f"{config.total_timesteps:,}"
            )
            agent = new_agent(config, prep)
            state = _new_state(config, prep, resumes=1)
            return _learn(config, prep, run_dir, agent, record, state, resume=False, purge_step=0)
        return _resume_from(ckpt_file, config, prep, run_dir, record, say)


def _resume_from(
    ckpt_file: Path,
    config: TrainConfig,
    prep: dict[str, Any],
    run_dir: Path,
    record: dict[str, Any],
    say: Callable[[str], None],
) -> TrainResult:
    from stockgym.agents.base import Agent, read_checkpoint

    ckpt = read_checkpoint(ckpt_file, fmt=RUN_CHECKPOINT)  # checked against its SHA-256
    check_run_checkpoint(ckpt, ckpt_file)
    agent = Agent.from_checkpoint(
        ckpt["agent"], env=prep["venv"], device=config.device, path=str(ckpt_file)
    )
    try:
        prep["venv"].load_state_dict(ckpt["env"])  # every env where the checkpoint left it
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise ValueError(f"{ckpt_file}: its 'env' state is incomplete ({exc!r})") from None
    if ckpt["last_obs"] is not None:
        agent._last_obs = ckpt["last_obs"].to(agent.device)
    agent._env_seeded = True
    state = dict(ckpt["trainer"])
    state["resumes"] = int(state.get("resumes", 0)) + 1
    if agent.schedule is None or agent.schedule["total"] != config.total_timesteps:
        raise ValueError(
            f"{ckpt_file}: its learn() schedule {agent.schedule} does not belong to this "
            f"run's total_timesteps {config.total_timesteps}"
        )
    say(
        f"resuming  {run_dir} from step {agent.num_timesteps:,} of {config.total_timesteps:,} "
        f"({ckpt_file.name}; resume #{state['resumes']})"
    )
    return _learn(
        config, prep, run_dir, agent, record, state, resume=True,
        purge_step=int(agent.num_timesteps) + 1,
    )  # fmt: skip


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (an exclusive ``flock``) while a process trains the run, so a
    second ``train --resume`` of a run that is still alive is refused instead of writing
    beside it. The OS drops the lock when the process dies, however it dies (a killed
    run leaves an unlocked ``.lock`` behind, which the next holder reuses)."""
    try:
        import fcntl
    except ModuleNotFoundError:  # no flock (Windows): no lock
        yield
        return
    path = run_dir / ".lock"
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise ValueError(
                f"{run_dir} is still being trained by another process (pid {pid}); "
                "wait for it to finish or stop it before resuming"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:  # the file goes with the lock: a finished run dir holds no .lock
            path.unlink(missing_ok=True)
            fcntl.flock(fh, fcntl.LOCK_UN)


def _new_state(config: TrainConfig, prep: dict[str, Any], resumes: int) -> dict[str, Any]:
    """The trainer state of a run starting at step 0 (what a checkpoint's ``trainer``
    holds): validation history, the buy-and-hold validation benchmark, seconds so far,
    resumes, the steps of the next evaluation and checkpoint."""
    valid = prep["dates"]["valid"]
    bench = buy_and_hold(prep["valid_env"], (valid["first"], valid["last"]))
    return {
        "history": [],
        "bench": bench,
        "seconds": 0.0,
        "resumes": resumes,
        "next_eval": config.eval_freq or None,
        "next_checkpoint": config.checkpoint_freq or None,
    }


def _after_existing_events(tb_dir: Path) -> None:
    """Wait (at most a second) until the clock is past the newest TensorBoard event file's
    time stamp: TensorBoard reads a folder's event files in name order, and the name
    starts with whole seconds, so a resumed writer must not share the killed one's second
    (its purge would be read before the events it purges)."""
    stamps = []
    for f in tb_dir.glob("events.out.tfevents.*"):
        part = f.name.split(".")[3] if f.name.count(".") >= 3 else ""
        if part.isdigit():
            stamps.append(int(part))
    if stamps:
        wait = max(stamps) + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


def _learn(
    config: TrainConfig,
    prep: dict[str, Any],
    run_dir: Path,
    agent: Any,
    record: dict[str, Any],
    state: dict[str, Any],
    *,
    resume: bool,
    purge_step: int | None = None,
) -> TrainResult:
    """Train (or go on training) ``agent`` to ``config.total_timesteps`` with validation
    backtests and checkpoints, then write the model and ``summary.json``."""
    valid_env, dates = prep["valid_env"], prep["dates"]
    valid_period = (dates["valid"]["first"], dates["valid"]["last"])
    bench, history = state["bench"], state["history"]
    resumable = getattr(agent, "resumable", True)
    agent.log_dir = run_dir / "tensorboard" if config.tensorboard else None
    agent.progress = config.progress

    def validate(a: Any) -> dict[str, float]:
        ev = evaluate_on(a, valid_env, valid_period)[0]
        ev["excess_return"] = ev["return"] - bench["return"]
        return ev

    def on_update(a: Any, step: int) -> None:
        nxt = state["next_eval"]
        if nxt is not None and step >= nxt:
            while state["next_eval"] <= step:
                state["next_eval"] += config.eval_freq
            ev = validate(a)
            history.append({"step": int(step), **ev})
            for key in EVAL_KEYS:
                a.logger.scalar(f"eval/{key}", ev[key], step)
        nxt = state["next_checkpoint"]
        if nxt is not None and step >= nxt:
            while state["next_checkpoint"] <= step:
                state["next_checkpoint"] += config.checkpoint_freq
            a.logger.flush()  # TensorBoard has every event up to the checkpoint
            if resumable:
                write_checkpoint(run_dir, a, {**state, "seconds": seconds_so_far()})
            else:  # no optimizer / RNG state to resume from: keep a model to backtest
                a.save(run_dir / "model")

    t0 = time.perf_counter()
    before = float(state.get("seconds", 0.0))

    def seconds_so_far() -> float:
        return before + time.perf_counter() - t0

    interrupted = False
    try:
        agent.learn(
            config.total_timesteps, callback=on_update, resume=resume, purge_step=purge_step
        )
    except KeyboardInterrupt:
        interrupted = True
    seconds = seconds_so_far()
    just_evaluated = bool(history) and history[-1]["step"] == agent.num_timesteps
    if just_evaluated:  # reuse it
        final = {k: v for k, v in history[-1].items() if k != "step"}
    else:
        final = validate(agent)
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as w:
                for key in EVAL_KEYS:
                    w.add_scalar(f"eval/{key}", final[key], agent.num_timesteps)
    agent.save(run_dir / "model")
    if interrupted and resumable:  # Ctrl-C: the checkpoint continues from here (--resume)
        write_checkpoint(run_dir, agent, {**state, "seconds": seconds})
    last = agent.logger.last if agent.logger else {}
    summary = {
        "algo": config.algo,
        "timesteps": int(agent.num_timesteps),
        "seconds": round(seconds, 2),
        "sps": round(agent.num_timesteps / seconds, 1) if seconds > 0 else None,
        "interrupted": interrupted,
        "resumes": int(state.get("resumes", 0)),
        "train_recent_return": finite(last.get("charts/episodic_return")),
        "valid": {"period": dates["valid"], "agent": final, "buy_and_hold": bench},
        "eval_history": history,
    }
    core.write_json(run_dir / "summary.json", json_ready(summary))
    if interrupted:
        raise KeyboardInterrupt
    return TrainResult(agent, run_dir, record, summary)


def _remove(run_dir: Path, created: bool) -> None:
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:  # it existed empty: empty it again
        for p in run_dir.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def format_summary(result: TrainResult) -> str:
    """What ``stockgym train`` prints when a run ends: what trained on what, how fast, its
    validation return against buy-and-hold, where the run is and what to do next."""
    s, rec = result.summary, result.record
    v, cfg, t = s["valid"], rec["config"], rec["splits"]["train"]
    episodes = cfg["env"]["episode_length"] or "the whole period"
    return "\n".join([
        f"trained    {s['algo'].upper()} ({rec['agent']['backbone']}) on "
        f"{', '.join(rec['env']['symbols'])} [source={rec['data']['source']}], "
        f"{s['timesteps']:,} steps in {s['seconds']:.1f} s ({s['sps'] or 0:,.0f} steps/s), "
        f"device {rec['device']}",
        f"train      {t['first']} .. {t['last']}; episodes of {episodes} bars x "
        f"{cfg['env']['num_envs']} envs",
        f"validation {v['period']['first']} .. {v['period']['last']}: log return "
        f"{v['agent']['return']:+.4f} (buy-and-hold {v['buy_and_hold']['return']:+.4f}), "
        f"Sharpe {_num(v['agent']['sharpe'])} (buy-and-hold {_num(v['buy_and_hold']['sharpe'])})",
        f"wrote      {result.run_dir}/ (config.json config.toml model/ summary.json"
        f"{' tensorboard/' if cfg['tensorboard'] else ''})",
        f"next       stockgym backtest --model {result.run_dir}",
    ])  # fmt: skip


def _num(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.2f}"
