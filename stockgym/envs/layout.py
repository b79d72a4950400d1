"""ObsLayout: where things are in a stockgym observation vector (single and vector envs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ObsLayout:
    """Where things are in the flat observation vector.

    ``obs[features]`` reshapes to ``(window, n_assets, n_features)`` (oldest row first,
    the row of the decision date last); ``obs[weights]`` holds each asset's weight
    (signed market value / portfolio value); ``obs[cash]`` the cash fraction.
    """

    window: int
    n_assets: int
    n_features: int
    symbols: tuple[str, ...]
    feature_names: tuple[str, ...]

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return (self.window, self.n_assets, self.n_features)

    @property
    def features(self) -> slice:
        return slice(0, self.window * self.n_assets * self.n_features)

    @property
    def weights(self) -> slice:
        start = self.features.stop
        return slice(start, start + self.n_assets)

    @property
    def cash(self) -> slice:
        return slice(self.weights.stop, self.weights.stop + 1)

    @property
    def size(self) -> int:
        return self.cash.stop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "feature_shape": self.feature_shape, "size": self.size}
