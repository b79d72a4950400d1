"""What a training run reports while it learns: running episode statistics
(:class:`EpisodeStats`), TensorBoard scalars and a progress bar (:class:`Logger`), and
steps per second (:class:`SPSMeter`)."""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from stockgym.agents.vecenv import Step


class Finished(NamedTuple):
    """The episodes that ended on one step: ``count`` of them, their mean return, length
    and final portfolio value (NaN when the env reports none) over all of them, and the
    first ``window`` of them one by one (env order)."""

    at: int
    count: int
    mean_return: float
    mean_length: float
    mean_value: float
    returns: list[float]
    lengths: list[int]
    values: list[float]


class EpisodeStats:
    """Running episode returns / lengths of N envs, kept on the device. :meth:`update`
    only does device maths (no host read, so a rollout on a GPU never waits for it) and
    keeps a bounded record per step (sums over the finished episodes, and the first
    ``window`` of them); :meth:`drain` reads them back in one copy, once per update.
    ``recent``: the last ``window`` returns (unscaled rewards); ``portfolio``: final
    portfolio values of stockgym episodes."""

    def __init__(self, num_envs: int, device: torch.device, window: int = 100) -> None:
        self.ret = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.len = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.window = window
        self.recent: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.portfolio: deque[float] = deque(maxlen=window)
        self.episodes = 0
        self.last_finished: list[float] = []
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._ready: list[Finished] = []

    def update(self, step: Step, at: int = 0) -> None:
        """Add one step, taken when the run reached ``at`` env steps (its log step)."""
        self.ret = self.ret + step.reward  # new tensors: the pending rows keep theirs
        self.len = self.len + 1
        if step.final_obs is None:
            return
        done = step.done
        # the value the episode ended with: after a same-step autoreset the top-level
        # info already describes the next episode (initial cash)
        final = step.info.get("final_info")
        pv = (final if isinstance(final, dict) else step.info).get("portfolio_value")
        pv = pv.to(self.ret.device, torch.float64) if isinstance(pv, torch.Tensor) else None
        rows = torch.stack(
            [
                done.to(torch.float64),
                self.ret,
                self.len.to(torch.float64),
                pv if pv is not None else torch.full_like(self.ret, math.nan),
            ]
        )  # (4, N)
        sums = torch.where(done, rows, 0.0).sum(1, keepdim=True)  # count and sums, (4, 1)
        first = torch.argsort((~done).to(torch.int8), stable=True)[: self.window]
        self._pending.append((at, torch.cat([sums, rows[:, first]], 1)))  # (4, 1 + window)
        self.ret = torch.where(done, 0.0, self.ret)
        self.len = torch.where(done, 0, self.len)

    def drain(self) -> list[Finished]:
        """The steps on which episodes ended since the last drain (one host copy for all
        of them); their episodes join ``recent`` and ``portfolio``."""
        out, self._ready = self._ready, []
        if self._pending:
            rows = torch.stack([r for _, r in self._pending]).cpu().numpy()
            for (at, _), row in zip(self._pending, rows, strict=True):
                count = int(row[0, 0])
                if count == 0:
                    continue
                kept = row[:, 1:][:, row[0, 1:] > 0]
                values = kept[3].tolist() if not np.isnan(kept[3]).any() else []
                out.append(
                    self._record(at, count, row[1:, 0] / count, kept[1].tolist(), kept[2], values)
                )
            self._pending = []
        return out

    def _record(self, at, count, means, returns, lengths, values) -> Finished:
        lengths = [int(x) for x in lengths]
        self.recent.extend(returns)
        self.recent_lengths.extend(lengths)
        self.portfolio.extend(values)
        self.episodes += count
        self.last_finished = list(returns)
        mean_ret, mean_len, mean_value = (float(x) for x in means)
        return Finished(at, count, mean_ret, mean_len, mean_value, returns, lengths, values)

    def add(
        self,
        returns: list[float],
        lengths: list[int],
        portfolio: list[float] | None = None,
        at: int = 0,
    ) -> None:
        """Record whole episodes counted elsewhere (REINFORCE's batches), ended at ``at``
        env steps (returned by the next :meth:`drain`)."""
        if not returns:
            return
        values = list(portfolio or [])
        means = (np.mean(returns), np.mean(lengths), np.mean(values) if values else math.nan)
        self._ready.append(self._record(at, len(returns), means, list(returns), lengths, values))

    def mean_return(self) -> float:
        return float(np.mean(self.recent)) if self.recent else math.nan


