"""Running a sweep's trials on Ray Tune: a local Ray (``ray.init(num_cpus=...)``, no
dashboard, its temp dir inside the sweep dir) or an existing cluster
(``address="HOST:PORT"``), one Tune trial per configuration and seed (Optuna: per
configuration), results stored in ``SWEEP/tune`` so ``--resume`` can continue.

Nothing goes to the home dir: Tune's storage is ``SWEEP/tune``; Ray's temp dir (logs,
sockets, lock files: ``RAY_TMPDIR``) is ``SWEEP/ray``, or, when that path is too long
for Ray's unix sockets (:data:`~stockgym.sweep.config.MAX_RAY_TEMP_LEN` characters),
a short ``/tmp/sgray-*`` dir whose logs are copied into ``SWEEP/ray`` and which is
removed when Ray stops; usage statistics are off unless ``RAY_USAGE_STATS_ENABLED``
says otherwise; a local Ray's authentication token is made per process and passed in
the environment (``RAY_AUTH_TOKEN``) instead of being saved to ``~/.ray``.

Tune's state (``tuner.pkl``, the experiment and searcher state) is pickled, and
``--resume`` unpickles it: while Tune runs and when it ends, ``SWEEP/tune.sig`` records
this user's HMAC of each such file (:mod:`stockgym.agents.integrity`), and a resume
refuses state that does not carry it (``trust=True``, ``--trust``, overrides).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockgym.sweep.config import MAX_RAY_TEMP_LEN, SweepConfig, SweepError, trial_name

INSTALL_HINT = (
    'pip install "stockgym[ray]"   (from a checkout: pip install -e ".[ray]"; '
    'or: pip install "ray[tune]" optuna)'
)

_TOKEN: str | None = None  # one local-Ray auth token per process (Ray caches it)


def require_ray(search: str = "grid") -> None:
    """Raise ``ImportError`` saying how to install the ``[ray]`` extra when Ray Tune (or,
    for ``search = "optuna"``, Optuna) is missing."""
    missing = []
    try:
        import ray.tune  # noqa: F401
    except ImportError:
        missing.append("ray[tune]")
    if search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            missing.append("optuna")
    if missing:
        raise ImportError(
            f"stockgym sweep needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
        )


@dataclass
class RaySession:
    """What :func:`ray_session` started or joined."""

    address: str | None  # None: a local Ray started here
    temp_dir: str | None  # local Ray's temp dir
    logs_dir: str | None  # where its logs are kept after it stops
    startup_seconds: float  # ray.init until the cluster answers
    resources: dict[str, float] = field(default_factory=dict)  # the cluster's totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address or "local",
            "temp_dir": self.temp_dir,
            "logs_dir": self.logs_dir,
            "startup_seconds": round(self.startup_seconds, 3),
            "resources": self.resources,
        }


def ray_temp_dir(sweep_dir: Path, temp_dir: str | None = None) -> tuple[Path, bool]:
    """The local Ray temp dir: ``temp_dir`` (must be short), else ``SWEEP/ray`` when
    short enough, else a new short dir under the system temp dir. Returns ``(path,
    fallback)``."""
    if temp_dir is not None:
        path = Path(temp_dir).resolve()
        if len(str(path)) > MAX_RAY_TEMP_LEN:
            raise SweepError(
                f"--ray-temp {path} is {len(str(path))} characters; Ray's unix "
                f"socket paths allow at most {MAX_RAY_TEMP_LEN} here (e.g. "
                "--ray-temp /tmp/rt)"
            )
        return path, False
    inside = (sweep_dir / "ray").resolve()
    if len(str(inside)) <= MAX_RAY_TEMP_LEN:
        return inside, False
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix="sgray-", dir=base)), True


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` inside the block; afterwards restore them and
    ``RAY_AUTH_MODE`` (which ``ray.init`` sets when it turns token auth on)."""
    before = {k: os.environ.get(k) for k in [*values, "RAY_AUTH_MODE"]}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _local_token() -> str:
    global _TOKEN
    if _TOKEN is None:
        try:
            from ray._private.authentication.authentication_token_generator import (
                generate_new_authentication_token,
            )

            _TOKEN = generate_new_authentication_token()
        except ImportError:  # older Ray: no token auth
            _TOKEN = secrets.token_hex(32)
    return _TOKEN


