"""One line per finished or failed trial on the terminal (a Ray Tune callback), instead
of Tune's own tables (``stockgym sweep --verbose`` shows those). Imports Ray: used only
while a sweep runs."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from ray import tune

from stockgym.sweep.state import sign_tune_state, tune_state_files


class TrialLines(tune.Callback):
    """Prints ``done c000-s0  valid.agent.sharpe +0.412  (12.3 s)`` per finished trial
    and ``failed ...`` per errored one, with a running count."""

    def __init__(self, metric: str, total: int | None) -> None:
        self.metric = metric
        self.total = total
        self.setup()

    def setup(self, **info: Any) -> None:
        """Called when Tune starts (again, after a restore: counts restart)."""
        self.done: int | None = None
        self.t0 = time.perf_counter()

    def _head(self, trial: Any, trials: list) -> str:
        if self.done is None:  # trials finished before this invocation (a resumed sweep)
            self.done = sum(
                1
                for t in trials
                if t is not trial and getattr(t, "status", None) in ("TERMINATED", "ERROR")
            )
        self.done += 1
        of = f"/{self.total}" if self.total else ""
        return f"trial      [{self.done}{of}, {time.perf_counter() - self.t0:6.1f} s] {trial}"

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        try:
            report = json.loads(result.get("report", "{}"))
        except ValueError:
            report = {}
        runs = report.get("runs", [])
        kept = sum(1 for r in runs if not r.get("trained"))
        value = result.get("objective")
        shown = f"{value:+.4g}" if isinstance(value, (int, float)) else "?"
        note = f", {kept} run(s) read back" if kept else ""
        secs = sum(r.get("seconds") or 0 for r in runs)
        print(
            f"{self._head(trial, trials)}  {self.metric} {shown}  (training {secs:.1f} s{note})",
            flush=True,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"{self._head(trial, trials)}  FAILED (see runs.csv and Ray's logs)", flush=True)


class SignState(tune.Callback):
    """Re-signs Tune's state (:func:`~stockgym.sweep.state.sign_tune_state`) whenever
    its files changed, checked after every step of Tune's loop (a few ``stat`` calls),
    so a sweep killed at any point can be resumed without ``--trust``."""

    def __init__(self, sweep_dir: str) -> None:
        self.sweep_dir = Path(sweep_dir)
        self.seen: list[tuple[str, int, int]] | None = None

    def _sign(self) -> None:
        now = []
        for f in tune_state_files(self.sweep_dir):
            with contextlib.suppress(OSError):
                st = f.stat()
                now.append((str(f), st.st_mtime_ns, st.st_size))
        if now != self.seen:
            sign_tune_state(self.sweep_dir)
            self.seen = now

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._sign()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._sign()
