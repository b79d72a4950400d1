"""``render_mode="rgb_array"``: price with trades, and equity (matplotlib, lazy).

One figure per env, built on the first ``render()`` and updated in place afterwards:
lines get new data, the buys and sells are two scatter collections whose points are
appended as the episode goes, and the layout is computed once - so a frame costs about
the same at step 10 and at step 1,000 (``benchmarks/bench_env.py`` measures it).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Renderer:
    """The figure of one env (module docstring)."""

    def __init__(self, env: Any) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
        from matplotlib.figure import Figure

        self.fig = Figure(figsize=(6, 4), dpi=80)
        FigureCanvasAgg(self.fig)
        self.ax_price, self.ax_value = self.fig.subplots(2, 1, sharex=True)
        self.x = date2num(np.asarray(env._dates, dtype="datetime64[ns]"))
        self.mark = np.asarray(env._mark, dtype=np.float64)
        self.prices = [self.ax_price.plot([], [], lw=0.8, label=sym)[0] for sym in env.symbols]
        self.buys = self.ax_price.scatter([], [], marker="^", color="g", s=12, zorder=3)
        self.sells = self.ax_price.scatter([], [], marker="v", color="r", s=12, zorder=3)
        (self.value,) = self.ax_value.plot([], [], color="k", lw=0.8)
        self.ax_price.set_ylabel("price")
        self.ax_price.legend(loc="upper left", fontsize=6)
        self.ax_value.set_ylabel("portfolio value")
        locator = AutoDateLocator()
        self.ax_value.xaxis.set_major_locator(locator)
        self.ax_value.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        self.fig.tight_layout()
        self._seen, self._history = 0, None
        self._buy_xy: list[tuple[float, float]] = []
        self._sell_xy: list[tuple[float, float]] = []

    def draw(self, history: list[tuple]) -> np.ndarray:
        """The frame for ``history`` (``(t, value, fills)`` per bar of the episode)."""
        if history is not self._history or len(history) < self._seen:  # a new episode
            self._history, self._seen = history, 0
            self._buy_xy, self._sell_xy = [], []
        for t, _, fills in history[self._seen :]:
            for a, q in fills:
                (self._buy_xy if q > 0 else self._sell_xy).append((self.x[t], self.mark[t, a]))
        self._seen = len(history)
        idx = np.fromiter((h[0] for h in history), dtype=np.int64, count=len(history))
        for a, line in enumerate(self.prices):
            line.set_data(self.x[idx], self.mark[idx, a])
        self.value.set_data(self.x[idx], [h[1] for h in history])
        self.buys.set_offsets(np.asarray(self._buy_xy).reshape(-1, 2))
        self.sells.set_offsets(np.asarray(self._sell_xy).reshape(-1, 2))
        for ax in (self.ax_price, self.ax_value):
            ax.relim()
            ax.autoscale_view()
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


def render_rgb(env: Any) -> np.ndarray:
    """The env's frame (its :class:`Renderer`, made on first use)."""
    renderer = getattr(env, "_renderer", None)
    if renderer is None:
        renderer = env._renderer = Renderer(env)
    return renderer.draw(env._history)