@contextlib.contextmanager
def ray_session(
    sweep_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    temp_dir: str | None = None,
    verbose: bool = False,
) -> Iterator[RaySession]:
    """Start a local Ray (``address=None``) or join the cluster at ``address``; stop /
    leave it afterwards. See the module docstring for where Ray writes. Ray's own log
    lines (its start-up banner, the workers' output) reach the terminal only with
    ``verbose``; they are always in its logs dir."""
    import logging

    import ray

    sweep_dir = Path(sweep_dir).resolve()
    env = {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}
    fallback, tmp = False, None
    if address is None:
        tmp, fallback = ray_temp_dir(sweep_dir, temp_dir)
        tmp.mkdir(parents=True, exist_ok=True)
        env["RAY_TMPDIR"] = str(tmp)
        if not any(k in os.environ for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
            # Ray turns token auth on for a new local cluster and, without a token, saves
            # one to ~/.ray/auth_token: hand it one in the environment instead
            env["RAY_AUTH_TOKEN"] = _local_token()

    logs = str(sweep_dir / "ray") if address is None else None
    with _environ(env):
        t0 = time.perf_counter()
        if address is None:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                _temp_dir=str(tmp),
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
        else:
            ray.init(
                address=address,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
        try:
            resources = {
                k: float(v)
                for k, v in ray.cluster_resources().items()
                if k in ("CPU", "GPU", "memory")
            }
            session = RaySession(
                address, str(tmp) if tmp else None, logs, time.perf_counter() - t0, resources
            )
            yield session
        finally:
            ray.shutdown()
            if fallback and tmp is not None:
                _keep_logs(tmp, sweep_dir / "ray")
                shutil.rmtree(tmp, ignore_errors=True)


def _keep_logs(tmp: Path, dest: Path) -> None:
    """Copy the ``logs`` of each Ray session in ``tmp`` to ``dest/<session>/logs``."""
    for session in sorted(tmp.glob("session_*")):
        if session.is_symlink() or not (session / "logs").is_dir():
            continue
        with contextlib.suppress(OSError, shutil.Error):
            shutil.copytree(
                session / "logs",
                dest / session.name / "logs",
                dirs_exist_ok=True,
                ignore_dangling_symlinks=True,
            )


def check_resources(sweep: SweepConfig, session: RaySession) -> None:
    """A trial must fit on the cluster, or Tune would wait for it forever."""
    have_cpu = session.resources.get("CPU", 0.0)
    have_gpu = session.resources.get("GPU", 0.0)
    if sweep.cpus_per_trial > have_cpu:
        raise SweepError(
            f"a trial needs {sweep.cpus_per_trial:g} CPU(s) ([sweep.resources] "
            f"cpu) but Ray has {have_cpu:g}"
        )
    if sweep.gpus_per_trial > have_gpu:
        raise SweepError(
            f"a trial needs {sweep.gpus_per_trial:g} GPU(s) ([sweep.resources] "
            f"gpu) but Ray has {have_gpu:g}"
        )


def _tune_trial_name(trial: Any) -> str:
    """Tune's name (and dir name) of a trial: the run name for grid / random trials."""
    name = trial.config.get("trial") if isinstance(trial.config, dict) else None
    return name if isinstance(name, str) else f"t{trial.trial_id}"


@dataclass
class TrialsOutcome:
    """What :func:`run_trials` returns: one report per Tune trial (see
    :func:`stockgym.sweep.trial.trial_report`, plus ``status``: ``ok``, ``error``
    (with ``error``) or ``unfinished``), the invocation id, whether Tune restored an
    earlier state, and the seconds Tune took."""

    reports: list[dict[str, Any]]
    invocation: str
    restored: bool
    seconds: float

    @property
    def trained_now(self) -> int:
        """Runs trained by this invocation (read-back and earlier runs not counted)."""
        return sum(
            1
            for rep in self.reports
            for r in rep.get("runs", [])
            if r.get("trained") and r.get("invocation") == self.invocation
        )


def run_trials(
    sweep: SweepConfig,
    plan: dict[str, Any],
    sweep_dir: str | Path,
    *,
    resume: bool = False,
    verbose: int = 1,
    trust: bool = False,
) -> TrialsOutcome:
    """Run (or, with ``resume``, continue) the sweep's trials on the Ray this process
    is connected to; Tune's state goes to ``SWEEP/tune``. Finished trials are never
    rerun; errored and unfinished ones start over. ``verbose``: 0 silent, 1 one line
    per trial, 2 also Ray Tune's own progress tables. A resume unpickles Tune's state
    only when it carries this user's signature (:func:`check_tune_state`) or ``trust``."""
    from ray import tune

    from stockgym.sweep.state import check_tune_state, sign_tune_state
    from stockgym.sweep.trial import run_trial

    sweep_dir = Path(sweep_dir).resolve()
    path = sweep_dir / "tune"
    restored = bool(resume and tune.Tuner.can_restore(str(path)))
    if restored:
        check_tune_state(sweep_dir, trust)  # before Tune (or Ray) unpickles anything
    invocation = uuid.uuid4().hex[:12]
    plan = {**plan, "invocation": invocation}
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan),
        {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial},
    )
    t0 = time.perf_counter()
    from stockgym.sweep.progress import SignState, TrialLines

    callbacks: list[Any] = [SignState(str(sweep_dir))]
    if verbose >= 1:
        callbacks.append(TrialLines(sweep.metric, len(plan["trials"]) or sweep.n_trials))
    if restored:
        tuner = tune.Tuner.restore(
            str(path), trainable, resume_unfinished=True, restart_errored=True
        )
    else:
        if sweep.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            space = {e.key: e.tune_domain() for e in sweep.space}
            search_alg: Any = OptunaSearch(metric="objective", mode=sweep.mode, seed=sweep.seed)
            num_samples = sweep.n_trials or 1
        else:
            space = {"trial": tune.grid_search([t["name"] for t in plan["trials"]])}
            search_alg, num_samples = None, 1
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="objective",
                mode=sweep.mode,
                search_alg=search_alg,
                num_samples=num_samples,
                max_concurrent_trials=sweep.max_concurrent,
                reuse_actors=True,
                trial_name_creator=_tune_trial_name,
                trial_dirname_creator=_tune_trial_name,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(sweep_dir),
                verbose=1 if verbose >= 2 else 0,
                callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    # RunConfig(verbose=0) silences Tune's progress tables, but Tune's default ("new")
    # console output still prints its "Configuration for experiment" box and its results-dir
    # and TensorBoard hints; the documented RAY_AIR_NEW_OUTPUT=0 selects Tune's legacy
    # console output, for which verbose=0 prints nothing. Set for this fit only.
    quiet = {} if verbose >= 2 else {"RAY_AIR_NEW_OUTPUT": "0"}
    with _environ(quiet):
        grid = tuner.fit()
    sign_tune_state(sweep_dir)
    seconds = time.perf_counter() - t0
    reports = [_report(result, plan) for result in grid]
    return TrialsOutcome(reports, invocation, restored, seconds)