class Logger:
    """TensorBoard scalars (``log_dir``), a tqdm progress bar with SPS and the recent
    return (``progress``), and ``last``: the latest value of every scalar (for
    summaries and tests)."""

    def __init__(
        self,
        log_dir: str | None = None,
        progress: bool = False,
        total: int = 0,
        desc: str = "",
        purge_step: int | None = None,
        start_step: int = 0,
        initial: int = 0,
    ) -> None:
        self.writer = None
        if log_dir is not None:
            # imported here: TensorBoard's writer costs ~0.1 s to import, runs without a
            # log_dir should not pay it
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: a resumed run hides what the killed one wrote after its checkpoint
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
            if purge_step is None:
                self._session_start(start_step)
        self.last: dict[str, float] = {}
        self.bar = None
        # not a terminal (output redirected to a file or a pipe): a line every 10 %
        self._lines = progress and not sys.stderr.isatty()
        self._total, self._desc, self._next_line = total, desc, 0.1
        if progress and not self._lines:
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                dynamic_ncols=True,
                disable=None,
                leave=False,
            )
        self._t0 = time.perf_counter()
        self._base = start_step  # the bar counts steps of this learn call from here
        self._shown = initial

    def _session_start(self, step: int) -> None:
        """Write a ``SessionLog.START`` at ``step``, as a resumed writer does. TensorBoard's
        loaders treat the first START of a run as its beginning and purge on every later
        one (events at or after its step): without one here, a resume's START would be
        taken for the beginning and the killed run's events after its checkpoint would
        stay, duplicating steps."""
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog

        start = Event(step=int(step), session_log=SessionLog(status=SessionLog.START))
        self.writer._get_file_writer().add_event(start)

    def scalar(self, tag: str, value: float, step: int) -> None:
        value = float(value)
        self.last[tag] = value
        if self.writer is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def episodes(self, stats: EpisodeStats) -> None:
        """Log the episodes that ended since the last call (:meth:`EpisodeStats.drain`),
        each at the step it ended: mean return, length and final portfolio value (one
        point per step, however many envs finished)."""
        for f in stats.drain():
            self.scalar("charts/episodic_return", f.mean_return, f.at)
            self.scalar("charts/episodic_length", f.mean_length, f.at)
            if not math.isnan(f.mean_value):
                self.scalar("charts/portfolio_value", f.mean_value, f.at)

    def progress(self, step: int, sps: float, stats: EpisodeStats) -> None:
        self.scalar("charts/SPS", sps, step)
        if self.bar is not None:
            self.bar.update(step - self._base - self._shown)
            self._shown = step - self._base
            self.bar.set_postfix(SPS=f"{sps:,.0f}", ret=_recent(stats.mean_return()))
        elif self._lines and self._total:
            done = (step - self._base) / self._total
            if done >= self._next_line:
                line = progress_line(
                    self._desc, step - self._base, self._total, sps, stats.mean_return()
                )
                print(line, file=sys.stderr, flush=True)
                while self._next_line <= done:
                    self._next_line += 0.1

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def progress_line(desc: str, step: int, total: int, sps: float, recent: float) -> str:
    """One redirected-output progress line. The last rollout may overshoot the budget
    (whole rollouts are collected), so the true step count is shown with the percent
    capped at 100 % (rounded down, so 100 % means the budget is spent); ``recent`` is NaN
    until an episode has finished (shown as n/a)."""
    pct = min(100 * step // total, 100) if total > 0 else 100
    ret = _recent(recent)
    return f"{desc}: {step:,}/{total:,} steps ({pct}%), {sps:,.0f} steps/s, recent return {ret}"


def _recent(mean_return: float) -> str:
    """The recent mean return for people: ``n/a`` before any episode has finished."""
    return f"{mean_return:.4g}" if math.isfinite(mean_return) else "n/a"


class SPSMeter:
    """Steps per second since the start of ``learn``."""

    def __init__(self, start_step: int) -> None:
        self.t0 = time.perf_counter()
        self.s0 = start_step

    def __call__(self, step: int) -> float:
        dt = time.perf_counter() - self.t0
        return (step - self.s0) / dt if dt > 0 else 0.0
