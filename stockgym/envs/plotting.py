"""``render_mode="rgb_array"``: price with trades, and equity (matplotlib, lazy)."""

from __future__ import annotations

import numpy as np


def render_rgb(env) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    hist = env._history
    idx = [h[0] for h in hist]
    dates = [env._dates[t] for t in idx]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6, 4), dpi=80, sharex=True)
    try:
        for a, sym in enumerate(env.symbols):
            ax1.plot(dates, [env._mark[t][a] for t in idx], lw=0.8, label=sym)
        for t, _, fills in hist:
            for a, q in fills:
                ax1.scatter(
                    env._dates[t],
                    env._mark[t][a],
                    marker="^" if q > 0 else "v",
                    color="g" if q > 0 else "r",
                    s=12,
                )
        ax1.set_ylabel("price")
        ax1.legend(loc="upper left", fontsize=6)
        ax2.plot(dates, [h[1] for h in hist], color="k", lw=0.8)
        ax2.set_ylabel("portfolio value")
        fig.tight_layout()
        fig.canvas.draw()
        img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)
    return img
