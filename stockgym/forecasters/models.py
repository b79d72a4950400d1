"""Forecasting modules that double as feature backbones: :class:`MLP`, :class:`CNN`, :class:`LSTM`.

One small interface, shared by all three so agents can use any of them as the body of a
policy, value or Q network:

* input ``x`` of shape ``(batch, window, n_features)`` (oldest row first), float32;
* ``encode(x) -> (batch, embed_dim)``: the learned representation;
* ``embed_dim`` (property): the size of that representation;
* ``head``: the forecasting head on top, ``forward(x) = head(encode(x))`` of shape
  ``(batch, out_dim)``. The head's last layer starts at zero, so an untrained model
  forecasts exactly 0 (a zero log return, or a logit of 0 = probability 0.5): training
  starts from the naive forecast and early stopping keeps it unless validation improves.

Constructor arguments are plain numbers (``n_features``, ``window``, ``hidden_size``,
``num_layers``, ``dropout``, ``out_dim``; ``CNN`` adds ``kernel_size``), and
``module.kwargs`` returns them, so a module can be rebuilt from JSON.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _dropout(value: Any) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


class ForecastNet(nn.Module):
    """Base class: shape checks, ``forward = head(encode(x))``, ``kwargs`` for rebuilding."""

    def __init__(self, n_features: int, window: int, out_dim: int = 1) -> None:
        super().__init__()
        self.n_features = _positive_int("n_features", n_features)
        self.window = _positive_int("window", window)
        self.out_dim = _positive_int("out_dim", out_dim)
        self._kwargs: dict[str, Any] = {}

    @property
    def embed_dim(self) -> int:
        """Size of ``encode(x)``'s second dimension."""
        raise NotImplementedError

    @property
    def kwargs(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able): ``type(m)(**m.kwargs)`` rebuilds the module."""
        return dict(self._kwargs)

    def _zero_last_layer(self) -> None:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.window or x.shape[2] != self.n_features:
            raise ValueError(
                f"{type(self).__name__} expects input (batch, window={self.window}, "
                f"n_features={self.n_features}), got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, embed_dim)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, window, n_features) -> (batch, out_dim)``: ``head(encode(x))``."""
        return self.head(self.encode(x))


class MLP(ForecastNet):
    """Flatten the window, then ``num_layers`` x (Linear -> ReLU -> Dropout) of width
    ``hidden_size``; head: one Linear. ``embed_dim = hidden_size``."""

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        p = _dropout(dropout)
        layers: list[nn.Module] = []
        width = window * n_features
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            if p > 0:
                layers.append(nn.Dropout(p))
            width = hidden_size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=p,
            out_dim=out_dim,
        )

    @property
    def embed_dim(self) -> int:
        return self.hidden_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.body(x.flatten(1))


class CNN(ForecastNet):
    """1-D temporal convolutions over the window (features are channels).

    ``num_layers`` x (Conv1d(kernel_size, no padding) -> ReLU) with ``hidden_size``
    channels, then flatten -> Linear -> ReLU (-> Dropout) to ``hidden_size``; head: one
    Linear. The flattened size is computed from a dry run, never hard-coded; a window
    too short for the kernels raises ``ValueError``. ``embed_dim = hidden_size``.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 32,
        num_layers: int = 2,
        kernel_size: int = 3,
        dropout: float = 0.0,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        _positive_int("kernel_size", kernel_size)
        p = _dropout(dropout)
        shortest = num_layers * (kernel_size - 1) + 1
        if window < shortest:
            raise ValueError(
                f"CNN: window={window} is too short for {num_layers} convolutions of "
                f"kernel_size={kernel_size} (needs window >= {shortest})"
            )
        convs: list[nn.Module] = []
        channels = n_features
        for _ in range(num_layers):
            convs += [nn.Conv1d(channels, hidden_size, kernel_size), nn.ReLU()]
            channels = hidden_size
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, n_features, window)).numel()
        proj: list[nn.Module] = [nn.Flatten(), nn.Linear(flat, hidden_size), nn.ReLU()]
        if p > 0:
            proj.append(nn.Dropout(p))
        self.proj = nn.Sequential(*proj)
        self.flat_size = flat
        self.head = nn.Linear(hidden_size, out_dim)
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            kernel_size=kernel_size,
            dropout=p,
            out_dim=out_dim,
        )

    @property
    def embed_dim(self) -> int:
        return self.hidden_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.proj(self.convs(x.transpose(1, 2)))


class LSTM(ForecastNet):
    """Stacked LSTM (dropout between layers), encoding = the last step's top hidden state.

    Head as in the notebook this replaces: Linear(hidden, hidden // 2) -> ReLU ->
    Linear(hidden // 2, out_dim). ``embed_dim = hidden_size``.
    """

    def __init__(
        self,
        n_features: int,
        window: int,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.2,
        out_dim: int = 1,
    ) -> None:
        super().__init__(n_features, window, out_dim)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        _positive_int("num_layers", num_layers)
        p = _dropout(dropout)
        self.lstm = nn.LSTM(
            n_features,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=p if num_layers > 1 else 0.0,
        )
        mid = max(1, hidden_size // 2)
        self.head = nn.Sequential(nn.Linear(hidden_size, mid), nn.ReLU(), nn.Linear(mid, out_dim))
        self._zero_last_layer()
        self._kwargs = dict(
            n_features=n_features,
            window=window,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=p,
            out_dim=out_dim,
        )

    @property
    def embed_dim(self) -> int:
        return self.hidden_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        out, _ = self.lstm(x)
        return out[:, -1, :]


#: Model names accepted by :func:`build_model` (and ``--model`` on the command line).
MODELS: dict[str, type[ForecastNet]] = {"mlp": MLP, "cnn": CNN, "lstm": LSTM}


def build_model(name: str, n_features: int, window: int, **kwargs: Any) -> ForecastNet:
    """``MODELS[name](n_features, window, **kwargs)``; unknown names raise ``ValueError``.

    Keyword arguments a model does not take (``kernel_size`` for MLP / LSTM) are ignored,
    so one set of hyperparameters serves every model.
    """
    cls = MODELS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls(n_features, window, **{k: v for k, v in kwargs.items() if k in accepted})