def _report(result: Any, plan: dict[str, Any]) -> dict[str, Any]:
    """A trial's report from its Tune result (errors and unfinished trials included)."""
    metrics = result.metrics or {}
    if "report" in metrics:
        return {**json.loads(metrics["report"]), "status": "ok"}
    config = result.config or {}
    dir_name = Path(result.path).name if result.path else "?"  # see _tune_trial_name
    if plan["search"] == "optuna":
        rep = {"config": dir_name, "params": dict(config), "seeds": list(plan["seeds"])}
    else:
        name = config.get("trial") or dir_name
        spec = next((t for t in plan["trials"] if t["name"] == name), None)
        rep = (
            {"config": spec["config"], "params": spec["params"], "seeds": [spec["seed"]]}
            if spec
            else {"config": str(name), "params": {}, "seeds": []}
        )
    rep.update(
        {
            "objective": None,
            "runs": [],
            "names": [trial_name(rep["config"], s) for s in rep["seeds"]],
        }
    )
    if result.error is not None:
        return {**rep, "status": "error", "error": _last_line(str(result.error))}
    return {**rep, "status": "unfinished"}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text


def ray_map(
    fn: Any,
    jobs: list[dict[str, Any]],
    work_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
) -> Iterator[Any]:
    """``fn(job)`` for every job as a Ray task (one CPU each) on a local Ray or the
    cluster at ``address``, yielding results as they finish: how ``stockgym evaluate
    --address`` spreads its runs. Ray writes where :func:`ray_session` says."""
    require_ray()
    import ray

    with ray_session(work_dir, address=address, num_cpus=num_cpus):
        remote = ray.remote(num_cpus=1)(fn)
        pending = [remote.remote(job) for job in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])
