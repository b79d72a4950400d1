"""Gymnasium spaces and stockgym observation layouts as plain JSON-able dicts: what a
checkpoint stores to rebuild a model's spaces, and what the checks that a model fits an
env compare."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces


def describe_space(space: spaces.Space) -> dict[str, Any]:
    """JSON-able description of a Box / Discrete / MultiDiscrete space."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": [int(x) for x in np.asarray(space.nvec).ravel()]}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "shape": [int(x) for x in space.shape],
            "low": _floats(space.low),
            "high": _floats(space.high),
            "dtype": str(space.dtype),
        }
    raise ValueError(f"unsupported space {space}: agents take Box, Discrete or MultiDiscrete")


def _floats(a: np.ndarray) -> list:
    # JSON has no infinity: bounds are stored as strings where infinite
    flat = np.asarray(a, dtype=np.float64).ravel()
    return [float(x) if math.isfinite(x) else str(float(x)) for x in flat]


def build_space(desc: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`describe_space`."""
    kind = desc["type"]
    if kind == "Discrete":
        return spaces.Discrete(desc["n"], start=desc.get("start", 0))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(desc["nvec"])
    shape, dtype = tuple(desc["shape"]), np.dtype(desc["dtype"])
    low = np.array([float(x) for x in desc["low"]], dtype=dtype).reshape(shape)
    high = np.array([float(x) for x in desc["high"]], dtype=dtype).reshape(shape)
    return spaces.Box(low, high, shape=shape, dtype=dtype)


def space_str(desc: dict[str, Any]) -> str:
    """Short text of a space description, for error messages."""
    kind = desc["type"]
    if kind == "Discrete":
        return f"Discrete({desc['n']})"
    if kind == "MultiDiscrete":
        return f"MultiDiscrete({desc['nvec']})"
    lo, hi = desc["low"], desc["high"]
    uniform = len(set(map(str, lo))) == 1 and len(set(map(str, hi))) == 1
    bounds = f"[{lo[0]}, {hi[0]}]" if uniform else "bounds vary"
    return f"Box(shape={tuple(desc['shape'])}, {bounds})"


def layout_of(env: Any) -> dict[str, Any] | None:
    """The stockgym observation layout of an env (vector, wrapped or single) as a plain
    dict, or ``None`` for other envs."""
    for cand in (env, getattr(env, "unwrapped", None), getattr(env, "template", None)):
        layout = getattr(cand, "obs_layout", None)
        if layout is not None and hasattr(layout, "to_dict"):
            d = layout.to_dict()
            return {
                "window": int(d["window"]),
                "n_assets": int(d["n_assets"]),
                "n_features": int(d["n_features"]),
                "symbols": list(d["symbols"]),
                "feature_names": list(d["feature_names"]),
            }
    envs = getattr(env, "envs", None)  # a Gymnasium SyncVectorEnv of stockgym envs
    if envs:
        return layout_of(envs[0])
    return None
